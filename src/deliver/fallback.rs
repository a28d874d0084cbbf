//! `route = "pickup-then-smtp"`: the pickup directory while it is healthy, SMTP while it is not.
//! Health is checked before each delivery, at most once a second (it lists the pickup folder); each
//! switch is logged once with its cause, not once per message.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::pickup::Pickup;
use super::smtp::SmtpRoute;
use super::{DeliverError, Delivered, Done, Transport};
use crate::seal::Sealed;
use crate::spool::claim::Claim;

pub struct Fallback {
    pub pickup: Pickup,
    pub smtp: SmtpRoute,
    pub min_free: u64,
    pub max_backlog: usize,
    /// when last checked, and why pickup was unhealthy then (None: healthy)
    health: Mutex<Option<(Instant, Option<String>)>>,
}

/// Which route a delivery takes, given the pickup route's health.
pub fn choose(pickup_problem: Option<&str>) -> &'static str {
    if pickup_problem.is_none() {
        "pickup"
    } else {
        "smtp"
    }
}

impl Fallback {
    pub fn new(pickup: Pickup, smtp: SmtpRoute, min_free: u64, max_backlog: usize) -> Fallback {
        Fallback {
            pickup,
            smtp,
            min_free,
            max_backlog,
            health: Mutex::new(None),
        }
    }

    /// The pickup route's problem, if any, re-checked at most once a second; logs changes.
    fn pickup_problem(&self, force: bool) -> Option<String> {
        let mut cached = self.health.lock().expect("health lock");
        if let Some((at, problem)) = &*cached
            && !force
            && at.elapsed() < Duration::from_secs(1)
        {
            return problem.clone();
        }
        let problem = self.pickup.health(self.min_free, self.max_backlog).err();
        let before = cached.as_ref().map(|(_, p)| p.clone());
        match (&before, &problem) {
            (Some(None) | None, Some(why)) => {
                warn!("route: SMTP to {} because {why}", self.smtp.server())
            }
            (Some(Some(_)), None) => info!(
                "route: back to the pickup directory {}",
                self.pickup.dir.display()
            ),
            _ => {}
        }
        *cached = Some((Instant::now(), problem.clone()));
        problem
    }
}

/// What of `claim`'s copies SMTP has not sent yet, when it sent some (`None`: nothing was sent):
/// copies without the recipients already served, and without the copies fully served.
fn unsent(claim: &Claim, copies: &[Sealed]) -> Option<Vec<Sealed>> {
    let sent = super::smtp::sent_transactions(claim);
    (!sent.is_empty()).then(|| {
        copies
            .iter()
            .filter_map(|c| {
                let recipients = super::smtp::unsent_recipients(c, &sent);
                (!recipients.is_empty()).then(|| {
                    let mut left = c.clone();
                    left.envelope.recipients = recipients;
                    left
                })
            })
            .collect()
    })
}

impl Transport for Fallback {
    fn route_now(&self) -> &'static str {
        let cached = self.health.lock().expect("health lock");
        match &*cached {
            Some((_, Some(_))) => "smtp",
            _ => "pickup",
        }
    }

    fn deliver(&self, claim: &Claim, copies: &[Sealed]) -> Result<Delivered, DeliverError> {
        if choose(self.pickup_problem(false).as_deref()) == "pickup" {
            let unsent = unsent(claim, copies);
            match self
                .pickup
                .deliver(claim, unsent.as_deref().unwrap_or(copies))
            {
                Ok(d) => return Ok(d),
                // committed to pickup already: recovery publishes it, SMTP would send it twice
                Err(e) if claim.committed_path().exists() => return Err(e),
                // it broke between the check and the write: re-check now and use SMTP
                Err(e) => warn!("{}: pickup failed ({e}); trying SMTP", claim.rel.display()),
            }
            self.pickup_problem(true);
        }
        self.smtp.deliver(claim, copies)
    }

    fn deliver_batch(&self, items: &[(&Claim, &[Sealed])], done: &mut Done<'_>) {
        if choose(self.pickup_problem(false).as_deref()) == "pickup" {
            // copies SMTP already took (before a switch back) must not go again through pickup
            let unsent: Vec<Option<Vec<Sealed>>> = items
                .iter()
                .map(|(claim, copies)| unsent(claim, copies))
                .collect();
            let filtered: Vec<(&Claim, &[Sealed])> = items
                .iter()
                .zip(&unsent)
                .map(|((claim, copies), u)| (*claim, u.as_deref().unwrap_or(copies)))
                .collect();
            let mut results = Vec::with_capacity(items.len());
            self.pickup
                .deliver_batch(&filtered, &mut |_, r| results.push(r));
            if results.iter().any(Result::is_err) {
                self.pickup_problem(true);
            }
            // the ones pickup could not take go by SMTP, each finished as soon as it is sent
            for (i, (r, (claim, copies))) in results.into_iter().zip(items).enumerate() {
                let result = match r {
                    // committed to pickup already: recovery publishes it, SMTP would send it twice
                    Err(e) if claim.committed_path().exists() => Err(e),
                    Err(_) => self.smtp.deliver(claim, copies),
                    ok => ok,
                };
                done(i, result);
            }
            return;
        }
        for (i, (claim, copies)) in items.iter().enumerate() {
            done(i, self.smtp.deliver(claim, copies));
        }
    }

    fn recover(&self, claim: &Claim) -> Result<Option<Delivered>, DeliverError> {
        // a committed pickup delivery is finished through pickup; an uncommitted one leaves only staged
        // leftovers, which pickup's recovery removes (SMTP itself needs no recovery step)
        self.pickup.recover(claim)
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
        assert!(unsent(&claim, &copies).is_none(), "nothing sent: all go");
        std::fs::write(super::super::smtp::progress_path(&claim), "a@y\nc@y\n").unwrap();
        let left = unsent(&claim, &copies).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].envelope.recipients, ["b@y"]);
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
        let left = unsent(&claim, std::slice::from_ref(&copy)).unwrap();
        assert_eq!(left.len(), 1);
        let want: Vec<String> = recipients[..100]
            .iter()
            .chain(&recipients[200..])
            .cloned()
            .collect();
        assert_eq!(left[0].envelope.recipients, want);
    }

    #[test]
    fn the_route_follows_pickup_health() {
        assert_eq!(super::choose(None), "pickup");
        assert_eq!(super::choose(Some("missing")), "smtp");
    }
}
