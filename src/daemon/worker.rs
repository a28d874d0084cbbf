//! The worker stage: take jobs from the queue in batches, claim new inputs once the gate lets them
//! in, seal, deliver the batch, and hand each result to `outcome`.

use super::*;

pub(super) enum Job {
    Path(Candidate),
    Claim(Claim),
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

/// Claims sealed in one go by a worker before their delivery; made durable together.
pub(super) const BATCH: usize = 32;

pub(super) fn worker(shared: &Shared, rx: &Receiver<Job>) {
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
        let mut jobs = vec![first];
        while jobs.len() < BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let taken = jobs.len();
        let mut claimed = 0;
        // after shutdown, queued jobs are left where they are: unclaimed files stay in the spool,
        // claims stay in the work folder for the next start
        if !shared.shutdown.load(Ordering::SeqCst) {
            let mut pending: Vec<(Claim, Option<Snapshot>)> = Vec::new();
            for job in jobs {
                match job {
                    Job::Claim(claim) => pending.push((claim, None)),
                    Job::Path(path) => {
                        // the gate may wait for our own pending claims: write them first
                        let taken = match take_new(shared, &path, !pending.is_empty()) {
                            Err(MustFlush) => {
                                flush(shared, &mut pending, &mut claimed);
                                take_new(shared, &path, false).unwrap_or(None)
                            }
                            Ok(taken) => taken,
                        };
                        if let Some((claim, judged)) = taken {
                            claimed += 1;
                            pending.push((claim, Some(judged)));
                        }
                    }
                }
            }
            flush(shared, &mut pending, &mut claimed);
        }
        shared.inflight.fetch_sub(taken, Ordering::SeqCst);
        let _ = shared.done.send(());
    }
}

/// Seals and delivers the pending claims as one batch.
pub(super) fn flush(
    shared: &Shared,
    pending: &mut Vec<(Claim, Option<Snapshot>)>,
    claimed: &mut usize,
) {
    // fresh claims a process still holds open for writing go back (a lease per file; /proc at most
    // once per batch where the kernel refuses leases)
    let open = crate::spool::Writers::new(&shared.instance.dir);
    let ready: Vec<Ready> = pending
        .drain(..)
        .filter_map(|(claim, judged)| prepare(shared, claim, judged.map(|j| (j, &open))))
        .collect();
    if !ready.is_empty() {
        sync_sources(shared, &ready);
        let items: Vec<(&Claim, &[Sealed])> =
            ready.iter().map(|r| (&r.claim, &r.copies[..])).collect();
        // each is finished as soon as its result is final (for SMTP: right after the server's 250)
        shared
            .transport
            .deliver_batch(&items, &mut |i, result| complete(shared, &ready[i], result));
        for c in ready.into_iter().flat_map(|r| r.copies) {
            crate::buffers::give(c.data);
        }
    }
    shared
        .claimed_unwritten
        .fetch_sub(*claimed, Ordering::SeqCst);
    *claimed = 0;
}

/// Makes the claims' departure from the spool durable before anything is delivered: without a
/// journal, a crash could otherwise bring an input back into its spool folder after it went out.
pub(super) fn sync_sources(shared: &Shared, ready: &[Ready]) {
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
