//! `certs_inbox`: the daemon harvests every reply that lands in this folder.
//!
//! One thread of its own, apart from the spool's producers and workers (replies are few, and a slow
//! DKIM lookup must never hold up sealing). It reacts to notify events (a file renamed in, or
//! closed after writing) at once, and scans the folder at start, every `rescan_seconds` and after a
//! watcher error; a scan takes files unchanged for `settle_ms` (written in place by a writer the
//! events missed). Each reply is moved to `done/` or to `refused/` with `NAME.reason` (one line:
//! time, class, cause), except a reply whose DKIM key lookup failed for the moment (a DNS outage):
//! that one stays in the inbox, said once per daemon run at warn, and is tried again at every
//! periodic scan (the event path does not come back to it: reading it makes no event that is taken)
//! until it passes or is refused, or until `TEMPORARY_AT_MOST` after it landed (its mtime); then it
//! is refused with the last temporary reason. Kept for ever, a reply whose domain's name servers
//! never answer would cost up to 15 s of lookups at every scan, for ever. Only regular files
//! directly in the folder are taken: dotfiles, `.tmp` and `.part` names, links and other special
//! files are left alone. After an import `on_import` runs
//! (the daemon reloads its keyring with it, as on SIGHUP), so the next message to that address is
//! encrypted without a restart.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};

use super::{Counters, Harvester};
use crate::logging::escape_controls;
use crate::smime::certs::{rfc3339, unix_now};

/// How long a reply whose DKIM lookup keeps failing for the moment is kept in the inbox, counted
/// from its mtime (when it was written, or moved back in and touched): a DNS outage of a day is
/// ridden out, and a domain whose name servers stay silent longer is refused as for a bad signature.
pub const TEMPORARY_AT_MOST: Duration = Duration::from_secs(24 * 3600);

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
            let mut inbox = Run {
                dir,
                harvester,
                settle,
                counters,
                on_import,
                shutdown: shutdown.clone(),
                waiting: HashSet::new(),
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
    shutdown: Arc<AtomicBool>,
    /// names of the replies left in the inbox for a temporary DKIM failure, already warned about
    waiting: HashSet<String>,
}

impl Run {
    fn event(&mut self, event: &notify::Event) {
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

    fn scan(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut present = HashSet::new();
        for entry in entries.flatten() {
            // replies left for DNS may each cost a lookup's timeout: do not hold up a shutdown
            if self.shutdown.load(Ordering::SeqCst) {
                return;
            }
            present.insert(entry.file_name().to_string_lossy().into_owned());
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
        // replies removed by hand: forget them, so one put back is warned about again
        self.waiting.retain(|name| present.contains(name));
    }

    fn take(&mut self, path: &Path) {
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
        let mut result = self.harvester.harvest_file(path, unix_now());
        let shown = escape_controls(&name).into_owned();
        if let Err(r) = &mut result
            && r.temporary
        {
            match waited(path) {
                Some(age) if age >= TEMPORARY_AT_MOST => {
                    r.temporary = false;
                    r.why = format!(
                        "the DKIM lookup still failed for the moment after {} h in the inbox: {}",
                        age.as_secs() / 3600,
                        r.why
                    );
                }
                _ => {
                    let line = super::command::line_temporary(&r.why);
                    self.counters.count(&result);
                    self.keep(&name, &shown, &line);
                    return;
                }
            }
        }
        self.waiting.remove(&name);
        self.counters.count(&result);
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

impl Run {
    /// Leaves a reply whose DKIM lookup failed for the moment where it is, saying so once.
    fn keep(&mut self, name: &str, shown: &str, line: &str) {
        if self.waiting.insert(name.to_string()) {
            warn!("certs_inbox {shown}: {line}; left in the inbox, tried again at the next scan");
        } else {
            debug!("certs_inbox {shown}: {line}; still in the inbox");
        }
    }
}

/// How long ago the reply at `path` was written (its mtime), if known.
fn waited(path: &Path) -> Option<Duration> {
    let modified = path.symlink_metadata().ok()?.modified().ok()?;
    Some(
        SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default(),
    )
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
