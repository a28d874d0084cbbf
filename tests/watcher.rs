//! The spool's watcher under attack: folders moved out, replaced and renamed while events are lost,
//! files renamed within the spool, and a daemon that stops must take its watcher (thread and
//! descriptors) along. The watches a process holds are read from /proc (their inodes), so "no
//! watch outside the spool" is checked exactly, not guessed from what gets delivered.

mod util;

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use util::spool::*;

fn inode(path: &Path) -> u64 {
    path.symlink_metadata().unwrap().ino()
}

/// The inodes of `spool` and of every real folder below it that is not a dot-folder: exactly what
/// the daemon should watch.
fn spool_folders(spool: &Path) -> BTreeSet<u64> {
    walkdir::WalkDir::new(spool)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .map(|e| e.metadata().unwrap().ino())
        .collect()
}

/// Runs the daemon with the spool module's debug lines (each full scan logs "scan took").
fn start_debug(s: &Setup) -> Running {
    let mut cmd = s.cmd("run");
    cmd.env("RUST_LOG", "info,smime_pickup::spool=debug");
    let log = std::fs::File::create(s.path("run.log")).unwrap();
    Running(cmd.stderr(log).stdout(Stdio::null()).spawn().unwrap())
}

/// The daemon once its first scan is done and it watches exactly the spool's folders.
fn scanned(s: &Setup, spool: &Path) -> Running {
    let child = start_debug(s);
    s.wait_for("the first scan", Duration::from_secs(10), || {
        scans(s) >= 1 && watched_inodes(child.id()) == spool_folders(spool)
    });
    child
}

fn scans(s: &Setup) -> usize {
    let log = std::fs::read_to_string(s.path("run.log")).unwrap_or_default();
    log.matches("scan took").count()
}

/// Whether every thread of `pid` is stopped (SIGSTOP takes effect as each is scheduled).
fn stopped(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .all(|stat| {
            // pid (comm) state ...: the comm may hold spaces and parentheses
            let after = &stat[stat.rfind(')').unwrap() + 1..];
            after.split_whitespace().next() == Some("T")
        })
}

/// Twice as many events as the kernel queues for one inotify instance, made in the spool's folder
/// (a dot-file renamed back and forth: its names alternate, so no two events are merged).
fn overflow_the_queue(spool: &Path) {
    let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (a, b) = (spool.join(".flood-a"), spool.join(".flood-b"));
    std::fs::write(&a, b"x").unwrap();
    for _ in 0..max {
        std::fs::rename(&a, &b).unwrap();
        std::fs::rename(&b, &a).unwrap();
    }
    std::fs::remove_file(&a).unwrap();
}

#[test]
fn folders_moved_out_while_events_were_lost_are_unwatched_and_a_new_namesake_is_watched() {
    // no periodic rescan: only events and the scans they ask for find files
    let s = Setup::new("rescan_seconds = 3600\nsettle_ms = 300\n");
    let spool = s.path("spool");
    std::fs::create_dir_all(spool.join("a/b")).unwrap();
    let mut child = scanned(&s, &spool);
    let before = scans(&s);
    // frozen, the daemon reads nothing: the queue overflows, and the move away is among the lost
    signal(&child, "-STOP");
    s.wait_for("the daemon stopped", Duration::from_secs(10), || {
        stopped(child.id())
    });
    overflow_the_queue(&spool);
    let outside = s.path("outside");
    std::fs::rename(spool.join("a"), &outside).unwrap();
    std::fs::create_dir(spool.join("a")).unwrap();
    signal(&child, "-CONT");
    s.wait_for_log("run.log", "the watcher lost events; rescanning");
    s.wait_for("the rescan it asked for", Duration::from_secs(10), || {
        scans(&s) > before
    });
    let watched = watched_inodes(child.id());
    for gone in [&outside, &outside.join("b")] {
        assert!(
            !watched.contains(&inode(gone)),
            "{} is outside the spool and still watched",
            gone.display()
        );
    }
    assert_eq!(watched, spool_folders(&spool), "watches after the rescan");
    // the new folder under the old name reports its files (the rescan was the last one)
    s.drop_message("a/m.eml", &message(1));
    s.wait_for(
        "a message in the new folder",
        Duration::from_secs(10),
        || s.delivered_ids().len() == 1,
    );
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
    s.assert_nothing_in_flight();
}

