//! Reusing the inodes of delivered claims for new staging files.
//!
//! ext4 without a journal will not hand out an inode freed in the last minute (five while its
//! inode-table block is still dirty) and looks for another by scanning the group's free inodes
//! from its start, checking each one's deletion time. Right after many deletions (the claims of the
//! messages just delivered, or another program's) every new staging file paid for a scan of all of
//! them: most of a drain's CPU went into `open(O_CREAT)`.
//!
//! So a committed claim whose outputs are published is not unlinked but kept (in a batch large
//! enough, see `Pickup`): the next such batch's staging file of its work folder makes it owner-only
//! (mode 0600) and renames it to its staging name, one rename and one check per message in a drain.
//! Small batches, and deliverers that pause, make the kept claims no batch took owner-only and
//! rename them into the staging folder as `.recycled.<claim id>`, which a later staging file takes
//! the same way; a file is created only when neither has one (the end of a run removes both). The entry
//! keeps its blocks: the staging file is written over them and cut to its own length, and only then
//! given its group read (`format::write`): the old input is readable by its owner only until it is
//! gone, and no block is freed and allocated again (emptying each claim cost 4 % of a drain's CPU
//! on the project's disk). An inode is reused only where a new staging file would be the same: same
//! filesystem, owner and group as a file this process created in staging, a regular file with one
//! link, no extended attributes (no ACL, no security label) and open nowhere else (a write lease is
//! granted). Every check is made again on the open file when it is taken, so an entry replaced
//! meanwhile (a link, a FIFO, someone else's file) is never written to.
//!
//! Crash safety: pool entries never carry a claim id followed by a dot, so recovery (which looks for
//! `<id>.` in staging) never takes them for outputs; at the first use after a start they are removed.
//! A kept claim left by a crash is a committed claim with nothing left in staging: recovery says its
//! files were published before the stop and removes it, without counting it as delivered again.
//! Nothing staged in a reused inode is published before the work folder it left was fsynced: until
//! then a power loss could leave the claim's old name on disk beside the new staging name, two
//! names for one inode. A pool entry becomes usable only after that fsync (the next batch's commit
//! does it); a kept claim is taken only by a staging file of its own work folder, and that folder
//! is fsynced before the batch's commit renames (not by the commit's own fsync: a power loss in
//! the middle of that one could keep the old name while writing the commit).

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;

use super::sync::Facts;

/// Names of pool entries in the staging folder (no claim id starts with a dot).
pub const PREFIX: &str = ".recycled.";

/// Entries kept at most; further delivered claims are unlinked as before. In a steady drain the
/// pool holds about two batches, since every message takes at least one entry.
const MAX: usize = 256;

/// The `reuse_inodes` key: where delivered claims' inodes become staging files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Reuse {
    /// on ext2/3/4 without a journal, the one filesystem whose file creation it spares a scan
    #[default]
    Auto,
    Always,
    Never,
}

/// Whether `setting` reuses inodes on a filesystem with `facts`, and why, for the log and `check`.
/// Elsewhere a new file is cheap and reuse gains nothing (tmpfs and journalled ext4 drained at the
/// same rate with and without it), so old inputs need not wait in staging there.
pub fn decide(setting: Reuse, facts: Option<&Facts>) -> (bool, String) {
    let unjournalled = |f: &Facts| f.kind == "ext4" && f.device.is_some() && !f.journal;
    match (setting, facts) {
        (Reuse::Always, _) => (true, "reuse_inodes = \"always\"".into()),
        (Reuse::Never, _) => (false, "reuse_inodes = \"never\"".into()),
        (Reuse::Auto, Some(f)) if unjournalled(f) => (
            true,
            "reuse_inodes = auto: delivered inputs' inodes become outputs (ext4 without a journal)"
                .into(),
        ),
        (Reuse::Auto, Some(f)) => (
            false,
            format!("reuse_inodes = auto: every output is a new file ({})", f.kind),
        ),
        (Reuse::Auto, None) => (
            false,
            "reuse_inodes = auto: every output is a new file (the filesystem could not be identified)"
                .into(),
        ),
    }
}

/// Inodes of delivered claims waiting to become staging files.
pub struct Pool {
    /// `false`: nothing is pooled (leftovers of an earlier run are still removed)
    enabled: bool,
    state: Mutex<State>,
    /// leftovers of an earlier run removed (an atomic load per message once done)
    trimmed: std::sync::Once,
}

#[derive(Default)]
struct State {
    /// what a file created in staging gets (learnt from the first one): `None` recycles nothing
    owner: Option<Owner>,
    /// moved into the pool, but the work folder they left was not fsynced since
    pending: Vec<(PathBuf, String)>,
    /// ready to be taken
    ready: Vec<String>,
    /// delivered claims still under their committed name, taken from there by the next staging
    /// file of their work folder (`take_kept`); what no batch took is pooled by `park`
    kept: Vec<Kept>,
}

