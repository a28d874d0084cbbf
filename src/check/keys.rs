//! `check`, keys and certificates: the sender identities with their key files' modes, the
//! recipients' certificates and the CA bundle, as the keyring loads them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Level, Report};
use crate::config::Config;
use crate::keyring;
use crate::smime::certs::{CertProblem, Usage, unix_now, ymd};

pub(super) fn keys_and_certs(config: &Config, r: &mut Report) {
    if !config.keys.is_dir() || !config.certs.is_dir() {
        return; // already reported
    }
    let ring = match keyring::load(config) {
        Ok(ring) => ring,
        Err(e) => {
            // the folders exist (checked above): this is the CA bundle or the passphrase file the
            // config names, a configuration problem as for `seal`
            r.add(Level::Config, e.to_string());
            return;
        }
    };
    let now = unix_now();
    let soon = now + 30 * 86_400;
    let mut identities: Vec<_> = ring.keys.entries().collect();
    identities.sort_by(|a, b| a.0.cmp(b.0));
    if !identities.is_empty() && config.seal.sign && crate::keyring::usable_signers(&ring) == 0 {
        r.add(
            Level::Missing,
            format!(
                "keys {}: none of the {} signing keys is usable: every input would be refused",
                config.keys.display(),
                identities.len()
            ),
        );
    }
    if identities.is_empty() {
        r.add(
            Level::Missing,
            format!(
                "keys {}: no signing identity (<address>.pem or .key + .crt)",
                config.keys.display()
            ),
        );
    }
    for (address, identity) in identities {
        match identity {
            Ok(id) => match id.check(now) {
                Ok(()) if id.not_after() < soon => r.add(
                    Level::Warning,
                    format!(
                        "signing key {address}: certificate expires on {}",
                        ymd(id.not_after())
                    ),
                ),
                Ok(()) => r.add(
                    Level::Ok,
                    format!(
                        "signing key {address}: usable until {}",
                        ymd(id.not_after())
                    ),
                ),
                Err(e) => r.add(Level::Missing, e.to_string()),
            },
            Err(e) => r.add(Level::Missing, e.to_string()),
        }
    }
    for unreadable in &ring.certs.unreadable {
        r.add(Level::Warning, unreadable.clone());
    }
    r.add(
        Level::Ok,
        format!(
            "certs {}: {} files, {} addresses",
            config.certs.display(),
            ring.certs.files,
            ring.certs.addresses()
        ),
    );
    let mut by_address: std::collections::BTreeMap<&str, Vec<_>> =
        std::collections::BTreeMap::new();
    for (address, info) in ring.certs.all() {
        by_address.entry(address).or_default().push(info);
    }
    for (address, infos) in by_address {
        let usable: Vec<_> = infos
            .iter()
            .filter(|c| c.check(Usage::Encrypt, now).is_ok())
            .collect();
        match usable.iter().map(|c| c.not_after).max() {
            Some(until) if until < soon => r.add(
                Level::Warning,
                format!("{address}: its certificate expires on {}", ymd(until)),
            ),
            Some(_) => {}
            None => {
                let why: Vec<String> = infos
                    .iter()
                    .map(|c| match c.check(Usage::Encrypt, now) {
                        Err(p @ CertProblem::Expired { .. }) => {
                            format!("{} {p}", c.source.display())
                        }
                        Err(p) => format!("{} {p}", c.source.display()),
                        Ok(()) => String::new(),
                    })
                    .collect();
                r.add(
                    Level::Warning,
                    format!("{address}: no usable certificate ({})", why.join("; ")),
                );
            }
        }
    }
    for (path, mode) in key_file_modes(&config.keys) {
        if mode & 0o077 != 0 {
            r.add(
                Level::Missing,
                format!(
                    "{}: private key readable by group or others (mode {mode:04o})",
                    path.display()
                ),
            );
        }
    }
}

fn key_file_modes(dir: &Path) -> Vec<(PathBuf, u32)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "key" || e == "pem"))
        .filter_map(|p| {
            std::fs::metadata(&p)
                .ok()
                .map(|m| (p, m.permissions().mode() & 0o7777))
        })
        .collect()
}
