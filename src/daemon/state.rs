//! What the daemon's threads share: the running configuration and keys (replaced whole on reload),
//! the route, the counters and the retry schedule; and the upkeep the main loop does with it
//! (metrics file, certificate expiry, adopting dead instances' claims, reload, the work folder).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use log::{error, info, warn};

use crate::config::Config;
use crate::deliver::Transport;
use crate::deliver::pickup::Pickup;
use crate::keyring;
use crate::metrics::{Gauges, Metrics};
use crate::seal::Keyring;
use crate::smime::certs::unix_now;
use crate::spool::claim::Instance;
use crate::spool::ready::Tracker;

use super::Mode;
use super::outcome::refuse;
use super::schedule::{Gate, Retries};

/// What workers read for every message; replaced whole on reload.
pub(super) struct State {
    pub(super) config: Config,
    pub(super) keyring: Keyring,
}

pub(super) struct Shared {
    pub(super) mode: Mode,
    pub(super) spool: PathBuf,
    pub(super) failed: PathBuf,
    pub(super) state: RwLock<Arc<State>>,
    pub(super) transport: Box<dyn Transport>,
    /// the route list has SMTP or the API (routes change only at a restart)
    pub(super) network_routes: bool,
    /// the pickup directory, watched by the intake gate when it is the only route
    pub(super) gate_pickup: Option<Pickup>,
    pub(super) instance: Instance,
    /// what the producers track; workers put changed claims back into it
    pub(super) tracker: Arc<Mutex<Tracker>>,
    pub(super) shutdown: Arc<AtomicBool>,
    /// never sent on: dropped at shutdown, which wakes every select on it at once
    pub(super) halt: Receiver<()>,
    /// a worker finished a batch (wakes the main loop to see whether `once` is drained)
    pub(super) done: Sender<()>,
    pub(super) inflight: AtomicUsize,
    /// inputs this run leaves for the next one (`once`: deferred, or not complete when intake
    /// closed); the outcome's other counts are the metrics' (`Metrics::delivered_total` ...)
    pub(super) deferred: AtomicUsize,
    pub(super) retries: Mutex<Retries>,
    pub(super) pickup_down: AtomicBool,
    pub(super) gate: Mutex<Option<(Instant, Gate)>>,
    /// pickup files written since the gate last counted the pickup folder
    pub(super) published_since_count: AtomicUsize,
    pub(super) last_count: AtomicUsize,
    /// claims taken from the spool whose pickup files are not written yet (a batch in progress)
    pub(super) claimed_unwritten: AtomicUsize,
    pub(super) metrics: Metrics,
    /// Unix time the earliest usable certificate expires (refreshed at start and reload)
    pub(super) earliest_expiry: std::sync::atomic::AtomicI64,
    /// the progress bar shows the "still finding more" style
    pub(super) bar_scanning: AtomicBool,
    /// the last write of `metrics_file` failed (warned about once)
    pub(super) metrics_failing: AtomicBool,
    /// why the daemon must stop (see `DaemonError::Fatal`)
    pub(super) fatal: Mutex<Option<String>>,
}

/// Rewrites `metrics_file`, when configured.
pub(super) fn write_metrics(shared: &Shared) {
    let state = shared.state.read().expect("state lock").clone();
    let Some(path) = &state.config.metrics_file else {
        return;
    };
    let expiry = shared.earliest_expiry.load(Ordering::Relaxed);
    let gauges = Gauges {
        queue_depth: shared.inflight.load(Ordering::SeqCst),
        retry_waiting: shared.retries.lock().expect("retries lock").len(),
        pickup_backlog: shared.last_count.load(Ordering::SeqCst),
        route: shared.transport.route_now(),
        expiry_days: (expiry != i64::MAX).then(|| (expiry - unix_now()).div_euclid(86_400)),
    };
    // a failure is said once, and so is the recovery: not a line every second
    match crate::metrics::write_file(path, &shared.metrics.render(&gauges)) {
        Err(e) if !shared.metrics_failing.swap(true, Ordering::SeqCst) => warn!(
            "metrics_file {}: cannot write it ({e}); trying again every second",
            path.display()
        ),
        Ok(()) if shared.metrics_failing.swap(false, Ordering::SeqCst) => {
            info!("metrics_file {}: written again", path.display())
        }
        _ => {}
    }
}

