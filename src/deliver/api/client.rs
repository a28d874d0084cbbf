//! One transmission over HTTPS with ureq (a maintained synchronous client on the same native-tls /
//! OpenSSL stack as the SMTP route), and what its reply means.
//!
//! The reply classes follow the SMTP route's: a message's own refusal (400, 413, recipients refused
//! in a 200) decides its fate; anything that says the route is misconfigured (401, 403, 404, 405, a
//! redirect) or busy (420, 429, 5xx, a timeout, a dropped connection, TLS) is the route's problem:
//! the message is deferred, never failed for it.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use crate::config::{Api as Settings, Flavor};
use crate::seal::Sealed;

/// Why a transmission did not go through.
#[derive(Debug, Error)]
pub enum ApiError {
    /// 400 or 413: this message (or our request for it); never retried
    #[error("{url}: {status}: {text}")]
    Refused {
        url: String,
        status: u16,
        text: String,
    },
    /// 401/403 (key), 404/405 (URL), a redirect: the route is misconfigured
    #[error("{url}: {status}: {text} (check [api] url and key)")]
    Misconfigured {
        url: String,
        status: u16,
        text: String,
    },
    /// 420/429: rate limited; `Retry-After` when the server gave one
    #[error("{url}: {status}: rate limited{}", retry_text(.retry_after))]
    RateLimited {
        url: String,
        status: u16,
        retry_after: Option<Duration>,
    },
    /// 5xx or another unexpected status
    #[error("{url}: {status}: {text}")]
    Server {
        url: String,
        status: u16,
        text: String,
    },
    #[error("{url}: no reply within {} s", .after.as_secs())]
    Timeout { url: String, after: Duration },
    /// connect, TLS, a dropped connection
    #[error("{url}: {why}")]
    Connection {
        url: String,
        why: String,
        /// ureq's or the body's error (its words are in `why` already)
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// the route holds off (after `Retry-After`, or right after a failure of the route)
    #[error("{url}: not tried for {} s more after: {why}", .wait.as_secs().max(1))]
    Holding {
        url: String,
        wait: Duration,
        why: String,
    },
    /// JSON strings carry Unicode only: a message with other bytes cannot be sent this way
    #[error(
        "the sealed message is not UTF-8 (byte {0}): the API cannot carry it, use pickup or SMTP"
    )]
    NotUtf8(usize),
    #[error("{path}: {source}")]
    Progress {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

fn retry_text(after: &Option<Duration>) -> String {
    after.map_or_else(String::new, |d| {
        format!(" (Retry-After: {} s)", d.as_secs())
    })
}

/// The longest `Retry-After` we honour; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl ApiError {
    /// The message's own refusal: it goes to failed/.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ApiError::Refused { .. } | ApiError::NotUtf8(_))
    }

    /// Worth trying again later: anything but the message's own refusal.
    pub fn is_transient(&self) -> bool {
        !self.is_permanent()
    }

    /// The route's problem (not the message's): the next route may take the message.
    pub fn is_route_problem(&self) -> bool {
        !self.is_permanent() && !matches!(self, ApiError::Progress { .. })
    }

    /// How long the server asked us to wait (429/420 with `Retry-After`, or a hold it caused).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. } => *retry_after,
            ApiError::Holding { wait, .. } => Some(*wait),
            _ => None,
        }
    }
}

/// A pool of agents, one in use per worker at a time; each keeps its connection alive between
/// transmissions.
pub struct Client {
    pub settings: Settings,
    tls: Arc<native_tls::TlsConnector>,
    agents: std::sync::Mutex<Vec<ureq::Agent>>,
}

/// What the server did with one transmission (a 200).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    pub accepted: usize,
    pub rejected: usize,
    pub id: Option<String>,
}

