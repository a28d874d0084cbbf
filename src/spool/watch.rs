//! The two producer threads: one turns notify events into readiness (`ready::Tracker`), one scans the
//! whole spool at start, every `rescan` interval and whenever the watcher overflows or fails. Both hand
//! complete files to `emit`, which blocks while the work queue is full: that is the backpressure that
//! keeps memory flat with 100,000 files waiting (a scan walks the tree lazily and simply waits).
//!
//! Each folder is watched on its own (not recursively) and dot-folders never: our work folder lives
//! inside the spool by default, and every claim, commit and finish there would otherwise come back
//! as events to filter out (about 6 % of the throughput when draining). New folders are watched as
//! their creation is seen, and every scan watches the folders it walks, so a missed one is repaired.

use std::collections::HashSet;
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
use super::{is_hidden, is_input, writers};

/// Hands one complete input to the workers; false when shutting down.
pub type Emit = Arc<dyn Fn(PathBuf) -> bool + Send + Sync>;

/// Shared between the producers and whoever waits for them (`once`).
pub struct Producers {
    pub tracker: Arc<Mutex<Tracker>>,
    /// set after the first full scan has handed over everything it found complete
    pub first_scan_done: Arc<AtomicBool>,
    rescan_now: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _watcher: Option<Folders>,
}

/// The watcher, shared by both threads: each adds the folders it finds.
#[derive(Clone)]
struct Folders(Arc<Mutex<Watched>>);

struct Watched {
    watcher: notify::RecommendedWatcher,
    /// folders watched, and the ones that could not be (warned about once)
    ok: HashSet<PathBuf>,
    failed: HashSet<PathBuf>,
}

impl Folders {
    fn new(watcher: notify::RecommendedWatcher) -> Folders {
        Folders(Arc::new(Mutex::new(Watched {
            watcher,
            ok: HashSet::new(),
            failed: HashSet::new(),
        })))
    }

    /// Watches one folder (not its subfolders) unless that was done already; `again` renews it
    /// anyway (a folder made or moved in may be a new one under a known name).
    fn watch(&self, dir: &Path, again: bool) {
        let mut w = self.0.lock().expect("watcher lock");
        if !again && (w.ok.contains(dir) || w.failed.contains(dir)) {
            return;
        }
        match w.watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                w.failed.remove(dir);
                w.ok.insert(dir.to_path_buf());
            }
            Err(e) => {
                if w.failed.insert(dir.to_path_buf()) {
                    // the periodic rescan still finds its files
                    warn!(
                        "{}: cannot watch ({e}); its files are found by rescans",
                        dir.display()
                    );
                }
            }
        }
    }

    /// Watches a folder made or moved in, and every folder below it (they may have come along).
    fn watch_tree(&self, spool: &Path, dir: &Path) {
        let walker = walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_entry(|e| e.file_type().is_dir() && !is_hidden(spool, e.path()));
        for entry in walker.flatten() {
            self.watch(entry.path(), true);
        }
    }

    /// Forgets a path that left (removed, or renamed away) and the folders below it.
    fn forget(&self, path: &Path) {
        let mut w = self.0.lock().expect("watcher lock");
        // every claimed input leaves too: only a folder we know (watched or failed) has any below it
        if !w.ok.contains(path) && !w.failed.contains(path) {
            return;
        }
        w.ok.retain(|d| !d.starts_with(path));
        w.failed.retain(|d| !d.starts_with(path));
    }
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
        .and_then(|mut w| w.watch(&spool, RecursiveMode::NonRecursive).map(|()| w));
        let watcher = match watcher {
            Ok(w) => {
                let folders = Folders::new(w);
                folders
                    .0
                    .lock()
                    .expect("watcher lock")
                    .ok
                    .insert(spool.clone());
                Some(folders)
            }
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
            rescan_now: rescan_now.clone(),
            folders: watcher.clone(),
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
                    .spawn(move || scan_loop(&spool, settle, rescan, &on, &done))?
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
        self.rescan_now.store(true, Ordering::SeqCst);
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
    rescan_now: Arc<AtomicBool>,
    folders: Option<Folders>,
}

fn event_loop(spool: &Path, rx: mpsc::Receiver<notify::Result<notify::Event>>, on: &On) {
    let (tracker, emit, shutdown, rescan_now) =
        (&on.tracker, &on.emit, &on.shutdown, &on.rescan_now);
    let folders = on.folders.as_ref();
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
                    // a folder created or moved in is watched and scanned, never taken as an input
                    let folder = matches!(event.kind, EventKind::Create(CreateKind::Folder))
                        || seen == Seen::RenamedIn && path.is_dir();
                    if folder {
                        if !is_hidden(spool, &path) {
                            if let Some(f) = folders {
                                f.watch_tree(spool, &path);
                            }
                            // files may have landed in it before its watch existed
                            rescan_now.store(true, Ordering::SeqCst);
                        }
                    } else if seen == Seen::Removed {
                        t.seen(&path, seen, now);
                        if let Some(f) = folders {
                            f.forget(&path);
                        }
                    } else if is_input(spool, &path) {
                        t.seen(&path, seen, now);
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

fn scan_loop(spool: &Path, settle: Duration, every: Duration, on: &On, first_done: &AtomicBool) {
    let (shutdown, rescan_now) = (&on.shutdown, &on.rescan_now);
    loop {
        rescan_now.store(false, Ordering::SeqCst);
        let started = Instant::now();
        if !scan_once(spool, settle, on) {
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

/// One pass over the spool, watching every folder it walks; false when shutting down.
fn scan_once(spool: &Path, settle: Duration, on: &On) -> bool {
    let (tracker, emit, shutdown) = (&on.tracker, &on.emit, &on.shutdown);
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
        if entry.file_type().is_dir()
            && let Some(f) = &on.folders
        {
            f.watch(entry.path(), false);
        }
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
