//! File operations below the spool that never follow a symbolic link: the folder of an input is
//! opened one component at a time with `O_NOFOLLOW` from the spool itself, and the input is looked
//! at, checked and renamed relative to that folder. A path that leads through a link (made before
//! or swapped in meanwhile) fails with ELOOP or ENOTDIR instead of reaching outside the spool.
//!
//! A claimed input is read once, and only when it is still the file that was judged complete (same
//! inode, size and mtime; ctime too before the rename) and nobody holds it open for writing.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use rustix::fs::{Access, AtFlags, Mode, OFlags};

use super::{Snapshot, Writers};

/// A folder is only ever a place to look things up in: `O_PATH` (no read access to it needed, and
/// no open event for the spool's own watch: one per claim otherwise, 1 - 2 % of a drain's CPU in
/// the watcher threads).
const DIR: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens `root/rel` (a folder) without following a link at any depth. With `create`, missing
/// folders are made again, with their parent's permissions.
pub fn open_folder(root: &Path, rel: &Path, create: bool) -> io::Result<OwnedFd> {
    let mut fd = rustix::fs::open(root, DIR, Mode::empty())?;
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(io::Error::other("not a plain path below the spool"));
        };
        fd = match rustix::fs::openat(&fd, name, DIR, Mode::empty()) {
            Err(rustix::io::Errno::NOENT) if create => {
                let mode = rustix::fs::fstat(&fd)?.st_mode & 0o7777;
                match rustix::fs::mkdirat(&fd, name, Mode::from_raw_mode(mode)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                rustix::fs::openat(&fd, name, DIR, Mode::empty())?
            }
            other => other?,
        };
    }
    Ok(fd)
}

/// Whether an error says a path led through a link or a non-folder (ELOOP, ENOTDIR).
pub fn through_link(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(Errno::from_io_error(e), Some(Errno::LOOP | Errno::NOTDIR))
}

/// The metadata of `name` in `folder`, of the link itself when it is one.
pub fn lstat_in(folder: &OwnedFd, name: &Path) -> io::Result<std::fs::Metadata> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    File::from(rustix::fs::openat(folder, name, flags, Mode::empty())?).metadata()
}

/// Whether this process may read `name` in `folder` (its effective user and groups).
pub fn readable(folder: &OwnedFd, name: &Path) -> io::Result<()> {
    Ok(rustix::fs::accessat(
        folder,
        name,
        Access::READ_OK,
        AtFlags::EACCESS,
    )?)
}

/// Renames without replacing anything at the target (EEXIST instead). Where the filesystem cannot
/// (EINVAL), a hard link and an unlink do the same, not atomically.
pub fn rename_noreplace(
    from_dir: &OwnedFd,
    from: &Path,
    to_dir: &OwnedFd,
    to: &Path,
) -> io::Result<()> {
    use std::os::fd::AsFd;
    crate::dirs::rename_noreplace_at(from_dir.as_fd(), from, to_dir.as_fd(), to)
}

/// Why a claimed input is not what was judged complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    NotRegular,
    Replaced,
    Written,
    OpenForWriting,
}

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Changed::NotRegular => "no longer a regular file",
            Changed::Replaced => "replaced by another file",
            Changed::Written => "written to since it was judged complete",
            Changed::OpenForWriting => "still open for writing",
        })
    }
}

