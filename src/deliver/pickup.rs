//! Writing sealed copies into the MTA's pickup directory, exactly once across `kill -9` at any instant.
//!
//! The protocol, for a claim `WORK/<inst>/<id>,<rel>`:
//! 1. write each pickup file to `STAGING/<id>.<n>.eml` (same filesystem as pickup), fdatasync it,
//!    then fsync the staging folder (its name is durable only then);
//! 2. **commit point**: rename the claim to `<id>,<rel>#committed` and fsync the work folder;
//! 3. rename every staged file into `PICKUP/` (atomic: PowerMTA never sees a partial file), fsync the
//!    pickup folder;
//! 4. the committed claim's inode is kept for a later staging file (`recycle`, on ext4 without a
//!    journal): the next batch of its work folder takes it from there, or the pool when the
//!    deliverers pause; else it is removed by the caller (`finish`).
//!
//! Recovery looks only at the claim's name and the staging folder, never at pickup (PowerMTA may have
//! consumed files already): an uncommitted claim has nothing in pickup yet, so its staged leftovers are
//! removed and it is sealed again; a committed one has all its files staged and durable, so every
//! `<id>.*` file still in staging is renamed into pickup, and the ones already gone were renamed before
//! the crash. So each output lands once. The commit is a rename of a file that exists anyway: no file
//! is created for it (ext4's inode allocator was the bottleneck when a marker file was).
//!
//! Step 4 keeps inodes because ext4 without a journal scans past every inode freed in the last
//! minute at each file creation: one staging file created per message right after many deletions
//! cost more CPU than sealing it. A staging file is made from a pool entry by a rename and an open
//! without `O_CREAT`, so steps 1 to 3 and recovery are the same for it as for a created file; pool
//! entries (`.recycled.<id>`) never match recovery's `<id>.` and are removed at the next start.
//!
//! A batch of claims goes through the same steps together: the writeback of all staged files is
//! started before the first is synced, then one fsync each of the staging, work and pickup folders
//! serves the whole batch.
//!
//! With `sync = "filesystem"` (see `sync`), step 1 makes the staged files durable with one
//! `syncfs` of the staging folder's filesystem instead of an fdatasync each. Linux documents
//! `syncfs` as an fsync of every file of the filesystem, the staging folder's new entries included,
//! so step 1's guarantee is the same. The staging folder is still fsynced after it: on ext4 without
//! a journal, as we read the kernel's `sync_filesystem`, the device's cache flush is issued before
//! the last metadata blocks of a `syncfs` are written, while a folder's fsync there flushes after its
//! writes (cheap: nothing is left to write). Steps 2 and 3 are unchanged: the work folder may be on another filesystem, and the
//! renames into pickup happen after the syncfs.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{DeliverError, Delivered, Done, Shared, Transport};
use crate::seal::Sealed;
use crate::spool::claim::{Claim, sync_dir};

mod format;
pub mod recycle;
pub mod sync;
pub use format::{message_part, pickup_file, pickup_name};
pub use sync::SyncStrategy;

/// Claims a batch needs at least to keep its delivered claims for the next batch (see `recycle`).
const KEEP_FROM: usize = 8;

pub struct Pickup {
    pub dir: PathBuf,
    pub staging: PathBuf,
    pub max_recipients: usize,
    /// how staged files are made durable (resolved: never `Auto`)
    pub sync: SyncStrategy,
    /// inodes of delivered claims, reused for new staging files (see `recycle`)
    pub pool: recycle::Pool,
}

