//! The folders the watcher watches: each one on its own (not recursively), dot-folders never, and
//! only real folders of the spool. inotify follows links on the way to a folder (only a link as the
//! last part is refused), so a folder is
//! looked at without following links before it is watched, and again after (a folder swapped for a
//! link in between is unwatched): no watch stays outside the spool.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use log::warn;

use super::is_hidden;
use super::watcher::Watcher;

/// The watcher, shared by both producer threads: each adds the folders it finds.
#[derive(Clone)]
pub struct Folders(Arc<Mutex<Watched>>);

struct Watched {
    watcher: Watcher,
    /// folders watched, and the ones that could not be (warned about once)
    ok: HashSet<PathBuf>,
    failed: HashSet<PathBuf>,
}

/// A real folder (not a link to one), and its path holds no link: what a watch may be put on.
fn real_folder(dir: &Path) -> bool {
    dir.symlink_metadata().is_ok_and(|m| m.is_dir())
        && std::fs::canonicalize(dir).is_ok_and(|real| real == dir)
}

impl Folders {
    /// `spool` is watched already by `watcher`.
    pub fn new(watcher: Watcher, spool: &Path) -> Folders {
        Folders(Arc::new(Mutex::new(Watched {
            watcher,
            ok: HashSet::from([spool.to_path_buf()]),
            failed: HashSet::new(),
        })))
    }

    /// Watches one folder (not its subfolders) unless that was done already; `again` renews it
    /// anyway (a folder made or moved in may be a new one under a known name).
    pub fn watch(&self, dir: &Path, again: bool) {
        let mut w = self.0.lock().expect("watcher lock");
        if !again && (w.ok.contains(dir) || w.failed.contains(dir)) {
            return;
        }
        if !real_folder(dir) {
            return;
        }
        match w.watcher.watch(dir) {
            Ok(()) if !real_folder(dir) => {
                // swapped for a link while the watch was added: whatever it reached is not ours
                w.watcher.unwatch_tree(dir);
                w.ok.remove(dir);
            }
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
        {
            let mut w = self.0.lock().expect("watcher lock");
            let old: Vec<_> = w.ok.drain().collect();
            for dir in old {
                w.watcher.unwatch_tree(&dir);
            }
            w.failed.clear();
        }
        self.watch(spool, true);
    }

    /// Forgets a folder that left (removed, or moved away) and the folders below it: their
    /// watches would report from wherever they went.
    pub fn forget(&self, path: &Path) {
        let mut w = self.0.lock().expect("watcher lock");
        // only a folder we know (watched or failed) has any below it
        if !w.ok.contains(path) && !w.failed.contains(path) {
            return;
        }
        w.watcher.unwatch_tree(path);
        w.ok.retain(|d| !d.starts_with(path));
        w.failed.retain(|d| !d.starts_with(path));
    }
}
