use super::*;
use std::time::Duration;

/// Changes until `want` has been seen (or 10 s passed: then the assertion shows what came).
fn until(rx: &crossbeam_channel::Receiver<Vec<Change>>, want: &Change) -> Vec<Change> {
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(want) {
        match rx.recv_deadline(deadline) {
            Ok(batch) => seen.extend(batch),
            Err(_) => panic!("{want:?} never came; saw {seen:?}"),
        }
    }
    seen
}

/// `dir`, open the way `Folders` opens a folder to watch.
fn open(dir: &Path) -> OwnedFd {
    crate::spool::safe::open_folder(dir, Path::new(""), false).unwrap()
}

fn started(dir: &Path) -> (Watcher, crossbeam_channel::Receiver<Vec<Change>>) {
    let (mut w, rx) = Watcher::start().unwrap();
    w.watch(dir, open(dir)).unwrap();
    (w, rx)
}

/// A file written and removed in `outside` is never reported: a marker written in `spool` after it comes alone.
fn nothing_from(rx: &crossbeam_channel::Receiver<Vec<Change>>, outside: &Path, spool: &Path) {
    std::fs::write(outside.join("late.eml"), b"x").unwrap();
    std::fs::remove_file(outside.join("late.eml")).unwrap();
    std::fs::write(spool.join("marker"), b"x").unwrap();
    let seen = until(rx, &Change::ClosedWrite(spool.join("marker")));
    assert!(
        seen.iter().all(|c| !format!("{c:?}").contains("late.eml")),
        "{seen:?}"
    );
}

#[test]
fn a_file_written_in_place_is_made_written_and_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let (_w, rx) = started(tmp.path());
    let path = tmp.path().join("a.eml");
    std::fs::write(&path, b"x").unwrap();
    let seen = until(&rx, &Change::ClosedWrite(path.clone()));
    let made = Change::Created {
        path: path.clone(),
        folder: false,
    };
    assert!(seen.contains(&made), "{seen:?}");
    assert!(seen.contains(&Change::Modified(path)), "{seen:?}");
}

#[test]
fn a_rename_away_is_not_reported_and_a_rename_in_is() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, elsewhere) = (tmp.path().join("spool"), tmp.path().join("work"));
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(spool.join("claimed.eml"), b"x").unwrap();
    std::fs::write(elsewhere.join("in.eml"), b"x").unwrap();
    let (_w, rx) = started(&spool);
    // a claim: renamed out of the watched folder, then something renamed in
    std::fs::rename(spool.join("claimed.eml"), elsewhere.join("claimed.eml")).unwrap();
    std::fs::rename(elsewhere.join("in.eml"), spool.join("in.eml")).unwrap();
    let moved_in = Change::MovedIn {
        path: spool.join("in.eml"),
        folder: false,
    };
    let seen = until(&rx, &moved_in);
    assert_eq!(seen, vec![moved_in], "the claim's rename came back");
}

#[test]
fn a_watched_folder_moved_away_is_reported_and_watched_no_more() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, sub) = (tmp.path().join("spool"), tmp.path().join("spool/sub"));
    std::fs::create_dir_all(&sub).unwrap();
    let (mut w, rx) = Watcher::start().unwrap();
    w.watch(&spool, open(&spool)).unwrap();
    w.watch(&sub, open(&sub)).unwrap();
    let outside = tmp.path().join("outside");
    std::fs::rename(&sub, &outside).unwrap();
    until(&rx, &Change::FolderGone(sub.clone()));
    w.unwatch_tree(&sub);
    // what happens in the moved folder now is outside the spool: nothing is reported
    nothing_from(&rx, &outside, &spool);
}

#[test]
fn a_removed_file_is_reported_and_dropping_the_watcher_ends_its_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("gone.eml");
    std::fs::write(&path, b"x").unwrap();
    let (w, rx) = started(tmp.path());
    std::fs::remove_file(&path).unwrap();
    until(&rx, &Change::Removed(path));
    drop(w); // joins the reading thread: a hang here is the failure
    assert!(rx.recv_timeout(Duration::from_secs(5)).is_err(), "closed");
}

#[test]
fn a_reader_waiting_to_hand_over_stops_when_the_watcher_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, rx) = started(tmp.path());
    let mut n = 0;
    while !rx.is_full() {
        std::fs::write(tmp.path().join(format!("f{n}")), b"x").unwrap();
        n += 1;
        std::thread::yield_now();
    }
    // the next read waits for room that never comes: dropping must end it all the same
    std::fs::write(tmp.path().join("one-more"), b"x").unwrap();
    let (done_tx, done) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        drop(w);
        let _ = done_tx.send(());
    });
    assert!(
        done.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the reader kept the watcher from stopping"
    );
    drop(rx);
}

#[test]
fn a_new_folder_watched_under_a_known_name_takes_the_place_of_the_old_watch() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, outside) = (tmp.path().join("spool"), tmp.path().join("outside"));
    std::fs::create_dir_all(spool.join("a")).unwrap();
    let (mut w, rx) = started(&spool);
    w.watch(&spool.join("a"), open(&spool.join("a"))).unwrap();
    // moved out with its move unseen (an overflow), a new one made and watched under the name
    std::fs::rename(spool.join("a"), &outside).unwrap();
    std::fs::create_dir(spool.join("a")).unwrap();
    w.watch(&spool.join("a"), open(&spool.join("a"))).unwrap();
    assert_eq!(
        w.paths.lock().unwrap().by_wd.len(),
        2,
        "the spool and the new a"
    );
    // what happens in the old folder, now outside, is not reported as the spool's
    nothing_from(&rx, &outside, &spool);
}

#[test]
fn a_move_already_seen_under_the_new_name_is_no_folder_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let (r1, r2) = (spool.join("r1"), spool.join("r2"));
    std::fs::create_dir_all(&r1).unwrap();
    let (mut w, _rx) = started(&spool);
    w.watch(&r1, open(&r1)).unwrap();
    std::fs::rename(&r1, &r2).unwrap();
    // the rename's MOVED_TO read alone and handled first (the folder watched again under its new
    // name), its MOVE_SELF read after: that is the folder where it now is, not a folder gone
    w.watch(&r2, open(&r2)).unwrap();
    let mut p = w.paths.lock().unwrap();
    let wd = p.by_path[&r2].0.clone();
    assert_eq!(change(&mut p, &wd, EventMask::MOVE_SELF, None), None);
    // moved again, out of the spool: gone
    std::fs::rename(&r2, tmp.path().join("outside")).unwrap();
    let gone = change(&mut p, &wd, EventMask::MOVE_SELF, None);
    assert_eq!(gone, Some(Change::FolderGone(r2)));
}
