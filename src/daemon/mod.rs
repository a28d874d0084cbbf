//! The pipeline as threads: producers (watch + scan) feed a bounded queue; N workers claim and
//! seal, and hand sealed batches to N deliverers, which deliver and finish them. `run` keeps going
//! until told to stop; `once` stops when the spool is drained. Stop and reload arrive as channels (`Control`), so tests drive the loop without
//! signals. Nothing on a message's way sleeps to poll: workers block on the queue, producers block
//! on a full queue, the main loop blocks in a select over stop, reload, finished work, the next
//! retry and a tick for metrics and systemd.

pub mod control;
mod deliverer;
mod outcome;
mod progress;
pub mod schedule;
mod state;
mod systemd;
mod worker;

pub use control::Control;

use crossbeam_channel::select;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use log::info;
use thiserror::Error;

use crate::config::{Config, ConfigError, Hop};
use crate::keyring::{self, KeyringError};
use crate::metrics::Metrics;
use crate::spool::claim::Instance;
use crate::spool::ready::Tracker;
use crate::spool::watch::{Emit, Producers};
use deliverer::{Staged, deliverer};
use progress::{NothingWaiting, progress_bar, update_progress};
use schedule::Retries;
use state::{
    Shared, State, adopt, check_work_folder, left_incomplete, refresh_expiry, reload_state,
    write_metrics,
};
use systemd::Notifier;
use worker::{BATCH, Job, send_job, try_send_job, worker};

/// Freed memory each heap keeps (glibc returns more than 128 KiB at once by default).
const FREED_KEPT: i32 = 8 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// drain what is in the spool, then return
    Once,
    /// keep watching until shutdown
    Run,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub delivered: usize,
    pub failed: usize,
    pub deferred: usize,
    /// `once` was stopped (SIGINT, SIGTERM) before the spool was drained
    pub interrupted: bool,
    /// from the start to the end of the run
    pub elapsed: Duration,
}

impl Summary {
    /// The summary with the time it took and the rate, as `once` prints it last.
    pub fn with_rate(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let done = (self.delivered + self.failed) as f64;
        format!(
            "{self} in {secs:.1} s ({:.0} inputs/s)",
            if secs > 0.0 { done / secs } else { 0.0 }
        )
    }
}

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error("{path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The world changed under the daemon in a way it cannot repair by itself (its work folder
    /// vanished): it stops, and a restart (systemd's) sets it up again.
    #[error("stopped: {0}")]
    Fatal(String),
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} delivered, {} failed, {} deferred",
            self.delivered, self.failed, self.deferred
        )?;
        if self.interrupted {
            write!(f, "; interrupted: the rest waits in the spool")?;
        }
        Ok(())
    }
}

fn required(config: &Config, value: &Option<PathBuf>, key: &str) -> Result<PathBuf, ConfigError> {
    value.clone().ok_or_else(|| ConfigError::Invalid {
        path: config
            .source
            .clone()
            .unwrap_or_else(|| PathBuf::from("(built-in defaults)")),
        why: format!("`{key}` is not set; run and once need spool, pickup and failed"),
    })
}

