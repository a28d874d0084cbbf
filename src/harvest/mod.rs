//! Where recipients' certificates come from: signed replies.
//!
//! A recipient replies with a signed message; this module finds the signature (`mime`), checks it
//! over the exact signed bytes and learns the signer's certificate (`cms`), checks that certificate
//! like any recipient certificate (chain to the trust anchor, dates, email protection, a key we can
//! encrypt to: `CertInfo`), checks that the reply's From is an address the certificate certifies,
//! optionally that the reply carries an aligned DKIM signature (`dkim`), and writes
//! `<address>.crt` (`store`). `certs import` runs it on files (`command`); the daemon on what lands
//! in `certs_inbox` (`inbox`).

pub mod cms;
pub mod command;
pub mod dkim;
pub mod inbox;
pub mod mime;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use mail_parser::MessageParser;
use openssl::x509::X509;
use thiserror::Error;

use crate::config::{Config, HarvestTrust};
use crate::smime::certs::{
    CertFileError, CertInfo, CertProblem, MAX_ADDRESSES_PER_CERT, Trust, Usage,
};
use store::{StoreError, Written};

/// Refusal classes, for the metrics (`smime_pickup_certs_refused_total{reason}`).
pub const REFUSAL_CLASSES: [&str; 9] = [
    "unsigned",
    "signature",
    "untrusted",
    "expired",
    "usage",
    "address",
    "dkim",
    "older",
    "io",
];

/// Why a reply gave no certificate: for good, or (`temporary`) for the moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// one of `REFUSAL_CLASSES`
    pub class: &'static str,
    pub why: String,
    /// the DKIM key lookup failed for the moment (`dkim::NotPassed::temporary`): the same reply
    /// may give its certificate when tried again later; not counted as refused
    pub temporary: bool,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

fn refuse(class: &'static str, why: impl Into<String>) -> Refusal {
    Refusal {
        class,
        why: why.into(),
        temporary: false,
    }
}

impl From<dkim::NotPassed> for Refusal {
    fn from(e: dkim::NotPassed) -> Refusal {
        Refusal {
            class: "dkim",
            why: e.why,
            temporary: e.temporary,
        }
    }
}

/// A certificate taken from a reply.
#[derive(Debug, Clone)]
pub struct Imported {
    pub address: String,
    pub not_after: i64,
    pub written: Written,
}

