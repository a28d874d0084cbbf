//! The folders the watcher watches: each one on its own (not recursively), dot-folders never, and
//! only real folders of the spool. A folder is opened from the spool one component at a time
//! without following a link (`safe::open_folder`) and the watch is put on what was opened, so no
//! link, swapped in at any depth at any moment, can lead a watch outside the spool.
//!
//! Events keep the watches right as folders come and go; after every full scan `prune` checks each
//! watch against the folder its path names now, for what lost events (a queue overflow) hid: a
//! folder moved out of the spool, removed, or replaced by a new one under the same name.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use log::warn;
use rustix::fd::OwnedFd;

use super::is_hidden;
use super::safe::{self, through_link};
use super::watcher::{Identity, Watcher};

/// The watcher, shared by both producer threads: each adds the folders it finds.
#[derive(Clone)]
pub struct Folders(Arc<Mutex<Watched>>);

struct Watched {
    spool: PathBuf,
    watcher: Watcher,
    /// folders that could not be watched (warned about once)
    failed: HashSet<PathBuf>,
}

impl Watched {
    /// `dir` opened from the spool without following a link, and what it is; `None` when it is no
    /// (real) folder of the spool.
    fn open(&self, dir: &Path) -> Option<std::io::Result<(OwnedFd, Identity)>> {
        let rel = dir.strip_prefix(&self.spool).ok()?;
        let opened = safe::open_folder(&self.spool, rel, false).and_then(|fd| {
            let folder = std::fs::File::from(fd);
            let meta = folder.metadata()?;
            Ok((OwnedFd::from(folder), (meta.dev(), meta.ino())))
        });
        match opened {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || through_link(&e) => None,
            other => Some(other),
        }
    }

    fn watch(&mut self, dir: &Path) {
        let opened = match self.open(dir) {
            None => return,
            Some(opened) => opened,
        };
        match opened.and_then(|(fd, _)| self.watcher.watch(dir, fd)) {
            Ok(()) => {
                self.failed.remove(dir);
            }
            Err(e) => {
                if self.failed.insert(dir.to_path_buf()) {
                    // the periodic rescan still finds its files
                    warn!(
                        "{}: cannot watch ({e}); its files are found by rescans",
                        dir.display()
                    );
                }
            }
        }
    }
}

impl Folders {
    /// Starts watching `spool` (a canonical path) with `watcher`.
    pub fn new(watcher: Watcher, spool: &Path) -> std::io::Result<Folders> {
        let mut w = Watched {
            spool: spool.to_path_buf(),
            watcher,
            failed: HashSet::new(),
        };
        let fd = safe::open_folder(spool, Path::new(""), false)?;
        w.watcher.watch(spool, fd)?;
        Ok(Folders(Arc::new(Mutex::new(w))))
    }

    /// Watches one folder (not its subfolders) unless that was done already; `again` renews it
    /// anyway (a folder made or moved in may be a new one under a known name).
    pub fn watch(&self, dir: &Path, again: bool) {
        let mut w = self.0.lock().expect("watcher lock");
        if !again && (w.watcher.watches(dir) || w.failed.contains(dir)) {
            return;
        }
        w.watch(dir);
    }

    /// Watches a folder made or moved in, and every real folder below it (they may have come
    /// along). Links are never followed, the one given included.
    pub fn watch_tree(&self, spool: &Path, dir: &Path) {
        let walker = walkdir::WalkDir::new(dir)
            .follow_root_links(false)
            .into_iter()
            .filter_entry(|e| e.file_type().is_dir() && !is_hidden(spool, e.path()));
        for entry in walker.flatten() {
            self.watch(entry.path(), true);
        }
    }

    /// Starts over on a spool folder that was replaced by a new one under the same path: the old
    /// watches follow the old folder wherever it went, so they are dropped and the new one watched
    /// (the rescan that follows watches its subfolders).
    pub fn reset(&self, spool: &Path) {
        let mut w = self.0.lock().expect("watcher lock");
        w.watcher.unwatch_tree(spool);
        w.failed.clear();
        w.watch(spool);
    }

    /// Forgets a folder that left (removed, or moved away) and the folders below it: their
    /// watches would report from wherever they went.
    pub fn forget(&self, path: &Path) {
        let mut w = self.0.lock().expect("watcher lock");
        // only a folder we know (watched or failed) has any below it
        if !w.watcher.watches(path) && !w.failed.contains(path) {
            return;
        }
        w.watcher.unwatch_tree(path);
        w.failed.retain(|d| !d.starts_with(path));
    }

    /// After a full scan: a watch no longer on the folder its path names (moved away, removed or
    /// replaced while events were lost) is dropped, and the folder now there, if any, watched;
    /// the spool itself is always watched, and failures of folders gone are forgotten.
    pub fn prune(&self) {
        let mut w = self.0.lock().expect("watcher lock");
        for (dir, was) in w.watcher.watched() {
            let now = match w.open(&dir) {
                Some(Ok((_, now))) => Some(now),
                Some(Err(_)) => continue, // cannot tell: the next scan looks again
                None => None,
            };
            if now != Some(was) {
                w.watcher.unwatch(&dir);
                if now.is_some() {
                    w.watch(&dir);
                }
            }
        }
        let spool = w.spool.clone();
        if !w.watcher.watches(&spool) {
            w.watch(&spool);
        }
        let failed: Vec<PathBuf> = w.failed.iter().cloned().collect();
        for dir in failed {
            if w.open(&dir).is_none() {
                w.failed.remove(&dir);
            }
        }
    }
}

#[cfg(test)]
mod tests;