impl Client {
    pub fn new(settings: Settings) -> Result<Client, String> {
        let mut builder = native_tls::TlsConnector::builder();
        if let Some(ca) = &settings.tls_ca {
            let shown = ca.display();
            let pem = std::fs::read(ca).map_err(|e| format!("[api] tls_ca {shown}: {e}"))?;
            // every certificate of the bundle, added to the system's roots
            let certs = openssl::x509::X509::stack_from_pem(&pem)
                .map_err(|e| format!("[api] tls_ca {shown}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("[api] tls_ca {shown}: no certificate in it"));
            }
            for cert in certs {
                let der = cert
                    .to_der()
                    .map_err(|e| format!("[api] tls_ca {shown}: {e}"))?;
                let cert = native_tls::Certificate::from_der(&der)
                    .map_err(|e| format!("[api] tls_ca {shown}: {e}"))?;
                builder.add_root_certificate(cert);
            }
        }
        let tls = builder
            .build()
            .map_err(|e| format!("TLS setup for {}: {e}", settings.url))?;
        Ok(Client {
            settings,
            tls: Arc::new(tls),
            agents: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn agent(&self) -> ureq::Agent {
        if let Some(a) = self.agents.lock().expect("agents lock").pop() {
            return a;
        }
        let t = self.settings.timeout;
        ureq::AgentBuilder::new()
            .tls_connector(self.tls.clone())
            .timeout_connect(t)
            .timeout_read(t)
            .timeout_write(t)
            .redirects(0)
            .https_only(true)
            .max_idle_connections_per_host(1)
            .user_agent(concat!("smime-pickup/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// POSTs `body` and classifies the reply.
    pub fn post(&self, body: &[u8]) -> Result<Accepted, ApiError> {
        let agent = self.agent();
        let key = self.settings.key.as_ref().map_or("", |k| k.0.as_str());
        let result = agent
            .post(&self.settings.url)
            .set("Authorization", key)
            .set("Content-Type", "application/json")
            .send_bytes(body);
        let outcome = self.classify(result);
        // a connection that failed is not in the agent's pool any more: the agent is reusable
        self.agents.lock().expect("agents lock").push(agent);
        outcome
    }

    fn classify(&self, result: Result<ureq::Response, ureq::Error>) -> Result<Accepted, ApiError> {
        let url = self.settings.url.clone();
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => return Err(self.transport_error(t)),
        };
        let status = response.status();
        let retry_after = response
            .header("Retry-After")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        // read the whole body: the connection goes back to the agent's pool only then
        let text = match response.into_string() {
            Ok(t) => t,
            Err(e) if (200..300).contains(&status) => {
                // the server took it: sending again would deliver twice
                log::warn!("{url}: {status} with an unreadable body ({e}); counted as accepted");
                String::new()
            }
            Err(e) => {
                return Err(ApiError::Connection {
                    url,
                    why: format!("{status} with an unreadable body: {e}"),
                    source: Some(Box::new(e)),
                });
            }
        };
        match status {
            200..=299 => Ok(accepted(&text)),
            400 | 413 => Err(ApiError::Refused {
                url,
                status,
                text: error_text(&text),
            }),
            300..=399 | 401 | 403 | 404 | 405 => Err(ApiError::Misconfigured {
                url,
                status,
                text: error_text(&text),
            }),
            420 | 429 => Err(ApiError::RateLimited {
                url,
                status,
                retry_after,
            }),
            _ => Err(ApiError::Server {
                url,
                status,
                text: error_text(&text),
            }),
        }
    }

    fn transport_error(&self, t: ureq::Transport) -> ApiError {
        let url = self.settings.url.clone();
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&t);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                )
            {
                return ApiError::Timeout {
                    url,
                    after: self.settings.timeout,
                };
            }
            source = e.source();
        }
        let why = crate::logging::escape_controls(&t.to_string()).into_owned();
        ApiError::Connection {
            url,
            why,
            source: Some(Box::new(t)),
        }
    }
}

/// `errors[].message` (with its `description`) of an error reply, else the start of the body.
pub fn error_text(body: &str) -> String {
    let parsed: Option<Vec<String>> = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("errors")?.as_array().map(|errors| {
                errors
                    .iter()
                    .map(|e| {
                        let field = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("");
                        match (field("message"), field("description")) {
                            (m, "") => m.to_string(),
                            (m, d) => format!("{m}: {d}"),
                        }
                    })
                    .filter(|m| !m.is_empty())
                    .collect()
            })
        });
    let text = match parsed {
        Some(list) if !list.is_empty() => list.join("; "),
        _ if body.trim().is_empty() => "(no text)".to_string(),
        _ => body.trim().chars().take(200).collect(),
    };
    crate::logging::escape_controls(&text).into_owned()
}

/// The counts of a 200's `results`; a body without them counts as all accepted (the server took it).
fn accepted(body: &str) -> Accepted {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let results = &v["results"];
    let count = |k: &str| results[k].as_u64().map_or(0, |n| n as usize);
    Accepted {
        accepted: count("total_accepted_recipients"),
        rejected: count("total_rejected_recipients"),
        id: results["id"].as_str().map(str::to_string),
    }
}

#[derive(Serialize)]
struct Transmission<'a> {
    return_path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    campaign_id: Option<&'a str>,
    recipients: Vec<Recipient<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<Options>,
    content: Content<'a>,
}

#[derive(Serialize)]
struct Recipient<'a> {
    address: Address<'a>,
}

#[derive(Serialize)]
struct Address<'a> {
    email: &'a str,
}

#[derive(Serialize)]
struct Options {
    #[serde(skip_serializing_if = "Option::is_none")]
    smtputf8: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    open_tracking: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    click_tracking: Option<bool>,
}

#[derive(Serialize)]
struct Content<'a> {
    email_rfc822: &'a str,
}

/// The request body for `copy` to `recipients`: `return_path` the envelope sender, `campaign_id`
/// from `x-job`, the sealed message as `email_rfc822` (the bytes a pickup file carries after its
/// envelope lines), and the options the flavor accepts.
pub fn transmission(
    copy: &Sealed,
    recipients: &[String],
    flavor: Flavor,
) -> Result<Vec<u8>, ApiError> {
    let message = super::super::pickup::message_part(copy);
    let email_rfc822 =
        std::str::from_utf8(message).map_err(|e| ApiError::NotUtf8(e.valid_up_to()))?;
    let campaign_id = copy
        .envelope
        .extras
        .iter()
        .find(|(name, _)| name == "x-job")
        .map(|(_, v)| v.as_str());
    // SMTPUTF8 is needed when an address's local part is not ASCII
    let utf8 = std::iter::once(&copy.envelope.sender)
        .chain(recipients)
        .any(|a| !a.is_ascii());
    let options = match flavor {
        Flavor::Powermta => utf8.then_some(Options {
            smtputf8: Some(true),
            open_tracking: None,
            click_tracking: None,
        }),
        // tracking rewrites the message, which breaks the signature
        Flavor::Sparkpost => Some(Options {
            smtputf8: None,
            open_tracking: Some(false),
            click_tracking: Some(false),
        }),
    };
    let t = Transmission {
        return_path: &copy.envelope.sender,
        campaign_id,
        recipients: recipients
            .iter()
            .map(|r| Recipient {
                address: Address { email: r },
            })
            .collect(),
        options,
        content: Content { email_rfc822 },
    };
    let mut out =
        Vec::with_capacity(message.len() + message.len() / 16 + 256 + 64 * recipients.len());
    serde_json::to_writer(&mut out, &t).expect("serialising into memory");
    Ok(out)
}

#[cfg(test)]
mod tests;
