//! The pipeline as threads: producers (watch + scan) feed a bounded queue; N workers each claim,
//! seal, deliver and finish. `run` keeps going until told to stop; `once` stops when the spool is
//! drained. Stop and reload arrive as channels (`Control`), so tests drive the loop without
//! signals. Nothing on a message's way sleeps to poll: workers block on the queue, producers block
//! on a full queue, the main loop blocks in a select over stop, reload, finished work, the next
//! retry and a tick for metrics and systemd.

pub mod control;

pub use control::Control;

use crossbeam_channel::{Receiver, Sender, TrySendError, select};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use thiserror::Error;

use crate::config::{Config, ConfigError, Hop};
use crate::deliver::pickup::Pickup;
use crate::deliver::{DeliverError, Delivered, Transport, rejections};
use crate::finish;
use crate::keyring::{self, KeyringError};
use crate::metrics::{Gauges, Metrics};
use crate::seal::{self, Keyring, Sealed};
use crate::smime::certs::unix_now;
use crate::spool::claim::{Claim, Instance, Taken};
use crate::spool::crashguard::STRIKES_OUT;
use crate::spool::ready::Tracker;
use crate::spool::watch::{Emit, Producers};
use crate::spool::{Candidate, Snapshot};

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

/// What workers read for every message; replaced whole on reload.
struct State {
    config: Config,
    keyring: Keyring,
}

enum Job {
    Path(Candidate),
    Claim(Claim),
}

struct Shared {
    mode: Mode,
    spool: PathBuf,
    failed: PathBuf,
    state: RwLock<Arc<State>>,
    transport: Box<dyn Transport>,
    /// the pickup directory, watched by the intake gate when it is the only route
    gate_pickup: Option<Pickup>,
    instance: Instance,
    /// what the producers track; workers put changed claims back into it
    tracker: Arc<Mutex<Tracker>>,
    shutdown: Arc<AtomicBool>,
    /// never sent on: dropped at shutdown, which wakes every select on it at once
    halt: Receiver<()>,
    /// a worker finished a batch (wakes the main loop to see whether `once` is drained)
    done: Sender<()>,
    inflight: AtomicUsize,
    delivered: AtomicUsize,
    failed_count: AtomicUsize,
    deferred: AtomicUsize,
    retries: Mutex<Vec<(Instant, Claim)>>,
    attempts: Mutex<HashMap<String, u32>>,
    pickup_down: AtomicBool,
    gate: Mutex<Option<(Instant, Gate)>>,
    /// pickup files written since the gate last counted the pickup folder
    published_since_count: AtomicUsize,
    last_count: AtomicUsize,
    /// claims taken from the spool whose pickup files are not written yet (a batch in progress)
    claimed_unwritten: AtomicUsize,
    metrics: Metrics,
    /// Unix time the earliest usable certificate expires (refreshed at start and reload)
    earliest_expiry: std::sync::atomic::AtomicI64,
    /// the progress bar shows the "still finding more" style
    bar_scanning: AtomicBool,
    /// the last write of `metrics_file` failed (warned about once)
    metrics_failing: AtomicBool,
    /// why the daemon must stop (see `DaemonError::Fatal`)
    fatal: Mutex<Option<String>>,
}

/// May workers take new inputs from the spool?
#[derive(Debug, Clone, PartialEq, Eq)]
enum Gate {
    Open,
    Unavailable(String),
    Backlog(usize),
}

/// Deferred inputs held for a retry before intake pauses (memory stays bounded when no route works).
const MAX_DEFERRED: usize = 1000;

/// Delay before retry number `attempt` (0-based): 1 s doubling, capped at `max`.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX)).min(max)
}

