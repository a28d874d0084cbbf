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

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use lettre::Address;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};

mod session;

pub use session::{Connection, SmtpError, SmtpRoute};

use super::{DeliverError, Delivered, Transport};
use crate::seal::Sealed;
use crate::spool::claim::Claim;

/// What the server did with one transaction.
#[derive(Debug, Default)]
pub struct Outcome {
    pub accepted: Vec<String>,
    /// (recipient, the server's reply)
    pub rejected: Vec<(String, String)>,
}

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

fn parse_address(a: &str) -> Result<Address, SmtpError> {
    a.parse().map_err(|_| SmtpError::Address(a.to_string()))
}

/// A reply of the server (4xx or 5xx), not a connection that failed.
fn is_reply(e: &lettre::transport::smtp::Error) -> bool {
    e.is_transient() || e.is_permanent()
}

/// MAIL FROM's address: none for the null sender (bounces).
fn mail_from(sender: &str) -> Result<Option<Address>, SmtpError> {
    if sender.is_empty() {
        Ok(None)
    } else {
        parse_address(sender).map(Some)
    }
}

fn refused(tx: &Tx, stage: &'static str, source: lettre::transport::smtp::Error) -> SmtpError {
    session::step_failed(tx.server, stage, source, tx.timeout)
}

/// MAIL FROM, RCPT TO each recipient (collecting permanent refusals), DATA: pipelined when the
/// server offers it, else one command at a time.
fn transact(
    c: &mut Connection,
    server: &str,
    sender: &str,
    recipients: &[String],
    data: &[u8],
) -> Result<Outcome, SmtpError> {
    let tx = Tx {
        server,
        timeout: c.timeout,
        sender,
        recipients,
        data,
    };
    if c.pipelining {
        transact_pipelined(c, &tx)
    } else {
        transact_stepwise(c, &tx)
    }
}

/// One transaction: with whom, from whom, to whom, what.
struct Tx<'a> {
    server: &'a str,
    /// how long each reply may take
    timeout: std::time::Duration,
    sender: &'a str,
    recipients: &'a [String],
    data: &'a [u8],
}

fn transact_stepwise(c: &mut Connection, tx: &Tx) -> Result<Outcome, SmtpError> {
    let reply = |stage| move |source| refused(tx, stage, source);
    c.conn
        .command(Mail::new(mail_from(tx.sender)?, vec![]))
        .map_err(reply("MAIL FROM"))?;
    let mut outcome = Outcome::default();
    for r in tx.recipients {
        let addr = match parse_address(r) {
            Ok(a) => a,
            Err(e) => {
                outcome.rejected.push((r.clone(), e.to_string()));
                continue;
            }
        };
        match c.conn.command(Rcpt::new(addr, vec![])) {
            Ok(_) => outcome.accepted.push(r.clone()),
            Err(e) if e.is_permanent() => outcome.rejected.push((r.clone(), e.to_string())),
            Err(e) => {
                // a temporary refusal: nothing is sent, the whole transaction is retried later
                let _ = c.conn.command(Rset);
                return Err(reply("RCPT TO")(e));
            }
        }
    }
    if outcome.accepted.is_empty() {
        let _ = c.conn.command(Rset);
        return Ok(outcome);
    }
    c.conn.command(Data).map_err(reply("DATA"))?;
    c.conn.message(tx.data).map_err(reply("end of DATA"))?;
    Ok(outcome)
}

