//! Configuration: one TOML file, every key with a default, unknown keys refused.
//!
//! Where the file is: `-c/--config`, else `$SMIME_PICKUP_CONFIG`, else
//! `/etc/smime-pickup/smime-pickup.toml`. A file named explicitly must exist; the default one may be
//! absent (then every key has its default). Relative paths in the file are resolved against the file's
//! folder, so a config and its keys can move together.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::seal::Policy;

pub const DEFAULT_CONFIG: &str = "/etc/smime-pickup/smime-pickup.toml";
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 50 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

/// The file as written; see `Config` for the resolved form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    spool: Option<PathBuf>,
    pickup: Option<PathBuf>,
    failed: Option<PathBuf>,
    work: Option<PathBuf>,
    staging: Option<PathBuf>,
    workers: Option<usize>,
    settle_ms: Option<u64>,
    rescan_seconds: Option<u64>,
    pickup_max_backlog: Option<usize>,
    retry_max_seconds: Option<u64>,
    max_recipients_per_file: Option<usize>,
    keys: Option<PathBuf>,
    certs: Option<PathBuf>,
    ca: Option<PathBuf>,
    key_passphrase_file: Option<PathBuf>,
    max_message_bytes: Option<usize>,
    #[serde(default)]
    seal: Policy,
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
    /// Sealing threads (default: number of cores)
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
    /// Sender signing identities (default: `keys` beside the config file)
    pub keys: PathBuf,
    /// Recipient certificates (default: `certs` beside the config file)
    pub certs: PathBuf,
    /// Trusted CA bundle (PEM); no chain check when unset
    pub ca: Option<PathBuf>,
    /// File holding the passphrase of encrypted private keys
    pub key_passphrase_file: Option<PathBuf>,
    /// Larger inputs are refused (default 50 MiB)
    pub max_message_bytes: usize,
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
        let file: File = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: shown.clone(),
            source: Box::new(source),
        })?;
        let base = match path.and_then(Path::parent) {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            Some(_) => PathBuf::from("."),
            None => Path::new(DEFAULT_CONFIG)
                .parent()
                .expect("has a folder")
                .to_path_buf(),
        };
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let max_message_bytes = file.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if max_message_bytes == 0 {
            return Err(ConfigError::Invalid {
                path: shown,
                why: "max_message_bytes must be above 0".into(),
            });
        }
        let positive = |v: Option<u64>, key: &str, default: u64| match v {
            Some(0) => Err(ConfigError::Invalid {
                path: shown.clone(),
                why: format!("{key} must be above 0"),
            }),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let workers = match file.workers {
            Some(0) => {
                return Err(ConfigError::Invalid {
                    path: shown,
                    why: "workers must be above 0".into(),
                });
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(Config {
            source: path.map(Path::to_path_buf),
            spool: file.spool.map(resolve),
            pickup: file.pickup.map(resolve),
            failed: file.failed.map(resolve),
            work: file.work.map(resolve),
            staging: file.staging.map(resolve),
            workers,
            settle: std::time::Duration::from_millis(file.settle_ms.unwrap_or(1000)),
            rescan: std::time::Duration::from_secs(positive(
                file.rescan_seconds,
                "rescan_seconds",
                30,
            )?),
            pickup_max_backlog: file.pickup_max_backlog.unwrap_or(20_000),
            retry_max: std::time::Duration::from_secs(positive(
                file.retry_max_seconds,
                "retry_max_seconds",
                300,
            )?),
            max_recipients_per_file: positive(
                file.max_recipients_per_file.map(|v| v as u64),
                "max_recipients_per_file",
                5000,
            )? as usize,
            keys: resolve(file.keys.unwrap_or_else(|| "keys".into())),
            certs: resolve(file.certs.unwrap_or_else(|| "certs".into())),
            ca: file.ca.map(resolve),
            key_passphrase_file: file.key_passphrase_file.map(resolve),
            max_message_bytes,
            seal: file.seal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_follow_the_config_file() {
        let c = Config::from_toml(
            "keys = \"k\"\nca = \"/abs/ca.pem\"\n",
            Some(Path::new("/etc/x/c.toml")),
        )
        .unwrap();
        assert_eq!(c.keys, Path::new("/etc/x/k"));
        assert_eq!(c.certs, Path::new("/etc/x/certs"));
        assert_eq!(c.ca.as_deref(), Some(Path::new("/abs/ca.pem")));
        assert!(c.seal.sign && c.seal.encrypt);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::from_toml("kyes = \"k\"\n", Some(Path::new("c.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("kyes"), "{e}");
        let e = Config::from_toml("[seal]\ncipher = \"des\"\n", Some(Path::new("c.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("des"), "{e}");
    }
}
