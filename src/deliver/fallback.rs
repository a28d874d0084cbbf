//! An ordered list of routes (`route = "pickup-then-smtp"`, `"pickup-then-api"`,
//! `["pickup", "api", "smtp"]`): each message takes the first route that is healthy, and the next
//! one when its route fails as a route (not when the message itself is refused).
//!
//! Health: the pickup directory is checked before each delivery, at most once a second (it lists the
//! folder); a network route (SMTP, API) that failed is skipped for 1 s, then 2, 4 … up to 60 s
//! between single tries, and for as long as the API server's `Retry-After` asked. The last route is
//! tried when no other is usable, so a message is deferred with its real cause, never dropped. Each
//! switch is logged once with its cause, not once per message.
//!
//! Exactly once across routes: a pickup delivery that reached its commit point is finished by
//! pickup's recovery, never handed to another route; what SMTP or the API handed over is recorded
//! (`progress`), and every route is given only the copies and recipients not recorded there.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::api::ApiRoute;
use super::pickup::Pickup;
use super::smtp::SmtpRoute;
use super::{DeliverError, Delivered, Done, Transport, progress};
use crate::seal::Sealed;
use crate::spool::claim::Claim;

/// One route of the list.
pub enum Leg {
    Pickup(Pickup),
    Smtp(SmtpRoute),
    Api(ApiRoute),
}

impl Leg {
    fn transport(&self) -> &dyn Transport {
        match self {
            Leg::Pickup(p) => p,
            Leg::Smtp(s) => s,
            Leg::Api(a) => a,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Leg::Pickup(_) => "pickup",
            Leg::Smtp(_) => "smtp",
            Leg::Api(_) => "api",
        }
    }

    /// For logs: "the pickup directory /x", "SMTP to host:25", "API to https://…".
    pub fn describe(&self) -> String {
        match self {
            Leg::Pickup(p) => format!("the pickup directory {}", p.dir.display()),
            Leg::Smtp(s) => format!("SMTP to {}", s.server()),
            Leg::Api(a) => format!("API to {}", a.url()),
        }
    }
}

/// A network route's failures: skipped until `retry_at`.
#[derive(Debug, Clone)]
struct Down {
    retry_at: Instant,
    failures: u32,
}

pub struct Fallback {
    pub legs: Vec<Leg>,
    pub min_free: u64,
    pub max_backlog: usize,
    /// pickup: when last checked, and why it was unhealthy then (None: healthy)
    pickup_health: Mutex<Option<(Instant, Option<String>)>>,
    /// network routes, by index: down since a failure (None: up)
    down: Mutex<Vec<Option<Down>>>,
    /// the route the last delivery took, for the metrics
    current: Mutex<&'static str>,
}

/// Longest pause between single tries of a network route that failed.
const MAX_PAUSE: Duration = Duration::from_secs(60);

impl Fallback {
    pub fn new(legs: Vec<Leg>, min_free: u64, max_backlog: usize) -> Fallback {
        let n = legs.len();
        let first = legs.first().map_or("pickup", Leg::name);
        Fallback {
            legs,
            min_free,
            max_backlog,
            pickup_health: Mutex::new(None),
            down: Mutex::new(vec![None; n]),
            current: Mutex::new(first),
        }
    }

    /// What a message would fall back to after route `i`, for logs.
    fn after(&self, i: usize) -> String {
        self.legs
            .get(i + 1)
            .map_or_else(|| "no other route".into(), Leg::describe)
    }

    /// The pickup route's problem, if any, re-checked at most once a second; logs changes.
    fn pickup_problem(&self, i: usize, pickup: &Pickup, force: bool) -> Option<String> {
        let mut cached = self.pickup_health.lock().expect("health lock");
        if let Some((at, problem)) = &*cached
            && !force
            && at.elapsed() < Duration::from_secs(1)
        {
            return problem.clone();
        }
        let problem = pickup.health(self.min_free, self.max_backlog).err();
        let before = cached.as_ref().map(|(_, p)| p.clone());
        match (&before, &problem) {
            (Some(None) | None, Some(why)) => warn!("route: {} because {why}", self.after(i)),
            (Some(Some(_)), None) => info!("route: back to {}", self.legs[i].describe()),
            _ => {}
        }
        *cached = Some((Instant::now(), problem.clone()));
        problem
    }

