//! Folders and files the daemon creates, with modes that do not depend on the umask.
//!
//! The service runs with `UMask=0077` under systemd and with whatever a shell has by hand (000
//! included): neither may decide who reads quarantined mail. Folders we create are 0750 (the MTA's
//! group may list them), and keep the setgid bit of the folder they are made in, so an install that
//! gives the spool tree a group with `chmod g+s` keeps that group all the way down. Reason files are
//! 0640, quarantined inputs 0600 (pickup files are 0640: `deliver::pickup`).

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const DIR_MODE: u32 = 0o750;
pub const REASON_MODE: u32 = 0o640;
pub const INPUT_MODE: u32 = 0o600;

/// Creates `path` and the missing folders above it, each 0750 (plus the setgid bit of its parent).
/// Folders that exist are left as they are. Returns whether anything was created.
pub fn create_all(path: &Path) -> std::io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(false),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a folder",
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_all(parent)?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {
            return Ok(false); // made meanwhile by someone else: theirs to set
        }
        Err(e) => return Err(e),
    }
    let setgid = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .and_then(|p| p.metadata().ok())
        .map_or(0, |m| m.permissions().mode() & 0o2000);
    std::fs::set_permissions(path, Permissions::from_mode(DIR_MODE | setgid))?;
    Ok(true)
}

/// Creates `path` exclusively (never an existing file, never through a symlink) with `mode` exactly.
pub fn create_new_file(path: &Path, mode: u32) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(mode))?;
    Ok(f)
}

/// Renames `from` (in the folder `from_dir`) to `to` (in `to_dir`) unless `to` exists (then
/// AlreadyExists): atomically where the filesystem can (`RENAME_NOREPLACE`), else by a hard link and
/// an unlink. The folders are open descriptors, or `rustix::fs::CWD` for plain paths.
pub fn rename_noreplace_at(
    from_dir: BorrowedFd<'_>,
    from: &Path,
    to_dir: BorrowedFd<'_>,
    to: &Path,
) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, RenameFlags};
    match rustix::fs::renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE) {
        Err(rustix::io::Errno::INVAL) => {
            rustix::fs::linkat(from_dir, from, to_dir, to, AtFlags::empty())?;
            Ok(rustix::fs::unlinkat(from_dir, from, AtFlags::empty())?)
        }
        other => Ok(other?),
    }
}

/// `rename_noreplace_at` for two paths.
pub fn rename_exclusive(from: &Path, to: &Path) -> std::io::Result<()> {
    rename_noreplace_at(rustix::fs::CWD, from, rustix::fs::CWD, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_the_same_under_any_umask() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("top");
        std::fs::create_dir(&top).unwrap();
        std::fs::set_permissions(&top, Permissions::from_mode(0o2770)).unwrap();
        // the umask is process-wide: the modes are checked as made, whatever it is now
        let deep = top.join("a/b/c");
        assert!(create_all(&deep).unwrap());
        assert!(
            !create_all(&deep).unwrap(),
            "an existing folder is left alone"
        );
        for d in ["a", "a/b", "a/b/c"] {
            let mode = std::fs::metadata(top.join(d)).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o2750, "{d}: setgid kept, 0750");
        }
        let f = top.join("a/r.reason");
        create_new_file(&f, REASON_MODE).unwrap();
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        assert!(create_new_file(&f, REASON_MODE).is_err(), "never twice");
        std::fs::write(top.join("file"), "x").unwrap();
        assert!(create_all(&top.join("file")).is_err());
    }
}
