//! Delivery routes behind one small trait, so the pipeline is tested without the outside world:
//! the pickup directory, SMTP, the HTTP Transmissions API, and an ordered list of them (`fallback`).

pub mod api;
pub mod fallback;
mod nodelay;
pub mod pickup;
pub mod progress;
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
        /// the error behind `why`, when there is one (shared: one failure fails a whole batch)
        #[source]
        source: Option<Shared>,
    },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Smtp(Box<smtp::SmtpError>),
    #[error(transparent)]
    Api(Box<api::ApiError>),
    #[error("every recipient was refused: {}", rejections(.0))]
    Rejected(Vec<(String, String)>),
    /// A bug met while delivering (a caught panic): the claim is tried again, recovery first.
    #[error("internal error while delivering: {0}")]
    Internal(String),
}

/// An error that fails a whole batch, shared by the error of each claim in it: it shows as its
/// cause, and `source()` leads to the cause itself.
#[derive(Debug, Clone)]
pub struct Shared(pub std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl Shared {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Shared {
        Shared(std::sync::Arc::new(e))
    }
}

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
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
            DeliverError::Api(e) => !e.is_permanent(),
            DeliverError::Rejected(_) => false,
            _ => true,
        }
    }

    /// The route failed, not the message: the next route of the list may take it.
    pub fn is_route_problem(&self) -> bool {
        match self {
            DeliverError::Smtp(e) => e.is_session(),
            DeliverError::Api(e) => e.is_route_problem(),
            DeliverError::Rejected(_) | DeliverError::Internal(_) => false,
            DeliverError::Unavailable { .. } | DeliverError::Io { .. } => true,
        }
    }

    /// How long the server asked us to wait before trying again (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            DeliverError::Api(e) => e.retry_after(),
            _ => None,
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
    /// the claimed input is gone already (pickup: its inode became a pool entry): nothing for
    /// `finish::delivered` to look for
    pub input_gone: bool,
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

    /// Nothing more is waiting to be delivered: a route may tidy up what it kept for the next batch
    /// (pickup pools the inodes of the claims it just delivered).
    fn idle(&self) {}

    /// The run is over, every delivery thread gone: a route removes what it kept for later
    /// (pickup: the inodes of delivered claims, before the work folder is closed).
    fn close(&self) {}

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

/// The routes of a config, ready to deliver.
pub struct Routes {
    pub transport: Box<dyn Transport>,
    /// the pickup directory, when it is the only route (the intake gate watches its backlog)
    pub gate_pickup: Option<pickup::Pickup>,
    /// for the start line: "pickup /x, else SMTP host:25"
    pub target: String,
}

/// Builds `config.route`: one route alone, or the ordered list with its fallback. `pickup_dir` is
/// required when the list holds pickup. Warns about settings that weaken TLS.
pub fn build(
    config: &crate::config::Config,
    pickup_dir: Option<&std::path::Path>,
) -> Result<Routes, String> {
    use crate::config::Hop;
    use fallback::Leg;
    let mut legs = Vec::new();
    for hop in &config.route.0 {
        legs.push(match hop {
            Hop::Pickup => {
                let dir = pickup_dir.ok_or("`pickup` is not set")?;
                // read once: what both the sync strategy and inode reuse are chosen from
                let facts = pickup::sync::Facts::of(dir).ok();
                Leg::Pickup(pickup::Pickup {
                    dir: dir.to_path_buf(),
                    staging: crate::layout::staging_folder(config, dir),
                    max_recipients: config.max_recipients_per_file,
                    sync: pickup::sync::for_folder(config.sync, dir, facts.as_ref()),
                    pool: pickup::recycle::Pool::for_folder(
                        config.reuse_inodes,
                        dir,
                        facts.as_ref(),
                    ),
                })
            }
            Hop::Smtp => Leg::Smtp(smtp::SmtpRoute::new(config.smtp.clone())?),
            Hop::Api => Leg::Api(api::ApiRoute::new(config.api.clone())?),
        });
    }
    if !config.smtp.tls_verify && config.route.uses(Hop::Smtp) {
        log::warn!("[smtp] tls_verify = false: the SMTP server's certificate is not checked");
    }
    let target = legs
        .iter()
        .map(|leg| match leg {
            Leg::Pickup(p) => format!("pickup {}", p.dir.display()),
            Leg::Smtp(s) => format!("SMTP {}", s.server()),
            Leg::Api(a) => format!("API {} ({:?})", a.url(), config.api.flavor),
        })
        .collect::<Vec<_>>()
        .join(", else ");
    if legs.len() > 1 {
        return Ok(Routes {
            transport: Box::new(fallback::Fallback::new(
                legs,
                config.min_free_bytes,
                config.pickup_max_backlog,
            )),
            gate_pickup: None,
            target,
        });
    }
    let (transport, gate_pickup): (Box<dyn Transport>, _) =
        match legs.pop().expect("a route list is never empty") {
            Leg::Pickup(p) => {
                let gate = pickup::Pickup {
                    dir: p.dir.clone(),
                    staging: p.staging.clone(),
                    max_recipients: p.max_recipients,
                    sync: p.sync,
                    pool: pickup::recycle::Pool::new(false),
                };
                (Box::new(p), Some(gate))
            }
            Leg::Smtp(s) => (Box::new(s), None),
            Leg::Api(a) => (Box::new(a), None),
        };
    Ok(Routes {
        transport,
        gate_pickup,
        target,
    })
}
