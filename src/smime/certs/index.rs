//! The recipient index: every certificate of the `certs` folder that passes the checks, by the
//! lowercase addresses it certifies; a lookup picks the one to encrypt for at the caller's `now`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::x509::X509;
use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CertFileError, CertInfo, Trust, Usage, read_certs};

/// Why no certificate could be found for an address.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LookupError {
    #[error("{address}: no certificate in the certs folder")]
    Missing { address: String },
    #[error("{address}: {}", .problems.join("; "))]
    Refused {
        address: String,
        problems: Vec<String>,
    },
}

/// Recipient certificates indexed by lowercase address.
/// More addresses than any person or team certificate carries: a certificate over this is refused (it
/// would only inflate the index; harvested certificates come from strangers).
pub const MAX_ADDRESSES_PER_CERT: usize = 1000;

#[derive(Default)]
pub struct CertStore {
    /// every address a certificate certifies points at the one shared copy of its facts (a clone per
    /// address made memory grow with the square of the address count)
    by_address: HashMap<String, Vec<Arc<CertInfo>>>,
    /// files that could not be read: reported, never fatal for the other files
    pub unreadable: Vec<String>,
    pub files: usize,
}

impl CertStore {
    /// Indexes every `.crt`, `.pem`, `.cer` (and `.der`) file below `dir`. CA certificates found there
    /// serve as intermediates for the chain check.
    pub fn load(dir: &Path, ca_bundle: Option<&Path>) -> Result<CertStore, CertFileError> {
        let mut found: Vec<(X509, PathBuf)> = Vec::new();
        let mut store = CertStore::default();
        let walker = walkdir::WalkDir::new(dir)
            .follow_links(true)
            .sort_by_file_name();
        for entry in walker {
            let entry = entry.map_err(|e| CertFileError::Io {
                path: e.path().unwrap_or(dir).to_path_buf(),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("walk error")),
            })?;
            let path = entry.path();
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            if !entry.file_type().is_file()
                || !matches!(ext.as_str(), "crt" | "pem" | "cer" | "der")
            {
                continue;
            }
            match read_certs(path) {
                Ok(certs) => {
                    store.files += 1;
                    found.extend(certs.into_iter().map(|c| (c, path.to_path_buf())));
                }
                Err(e) => store.unreadable.push(e.to_string()),
            }
        }
        let cas: Vec<X509> = found
            .iter()
            .filter(|(c, _)| {
                c.to_der()
                    .ok()
                    .and_then(|d| X509Certificate::from_der(&d).ok().map(|(_, p)| p.is_ca()))
                    .unwrap_or(false)
            })
            .map(|(c, _)| c.clone())
            .collect();
        let trust = ca_bundle.map(|ca| Trust::from_file(ca, &cas)).transpose()?;
        for (cert, path) in found {
            let info = CertInfo::new(cert, path, trust.as_ref(), &[])?;
            if info.is_ca {
                continue;
            }
            if info.emails.len() > MAX_ADDRESSES_PER_CERT {
                store.unreadable.push(format!(
                    "{}: a certificate for {} addresses (over {MAX_ADDRESSES_PER_CERT}): not used",
                    info.source.display(),
                    info.emails.len()
                ));
                continue;
            }
            let info = Arc::new(info);
            for addr in &info.emails {
                store
                    .by_address
                    .entry(addr.clone())
                    .or_default()
                    .push(Arc::clone(&info));
            }
        }
        Ok(store)
    }

    /// The certificate to encrypt for `address` at `now`: among the usable ones, the one valid longest.
    pub fn lookup(&self, address: &str, now: i64) -> Result<&X509, LookupError> {
        let key = address.to_ascii_lowercase();
        let Some(candidates) = self.by_address.get(&key) else {
            return Err(LookupError::Missing {
                address: address.to_string(),
            });
        };
        candidates
            .iter()
            .filter(|c| c.check(Usage::Encrypt, now).is_ok())
            .max_by_key(|c| c.not_after)
            .map(|c| &c.cert)
            .ok_or_else(|| LookupError::Refused {
                address: address.to_string(),
                problems: candidates
                    .iter()
                    .map(|c| {
                        let problem = c.check(Usage::Encrypt, now).unwrap_err();
                        format!("certificate {} {problem}", c.source.display())
                    })
                    .collect(),
            })
    }

    pub fn addresses(&self) -> usize {
        self.by_address.len()
    }

    /// Every indexed certificate (for reports such as `check`).
    pub fn all(&self) -> impl Iterator<Item = (&str, &CertInfo)> {
        self.by_address
            .iter()
            .flat_map(|(a, v)| v.iter().map(move |c| (a.as_str(), c.as_ref())))
    }
}
