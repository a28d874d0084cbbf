//! `check`, harvest: the `certs_inbox` folder and what harvested certificates must chain to.

use super::{Level, Report};
use crate::config::Config;

/// `certs_inbox`, `harvest_trust`, `harvest_require_dkim`, `harvest_dns`: what harvesting replies
/// needs.
pub(super) fn harvest(config: &Config, r: &mut Report) {
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
    dns(config, r);
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

/// Where the DKIM check looks up key records (`harvest_dns`); a list nobody asks is a warning.
fn dns(config: &Config, r: &mut Report) {
    let servers = || {
        config
            .harvest_dns
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (config.harvest_require_dkim, config.harvest_dns.is_empty()) {
        (true, true) => r.add(
            Level::Ok,
            "harvest: DKIM keys are looked up with the system's resolver (/etc/resolv.conf)",
        ),
        (true, false) => r.add(
            Level::Ok,
            format!(
                "harvest: DKIM keys are looked up at {} (harvest_dns)",
                servers()
            ),
        ),
        (false, false) => r.add(
            Level::Warning,
            format!(
                "harvest_dns {} is not used: harvest_require_dkim is false",
                servers()
            ),
        ),
        (false, true) => {}
    }
}
