//! The two producer threads: one turns notify events into readiness (`ready::Tracker`), one scans the
//! whole spool at start, every `rescan` interval and whenever the watcher overflows or fails. Both hand
//! complete files to `emit`, which blocks while the work queue is full: that is the backpressure that
//! keeps memory flat with 100,000 files waiting (a scan walks the tree lazily and simply waits).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, warn};
use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};

use super::ready::{Seen, Tracker};
use super::{is_input, writers};

/// Hands one complete input to the workers; false when shutting down.
pub type Emit = Arc<dyn Fn(PathBuf) -> bool + Send + Sync>;

/// Shared between the producers and whoever waits for them (`once`).
pub struct Producers {
    pub tracker: Arc<Mutex<Tracker>>,
    /// set after the first full scan has handed over everything it found complete
    pub first_scan_done: Arc<AtomicBool>,
    rescan_now: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Producers {
    /// Starts watching and scanning `spool` (an absolute, canonical path).
    pub fn start(
        spool: PathBuf,
        settle: Duration,
        rescan: Duration,
        emit: Emit,
        shutdown: Arc<AtomicBool>,
    ) -> std::io::Result<Producers> {
        let tracker = Arc::new(Mutex::new(Tracker::new(settle)));
        let first_scan_done = Arc::new(AtomicBool::new(false));
        let rescan_now = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let watcher = notify::recommended_watcher(move |res| {
            let _ = tx.send(res);
        })
        .and_then(|mut w| w.watch(&spool, RecursiveMode::Recursive).map(|()| w));
        let watcher = match watcher {
            Ok(w) => Some(w),
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
        let mut threads = Vec::new();
        {
            let (spool, tracker, emit, shutdown, rescan_now) = (
                spool.clone(),
                tracker.clone(),
                emit.clone(),
                shutdown.clone(),
                rescan_now.clone(),
            );
            threads.push(
                std::thread::Builder::new()
                    .name("events".into())
                    .spawn(move || {
                        event_loop(&spool, rx, &tracker, &emit, &shutdown, &rescan_now);
                    })?,
            );
        }
        {
            let (tracker, done, shutdown, rescan_now) = (
                tracker.clone(),
                first_scan_done.clone(),
                shutdown.clone(),
                rescan_now.clone(),
            );
            threads.push(
                std::thread::Builder::new()
                    .name("scan".into())
                    .spawn(move || {
                        scan_loop(
                            &spool,
                            settle,
                            rescan,
                            &tracker,
                            &emit,
                            &done,
                            &shutdown,
                            &rescan_now,
                        );
                    })?,
            );
        }
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
        self.rescan_now.store(true, Ordering::SeqCst);
    }

    /// Waits for both threads (call after setting shutdown).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn event_loop(
    spool: &Path,
    rx: mpsc::Receiver<notify::Result<notify::Event>>,
    tracker: &Mutex<Tracker>,
    emit: &Emit,
    shutdown: &AtomicBool,
    rescan_now: &AtomicBool,
) {
    while !shutdown.load(Ordering::SeqCst) {
        let wait = tracker
            .lock()
            .expect("tracker lock")
            .next_deadline()
            .map_or(Duration::from_millis(200), |d| {
                d.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(200));
        match rx.recv_timeout(wait) {
            Ok(Ok(event)) => {
                if event.need_rescan() {
                    warn!("{}: the watcher lost events; rescanning", spool.display());
                    rescan_now.store(true, Ordering::SeqCst);
                }
                let now = Instant::now();
                let mut t = tracker.lock().expect("tracker lock");
                for (path, seen) in classify(&event) {
                    if seen == Seen::Removed || is_input(spool, &path) {
                        t.seen(&path, seen, now);
                    } else if matches!(event.kind, EventKind::Create(CreateKind::Folder))
                        || matches!(
                            event.kind,
                            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
                        ) && path.is_dir()
                    {
                        // files may have landed in a new folder before its watch existed
                        rescan_now.store(true, Ordering::SeqCst);
                    }
                }
            }
            Ok(Err(e)) => {
                warn!("{}: watcher error ({e}); rescanning", spool.display());
                rescan_now.store(true, Ordering::SeqCst);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(200))
            }
        }
        // the lock is held until the ready files are queued, so `once` never sees "nothing tracked,
        // nothing in flight" while a file is between the two
        let mut t = tracker.lock().expect("tracker lock");
        for path in t.take_ready(Instant::now()) {
            if !emit(path) {
                return;
            }
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

#[allow(clippy::too_many_arguments)]
fn scan_loop(
    spool: &Path,
    settle: Duration,
    every: Duration,
    tracker: &Mutex<Tracker>,
    emit: &Emit,
    first_done: &AtomicBool,
    shutdown: &AtomicBool,
    rescan_now: &AtomicBool,
) {
    loop {
        rescan_now.store(false, Ordering::SeqCst);
        let started = Instant::now();
        if !scan_once(spool, settle, tracker, emit, shutdown) {
            return;
        }
        debug!("{}: scan took {:?}", spool.display(), started.elapsed());
        first_done.store(true, Ordering::SeqCst);
        let next = Instant::now() + every;
        while Instant::now() < next && !rescan_now.load(Ordering::SeqCst) {
            if shutdown.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One pass over the spool; false when shutting down.
fn scan_once(
    spool: &Path,
    settle: Duration,
    tracker: &Mutex<Tracker>,
    emit: &Emit,
    shutdown: &AtomicBool,
) -> bool {
    let open = writers(spool);
    let walker = walkdir::WalkDir::new(spool)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| {
            // never descend into dot-folders (our work folder among them)
            !e.file_name().to_string_lossy().starts_with('.')
        });
    for entry in walker {
        if shutdown.load(Ordering::SeqCst) {
            return false;
        }
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_file() || !is_input(spool, entry.path()) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
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
        if !emit(entry.into_path()) {
            return false;
        }
    }
    true
}
