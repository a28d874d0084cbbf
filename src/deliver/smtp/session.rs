//! The SMTP session: connect, greeting, EHLO, STARTTLS and AUTH, and the one error type of the SMTP
//! route.
//!
//! Whatever goes wrong in the session is a problem of the route, never of a message: such errors are
//! never permanent (the input is deferred and retried with backoff), and the route logs once when it
//! becomes unhealthy (with the server's reply) and once when it works again. Only the replies to a
//! message's own MAIL FROM, RCPT TO and DATA decide its fate.
//!
//! PIPELINING: lettre 0.11 parses the EHLO reply inside `SmtpConnection::connect` and keeps only the
//! keywords it uses itself (8BITMIME, SMTPUTF8, STARTTLS, AUTH); the reply is not exposed, and its
//! stream type cannot be built outside lettre, so we cannot read the first reply ourselves and hand
//! the socket over. (lettre's `tracing` feature would show the reply only as a debug event, beside the
//! AUTH line with the password.) So after STARTTLS and before AUTH we ask once more; RFC 5321 allows a
//! server to refuse a repeated EHLO, and a refusal simply means "no pipelining": the session goes
//! on, and later connections to that server do not ask again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::Ehlo;
use lettre::transport::smtp::extension::ClientId;
use thiserror::Error;

use crate::config::{Smtp as Settings, TlsMode};

type LettreError = lettre::transport::smtp::Error;

/// Why an SMTP step failed. `Session` errors are the route's; `Reply` (and `Timeout`) belong to one
/// transaction; only a permanent reply to the transaction is final.
#[derive(Debug, Error)]
pub enum SmtpError {
    /// connect, greeting, EHLO, STARTTLS or AUTH failed: the route is unusable for now
    #[error("{server}: {why}")]
    Session {
        server: String,
        why: String,
        /// lettre's error, when one is behind it (its words are in `why` already)
        #[source]
        source: Option<LettreError>,
    },
    #[error("{server}: {stage} refused: {source}")]
    Reply {
        server: String,
        stage: &'static str,
        source: LettreError,
    },
    #[error("{server}: no reply to {stage} within {} s", .after.as_secs())]
    Timeout {
        server: String,
        stage: &'static str,
        after: Duration,
    },
    #[error("{0}: not a valid address")]
    Address(String),
    #[error("{path}: {source}")]
    Progress {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl SmtpError {
    /// A 5xx reply to the message's own MAIL FROM, RCPT TO or DATA, or an address no server takes.
    pub fn is_permanent(&self) -> bool {
        match self {
            SmtpError::Reply { source, .. } => source.is_permanent(),
            SmtpError::Address(_) => true,
            _ => false,
        }
    }

    /// Worth trying again later: anything but a permanent refusal (a 4xx, a timeout, a session
    /// that failed, a progress record we could not write).
    pub fn is_transient(&self) -> bool {
        !self.is_permanent()
    }

    /// The session failed (the route's problem, not the message's).
    pub fn is_session(&self) -> bool {
        matches!(self, SmtpError::Session { .. })
    }
}

/// The kind of the I/O error behind a lettre error, if one is behind it.
fn io_kind(e: &LettreError) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = err.source();
    }
    None
}

/// lettre reports a read timeout as the socket's EAGAIN ("Resource temporarily unavailable") and a
/// connect timeout as TimedOut: both are timeouts to us.
pub fn is_timeout(e: &LettreError) -> bool {
    matches!(
        io_kind(e),
        Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
    )
}

/// The error for a failed transaction step: a timeout says so, anything else keeps lettre's words
/// (with the server's code and text for a reply).
pub fn step_failed(
    server: &str,
    stage: &'static str,
    e: LettreError,
    after: Duration,
) -> SmtpError {
    if is_timeout(&e) {
        SmtpError::Timeout {
            server: server.to_string(),
            stage,
            after,
        }
    } else {
        SmtpError::Reply {
            server: server.to_string(),
            stage,
            source: e,
        }
    }
}

