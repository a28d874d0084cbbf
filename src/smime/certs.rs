//! Certificates: reading them from files, the checks every certificate we use must pass, and the
//! recipient index (`certs` folder, in `certs/index.rs`) that maps an address to the certificate to
//! encrypt for.
//!
//! Everything that does not depend on the clock (key usage, extended key usage, chain to the configured
//! CA) is decided once when the folder is loaded; validity dates are compared with the caller's `now` on
//! every lookup, so a long-running daemon notices a certificate expiring.

use std::fmt;
use std::path::{Path, PathBuf};

use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509StoreContext};
use thiserror::Error;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

mod index;
pub use index::{CertStore, LookupError, MAX_ADDRESSES_PER_CERT};

/// What a certificate is about to be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Sign,
    Encrypt,
}

/// Why one certificate cannot be used (the address is named by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertProblem {
    Expired { on: i64 },
    NotYetValid { from: i64 },
    NotForEmail,
    KeyUsage(Usage),
    Untrusted(String),
}

impl fmt::Display for CertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertProblem::Expired { on } => write!(f, "expired on {}", ymd(*on)),
            CertProblem::NotYetValid { from } => write!(f, "not valid before {}", ymd(*from)),
            CertProblem::NotForEmail => {
                f.write_str("not valid for email protection (extendedKeyUsage)")
            }
            CertProblem::KeyUsage(Usage::Encrypt) => {
                f.write_str("keyUsage does not allow keyEncipherment")
            }
            CertProblem::KeyUsage(Usage::Sign) => {
                f.write_str("keyUsage allows neither digitalSignature nor nonRepudiation")
            }
            CertProblem::Untrusted(why) => write!(f, "not issued by a trusted CA ({why})"),
        }
    }
}

/// Errors reading certificate files or the CA bundle.
#[derive(Debug, Error)]
pub enum CertFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no certificate in it (expected PEM or DER)")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {source}")]
    OpenSsl {
        path: PathBuf,
        source: openssl::error::ErrorStack,
    },
}

/// A certificate with the facts we check, read once.
#[derive(Clone)]
pub struct CertInfo {
    pub cert: X509,
    pub source: PathBuf,
    pub emails: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    /// Problems that do not depend on time, for signing and for encryption
    sign_problem: Option<CertProblem>,
    encrypt_problem: Option<CertProblem>,
}

impl fmt::Debug for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertInfo")
            .field("source", &self.source)
            .field("emails", &self.emails)
            .field("not_after", &ymd(self.not_after))
            .finish()
    }
}

impl CertInfo {
    /// Reads the facts of `cert`. `trust` (the CA bundle and any intermediates) decides the chain check;
    /// `None` means no CA is configured and chains are not checked.
    /// `extra_chain` adds intermediates that came with this certificate.
    pub fn new(
        cert: X509,
        source: PathBuf,
        trust: Option<&Trust>,
        extra_chain: &[X509],
    ) -> Result<CertInfo, CertFileError> {
        let der = cert.to_der().map_err(|source_err| CertFileError::OpenSsl {
            path: source.clone(),
            source: source_err,
        })?;
        let (_, parsed) =
            X509Certificate::from_der(&der).map_err(|_| CertFileError::NoCertificate {
                path: source.clone(),
            })?;
        let mut emails: Vec<String> = Vec::new();
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::RFC822Name(addr) = name {
                    emails.push(addr.to_ascii_lowercase());
                }
            }
        }
        for attr in parsed.subject().iter_email() {
            if let Ok(addr) = attr.as_str() {
                emails.push(addr.to_ascii_lowercase());
            }
        }
        emails.sort();
        emails.dedup();

        let eku_ok = match parsed.extended_key_usage() {
            Ok(Some(eku)) => eku.value.email_protection || eku.value.any,
            _ => true,
        };
        let (sign_ku, encrypt_ku) = match parsed.key_usage() {
            Ok(Some(ku)) => (
                ku.value.digital_signature() || ku.value.non_repudiation(),
                ku.value.key_encipherment() || ku.value.key_agreement(),
            ),
            _ => (true, true),
        };
        let untrusted = trust
            .and_then(|t| t.verify(&cert, extra_chain).err())
            .map(CertProblem::Untrusted);
        let problem = |ku_ok: bool, usage: Usage| {
            if !eku_ok {
                Some(CertProblem::NotForEmail)
            } else if !ku_ok {
                Some(CertProblem::KeyUsage(usage))
            } else {
                untrusted.clone()
            }
        };
        Ok(CertInfo {
            source,
            emails,
            not_before: parsed.validity().not_before.timestamp(),
            not_after: parsed.validity().not_after.timestamp(),
            is_ca: parsed.is_ca(),
            sign_problem: problem(sign_ku, Usage::Sign),
            encrypt_problem: problem(encrypt_ku, Usage::Encrypt),
            cert,
        })
    }

    /// Whether this certificate may be used for `usage` at `now` (Unix seconds).
    pub fn check(&self, usage: Usage, now: i64) -> Result<(), CertProblem> {
        let fixed = match usage {
            Usage::Sign => &self.sign_problem,
            Usage::Encrypt => &self.encrypt_problem,
        };
        if let Some(p) = fixed {
            return Err(p.clone());
        }
        if now > self.not_after {
            return Err(CertProblem::Expired { on: self.not_after });
        }
        if now < self.not_before {
            return Err(CertProblem::NotYetValid {
                from: self.not_before,
            });
        }
        Ok(())
    }
}