impl State {
    /// Inodes held for reuse, whatever their stage (at most `MAX`).
    fn held(&self) -> usize {
        self.ready.len() + self.pending.len() + self.kept.len()
    }
}

/// A delivered claim (committed, every output published) left where it is for the next batch.
struct Kept {
    claim: PathBuf,
    id: String,
}

/// Filesystem, owner and group of a new staging file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Owner {
    dev: u64,
    uid: u32,
    gid: u32,
}

impl Owner {
    /// `file`'s length, if it can stand for a new staging file; made owner-only (mode 0600) then.
    /// The mode changes before the lease is asked for: no one can open it after the check, and a
    /// descriptor opened before it makes the check fail (changed after, one opened in between
    /// would write into the outputs staged in it later).
    fn fit(&self, file: &File) -> Option<u64> {
        let meta = file.metadata().ok()?;
        let plain = meta.file_type().is_file()
            && meta.nlink() == 1
            && (meta.dev(), meta.uid(), meta.gid()) == (self.dev, self.uid, self.gid);
        if !plain || (meta.mode() & 0o7777 != 0o600 && file.set_permissions(owner_only()).is_err())
        {
            return None;
        }
        let fits = matches!(
            rustix::fs::flistxattr_query(file),
            Ok(0) | Err(rustix::io::Errno::NOTSUP)
        ) && alone(file);
        fits.then_some(meta.len())
    }
}

/// Whether `file` (opened for writing) is open nowhere else: a descriptor someone kept from the
/// input's life (its writer, or anyone its mode let in) would read the messages staged in it later.
/// A write lease is granted only then; it is given back at once (a SIGIO its break sends is
/// harmless once `sigio_is_harmless` said so). Where leases cannot be had, nothing is reused.
fn alone(file: &File) -> bool {
    use crate::ffi::lease::{Lease, set_lease};
    use std::os::fd::AsFd;
    if !crate::spool::sigio_is_harmless() || set_lease(file.as_fd(), Lease::Write).is_err() {
        return false;
    }
    let _ = set_lease(file.as_fd(), Lease::Unlock);
    true
}

/// What a pool entry or a staging file being written may be read by: its owner only.
fn owner_only() -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(0o600)
}

/// The kept claim at `claim`, checked and made owner-only in its work folder, then renamed to the
/// staging file `to`: open for writing at its start, with the length of its old content.
fn move_kept(owner: Owner, claim: &Path, to: &Path) -> Option<(File, u64)> {
    let file = open_existing(claim).ok()?;
    let len = owner.fit(&file)?;
    std::fs::rename(claim, to).ok()?;
    Some((file, len))
}

/// Opens an existing file for writing: never through a link, never blocking on a FIFO.
fn open_existing(path: &Path) -> std::io::Result<File> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
}

impl Pool {
    pub fn new(enabled: bool) -> Pool {
        Pool {
            enabled,
            state: Mutex::default(),
            trimmed: std::sync::Once::new(),
        }
    }

    /// The pool for the pickup folder `dir` (staging is on its filesystem, which `facts` describe)
    /// under `setting`, its choice logged (at start).
    pub fn for_folder(setting: Reuse, dir: &Path, facts: Option<&Facts>) -> Pool {
        let (enabled, why) = decide(setting, facts);
        log::info!("pickup {}: {why}", dir.display());
        Pool::new(enabled)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries in the pool, ready or not.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().held()
    }

    /// Removes the pool entries an earlier run left in `staging`, once per process (they may have
    /// lost their rename in a crash: never reused).
    fn trim(&self, staging: &Path) {
        // every other caller waits until this is done: nothing enters the pool before
        self.trimmed.call_once(|| {
            let Ok(entries) = std::fs::read_dir(staging) else {
                return;
            };
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .as_encoded_bytes()
                    .starts_with(PREFIX.as_bytes())
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        });
    }

    /// Learns what a new staging file gets from `file`, just created in staging.
    pub fn created(&self, file: &File) {
        let mut s = self.lock();
        if s.owner.is_none()
            && let Ok(m) = file.metadata()
        {
            s.owner = Some(Owner {
                dev: m.dev(),
                uid: m.uid(),
                gid: m.gid(),
            });
        }
    }

    /// A file at `staging/name`, opened for writing at its start, made from a pool entry, with the
    /// length of its old content (mode 0600: the caller writes over it, cuts it to the new length,
    /// then opens it to the group); `None` when the pool has none that fits (the caller creates the
    /// file then).
    pub fn take(&self, staging: &Path, name: &str) -> Option<(File, u64)> {
        self.trim(staging);
        if !self.enabled {
            return None;
        }
        let to = staging.join(name);
        loop {
            let (owner, entry) = {
                let mut s = self.lock();
                (s.owner?, s.ready.pop()?)
            };
            if std::fs::rename(staging.join(&entry), &to).is_err() {
                continue; // gone (another instance's start removed it): try the next
            }
            let taken = open_existing(&to)
                .ok()
                .and_then(|file| Some((owner.fit(&file)?, file)));
            match taken {
                Some((len, file)) => return Some((file, len)),
                None => {
                    let _ = std::fs::remove_file(&to);
                }
            }
        }
    }

