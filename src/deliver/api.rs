//! `route = "api"`: the HTTP Transmissions API of PowerMTA 5, Momentum 4 and SparkPost
//! (`../shared/API-FORMAT.md` has the contract). One transmission per sealed copy, to that copy's
//! recipients (each Bcc copy is its own), on connections kept alive by one agent per worker.
//!
//! Crash safety is the SMTP route's: for a message that takes several transmissions, each one the
//! server accepted is recorded in `<claim>#api-sent` (fsynced) before the next goes out, and every
//! later attempt, on this route or another, skips what is recorded there. A single transmission is
//! finished (its claim removed) right after the server's 200. Only a crash between that 200 and the
//! local write sends a copy twice.
//!
//! The route's health: anything that is not the message's own refusal (see `client`) is logged
//! once when it starts (`API route unhealthy: …`) and once when it ends (`… works again`). After
//! such a failure no request goes out for a second, or for as long as `Retry-After` said: messages
//! are deferred meanwhile without a request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub mod client;

pub use client::{Accepted, ApiError, Client};

use super::{DeliverError, Delivered, Transport, progress};
use crate::seal::Sealed;
use crate::spool::claim::Claim;

pub struct ApiRoute {
    pub client: Client,
    /// the route's problem now (None: the last request worked), to log each change once
    problem: Mutex<Option<String>>,
    /// no request before this instant, and why
    hold: Mutex<Option<(Instant, String)>>,
}

/// How long the route waits after one of its failures when the server named no time.
const HOLD: Duration = Duration::from_secs(1);

impl ApiRoute {
    pub fn new(settings: crate::config::Api) -> Result<ApiRoute, String> {
        Ok(ApiRoute {
            client: Client::new(settings)?,
            problem: Mutex::new(None),
            hold: Mutex::new(None),
        })
    }

    pub fn url(&self) -> &str {
        &self.client.settings.url
    }

    /// The route's problem now (None: healthy as far as we know).
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().expect("problem lock").clone()
    }

    /// How long requests are still held back, and why.
    pub fn holding(&self) -> Option<(Duration, String)> {
        let hold = self.hold.lock().expect("hold lock");
        let (until, why) = hold.as_ref()?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| (left, why.clone()))
    }

    /// One transmission of `copy` to `recipients`, unless the route holds back for now.
    pub fn send(&self, copy: &Sealed, recipients: &[String]) -> Result<Accepted, ApiError> {
        if let Some((wait, why)) = self.holding() {
            return Err(ApiError::Holding {
                url: self.url().to_string(),
                wait,
                why,
            });
        }
        self.send_now(copy, recipients)
    }

    /// One transmission, whatever the hold (the `send` and `check` commands).
    pub fn send_now(&self, copy: &Sealed, recipients: &[String]) -> Result<Accepted, ApiError> {
        let body = client::transmission(copy, recipients, self.client.settings.flavor)?;
        let result = self.client.post(&body);
        crate::buffers::give(body);
        self.track(&result);
        result
    }

    /// Remembers the route's health from one reply, logging each change once, and holds requests
    /// back after a failure of the route.
    fn track(&self, result: &Result<Accepted, ApiError>) {
        let now = match result {
            Ok(_) => None,
            Err(e) if e.is_route_problem() => Some(e.to_string()),
            // the message's own refusal says nothing about the route
            Err(_) => return,
        };
        if let Some((why, e)) = now.as_ref().zip(result.as_ref().err()) {
            let wait = e.retry_after().unwrap_or(HOLD).max(HOLD);
            *self.hold.lock().expect("hold lock") = Some((Instant::now() + wait, why.clone()));
        }
        let mut problem = self.problem.lock().expect("problem lock");
        match (&*problem, &now) {
            (None, Some(why)) => log::warn!("API route unhealthy: {why}"),
            (Some(before), Some(why)) if before != why => {
                log::warn!("API route still unhealthy: {why}")
            }
            (Some(_), None) => log::info!("API route to {} works again", self.url()),
            _ => {}
        }
        *problem = now;
    }
}

impl Transport for ApiRoute {
    fn route_now(&self) -> &'static str {
        "api"
    }

    fn deliver(&self, claim: &Claim, copies: &[Sealed]) -> Result<Delivered, DeliverError> {
        let sent = progress::sent_recipients(claim);
        let todo: Vec<(&Sealed, Vec<String>)> = copies
            .iter()
            .map(|c| (c, progress::left_of(c, &sent)))
            .filter(|(_, left)| !left.is_empty())
            .collect();
        let mut delivered = Delivered {
            names: Vec::new(),
            route: "api",
            units: 0,
            rejected: Vec::new(),
            input_gone: false,
        };
        for (copy, recipients) in &todo {
            let reply = self
                .send(copy, recipients)
                .map_err(|e| DeliverError::Api(Box::new(e)))?;
            // a single transmission needs no record: the claim is finished right after it
            if todo.len() > 1
                && let Err(e) = progress::record_api(claim, recipients)
            {
                // the server has it: failing now would send it again on every retry
                log::error!(
                    "{}: sent, but not recorded ({}: {e}); a retry would send these recipients a copy again",
                    claim.rel.display(),
                    progress::api_path(claim).display()
                );
            }
            match refused(&reply, recipients) {
                None => delivered.units += 1,
                Some((all, list)) => {
                    delivered.units += usize::from(!all);
                    delivered.rejected.extend(list);
                }
            }
        }
        if delivered.units == 0 && !delivered.rejected.is_empty() && sent.is_empty() {
            return Err(DeliverError::Rejected(delivered.rejected));
        }
        Ok(delivered)
    }

    fn recover(&self, _claim: &Claim) -> Result<Option<Delivered>, DeliverError> {
        // the progress record makes a fresh delivery skip what was sent: nothing to finish here
        Ok(None)
    }
}

/// The recipients a 200 refused, with the server's words: (all of them refused, the list). The API
/// gives only counts, so when some of several were refused all of them are named.
fn refused(reply: &Accepted, recipients: &[String]) -> Option<(bool, Vec<(String, String)>)> {
    if reply.rejected == 0 {
        return None;
    }
    let all = reply.accepted == 0;
    let why = if all {
        format!(
            "refused by the API server (200, total_rejected_recipients = {})",
            reply.rejected
        )
    } else {
        format!(
            "{} of {} recipients refused by the API server, which does not say which (200)",
            reply.rejected,
            reply.rejected + reply.accepted
        )
    };
    Some((
        all,
        recipients
            .iter()
            .map(|r| (r.clone(), why.clone()))
            .collect(),
    ))
}
