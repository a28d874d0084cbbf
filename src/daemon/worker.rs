//! The sealing stage: take jobs from the queue in batches, claim new inputs once the gate lets them
//! in, seal, and hand each sealed batch to the delivery stage (`deliverer`).

use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, Sender, TrySendError, select};
use log::{debug, info, warn};

use crate::spool::claim::{Claim, Taken};
use crate::spool::{Candidate, Snapshot};

use super::deliverer::{Staged, deliver_staged, release};
use super::outcome::prepare;
use super::schedule::{Gate, GateFacts};
use super::state::{Shared, check_work_folder};
use super::{Mode, schedule};
use std::time::{Duration, Instant};

pub(super) enum Job {
    Path(Candidate),
    Claim(Claim),
}

impl Job {
    /// The input's size as last seen (a retried claim's is not known: counted as nothing).
    fn size(&self) -> u64 {
        match self {
            Job::Path(c) => c.snapshot.size,
            Job::Claim(_) => 0,
        }
    }
}

/// Queues a job if there is room now; gives it back otherwise.
pub(super) fn try_send_job(tx: &Sender<Job>, shared: &Shared, job: Job) -> Result<(), Job> {
    shared.inflight.fetch_add(1, Ordering::SeqCst);
    tx.try_send(job).map_err(|e| {
        shared.inflight.fetch_sub(1, Ordering::SeqCst);
        match e {
            TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
        }
    })
}

/// Queues a job, blocking while the queue is full (the producers' backpressure); false once
/// shutting down.
pub(super) fn send_job(tx: &Sender<Job>, shared: &Shared, job: Job) -> bool {
    shared.inflight.fetch_add(1, Ordering::SeqCst);
    let sent = select! {
        send(tx, job) -> r => r.is_ok(),
        recv(shared.halt) -> _ => false,
    };
    if !sent {
        shared.inflight.fetch_sub(1, Ordering::SeqCst);
    }
    sent
}

/// Claims sealed in one go by a worker before they go to delivery, and the input bytes a batch
/// takes at most (large messages make smaller batches: three stages' batches are in memory at once).
pub(super) const BATCH: usize = 64;
const BATCH_BYTES: u64 = 4 * 1024 * 1024;

/// What a worker has taken since it last handed a batch over: the claims, and the jobs and fresh
/// claims they answer for (released from `inflight` and `claimed_unwritten` once delivered).
#[derive(Default)]
pub(super) struct Pending {
    claims: Vec<(Claim, Option<Snapshot>)>,
    jobs: usize,
    claimed: usize,
}

/// The sealing stage: takes jobs from the queue in batches, claims and seals them, and hands each
/// sealed batch to the delivery stage, then goes on sealing while it is written or sent.
pub(super) fn worker(shared: &Shared, rx: &Receiver<Job>, out: &Sender<Staged>) {
    loop {
        let first = select! {
            recv(rx) -> job => match job {
                Ok(job) => job,
                Err(_) => return,
            },
            recv(shared.halt) -> _ => return,
        };
        // whatever else is already waiting joins the batch: under load, one sync serves many
        // messages; at a trickle, a batch is one message and nothing waits for company
        let mut bytes = first.size();
        let mut jobs = vec![first];
        while jobs.len() < BATCH && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.size();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // after shutdown, queued jobs are left where they are: unclaimed files stay in the spool,
        // claims stay in the work folder for the next start
        if shared.shutdown.load(Ordering::SeqCst) {
            release(shared, jobs.len(), 0);
            continue;
        }
        let mut pending = Pending::default();
        for job in jobs {
            match job {
                Job::Claim(claim) => pending.claims.push((claim, None)),
                Job::Path(path) => {
                    // the gate may wait for our own pending claims: hand them over first
                    let taken = match take_new(shared, &path, !pending.claims.is_empty()) {
                        Err(MustFlush) => {
                            hand_over(shared, &mut pending, out);
                            take_new(shared, &path, false).unwrap_or(None)
                        }
                        Ok(taken) => taken,
                    };
                    if let Some((claim, judged)) = taken {
                        pending.claimed += 1;
                        pending.claims.push((claim, Some(judged)));
                    }
                }
            }
            pending.jobs += 1;
        }
        hand_over(shared, &mut pending, out);
    }
}

/// Seals the pending claims and passes them to the delivery stage (blocking while it is full:
/// the sealers' backpressure).
pub(super) fn hand_over(shared: &Shared, pending: &mut Pending, out: &Sender<Staged>) {
    let staged = seal_pending(shared, pending);
    if staged.ready.is_empty() {
        release(shared, staged.jobs, staged.claimed);
    } else if let Err(unsent) = out.send(staged) {
        // the delivery stage is gone (it outlives the workers, so only in a bug): deliver here
        deliver_staged(shared, unsent.into_inner());
    }
}

/// Reads and seals the pending claims; what cannot be sealed is refused or deferred on the way.
fn seal_pending(shared: &Shared, pending: &mut Pending) -> Staged {
    // fresh claims a process still holds open for writing go back (a lease per file; /proc at most
    // once per batch where the kernel refuses leases)
    let open = crate::spool::Writers::new(&shared.instance.dir);
    let ready = pending
        .claims
        .drain(..)
        .filter_map(|(claim, judged)| prepare(shared, claim, judged.map(|j| (j, &open))))
        .collect();
    Staged {
        ready,
        jobs: std::mem::take(&mut pending.jobs),
        claimed: std::mem::take(&mut pending.claimed),
    }
}

