//! One SMTP transaction on an open connection: MAIL FROM, RCPT TO each recipient (collecting
//! per-recipient refusals), DATA; the envelope pipelined where the server offers PIPELINING, else
//! one command at a time. A transaction we must not finish is abandoned (RSET), never completed.

use lettre::Address;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};

use super::session::{self, Connection, SmtpError};

/// What the server did with one transaction.
#[derive(Debug, Default)]
pub struct Outcome {
    pub accepted: Vec<String>,
    /// (recipient, the server's reply)
    pub rejected: Vec<(String, String)>,
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
pub(super) fn transact(
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