impl Pickup {
    /// The pickup folder is usable: it exists and is a folder. Never created here: a missing one
    /// usually means an unmounted volume, and creating it would hide that.
    pub fn check(&self) -> Result<(), DeliverError> {
        match std::fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(self.unavailable("not a directory".into(), None)),
            Err(e) => Err(self.unavailable(e.to_string(), Some(Shared::new(e)))),
        }
    }

    /// Files waiting in the pickup folder (PowerMTA not consuming when this grows).
    pub fn backlog(&self) -> std::io::Result<usize> {
        Ok(std::fs::read_dir(&self.dir)?.count())
    }

    /// Why the pickup route should not be used now, if it should not: missing, not writable, less than
    /// `min_free` bytes free, or `max_backlog` files or more waiting.
    pub fn health(&self, min_free: u64, max_backlog: usize) -> Result<(), String> {
        self.check().map_err(|e| e.to_string())?;
        let shown = self.dir.display();
        rustix::fs::access(&self.dir, rustix::fs::Access::WRITE_OK)
            .map_err(|e| format!("pickup directory {shown} is not writable: {e}"))?;
        let free = rustix::fs::statvfs(&self.dir)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .map_err(|e| format!("pickup directory {shown}: {e}"))?;
        if free < min_free {
            return Err(format!(
                "pickup directory {shown} has {free} bytes free (min_free_bytes = {min_free})"
            ));
        }
        let backlog = self
            .backlog()
            .map_err(|e| format!("pickup directory {shown}: {e}"))?;
        if backlog >= max_backlog {
            return Err(format!(
                "pickup directory {shown} holds {backlog} files (pickup_max_backlog = {max_backlog})"
            ));
        }
        Ok(())
    }

    fn unavailable(&self, why: String, source: Option<Shared>) -> DeliverError {
        DeliverError::Unavailable {
            path: self.dir.clone(),
            why,
            source,
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DeliverError + '_ {
        move |source| DeliverError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Renames the listed staged files into pickup; the ones not in staging were renamed before.
    fn publish(&self, names: &[String]) -> Result<usize, DeliverError> {
        let mut moved = 0;
        for name in names {
            let from = self.staging.join(name);
            match std::fs::rename(&from, self.dir.join(name)) {
                Ok(()) => moved += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !from.exists() => {}
                Err(e) => return Err(Self::io(&self.dir)(e)),
            }
        }
        sync_dir(&self.dir).map_err(Self::io(&self.dir))?;
        Ok(moved)
    }
}

impl Pickup {
    /// Stages every copy of every item, then makes the batch durable with one sync per file and one
    /// per folder, whatever the batch size: the commit protocol above, for many claims at once.
    fn deliver_many(&self, items: &[(&Claim, &[Sealed])]) -> Vec<Result<Delivered, DeliverError>> {
        let fail_all = |e: &dyn Fn() -> DeliverError| items.iter().map(|_| Err(e())).collect();
        if let Err(e) = self.check() {
            let why = e.to_string();
            let e = Shared::new(e);
            return fail_all(&|| self.unavailable(why.clone(), Some(e.clone())));
        }
        if let Err(e) = self.make_staging() {
            let kind = e.kind();
            return fail_all(&|| Self::io(&self.staging)(std::io::Error::from(kind)));
        }
        let mut results: Vec<Option<Result<Delivered, DeliverError>>> =
            items.iter().map(|_| None).collect();
        let mut names: Vec<Vec<String>> = vec![Vec::new(); items.len()];
        let mut open_files = Vec::new();
        // a large batch keeps its claims for the next one, which syncs the folder they leave once
        // (see `recycle`); a small one would pay that sync for too few: it uses the pool
        let keeping = items.len() >= KEEP_FROM;
        if !keeping {
            self.pool.park(&self.staging);
        }
        let mut left = Vec::new(); // work folders that kept claims left for staging
        // 1. stage every file, then make them durable together
        for (i, (claim, copies)) in items.iter().enumerate() {
            let staged = (|| {
                for copy in copies.iter() {
                    for slice in copy.envelope.recipients.chunks(self.max_recipients.max(1)) {
                        let name = pickup_name(claim, names[i].len());
                        let path = self.staging.join(&name);
                        let kept = keeping.then_some(&mut left);
                        let (mut file, old) = self.open_staged(&name, &path, claim, kept)?;
                        let full = format::write(&mut file, copy, slice, old).map_err(|e| {
                            // a reused inode may still hold an earlier input's bytes
                            let _ = std::fs::remove_file(&path);
                            Self::io(&path)(e)
                        })?;
                        open_files.push((i, path, file, full));
                        names[i].push(name);
                    }
                }
                Ok(())
            })();
            if let Err(e) = staged {
                results[i] = Some(Err(e));
            }
        }
        self.sync_staged(&mut open_files, &mut results);
        // their names too: POSIX makes a new file's directory entry durable only by syncing the
        // folder (ext4 and XFS do it with the file's own sync; this costs little there)
        // and a reused claim's old name is gone for good before any commit can be (see `recycle`)
        for dir in std::iter::once(&self.staging).chain(&left) {
            if results.iter().any(Option::is_none)
                && let Err(e) = sync_dir(dir)
            {
                fail_rest(&mut results, dir, &e);
            }
        }
        // 2. the commit point: each claim renamed to its committed name, the work folders synced
        let mut work_dirs: Vec<PathBuf> = Vec::new();
        for (i, (claim, _)) in items.iter().enumerate() {
            if results[i].is_some() {
                continue;
            }
            match std::fs::rename(&claim.path, claim.committed_path()) {
                Ok(()) => {
                    let dir = claim.path.parent().unwrap_or(Path::new(".")).to_path_buf();
                    if !work_dirs.contains(&dir) {
                        work_dirs.push(dir);
                    }
                }
                Err(e) => results[i] = Some(Err(Self::io(&claim.path)(e))),
            }
        }
        // what failed before its commit point leaves nothing in staging: another route (SMTP) may
        // deliver it, and only pickup's recovery would have removed its files
        for (i, _) in results.iter().enumerate().filter(|(_, r)| r.is_some()) {
            for name in &names[i] {
                let _ = std::fs::remove_file(self.staging.join(name));
            }
        }
        for dir in &work_dirs {
            match sync_dir(dir) {
                Ok(()) => self.pool.synced(dir),
                // not durable: nothing of this batch may be published
                Err(e) => fail_rest(&mut results, dir, &e),
            }
        }
        // 3. publish: rename into pickup, one sync of the pickup folder
        let committed: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
        let all: Vec<String> = committed
            .iter()
            .flat_map(|&i| names[i].iter().cloned())
            .collect();
        let published = self.publish(&all).map_err(Shared::new);
        for i in committed {
            let claim = items[i].0;
            let input_gone = published.is_ok()
                && if keeping {
                    self.pool.keep(&claim.committed_path(), &claim.id)
                } else {
                    self.recycle(claim)
                };
            results[i] = Some(match &published {
                Ok(_) => Ok(Delivered {
                    route: "pickup",
                    units: names[i].len(),
                    names: std::mem::take(&mut names[i]),
                    rejected: Vec::new(),
                    input_gone,
                }),
                Err(e) => Err(self.unavailable(format!("publishing failed: {e}"), Some(e.clone()))),
            });
        }
        results
            .into_iter()
            .map(|r| r.expect("every item has a result"))
            .collect()
    }
}

impl Pickup {
    /// The staging folder, created (durably: a recovery must find it) when missing.
    fn make_staging(&self) -> std::io::Result<()> {
        match std::fs::DirBuilder::new()
            .mode(crate::dirs::DIR_MODE)
            .create(&self.staging)
        {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Ok(()) => {
                std::fs::set_permissions(
                    &self.staging,
                    std::fs::Permissions::from_mode(crate::dirs::DIR_MODE),
                )?;
                sync_dir(
                    self.staging
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(Path::new(".")),
                )
            }
            Err(_) => {
                crate::dirs::create_all(&self.staging)?;
                let mut dir = self.staging.as_path();
                while let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent)?;
                    dir = parent;
                }
                Ok(())
            }
        }
    }

    /// Makes the staged files durable. `file`: the writeback of every file is started first (a
    /// hint, which Linux acts on), then each is fdatasynced. On a journalling filesystem the first
    /// fdatasync then commits the whole batch and the others find little left to do: one wait
    /// instead of one per file. `filesystem`: one syncfs of the staging folder's filesystem, which
    /// also flushes every other program's dirty data there (the MTA's among them).
    fn sync_staged(
        &self,
        files: &mut Vec<(usize, PathBuf, std::fs::File, bool)>,
        results: &mut [Option<Result<Delivered, DeliverError>>],
    ) {
        files.retain(|(i, ..)| results[*i].is_none());
        if self.sync == SyncStrategy::Filesystem && !files.is_empty() {
            if let Err(e) = sync::syncfs(&self.staging) {
                let kind = e.kind();
                for (i, path, ..) in files.iter() {
                    results[*i] = Some(Err(Self::io(path)(std::io::Error::from(kind))));
                }
            }
            files.clear();
            return;
        }
        if files.len() > 1 {
            for (_, _, file, _) in files.iter() {
                let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
            }
        }
        // `full`: its length did not change, so fdatasync would not write its new mode
        for (i, path, file, full) in files.drain(..) {
            let synced = if full {
                file.sync_all()
            } else {
                file.sync_data()
            };
            if let Err(e) = synced {
                results[i] = Some(Err(Self::io(&path)(e)));
            }
        }
    }
}

