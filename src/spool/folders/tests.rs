use super::*;
use std::collections::BTreeSet;

/// A spool with `Folders` on it; the watcher's changes are left unread, as if the event thread
/// were busy (or the queue had overflowed): only `Folders` itself keeps the watches right.
fn spool_with(subs: &[&str]) -> (tempfile::TempDir, PathBuf, Folders) {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    for sub in subs {
        std::fs::create_dir_all(spool.join(sub)).unwrap();
    }
    std::fs::create_dir_all(&spool).unwrap();
    let (watcher, rx) = Watcher::start().unwrap();
    std::mem::forget(rx); // never read, never closed
    let folders = Folders::new(watcher, &spool).unwrap();
    (tmp, spool, folders)
}

fn identity(dir: &Path) -> Identity {
    let meta = dir.symlink_metadata().unwrap();
    (meta.dev(), meta.ino())
}

fn watched(folders: &Folders) -> BTreeSet<(PathBuf, Identity)> {
    let w = folders.0.lock().unwrap();
    w.watcher.watched().into_iter().collect()
}

#[test]
fn a_link_at_any_depth_is_never_watched() {
    let (tmp, spool, folders) = spool_with(&[]);
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::os::unix::fs::symlink(&outside, spool.join("link")).unwrap();
    for dir in [spool.join("link"), spool.join("link/sub")] {
        folders.watch(&dir, true);
        folders.watch_tree(&spool, &dir);
    }
    let want = BTreeSet::from([(spool.clone(), identity(&spool))]);
    assert_eq!(watched(&folders), want, "the spool alone");
}

#[test]
fn prune_drops_watches_moved_out_and_watches_a_new_folder_under_the_old_name() {
    let (tmp, spool, folders) = spool_with(&["a/b", "c"]);
    for dir in ["a", "a/b", "c"] {
        folders.watch(&spool.join(dir), false);
    }
    let outside = tmp.path().join("outside");
    std::fs::rename(spool.join("a"), &outside).unwrap();
    std::fs::create_dir(spool.join("a")).unwrap();
    std::fs::remove_dir(spool.join("c")).unwrap();
    folders.prune();
    let want = BTreeSet::from([
        (spool.clone(), identity(&spool)),
        (spool.join("a"), identity(&spool.join("a"))),
    ]);
    assert_eq!(watched(&folders), want);
}

#[test]
fn prune_watches_a_spool_whose_watch_was_dropped() {
    let (_tmp, spool, folders) = spool_with(&["a"]);
    folders.watch(&spool.join("a"), false);
    folders.forget(&spool); // what a late event of a replaced spool does
    folders.prune();
    let want = BTreeSet::from([(spool.clone(), identity(&spool))]);
    assert_eq!(
        watched(&folders),
        want,
        "the spool (its subfolders at the next scan)"
    );
}
