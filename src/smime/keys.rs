//! Sender signing identities (`keys` folder): `<address>.pem` holding the private key, its certificate
//! and any intermediates, or `<address>.key` beside `<address>.crt`.
//!
//! All identities are read once at load (and again on reload), never per message. A file that cannot be
//! used does not stop the others: its address maps to the error, so a message from that address is
//! refused with the real cause instead of "no key".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::X509;
use thiserror::Error;

use super::certs::{CertFileError, CertInfo, CertProblem, Trust, Usage, read_certs};

/// Why a signing identity cannot be used. All permanent until an admin fixes the files.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "{address}: no signing key in the keys folder (expected {address}.pem or {address}.key + .crt)"
    )]
    Missing { address: String },
    #[error(
        "{path}: private key is readable by group or others (mode {mode:04o}); run chmod 600 on it"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path}: {why}")]
    Unreadable { path: PathBuf, why: String },
    #[error("{path}: the certificate does not match the private key")]
    Mismatch { path: PathBuf },
    #[error("{path}: the certificate is not issued to {address} (it names {names})")]
    WrongAddress {
        path: PathBuf,
        address: String,
        names: String,
    },
    #[error("{address}: signing certificate {path} {problem}")]
    Refused {
        address: String,
        path: PathBuf,
        problem: String,
    },
}

/// One sender's key, certificate and chain, ready for signing.
pub struct Identity {
    pub address: String,
    pub key: PKey<Private>,
    pub cert: X509,
    pub chain: Stack<X509>,
    info: CertInfo,
}

impl Identity {
    /// The identity if its certificate may sign at `now`.
    pub fn check(&self, now: i64) -> Result<(), KeyError> {
        self.info
            .check(Usage::Sign, now)
            .map_err(|p: CertProblem| KeyError::Refused {
                address: self.address.clone(),
                path: self.info.source.clone(),
                problem: p.to_string(),
            })
    }

    pub fn not_after(&self) -> i64 {
        self.info.not_after
    }
}

/// The `keys` folder, indexed by lowercase address. Files are found at load; each identity is read and
/// checked the first time it is asked for (OpenSSL 3 takes about a millisecond to decode a key, so a
/// one-shot `seal` reads only the key it needs), then kept, errors included.
#[derive(Default)]
pub struct KeyStore {
    by_address: HashMap<String, Slot>,
    passphrase: Option<Vec<u8>>,
    trust: Option<Arc<Trust>>,
}

struct Slot {
    key_path: PathBuf,
    cert_path: Option<PathBuf>,
    loaded: OnceLock<Result<Identity, KeyError>>,
}