/// When to retry after `why`: the backoff, or later when the server asked (`Retry-After`).
fn retry_in(attempt: u32, max: Duration, why: &DeliverError) -> Duration {
    backoff(attempt, max).max(why.retry_after().unwrap_or_default())
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
    let shared = Arc::new(Shared {
        mode,
        spool: spool.clone(),
        failed,
        state: RwLock::new(Arc::new(State { config, keyring })),
        transport,
        gate_pickup,
        instance,
        tracker: Arc::new(Mutex::new(Tracker::new(settle))),
        shutdown: shutdown.clone(),
        halt,
        done,
        inflight: AtomicUsize::new(0),
        delivered: AtomicUsize::new(0),
        failed_count: AtomicUsize::new(0),
        deferred: AtomicUsize::new(0),
        retries: Mutex::new(Vec::new()),
        attempts: Mutex::new(HashMap::new()),
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

    // a multi-consumer queue: each worker blocks on it by itself (no lock to queue behind)
    let (tx, rx) = crossbeam_channel::bounded::<Job>(workers * 16);
    let mut threads = Vec::new();
    for i in 0..workers {
        let (shared, rx) = (shared.clone(), rx.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker(&shared, &rx))
                .map_err(folder(&spool))?,
        );
    }
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
        let next_retry = shared
            .retries
            .lock()
            .expect("retries lock")
            .iter()
            .map(|(at, _)| *at)
            .min();
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
        let due: Vec<Claim> = {
            let mut retries = shared.retries.lock().expect("retries lock");
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) = retries.drain(..).partition(|(at, _)| *at <= now);
            *retries = later;
            due.into_iter().map(|(_, c)| c).collect()
        };
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
                    .push((later, claim));
            }
        }
        // `once` ends when intake has (settle_ms after the first scan) and all it took is done
        if mode == Mode::Once
            && producers.intake_done()
            && shared.inflight.load(Ordering::SeqCst) == 0
            && shared.retries.lock().expect("retries lock").is_empty()
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
    for t in threads {
        let _ = t.join();
    }
    write_metrics(&shared);
    if let Some(bar) = &progress {
        update_progress(bar, &shared, &NothingWaiting);
        bar.finish_and_clear();
    }
    let summary = Summary {
        delivered: shared.delivered.load(Ordering::SeqCst),
        failed: shared.failed_count.load(Ordering::SeqCst),
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

/// Talks to systemd (`Type=notify`) when NOTIFY_SOCKET is set: READY=1 once the spool was scanned
/// and everything it found complete is queued, STATUS= with the counts every second, WATCHDOG=1 at
/// half the watchdog interval from this loop (so a stuck main loop gets the service restarted).
struct Notifier {
    enabled: bool,
    ready: bool,
    last_status: Instant,
    watchdog: Option<Duration>,
    last_watchdog: Instant,
}

impl Notifier {
    fn new() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let now = Instant::now();
        Notifier {
            enabled,
            ready: false,
            last_status: now,
            watchdog: if enabled {
                sd_notify::watchdog_enabled()
            } else {
                None
            },
            last_watchdog: now,
        }
    }

    fn send(&self, states: &[sd_notify::NotifyState]) {
        if self.enabled
            && let Err(e) = sd_notify::notify(states)
        {
            debug!("sd_notify: {e}");
        }
    }

    fn tick(&mut self, shared: &Shared, scanned: bool) {
        if !self.enabled {
            return;
        }
        if scanned && !self.ready {
            self.ready = true;
            self.send(&[sd_notify::NotifyState::Ready]);
        }
        if self.last_status.elapsed() >= Duration::from_secs(1) {
            self.last_status = Instant::now();
            let status = format!(
                "{} delivered, {} failed, {} deferred, {} queued, route {}",
                shared.delivered.load(Ordering::SeqCst),
                shared.failed_count.load(Ordering::SeqCst),
                shared.retries.lock().expect("retries lock").len(),
                shared.inflight.load(Ordering::SeqCst),
                shared.transport.route_now()
            );
            self.send(&[sd_notify::NotifyState::Status(&status)]);
        }
        if let Some(interval) = self.watchdog
            && self.last_watchdog.elapsed() >= interval / 2
        {
            self.last_watchdog = Instant::now();
            self.send(&[sd_notify::NotifyState::Watchdog]);
        }
    }
}

