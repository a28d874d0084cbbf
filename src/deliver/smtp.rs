//! SMTP injection with lettre's synchronous client: one reused connection per worker (a small pool),
//! the envelope pipelined where the server offers PIPELINING, STARTTLS with verified certificates,
//! AUTH only over TLS, and per-recipient replies so a partial rejection delivers to the accepted
//! recipients and reports the others.
//!
//! A copy goes out in transactions of at most `RECIPIENTS_PER_TRANSACTION` recipients.
//!
//! Crash safety is at-least-once with the smallest window we can have. For a message that takes
//! several transactions (Bcc copies, or a copy to many), after the server's 250 to the end of DATA
//! the transaction's recipients are appended (and fsynced) to `<claim>#smtp-sent` before anything
//! else, and a retry or a restart skips the transactions listed there. A single transaction is
//! finished (its claim removed) right after its 250. Either way only a crash in the moment between
//! the 250 and that local write sends a copy twice.

use std::time::Instant;

mod record;
mod session;
mod transaction;

pub use record::{
    PROGRESS_SUFFIX, RECIPIENTS_PER_TRANSACTION, progress_path, sent_transactions, transaction_key,
    transactions, unsent_recipients,
};
pub use session::{Connection, SmtpError, SmtpRoute};
pub use transaction::Outcome;

use record::record_sent;
use transaction::transact;

use super::{DeliverError, Delivered, Transport};
use crate::seal::Sealed;
use crate::spool::claim::Claim;

impl SmtpRoute {
    /// A pooled connection, or a new one.
    fn take(&self) -> Result<Connection, SmtpError> {
        let pooled = self.pool.lock().expect("pool lock").pop();
        match pooled {
            Some(c) => Ok(c),
            None => self.open_tracked(),
        }
    }

    fn give_back(&self, mut c: Connection) {
        if c.dead {
            return;
        }
        if c.sent >= self.settings.max_messages_per_connection || c.conn.has_broken() {
            let _ = c.conn.quit();
            return;
        }
        self.pool.lock().expect("pool lock").push(c);
    }
}

impl SmtpRoute {
    /// One transaction on a pooled connection; a connection that fails is dropped, and a stale pooled
    /// one (closed by the server while idle) is replaced once before giving up.
    pub fn send(
        &self,
        sender: &str,
        recipients: &[String],
        data: &[u8],
    ) -> Result<Outcome, SmtpError> {
        let mut fresh = false;
        loop {
            let mut c = if fresh {
                self.open_tracked()?
            } else {
                self.take()?
            };
            let was_pooled = c.sent > 0;
            match transact(&mut c, &self.server(), sender, recipients, data) {
                Ok(outcome) => {
                    c.sent += 1;
                    self.give_back(c);
                    return Ok(outcome);
                }
                Err(e)
                    if was_pooled
                        && !fresh
                        && !e.is_permanent()
                        && matches!(
                            e,
                            SmtpError::Reply {
                                stage: "MAIL FROM",
                                ..
                            } | SmtpError::Timeout {
                                stage: "MAIL FROM",
                                ..
                            }
                        ) =>
                {
                    if !c.dead {
                        c.conn.abort();
                    }
                    fresh = true;
                }
                Err(e) => {
                    if !c.dead {
                        c.conn.abort();
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Sends on a caller-held connection (the `send` command), timing the transaction.
    pub fn send_on(
        &self,
        c: &mut Connection,
        sender: &str,
        recipients: &[String],
        data: &[u8],
    ) -> Result<(Outcome, std::time::Duration), SmtpError> {
        if c.dead {
            *c = self.open_tracked()?;
        }
        let started = Instant::now();
        let outcome = transact(c, &self.server(), sender, recipients, data)?;
        c.sent += 1;
        Ok((outcome, started.elapsed()))
    }
}

impl Transport for SmtpRoute {
    fn route_now(&self) -> &'static str {
        "smtp"
    }

    fn deliver(&self, claim: &Claim, copies: &[Sealed]) -> Result<Delivered, DeliverError> {
        let done = sent_transactions(claim);
        let mut delivered = Delivered {
            route: "smtp",
            units: 0,
            names: Vec::new(),
            rejected: Vec::new(),
            input_gone: false,
        };
        let all: Vec<(&Sealed, &[String])> = copies
            .iter()
            .flat_map(|c| transactions(c).map(move |r| (c, r)))
            .collect();
        for &(copy, recipients) in &all {
            let key = transaction_key(recipients);
            if done.contains(&key) {
                continue;
            }
            let outcome = self
                .send(&copy.envelope.sender, recipients, &copy.data)
                .map_err(|e| DeliverError::Smtp(Box::new(e)))?;
            // a single transaction needs no record: the claim is finished right after it
            if all.len() > 1
                && let Err(e) = record_sent(claim, &key)
            {
                // the server has it: failing now would send it again on every retry
                log::error!(
                    "{}: sent, but not recorded ({e}); a retry would send these recipients a copy again",
                    claim.rel.display()
                );
            }
            delivered.units += usize::from(!outcome.accepted.is_empty());
            delivered.rejected.extend(outcome.rejected);
        }
        if delivered.units == 0 && !delivered.rejected.is_empty() && done.is_empty() {
            return Err(DeliverError::Rejected(delivered.rejected));
        }
        Ok(delivered)
    }

    fn recover(&self, _claim: &Claim) -> Result<Option<Delivered>, DeliverError> {
        // the progress file makes a fresh delivery skip what was sent: nothing to finish here
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
