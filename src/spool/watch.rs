//! The two producer threads: one turns the watcher's changes into readiness (`ready::Tracker`), one scans the
//! whole spool at start, every `rescan` interval and whenever the watcher overflows or fails. Both hand
//! complete files to `emit`, which blocks while the work queue is full: that is the backpressure that
//! keeps memory flat with 100,000 files waiting (a scan walks the tree lazily and simply waits).
//!
//! Each folder is watched on its own (not recursively) and dot-folders never: our work folder lives
//! inside the spool by default, and every claim, commit and finish there would otherwise come back
//! as events to filter out (about 6 % of the throughput when draining). New folders are watched as
//! their creation is seen, and every scan watches the folders it walks, so a missed one is repaired.
//!
//! Nothing is followed: a symbolic link (to a file or a folder), FIFO, socket or device is left where
//! it is with one warning, never tracked, watched or walked into (see `folders`). What is handed
//! over carries its `Snapshot`, which the claim checks.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::warn;

mod events;
mod scan;

use super::folders::Folders;
use super::ready::Tracker;
use super::watcher::Watcher;
use super::{Candidate, Inputs, Snapshot, is_input, special_kind};
use events::event_loop;
use scan::scan_loop;

/// A wake-up with a flag: several may ask, the one waiting wakes once and sees the flag.
struct Poke {
    wanted: AtomicBool,
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl Poke {
    fn new() -> Poke {
        let (tx, rx) = crossbeam_channel::bounded(1);
        Poke {
            wanted: AtomicBool::new(false),
            tx,
            rx,
        }
    }

    fn request(&self) {
        self.wanted.store(true, Ordering::SeqCst);
        let _ = self.tx.try_send(()); // one pending wake-up is enough
    }

    fn take(&self) -> bool {
        self.wanted.swap(false, Ordering::SeqCst)
    }
}

/// Hands one complete input to the workers; false when shutting down.
pub type Emit = Arc<dyn Fn(Candidate) -> bool + Send + Sync>;

/// Shared between the producers and whoever waits for them (`once`).
pub struct Producers {
    pub tracker: Arc<Mutex<Tracker>>,
    /// set after the first full scan has handed over everything it found complete
    pub first_scan_done: Arc<AtomicBool>,
    rescan_now: Arc<Poke>,
    threads: Vec<JoinHandle<()>>,
    _watcher: Option<Folders>,
}

/// How long new inputs are taken: for ever (`run`), or (`once`) until `settle` after the first
/// scan: what is complete by then is taken, what is not stays for the next run. It closes sooner
/// when nothing tracked can be complete by then (only files still open for writing are left).
struct Intake {
    once: bool,
    settle: Duration,
    until: Mutex<Option<Instant>>,
    closed: AtomicBool,
}

impl Intake {
    /// The first scan is done: `once` takes what becomes complete within the settle time.
    fn scanned(&self) {
        if self.once {
            let mut until = self.until.lock().expect("intake lock");
            until.get_or_insert(Instant::now() + self.settle);
        }
    }

    /// The moment intake closes, once known.
    fn until(&self) -> Option<Instant> {
        *self.until.lock().expect("intake lock")
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst) || self.until().is_some_and(|u| Instant::now() >= u)
    }
}