/// The configured CA bundle plus intermediates found beside the certificates, for chain checks.
pub struct Trust {
    store: X509Store,
    intermediates: Stack<X509>,
}

impl Trust {
    pub fn new(
        ca_bundle: &[X509],
        intermediates: &[X509],
    ) -> Result<Trust, openssl::error::ErrorStack> {
        let mut builder = X509StoreBuilder::new()?;
        for ca in ca_bundle {
            builder.add_cert(ca.clone())?;
        }
        // time is checked per use with the caller's clock; the chain itself is checked here once
        builder.set_flags(X509VerifyFlags::NO_CHECK_TIME)?;
        let mut stack = Stack::new()?;
        for c in intermediates {
            stack.push(c.clone())?;
        }
        Ok(Trust {
            store: builder.build(),
            intermediates: stack,
        })
    }

    /// Loads a PEM bundle of trusted CAs.
    pub fn from_file(path: &Path, intermediates: &[X509]) -> Result<Trust, CertFileError> {
        let certs = read_certs(path)?;
        Trust::new(&certs, intermediates).map_err(|source| CertFileError::OpenSsl {
            path: path.to_path_buf(),
            source,
        })
    }

    fn verify(&self, cert: &X509, extra_chain: &[X509]) -> Result<(), String> {
        let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
        let mut chain = Stack::new().map_err(|e| e.to_string())?;
        for c in self
            .intermediates
            .iter()
            .chain(extra_chain.iter().map(|c| c.as_ref()))
        {
            chain.push(c.to_owned()).map_err(|e| e.to_string())?;
        }
        ctx.init(&self.store, cert, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok(if ok {
                Ok(())
            } else {
                Err(c.error().error_string().to_string())
            })
        })
        .map_err(|e| e.to_string())?
    }
}

/// Reads every certificate in a PEM (one or several) or DER file.
pub fn read_certs(path: &Path) -> Result<Vec<X509>, CertFileError> {
    let bytes = std::fs::read(path).map_err(|source| CertFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        X509::stack_from_pem(&bytes).unwrap_or_default()
    } else {
        X509::from_der(&bytes).map(|c| vec![c]).unwrap_or_default()
    };
    if certs.is_empty() {
        return Err(CertFileError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Unix seconds as `YYYY-MM-DD` (UTC), for messages such as "expired on 2021-01-01".
pub fn ymd(unix: i64) -> String {
    // days to civil date (proleptic Gregorian), after H. Hinnant's public-domain algorithm
    let z = unix.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(unix: i64) -> String {
    let secs = unix.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        ymd(unix),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ymd_formats_known_dates() {
        assert_eq!(ymd(0), "1970-01-01");
        assert_eq!(ymd(1_609_459_200), "2021-01-01");
        assert_eq!(ymd(951_782_400), "2000-02-29");
    }
}
