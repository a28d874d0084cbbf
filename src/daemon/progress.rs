//! `once`'s progress bar on a terminal: how many inputs, how fast, how long still.

use std::sync::atomic::Ordering;

use crate::spool::watch::Producers;

use super::state::Shared;

/// `once` on a terminal: a bar with the count, the rate and the time left.
pub(super) fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(progress_style(true));
    bar
}

/// While the first scan runs the total is still growing: no time left is shown until it is known.
/// (In indicatif's templates `{key:.N}` is a colour, not a precision: the rate has a key of its own.)
pub(super) fn progress_style(scanning: bool) -> indicatif::ProgressStyle {
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

pub(super) fn update_progress(
    bar: &indicatif::ProgressBar,
    shared: &Shared,
    producers: &impl Waiting,
) {
    let done = shared.metrics.delivered_total() + shared.metrics.failed_total();
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
        shared.metrics.delivered_total(),
        shared.metrics.failed_total()
    ));
}

/// Files the producers know of but have not queued yet.
pub(super) trait Waiting {
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
pub(super) struct NothingWaiting;

impl Waiting for NothingWaiting {
    fn waiting(&self) -> usize {
        0
    }
    fn scanning(&self) -> bool {
        false
    }
}