/// What went wrong in the session, in words: "EHLO refused: permanent error (554): …", or "no reply
/// to STARTTLS within 30 s".
fn session_failed(server: &str, step: &str, e: LettreError, after: Duration) -> SmtpError {
    let why = if is_timeout(&e) {
        format!("no reply to {step} within {} s", after.as_secs())
    } else if e.is_transient() || e.is_permanent() {
        format!("{step} refused: {e}")
    } else {
        format!("{step} failed: {e}")
    };
    SmtpError::Session {
        server: server.to_string(),
        why,
        source: Some(e),
    }
}

/// An open, authenticated connection and how many messages it carried.
pub struct Connection {
    pub(super) conn: SmtpConnection,
    pub(super) sent: usize,
    /// the server offers PIPELINING (RFC 2920): the envelope goes in one write
    pub(super) pipelining: bool,
    /// left in the middle of DATA: only closing the socket ends it without sending the message
    pub(super) dead: bool,
    pub(super) timeout: Duration,
    /// "STARTTLS", "TLS" or "plain", for the `send` command's banner
    pub security: &'static str,
}

impl Connection {
    /// The server offers PIPELINING (as far as we could learn it).
    pub fn pipelining(&self) -> bool {
        self.pipelining
    }

    /// QUIT, politely; errors do not matter any more.
    pub fn quit(mut self) {
        // one left in the middle of DATA would only wait for a reply that never comes
        if !self.dead {
            let _ = self.conn.quit();
        }
    }
}

pub struct SmtpRoute {
    pub settings: Settings,
    tls: TlsParameters,
    pub(super) pool: Mutex<Vec<Connection>>,
    /// the server refused a repeated EHLO once: do not ask it again
    no_second_ehlo: AtomicBool,
    /// the last session problem (None: healthy), to log each change once
    problem: Mutex<Option<String>>,
}