impl KeyStore {
    /// Indexes every identity in `dir`. `passphrase` unlocks encrypted keys; `trust` checks chains.
    pub fn load(
        dir: &Path,
        passphrase: Option<&[u8]>,
        trust: Option<Arc<Trust>>,
    ) -> Result<KeyStore, CertFileError> {
        let entries = std::fs::read_dir(dir).map_err(|source| CertFileError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        let mut store = KeyStore {
            passphrase: passphrase.map(<[u8]>::to_vec),
            trust,
            ..KeyStore::default()
        };
        for path in &names {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some((address, ext)) = name.rsplit_once('.') else {
                continue;
            };
            if !address.contains('@') || !matches!(ext, "pem" | "key") {
                continue;
            }
            let key_twin = format!("{address}.key");
            if ext == "pem"
                && names
                    .iter()
                    .any(|p| p.file_name().and_then(|n| n.to_str()) == Some(key_twin.as_str()))
            {
                // a .key file for the same address wins; the .pem is then its certificate
                continue;
            }
            let cert_path = (ext == "key").then(|| dir.join(format!("{address}.crt")));
            let slot = Slot {
                key_path: path.clone(),
                cert_path,
                loaded: OnceLock::new(),
            };
            store.by_address.insert(address.to_ascii_lowercase(), slot);
        }
        Ok(store)
    }

    fn get<'a>(&'a self, address: &str, slot: &'a Slot) -> Result<&'a Identity, KeyError> {
        slot.loaded
            .get_or_init(|| {
                load_identity(
                    address,
                    &slot.key_path,
                    slot.cert_path.as_deref(),
                    self.passphrase.as_deref(),
                    self.trust.as_deref(),
                )
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The identity for `address`, checked for signing at `now`.
    pub fn lookup(&self, address: &str, now: i64) -> Result<&Identity, KeyError> {
        let lower = address.to_ascii_lowercase();
        let Some(slot) = self.by_address.get(&lower) else {
            return Err(KeyError::Missing {
                address: address.to_string(),
            });
        };
        let id = self.get(&lower, slot)?;
        id.check(now).map(|()| id)
    }

    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }

    /// Every identity (read now if it was not yet) or the reason it cannot be used, for reports.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Result<&Identity, KeyError>)> {
        self.by_address
            .iter()
            .map(|(a, slot)| (a.as_str(), self.get(a, slot)))
    }
}

fn load_identity(
    address: &str,
    key_path: &Path,
    cert_path: Option<&Path>,
    passphrase: Option<&[u8]>,
    trust: Option<&Trust>,
) -> Result<Identity, KeyError> {
    check_private(key_path)?;
    let unreadable = |path: &Path, why: String| KeyError::Unreadable {
        path: path.to_path_buf(),
        why,
    };
    let pem = std::fs::read(key_path).map_err(|e| unreadable(key_path, e.to_string()))?;
    let key = match passphrase {
        Some(pass) => PKey::private_key_from_pem_passphrase(&pem, pass),
        // never let OpenSSL prompt on a terminal for a missing passphrase
        None => PKey::private_key_from_pem_callback(&pem, |_| Ok(0)),
    }
    .map_err(|_| {
        let encrypted = pem.windows(9).any(|w| w == b"ENCRYPTED");
        unreadable(
            key_path,
            if encrypted && passphrase.is_none() {
                "the private key is encrypted and no key_passphrase_file is configured".into()
            } else if encrypted {
                "the private key cannot be decrypted with the passphrase from key_passphrase_file"
                    .into()
            } else {
                "no readable private key in it".into()
            },
        )
    })?;
    let cert_source = cert_path.unwrap_or(key_path);
    let mut certs = read_certs(cert_source).map_err(|e| match e {
        CertFileError::NoCertificate { .. } => {
            unreadable(cert_source, "no certificate in it".into())
        }
        other => unreadable(cert_source, other.to_string()),
    })?;
    // the certificate that matches the key is the signer; the others are its chain
    let position = certs
        .iter()
        .position(|c| c.public_key().is_ok_and(|pk| pk.public_eq(&key)))
        .ok_or_else(|| KeyError::Mismatch {
            path: cert_source.to_path_buf(),
        })?;
    let cert = certs.remove(position);
    let mut chain = Stack::new().map_err(|e| unreadable(cert_source, e.to_string()))?;
    for c in &certs {
        chain
            .push(c.clone())
            .map_err(|e| unreadable(cert_source, e.to_string()))?;
    }
    // the sender's own intermediates take part in the chain check
    let info = CertInfo::new(cert.clone(), cert_source.to_path_buf(), trust, &certs)
        .map_err(|e| unreadable(cert_source, e.to_string()))?;
    if !info.emails.iter().any(|e| e.eq_ignore_ascii_case(address)) {
        return Err(KeyError::WrongAddress {
            path: cert_source.to_path_buf(),
            address: address.to_string(),
            names: if info.emails.is_empty() {
                "no address".into()
            } else {
                info.emails.join(", ")
            },
        });
    }
    Ok(Identity {
        address: address.to_ascii_lowercase(),
        key,
        cert,
        chain,
        info,
    })
}

/// Refuses a private key file that group or others can read, as ssh does.
fn check_private(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| KeyError::Unreadable {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}
