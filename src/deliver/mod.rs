//! Delivery routes behind one small trait, so the pipeline is tested without the outside world and
//! the SMTP route can join the pickup one later.

pub mod pickup;

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
}

impl DeliverError {
    /// Everything a route reports today is worth a retry: a missing volume comes back, a full disk
    /// gets room.
    pub fn is_transient(&self) -> bool {
        true
    }
}

/// What a route did with one claimed input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub route: &'static str,
    /// files or transactions made
    pub units: usize,
}

pub trait Transport: Send + Sync {
    /// Delivers the sealed copies of `claim`. Must be safe to call again after a crash at any point
    /// (see `recover`).
    fn deliver(&self, claim: &Claim, copies: &[Sealed]) -> Result<Delivered, DeliverError>;

    /// Finishes a delivery a crash interrupted after its commit point; `Ok(None)` when `claim` never
    /// reached it (then it is sealed and delivered again from the start).
    fn recover(&self, claim: &Claim) -> Result<Option<Delivered>, DeliverError>;
}
