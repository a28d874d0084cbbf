//! Whether a process still holds a fresh claim open for writing: a writer that renamed its file into
//! the spool before closing it, or reopened a queued input without changing it yet.
//!
//! Asked once per claim, on the read-only descriptor the claim is read with: a read lease
//! (`F_SETLEASE`, given back at once) is refused with EAGAIN while any process has the file open for
//! writing, through a descriptor or a writable shared mapping, whoever that process runs as. One
//! system call per file.
//!
//! The kernel grants a lease only on a file of our own (the owner is our filesystem uid) or with
//! CAP_LEASE, and only where the filesystem and `fs.leases-enable` allow leases. Where it refuses
//! (EACCES, EPERM, EINVAL), the descriptors of every process are read from /proc instead, at most
//! once per batch and only when some file of the batch needed it, and the log says once why. That
//! scan costs milliseconds, cannot see mappings whose descriptor was closed, nor the descriptors of
//! other users' processes (unless we may trace them).
//!
//! While we hold a lease, a writer's `open()` waits and the kernel sends us SIGIO, whose default
//! action ends the process: a handler that does nothing is installed before the first lease.

use std::collections::HashSet;
use std::fs::{File, Metadata};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use log::{debug, warn};

use crate::ffi::lease::{Lease, set_lease};

/// The check for one batch of fresh claims (see the module's comment).
pub struct Writers<'a> {
    dir: &'a Path,
    leases: bool,
    scanned: OnceLock<HashSet<(u64, u64)>>,
}

impl<'a> Writers<'a> {
    /// Leases where the kernel grants them; /proc, looking for files below `dir`, where not.
    pub fn new(dir: &'a Path) -> Writers<'a> {
        Writers {
            dir,
            leases: sigio_is_harmless(),
            scanned: OnceLock::new(),
        }
    }

    /// /proc alone, never a lease (what a refused lease falls back to).
    pub fn proc_only(dir: &'a Path) -> Writers<'a> {
        Writers {
            dir,
            leases: false,
            scanned: OnceLock::new(),
        }
    }

    /// Whether a process has `file` open for writing. `file` is ours, opened read-only; `meta` is
    /// its metadata.
    pub fn busy(&self, file: &File, meta: &Metadata) -> bool {
        if self.leases {
            match try_lease(file) {
                Ok(busy) => return busy,
                Err(e) => say_fallback_once(self.dir, &e, meta.uid()),
            }
        }
        self.scanned
            .get_or_init(|| scan_proc(self.dir))
            .contains(&(meta.dev(), meta.ino()))
    }
}

/// `Ok(true)`: open for writing somewhere; `Ok(false)`: not; `Err`: no lease to be had here.
fn try_lease(file: &File) -> std::io::Result<bool> {
    match set_lease(file.as_fd(), Lease::Read) {
        Ok(()) => {
            // closing the descriptor gives it back too, should this ever fail
            let _ = set_lease(file.as_fd(), Lease::Unlock);
            Ok(false)
        }
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(true),
        Err(e) => Err(e),
    }
}

/// Installs (once per process) a SIGIO handler that does nothing; false when it cannot be.
pub fn sigio_is_harmless() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let ignored = Arc::new(AtomicBool::new(false));
        match signal_hook::flag::register(signal_hook::consts::SIGIO, ignored) {
            Ok(_) => {
                debug!("checking fresh claims for writers with file leases");
                true
            }
            Err(e) => {
                warn!(
                    "cannot install a SIGIO handler ({e}): checking /proc for writers instead (slower)"
                );
                false
            }
        }
    })
}

/// Says why leases are not used, once per kind of refusal for the life of the process.
fn say_fallback_once(dir: &Path, e: &std::io::Error, owner: u32) {
    static SAID: AtomicU8 = AtomicU8::new(0);
    let (bit, why) = match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => (
            1,
            format!("cannot take a lease on inputs owned by uid {owner} (no CAP_LEASE)"),
        ),
        Some(libc::EINVAL) => (
            2,
            format!(
                "the filesystem of {} refuses file leases (or fs.leases-enable is 0)",
                dir.display()
            ),
        ),
        _ => (4, format!("cannot take a lease on an input ({e})")),
    };
    if SAID.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
        warn!("{why}: checking /proc for writers instead (slower)");
    }
}

/// (device, inode) of every file below `dir` that some process holds open for writing, read from
/// /proc (Linux). Files in a burst look alike by their mtime; this is what tells a slow writer's
/// half-written file from a finished one when no watcher event was seen. A claimed file is looked
/// for under its work folder (the writer's descriptor follows the rename).
pub fn scan_proc(dir: &Path) -> HashSet<(u64, u64)> {
    let mut open = HashSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return open;
    };
    for proc_entry in procs.flatten() {
        let pid = proc_entry.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if !target.starts_with(dir) {
                continue;
            }
            let info = proc_entry.path().join("fdinfo").join(fd.file_name());
            let writable = std::fs::read_to_string(info).ok().and_then(|text| {
                let flags = text
                    .lines()
                    .find_map(|l| l.strip_prefix("flags:"))?
                    .trim()
                    .to_string();
                u32::from_str_radix(&flags, 8).ok().map(|f| f & 0o3 != 0)
            });
            if writable == Some(true)
                && let Ok(meta) = std::fs::metadata(fd.path())
            {
                open.insert((meta.dev(), meta.ino()));
            }
        }
    }
    open
}

#[cfg(test)]
mod tests;
