//! The event thread: the watcher's changes become readiness (`ready::Tracker`); complete files are
//! handed over when the tracker says so, and a watcher that overflows or fails asks for a rescan.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};
use log::warn;

use super::On;
use crate::spool::ready::Seen;
use crate::spool::watcher::Change;
use crate::spool::{is_hidden, is_input, special_kind};

pub(super) fn event_loop(spool: &Path, rx: Receiver<Vec<Change>>, on: &On) {
    let (tracker, shutdown, rescan_now) = (&on.tracker, &on.shutdown, &on.rescan_now);
    let folders = on.folders.as_ref();
    let mut watcher_gone = false;
    while !shutdown.load(Ordering::SeqCst) {
        // blocks until an event, the next settle deadline, a scan's news or shutdown; the second
        // cap only bounds how late a deadline set by another thread (a put-back claim) is seen
        let deadline = tracker
            .lock()
            .expect("tracker lock")
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
            .min(Instant::now() + Duration::from_secs(1));
        let deadline = match on.intake.until() {
            Some(u) if u > Instant::now() => deadline.min(u),
            _ => deadline,
        };
        let events = if watcher_gone {
            crossbeam_channel::never()
        } else {
            rx.clone()
        };
        let received = select! {
            recv(events) -> ev => match ev {
                Ok(ev) => Some(ev),
                Err(_) => {
                    watcher_gone = true; // no watcher: scans alone find files
                    None
                }
            },
            recv(on.halt) -> _ => return,
            recv(on.scanned.rx) -> _ => {
                on.scanned.take();
                None
            },
            recv(crossbeam_channel::at(deadline)) -> _ => None,
        };
        if let Some(changes) = received {
            let now = Instant::now();
            for change in changes {
                let folder_gone = matches!(change, Change::FolderGone(_));
                let (path, seen, arrived) = match change {
                    Change::Overflow => {
                        warn!("{}: the watcher lost events; rescanning", spool.display());
                        rescan_now.request();
                        continue;
                    }
                    // moved or removed: if it is still in the spool under a new name, or it is
                    // the spool itself, the scan asked for below finds and watches it again
                    Change::FolderGone(path) => (path, Seen::Removed, false),
                    Change::Removed(path) => (path, Seen::Removed, false),
                    Change::Created { path, folder } => {
                        let seen = if folder {
                            Seen::Modified
                        } else {
                            Seen::Created
                        };
                        (path, seen, true)
                    }
                    Change::MovedIn { path, .. } => (path, Seen::RenamedIn, true),
                    Change::Modified(path) => (path, Seen::Modified, false),
                    Change::ClosedWrite(path) => (path, Seen::ClosedWrite, false),
                };
                if seen == Seen::Removed {
                    tracker.lock().expect("tracker lock").seen(&path, seen, now);
                    if let Some(f) = folders {
                        f.forget(&path);
                    }
                    on.warned.lock().expect("warned lock").remove(&path);
                    if folder_gone {
                        // only now: a scan that ran before its watches were dropped would not
                        // watch it again under its new name
                        rescan_now.request();
                    }
                    continue;
                }
                if is_hidden(spool, &path) {
                    continue;
                }
                // what it is now, never what a link points to
                let Ok(meta) = path.symlink_metadata() else {
                    continue;
                };
                if meta.is_dir() {
                    // a folder made or moved in is watched and scanned, never taken
                    if arrived {
                        if let Some(f) = folders {
                            f.watch_tree(spool, &path);
                        }
                        // files may have landed in it before its watch existed
                        rescan_now.request();
                    }
                } else if let Some(kind) = special_kind(&meta) {
                    tracker
                        .lock()
                        .expect("tracker lock")
                        .seen(&path, Seen::Removed, now);
                    on.special(spool, &path, kind);
                } else if is_input(spool, &path) && on.wanted(&path) {
                    tracker.lock().expect("tracker lock").seen(&path, seen, now);
                }
            }
        }
        // `once` takes what is complete by the moment intake closes, however late this runs
        let until = on.intake.until();
        let now = Instant::now();
        let (ready, waiting) = {
            let mut t = tracker.lock().expect("tracker lock");
            let ready = t.take_ready(until.map_or(now, |u| now.min(u)));
            (ready, t.next_deadline())
        };
        for path in ready {
            if !on.emit_now(spool, path) {
                return;
            }
        }
        if let Some(u) = until
            && (now >= u || waiting.is_none_or(|d| d > u))
        {
            on.intake.closed.store(true, Ordering::SeqCst);
            // the scan thread may be asleep until the planned end of intake: it ends now too
            on.rescan_now.request();
            return;
        }
    }
}
