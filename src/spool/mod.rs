//! The spool: which files are inputs, finding them (startup scan, periodic rescan, notify events),
//! deciding when each is complete (`ready`), claiming it (`claim`), and not sealing again what the
//! process died on twice (`crashguard`).
//!
//! The watcher is never trusted alone (inotify queues overflow, NFS sends no events): a full scan runs
//! at start, every `rescan_seconds`, and at once when the watcher reports an overflow or an error.

pub mod claim;
pub mod crashguard;
mod folders;
mod fresh;
pub mod ready;
pub mod safe;
pub mod watch;
mod watcher;
mod writers;

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

pub use fresh::Fresh;
pub use writers::{Writers, scan_proc, sigio_is_harmless};

/// What an input looked like when it was judged complete: the claimed file must still be this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Snapshot {
    pub fn of(meta: &std::fs::Metadata) -> Snapshot {
        Snapshot {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Same file, same content as far as the kernel can tell. The ctime is left out: `rename()`
    /// changes it, so it is compared before the claim only (`same`).
    pub fn same_content(&self, other: &Snapshot) -> bool {
        (self.dev, self.ino, self.size, self.mtime)
            == (other.dev, other.ino, other.size, other.mtime)
    }
}

/// A spool file judged complete, with what it looked like then.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub path: PathBuf,
    pub snapshot: Snapshot,
}

/// What a path below the spool is that is neither a regular file nor a real folder, if so.
pub fn special_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    Some(if t.is_file() || t.is_dir() {
        return None;
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a device"
    })
}

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

/// Which file names are inputs (`inputs` in the config, `*.eml` by default): PowerMTA-style patterns
/// where `*` stands for any run of characters and `?` for one, compared without regard to ASCII case
/// (exporters on other systems write `.EML`). A reason file (`*.reason`) is never an input, whatever
/// the patterns say, so moving a failed folder's contents back cannot feed reasons in as messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs(Vec<String>);

impl Inputs {
    pub fn new(patterns: &[String]) -> Inputs {
        Inputs(patterns.iter().map(|p| p.to_ascii_lowercase()).collect())
    }

    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        !name.ends_with(".reason") && self.0.iter().any(|p| glob(p.as_bytes(), name.as_bytes()))
    }
}

/// `*` and `?` matching, iterative (linear in practice: one backtrack point).
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
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
    fn input_patterns() {
        let eml = Inputs::new(&["*.eml".to_string()]);
        for (name, want) in [
            ("a.eml", true),
            ("A.EML", true),
            (".eml", true),
            ("notes.txt", false),
            ("a.eml.reason", false),
            ("a.eml.1", false),
            ("a.1.eml", true),
            ("eml", false),
        ] {
            assert_eq!(eml.matches(name), want, "{name}");
        }
        let any = Inputs::new(&["*".to_string()]);
        assert!(any.matches("x") && !any.matches("x.eml.reason"));
        let several = Inputs::new(&["msg-??.txt".to_string(), "*.msg".to_string()]);
        assert!(several.matches("msg-01.txt") && several.matches("a.msg"));
        assert!(!several.matches("msg-1.txt") && !several.matches("a.eml"));
        let long = "a".repeat(10_000);
        assert!(!Inputs::new(&["*a*a*a*a*b".to_string()]).matches(&long));
    }
}
