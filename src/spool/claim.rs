//! Claiming spool files, maildir style: an input is ours once `rename()` has moved it into this
//! instance's work folder, on the spool's filesystem. A rename either happens or not, so two daemons on
//! one spool (two hosts on NFS included) never both get a file: the loser sees ENOENT and moves on.
//!
//! Each instance owns `WORK/<instance>/`, holding an exclusive lock on `WORK/<instance>/.lock` for its
//! lifetime. An instance that died (`kill -9`, reboot) leaves its folder unlocked; any instance that can
//! take the lock adopts the claims inside (renames them into its own folder) and removes the folder.
//! The folder is created under a dot-name and renamed into place with the lock already held, so nobody
//! can adopt a folder that is still being set up.
//!
//! A claim's file name carries everything recovery needs: `<instance>-<seq>,<relative path>` with `%`
//! and `/` escaped. The part before the comma is globally unique and names its outputs. Names that
//! start with a dot are the instance's own state (`.lock`, the crash guard's `.sealing` and
//! `.suspects`), never claims: a claim's name starts with its instance's id.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::crashguard::CrashGuard;
use super::{Candidate, Snapshot, safe};

/// This process's work folder and lock.
pub struct Instance {
    pub id: String,
    pub dir: PathBuf,
    root: PathBuf,
    _lock: File,
    seq: AtomicU64,
    /// What this instance is sealing, and the strikes of the claims it adopted
    pub guard: CrashGuard,
}

/// What came of trying to claim a spool file.
#[derive(Debug)]
pub enum Taken {
    Claimed(Claim),
    /// gone, or taken by someone else first
    Gone,
    /// written, truncated, replaced or chmod-ed since it was judged complete
    Changed,
    /// a link, FIFO, socket or device (now): left where it is
    NotRegular(&'static str),
    /// reached through a link, or not below the spool at all: never ours
    Outside,
    /// we may not read it: left where it is, for its owner to fix
    Unreadable(std::io::Error),
}

/// One claimed input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Where it is now, in a work folder
    pub path: PathBuf,
    /// Globally unique id (names the outputs)
    pub id: String,
    /// Path relative to the spool, as it arrived (kept for the failed folder)
    pub rel: PathBuf,
    /// Just taken from the spool and not tried yet: nothing of it can be staged, committed or sent,
    /// so there is nothing to recover (adopted and retried claims are not fresh)
    pub fresh: bool,
}

impl Claim {
    /// Where the claim is once its pickup outputs are committed (`path` is where it is before).
    pub fn committed_path(&self) -> PathBuf {
        let mut p = self.path.as_os_str().to_owned();
        p.push(COMMITTED);
        PathBuf::from(p)
    }

    /// The claimed input, committed or not.
    pub fn current_path(&self) -> PathBuf {
        let committed = self.committed_path();
        if committed.exists() {
            committed
        } else {
            self.path.clone()
        }
    }
}

/// Appended to a claim's name at the pickup commit point (see `deliver::pickup`).
pub const COMMITTED: &str = "#committed";

/// Names a claim's SMTP progress record (written by `deliver::smtp`): a suffix no claim can end
/// with, since a claim's name holds its input's name with `#` escaped.
pub const SMTP_SENT: &str = "#smtp-sent";

/// Names a claim's API progress record (written by `deliver::api`), a sidecar like `SMTP_SENT`.
pub const API_SENT: &str = "#api-sent";

