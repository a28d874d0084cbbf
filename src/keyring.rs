//! Loading the keyring (sender keys + recipient certificates + CA) from a configuration, once at start
//! and again on reload.

use thiserror::Error;

use crate::config::Config;
use crate::seal::Keyring;
use crate::smime::certs::{CertFileError, CertStore, Trust};
use crate::smime::keys::KeyStore;

#[derive(Debug, Error)]
pub enum KeyringError {
    #[error("keys folder {0}: {1}")]
    KeysFolder(std::path::PathBuf, #[source] std::io::Error),
    #[error("certs folder {0}: {1}")]
    CertsFolder(std::path::PathBuf, #[source] std::io::Error),
    #[error("key_passphrase_file {0}: {1}")]
    Passphrase(std::path::PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Cert(#[from] CertFileError),
}

/// Reads keys, certificates and the CA bundle named by `config`.
pub fn load(config: &Config) -> Result<Keyring, KeyringError> {
    for (dir, make) in [
        (&config.keys, KeyringError::KeysFolder as fn(_, _) -> _),
        (&config.certs, KeyringError::CertsFolder as fn(_, _) -> _),
    ] {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(make(dir.clone(), std::io::Error::other("not a folder"))),
            Err(e) => return Err(make(dir.clone(), e)),
        }
    }
    let passphrase = match &config.key_passphrase_file {
        Some(path) => {
            let raw = std::fs::read(path).map_err(|e| KeyringError::Passphrase(path.clone(), e))?;
            // the passphrase is the first line, without its line ending
            let line = raw.split(|&b| b == b'\n').next().unwrap_or_default();
            Some(line.strip_suffix(b"\r").unwrap_or(line).to_vec())
        }
        None => None,
    };
    let trust = config
        .ca
        .as_deref()
        .map(|ca| Trust::from_file(ca, &[]))
        .transpose()?
        .map(std::sync::Arc::new);
    let keys = KeyStore::load(&config.keys, passphrase.as_deref(), trust)?;
    let certs = CertStore::load(&config.certs, config.ca.as_deref())?;
    Ok(Keyring { keys, certs })
}

/// Signing identities in `keyring` that can sign now (loaded, certificate valid and usable).
pub fn usable_signers(keyring: &Keyring) -> usize {
    let now = crate::smime::certs::unix_now();
    keyring
        .keys
        .entries()
        .filter(|(_, id)| id.as_ref().is_ok_and(|id| id.check(now).is_ok()))
        .count()
}

/// Says loudly when `config` signs but no key can: every input would be refused.
pub fn warn_if_no_signer(config: &Config, keyring: &Keyring) {
    if config.seal.sign && usable_signers(keyring) == 0 {
        log::error!(
            "no usable signing key in {} ({} found): every input will be refused until one is \
             added (then reload: SIGHUP); `smime-pickup check` says why each is unusable",
            config.keys.display(),
            keyring.keys.len()
        );
    }
}