    /// Whether route `i` should be tried now.
    fn usable(&self, i: usize) -> bool {
        match &self.legs[i] {
            Leg::Pickup(p) => self.pickup_problem(i, p, false).is_none(),
            leg => {
                if let Leg::Api(a) = leg
                    && a.holding().is_some()
                {
                    return false;
                }
                let mut down = self.down.lock().expect("down lock");
                match &mut down[i] {
                    None => true,
                    Some(d) if Instant::now() >= d.retry_at => {
                        // one try, then the pause again unless it works
                        d.retry_at = Instant::now() + pause(d.failures);
                        true
                    }
                    Some(_) => false,
                }
            }
        }
    }

    /// Route `i` failed as a route: skip it for a while (logged once when it goes down).
    fn failed(&self, i: usize, claim: &Claim, e: &DeliverError) {
        if let Leg::Pickup(p) = &self.legs[i] {
            warn!(
                "{}: pickup failed ({e}); trying the next route",
                claim.rel.display()
            );
            self.pickup_problem(i, p, true);
            return;
        }
        let mut down = self.down.lock().expect("down lock");
        let failures = down[i].as_ref().map_or(0, |d| d.failures) + 1;
        if failures == 1 && i + 1 < self.legs.len() {
            warn!("route: {} because {e}", self.after(i));
        }
        let wait = pause(failures).max(e.retry_after().unwrap_or_default());
        down[i] = Some(Down {
            retry_at: Instant::now() + wait,
            failures,
        });
    }

    /// Route `i` delivered: it is up again.
    fn worked(&self, i: usize) {
        *self.current.lock().expect("current lock") = self.legs[i].name();
        if matches!(self.legs[i], Leg::Pickup(_)) {
            return;
        }
        let mut down = self.down.lock().expect("down lock");
        if down[i].take().is_some() && self.legs.len() > 1 {
            info!("route: back to {}", self.legs[i].describe());
        }
    }

    /// The first route to try now: the first usable one, else the last.
    fn first_choice(&self) -> usize {
        (0..self.legs.len())
            .find(|&i| self.usable(i))
            .unwrap_or(self.legs.len() - 1)
    }