impl Instance {
    /// Creates and locks a new work folder below `root`.
    pub fn start(root: &Path) -> std::io::Result<Instance> {
        crate::dirs::create_all(root)?;
        let mut rnd = [0u8; 4];
        openssl::rand::rand_bytes(&mut rnd).map_err(std::io::Error::other)?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = format!(
            "i{secs:x}{:x}{}",
            std::process::id(),
            rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let tmp = root.join(format!(".{id}.new"));
        std::fs::DirBuilder::new()
            .mode(crate::dirs::DIR_MODE)
            .create(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(crate::dirs::DIR_MODE))?;
        let lock = File::create(tmp.join(".lock"))?;
        lock.try_lock()
            .map_err(|e| std::io::Error::other(format!("lock {}: {e}", tmp.display())))?;
        let dir = root.join(&id);
        std::fs::rename(&tmp, &dir)?;
        sync_dir(root)?;
        let guard = CrashGuard::create(&dir)?;
        Ok(Instance {
            id,
            dir,
            root: root.to_path_buf(),
            _lock: lock,
            seq: AtomicU64::new(0),
            guard,
        })
    }

    /// Claims `path` (below `spool`) as it is now; `Ok(None)` unless it is taken (tests, tools).
    pub fn claim(&self, spool: &Path, path: &Path) -> std::io::Result<Option<Claim>> {
        let snapshot = match path.symlink_metadata() {
            Ok(m) => Snapshot::of(&m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let path = path.to_path_buf();
        Ok(match self.take(spool, &Candidate { path, snapshot })? {
            Taken::Claimed(claim) => Some(claim),
            _ => None,
        })
    }

    /// Claims a complete input by renaming it into our folder, if it is still the regular file
    /// judged complete (not changed since, not a link, readable by us), reached through real folders
    /// of the spool only.
    pub fn take(&self, spool: &Path, candidate: &Candidate) -> std::io::Result<Taken> {
        let path = &candidate.path;
        let Ok(rel) = path.strip_prefix(spool).map(Path::to_path_buf) else {
            return Ok(Taken::Outside);
        };
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Ok(Taken::Outside);
        };
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        let folder = match safe::open_folder(spool, parent, false) {
            Ok(fd) => fd,
            Err(e) if gone(&e) => return Ok(Taken::Gone),
            // a link (or a file) where a folder was: whatever is behind it is not ours
            Err(e) if safe::through_link(&e) => return Ok(Taken::Outside),
            Err(e) => return Err(e),
        };
        let meta = match safe::lstat_in(&folder, Path::new(name)) {
            Ok(m) => m,
            Err(e) if gone(&e) => return Ok(Taken::Gone),
            Err(e) => return Err(e),
        };
        if let Some(kind) = super::special_kind(&meta) {
            return Ok(Taken::NotRegular(kind));
        }
        if meta.is_dir() {
            return Ok(Taken::Gone); // a folder moved in is walked, never claimed whole
        }
        if Snapshot::of(&meta) != candidate.snapshot {
            return Ok(Taken::Changed);
        }
        if let Err(e) = safe::readable(&folder, Path::new(name)) {
            return Ok(Taken::Unreadable(e));
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{seq}", self.id);
        let target = self.dir.join(format!("{id},{}", encode_rel(&rel)));
        let ours = safe::open_folder(&self.dir, Path::new(""), false)?;
        let to = Path::new(target.file_name().expect("a claim name"));
        match safe::rename_noreplace(&folder, Path::new(name), &ours, to) {
            Ok(()) => Ok(Taken::Claimed(Claim {
                path: target,
                id,
                rel,
                fresh: true,
            })),
            Err(e) if gone(&e) => Ok(Taken::Gone),
            Err(e) => Err(e),
        }
    }

    /// Puts a fresh claim back where it was in the spool (its folder made again if it was removed;
    /// beside it under `<claim id>-<name>` if a new file took the name meanwhile); returns where.
    pub fn put_back(&self, spool: &Path, claim: &Claim) -> std::io::Result<PathBuf> {
        let (parent, name) = match (claim.rel.parent(), claim.rel.file_name()) {
            (Some(p), Some(n)) => (p, n.to_owned()),
            _ => return Err(std::io::Error::other("no name to put back under")),
        };
        let folder = safe::open_folder(spool, parent, true)?;
        let ours = safe::open_folder(&self.dir, Path::new(""), false)?;
        let from = Path::new(claim.path.file_name().expect("a claim name"));
        let mut to = PathBuf::from(&name);
        if let Err(e) = safe::rename_noreplace(&ours, from, &folder, &to) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(e);
            }
            to = PathBuf::from(format!("{}-{}", claim.id, name.to_string_lossy()));
            safe::rename_noreplace(&ours, from, &folder, &to)?;
        }
        Ok(spool.join(parent).join(to))
    }

    /// Adopts the claims of every dead instance under the work root; returns them (now in our folder).
    pub fn adopt_dead(&self) -> std::io::Result<Vec<Claim>> {
        let mut adopted = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let dir = entry?.path();
            let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if dir == self.dir || !dir.is_dir() {
                continue;
            }
            if name.starts_with('.') {
                // a folder whose creation never finished: no claim can be inside (claims need the
                // final name); remove it once it is clearly abandoned
                let old = dir
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|e| e.as_secs() > 3600));
                if old {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                continue;
            }
            let lock = match File::open(dir.join(".lock")) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if lock.try_lock().is_err() {
                continue; // alive
            }
            // what the dead instance was sealing comes along first: a death from here on loses none
            self.guard.carry(CrashGuard::read_dead(&dir))?;
            let mut state = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let from = entry?.path();
                let Some(file) = from.file_name() else {
                    continue;
                };
                if file.as_encoded_bytes().starts_with(b".") {
                    if file != ".lock" {
                        state.push(from);
                    }
                    continue;
                }
                let to = self.dir.join(file);
                std::fs::rename(&from, &to)?;
                let name = file.to_string_lossy();
                if is_claim_name(&name) {
                    adopted.extend(parse_claim(&to));
                }
            }
            sync_dir(&self.dir)?;
            for path in state {
                std::fs::remove_file(path)?;
            }
            std::fs::remove_file(dir.join(".lock"))?;
            std::fs::remove_dir(&dir)?;
            drop(lock);
        }
        Ok(adopted)
    }

    /// Removes our folder at a clean exit when no claim is left in it.
    pub fn close(self) {
        let state: Option<Vec<PathBuf>> = std::fs::read_dir(&self.dir).ok().and_then(|d| {
            d.map(|e| {
                let e = e.ok()?;
                e.file_name()
                    .as_encoded_bytes()
                    .starts_with(b".")
                    .then(|| e.path())
            })
            .collect()
        });
        if let Some(state) = state {
            for path in state.iter().filter(|p| !p.ends_with(".lock")) {
                let _ = std::fs::remove_file(path);
            }
            let _ = std::fs::remove_file(self.dir.join(".lock"));
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// Work-folder files beside a claim: its SMTP and API progress records.
const SIDECARS: [&str; 2] = [SMTP_SENT, API_SENT];

/// Whether a work-folder file name is a claim (not one of its sidecar files).
fn is_claim_name(name: &str) -> bool {
    !SIDECARS.iter().any(|s| name.ends_with(s))
}

/// The claim a work-folder path stands for.
/// A committed claim (`…#committed`) is reported under its pre-commit path, which is what
/// `Claim::committed_path` and recovery expect.
pub fn parse_claim(path: &Path) -> Option<Claim> {
    let name = path.file_name()?.to_str()?;
    let name = name.strip_suffix(COMMITTED).unwrap_or(name);
    let (id, rel) = name.split_once(',')?;
    Some(Claim {
        path: path.with_file_name(name),
        id: id.to_string(),
        rel: PathBuf::from(decode_rel(rel)),
        fresh: false,
    })
}

/// Longest encoded relative path kept in a claim name (file names stop at 255 bytes).
const MAX_ENCODED: usize = 180;

/// `%`, `/` and `#` escaped: a claim's name never holds a `#` of its input's, so the state suffixes
/// (`#committed`, `#smtp-sent`, `#api-sent`) cannot be forged by naming an input `report#committed`.
fn escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace('/', "%2F")
        .replace('#', "%23")
}

fn encode_rel(rel: &Path) -> String {
    let encoded = escape(&rel.to_string_lossy());
    if encoded.len() <= MAX_ENCODED {
        return encoded;
    }
    // too deep to keep whole: keep the file name, as much as fits
    let base = rel
        .file_name()
        .map(|n| escape(&n.to_string_lossy()))
        .unwrap_or_default();
    let mut start = base.len().saturating_sub(MAX_ENCODED);
    while !base.is_char_boundary(start) {
        start += 1;
    }
    base[start..].to_string()
}

fn decode_rel(s: &str) -> String {
    s.replace("%2F", "/")
        .replace("%23", "#")
        .replace("%25", "%")
}

/// fsync a directory, so renames into or out of it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