impl SmtpRoute {
    pub fn new(settings: Settings) -> Result<SmtpRoute, String> {
        let mut builder = TlsParameters::builder(settings.host.clone());
        if let Some(ca) = &settings.tls_ca {
            let pem = std::fs::read(ca).map_err(|e| format!("tls_ca {}: {e}", ca.display()))?;
            let cert =
                Certificate::from_pem(&pem).map_err(|e| format!("tls_ca {}: {e}", ca.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        if !settings.tls_verify {
            builder = builder
                .dangerous_accept_invalid_certs(true)
                .dangerous_accept_invalid_hostnames(true);
        }
        let tls = builder
            .build_native()
            .map_err(|e| format!("TLS setup for {}: {e}", settings.host))?;
        Ok(SmtpRoute {
            settings,
            tls,
            pool: Mutex::new(Vec::new()),
            no_second_ehlo: AtomicBool::new(false),
            problem: Mutex::new(None),
        })
    }

    pub fn server(&self) -> String {
        format!("{}:{}", self.settings.host, self.settings.port)
    }

    /// The route's session problem now (None: the last session worked).
    pub fn problem(&self) -> Option<String> {
        self.problem.lock().expect("problem lock").clone()
    }

    /// `open`, remembering the route's health and logging each change once.
    pub(super) fn open_tracked(&self) -> Result<Connection, SmtpError> {
        let result = self.open();
        let now = match &result {
            Ok(_) => None,
            Err(e) if e.is_session() => Some(e.to_string()),
            // not the session's fault (it cannot happen here today): health unchanged
            Err(_) => return result,
        };
        let mut problem = self.problem.lock().expect("problem lock");
        match (&*problem, &now) {
            (None, Some(why)) => log::warn!("SMTP route unhealthy: {why}"),
            (Some(before), Some(why)) if before != why => {
                log::warn!("SMTP route still unhealthy: {why}")
            }
            (Some(_), None) => log::info!("SMTP route to {} works again", self.server()),
            _ => {}
        }
        *problem = now;
        result
    }

    /// Connects, secures and authenticates as configured.
    pub fn open(&self) -> Result<Connection, SmtpError> {
        let s = &self.settings;
        let server = self.server();
        let failed = |step: &str, e: LettreError| session_failed(&server, step, e, s.timeout);
        let refuse = |why: &str, source: Option<LettreError>| SmtpError::Session {
            server: server.clone(),
            why: why.to_string(),
            source,
        };
        let id = ClientId::Domain(s.helo.clone());
        let wrapped = (s.tls == TlsMode::Tls).then_some(&self.tls);
        let mut conn = SmtpConnection::connect(
            (s.host.as_str(), s.port),
            Some(s.timeout),
            &id,
            wrapped,
            None,
        )
        .map_err(|e| connect_failed(&server, e, s.timeout))?;
        set_nodelay(&s.host, s.port);
        let mut security = if wrapped.is_some() { "TLS" } else { "plain" };
        match s.tls {
            TlsMode::Starttls if !conn.can_starttls() => {
                conn.abort();
                return Err(refuse(
                    "the server offers no STARTTLS (tls = \"starttls\")",
                    None,
                ));
            }
            TlsMode::Starttls | TlsMode::Opportunistic if conn.can_starttls() => {
                conn.starttls(&self.tls, &id)
                    .map_err(|e| failed("STARTTLS", e))?;
                security = "STARTTLS";
            }
            _ => {}
        }
        // before AUTH, which a new EHLO could reset (see the module's comment)
        let pipelining = if self.no_second_ehlo.load(Ordering::Relaxed) {
            false
        } else {
            match conn.command(Ehlo::new(id.clone())) {
                Ok(r) => r.message().any(|l| {
                    l.split_whitespace()
                        .next()
                        .is_some_and(|k| k.eq_ignore_ascii_case("PIPELINING"))
                }),
                Err(e) if e.is_transient() || e.is_permanent() => {
                    log::info!(
                        "{server}: refuses a repeated EHLO ({e}): sending one command at a time"
                    );
                    self.no_second_ehlo.store(true, Ordering::Relaxed);
                    false
                }
                Err(e) => return Err(failed("EHLO", e)),
            }
        };
        if let Some(user) = &s.user {
            if !conn.is_encrypted() && s.tls != TlsMode::None {
                conn.abort();
                return Err(refuse(
                    "refusing to send the password over an unencrypted connection (set tls = \"none\" to allow it)",
                    None,
                ));
            }
            let password = s.password.as_ref().map(|p| p.0.clone()).unwrap_or_default();
            conn.auth(
                &[Mechanism::Plain, Mechanism::Login],
                &Credentials::new(user.clone(), password),
            )
            .map_err(|e| {
                if is_timeout(&e) {
                    session_failed(&server, "AUTH", e, s.timeout)
                } else {
                    // a refusal keeps the server's code and text
                    let why = format!("authentication as {user:?} failed: {e}");
                    refuse(&why, Some(e))
                }
            })?;
        }
        Ok(Connection {
            conn,
            sent: 0,
            pipelining,
            dead: false,
            timeout: s.timeout,
            security,
        })
    }
}

/// `SmtpConnection::connect` covers the TCP connect, the greeting and the first EHLO; its error says
/// which failed only through its kind.
fn connect_failed(server: &str, e: LettreError, after: Duration) -> SmtpError {
    let why = if io_kind(&e) == Some(std::io::ErrorKind::TimedOut) {
        format!("cannot connect within {} s", after.as_secs())
    } else if is_timeout(&e) {
        format!("no greeting or EHLO reply within {} s", after.as_secs())
    } else if e.is_transient() || e.is_permanent() {
        format!("greeting or EHLO refused: {e}")
    } else {
        format!("cannot connect: {e}")
    };
    SmtpError::Session {
        server: server.to_string(),
        why,
        source: Some(e),
    }
}

/// See `nodelay`: without it every message waits 40 ms for a delayed ACK.
fn set_nodelay(host: &str, port: u16) {
    use std::net::ToSocketAddrs;
    for peer in (host, port).to_socket_addrs().into_iter().flatten() {
        if let Err(e) = super::super::nodelay::for_peer(peer) {
            log::debug!("TCP_NODELAY for {peer}: {e}");
        }
    }
}

#[cfg(test)]
mod tests;
