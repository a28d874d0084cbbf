//! What becomes of one claim: read and sealed (or recovered after a crash), then delivered,
//! refused into the failed folder with its reason, or deferred for a retry.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use log::{debug, error, info, warn};

use crate::deliver::{DeliverError, Delivered, rejections};
use crate::seal::Sealed;
use crate::smime::certs::unix_now;
use crate::spool::Snapshot;
use crate::spool::claim::Claim;
use crate::{finish, seal};

use super::Mode;
use super::state::Shared;

/// A claim sealed and waiting for its delivery.
pub(super) struct Ready {
    pub(super) claim: Claim,
    pub(super) copies: Vec<Sealed>,
    pub(super) started: Instant,
}

/// The claimed input, read into a buffer this worker used before.
/// Reads a claim taken before (retried, adopted): `max` bytes and one more at most, so a file that
/// grew past the limit since it was measured is refused by the parser, never read whole.
pub(super) fn read_input(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let size = f
        .metadata()
        .map_or(0, |m| m.len())
        .min(max.saturating_add(1));
    let mut bytes = crate::buffers::take(usize::try_from(size).unwrap_or(0).saturating_add(1));
    f.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The claim's size, when it is over `max_message_bytes`: refused before anything is read (memory
/// for it is never asked for: a 200 GB sparse file aborted the process at every start).
fn over_limit(claim: &Claim, judged: Option<&Snapshot>, max: usize) -> Option<seal::SealError> {
    let size = match judged {
        Some(j) => j.size,
        None => std::fs::metadata(&claim.path).ok()?.len(),
    };
    (size > max as u64).then(|| {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        seal::SealError::from(crate::message::ParseError::TooLarge { size, max })
    })
}

/// Finishes an interrupted delivery, or reads and seals the claim. Refusals and deferrals are dealt
/// with here; `Some` means: deliver these copies.
pub(super) fn prepare(
    shared: &Shared,
    claim: Claim,
    judged: Option<(Snapshot, &crate::spool::Writers)>,
) -> Option<Ready> {
    let started = Instant::now();
    let recovered = if claim.fresh {
        Ok(None)
    } else {
        shared.transport.recover(&claim)
    };
    match recovered {
        Ok(Some(done)) => {
            finish_delivered(shared, &claim, 0, done.input_gone);
            let (counted, what) = recovery_outcome(&done, ours(shared, &claim));
            if counted {
                shared.metrics.delivered(done.route, 0);
            }
            info!("{}: {what}", claim.rel.display());
            return None;
        }
        Ok(None) => {}
        Err(e) => {
            defer(shared, claim, &e);
            return None;
        }
    }
    // one configuration for the whole message: its size limit and its sealing
    let state = shared.state.read().expect("state lock").clone();
    let max = state.config.limits.max_message_bytes;
    if let Some(e) = over_limit(&claim, judged.as_ref().map(|(j, _)| j), max) {
        refuse(shared, claim, &e, "refused", e.class());
        return None;
    }
    let read = match judged {
        Some((judged, open)) => {
            let tracker = &shared.tracker;
            let fresh = crate::spool::Fresh::new(&shared.spool, &shared.instance, tracker);
            fresh.read(&claim, judged, open)
        }
        None => read_input(&claim.path, max as u64).map(Some),
    };
    let bytes = match read {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(e) => {
            let path = claim.path.clone();
            defer(shared, claim, &DeliverError::Io { path, source: e });
            return None;
        }
    };
    let sealing = Instant::now();
    // a panic costs this input, never the worker; what cannot be caught, the crash guard sees
    let guard = &shared.instance.guard;
    let marked = guard.sealing(&claim.id);
    let sealed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::spool::crashguard::test_hook(crate::spool::crashguard::Stage::Sealing, &claim.rel);
        seal::seal(
            &bytes,
            &state.config.seal,
            &state.config.limits,
            &state.keyring,
            unix_now(),
        )
    }));
    drop(marked);
    guard.clear(&claim.id);
    shared.metrics.sealed_in(sealing.elapsed());
    crate::buffers::give(bytes);
    match sealed {
        Ok(Ok(copies)) => Some(Ready {
            claim,
            copies,
            started,
        }),
        Ok(Err(e)) => {
            refuse(shared, claim, &e, "refused", e.class());
            None
        }
        Err(panic) => {
            let why = format!("internal error while sealing: {}", panic_message(&*panic));
            error!("{}: {why}", claim.rel.display());
            refuse(shared, claim, &why, "refused", "internal");
            None
        }
    }
}

/// What a caught panic said.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Acts on what the route did with one sealed claim.
pub(super) fn complete(shared: &Shared, ready: &Ready, result: Result<Delivered, DeliverError>) {
    let Ready {
        claim,
        copies,
        started,
    } = ready;
    crate::spool::crashguard::test_hook(crate::spool::crashguard::Stage::Delivered, &claim.rel);
    let rel = claim.rel.display().to_string();
    match result {
        Ok(done) => {
            if !done.rejected.is_empty() {
                let reason = format!(
                    "refused by the server for some recipients (the others got it): {}",
                    rejections(&done.rejected)
                );
                match finish::quarantine_copy(claim, &shared.failed, "server", &reason) {
                    Ok(to) => warn!("{rel}: {reason}; a copy is in {}", to.display()),
                    Err(e) => error!(
                        "{rel}: {reason}; cannot write a copy to {}: {e}",
                        shared.failed.display()
                    ),
                }
            }
            finish_delivered(shared, claim, done.units, done.input_gone);
            let recipients: usize = copies.iter().map(|c| c.envelope.recipients.len()).sum();
            let out_bytes: usize = copies.iter().map(|c| c.data.len()).sum();
            shared.metrics.delivered(done.route, out_bytes);
            info!(
                "{rel}: delivered via {} ({}) message-id=<{}> sender={} recipients={recipients} bytes={out_bytes} ms={}",
                done.route,
                done.made(),
                copies[0].message_id,
                copies[0].envelope.sender,
                started.elapsed().as_millis()
            );
        }
        Err(e) if !e.is_transient() => {
            refuse(shared, claim.clone(), &e, "refused by the server", "server")
        }
        Err(e) => defer(shared, claim.clone(), &e),
    }
}