/// Reads a fresh claim at `path` into `buf` when it is still the file `judged` describes and no
/// process holds it open for writing (asked of `writers`); `Ok(Err(why))` otherwise, with nothing
/// read that counts.
pub fn read_unchanged(
    path: &Path,
    judged: &Snapshot,
    writers: &Writers,
    buf: &mut Vec<u8>,
) -> io::Result<Result<(), Changed>> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    // without an access-time update (the inode written back once more per message), where we may:
    // the owner (or CAP_FOWNER) only, so another user's input is opened as before
    let opened = match rustix::fs::open(path, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rustix::fs::open(path, flags, Mode::empty()),
        other => other,
    };
    let mut f = match opened {
        Ok(fd) => File::from(fd),
        Err(rustix::io::Errno::LOOP) => return Ok(Err(Changed::NotRegular)),
        Err(e) => return Err(e.into()),
    };
    let before = f.metadata()?;
    if !before.file_type().is_file() {
        return Ok(Err(Changed::NotRegular));
    }
    let now = Snapshot::of(&before);
    if (now.dev, now.ino) != (judged.dev, judged.ino) {
        return Ok(Err(Changed::Replaced));
    }
    if !now.same_content(judged) {
        return Ok(Err(Changed::Written));
    }
    if writers.busy(&f, &before) {
        return Ok(Err(Changed::OpenForWriting));
    }
    // the size is known: read it without std's probing for a size hint (a stat and a seek), and
    // no further than one byte past it (a file that grew is refused below, never read whole)
    buf.reserve(usize::try_from(before.len()).unwrap_or(0).saturating_add(1));
    (&mut f)
        .take(before.len().saturating_add(1))
        .read_to_end(buf)?;
    let after = Snapshot::of(&f.metadata()?);
    if !after.same_content(judged) || buf.len() as u64 != judged.size {
        return Ok(Err(Changed::Written));
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading a claim leaves its access time alone (relatime would write it: it is older than
    /// the last change here), and the bytes are all read.
    #[test]
    fn a_claim_is_read_whole_without_touching_its_access_time() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("claim");
        std::fs::write(&path, "x".repeat(70_000)).unwrap();
        let meta = path.metadata().unwrap();
        let old = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: meta.mtime() - 3600,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: meta.mtime(),
                tv_nsec: meta.mtime_nsec(),
            },
        };
        rustix::fs::utimensat(rustix::fs::CWD, &path, &old, AtFlags::empty()).unwrap();
        let judged = Snapshot::of(&path.metadata().unwrap());
        let mut buf = Vec::new();
        let read = read_unchanged(&path, &judged, &Writers::new(tmp.path()), &mut buf).unwrap();
        assert_eq!(read, Ok(()));
        assert_eq!(buf.len(), 70_000);
        assert_eq!(path.metadata().unwrap().atime(), meta.mtime() - 3600);
    }

    #[test]
    fn links_at_any_depth_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("spool"), tmp.path().join("outside"));
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(outside.join("deep")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a/link")).unwrap();
        assert!(open_folder(&root, Path::new("a/b"), false).is_ok());
        for rel in ["a/link", "a/link/deep"] {
            assert!(open_folder(&root, Path::new(rel), false).is_err(), "{rel}");
            assert!(open_folder(&root, Path::new(rel), true).is_err(), "{rel}");
        }
        assert!(open_folder(&root, Path::new("a/../a"), false).is_err());
        // a missing folder is made again, never through the link
        let fd = open_folder(&root, Path::new("a/new/er"), true).unwrap();
        assert!(root.join("a/new/er").is_dir());
        let meta = lstat_in(
            &open_folder(&root, Path::new("a"), false).unwrap(),
            Path::new("link"),
        );
        assert!(meta.unwrap().file_type().is_symlink());
        drop(fd);
    }

    #[test]
    fn a_claim_is_read_only_while_it_is_the_file_judged_complete() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.eml");
        std::fs::write(&path, b"complete").unwrap();
        let judged = Snapshot::of(&std::fs::metadata(&path).unwrap());
        let none = Writers::new(tmp.path());
        let mut buf = Vec::new();
        assert_eq!(
            read_unchanged(&path, &judged, &none, &mut buf).unwrap(),
            Ok(())
        );
        assert_eq!(buf, b"complete");
        // opened for writing, nothing written: unchanged, but not done
        let w = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        for writers in [Writers::new(tmp.path()), Writers::proc_only(tmp.path())] {
            let got = read_unchanged(&path, &judged, &writers, &mut Vec::new()).unwrap();
            assert_eq!(got, Err(Changed::OpenForWriting));
        }
        drop(w);
        // truncated in place (same inode, kept alive so a new file cannot reuse its number)
        std::fs::hard_link(&path, tmp.path().join("keep")).unwrap();
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        w.write_all(b"half").unwrap();
        let got = read_unchanged(&path, &judged, &none, &mut Vec::new()).unwrap();
        assert_eq!(got, Err(Changed::Written));
        // replaced by a link or another file
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        let got = read_unchanged(&path, &judged, &none, &mut Vec::new()).unwrap();
        assert_eq!(got, Err(Changed::NotRegular));
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"complete").unwrap();
        let got = read_unchanged(&path, &judged, &none, &mut Vec::new()).unwrap();
        assert_eq!(got, Err(Changed::Replaced));
    }
}
