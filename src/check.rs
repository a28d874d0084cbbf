//! `smime-pickup check`: everything the daemon relies on, verified before it matters, as a readable
//! report. Each problem names its path or address. Exit 0 only when all is well: 78 for configuration,
//! 66 for missing folders or keys, 69 when the SMTP or API server cannot be used.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::{Config, Hop, TlsMode};
use crate::deliver::smtp::SmtpRoute;
use crate::keyring;

mod api;
use crate::smime::certs::{CertProblem, Usage, unix_now, ymd};

/// What one line of the report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    /// a missing folder, key or certificate: 66
    Missing,
    /// SMTP or the API unusable: 69
    Unavailable,
    /// the configuration itself: 78
    Config,
}

pub struct Report {
    pub lines: Vec<(Level, String)>,
}

impl Report {
    pub(crate) fn add(&mut self, level: Level, text: impl Into<String>) {
        self.lines.push((level, text.into()));
    }

    /// sysexits code for the worst problem found (0 when there is none).
    pub fn exit_code(&self) -> u8 {
        match self
            .lines
            .iter()
            .map(|(l, _)| *l)
            .max()
            .unwrap_or(Level::Ok)
        {
            Level::Ok | Level::Warning => 0,
            Level::Missing => 66,
            Level::Unavailable => 69,
            Level::Config => 78,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (level, text) in &self.lines {
            let tag = match level {
                Level::Ok => "ok     ",
                Level::Warning => "warning",
                _ => "PROBLEM",
            };
            out.push_str(&format!("{tag} {text}\n"));
        }
        let problems = self
            .lines
            .iter()
            .filter(|(l, _)| *l > Level::Warning)
            .count();
        let warnings = self
            .lines
            .iter()
            .filter(|(l, _)| *l == Level::Warning)
            .count();
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        out.push_str(&format!(
            "{}, {}\n",
            plural(problems, "problem"),
            plural(warnings, "warning")
        ));
        out
    }
}

/// Checks `config` (already parsed: a parse error is reported by the caller with code 78).
pub fn check(config: &Config, smtp: bool, api: bool) -> Report {
    let mut r = Report { lines: Vec::new() };
    match &config.source {
        Some(p) => r.add(Level::Ok, format!("config {} parses", p.display())),
        None => r.add(Level::Warning, "no config file: built-in defaults"),
    }
    folders(config, &mut r);
    r.lines
        .extend(crate::deliver::pickup::sync::report(config).map(|l| (Level::Ok, l)));
    keys_and_certs(config, &mut r);
    if config.route.uses(Hop::Api) || api {
        api::settings(config, &mut r);
    }
    harvest(config, &mut r);
    if smtp {
        smtp_check(config, &mut r);
    }
    if api {
        api::server(config, &mut r);
    }
    r
}

fn folders(config: &Config, r: &mut Report) {
    let needs_pickup = config.route.uses(Hop::Pickup);
    let mut wanted: Vec<(&str, Option<&PathBuf>, bool)> = vec![
        ("spool", config.spool.as_ref(), true),
        ("pickup", config.pickup.as_ref(), needs_pickup),
        ("failed", config.failed.as_ref(), true),
    ];
    wanted.push(("keys", Some(&config.keys), true));
    wanted.push(("certs", Some(&config.certs), true));
    for (key, path, required) in wanted {
        match path {
            None if required => r.add(Level::Config, format!("`{key}` is not set")),
            None => {}
            Some(p) => match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => {
                    let writable = key == "keys"
                        || key == "certs"
                        || rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_ok();
                    if writable {
                        let what = if key == "keys" || key == "certs" {
                            "a folder"
                        } else {
                            "a writable folder"
                        };
                        r.add(Level::Ok, format!("{key} {} is {what}", p.display()));
                    } else {
                        r.add(
                            Level::Missing,
                            format!("{key} {}: not writable by this user", p.display()),
                        );
                    }
                }
                Ok(_) => r.add(
                    Level::Missing,
                    format!("{key} {}: not a folder", p.display()),
                ),
                Err(e) if key == "failed" && e.kind() == std::io::ErrorKind::NotFound => r.add(
                    Level::Warning,
                    format!("failed {}: missing (created at start)", p.display()),
                ),
                Err(e) => r.add(Level::Missing, format!("{key} {}: {e}", p.display())),
            },
        }
    }
    // our own folders: they must exist and be writable, or be creatable
    let work = config
        .work
        .clone()
        .or_else(|| config.spool.as_ref().map(|s| s.join(".smime-pickup")));
    let staging = config.staging.clone().or_else(|| {
        config
            .pickup
            .as_ref()
            .and_then(|p| p.parent())
            .map(|p| p.join(".smime-pickup-staging"))
    });
    for (key, dir) in [("work", work), ("staging", staging)] {
        let Some(dir) = dir else { continue };
        let target = if dir.exists() {
            dir.clone()
        } else {
            dir.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        match rustix::fs::access(&target, rustix::fs::Access::WRITE_OK) {
            Ok(()) => r.add(
                Level::Ok,
                format!("{key} {} is writable (or can be created)", dir.display()),
            ),
            Err(e) => r.add(
                Level::Missing,
                format!(
                    "{key} {}: cannot be written by this user ({e})",
                    dir.display()
                ),
            ),
        }
    }
    // the metrics file's folder: written every second by the daemon
    if let Some(m) = &config.metrics_file {
        let dir = m
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        match rustix::fs::access(dir, rustix::fs::Access::WRITE_OK) {
            Ok(()) => r.add(
                Level::Ok,
                format!("metrics_file {}: its folder is writable", m.display()),
            ),
            Err(e) => r.add(
                Level::Missing,
                format!(
                    "metrics_file {}: its folder {} cannot be written ({e})",
                    m.display(),
                    dir.display()
                ),
            ),
        }
    }
    // what waits in the failed folder, by class (`failed list` shows each)
    if let Some(failed) = config.failed.as_deref().filter(|f| f.is_dir())
        && let Ok(list) = crate::failed::entries(failed)
        && !list.is_empty()
    {
        let by_class: Vec<String> = crate::failed::counts(&list)
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        r.add(
            Level::Warning,
            format!(
                "failed {}: {} input{} wait ({}); `smime-pickup failed list` says why",
                failed.display(),
                list.len(),
                if list.len() == 1 { "" } else { "s" },
                by_class.join(", ")
            ),
        );
    }
    // layouts that strand or loop: the same rules `run` and `once` refuse to start on
    for problem in crate::layout::problems(config) {
        r.add(Level::Config, problem);
    }
}

fn keys_and_certs(config: &Config, r: &mut Report) {
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

/// `certs_inbox`, `harvest_trust`, `harvest_require_dkim`: what harvesting replies needs.
fn harvest(config: &Config, r: &mut Report) {
    let Some(inbox) = &config.certs_inbox else {
        return;
    };
    match std::fs::metadata(inbox) {
        Ok(m) if m.is_dir() && rustix::fs::access(inbox, rustix::fs::Access::WRITE_OK).is_ok() => r
            .add(
                Level::Ok,
                format!("certs_inbox {} is a writable folder", inbox.display()),
            ),
        Ok(_) => r.add(
            Level::Missing,
            format!("certs_inbox {}: not a writable folder", inbox.display()),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => r.add(
            Level::Warning,
            format!(
                "certs_inbox {}: missing (created at start)",
                inbox.display()
            ),
        ),
        Err(e) => r.add(
            Level::Missing,
            format!("certs_inbox {}: {e}", inbox.display()),
        ),
    }
    match crate::harvest::Harvester::from_config(config) {
        Ok(_) => r.add(
            Level::Ok,
            format!(
                "harvest: certificates must chain to {}{}",
                match config.harvest_trust {
                    crate::config::HarvestTrust::Ca => "the `ca` bundle",
                    crate::config::HarvestTrust::System => "the system's CA bundle",
                },
                if config.harvest_require_dkim {
                    ", replies need an aligned DKIM signature"
                } else {
                    ""
                }
            ),
        ),
        Err(e) => r.add(Level::Config, e.to_string()),
    }
    if config.certs.is_dir()
        && rustix::fs::access(&config.certs, rustix::fs::Access::WRITE_OK).is_err()
    {
        r.add(
            Level::Missing,
            format!(
                "certs {}: not writable by this user: harvested certificates cannot be saved",
                config.certs.display()
            ),
        );
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

fn smtp_check(config: &Config, r: &mut Report) {
    let s = &config.smtp;
    if s.host.is_empty() {
        r.add(
            Level::Config,
            "--smtp: no SMTP server (set SMTP_HOST or [smtp] host)",
        );
        return;
    }
    let route = match SmtpRoute::new(s.clone()) {
        Ok(route) => route,
        Err(why) => return r.add(Level::Config, why),
    };
    match route.open() {
        Ok(conn) => {
            let auth = if s.user.is_some() {
                format!(", authenticated as {:?}", s.user.as_deref().unwrap_or(""))
            } else {
                String::new()
            };
            let verify = if s.tls_verify {
                ""
            } else {
                " (certificate NOT verified: tls_verify = false)"
            };
            let pipelining = if conn.pipelining() {
                ", offers PIPELINING"
            } else {
                ""
            };
            r.add(
                Level::Ok,
                format!(
                    "SMTP {}:{}: connected ({}{auth}){verify}{pipelining}",
                    s.host, s.port, conn.security
                ),
            );
            if conn.security == "plain" && s.tls != TlsMode::None {
                r.add(
                    Level::Warning,
                    format!(
                        "SMTP {}:{}: the server offers no STARTTLS: messages go in clear text (tls = \"none\" if that is deliberate, \"starttls\" to require TLS)",
                        s.host, s.port
                    ),
                );
            }
            conn.quit();
        }
        Err(e) => r.add(Level::Unavailable, format!("SMTP {e}")),
    }
}