    /// Tries routes `start..` in order for one claim; `prior` is the failure of an earlier route.
    fn deliver_from(
        &self,
        start: usize,
        claim: &Claim,
        copies: &[Sealed],
        prior: Option<DeliverError>,
    ) -> Result<Delivered, DeliverError> {
        let n = self.legs.len();
        let mut last_error = prior;
        for i in start..n {
            let tried_one = last_error.is_some();
            // the first choice was judged usable already; the last is tried when nothing else was
            if i != start && !self.usable(i) && (tried_one || i + 1 < n) {
                continue;
            }
            let left = progress::unsent(claim, copies);
            let result = self.legs[i]
                .transport()
                .deliver(claim, left.as_deref().unwrap_or(copies));
            match result {
                Ok(d) => {
                    self.worked(i);
                    return Ok(d);
                }
                // committed to pickup already: recovery publishes it, another route would send it twice
                Err(e) if claim.committed_path().exists() => return Err(e),
                Err(e) if !e.is_transient() || !e.is_route_problem() => return Err(e),
                Err(e) => {
                    self.failed(i, claim, &e);
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.expect("at least the last route was tried"))
    }
}

/// The pause after `failures` failures in a row: 1 s doubling, at most `MAX_PAUSE`.
fn pause(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(MAX_PAUSE)
}

impl Transport for Fallback {
    fn route_now(&self) -> &'static str {
        *self.current.lock().expect("current lock")
    }

    fn deliver(&self, claim: &Claim, copies: &[Sealed]) -> Result<Delivered, DeliverError> {
        let first = self.first_choice();
        self.deliver_from(first, claim, copies, None)
    }

    fn deliver_batch(&self, items: &[(&Claim, &[Sealed])], done: &mut Done<'_>) {
        let first = self.first_choice();
        let Leg::Pickup(pickup) = &self.legs[first] else {
            // one by one, each finished as soon as it is sent
            for (i, (claim, copies)) in items.iter().enumerate() {
                done(i, self.deliver_from(first, claim, copies, None));
            }
            return;
        };
        // pickup makes the batch durable together; copies a network route already handed over
        // (before a switch back) must not go again through pickup
        let unsent: Vec<Option<Vec<Sealed>>> = items
            .iter()
            .map(|(claim, copies)| progress::unsent(claim, copies))
            .collect();
        let filtered: Vec<(&Claim, &[Sealed])> = items
            .iter()
            .zip(&unsent)
            .map(|((claim, copies), u)| (*claim, u.as_deref().unwrap_or(copies)))
            .collect();
        let mut results = Vec::with_capacity(items.len());
        pickup.deliver_batch(&filtered, &mut |_, r| results.push(r));
        if results.iter().any(Result::is_ok) {
            self.worked(first);
        }
        let mut recheck = true;
        // the ones pickup could not take go on down the list, each finished as soon as it is sent
        for (i, (r, (claim, copies))) in results.into_iter().zip(items).enumerate() {
            let result = match r {
                // committed to pickup already: recovery publishes it, another route would send it twice
                Err(e) if claim.committed_path().exists() => Err(e),
                Err(e) if e.is_route_problem() => {
                    if std::mem::take(&mut recheck) {
                        self.failed(first, claim, &e);
                    }
                    self.deliver_from(first + 1, claim, copies, Some(e))
                }
                other => other,
            };
            done(i, result);
        }
    }

    fn idle(&self) {
        self.legs.iter().for_each(|leg| leg.transport().idle());
    }

    fn close(&self) {
        self.legs.iter().for_each(|leg| leg.transport().close());
    }

    fn recover(&self, claim: &Claim) -> Result<Option<Delivered>, DeliverError> {
        // a committed pickup delivery is finished through pickup; an uncommitted one leaves only staged
        // leftovers, which pickup's recovery removes (SMTP and the API need no recovery step)
        for leg in &self.legs {
            if let Leg::Pickup(p) = leg {
                return p.recover(claim);
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Envelope;
    use crate::seal::Protection;

    fn claim(tmp: &tempfile::TempDir) -> Claim {
        Claim {
            path: tmp.path().join("i1-1,m.eml"),
            id: "i1-1".into(),
            rel: "m.eml".into(),
            fresh: false,
        }
    }

    fn copy_to(recipients: Vec<String>) -> Sealed {
        Sealed {
            envelope: Envelope {
                sender: "s@x".into(),
                recipients,
                ..Envelope::default()
            },
            data: Vec::new(),
            protection: Protection::Signed,
            message_id: "id".into(),
        }
    }

    #[test]
    fn copies_smtp_already_sent_are_not_delivered_again() {
        let tmp = tempfile::tempdir().unwrap();
        let claim = claim(&tmp);
        let copy = |r: &str| copy_to(vec![r.into()]);
        let copies = [copy("a@y"), copy("b@y"), copy("c@y")];
        assert!(
            progress::unsent(&claim, &copies).is_none(),
            "nothing sent: all go"
        );
        std::fs::write(super::super::smtp::progress_path(&claim), "a@y\nc@y\n").unwrap();
        let left = progress::unsent(&claim, &copies).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].envelope.recipients, ["b@y"]);
    }

    #[test]
    fn copies_the_api_or_smtp_took_are_skipped_by_every_route() {
        let tmp = tempfile::tempdir().unwrap();
        let claim = claim(&tmp);
        let copies = [
            copy_to(vec!["A@y".into(), "b@y".into()]),
            copy_to(vec!["c@y".into()]),
            copy_to(vec!["d@y".into()]),
        ];
        progress::record_api(&claim, &copies[0].envelope.recipients).unwrap();
        std::fs::write(super::super::smtp::progress_path(&claim), "d@y\n").unwrap();
        let left = progress::unsent(&claim, &copies).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].envelope.recipients, ["c@y"]);
    }

    #[test]
    fn a_copy_sent_in_part_goes_on_with_the_recipients_left() {
        let tmp = tempfile::tempdir().unwrap();
        let claim = claim(&tmp);
        let recipients: Vec<String> = (0..250).map(|i| format!("r{i}@y")).collect();
        let copy = copy_to(recipients.clone());
        let chunks: Vec<&[String]> = super::super::smtp::transactions(&copy).collect();
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        // the middle transaction went out before a crash
        let record = format!("{}\n", super::super::smtp::transaction_key(chunks[1]));
        std::fs::write(super::super::smtp::progress_path(&claim), record).unwrap();
        let left = progress::unsent(&claim, std::slice::from_ref(&copy)).unwrap();
        assert_eq!(left.len(), 1);
        let want: Vec<String> = recipients[..100]
            .iter()
            .chain(&recipients[200..])
            .cloned()
            .collect();
        assert_eq!(left[0].envelope.recipients, want);
    }

    #[test]
    fn a_failed_network_route_pauses_doubling_up_to_a_minute() {
        let got: Vec<u64> = (1..=9).map(|f| pause(f).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