    /// Like `take`, from a claim kept in the work folder `work` (one rename instead of two). The
    /// caller syncs `work` before its batch's commit renames: a power loss cutting that commit's
    /// sync short could otherwise keep the claim's old name beside a committed new one.
    pub fn take_kept(&self, staging: &Path, name: &str, work: &Path) -> Option<(File, u64)> {
        self.trim(staging);
        let to = staging.join(name);
        while let Some((owner, kept)) = self.pop_kept(work) {
            match move_kept(owner, &kept.claim, &to) {
                Some(taken) => return Some(taken),
                // delivered already: not reusable, only removed
                None => drop(std::fs::remove_file(&kept.claim)),
            }
        }
        None
    }

    /// The last kept claim of the work folder `work`, and the owner a staging file gets.
    fn pop_kept(&self, work: &Path) -> Option<(Owner, Kept)> {
        let mut s = self.lock();
        let owner = s.owner?;
        let at = s
            .kept
            .iter()
            .rposition(|k| k.claim.parent() == Some(work))?;
        Some((owner, s.kept.swap_remove(at)))
    }

    /// Keeps the delivered claim at `claim` (committed, every output published) where it is, for
    /// the next staging file of its work folder (`take_kept`) or the pool (`park`); `false` leaves it
    /// for the caller to remove. No system call: a busy deliverer renames it only once.
    pub fn keep(&self, claim: &Path, id: &str) -> bool {
        if !self.enabled {
            return false;
        }
        let mut s = self.lock();
        if s.owner.is_none() || s.held() >= MAX {
            return false;
        }
        s.kept.push(Kept {
            claim: claim.to_path_buf(),
            id: id.to_string(),
        });
        true
    }

    /// Pools every kept claim no batch took (a small batch, or a deliverer with nothing waiting): a claim
    /// left under its committed name would be finished a second time after a crash. What does not
    /// fit the pool is removed.
    pub fn park(&self, staging: &Path) {
        let kept = std::mem::take(&mut self.lock().kept);
        for k in kept {
            if !self.recycle(staging, &k.claim, &k.id) {
                let _ = std::fs::remove_file(&k.claim);
            }
        }
    }

    /// Moves the delivered claim at `claim` (committed, every output published) into the pool,
    /// owner-only; `false` leaves it where it is, for the caller to remove.
    pub fn recycle(&self, staging: &Path, claim: &Path, id: &str) -> bool {
        self.trim(staging);
        if !self.enabled {
            return false;
        }
        let owner = {
            let s = self.lock();
            match s.owner {
                Some(o) if s.held() < MAX => o,
                _ => return false,
            }
        };
        let Ok(file) = open_existing(claim) else {
            return false;
        };
        if owner.fit(&file).is_none() {
            return false;
        }
        drop(file);
        let name = format!("{PREFIX}{id}");
        if std::fs::rename(claim, staging.join(&name)).is_err() {
            return false;
        }
        let dir = claim.parent().unwrap_or(Path::new(".")).to_path_buf();
        self.lock().pending.push((dir, name));
        true
    }

    /// `dir` (a work folder) was fsynced: the entries that left it are usable now.
    pub fn synced(&self, dir: &Path) {
        let mut s = self.lock();
        let State { pending, ready, .. } = &mut *s;
        pending.retain(|(from, name)| {
            if from == dir {
                ready.push(name.clone());
            }
            from != dir
        });
    }

    /// Removes every entry from `staging` (at a clean exit: old inputs do not wait there for the
    /// next start). The work folders the pending ones left are synced first (or gone: an instance
    /// removes its folder at a clean exit once it is empty), so no claim's old name can come back
    /// for an inode that is gone.
    pub fn clear(&self, staging: &Path) {
        let mut s = self.lock();
        // delivered claims: their outputs are published, the pickup folder synced
        for k in s.kept.drain(..) {
            let _ = std::fs::remove_file(k.claim);
        }
        let State { pending, ready, .. } = &mut *s;
        let mut dirs: Vec<&PathBuf> = pending.iter().map(|(dir, _)| dir).collect();
        dirs.dedup();
        let synced = dirs
            .into_iter()
            .all(|dir| match crate::spool::claim::sync_dir(dir) {
                Err(e) => e.kind() == std::io::ErrorKind::NotFound,
                Ok(()) => true,
            });
        let mut names: Vec<String> = std::mem::take(ready);
        if synced {
            names.extend(pending.drain(..).map(|(_, name)| name));
        }
        for name in names {
            let _ = std::fs::remove_file(staging.join(name));
        }
    }
}

#[cfg(test)]
mod tests;