/// RFC 2920: MAIL, every RCPT and DATA in one write, then their replies read in order; the message
/// follows only if DATA was answered 354 and no recipient was refused for now.
fn transact_pipelined(c: &mut Connection, tx: &Tx) -> Result<Outcome, SmtpError> {
    let reply = |stage, source| refused(tx, stage, source);
    let mut outcome = Outcome::default();
    let mut envelope = Mail::new(mail_from(tx.sender)?, vec![]).to_string();
    let mut asked = Vec::new();
    for r in tx.recipients {
        match parse_address(r) {
            Ok(a) => {
                envelope.push_str(&Rcpt::new(a, vec![]).to_string());
                asked.push(r);
            }
            Err(e) => outcome.rejected.push((r.clone(), e.to_string())),
        }
    }
    if asked.is_empty() {
        return Ok(outcome);
    }
    envelope.push_str(&Data.to_string());
    // `command` writes it all and reads the first reply (MAIL's). An error that is no reply (a
    // timeout, a dropped connection) ends the transaction at once: waiting for the other replies
    // would cost a timeout each. MAIL's stage lets `send` retry a stale pooled connection.
    let lost = |c: &mut Connection, stage, e| {
        c.dead = true;
        Err(reply(stage, e))
    };
    let mail = c.conn.command(envelope);
    if let Err(e) = &mail
        && !is_reply(e)
    {
        return lost(c, "MAIL FROM", mail.expect_err("checked"));
    }
    let mut temporary = None;
    for r in asked {
        match c.conn.read_response() {
            Ok(_) => outcome.accepted.push(r.clone()),
            Err(e) if !is_reply(&e) => return lost(c, "RCPT TO", e),
            Err(_) if mail.is_err() => {}
            Err(e) if e.is_permanent() => outcome.rejected.push((r.clone(), e.to_string())),
            Err(e) => {
                temporary.get_or_insert(reply("RCPT TO", e));
            }
        }
    }
    let go_ahead = c.conn.read_response();
    if let Err(e) = &go_ahead
        && !is_reply(e)
    {
        return lost(c, "DATA", go_ahead.expect_err("checked"));
    }
    if let Err(e) = mail {
        if go_ahead.is_ok() {
            c.dead = true;
        }
        return Err(reply("MAIL FROM", e));
    }
    match go_ahead {
        Ok(_) if temporary.is_none() && !outcome.accepted.is_empty() => {
            c.conn
                .message(tx.data)
                .map_err(|e| reply("end of DATA", e))?;
            Ok(outcome)
        }
        Ok(_) => {
            // 354 while we must not send: closing the connection abandons the transaction
            c.dead = true;
            match temporary {
                Some(e) => Err(e),
                None => Ok(outcome),
            }
        }
        Err(_) if temporary.is_some() => Err(temporary.expect("checked")),
        Err(_) if outcome.accepted.is_empty() => {
            // every recipient refused: end the open transaction, the connection stays usable
            let _ = c.conn.command(Rset);
            Ok(outcome)
        }
        Err(e) => Err(reply("DATA", e)),
    }
}

/// Where the transactions already accepted by the server are recorded (one `transaction_key`, its
/// recipients, a line).
pub fn progress_path(claim: &Claim) -> PathBuf {
    let mut p = claim.path.as_os_str().to_owned();
    p.push(PROGRESS_SUFFIX);
    PathBuf::from(p)
}

/// Names a claim's SMTP progress record (defined where claims are named: `spool::claim`).
pub const PROGRESS_SUFFIX: &str = crate::spool::claim::SMTP_SENT;

/// Recipients per SMTP transaction: every server must take this many (RFC 5321, 4.5.3.1.8), and
/// one that takes fewer answers the rest 452, which would only be retried. A copy with more
/// recipients goes out in several transactions.
pub const RECIPIENTS_PER_TRANSACTION: usize = 100;

/// The transactions one copy takes: its recipients, a hundred at a time.
pub fn transactions(copy: &Sealed) -> std::slice::Chunks<'_, String> {
    copy.envelope.recipients.chunks(RECIPIENTS_PER_TRANSACTION)
}

/// What identifies a transaction across attempts: its recipients (copy order can change when
/// certificates expire or are reloaded between attempts; a recipient cannot be sent a copy twice).
pub fn transaction_key(recipients: &[String]) -> String {
    recipients.join(",").to_ascii_lowercase()
}

/// The recipients of `copy` whose transaction is not in `sent` (all of them, or none, or some).
pub fn unsent_recipients(copy: &Sealed, sent: &HashSet<String>) -> Vec<String> {
    transactions(copy)
        .filter(|r| !sent.contains(&transaction_key(r)))
        .flatten()
        .cloned()
        .collect()
}

