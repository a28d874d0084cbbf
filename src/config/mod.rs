//! Configuration: one TOML file, every key with a default, unknown keys refused.
//!
//! Where the file is: `-c/--config`, else `$SMIME_PICKUP_CONFIG`, else
//! `/etc/smime-pickup/smime-pickup.toml`. A file named explicitly must exist; the default one may be
//! absent (then every key has its default). Relative paths in the file are resolved against the file's
//! folder, so a config and its keys can move together.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::message::Limits;
use crate::seal::Policy;

mod api;
mod file;
mod ranges;
mod smtp;
pub use api::{Api, Flavor, Hop, Route};
pub use smtp::{Smtp, TlsMode};

use file::{File, parse_error};
pub use ranges::RANGES;
use ranges::check_ranges;
use smtp::resolve_smtp;

pub const DEFAULT_CONFIG: &str = "/etc/smime-pickup/smime-pickup.toml";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A syntax or type error, by line. toml's own text quotes the offending source line and value:
    /// that is left out, and near a secret key (`password`) even the message is (it can quote the
    /// value).
    #[error("{path}: line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

/// What a harvested certificate must chain to (`harvest_trust`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HarvestTrust {
    /// the `ca` bundle of the config
    #[default]
    Ca,
    /// the system's bundle (`SSL_CERT_FILE`, else the distribution's file)
    System,
}

/// A password: never printed, not even its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"********\"")
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (None: built-in defaults)
    pub source: Option<PathBuf>,
    /// The spool folder the daemon watches (recursively); required by `run` and `once`
    pub spool: Option<PathBuf>,
    /// The MTA's pickup directory; never created by us (a missing one means an unmounted volume)
    pub pickup: Option<PathBuf>,
    /// Quarantine: refused inputs, each with a `.reason` file
    pub failed: Option<PathBuf>,
    /// Claimed inputs, one folder per running instance (default: `.smime-pickup` inside the spool,
    /// ignored by the scanner; must be on the spool's filesystem)
    pub work: Option<PathBuf>,
    /// Outputs before their rename into pickup (default: `.smime-pickup-staging` beside the pickup
    /// directory; must be on the pickup's filesystem)
    pub staging: Option<PathBuf>,
    /// How staged outputs are made durable: `auto` (by filesystem), `file`, `filesystem` (syncfs)
    pub sync: crate::deliver::pickup::SyncStrategy,
    /// Where delivered inputs' inodes become outputs: `auto` (ext4 without a journal), `always`, `never`
    pub reuse_inodes: crate::deliver::pickup::recycle::Reuse,
    /// Sealing threads (default: number of cores; twice that with `route = "smtp"`)
    pub workers: usize,
    /// How long an in-place written file must stay unchanged after it is closed
    pub settle: std::time::Duration,
    /// Full rescan of the spool, besides the watcher's events
    pub rescan: std::time::Duration,
    /// Pause taking new inputs while pickup holds more files than this
    pub pickup_max_backlog: usize,
    /// Longest wait between retries of a deferred input
    pub retry_max: std::time::Duration,
    /// Recipients per pickup file (PowerMTA recommends at most 5,000)
    pub max_recipients_per_file: usize,
    /// Where sealed messages go, routes in the order they are tried; default pickup-then-smtp when
    /// an SMTP host is set, else pickup
    pub route: Route,
    /// The pickup route counts as unhealthy below this much free space
    pub min_free_bytes: u64,
    /// File name patterns of inputs (`*` any run, `?` one character; default `*.eml`)
    pub inputs: Vec<String>,
    /// Prometheus text file, rewritten every second (node_exporter's textfile collector)
    pub metrics_file: Option<PathBuf>,
    pub smtp: Smtp,
    pub api: Api,
    /// Sender signing identities (default: `keys` beside the config file)
    pub keys: PathBuf,
    /// Recipient certificates (default: `certs` beside the config file)
    pub certs: PathBuf,
    /// Trusted CA bundle (PEM); no chain check when unset
    pub ca: Option<PathBuf>,
    /// File holding the passphrase of encrypted private keys
    pub key_passphrase_file: Option<PathBuf>,
    /// What one input may hold (`max_message_bytes`, `max_mime_depth`, `max_header_bytes`,
    /// `max_mime_parts`, `max_recipients`); more is refused
    pub limits: Limits,
    /// Signed replies to harvest recipients' certificates from (watched by the daemon)
    pub certs_inbox: Option<PathBuf>,
    /// What harvested certificates must chain to
    pub harvest_trust: HarvestTrust,
    /// Harvest only replies with a passing DKIM signature of their From domain
    pub harvest_require_dkim: bool,
    /// The name servers the DKIM check asks (empty: the system's, `/etc/resolv.conf`)
    pub harvest_dns: Vec<std::net::SocketAddr>,
    pub seal: Policy,
}

