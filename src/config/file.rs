//! The configuration file as written: its keys (serde refuses unknown ones) and its syntax errors,
//! reported by line without quoting a secret. `Config::from_toml` resolves it into a `Config`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, HarvestTrust, api, smtp::SmtpFile};
use crate::seal::Policy;

/// The file as written; see `Config` for the resolved form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub(super) spool: Option<PathBuf>,
    pub(super) pickup: Option<PathBuf>,
    pub(super) failed: Option<PathBuf>,
    pub(super) work: Option<PathBuf>,
    pub(super) staging: Option<PathBuf>,
    pub(super) sync: Option<crate::deliver::pickup::SyncStrategy>,
    pub(super) reuse_inodes: Option<crate::deliver::pickup::recycle::Reuse>,
    pub(super) workers: Option<usize>,
    pub(super) settle_ms: Option<u64>,
    pub(super) rescan_seconds: Option<u64>,
    pub(super) pickup_max_backlog: Option<usize>,
    pub(super) retry_max_seconds: Option<u64>,
    pub(super) max_recipients_per_file: Option<usize>,
    pub(super) keys: Option<PathBuf>,
    pub(super) certs: Option<PathBuf>,
    pub(super) ca: Option<PathBuf>,
    pub(super) key_passphrase_file: Option<PathBuf>,
    pub(super) max_message_bytes: Option<usize>,
    pub(super) max_mime_depth: Option<usize>,
    pub(super) max_header_bytes: Option<usize>,
    pub(super) max_mime_parts: Option<usize>,
    pub(super) max_recipients: Option<usize>,
    pub(super) route: Option<api::RouteFile>,
    pub(super) min_free_bytes: Option<u64>,
    pub(super) metrics_file: Option<PathBuf>,
    pub(super) inputs: Option<Vec<String>>,
    pub(super) certs_inbox: Option<PathBuf>,
    pub(super) harvest_trust: Option<HarvestTrust>,
    pub(super) harvest_require_dkim: Option<bool>,
    pub(super) harvest_dns: Option<Vec<String>>,
    #[serde(default)]
    pub(super) seal: Policy,
    #[serde(default)]
    pub(super) smtp: SmtpFile,
    #[serde(default)]
    pub(super) api: api::ApiFile,
}

/// Keys whose values are secrets: never quoted in an error.
const SECRET_KEYS: [&str; 3] = ["password", "key", "api_key"];

pub(super) fn parse_error(text: &str, shown: &Path, e: &toml::de::Error) -> ConfigError {
    let start = e.span().map_or(0, |s| s.start.min(text.len()));
    let end = e.span().map_or(text.len(), |s| s.end.min(text.len()));
    let line = text[..start].matches('\n').count() + 1;
    // the lines the error touches, and the one before it (an unterminated string is reported
    // where the parser gave up, which can be the next line)
    let first = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let from = text[..first.saturating_sub(1)]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let to = text[end..].find('\n').map_or(text.len(), |i| end + i);
    let near_secret = text[from..to].lines().any(|l| {
        let key = l.split('=').next().unwrap_or("").trim().trim_matches('"');
        l.contains('=') && SECRET_KEYS.contains(&key)
    });
    let message = if near_secret {
        "cannot parse the value of a secret key (not shown); check its quoting".to_string()
    } else {
        crate::logging::escape_controls(e.message().trim()).into_owned()
    };
    ConfigError::Parse {
        path: shown.to_path_buf(),
        line,
        message,
    }
}
