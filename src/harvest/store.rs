//! Writing a harvested certificate into the certs folder as `<address>.crt`, and listing the folder.
//!
//! The file is written whole under a temporary dot-name (which the certificate index ignores),
//! fsynced, and renamed over `<address>.crt`; the folder is fsynced after. A certificate already
//! there is replaced only by one that expires later; it is kept as `<address>.crt.old` (linked there
//! before the rename, so `<address>.crt` never disappears, even for a moment). Importers (the
//! daemon's inbox, `certs import`) take an exclusive `flock` on the folder around the compare and
//! replace, so two of them never both decide on the same file.

use std::io::Write;
use std::path::{Path, PathBuf};

use openssl::x509::X509;
use thiserror::Error;

use crate::smime::certs::{CertInfo, read_certs, ymd};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{address} already has a certificate that expires as late or later ({})", ymd(*.until))]
    NotNewer { address: String, until: i64 },
    #[error("{0:?} cannot name a file (a slash, a leading dot, a control character or no @)")]
    UnsafeAddress(String),
}

/// What happened to `<address>.crt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    New,
    Replaced,
    /// the same certificate was there already
    Unchanged,
}

/// Whether `address` may become a file name in the certs folder.
pub fn safe_address(address: &str) -> bool {
    !address.is_empty()
        && address.len() <= 254
        && !address.starts_with('.')
        && address.contains('@')
        && !address.contains('/')
        && !address.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Installs `leaf` (then `chain`) as `<dir>/<address>.crt` under the rules above.
pub fn install(
    dir: &Path,
    address: &str,
    leaf: &CertInfo,
    chain: &[X509],
) -> Result<Written, StoreError> {
    if !safe_address(address) {
        return Err(StoreError::UnsafeAddress(address.to_string()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { path, source }
    };
    let _lock = lock(dir).map_err(io(dir))?;
    let target = dir.join(format!("{address}.crt"));
    let leaf_der = leaf.cert.to_der().map_err(|e| io(&target)(e.into()))?;
    let existing = match read_certs(&target) {
        Ok(certs) => certs.into_iter().next(),
        Err(crate::smime::certs::CertFileError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            None
        }
        // an unreadable or broken file is replaced (it serves nobody), after keeping it as .old
        Err(_) => None,
    };
    if let Some(old) = &existing {
        if old.to_der().is_ok_and(|d| d == leaf_der) {
            return Ok(Written::Unchanged);
        }
        let old_info = CertInfo::new(old.clone(), target.clone(), None, &[])
            .map_err(|e| io(&target)(std::io::Error::other(e.to_string())))?;
        if old_info.not_after >= leaf.not_after {
            return Err(StoreError::NotNewer {
                address: address.to_string(),
                until: old_info.not_after,
            });
        }
    }
    let mut pem = leaf.cert.to_pem().map_err(|e| io(&target)(e.into()))?;
    for c in chain {
        pem.extend(c.to_pem().map_err(|e| io(&target)(e.into()))?);
    }
    let pid = std::process::id();
    let tmp = dir.join(format!(".{address}.crt.{pid}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = crate::dirs::create_new_file(&tmp, 0o644)?;
        f.write_all(&pem)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    let had_file = target.symlink_metadata().is_ok();
    if had_file {
        let old_tmp = dir.join(format!(".{address}.crt.old.{pid}.tmp"));
        let _ = std::fs::remove_file(&old_tmp);
        std::fs::hard_link(&target, &old_tmp)
            .and_then(|()| std::fs::rename(&old_tmp, dir.join(format!("{address}.crt.old"))))
            .map_err(io(&target))?;
    }
    std::fs::rename(&tmp, &target).map_err(io(&target))?;
    crate::spool::claim::sync_dir(dir).map_err(io(dir))?;
    Ok(if had_file {
        Written::Replaced
    } else {
        Written::New
    })
}

/// An exclusive lock on the folder itself, released when dropped.
fn lock(dir: &Path) -> std::io::Result<rustix::fd::OwnedFd> {
    use rustix::fs::{FlockOperation, Mode, OFlags, flock, open};
    let fd = open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    flock(&fd, FlockOperation::LockExclusive)?;
    Ok(fd)
}

/// The issuer as one line (`CN=…, O=…`), controls escaped (certificates come from strangers).
pub fn issuer_line(cert: &X509) -> String {
    let parts: Vec<String> = cert
        .issuer_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect();
    crate::logging::escape_controls(&parts.join(", ")).into_owned()
}

/// `RSA 2048`, `EC prime256v1`, `ED25519`, …
pub fn key_type(cert: &X509) -> String {
    let Ok(key) = cert.public_key() else {
        return "unknown".into();
    };
    match key.id() {
        openssl::pkey::Id::RSA => format!("RSA {}", key.bits()),
        openssl::pkey::Id::EC => key
            .ec_key()
            .ok()
            .and_then(|k| k.group().curve_name())
            .and_then(|n| n.short_name().ok())
            .map_or_else(|| "EC".into(), |n| format!("EC {n}")),
        openssl::pkey::Id::ED25519 => "ED25519".into(),
        other => format!("key type {}", other.as_raw()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_addresses_name_files() {
        for ok in ["nina@example.org", "o'brien+tag@example.org"] {
            assert!(safe_address(ok), "{ok}");
        }
        for bad in [
            "",
            ".hidden@example.org",
            "a/b@example.org",
            "../x@example.org",
            "nina@exa\nmple.org",
            "tab\t@example.org",
            "noat.example.org",
        ] {
            assert!(!safe_address(bad), "{bad:?}");
        }
    }
}