impl Config {
    /// Finds and reads the configuration as described in the module documentation.
    pub fn locate(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(path) = explicit {
            return Config::read(path);
        }
        if let Some(env) = std::env::var_os("SMIME_PICKUP_CONFIG").filter(|v| !v.is_empty()) {
            return Config::read(Path::new(&env));
        }
        let default = Path::new(DEFAULT_CONFIG);
        if default.exists() {
            Config::read(default)
        } else {
            Config::from_toml("", None)
        }
    }

    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.into(),
            source,
        })?;
        Config::from_toml(&text, Some(path))
    }

    /// Parses `text`; `path` names the file for errors and anchors relative paths.
    pub fn from_toml(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let shown = path.map_or_else(|| PathBuf::from("(built-in defaults)"), Path::to_path_buf);
        let file: File = toml::from_str(text).map_err(|e| parse_error(text, &shown, &e))?;
        let base = match path.and_then(Path::parent) {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            Some(_) => PathBuf::from("."),
            None => Path::new(DEFAULT_CONFIG)
                .parent()
                .expect("has a folder")
                .to_path_buf(),
        };
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        check_ranges(&file).map_err(|why| ConfigError::Invalid {
            path: shown.clone(),
            why,
        })?;
        let limits = [
            ("max_message_bytes", file.max_message_bytes),
            ("max_mime_depth", file.max_mime_depth),
            ("max_header_bytes", file.max_header_bytes),
            ("max_mime_parts", file.max_mime_parts),
            ("max_recipients", file.max_recipients),
        ]
        .into_iter()
        .try_fold(Limits::default(), |l, (key, value)| l.set(key, value))
        .map_err(|why| ConfigError::Invalid {
            path: shown.clone(),
            why,
        })?;
        let inputs = file.inputs.unwrap_or_else(|| vec!["*.eml".to_string()]);
        if inputs.is_empty() || inputs.iter().any(|p| p.is_empty() || p.contains('/')) {
            return Err(ConfigError::Invalid {
                path: shown,
                why: "inputs must list file name patterns such as \"*.eml\" (no '/')".into(),
            });
        }
        let smtp = resolve_smtp(file.smtp, &resolve, &shown)?;
        let api = api::resolve_api(file.api, &resolve, &shown)?;
        let invalid = |why: String| ConfigError::Invalid {
            path: shown.clone(),
            why,
        };
        let route = match file.route {
            Some(r) => r.resolve().map_err(invalid)?,
            None if smtp.host.is_empty() => Route(vec![Hop::Pickup]),
            None => Route(vec![Hop::Pickup, Hop::Smtp]),
        };
        // one per core keeps the cores on the crypto; SMTP or the API alone wait for replies
        // between messages, so twice as many keep the cores busy meanwhile (BENCHMARKS.md)
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = file.workers.unwrap_or(if route.uses(Hop::Pickup) {
            cores
        } else {
            2 * cores
        });
        if route.uses(Hop::Smtp) && smtp.host.is_empty() {
            return Err(invalid(
                "route needs an SMTP server: set [smtp] host or SMTP_HOST".into(),
            ));
        }
        if route.uses(Hop::Api) && api.key.is_none() {
            return Err(invalid(
                "route needs an API key: set [api] key_file or key, or SPARKPOST_API_KEY".into(),
            ));
        }
        let harvest_dns = name_servers(file.harvest_dns.as_deref()).map_err(invalid)?;
        Ok(Config {
            source: path.map(Path::to_path_buf),
            route,
            min_free_bytes: file.min_free_bytes.unwrap_or(100 * 1024 * 1024),
            metrics_file: file.metrics_file.map(resolve),
            inputs,
            smtp,
            api,
            spool: file.spool.map(resolve),
            pickup: file.pickup.map(resolve),
            failed: file.failed.map(resolve),
            work: file.work.map(resolve),
            staging: file.staging.map(resolve),
            sync: file.sync.unwrap_or_default(),
            reuse_inodes: file.reuse_inodes.unwrap_or_default(),
            workers,
            settle: std::time::Duration::from_millis(file.settle_ms.unwrap_or(1000)),
            rescan: std::time::Duration::from_secs(file.rescan_seconds.unwrap_or(30)),
            pickup_max_backlog: file.pickup_max_backlog.unwrap_or(20_000),
            retry_max: std::time::Duration::from_secs(file.retry_max_seconds.unwrap_or(300)),
            max_recipients_per_file: file.max_recipients_per_file.unwrap_or(5000),
            keys: resolve(file.keys.unwrap_or_else(|| "keys".into())),
            certs: resolve(file.certs.unwrap_or_else(|| "certs".into())),
            ca: file.ca.map(resolve),
            key_passphrase_file: file.key_passphrase_file.map(resolve),
            limits,
            certs_inbox: file.certs_inbox.map(resolve),
            harvest_trust: file.harvest_trust.unwrap_or_default(),
            harvest_require_dkim: file.harvest_require_dkim.unwrap_or(false),
            harvest_dns,
            seal: file.seal,
        })
    }
}

/// `harvest_dns`: each entry an IP address (port 53) or `IP:port` (`[IPv6]:port`); the key left
/// out means the system's resolver, so an empty list is refused rather than read as "no DNS".
fn name_servers(list: Option<&[String]>) -> Result<Vec<std::net::SocketAddr>, String> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    if list.is_empty() {
        return Err(
            "harvest_dns = []: list name servers such as \"127.0.0.1\" or \"127.0.0.1:5353\", or leave the key out for the system's resolver".into(),
        );
    }
    list.iter()
        .map(|entry| {
            let addr = entry
                .parse::<std::net::SocketAddr>()
                .or_else(|_| {
                    entry
                        .parse::<std::net::IpAddr>()
                        .map(|ip| std::net::SocketAddr::new(ip, 53))
                })
                .map_err(|_| {
                    format!(
                        "harvest_dns: {entry:?} is not an IP address or IP:port (no host names)"
                    )
                })?;
            if addr.port() == 0 {
                return Err(format!("harvest_dns: {entry:?}: port 0"));
            }
            Ok(addr)
        })
        .collect()
}

#[cfg(test)]
mod tests;
