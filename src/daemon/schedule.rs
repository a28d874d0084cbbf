//! The daemon's decisions, as plain functions of state and time: when a deferred input is tried
//! again (backoff, the server's Retry-After), whether new inputs may be taken (the backlog gate),
//! and whether `once` is done. No I/O and no clock of its own: the caller passes `now`, so the
//! rules are tested from tables.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::spool::claim::Claim;

/// Deferred inputs held for a retry before intake pauses (memory stays bounded when no route works).
pub const MAX_DEFERRED: usize = 1000;

/// Delay before retry number `attempt` (0-based): 1 s doubling, capped at `max`.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX)).min(max)
}

/// Deferred inputs and when each is due again.
#[derive(Default)]
pub struct Retries {
    waiting: Vec<(Instant, Claim)>,
    /// deferrals so far, by claim id (forgotten once it is delivered or refused)
    attempts: HashMap<String, u32>,
}

impl Retries {
    /// Defers `claim`: due after the backoff for its attempt, or later when the server asked for
    /// that (`retry_after`). Returns when it is due.
    pub fn defer(
        &mut self,
        claim: Claim,
        now: Instant,
        max: Duration,
        retry_after: Option<Duration>,
    ) -> Instant {
        let attempt = self.attempts.entry(claim.id.clone()).or_insert(0);
        let at = now + backoff(*attempt, max).max(retry_after.unwrap_or_default());
        *attempt = attempt.saturating_add(1);
        self.waiting.push((at, claim));
        at
    }

    /// Queues `claim` for `at` without counting an attempt (adopted claims, a full queue).
    pub fn at(&mut self, at: Instant, claim: Claim) {
        self.waiting.push((at, claim));
    }

    /// The claims due at `now`, earliest first; the rest keep waiting.
    pub fn take_due(&mut self, now: Instant) -> Vec<Claim> {
        let (mut due, later): (Vec<_>, Vec<_>) =
            self.waiting.drain(..).partition(|(at, _)| *at <= now);
        self.waiting = later;
        due.sort_by_key(|(at, _)| *at);
        due.into_iter().map(|(_, c)| c).collect()
    }

    /// When the next claim is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting.iter().map(|(at, _)| *at).min()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The claim is finished (delivered or refused): its count starts over if it comes back.
    pub fn forget(&mut self, id: &str) {
        self.attempts.remove(id);
    }
}

/// May workers take new inputs from the spool?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Open,
    Unavailable(String),
    Backlog(usize),
}

/// What the gate is decided from.
pub struct GateFacts {
    /// the pickup directory when it is the only route: Ok(files in it) or why it is unusable
    pub pickup: Option<Result<usize, String>>,
    /// claims taken whose pickup files are not written yet
    pub unwritten: usize,
    pub max_backlog: usize,
    /// deferred inputs waiting for a retry
    pub waiting: usize,
}

/// The gate: closed while the only route (pickup) is unusable or holds `max_backlog` files
/// (counting what is being written); with a route that can take over, only a pile of deferred
/// inputs closes it.
pub fn gate(f: &GateFacts) -> Gate {
    match &f.pickup {
        None if f.waiting > MAX_DEFERRED => {
            Gate::Unavailable(format!("{} inputs wait for a retry", f.waiting))
        }
        None => Gate::Open,
        Some(Err(why)) => Gate::Unavailable(why.clone()),
        Some(Ok(n)) if n + f.unwritten >= f.max_backlog => Gate::Backlog(*n),
        Some(Ok(_)) => Gate::Open,
    }
}

/// Whether a gate decided `age` ago still holds: for a second, unless it was open and what was
/// written since (`estimate` = last count + published since + unwritten) may have reached the limit.
pub fn gate_still_holds(cached: &Gate, age: Duration, estimate: usize, max_backlog: usize) -> bool {
    age < Duration::from_secs(1) && (estimate < max_backlog || *cached != Gate::Open)
}