/// `once` on a terminal: a bar with the count, the rate and the time left.
fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(progress_style(true));
    bar
}

/// While the first scan runs the total is still growing: no time left is shown until it is known.
/// (In indicatif's templates `{key:.N}` is a colour, not a precision: the rate has a key of its own.)
fn progress_style(scanning: bool) -> indicatif::ProgressStyle {
    let template = if scanning {
        "{bar:30} {pos}/{len}+ inputs (still finding more), {rate} ({msg})"
    } else {
        "{bar:30} {pos}/{len} inputs, {rate}, {eta} left ({msg})"
    };
    indicatif::ProgressStyle::with_template(template)
        .expect("a valid template")
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", state.per_sec());
            },
        )
}

fn update_progress(bar: &indicatif::ProgressBar, shared: &Shared, producers: &impl Waiting) {
    let done = shared.delivered.load(Ordering::SeqCst) + shared.failed_count.load(Ordering::SeqCst);
    let deferred = shared.deferred.load(Ordering::SeqCst);
    // the total grows while the first scan runs: everything done, queued or still settling
    let total = done + deferred + shared.inflight.load(Ordering::SeqCst) + producers.waiting();
    if total == 0 {
        return; // nothing found yet: an empty bar rather than a full one
    }
    let scanning = producers.scanning();
    if scanning != shared.bar_scanning.swap(scanning, Ordering::SeqCst) {
        bar.set_style(progress_style(scanning));
    }
    bar.set_length(total as u64);
    bar.set_position((done + deferred) as u64);
    bar.set_message(format!(
        "{} delivered, {} failed, {deferred} deferred",
        shared.delivered.load(Ordering::SeqCst),
        shared.failed_count.load(Ordering::SeqCst)
    ));
}

/// Files the producers know of but have not queued yet.
trait Waiting {
    fn waiting(&self) -> usize;
    /// The first scan is still running: more inputs may be found.
    fn scanning(&self) -> bool;
}

impl Waiting for Producers {
    fn waiting(&self) -> usize {
        self.tracker.lock().expect("tracker lock").len()
    }
    fn scanning(&self) -> bool {
        !self.first_scan_done.load(Ordering::SeqCst)
    }
}

/// After the producers stopped: nothing waits.
struct NothingWaiting;

impl Waiting for NothingWaiting {
    fn waiting(&self) -> usize {
        0
    }
    fn scanning(&self) -> bool {
        false
    }
}

