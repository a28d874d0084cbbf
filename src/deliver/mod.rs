//! Delivery routes behind one small trait, so the pipeline is tested without the outside world and
//! the SMTP route can join the pickup one later.

pub mod fallback;
mod nodelay;
pub mod pickup;
pub mod smtp;

use thiserror::Error;

use crate::seal::Sealed;
use crate::spool::claim::Claim;

/// Why a delivery did not happen. Transient ones keep the input claimed for a retry; permanent ones
/// send it to the failed folder.
#[derive(Debug, Error)]
pub enum DeliverError {
    #[error("pickup directory {path} is unavailable: {why}")]
    Unavailable {
        path: std::path::PathBuf,
        why: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Smtp(Box<smtp::SmtpError>),
    #[error("every recipient was refused: {}", rejections(.0))]
    Rejected(Vec<(String, String)>),
}

/// "a@x: 550 ...; b@y: 550 ..." for reasons and logs.
pub fn rejections(list: &[(String, String)]) -> String {
    list.iter()
        .map(|(r, why)| format!("{r}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl DeliverError {
    /// A missing volume comes back, a full disk gets room, a 4xx clears: retry. A 5xx does not.
    pub fn is_transient(&self) -> bool {
        match self {
            DeliverError::Smtp(e) => !e.is_permanent(),
            DeliverError::Rejected(_) => false,
            _ => true,
        }
    }
}

/// What a route did with one claimed input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub route: &'static str,
    /// files or transactions made
    pub units: usize,
    /// the pickup files' names (empty for other routes)
    pub names: Vec<String>,
    /// recipients the server refused for good, with its reply (the others got the message)
    pub rejected: Vec<(String, String)>,
}

/// Receives each result of `deliver_batch`: the item's index and what became of it.
pub type Done<'a> = dyn FnMut(usize, Result<Delivered, DeliverError>) + 'a;

pub trait Transport: Send + Sync {
    /// Delivers the sealed copies of `claim`. Must be safe to call again after a crash at any point
    /// (see `recover`).
    fn deliver(&self, claim: &Claim, copies: &[Sealed]) -> Result<Delivered, DeliverError>;

    /// The route deliveries take now, for the metrics.
    fn route_now(&self) -> &'static str {
        "pickup"
    }

    /// Delivers several claims (a route may make them durable together) and hands each result to
    /// `done` with its index, in order, as soon as it is final: a route that delivers one by one
    /// (SMTP) lets each message be finished right after the server took it, before the next goes out,
    /// so a crash can only send again the one in flight.
    fn deliver_batch(&self, items: &[(&Claim, &[Sealed])], done: &mut Done<'_>) {
        for (i, (claim, copies)) in items.iter().enumerate() {
            done(i, self.deliver(claim, copies));
        }
    }

    /// Finishes a delivery a crash interrupted after its commit point; `Ok(None)` when `claim` never
    /// reached it (then it is sealed and delivered again from the start).
    fn recover(&self, claim: &Claim) -> Result<Option<Delivered>, DeliverError>;
}

impl Delivered {
    /// What was made, for the log: `1 file: NAME`, `3 files: A, B, C`, `2 transactions`.
    pub fn made(&self) -> String {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        if self.names.is_empty() {
            let what = if self.route == "pickup" {
                ("file", "files")
            } else {
                ("transaction", "transactions")
            };
            return plural(self.units, what.0, what.1);
        }
        format!(
            "{}: {}",
            plural(self.names.len(), "file", "files"),
            self.names.join(", ")
        )
    }
}