/// The earliest expiry among the certificates in use (signing identities and usable recipients).
pub(super) fn refresh_expiry(shared: &Shared) {
    let state = shared.state.read().expect("state lock").clone();
    let now = unix_now();
    let keys = state
        .keyring
        .keys
        .entries()
        .filter_map(|(_, id)| id.ok())
        .filter(|id| id.check(now).is_ok())
        .map(|id| id.not_after());
    let certs = state
        .keyring
        .certs
        .all()
        .filter(|(_, c)| c.check(crate::smime::certs::Usage::Encrypt, now).is_ok())
        .map(|(_, c)| c.not_after);
    let earliest = keys.chain(certs).min().unwrap_or(i64::MAX);
    shared.earliest_expiry.store(earliest, Ordering::Relaxed);
}

/// Takes over the claims of instances that died, and queues them.
pub(super) fn adopt(shared: &Shared) {
    let adopted = shared.instance.adopt_dead();
    match adopted {
        Ok(claims) => {
            if !claims.is_empty() {
                warn!(
                    "recovered {} inputs left by an instance that stopped without finishing",
                    claims.len()
                );
            }
            // an input the process crashed on twice while sealing it is not sealed a third time
            let guard = &shared.instance.guard;
            let mut queued = Vec::with_capacity(claims.len());
            for claim in claims {
                let out = guard.strikes(&claim.id).out();
                let Some(why) = out.filter(|_| !claim.committed_path().exists()) else {
                    queued.push(claim);
                    continue;
                };
                let (id, path) = (claim.id.clone(), claim.path.clone());
                refuse(shared, claim, &why, "quarantined", "internal");
                if !path.exists() {
                    guard.clear(&id);
                }
            }
            // queued through the retry list, which the main loop feeds without blocking
            let now = Instant::now();
            let mut retries = shared.retries.lock().expect("retries lock");
            for c in queued {
                retries.at(now, c);
            }
        }
        Err(e) => error!(
            "{}: cannot adopt the claims of stopped instances: {e}",
            shared.instance.dir.display()
        ),
    }
}

/// Stops the daemon when its own work folder is gone (deleted, or moved away with a spool that was
/// renamed): claims cannot be made safely without it, and retrying would only log the same error
/// forever. A restart makes a new one; claims that went with the old folder are wherever it went.
pub(super) fn check_work_folder(shared: &Shared) {
    if shared.instance.dir.join(".lock").exists() {
        return;
    }
    let why = format!(
        "the work folder {} is gone (removed, or moved away with the spool); claims it held went \
         with it; restart to make a new one",
        shared.instance.dir.display()
    );
    let mut fatal = shared.fatal.lock().expect("fatal lock");
    if fatal.is_none() {
        error!("{why}");
        *fatal = Some(why);
        shared.shutdown.store(true, Ordering::SeqCst);
    }
}

/// `once` is ending: files seen but not complete when intake closed stay for the next run.
pub(super) fn left_incomplete(shared: &Shared) {
    let left = shared.tracker.lock().expect("tracker lock").files_left();
    if left > 0 {
        warn!(
            "{left} files still being written or settling are left in the spool for the next run"
        );
        shared.deferred.fetch_add(left, Ordering::SeqCst);
    }
}

/// SIGHUP: a new config, keys and certificates, or the old ones if anything is wrong.
pub(super) fn reload_state(shared: &Shared) {
    let old = shared.state.read().expect("state lock").clone();
    let Some(path) = old.config.source.clone() else {
        warn!("reload: running on built-in defaults, nothing to re-read");
        return;
    };
    let loaded = Config::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|config| {
            keyring::load(&config)
                .map(|keyring| State { config, keyring })
                .map_err(|e| e.to_string())
        });
    match loaded {
        Ok(new) => {
            let c = &new.config;
            let fixed = |c: &Config| {
                (
                    c.spool.clone(),
                    c.pickup.clone(),
                    c.failed.clone(),
                    c.work.clone(),
                    c.staging.clone(),
                    c.workers,
                    c.route.clone(),
                    format!("{:?} {:?}", c.smtp, c.api),
                )
            };
            if fixed(c) != fixed(&old.config) {
                warn!(
                    "reload: changes to folders, workers, route, [smtp] and [api] take effect at the next start"
                );
            }
            keyring::warn_if_no_signer(&new.config, &new.keyring);
            let said = format!(
                "reloaded {}: {} signing keys, {} recipient addresses",
                path.display(),
                new.keyring.keys.len(),
                new.keyring.certs.addresses()
            );
            // in use first, said after: whoever reads "reloaded" may rely on it
            *shared.state.write().expect("state lock") = Arc::new(new);
            info!("{said}");
        }
        Err(e) => error!("reload refused, keeping the running configuration: {e}"),
    }
}
