//! Which of a claim's transactions the server already accepted: `<claim>#smtp-sent`, one
//! `transaction_key` a line, appended and fsynced after each 250 of a multi-transaction delivery,
//! so a retry or a restart skips them.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use super::SmtpError;
use crate::seal::Sealed;
use crate::spool::claim::Claim;

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

pub(super) fn record_sent(claim: &Claim, key: &str) -> Result<(), SmtpError> {
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
