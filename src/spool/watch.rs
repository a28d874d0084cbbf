//! The two producer threads: one turns notify events into readiness (`ready::Tracker`), one scans the
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
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, select};
use log::{debug, warn};
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};

use super::folders::Folders;
use super::ready::{Seen, Tracker};
use super::{Candidate, Inputs, Snapshot, is_hidden, is_input, special_kind, writers};

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
        let (tx, rx) = crossbeam_channel::unbounded();
        let watcher = notify::recommended_watcher(move |res| {
            let _ = tx.send(res);
        })
        .and_then(|mut w| w.watch(&spool, RecursiveMode::NonRecursive).map(|()| w));
        let watcher = match watcher {
            Ok(w) => Some(Folders::new(w, &spool)),
            Err(e) => {
                // still correct, only slower: the periodic rescan finds everything
                warn!(
                    "{}: cannot watch ({e}); relying on rescans every {}s",
                    spool.display(),
                    rescan.as_secs()
                );
                None
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

fn event_loop(spool: &Path, rx: Receiver<notify::Result<notify::Event>>, on: &On) {
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
        match received {
            None => {}
            Some(Ok(event)) => {
                if event.need_rescan() {
                    warn!("{}: the watcher lost events; rescanning", spool.display());
                    rescan_now.request();
                }
                let now = Instant::now();
                let mut t = tracker.lock().expect("tracker lock");
                for (path, seen) in classify(&event) {
                    if seen == Seen::Removed {
                        t.seen(&path, seen, now);
                        if let Some(f) = folders {
                            f.forget(&path);
                        }
                        on.warned.lock().expect("warned lock").remove(&path);
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
                        let arrived =
                            matches!(event.kind, EventKind::Create(_)) || seen == Seen::RenamedIn;
                        if arrived {
                            if let Some(f) = folders {
                                f.watch_tree(spool, &path);
                            }
                            // files may have landed in it before its watch existed
                            rescan_now.request();
                        }
                    } else if let Some(kind) = special_kind(&meta) {
                        t.seen(&path, Seen::Removed, now);
                        on.special(spool, &path, kind);
                    } else if is_input(spool, &path) && on.wanted(&path) {
                        t.seen(&path, seen, now);
                    }
                }
            }
            Some(Err(e)) => {
                warn!("{}: watcher error ({e}); rescanning", spool.display());
                rescan_now.request();
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
            return;
        }
    }
}

/// What a notify event says about which paths.
fn classify(event: &notify::Event) -> Vec<(PathBuf, Seen)> {
    let all = |seen: Seen| event.paths.iter().map(|p| (p.clone(), seen)).collect();
    match event.kind {
        EventKind::Create(CreateKind::Folder) => all(Seen::Modified),
        EventKind::Create(_) => all(Seen::Created),
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => all(Seen::Removed),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => all(Seen::RenamedIn),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
            let mut v = Vec::new();
            if let [from, to, ..] = event.paths.as_slice() {
                v.push((from.clone(), Seen::Removed));
                v.push((to.clone(), Seen::RenamedIn));
            }
            v
        }
        EventKind::Modify(ModifyKind::Metadata(_)) => Vec::new(),
        EventKind::Modify(_) => all(Seen::Modified),
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => all(Seen::ClosedWrite),
        EventKind::Remove(_) => all(Seen::Removed),
        _ => Vec::new(),
    }
}

fn scan_loop(spool: &Path, every: Duration, on: &On, first_done: &AtomicBool) {
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
    let open = writers(spool);
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
