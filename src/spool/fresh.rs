//! The first read of a fresh claim: only the file judged complete is read; a claim that changed
//! since, or that a process holds open for writing, goes back into the spool to settle again.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use log::warn;

use super::claim::{Claim, Instance};
use super::ready::Tracker;
use super::safe::{Changed, read_unchanged};
use super::{Snapshot, Writers};

/// What reading a fresh claim needs.
pub struct Fresh<'a> {
    spool: &'a Path,
    instance: &'a Instance,
    tracker: &'a Mutex<Tracker>,
}

impl<'a> Fresh<'a> {
    pub fn new(spool: &'a Path, instance: &'a Instance, tracker: &'a Mutex<Tracker>) -> Self {
        Fresh {
            spool,
            instance,
            tracker,
        }
    }

    /// The claim's bytes, in a buffer a worker used before; `None` when it was put back. `open`:
    /// asked, after the claim, whether a process still holds it open for writing.
    pub fn read(
        &self,
        claim: &Claim,
        judged: Snapshot,
        open: &Writers,
    ) -> std::io::Result<Option<Vec<u8>>> {
        let mut bytes = crate::buffers::take(judged.size as usize + 1);
        let why = match read_unchanged(&claim.path, &judged, open, &mut bytes) {
            Ok(Ok(())) => return Ok(Some(bytes)),
            Ok(Err(why)) => why,
            Err(e) => {
                crate::buffers::give(bytes);
                return Err(e);
            }
        };
        crate::buffers::give(bytes);
        self.put_back(claim, why).map(|()| None)
    }

    fn put_back(&self, claim: &Claim, why: Changed) -> std::io::Result<()> {
        let writing = why == Changed::OpenForWriting;
        let back = self.spool.join(&claim.rel);
        // tracked before the rename back, so the rename's event does not make it complete at once
        let mut tracker = self.tracker.lock().expect("tracker lock");
        tracker.put_back(&back, writing, Instant::now());
        match self.instance.put_back(self.spool, claim) {
            Ok(to) => {
                if to != back {
                    tracker.forget(&back);
                    tracker.put_back(&to, writing, Instant::now());
                }
                warn!(
                    "{}: {why}; put back as {} to settle again",
                    claim.rel.display(),
                    to.display()
                );
                Ok(())
            }
            Err(e) => {
                tracker.forget(&back);
                Err(std::io::Error::other(format!(
                    "{why}, and it cannot be put back into the spool: {e}"
                )))
            }
        }
    }
}