impl Pickup {
    /// A new staging file at `path` (`staging/name`), owner-only and open for writing at its start,
    /// with the length of what it holds already: a pool entry when one fits, else a created file.
    /// With `left`, a claim kept in `claim`'s work folder first; that folder then goes into `left`.
    fn open_staged(
        &self,
        name: &str,
        path: &Path,
        claim: &Claim,
        left: Option<&mut Vec<PathBuf>>,
    ) -> Result<(std::fs::File, u64), DeliverError> {
        let work = claim.path.parent().unwrap_or(Path::new("."));
        if let Some(left) = left
            && let Some(taken) = self.pool.take_kept(&self.staging, name, work)
        {
            if !left.iter().any(|d| d == work) {
                left.push(work.to_path_buf());
            }
            return Ok(taken);
        }
        if let Some(taken) = self.pool.take(&self.staging, name) {
            return Ok(taken);
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(Self::io(path))?;
        self.pool.created(&file);
        Ok((file, 0))
    }

    /// Step 4 for a claim whose outputs are all published: its inode goes to the pool when it
    /// fits (`true`); otherwise the claim stays committed for `finish::delivered` to remove.
    fn recycle(&self, claim: &Claim) -> bool {
        self.pool
            .recycle(&self.staging, &claim.committed_path(), &claim.id)
    }
}

/// Every item without a result yet fails with `e` at `path`: nothing of the batch is published.
fn fail_rest(
    results: &mut [Option<Result<Delivered, DeliverError>>],
    path: &Path,
    e: &std::io::Error,
) {
    for r in results.iter_mut().filter(|r| r.is_none()) {
        *r = Some(Err(Pickup::io(path)(std::io::Error::from(e.kind()))));
    }
}

impl Drop for Pickup {
    fn drop(&mut self) {
        self.pool.clear(&self.staging);
    }
}

impl Transport for Pickup {
    fn deliver(&self, claim: &Claim, copies: &[Sealed]) -> Result<Delivered, DeliverError> {
        self.deliver_many(&[(claim, copies)])
            .pop()
            .expect("one result")
    }

    fn deliver_batch(&self, items: &[(&Claim, &[Sealed])], done: &mut Done<'_>) {
        // the batch is made durable together: every result is final only at the end
        for (i, result) in self.deliver_many(items).into_iter().enumerate() {
            done(i, result);
        }
    }

    fn idle(&self) {
        self.pool.park(&self.staging);
    }

    fn close(&self) {
        self.pool.clear(&self.staging);
    }

    fn recover(&self, claim: &Claim) -> Result<Option<Delivered>, DeliverError> {
        let committed = claim.committed_path().exists();
        if committed {
            self.check()?;
        }
        let prefix = format!("{}.", claim.id);
        let mut staged: Vec<String> = match std::fs::read_dir(&self.staging) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Self::io(&self.staging)(e)),
        };
        if !committed {
            // never committed: drop half-written staged files of an earlier attempt
            for name in &staged {
                let _ = std::fs::remove_file(self.staging.join(name));
            }
            return Ok(None);
        }
        staged.sort();
        let units = self.publish(&staged)?;
        let input_gone = self.recycle(claim);
        Ok(Some(Delivered {
            route: "pickup",
            units,
            names: staged,
            rejected: Vec::new(),
            input_gone,
        }))
    }
}

#[cfg(test)]
mod tests;
