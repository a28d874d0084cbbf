//! The scan thread: the whole spool at start, every `rescan` interval, and whenever the event thread
//! asks (overflow, a failed watch); it watches every folder it walks, so a missed one is repaired.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::select;
use log::{debug, warn};

use super::On;
use crate::spool::ready::Seen;
use crate::spool::{Candidate, Snapshot, is_input, scan_proc, special_kind};

pub(super) fn scan_loop(spool: &Path, every: Duration, on: &On, first_done: &AtomicBool) {
    let rescan_now = &on.rescan_now;
    let identity = |p: &Path| p.symlink_metadata().ok().map(|m| (m.dev(), m.ino()));
    let mut known = identity(spool);
    loop {
        rescan_now.take();
        let started = Instant::now();
        // the spool renamed away and a new folder made in its place: watch the new one
        let now = identity(spool);
        if now != known {
            match now {
                None => warn!(
                    "{}: the spool folder is gone; waiting for it",
                    spool.display()
                ),
                Some(_) => {
                    warn!(
                        "{}: the spool folder was replaced by a new one; watching it",
                        spool.display()
                    );
                    if let Some(f) = &on.folders {
                        f.reset(spool);
                    }
                }
            }
            known = now;
        }
        if known.is_some() && !scan_once(spool, on) {
            return;
        }
        on.forget_gone();
        debug!("{}: scan took {:?}", spool.display(), started.elapsed());
        on.intake.scanned();
        first_done.store(true, Ordering::SeqCst);
        // the event thread picks up what this scan left settling
        on.scanned.request();
        // sleeps until the next rescan is due, one is asked for, or shutdown; `once` stops at
        // the end of its intake
        let mut next = Instant::now() + every;
        if let Some(u) = on.intake.until() {
            next = next.min(u);
        }
        if on.intake.closed() {
            return;
        }
        select! {
            recv(rescan_now.rx) -> _ => {}
            recv(on.halt) -> _ => return,
            recv(crossbeam_channel::at(next)) -> _ => {}
        }
        if on.intake.closed() {
            return;
        }
    }
}

/// One pass over the spool, watching every folder it walks; false when shutting down or when
/// `once` stopped taking new inputs. Links are never followed (the walk's root is the canonical
/// spool, and no link below it is walked into).
fn scan_once(spool: &Path, on: &On) -> bool {
    let (tracker, shutdown) = (&on.tracker, &on.shutdown);
    let settle = tracker.lock().expect("tracker lock").settle();
    let open = scan_proc(spool);
    let walker = walkdir::WalkDir::new(spool)
        .min_depth(1)
        .follow_root_links(false)
        .into_iter()
        .filter_entry(|e| {
            // never descend into dot-folders (our work folder among them)
            !e.file_name().to_string_lossy().starts_with('.')
        });
    for entry in walker {
        if shutdown.load(Ordering::SeqCst) || on.intake.closed() {
            return false;
        }
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                // a folder we may not read hides its inputs: say so at every scan
                if e.io_error()
                    .is_some_and(|io| io.kind() == ErrorKind::PermissionDenied)
                {
                    warn!("{e}; its inputs wait");
                }
                continue;
            }
        };
        if !is_input(spool, entry.path()) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            if let Some(f) = &on.folders {
                f.watch(entry.path(), false);
            }
            continue;
        }
        if let Some(kind) = special_kind(&meta) {
            tracker
                .lock()
                .expect("tracker lock")
                .seen(entry.path(), Seen::Removed, Instant::now());
            on.special(spool, entry.path(), kind);
            continue;
        }
        if !on.wanted(entry.path()) {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        let open_for_write = open.contains(&(meta.dev(), meta.ino()));
        let seen = Seen::Scanned {
            age,
            open_for_write,
        };
        {
            let mut t = tracker.lock().expect("tracker lock");
            if t.contains(entry.path()) || open_for_write || age < settle {
                t.seen(entry.path(), seen, Instant::now());
                continue;
            }
        }
        let candidate = Candidate {
            path: entry.into_path(),
            snapshot: Snapshot::of(&meta),
        };
        if !(on.emit)(candidate) {
            return false;
        }
    }
    true
}
