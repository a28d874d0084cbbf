//! What the network routes already handed over for a claim, across attempts, restarts and routes.
//!
//! SMTP appends each transaction it finished to `<claim>#smtp-sent`, the API each transmission to
//! `<claim>#api-sent` (one line each: the recipients, lowercase, comma-separated), fsynced right after
//! the server's acceptance and before the next copy goes out. Every route skips the recipients
//! listed in either file, so a copy one route delivered is never sent again by another after a
//! switch or a crash.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use crate::seal::Sealed;
use crate::spool::claim::Claim;

/// Names a claim's API progress record (defined where claims are named: `spool::claim`).
pub const API_SUFFIX: &str = crate::spool::claim::API_SENT;

/// Where the transmissions the API server accepted are recorded.
pub fn api_path(claim: &Claim) -> PathBuf {
    let mut p = claim.path.as_os_str().to_owned();
    p.push(API_SUFFIX);
    PathBuf::from(p)
}

/// Both progress records of `claim`.
pub fn paths(claim: &Claim) -> [PathBuf; 2] {
    [super::smtp::progress_path(claim), api_path(claim)]
}

/// Recipients (lowercase) some route already handed over for `claim`.
pub fn sent_recipients(claim: &Claim) -> HashSet<String> {
    let mut sent = HashSet::new();
    for path in paths(claim) {
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines() {
                sent.extend(
                    line.split(',')
                        .filter(|r| !r.is_empty())
                        .map(str::to_ascii_lowercase),
                );
            }
        }
    }
    sent
}

/// What of `claim`'s copies no route has handed over yet, when some were (`None`: nothing was):
/// copies without the recipients already served, and without the copies fully served.
pub fn unsent(claim: &Claim, copies: &[Sealed]) -> Option<Vec<Sealed>> {
    let sent = sent_recipients(claim);
    (!sent.is_empty()).then(|| {
        copies
            .iter()
            .filter_map(|c| {
                let left = left_of(c, &sent);
                (!left.is_empty()).then(|| {
                    let mut copy = c.clone();
                    copy.envelope.recipients = left;
                    copy
                })
            })
            .collect()
    })
}

/// The recipients of `copy` not in `sent`.
pub fn left_of(copy: &Sealed, sent: &HashSet<String>) -> Vec<String> {
    copy.envelope
        .recipients
        .iter()
        .filter(|r| !sent.contains(&r.to_ascii_lowercase()))
        .cloned()
        .collect()
}

/// Appends one accepted transmission's recipients to the API record, durably.
pub fn record_api(claim: &Claim, recipients: &[String]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(api_path(claim))?;
    f.write_all(format!("{}\n", super::smtp::transaction_key(recipients)).as_bytes())?;
    f.sync_data()
}
