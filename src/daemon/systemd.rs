//! Talking to systemd (`Type=notify`): READY once the spool was scanned, STATUS with the counts,
//! WATCHDOG from the main loop, STOPPING at the end.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::debug;

use super::state::Shared;

/// Talks to systemd (`Type=notify`) when NOTIFY_SOCKET is set: READY=1 once the spool was scanned
/// and everything it found complete is queued, STATUS= with the counts every second, WATCHDOG=1 at
/// half the watchdog interval from this loop (so a stuck main loop gets the service restarted).
pub(super) struct Notifier {
    pub(super) enabled: bool,
    pub(super) ready: bool,
    pub(super) last_status: Instant,
    pub(super) watchdog: Option<Duration>,
    pub(super) last_watchdog: Instant,
}

impl Notifier {
    pub(super) fn new() -> Notifier {
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

    pub(super) fn send(&self, states: &[sd_notify::NotifyState]) {
        if self.enabled
            && let Err(e) = sd_notify::notify(states)
        {
            debug!("sd_notify: {e}");
        }
    }

    pub(super) fn tick(&mut self, shared: &Shared, scanned: bool) {
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
                shared.metrics.delivered_total(),
                shared.metrics.failed_total(),
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