/// Moves a claim that can never be delivered to the failed folder, with the reason.
pub(super) fn refuse(
    shared: &Shared,
    claim: Claim,
    why: &dyn std::fmt::Display,
    what: &str,
    class: &str,
) {
    let rel = claim.rel.display().to_string();
    match finish::quarantine(&claim, &shared.failed, class, &why.to_string()) {
        Ok(to) => {
            shared.metrics.failed(class);
            shared
                .retries
                .lock()
                .expect("retries lock")
                .forget(&claim.id);
            warn!("{rel}: {what}, moved to {}: {why}", to.display());
        }
        Err(io) => {
            error!(
                "{rel}: {what} ({why}) but cannot move it to {}: {io}",
                shared.failed.display()
            );
            let failed = shared.failed.clone();
            defer(
                shared,
                claim,
                &DeliverError::Io {
                    path: failed,
                    source: io,
                },
            );
        }
    }
}

/// What a finished recovery was, for the count and the log. A committed claim with nothing left to
/// publish that a stopped process left was delivered (and logged, unless the stop came between the
/// publish and the log line) before: it is not counted again. One of this process gets there after
/// a publish whose folder sync failed: its delivery is finished now.
fn recovery_outcome(done: &Delivered, ours: bool) -> (bool, String) {
    let (route, made) = (done.route, done.made());
    match (done.units, ours) {
        (0, false) if route == "pickup" => (
            false,
            "its pickup files were all published before the stop; claim removed".into(),
        ),
        (_, false) => (
            true,
            format!("delivery finished after a restart via {route} ({made})"),
        ),
        (_, true) => (
            true,
            format!("delivery finished on a retry via {route} ({made})"),
        ),
    }
}

/// Whether `claim` was taken by this process (not adopted from one that stopped).
fn ours(shared: &Shared, claim: &Claim) -> bool {
    let id = &shared.instance.id;
    claim
        .id
        .strip_prefix(id.as_str())
        .is_some_and(|rest| rest.starts_with('-'))
}

/// `input_gone`: the route disposed of the claimed input itself (see `Delivered`).
pub(super) fn finish_delivered(shared: &Shared, claim: &Claim, units: usize, input_gone: bool) {
    shared
        .published_since_count
        .fetch_add(units, Ordering::SeqCst);
    // progress records exist only where a network route may have written them: for a claim
    // taken in this run and tried only by pickup, none
    let records = !claim.fresh || shared.network_routes;
    if let Err(e) = finish::delivered(claim, records, input_gone) {
        // the outputs are in pickup; a leftover committed claim is finished again at restart
        error!(
            "{}: delivered, but cannot remove the claimed input: {e}",
            claim.path.display()
        );
    }
    shared
        .retries
        .lock()
        .expect("retries lock")
        .forget(&claim.id);
    if shared.pickup_down.swap(false, Ordering::SeqCst) {
        info!("pickup route works again");
    }
}

/// Keeps a claimed input for a retry (Run) or for the next start (Once).
pub(super) fn defer(shared: &Shared, mut claim: Claim, why: &DeliverError) {
    claim.fresh = false;
    shared.metrics.deferred.fetch_add(1, Ordering::Relaxed);
    if !shared.pickup_down.swap(true, Ordering::SeqCst) {
        warn!("{}: deferred: {why}", claim.rel.display());
    } else {
        debug!("{}: deferred: {why}", claim.rel.display());
    }
    if shared.mode == Mode::Once || shared.shutdown.load(Ordering::SeqCst) {
        shared.deferred.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let max = shared.state.read().expect("state lock").config.retry_max;
    shared.retries.lock().expect("retries lock").defer(
        claim,
        Instant::now(),
        max,
        why.retry_after(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_is_counted_unless_a_stopped_process_had_published_everything() {
        let done = |route: &'static str, units: usize| Delivered {
            route,
            units,
            names: Vec::new(),
            rejected: Vec::new(),
            input_gone: true,
        };
        let table = [
            // (route, published now, claim of this process) -> counted, log
            ("pickup", 0, false, false, "published before the stop"),
            (
                "pickup",
                2,
                false,
                true,
                "after a restart via pickup (2 files)",
            ),
            ("pickup", 0, true, true, "on a retry via pickup (0 files)"),
            ("pickup", 1, true, true, "on a retry via pickup (1 file)"),
            (
                "smtp",
                0,
                false,
                true,
                "after a restart via smtp (0 transactions)",
            ),
        ];
        for (route, units, ours, counted, says) in table {
            let (c, line) = recovery_outcome(&done(route, units), ours);
            assert_eq!(c, counted, "{route} {units} {ours}");
            assert!(line.contains(says), "{route} {units} {ours}: {line}");
        }
    }
}
