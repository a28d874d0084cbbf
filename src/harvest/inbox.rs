//! `certs_inbox`: the daemon harvests every reply that lands in this folder.
//!
//! One thread of its own, apart from the spool's producers and workers (replies are few, and a slow
//! DKIM lookup must never hold up sealing). It reacts to notify events (a file renamed in, or
//! closed after writing) at once, and scans the folder at start, every `rescan_seconds` and after a
//! watcher error; a scan takes files unchanged for `settle_ms` (written in place by a writer the
//! events missed). Each reply is moved to `done/` or to `refused/` with `NAME.reason` (one line:
//! time, class, cause). Only regular files directly in the folder are taken: dotfiles, `.tmp` and
//! `.part` names, links and other special files are left alone. After an import `on_import` runs
//! (the daemon reloads its keyring with it, as on SIGHUP), so the next message to that address is
//! encrypted without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};

use super::{Counters, Harvester};
use crate::logging::escape_controls;
use crate::smime::certs::{rfc3339, unix_now};

/// The running inbox thread.
pub struct Inbox {
    thread: JoinHandle<()>,
}

impl Inbox {
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// An inbox ready to start: what `certs_inbox` and the harvest settings of the config say.
pub struct Prepared {
    dir: PathBuf,
    harvester: Harvester,
    settle: Duration,
    rescan: Duration,
}

/// `None` when no `certs_inbox` is configured; an error when harvesting cannot work (no trust
/// anchor, no certs folder): the daemon refuses to start then, as for any configuration error.
pub fn prepare(config: &crate::config::Config) -> Result<Option<Prepared>, super::SetupError> {
    let Some(dir) = config.certs_inbox.clone() else {
        return Ok(None);
    };
    Ok(Some(Prepared {
        dir,
        harvester: Harvester::from_config(config)?,
        settle: config.settle,
        rescan: config.rescan,
    }))
}

impl Prepared {
    /// Starts the thread. `on_import` runs after each new certificate (the daemon sets its reload
    /// flag there).
    pub fn start(
        self,
        counters: Arc<Counters>,
        on_import: Box<dyn Fn() + Send>,
        shutdown: Arc<AtomicBool>,
    ) -> std::io::Result<Inbox> {
        start(self, counters, on_import, shutdown)
    }
}

fn start(
    Prepared {
        dir,
        harvester,
        settle,
        rescan,
    }: Prepared,
    counters: Arc<Counters>,
    on_import: Box<dyn Fn() + Send>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<Inbox> {
    for sub in ["done", "refused"] {
        crate::dirs::create_all(&dir.join(sub))?;
    }
    let (tx, rx) = mpsc::channel();
    let watcher = notify::recommended_watcher(move |res| {
        let _ = tx.send(res);
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(
                "certs_inbox {}: cannot watch ({e}); relying on rescans every {}s",
                dir.display(),
                rescan.as_secs()
            );
            None
        }
    };
    let thread = std::thread::Builder::new()
        .name("certs-inbox".into())
        .spawn(move || {
            let _watcher = watcher;
            let inbox = Run {
                dir,
                harvester,
                settle,
                counters,
                on_import,
            };
            let mut next_scan = Instant::now();
            while !shutdown.load(Ordering::SeqCst) {
                if Instant::now() >= next_scan {
                    inbox.scan();
                    next_scan = Instant::now() + rescan;
                }
                // events wake this at once; the timeout only bounds how late shutdown is seen
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(Ok(event)) => inbox.event(&event),
                    Ok(Err(e)) => {
                        warn!("certs_inbox: watcher error ({e}); rescanning");
                        next_scan = Instant::now();
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::park_timeout(Duration::from_millis(200));
                    }
                }
            }
        })?;
    Ok(Inbox { thread })
}

struct Run {
    dir: PathBuf,
    harvester: Harvester,
    settle: Duration,
    counters: Arc<Counters>,
    on_import: Box<dyn Fn() + Send>,
}

impl Run {
    fn event(&self, event: &notify::Event) {
        let complete = matches!(
            event.kind,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
                | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
        );
        if !complete {
            return;
        }
        for path in &event.paths {
            // a rename event names both ends: only what is now directly in the inbox counts
            if path.parent() == Some(self.dir.as_path()) && path.exists() {
                self.take(path);
            }
        }
    }

    fn scan(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let path = entry.path();
            let settled = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .is_some_and(|t| now.duration_since(t).unwrap_or_default() >= self.settle);
            if settled {
                self.take(&path);
            }
        }
    }

    fn take(&self, path: &Path) {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return;
        };
        if name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part") {
            return;
        }
        match path.symlink_metadata() {
            Ok(m) if m.is_file() => {}
            _ => return, // folders (done/, refused/), links, special files, gone
        }
        let result = self.harvester.harvest_file(path, unix_now());
        self.counters.count(&result);
        let shown = escape_controls(&name).into_owned();
        let moved = match &result {
            Ok(done) => {
                info!(
                    "certs_inbox {shown}: {}",
                    super::command::line_imported(done)
                );
                move_to(path, &self.dir.join("done"), None)
            }
            Err(r) => {
                warn!("certs_inbox {shown}: refused: {}", r.why);
                let line = format!(
                    "{} {}: {}\n",
                    rfc3339(unix_now()),
                    r.class,
                    one_line(&r.why)
                );
                move_to(path, &self.dir.join("refused"), Some(&line))
            }
        };
        if let Err(e) = moved {
            // left in place would be harvested again at every scan: say so loudly
            warn!("certs_inbox {shown}: cannot move it out of the inbox: {e}");
        }
        if result.is_ok_and(|d| d.written != super::Written::Unchanged) {
            (self.on_import)();
        }
    }
}

fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    escape_controls(&joined).into_owned()
}

/// Moves `path` into `folder` under its own name (`NAME.1`, `NAME.2`, … on a clash), writing
/// `reason` beside it as `NAME.reason` first.
fn move_to(path: &Path, folder: &Path, reason: Option<&str>) -> std::io::Result<()> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    for n in 0..10_000 {
        let candidate = if n == 0 {
            name.clone()
        } else {
            format!("{name}.{n}")
        };
        let target = folder.join(&candidate);
        let reason_path = folder.join(format!("{candidate}.reason"));
        if target.symlink_metadata().is_ok() || reason_path.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(line) = reason {
            let tmp = folder.join(format!(".{candidate}.reason.tmp"));
            let _ = std::fs::remove_file(&tmp);
            let mut f = crate::dirs::create_new_file(&tmp, crate::dirs::REASON_MODE)?;
            std::io::Write::write_all(&mut f, line.as_bytes())?;
            f.sync_all()?;
            if let Err(e) = crate::dirs::rename_exclusive(&tmp, &reason_path) {
                let _ = std::fs::remove_file(&tmp);
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    continue;
                }
                return Err(e);
            }
        }
        match crate::dirs::rename_exclusive(path, &target) {
            Ok(()) => return crate::spool::claim::sync_dir(folder),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free name"))
}
