//! The spool's watcher: inotify (through the `inotify` crate, notify's own Linux backend) asked for
//! only what readiness needs. notify asks the kernel for every open and every rename away as well,
//! so each claim (a rename out of the spool) came back as an event and woke its thread: about 2.5 %
//! of a drain's throughput. Here a folder reports files made, written, closed after writing,
//! renamed in and removed, and its own move or removal. A file renamed away is not reported:
//! the tracker drops entries a full scan no longer finds (`Tracker::retain_existing`).
//!
//! A watch is put on a folder already open (`Folders` opens it from the spool without following a
//! link at any depth), through `/proc/self/fd`: it lands on exactly that folder, whatever its path
//! names by then, and its identity (device, inode) is kept, so a watch that no longer is on the
//! folder its path names (moved away or replaced while events were lost) can be found.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, select};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::fd::OwnedFd;

/// What happened in a watched folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// a file or folder was made
    Created { path: PathBuf, folder: bool },
    /// a file was written to
    Modified(PathBuf),
    /// a file was closed after writing
    ClosedWrite(PathBuf),
    /// a file or folder was renamed in
    MovedIn { path: PathBuf, folder: bool },
    /// a file or folder was removed
    Removed(PathBuf),
    /// a watched folder was moved or removed itself: it is watched no more
    FolderGone(PathBuf),
    /// the kernel's queue overflowed: events were lost
    Overflow,
}

const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MODIFY)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

/// A folder's device and inode.
pub type Identity = (u64, u64);

/// Watched folders both ways: events name a descriptor, unwatching names a path.
#[derive(Default)]
struct Paths {
    by_wd: HashMap<WatchDescriptor, PathBuf>,
    by_path: HashMap<PathBuf, (WatchDescriptor, Identity)>,
}

/// Reads handed over and not yet taken. While the event thread waits (to hand a complete file to a
/// full work queue), the reader waits too and the kernel's bounded queue fills and overflows (a
/// rescan) instead of changes piling up here: two million events were 464 MB unbounded.
const READS_WAITING: usize = 16;

/// One inotify instance and the thread that reads it; changes go out a read at a time.
pub struct Watcher {
    watches: Watches,
    paths: Arc<Mutex<Paths>>,
    /// wakes the reader from `poll` (an eventfd) and from a hand-over that waits (a channel)
    stop: (Arc<OwnedFd>, Option<Sender<()>>),
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// The watcher and the channel its changes come out of.
    pub fn start() -> std::io::Result<(Watcher, Receiver<Vec<Change>>)> {
        let inotify = Inotify::init()?;
        let watches = inotify.watches();
        let paths = Arc::new(Mutex::new(Paths::default()));
        let stop = Arc::new(rustix::event::eventfd(
            0,
            EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
        )?);
        let (stop_tx, stopping) = crossbeam_channel::bounded(0);
        let (tx, rx) = crossbeam_channel::bounded(READS_WAITING);
        let thread = {
            let (paths, stop) = (paths.clone(), stop.clone());
            std::thread::Builder::new()
                .name("inotify".into())
                .spawn(move || read_loop(inotify, &paths, (&stop, &stopping), &tx))?
        };
        let watcher = Watcher {
            watches,
            paths,
            stop: (stop, Some(stop_tx)),
            thread: Some(thread),
        };
        Ok((watcher, rx))
    }

    /// Watches `folder` (open, `O_PATH` will do; known as `dir`), not the folders below it.
    /// Watching it again renews the watch.
    pub fn watch(&mut self, dir: &Path, folder: OwnedFd) -> std::io::Result<()> {
        let folder = std::fs::File::from(folder);
        let meta = folder.metadata()?;
        let identity = (meta.dev(), meta.ino());
        // held while the watch is added: an event of the new watch waits for its path
        let mut p = self.paths.lock().expect("watch paths lock");
        let magic = format!("/proc/self/fd/{}", folder.as_raw_fd());
        let wd = self.watches.add(magic, MASK)?;
        if let Some(old) = p.by_wd.insert(wd.clone(), dir.to_path_buf())
            && old != dir
            && p.by_path.get(&old).is_some_and(|(w, _)| *w == wd)
        {
            p.by_path.remove(&old); // the same folder under a new name
        }
        if let Some((old, _)) = p.by_path.insert(dir.to_path_buf(), (wd.clone(), identity))
            && old != wd
        {
            // the path names another folder now: the old one went elsewhere unseen (an overflow)
            p.by_wd.remove(&old);
            let _ = self.watches.remove(old);
        }
        Ok(())
    }

