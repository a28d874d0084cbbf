//! The spool: which files are inputs, finding them (startup scan, periodic rescan, notify events),
//! deciding when each is complete (`ready`), claiming it (`claim`), and not sealing again what the
//! process died on twice (`crashguard`).
//!
//! The watcher is never trusted alone (inotify queues overflow, NFS sends no events): a full scan runs
//! at start, every `rescan_seconds`, and at once when the watcher reports an overflow or an error.

pub mod claim;
pub mod crashguard;
pub mod ready;
pub mod watch;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

/// Whether a path below the spool is an input: not a dotfile, not below a dot-folder (our work
/// folder lives there), not a writer's temporary `.tmp` / `.part` file.
pub fn is_input(spool: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(spool) else {
        return false;
    };
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    !is_hidden(spool, path)
        && !name.is_empty()
        && !name.ends_with(".tmp")
        && !name.ends_with(".part")
}

/// Below a dot-folder (our work folder among them), a dot-file, or not below `spool` at all.
pub fn is_hidden(spool: &Path, path: &Path) -> bool {
    path.strip_prefix(spool).map_or(true, |rel| {
        rel.components().any(|c| match c {
            Component::Normal(name) => name.to_string_lossy().starts_with('.'),
            _ => true,
        })
    })
}

/// (device, inode) of every file below `spool` that some process holds open for writing, read from
/// /proc (Linux). Files in a burst look alike by their mtime; this is what tells a slow writer's
/// half-written file from a finished one when no watcher event was seen.
pub fn writers(spool: &Path) -> HashSet<(u64, u64)> {
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
            if !target.starts_with(spool) {
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
mod tests {
    use super::*;

    #[test]
    fn inputs_and_ignored_names() {
        let spool = Path::new("/s");
        for (p, want) in [
            ("/s/a.eml", true),
            ("/s/sub/b.eml", true),
            ("/s/noext", true),
            ("/s/.hidden.eml", false),
            ("/s/.smime-pickup/i1/x,a.eml", false),
            ("/s/a.eml.tmp", false),
            ("/s/a.PART", false),
            ("/other/a.eml", false),
        ] {
            assert_eq!(is_input(spool, Path::new(p)), want, "{p}");
        }
    }

    #[test]
    fn a_file_open_for_writing_is_seen() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("w.eml");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"partial").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(writers(tmp.path()).contains(&(meta.dev(), meta.ino())));
        drop(f);
        assert!(!writers(tmp.path()).contains(&(meta.dev(), meta.ino())));
    }
}