/// `take_new` would have to wait for the gate while the caller holds unwritten claims.
pub(super) struct MustFlush;

/// Claims a spool file once the route can take it; `None` when it waits, is gone or was taken.
pub(super) fn take_new(
    shared: &Shared,
    candidate: &Candidate,
    holding: bool,
) -> Result<Option<(Claim, Snapshot)>, MustFlush> {
    let path = &candidate.path;
    loop {
        match gate(shared) {
            Gate::Open => break,
            // our own unwritten claims may be what keeps the gate shut: never wait on them
            _ if holding && shared.mode == Mode::Run => return Err(MustFlush),
            reason => {
                if shared.mode == Mode::Once {
                    // left in the spool for the next run
                    if path.exists() {
                        shared.deferred.fetch_add(1, Ordering::SeqCst);
                    }
                    return Ok(None);
                }
                if shared.shutdown.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                debug!("{}: waiting, {reason:?}", path.display());
                // the pickup folder's state is outside: looked at again shortly (or at shutdown)
                select! {
                    recv(shared.halt) -> _ => return Ok(None),
                    default(Duration::from_millis(200)) => {}
                }
            }
        }
    }
    match shared.instance.take(&shared.spool, candidate) {
        Ok(Taken::Claimed(claim)) => {
            // counted for the backlog gate now, not only once written: a batch claims many first
            shared.claimed_unwritten.fetch_add(1, Ordering::SeqCst);
            return Ok(Some((claim, candidate.snapshot)));
        }
        Ok(Taken::Gone) => {} // another instance or an earlier event took it
        Ok(Taken::Changed) => {
            info!(
                "{}: changed since it was judged complete; settling again",
                path.display()
            );
            let mut tracker = shared.tracker.lock().expect("tracker lock");
            tracker.changed(path, Instant::now());
        }
        Ok(Taken::NotRegular(kind)) => {
            warn!(
                "{}: {kind}, not a regular file; left where it is",
                path.display()
            )
        }
        Ok(Taken::Outside) => warn!(
            "{}: reached through a symbolic link; left where it is",
            path.display()
        ),
        Ok(Taken::Unreadable(e)) => {
            // left in the spool, visible, for its owner to fix; said again at every rescan
            warn!(
                "{}: cannot read it ({e}); left in the spool",
                path.display()
            );
            if shared.mode == Mode::Once {
                shared.deferred.fetch_add(1, Ordering::SeqCst);
            }
        }
        Err(e) => {
            warn!("{}: cannot claim: {e}", path.display());
            check_work_folder(shared);
        }
    }
    Ok(None)
}

/// Whether new inputs may be taken. Listing the pickup folder costs, so it is re-counted once a
/// second, or sooner when what we wrote since the last count could have crossed the limit.
pub(super) fn gate(shared: &Shared) -> Gate {
    let max = shared
        .state
        .read()
        .expect("state lock")
        .config
        .pickup_max_backlog;
    let Some(pickup) = &shared.gate_pickup else {
        // another route can take over from pickup: only a pile of deferred inputs stops intake
        let waiting = shared.retries.lock().expect("retries lock").len();
        return schedule::gate(&GateFacts {
            pickup: None,
            unwritten: 0,
            max_backlog: max,
            waiting,
        });
    };
    let mut cached = shared.gate.lock().expect("gate lock");
    let unwritten = shared.claimed_unwritten.load(Ordering::SeqCst);
    let estimate = shared.last_count.load(Ordering::SeqCst)
        + shared.published_since_count.load(Ordering::SeqCst)
        + unwritten;
    if let Some((at, g)) = &*cached
        && schedule::gate_still_holds(g, at.elapsed(), estimate, max)
    {
        return g.clone();
    }
    // the facts: the pickup folder usable, and how many files it holds
    let facts = match pickup.check() {
        Err(e) => Err(e.to_string()),
        Ok(()) => {
            shared.published_since_count.store(0, Ordering::SeqCst);
            let n = pickup.backlog().unwrap_or(0);
            shared.last_count.store(n, Ordering::SeqCst);
            Ok(n)
        }
    };
    let g = schedule::gate(&GateFacts {
        pickup: Some(facts),
        unwritten,
        max_backlog: max,
        waiting: 0,
    });
    let previous = cached.as_ref().map(|(_, g)| g.clone());
    if previous.as_ref() != Some(&g) {
        match &g {
            Gate::Open if previous.is_some() => {
                info!("pickup directory usable again: taking new inputs")
            }
            Gate::Open => {}
            Gate::Unavailable(why) => warn!("{why}: new inputs wait in the spool"),
            Gate::Backlog(n) => warn!(
                "pickup directory holds {n} files (pickup_max_backlog = {max}); is the MTA consuming? pausing"
            ),
        }
    }
    *cached = Some((Instant::now(), g.clone()));
    g
}