#[test]
fn files_renamed_within_the_spool_and_written_in_a_renamed_folder_are_taken() {
    let s = Setup::new("rescan_seconds = 3600\nsettle_ms = 300\n");
    let spool = s.path("spool");
    std::fs::create_dir(spool.join("r1")).unwrap();
    let mut child = scanned(&s, &spool);
    // written in place in a folder that is renamed while the file is open
    let mut w = std::fs::File::create(spool.join("r1/w.eml")).unwrap();
    w.write_all(&message(1)[..20]).unwrap();
    std::fs::rename(spool.join("r1"), spool.join("r2")).unwrap();
    w.write_all(&message(1)[20..]).unwrap();
    drop(w);
    // not an input name, then renamed to one
    std::fs::write(spool.join("x.tmp"), message(2)).unwrap();
    std::fs::rename(spool.join("x.tmp"), spool.join("x.eml")).unwrap();
    // written in place under one input name, renamed to another before it settled
    std::fs::write(spool.join("y.eml"), message(3)).unwrap();
    std::fs::rename(spool.join("y.eml"), spool.join("z.eml")).unwrap();
    s.wait_for("three messages", Duration::from_secs(10), || {
        s.delivered_ids().len() == 3
    });
    // a folder renamed into a folder renamed moments ago, files written in it afterwards
    std::fs::create_dir(spool.join("r3")).unwrap();
    std::fs::rename(spool.join("r2"), spool.join("r3/r2")).unwrap();
    std::fs::write(spool.join("r3/r2/v.eml"), message(4)).unwrap();
    s.wait_for("the fourth message", Duration::from_secs(10), || {
        s.delivered_ids().len() == 4
    });
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
    assert!(s.delivered_ids().values().all(|&n| n == 1));
    s.assert_nothing_in_flight();
}

/// This process's inotify descriptors, eventfds and threads named after the watcher's reader.
fn watcher_leftovers() -> (usize, usize, usize) {
    let fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    let threads = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "inotify")
        .count();
    let count = |what: &str| fds.iter().filter(|t| t.as_str() == what).count();
    (
        count("anon_inode:inotify"),
        count("anon_inode:[eventfd]"),
        threads,
    )
}

#[test]
fn a_daemon_run_in_process_takes_its_watcher_along_when_it_stops() {
    use smime_pickup::config::Config;
    use smime_pickup::daemon::{self, Mode};
    let s = Setup::new("rescan_seconds = 1\nsettle_ms = 100\n");
    let before = watcher_leftovers();
    for round in 0..3 {
        let config = Config::read(&s.config).unwrap();
        let (control, stop, _reload) = daemon::Control::manual();
        let daemon = std::thread::spawn(move || daemon::run(config, Mode::Run, control));
        s.drop_message(&format!("sub{round}/m.eml"), &message(round));
        s.wait_for("the message", Duration::from_secs(10), || {
            s.delivered_ids().len() == round + 1
        });
        let running = watcher_leftovers();
        assert_eq!(
            running.0,
            before.0 + 1,
            "one inotify descriptor while running"
        );
        stop.send(()).unwrap();
        daemon.join().unwrap().unwrap();
        assert_eq!(watcher_leftovers(), before, "after run {round}");
    }
    s.assert_nothing_in_flight();
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The resident size once it stopped changing (the daemon has read what it will read).
fn settled_rss_kib(s: &Setup, pid: u32) -> u64 {
    let mut last = (rss_kib(pid), 0);
    s.wait_for("a steady resident size", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(50));
        let now = rss_kib(pid);
        last = if now == last.0 {
            (now, last.1 + 1)
        } else {
            (now, 0)
        };
        last.1 >= 5
    });
    last.0
}

#[test]
fn events_pile_up_in_no_memory_while_the_event_thread_waits_for_the_workers() {
    // pickup full: the one worker stops, the work queue fills, and the event thread waits to hand
    // over more while the spool changes on
    let s = Setup::on_tmpfs("rescan_seconds = 3600\npickup_max_backlog = 1000\nworkers = 1\n");
    let slow: Vec<_> = (0..1000)
        .map(|n| s.path(&format!("pickup/mta-is-slow-{n}")))
        .collect();
    for f in &slow {
        std::fs::write(f, b"x").unwrap();
    }
    let mut child = s.start("run.log");
    s.wait_for_log("run.log", "watching");
    // far more complete inputs than the worker, its queue and the delivery stage hold
    const INPUTS: usize = 800;
    for n in 0..INPUTS {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    s.wait_for_log("run.log", "is the MTA consuming? pausing");
    let before = settled_rss_kib(&s, child.id());
    // 400,000 events on a dot-file (ignored, but the kernel reports each)
    let spool = s.path("spool");
    let (a, b) = (spool.join(".flood-a"), spool.join(".flood-b"));
    std::fs::write(&a, b"x").unwrap();
    for _ in 0..200_000 {
        std::fs::rename(&a, &b).unwrap();
        std::fs::rename(&b, &a).unwrap();
    }
    std::fs::remove_file(&a).unwrap();
    let grown = settled_rss_kib(&s, child.id()).saturating_sub(before);
    // unbounded, about 90 MB; bounded, a few reads of changes
    assert!(grown < 16 * 1024, "the daemon grew by {grown} KiB");
    // nothing lost: the lost events' rescan and the waiting hand-over find every input
    for f in &slow {
        std::fs::remove_file(f).unwrap();
    }
    s.wait_for("every input", Duration::from_secs(120), || {
        s.pickup_files().len() >= INPUTS
    });
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
    let ids = s.delivered_ids();
    assert_eq!(ids.len(), INPUTS);
    assert!(ids.values().all(|&n| n == 1));
    s.assert_nothing_in_flight();
}