    /// Whether `dir` is watched (under that path).
    pub fn watches(&self, dir: &Path) -> bool {
        let p = self.paths.lock().expect("watch paths lock");
        p.by_path.contains_key(dir)
    }

    /// The folders watched, with the identity of the folder each watch is on.
    pub fn watched(&self) -> Vec<(PathBuf, Identity)> {
        let p = self.paths.lock().expect("watch paths lock");
        p.by_path
            .iter()
            .map(|(d, (_, id))| (d.clone(), *id))
            .collect()
    }

    /// Stops watching `dir` (not the folders below it).
    pub fn unwatch(&mut self, dir: &Path) {
        self.unwatch_where(|d| d == dir);
    }

    /// Stops watching `dir` and every watched folder below it.
    pub fn unwatch_tree(&mut self, dir: &Path) {
        self.unwatch_where(|d| d.starts_with(dir));
    }

    fn unwatch_where(&mut self, gone: impl Fn(&Path) -> bool) {
        let wds: Vec<WatchDescriptor> = {
            let mut p = self.paths.lock().expect("watch paths lock");
            let dirs: Vec<PathBuf> = p.by_path.keys().filter(|d| gone(d)).cloned().collect();
            dirs.into_iter()
                .filter_map(|d| {
                    let (wd, _) = p.by_path.remove(&d)?;
                    p.by_wd.remove(&wd);
                    Some(wd)
                })
                .collect()
        };
        for wd in wds {
            let _ = self.watches.remove(wd); // gone already when the folder was removed
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = rustix::io::write(&*self.stop.0, &1u64.to_ne_bytes());
        self.stop.1.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads events until stopped or the descriptor fails (then the channel closes and the event
/// thread relies on scans).
fn read_loop(
    mut inotify: Inotify,
    paths: &Mutex<Paths>,
    (stop, stopping): (&OwnedFd, &Receiver<()>),
    tx: &Sender<Vec<Change>>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let mut fds = [
            PollFd::new(&inotify, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        let events = match inotify.read_events(&mut buffer) {
            Ok(events) => events,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let mut changes = Vec::new();
        {
            let mut p = paths.lock().expect("watch paths lock");
            for event in events {
                if let Some(change) = change(&mut p, &event.wd, event.mask, event.name) {
                    changes.push(change);
                }
            }
        }
        if !changes.is_empty() {
            select! {
                send(tx, changes) -> sent => if sent.is_err() {
                    return;
                },
                recv(stopping) -> _ => return,
            }
        }
    }
}

/// What one event means, with its folder's path; the descriptor of a removed watch is forgotten.
fn change(
    p: &mut Paths,
    wd: &WatchDescriptor,
    mask: EventMask,
    name: Option<&std::ffi::OsStr>,
) -> Option<Change> {
    if mask.contains(EventMask::Q_OVERFLOW) {
        return Some(Change::Overflow);
    }
    if mask.contains(EventMask::IGNORED) {
        if let Some(dir) = p.by_wd.remove(wd)
            && p.by_path.get(&dir).is_some_and(|(w, _)| w == wd)
        {
            p.by_path.remove(&dir);
        }
        return None;
    }
    let dir = p.by_wd.get(wd)?.clone();
    if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
        // a move read after the event thread saw its MOVED_TO and watched the folder again under
        // its new name (the two events are queued one after the other, and may be read apart):
        // the folder is where its path says, nothing is gone
        let here = |(w, identity): &(WatchDescriptor, Identity)| {
            w == wd
                && dir
                    .symlink_metadata()
                    .is_ok_and(|m| m.is_dir() && (m.dev(), m.ino()) == *identity)
        };
        if mask.contains(EventMask::MOVE_SELF) && p.by_path.get(&dir).is_some_and(here) {
            return None;
        }
        return Some(Change::FolderGone(dir));
    }
    let path = dir.join(name?);
    let folder = mask.contains(EventMask::ISDIR);
    Some(if mask.contains(EventMask::CREATE) {
        Change::Created { path, folder }
    } else if mask.contains(EventMask::MOVED_TO) {
        Change::MovedIn { path, folder }
    } else if mask.contains(EventMask::CLOSE_WRITE) {
        Change::ClosedWrite(path)
    } else if mask.contains(EventMask::MODIFY) {
        Change::Modified(path)
    } else if mask.contains(EventMask::DELETE) {
        Change::Removed(path)
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests;