/// `once` is done: intake has ended, nothing is queued or in progress, nothing waits for a retry.
pub fn drained(intake_done: bool, inflight: usize, waiting: usize) -> bool {
    intake_done && inflight == 0 && waiting == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn claim(id: &str) -> Claim {
        Claim {
            path: PathBuf::from(format!("/w/{id},m.eml")),
            id: id.into(),
            rel: "m.eml".into(),
            fresh: false,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(300);
        for (attempt, secs) in [
            (0, 1),
            (1, 2),
            (2, 4),
            (5, 32),
            (8, 256),
            (9, 300),
            (40, 300),
            (u32::MAX, 300),
        ] {
            assert_eq!(
                backoff(attempt, max),
                Duration::from_secs(secs),
                "{attempt}"
            );
        }
    }

    #[test]
    fn deferrals_follow_the_backoff_and_the_servers_wish() {
        let t0 = Instant::now();
        let max = Duration::from_secs(300);
        let s = Duration::from_secs;
        // (retry-after asked, delay expected) for the same claim, one deferral after another
        let table = [
            (None, s(1)),
            (None, s(2)),
            (Some(s(30)), s(30)), // the server asks for longer than the backoff: it wins
            (Some(s(1)), s(8)),   // shorter: the backoff wins
            (None, s(16)),
        ];
        let mut r = Retries::default();
        for (i, (after, want)) in table.into_iter().enumerate() {
            let at = r.defer(claim("a"), t0, max, after);
            assert_eq!(at - t0, want, "deferral {i}");
            assert_eq!(r.take_due(at).len(), 1);
        }
        // delivered: the count starts over
        r.forget("a");
        assert_eq!(r.defer(claim("a"), t0, max, None) - t0, s(1));
    }

    #[test]
    fn due_claims_come_out_in_order_and_the_rest_wait() {
        let t0 = Instant::now();
        let mut r = Retries::default();
        r.at(t0 + Duration::from_secs(3), claim("late"));
        r.at(t0 + Duration::from_secs(1), claim("early"));
        r.at(t0 + Duration::from_secs(2), claim("middle"));
        assert_eq!(r.next_due(), Some(t0 + Duration::from_secs(1)));
        assert!(r.take_due(t0).is_empty());
        let due: Vec<String> = r
            .take_due(t0 + Duration::from_secs(2))
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(due, ["early", "middle"]);
        assert_eq!(
            (r.len(), r.next_due()),
            (1, Some(t0 + Duration::from_secs(3)))
        );
    }

    #[test]
    fn the_gate_from_a_table() {
        let facts = |pickup: Option<Result<usize, String>>, unwritten, waiting| GateFacts {
            pickup,
            unwritten,
            max_backlog: 100,
            waiting,
        };
        let down = || Some(Err("pickup directory /p is unavailable: gone".to_string()));
        for (f, want) in [
            (facts(Some(Ok(0)), 0, 0), Gate::Open),
            (facts(Some(Ok(99)), 0, 0), Gate::Open),
            (facts(Some(Ok(100)), 0, 0), Gate::Backlog(100)),
            (facts(Some(Ok(90)), 10, 0), Gate::Backlog(90)), // what is being written counts
            (
                facts(down(), 0, 0),
                Gate::Unavailable("pickup directory /p is unavailable: gone".into()),
            ),
            (facts(None, 0, MAX_DEFERRED), Gate::Open), // another route can take over
            (
                facts(None, 0, MAX_DEFERRED + 1),
                Gate::Unavailable("1001 inputs wait for a retry".into()),
            ),
        ] {
            assert_eq!(gate(&f), want);
        }
        let s = Duration::from_millis;
        for (cached, age, estimate, holds) in [
            (Gate::Open, s(500), 50, true),
            (Gate::Open, s(500), 100, false), // may have reached the limit: count again
            (Gate::Backlog(100), s(500), 100, true),
            (Gate::Open, s(1000), 0, false), // a second old: count again
            (Gate::Unavailable("x".into()), s(1500), 0, false),
        ] {
            assert_eq!(gate_still_holds(&cached, age, estimate, 100), holds);
        }
    }

    #[test]
    fn once_is_drained_only_when_nothing_is_left() {
        for (intake_done, inflight, waiting, want) in [
            (true, 0, 0, true),
            (false, 0, 0, false),
            (true, 1, 0, false),
            (true, 0, 1, false),
        ] {
            assert_eq!(drained(intake_done, inflight, waiting), want);
        }
    }
}
