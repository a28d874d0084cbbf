//! The delivery stage: sealed batches wait here for the route while the workers seal the next
//! ones, so sealing never waits for a disk sync or a server's reply. A deliverer takes every batch
//! already waiting together (one sync, one fsync per folder for all of them), delivers them, and
//! hands each result to `outcome`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{error, warn};

use crate::deliver::DeliverError;
use crate::seal::Sealed;
use crate::spool::claim::Claim;
use crate::spool::crashguard::{Stage, test_hook};

use super::outcome::{Ready, complete, defer, panic_message};
use super::state::Shared;
use super::worker::BATCH;

/// A batch sealed by a worker, on its way to delivery.
pub(super) struct Staged {
    pub(super) ready: Vec<Ready>,
    /// the jobs it answers for in `inflight`, and its fresh claims in `claimed_unwritten`
    pub(super) jobs: usize,
    pub(super) claimed: usize,
}

/// Sealed messages a deliverer takes in one go at most: batches beyond it wait for the next turn.
const MERGE: usize = 2 * BATCH;

/// How long a deliverer waits for the next batch before it calls the route idle.
const IDLE: Duration = Duration::from_millis(100);

impl Staged {
    /// Another batch joins this one: delivered together, with one sync per folder for all.
    fn merge(&mut self, other: Staged) {
        self.ready.extend(other.ready);
        self.jobs += other.jobs;
        self.claimed += other.claimed;
    }
}

/// Runs until every worker is gone and the batches they handed over are delivered: what was
/// sealed before a shutdown is still delivered, as it was when workers delivered themselves.
pub(super) fn deliverer(shared: &Shared, rx: &Receiver<Staged>) {
    loop {
        let mut staged = match rx.recv_timeout(IDLE) {
            Ok(staged) => staged,
            Err(RecvTimeoutError::Timeout) => {
                // a pause, not a drain: what the route kept for the next batch is tidied up
                shared.transport.idle();
                match rx.recv() {
                    Ok(staged) => staged,
                    Err(_) => return,
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        while staged.ready.len() < MERGE {
            match rx.try_recv() {
                Ok(more) => staged.merge(more),
                Err(_) => break,
            }
        }
        deliver_staged(shared, staged);
    }
}

/// Delivers a sealed batch, acts on each result, then releases what it answered for. A bug costs
/// this delivery a retry, never the thread, the counts or `once`'s end.
pub(super) fn deliver_staged(shared: &Shared, staged: Staged) {
    let delivering = std::panic::AssertUnwindSafe(|| deliver(shared, &staged.ready));
    if let Err(panic) = std::panic::catch_unwind(delivering) {
        let why = panic_message(&*panic);
        error!(
            "internal error while delivering {} messages: {why}; they are tried again",
            staged.ready.len()
        );
        // a claim whose files were published may have been kept under its committed name for a
        // later staging file: pooled now, it is not taken for one still to be finished
        shared.transport.idle();
        for claim in staged.ready.iter().map(|r| &r.claim) {
            // those finished before the panic are gone; the others are recovered first
            if claim.path.exists() || claim.committed_path().exists() {
                defer(shared, claim.clone(), &DeliverError::Internal(why.clone()));
            }
        }
    }
    for c in staged.ready.into_iter().flat_map(|r| r.copies) {
        crate::buffers::give(c.data);
    }
    release(shared, staged.jobs, staged.claimed);
}

/// Hands the sealed messages to the route; each is finished as soon as its result is final (for
/// SMTP: right after the server's 250).
fn deliver(shared: &Shared, ready: &[Ready]) {
    if ready.is_empty() {
        return;
    }
    for r in ready {
        test_hook(Stage::Delivering, &r.claim.rel);
    }
    sync_sources(shared, ready);
    let items: Vec<(&Claim, &[Sealed])> = ready.iter().map(|r| (&r.claim, &r.copies[..])).collect();
    shared
        .transport
        .deliver_batch(&items, &mut |i, result| complete(shared, &ready[i], result));
}

/// Jobs done with (delivered, refused, deferred, gone or left for the next start): the gate and
/// `once`'s "drained?" see them go, and the main loop is woken to look.
pub(super) fn release(shared: &Shared, jobs: usize, claimed: usize) {
    shared
        .claimed_unwritten
        .fetch_sub(claimed, Ordering::SeqCst);
    shared.inflight.fetch_sub(jobs, Ordering::SeqCst);
    let _ = shared.done.send(());
}

/// Makes the claims' departure from the spool durable before anything is delivered: without a
/// journal, a crash could otherwise bring an input back into its spool folder after it went out.
fn sync_sources(shared: &Shared, ready: &[Ready]) {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for r in ready.iter().filter(|r| r.claim.fresh) {
        let dir = shared
            .spool
            .join(&r.claim.rel)
            .parent()
            .map_or_else(|| shared.spool.clone(), Path::to_path_buf);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    for dir in dirs {
        match crate::spool::claim::sync_dir(&dir) {
            // a folder its writer removed once empty has nothing left to bring back
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                // not a reason to hold the messages back; at worst a crash now repeats one
                warn!("{}: cannot sync the folder: {e}", dir.display());
            }
            _ => {}
        }
    }
}