impl Producers {
    /// Starts watching and scanning `spool` (an absolute, canonical path).
    /// With `once`, intake ends `settle` after the first scan and the threads return then.
    pub fn start(
        spool: PathBuf,
        (settle, rescan, once): (Duration, Duration, bool),
        inputs: Inputs,
        tracker: Arc<Mutex<Tracker>>,
        emit: Emit,
        (shutdown, halt): (Arc<AtomicBool>, Receiver<()>),
    ) -> std::io::Result<Producers> {
        let first_scan_done = Arc::new(AtomicBool::new(false));
        let rescan_now = Arc::new(Poke::new());
        let watcher = Watcher::start().and_then(|(w, rx)| Ok((Folders::new(w, &spool)?, rx)));
        let (watcher, rx) = match watcher {
            Ok((w, rx)) => (Some(w), rx),
            Err(e) => {
                // still correct, only slower: the periodic rescan finds everything
                warn!(
                    "{}: cannot watch ({e}); relying on rescans every {}s",
                    spool.display(),
                    rescan.as_secs()
                );
                (None, crossbeam_channel::never())
            }
        };
        let on = On {
            tracker: tracker.clone(),
            emit,
            shutdown,
            halt,
            rescan_now: rescan_now.clone(),
            scanned: Arc::new(Poke::new()),
            folders: watcher.clone(),
            intake: Arc::new(Intake {
                once,
                settle,
                until: Mutex::new(None),
                closed: AtomicBool::new(false),
            }),
            warned: Arc::new(Mutex::new(HashSet::new())),
            inputs: Arc::new(inputs),
        };
        let threads = vec![
            {
                let (spool, on) = (spool.clone(), on.clone());
                std::thread::Builder::new()
                    .name("events".into())
                    .spawn(move || event_loop(&spool, rx, &on))?
            },
            {
                let done = first_scan_done.clone();
                std::thread::Builder::new()
                    .name("scan".into())
                    .spawn(move || scan_loop(&spool, rescan, &on, &done))?
            },
        ];
        Ok(Producers {
            tracker,
            first_scan_done,
            rescan_now,
            threads,
            _watcher: watcher,
        })
    }

    /// Asks for a full scan now (after SIGHUP, say).
    pub fn rescan(&self) {
        self.rescan_now.request();
    }

    /// `once`: intake has ended (see `Intake`) and both threads are done.
    pub fn intake_done(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Waits for both threads (call after setting shutdown).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// What both producer threads share.
#[derive(Clone)]
struct On {
    tracker: Arc<Mutex<Tracker>>,
    emit: Emit,
    shutdown: Arc<AtomicBool>,
    /// never sent on: dropped at shutdown
    halt: Receiver<()>,
    /// asks the scan thread for a full scan now
    rescan_now: Arc<Poke>,
    /// the scan thread tells the event thread that the tracker may hold new deadlines
    scanned: Arc<Poke>,
    folders: Option<Folders>,
    intake: Arc<Intake>,
    /// links, FIFOs, sockets, devices and files the input patterns leave out, already warned about
    warned: Arc<Mutex<HashSet<PathBuf>>>,
    inputs: Arc<Inputs>,
}

impl On {
    /// Warns once per path about a spool entry that is not a regular file or a real folder.
    fn special(&self, spool: &Path, path: &Path, kind: &str) {
        if is_input(spool, path) && self.warned.lock().expect("warned lock").insert(path.into()) {
            warn!(
                "{}: {kind}, not a regular file; left where it is",
                path.display()
            );
        }
    }

    /// Whether a regular file's name is an input's (`inputs`); warns once per other file.
    fn wanted(&self, path: &Path) -> bool {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if self.inputs.matches(&name) {
            return true;
        }
        if self.warned.lock().expect("warned lock").insert(path.into()) {
            warn!(
                "{}: not an input name (inputs = {:?}); left where it is",
                path.display(),
                self.inputs
            );
        }
        false
    }

    /// Forgets tracked and warned-about paths that are gone (renamed away: not reported), and
    /// watches no longer on the folder their path names (see `Folders::prune`).
    fn forget_gone(&self) {
        if let Some(f) = &self.folders {
            f.prune();
        }
        self.tracker.lock().expect("tracker lock").retain_existing();
        self.warned
            .lock()
            .expect("warned lock")
            .retain(|p| p.symlink_metadata().is_ok());
    }

    /// Hands over a path the tracker found complete, as it is now: a regular file, or nothing.
    fn emit_now(&self, spool: &Path, path: PathBuf) -> bool {
        match path.symlink_metadata() {
            Ok(meta) if meta.is_file() => (self.emit)(Candidate {
                path,
                snapshot: Snapshot::of(&meta),
            }),
            Ok(meta) => {
                if let Some(kind) = special_kind(&meta) {
                    self.special(spool, &path, kind);
                }
                true
            }
            Err(_) => true,
        }
    }
}