/// Rewrites `metrics_file`, when configured.
fn write_metrics(shared: &Shared) {
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
fn refresh_expiry(shared: &Shared) {
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
fn adopt(shared: &Shared) {
    let adopted = shared.instance.adopt_dead();
    match adopted {
        Ok(claims) => {
            if !claims.is_empty() {
                warn!(
                    "recovered {} inputs left by an instance that stopped without finishing",
                    claims.len()
                );
            }
            // an input the process died on twice while sealing it is not sealed a third time
            let guard = &shared.instance.guard;
            let (poison, claims): (Vec<Claim>, Vec<Claim>) = claims
                .into_iter()
                .partition(|c| guard.strikes(&c.id) >= STRIKES_OUT && !c.committed_path().exists());
            for claim in poison {
                let (id, path) = (claim.id.clone(), claim.path.clone());
                let why = "the daemon stopped twice while sealing this input";
                refuse(shared, claim, &why, "quarantined", "internal");
                if !path.exists() {
                    guard.clear(&id);
                }
            }
            // queued through the retry list, which the main loop feeds without blocking
            let now = Instant::now();
            shared
                .retries
                .lock()
                .expect("retries lock")
                .extend(claims.into_iter().map(|c| (now, c)));
        }
        Err(e) => error!(
            "{}: cannot adopt the claims of stopped instances: {e}",
            shared.instance.dir.display()
        ),
    }
}

/// Queues a job if there is room now; gives it back otherwise.
fn try_send_job(tx: &Sender<Job>, shared: &Shared, job: Job) -> Result<(), Job> {
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
fn send_job(tx: &Sender<Job>, shared: &Shared, job: Job) -> bool {
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
const BATCH: usize = 32;

fn worker(shared: &Shared, rx: &Receiver<Job>) {
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
fn flush(shared: &Shared, pending: &mut Vec<(Claim, Option<Snapshot>)>, claimed: &mut usize) {
    // fresh claims a process still holds open for writing go back (one look at /proc per batch)
    let open = if pending.iter().any(|(_, judged)| judged.is_some()) {
        crate::spool::writers(&shared.instance.dir)
    } else {
        Default::default()
    };
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

/// `take_new` would have to wait for the gate while the caller holds unwritten claims.
struct MustFlush;

/// Claims a spool file once the route can take it; `None` when it waits, is gone or was taken.
fn take_new(
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

/// Stops the daemon when its own work folder is gone (deleted, or moved away with a spool that was
/// renamed): claims cannot be made safely without it, and retrying would only log the same error
/// forever. A restart makes a new one; claims that went with the old folder are wherever it went.
fn check_work_folder(shared: &Shared) {
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
fn left_incomplete(shared: &Shared) {
    let left = shared.tracker.lock().expect("tracker lock").files_left();
    if left > 0 {
        warn!(
            "{left} files still being written or settling are left in the spool for the next run"
        );
        shared.deferred.fetch_add(left, Ordering::SeqCst);
    }
}

/// Whether new inputs may be taken. Listing the pickup folder costs, so it is re-counted once a
/// second, or sooner when what we wrote since the last count could have crossed the limit.
fn gate(shared: &Shared) -> Gate {
    let max = shared
        .state
        .read()
        .expect("state lock")
        .config
        .pickup_max_backlog;
    let Some(pickup) = &shared.gate_pickup else {
        // SMTP can take over from pickup: only a pile of deferred inputs stops intake
        let waiting = shared.retries.lock().expect("retries lock").len();
        return if waiting > MAX_DEFERRED {
            Gate::Unavailable(format!("{waiting} inputs wait for a retry"))
        } else {
            Gate::Open
        };
    };
    let mut cached = shared.gate.lock().expect("gate lock");
    let unwritten = shared.claimed_unwritten.load(Ordering::SeqCst);
    let estimate = shared.last_count.load(Ordering::SeqCst)
        + shared.published_since_count.load(Ordering::SeqCst)
        + unwritten;
    if let Some((at, g)) = &*cached
        && at.elapsed() < Duration::from_secs(1)
        && (estimate < max || *g != Gate::Open)
    {
        return g.clone();
    }
    let g = match pickup.check() {
        Err(e) => Gate::Unavailable(e.to_string()),
        Ok(()) => {
            shared.published_since_count.store(0, Ordering::SeqCst);
            match pickup.backlog() {
                Ok(n) => {
                    shared.last_count.store(n, Ordering::SeqCst);
                    if n + unwritten >= max {
                        Gate::Backlog(n)
                    } else {
                        Gate::Open
                    }
                }
                Err(_) => Gate::Open,
            }
        }
    };
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

/// A claim sealed and waiting for its delivery.
struct Ready {
    claim: Claim,
    copies: Vec<Sealed>,
    started: Instant,
}

/// The claimed input, read into a buffer this worker used before.
fn read_input(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata().map_or(0, |m| m.len() as usize);
    let mut bytes = crate::buffers::take(size + 1);
    f.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Finishes an interrupted delivery, or reads and seals the claim. Refusals and deferrals are dealt
/// with here; `Some` means: deliver these copies.
fn prepare(
    shared: &Shared,
    claim: Claim,
    judged: Option<(Snapshot, &HashSet<(u64, u64)>)>,
) -> Option<Ready> {
    let started = Instant::now();
    let recovered = if claim.fresh {
        Ok(None)
    } else {
        shared.transport.recover(&claim)
    };
    match recovered {
        Ok(Some(done)) => {
            finish_delivered(shared, &claim, 0);
            info!(
                "{}: delivery finished after a restart via {} ({})",
                claim.rel.display(),
                done.route,
                done.made()
            );
            return None;
        }
        Ok(None) => {}
        Err(e) => {
            defer(shared, claim, &e);
            return None;
        }
    }
    let read = match judged {
        Some((judged, open)) => {
            let tracker = &shared.tracker;
            let fresh = crate::spool::Fresh::new(&shared.spool, &shared.instance, tracker);
            fresh.read(&claim, judged, open)
        }
        None => read_input(&claim.path).map(Some),
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
    let state = shared.state.read().expect("state lock").clone();
    let sealing = Instant::now();
    // a panic costs this input, never the worker; what cannot be caught, the crash guard sees
    let guard = &shared.instance.guard;
    let marked = guard.sealing(&claim.id);
    let sealed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::spool::crashguard::test_hook(&claim.rel);
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
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Acts on what the route did with one sealed claim.
fn complete(shared: &Shared, ready: &Ready, result: Result<Delivered, DeliverError>) {
    let Ready {
        claim,
        copies,
        started,
    } = ready;
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
            finish_delivered(shared, claim, done.units);
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
fn refuse(shared: &Shared, claim: Claim, why: &dyn std::fmt::Display, what: &str, class: &str) {
    let rel = claim.rel.display().to_string();
    match finish::quarantine(&claim, &shared.failed, class, &why.to_string()) {
        Ok(to) => {
            shared.metrics.failed(class);
            shared.failed_count.fetch_add(1, Ordering::SeqCst);
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

fn finish_delivered(shared: &Shared, claim: &Claim, units: usize) {
    shared
        .published_since_count
        .fetch_add(units, Ordering::SeqCst);
    if let Err(e) = finish::delivered(claim) {
        // the outputs are in pickup; a leftover committed claim is finished again at restart
        error!(
            "{}: delivered, but cannot remove the claimed input: {e}",
            claim.path.display()
        );
    }
    shared
        .attempts
        .lock()
        .expect("attempts lock")
        .remove(&claim.id);
    shared.delivered.fetch_add(1, Ordering::SeqCst);
    if shared.pickup_down.swap(false, Ordering::SeqCst) {
        info!("pickup route works again");
    }
}

/// Keeps a claimed input for a retry (Run) or for the next start (Once).
fn defer(shared: &Shared, mut claim: Claim, why: &DeliverError) {
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
    let attempt = {
        let mut attempts = shared.attempts.lock().expect("attempts lock");
        let a = attempts.entry(claim.id.clone()).or_insert(0);
        *a += 1;
        *a - 1
    };
    shared
        .retries
        .lock()
        .expect("retries lock")
        .push((Instant::now() + retry_in(attempt, max, why), claim));
}

/// SIGHUP: a new config, keys and certificates, or the old ones if anything is wrong.
fn reload_state(shared: &Shared) {
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
            info!(
                "reloaded {}: {} signing keys, {} recipient addresses",
                path.display(),
                new.keyring.keys.len(),
                new.keyring.certs.addresses()
            );
            keyring::warn_if_no_signer(&new.config, &new.keyring);
            *shared.state.write().expect("state lock") = Arc::new(new);
        }
        Err(e) => error!("reload refused, keeping the running configuration: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(300);
        let table = [
            (0, 1),
            (1, 2),
            (2, 4),
            (5, 32),
            (8, 256),
            (9, 300),
            (40, 300),
            (u32::MAX, 300),
        ];
        for (attempt, secs) in table {
            assert_eq!(
                backoff(attempt, max),
                Duration::from_secs(secs),
                "attempt {attempt}"
            );
        }
    }
}