/// Problems that stop a harvester from starting (configuration): exit 78.
#[derive(Debug, Error)]
pub enum SetupError {
    #[error(
        "harvesting needs a trust anchor: set `ca`, or harvest_trust = \"system\" for the system's bundle"
    )]
    NoTrust,
    #[error("harvest_trust = \"system\": no system CA bundle found (set SSL_CERT_FILE)")]
    NoSystemBundle,
    #[error(transparent)]
    Cert(#[from] CertFileError),
    #[error("certs folder {0}: {1}")]
    CertsFolder(PathBuf, #[source] std::io::Error),
    #[error("harvest_require_dkim: {0}")]
    Dkim(String),
}

/// Counts for the metrics: imported, refused by class, and tries that ended temporary.
#[derive(Default)]
pub struct Counters {
    pub imported: AtomicU64,
    pub refused: [AtomicU64; 9],
    pub deferred: AtomicU64,
}

impl Counters {
    pub fn count(&self, result: &Result<Imported, Refusal>) {
        match result {
            Ok(_) => {
                self.imported.fetch_add(1, Ordering::Relaxed);
            }
            Err(r) if r.temporary => {
                self.deferred.fetch_add(1, Ordering::Relaxed);
            }
            Err(r) => {
                let i = REFUSAL_CLASSES.iter().position(|c| *c == r.class);
                self.refused[i.unwrap_or(REFUSAL_CLASSES.len() - 1)]
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Everything a harvest needs, built once from the config.
pub struct Harvester {
    pub certs: PathBuf,
    trust: Trust,
    dkim: Option<dkim::Dkim>,
    pub max_bytes: usize,
}

/// The system's CA bundle: `SSL_CERT_FILE`, else the first of the usual distribution files.
fn system_bundle() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(f));
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

impl Harvester {
    /// From the config: trust anchor, certs folder, and the DKIM verifier when required.
    pub fn from_config(config: &Config) -> Result<Harvester, SetupError> {
        let bundle = match config.harvest_trust {
            HarvestTrust::Ca => config.ca.clone().ok_or(SetupError::NoTrust)?,
            HarvestTrust::System => system_bundle().ok_or(SetupError::NoSystemBundle)?,
        };
        let trust = Trust::from_file(&bundle, &[])?;
        match std::fs::metadata(&config.certs) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SetupError::CertsFolder(
                    config.certs.clone(),
                    std::io::Error::other("not a folder"),
                ));
            }
            Err(e) => return Err(SetupError::CertsFolder(config.certs.clone(), e)),
        }
        let dkim = match (config.harvest_require_dkim, config.harvest_dns.as_slice()) {
            (false, _) => None,
            (true, []) => Some(dkim::Dkim::system().map_err(SetupError::Dkim)?),
            (true, servers) => Some(dkim::Dkim::name_servers(servers).map_err(SetupError::Dkim)?),
        };
        Ok(Harvester {
            certs: config.certs.clone(),
            trust,
            dkim,
            max_bytes: config.limits.max_message_bytes,
        })
    }

    /// A harvester with the given parts (tests: a preloaded DKIM resolver).
    pub fn new(
        certs: PathBuf,
        trust_bundle: &Path,
        dkim: Option<dkim::Dkim>,
    ) -> Result<Harvester, SetupError> {
        Ok(Harvester {
            certs,
            trust: Trust::from_file(trust_bundle, &[])?,
            dkim,
            max_bytes: crate::message::Limits::DEFAULT_MAX_MESSAGE_BYTES,
        })
    }

    /// Reads `path` and harvests it.
    pub fn harvest_file(&self, path: &Path, now: i64) -> Result<Imported, Refusal> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| refuse("io", e.to_string()))?;
        if !meta.is_file() {
            return Err(refuse("io", "not a regular file"));
        }
        if meta.len() > self.max_bytes as u64 {
            return Err(refuse(
                "io",
                format!(
                    "{} bytes, over max_message_bytes ({})",
                    meta.len(),
                    self.max_bytes
                ),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| refuse("io", e.to_string()))?;
        self.harvest(&bytes, now)
    }

    /// Harvests the certificate of one reply (its raw bytes) at `now` (Unix seconds).
    pub fn harvest(&self, reply: &[u8], now: i64) -> Result<Imported, Refusal> {
        let found = mime::signatures(reply);
        if found.signed.is_empty() {
            let mut why = "no S/MIME signature (multipart/signed or signed-data) found".to_string();
            if !found.problems.is_empty() {
                why.push_str(&format!(": {}", found.problems.join("; ")));
            }
            return Err(refuse("unsigned", why));
        }
        // the first refusal, unless one signature could still pass later (temporary)
        let mut first_refusal: Option<Refusal> = None;
        for signed in &found.signed {
            match self.one(signed, now) {
                Ok(done) => return Ok(done),
                Err(r) if r.temporary && !first_refusal.as_ref().is_some_and(|f| f.temporary) => {
                    first_refusal = Some(r);
                }
                Err(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        Err(first_refusal.expect("at least one signature was tried"))
    }

    fn one(&self, signed: &mime::Signed<'_>, now: i64) -> Result<Imported, Refusal> {
        let from = from_address(signed.message)?;
        let verified = cms::verify(&signed.der, signed.content)
            .map_err(|p| refuse("signature", p.to_string()))?;
        let info = CertInfo::new(
            verified.signer.clone(),
            PathBuf::from("(reply)"),
            Some(&self.trust),
            &verified.others,
        )
        .map_err(|e| refuse("signature", e.to_string()))?;
        if info.is_ca {
            return Err(refuse(
                "usage",
                "the signer's certificate is a CA certificate",
            ));
        }
        info.check(Usage::Encrypt, now).map_err(|p| {
            let class = match p {
                CertProblem::Untrusted(_) => "untrusted",
                CertProblem::Expired { .. } | CertProblem::NotYetValid { .. } => "expired",
                CertProblem::NotForEmail | CertProblem::KeyUsage(_) => "usage",
            };
            refuse(class, format!("the signer's certificate: {p}"))
        })?;
        if info.emails.len() > MAX_ADDRESSES_PER_CERT {
            return Err(refuse(
                "usage",
                format!("a certificate for {} addresses", info.emails.len()),
            ));
        }
        if !info.emails.contains(&from) {
            return Err(refuse(
                "address",
                format!(
                    "From {from} is not an address of the signer's certificate ({})",
                    if info.emails.is_empty() {
                        "it names none".to_string()
                    } else {
                        info.emails.join(", ")
                    }
                ),
            ));
        }
        if !store::safe_address(&from) {
            return Err(refuse(
                "address",
                format!("{from:?} cannot name a file in the certs folder"),
            ));
        }
        if let Some(dkim) = &self.dkim {
            let domain = from.rsplit_once('@').map_or("", |(_, d)| d);
            dkim.check(signed.message, domain)?;
        }
        let chain: Vec<X509> = verified
            .others
            .iter()
            .filter(|c| is_intermediate(c))
            .cloned()
            .collect();
        let written = store::install(&self.certs, &from, &info, &chain).map_err(|e| match e {
            StoreError::NotNewer { .. } => refuse("older", e.to_string()),
            StoreError::UnsafeAddress(_) => refuse("address", e.to_string()),
            StoreError::Io { .. } => refuse("io", e.to_string()),
        })?;
        Ok(Imported {
            address: from,
            not_after: info.not_after,
            written,
        })
    }
}

/// A CA certificate that is not self-signed: worth carrying beside the leaf.
fn is_intermediate(cert: &X509) -> bool {
    let Ok(der) = cert.to_der() else {
        return false;
    };
    use x509_parser::prelude::FromDer;
    x509_parser::certificate::X509Certificate::from_der(&der)
        .is_ok_and(|(_, c)| c.is_ca() && c.subject() != c.issuer())
}

/// The one From address of a message, lowercased.
fn from_address(message: &[u8]) -> Result<String, Refusal> {
    let (head, _) = mime::split_entity(message);
    let parsed = MessageParser::new()
        .parse_headers(head)
        .ok_or_else(|| refuse("address", "the reply's header cannot be parsed"))?;
    let addrs: Vec<&str> = parsed
        .from()
        .map(|a| a.iter().filter_map(|a| a.address()).collect())
        .unwrap_or_default();
    match addrs.as_slice() {
        [one] => Ok(one.trim().to_ascii_lowercase()),
        [] => Err(refuse("address", "the reply has no From address")),
        more => Err(refuse(
            "address",
            format!(
                "the reply's From names {} addresses (one expected)",
                more.len()
            ),
        )),
    }
}