/// Runs the pipeline until the spool is drained (`Once`) or `shutdown` is set (`Run`). `reload`
/// (SIGHUP) re-reads the config file, keys and certificates; a broken new config is refused and the
/// old one stays.
pub fn run(config: Config, mode: Mode, control: Control) -> Result<Summary, DaemonError> {
    let started = Instant::now();
    let shutdown = Arc::new(AtomicBool::new(false));
    let (halt_tx, halt) = crossbeam_channel::bounded::<()>(0);
    let (done, done_rx) = crossbeam_channel::unbounded::<()>();
    let folder = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DaemonError::Folder { path, source }
    };
    let spool_cfg = required(&config, &config.spool, "spool")?;
    let pickup_dir = if config.route.uses(Hop::Pickup) {
        Some(required(&config, &config.pickup, "pickup")?)
    } else {
        config.pickup.clone()
    };
    let failed = required(&config, &config.failed, "failed")?;
    let spool = spool_cfg.canonicalize().map_err(folder(&spool_cfg))?;
    // before anything is claimed or created: a layout that loops or strands mail never starts
    let layout = crate::layout::problems(&config);
    if !layout.is_empty() {
        return Err(ConfigError::Invalid {
            path: config
                .source
                .clone()
                .unwrap_or_else(|| PathBuf::from("(built-in defaults)")),
            why: layout.join("; "),
        }
        .into());
    }
    crate::dirs::create_all(&failed).map_err(folder(&failed))?;
    let work_root = crate::layout::work_folder(&config, &spool);
    let keyring = keyring::load(&config)?;
    keyring::warn_if_no_signer(&config, &keyring);
    let routes = crate::deliver::build(&config, pickup_dir.as_deref()).map_err(|why| {
        ConfigError::Invalid {
            path: config.source.clone().unwrap_or_default(),
            why,
        }
    })?;
    let (transport, gate_pickup, target) = (routes.transport, routes.gate_pickup, routes.target);
    let instance = Instance::start(&work_root).map_err(folder(&work_root))?;
    let workers = config.workers;
    let (settle, rescan) = (config.settle, config.rescan);
    let inputs = crate::spool::Inputs::new(&config.inputs);
    // certs_inbox: harvested in `run` only (`once` ends in bounded time and only drains the spool)
    let inbox = match mode {
        Mode::Run => crate::harvest::inbox::prepare(&config).map_err(|e| ConfigError::Invalid {
            path: config.source.clone().unwrap_or_default(),
            why: e.to_string(),
        })?,
        Mode::Once => None,
    };
    let network_routes = config.route.uses(Hop::Smtp) || config.route.uses(Hop::Api);
    let shared = Arc::new(Shared {
        mode,
        spool: spool.clone(),
        failed,
        state: RwLock::new(Arc::new(State { config, keyring })),
        transport,
        network_routes,
        gate_pickup,
        instance,
        tracker: Arc::new(Mutex::new(Tracker::new(settle))),
        shutdown: shutdown.clone(),
        halt,
        done,
        inflight: AtomicUsize::new(0),
        deferred: AtomicUsize::new(0),
        retries: Mutex::new(Retries::default()),
        pickup_down: AtomicBool::new(false),
        gate: Mutex::new(None),
        published_since_count: AtomicUsize::new(0),
        last_count: AtomicUsize::new(0),
        claimed_unwritten: AtomicUsize::new(0),
        metrics: Metrics::default(),
        earliest_expiry: std::sync::atomic::AtomicI64::new(i64::MAX),
        bar_scanning: AtomicBool::new(true),
        metrics_failing: AtomicBool::new(false),
        fatal: Mutex::new(None),
    });

    // sealing reallocates its buffers all the time: freed memory stays in the heaps for the next
    // message instead of going back to the kernel and faulting in again page by page
    crate::ffi::malloc::keep_freed_memory(FREED_KEPT);
    // a multi-consumer queue: each worker blocks on it by itself (no lock to queue behind)
    let (tx, rx) = crossbeam_channel::bounded::<Job>(workers * BATCH * 4);
    // sealed batches wait here for delivery: one per worker keeps both stages busy and memory
    // bounded (a batch being sealed, one waiting and one being delivered, per worker)
    let (staged_tx, staged_rx) = crossbeam_channel::bounded::<Staged>(workers);
    let mut threads = Vec::new();
    for i in 0..workers {
        let (shared, rx, out) = (shared.clone(), rx.clone(), staged_tx.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker(&shared, &rx, &out))
                .map_err(folder(&spool))?,
        );
    }
    drop(staged_tx); // the deliverers stop once every worker is gone and its batches are out
    // as many deliverers as workers: a route's connections (SMTP, API) are as many as today
    let mut deliverers = Vec::new();
    for i in 0..workers {
        let (shared, rx) = (shared.clone(), staged_rx.clone());
        deliverers.push(
            std::thread::Builder::new()
                .name(format!("deliver-{i}"))
                .spawn(move || deliverer(&shared, &rx))
                .map_err(folder(&spool))?,
        );
    }
    drop(staged_rx);
    let send = {
        let (tx, shared) = (tx.clone(), shared.clone());
        move |job: Job| send_job(&tx, &shared, job)
    };
    // inputs a crash left claimed come first
    adopt(&shared);
    let emit: Emit = {
        let send = send.clone();
        Arc::new(move |path| send(Job::Path(path)))
    };
    let timing = (settle, rescan, mode == Mode::Once);
    let tracker = shared.tracker.clone();
    let halting = (shutdown.clone(), shared.halt.clone());
    let producers = Producers::start(spool, timing, inputs, tracker, emit, halting)
        .map_err(folder(&shared.spool))?;
    // a new certificate is put to use by the same reload as SIGHUP's
    let (harvested_tx, harvested) = crossbeam_channel::bounded::<()>(1);
    let inbox = match inbox {
        Some(prepared) => {
            let reload = harvested_tx.clone();
            let on_import = Box::new(move || {
                let _ = reload.try_send(());
            });
            let counters = shared.metrics.harvest.clone();
            Some(
                prepared
                    .start(counters, on_import, shutdown.clone())
                    .map_err(folder(&shared.spool))?,
            )
        }
        None => None,
    };
    info!(
        "{} {} with {workers} workers; delivering to {target}",
        if mode == Mode::Once {
            "draining"
        } else {
            "watching"
        },
        shared.spool.display()
    );

    let mut last_adoption = Instant::now();
    let mut notifier = Notifier::new();
    let progress = (mode == Mode::Once && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(progress_bar);
    refresh_expiry(&shared);
    let mut last_second = Instant::now();
    let mut interrupted = false;
    // the tick drives what is periodic by nature (metrics, systemd, the progress bar, `once`'s
    // end of intake); messages never wait for it
    let ticker = crossbeam_channel::tick(Duration::from_millis(100));
    loop {
        let next_retry = shared.retries.lock().expect("retries lock").next_due();
        let retry_timer = next_retry.map_or_else(crossbeam_channel::never, crossbeam_channel::at);
        select! {
            recv(control.stop) -> _ => {
                info!("stopping: finishing the messages in progress");
                interrupted = true;
                break;
            }
            recv(control.reload) -> _ => {
                notifier.send(&[sd_notify::NotifyState::Reloading]);
                reload_state(&shared);
                refresh_expiry(&shared);
                notifier.send(&[sd_notify::NotifyState::Ready]);
                producers.rescan();
            }
            recv(harvested) -> _ => {
                notifier.send(&[sd_notify::NotifyState::Reloading]);
                reload_state(&shared);
                refresh_expiry(&shared);
                notifier.send(&[sd_notify::NotifyState::Ready]);
                producers.rescan();
            }
            recv(done_rx) -> _ => {}
            recv(retry_timer) -> _ => {}
            recv(ticker) -> _ => {
                notifier.tick(&shared, producers.first_scan_done.load(Ordering::SeqCst));
                if let Some(bar) = &progress {
                    update_progress(bar, &shared, &producers);
                }
                if last_second.elapsed() >= Duration::from_secs(1) {
                    write_metrics(&shared);
                    check_work_folder(&shared);
                    last_second = Instant::now();
                }
                if last_adoption.elapsed() >= rescan {
                    // another instance sharing the spool may have died since
                    adopt(&shared);
                    last_adoption = Instant::now();
                }
            }
        }
        if shutdown.load(Ordering::SeqCst) {
            break; // a fatal condition (see check_work_folder)
        }
        let due = shared
            .retries
            .lock()
            .expect("retries lock")
            .take_due(Instant::now());
        // never block here (the watchdog is fed from this loop): what does not fit waits a moment
        let mut refused = Vec::new();
        for claim in due {
            if let Err(job) = try_send_job(&tx, &shared, Job::Claim(claim)) {
                refused.push(job);
            }
        }
        let later = Instant::now() + Duration::from_millis(100);
        for job in refused {
            if let Job::Claim(claim) = job {
                shared
                    .retries
                    .lock()
                    .expect("retries lock")
                    .at(later, claim);
            }
        }
        // `once` ends when intake has (settle_ms after the first scan) and all it took is done
        if mode == Mode::Once
            && schedule::drained(
                producers.intake_done(),
                shared.inflight.load(Ordering::SeqCst),
                shared.retries.lock().expect("retries lock").len(),
            )
        {
            left_incomplete(&shared);
            break;
        }
    }
    notifier.send(&[sd_notify::NotifyState::Stopping]);
    shutdown.store(true, Ordering::SeqCst);
    drop(halt_tx); // wakes every thread waiting on the queue, a full queue or the gate
    drop(tx);
    drop(send);
    producers.join();
    if let Some(inbox) = inbox {
        inbox.join();
    }
    for t in threads.into_iter().chain(deliverers) {
        let _ = t.join();
    }
    // delivered claims kept for their inodes go before the work folder is closed
    shared.transport.close();
    write_metrics(&shared);
    if let Some(bar) = &progress {
        update_progress(bar, &shared, &NothingWaiting);
        bar.finish_and_clear();
    }
    let summary = Summary {
        delivered: shared.metrics.delivered_total(),
        failed: shared.metrics.failed_total(),
        deferred: shared.deferred.load(Ordering::SeqCst)
            + shared.retries.lock().expect("retries lock").len(),
        interrupted: mode == Mode::Once && interrupted,
        elapsed: started.elapsed(),
    };
    let fatal = shared.fatal.lock().expect("fatal lock").take();
    if let Ok(shared) = Arc::try_unwrap(shared) {
        shared.instance.close();
    }
    match fatal {
        Some(why) => Err(DaemonError::Fatal(why)),
        None => Ok(summary),
    }
}