/// Transactions already sent for `claim` (by an earlier attempt or before a crash), by
/// `transaction_key`.
pub fn sent_transactions(claim: &Claim) -> HashSet<String> {
    std::fs::read_to_string(progress_path(claim))
        .map(|t| {
            t.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn record_sent(claim: &Claim, key: &str) -> Result<(), SmtpError> {
    let path = progress_path(claim);
    let io = |source| SmtpError::Progress {
        path: path.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    f.write_all(format!("{key}\n").as_bytes()).map_err(io)?;
    f.sync_data().map_err(io)
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
mod tests {
    //! The pipelined transaction against a scripted server on loopback: it checks that the envelope
    //! arrives in one go and that a transaction we must not finish is abandoned, not completed.
    //! Real servers (Postfix, smtp-sink with and without PIPELINING) are in `tests/smtp.rs`.
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// What the scripted server saw of one transaction.
    #[derive(Debug)]
    struct Seen {
        /// the envelope commands had all arrived before the first reply was sent
        pipelined: bool,
        /// the message ended with "\r\n.\r\n" (it was sent, not abandoned)
        completed: bool,
    }

    /// A server that offers PIPELINING, waits for MAIL … DATA without answering, then answers each
    /// RCPT from `rcpt` in turn and DATA with 354 (or 554 when none was accepted).
    fn server(rcpt: &'static [&'static str]) -> (u16, std::thread::JoinHandle<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut w, mut r) = accept_and_greet(&listener);
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with("MAIL FROM"), "{line}");
            // everything up to DATA must already be on its way: the client waits for no reply
            let pipelined = r.buffer().ends_with(b"DATA\r\n");
            let mut replies = String::from("250 2.1.0 ok\r\n");
            for reply in rcpt {
                line.clear();
                r.read_line(&mut line).unwrap();
                assert!(line.starts_with("RCPT TO"), "{line}");
                replies.push_str(reply);
                replies.push_str("\r\n");
            }
            line.clear();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, "DATA\r\n");
            let any = rcpt.iter().any(|r| r.starts_with('2'));
            replies.push_str(if any {
                "354 go ahead\r\n"
            } else {
                "554 no valid recipients\r\n"
            });
            w.write_all(replies.as_bytes()).unwrap();
            let mut rest = Vec::new();
            if any {
                // until the client ends the message or closes the connection
                let mut buf = [0u8; 65536];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    rest.extend_from_slice(&buf[..n]);
                    if rest.ends_with(b"\r\n.\r\n") {
                        w.write_all(b"250 2.0.0 queued\r\n").unwrap();
                        break;
                    }
                }
            }
            Seen {
                pipelined,
                completed: rest.ends_with(b"\r\n.\r\n"),
            }
        });
        (port, handle)
    }

    /// Accepts one connection, greets, and answers both EHLOs offering PIPELINING.
    fn accept_and_greet(listener: &TcpListener) -> (TcpStream, BufReader<TcpStream>) {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        w.write_all(b"220 scripted ESMTP\r\n").unwrap();
        for _ in 0..2 {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with("EHLO"), "{line}");
            w.write_all(b"250-scripted\r\n250 PIPELINING\r\n").unwrap();
        }
        (w, r)
    }

    fn route_with_timeout(port: u16, seconds: u64) -> SmtpRoute {
        let config = crate::config::Config::from_toml(
            &format!(
                "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout = {seconds}\n"
            ),
            None,
        )
        .unwrap();
        SmtpRoute::new(config.smtp).unwrap()
    }

    fn route(port: u16) -> SmtpRoute {
        route_with_timeout(port, 5)
    }

    fn rcpts(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("r{i}@example.com")).collect()
    }

    #[test]
    fn the_envelope_is_pipelined_and_a_partial_refusal_delivers_to_the_rest() {
        let (port, server) = server(&["250 2.1.5 ok", "550 5.1.1 no such user"]);
        let out = route(port)
            .send("s@example.com", &rcpts(2), b"Subject: x\r\n\r\nhi\r\n")
            .unwrap();
        assert_eq!(out.accepted, ["r1@example.com"]);
        assert_eq!(out.rejected.len(), 1);
        assert!(out.rejected[0].1.contains("no such user"), "{out:?}");
        let seen = server.join().unwrap();
        assert!(seen.pipelined && seen.completed, "{seen:?}");
    }

    #[test]
    fn a_temporary_refusal_after_354_abandons_the_message() {
        let (port, server) = server(&["250 2.1.5 ok", "450 4.2.0 try later"]);
        let err = route(port)
            .send("s@example.com", &rcpts(2), b"Subject: x\r\n\r\nhi\r\n")
            .unwrap_err();
        assert!(!err.is_permanent(), "{err}");
        assert!(err.to_string().contains("try later"), "{err}");
        let seen = server.join().unwrap();
        assert!(
            seen.pipelined && !seen.completed,
            "nothing delivered: {seen:?}"
        );
    }

    #[test]
    fn a_server_gone_silent_costs_one_timeout_not_one_per_reply() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (_w, mut r) = accept_and_greet(&listener);
            let mut line = String::new();
            // reads the envelope, then answers nothing while the client waits
            r.read_line(&mut line).unwrap();
            std::thread::sleep(Duration::from_secs(4));
        });
        let route = route_with_timeout(port, 1);
        let mut c = route.open().unwrap();
        let started = std::time::Instant::now();
        let err = route
            .send_on(
                &mut c,
                "s@example.com",
                &rcpts(5),
                b"Subject: x\r\n\r\nhi\r\n",
            )
            .unwrap_err();
        // seven replies were due (MAIL, five RCPT, DATA): one timeout ends it, not seven
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(!err.is_permanent(), "{err}");
        assert_eq!(
            err.to_string(),
            format!("127.0.0.1:{port}: no reply to MAIL FROM within 1 s")
        );
        assert!(c.dead, "the connection is not used again");
        c.quit(); // must not wait for a reply either
        assert!(started.elapsed() < Duration::from_secs(3));
        server.join().unwrap();
    }

    #[test]
    fn every_recipient_refused_sends_nothing() {
        let (port, server) = server(&["550 5.1.1 no", "553 5.1.3 bad"]);
        let out = route(port)
            .send("s@example.com", &rcpts(2), b"Subject: x\r\n\r\nhi\r\n")
            .unwrap();
        assert!(out.accepted.is_empty());
        assert_eq!(out.rejected.len(), 2);
        let seen = server.join().unwrap();
        assert!(seen.pipelined && !seen.completed, "{seen:?}");
    }
}
