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

pub const DEFAULT_CONFIG: &str = "/etc/smime-pickup/smime-pickup.toml";

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
    max_mime_depth: Option<usize>,
    max_header_bytes: Option<usize>,
    max_mime_parts: Option<usize>,
    max_recipients: Option<usize>,
    route: Option<Route>,
    min_free_bytes: Option<u64>,
    metrics_file: Option<PathBuf>,
    #[serde(default)]
    seal: Policy,
    #[serde(default)]
    smtp: SmtpFile,
}

/// How sealed messages leave (`route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Route {
    #[serde(rename = "pickup")]
    Pickup,
    #[serde(rename = "smtp")]
    Smtp,
    #[serde(rename = "pickup-then-smtp")]
    PickupThenSmtp,
}

/// TLS towards the SMTP server (`[smtp] tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// STARTTLS required
    Starttls,
    /// STARTTLS when the server offers it
    #[default]
    Opportunistic,
    /// TLS from the first byte (port 465)
    Tls,
    /// never; AUTH is then allowed in clear text because this was chosen explicitly
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SmtpFile {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    tls: TlsMode,
    tls_ca: Option<PathBuf>,
    tls_verify: bool,
    helo: Option<String>,
    timeout: u64,
    max_messages_per_connection: usize,
}

impl Default for SmtpFile {
    fn default() -> Self {
        SmtpFile {
            host: String::new(),
            port: 25,
            user: None,
            password: None,
            password_file: None,
            tls: TlsMode::Opportunistic,
            tls_ca: None,
            tls_verify: true,
            helo: None,
            timeout: 30,
            max_messages_per_connection: 100,
        }
    }
}

/// A password: never printed, not even its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"********\"")
    }
}

/// The resolved `[smtp]` section (after the SMTP_* environment variables).
#[derive(Debug, Clone)]
pub struct Smtp {
    /// empty: no SMTP route
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub tls: TlsMode,
    pub tls_ca: Option<PathBuf>,
    pub tls_verify: bool,
    pub helo: String,
    pub timeout: std::time::Duration,
    pub max_messages_per_connection: usize,
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
    /// Where sealed messages go; default pickup-then-smtp when an SMTP host is set, else pickup
    pub route: Route,
    /// The pickup route counts as unhealthy below this much free space
    pub min_free_bytes: u64,
    /// Prometheus text file, rewritten every second (node_exporter's textfile collector)
    pub metrics_file: Option<PathBuf>,
    pub smtp: Smtp,
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
        let positive = |v: Option<u64>, key: &str, default: u64| match v {
            Some(0) => Err(ConfigError::Invalid {
                path: shown.clone(),
                why: format!("{key} must be above 0"),
            }),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        if file.workers == Some(0) {
            return Err(ConfigError::Invalid {
                path: shown,
                why: "workers must be above 0".into(),
            });
        }
        let smtp = resolve_smtp(file.smtp, &resolve, &shown)?;
        let route = file.route.unwrap_or(if smtp.host.is_empty() {
            Route::Pickup
        } else {
            Route::PickupThenSmtp
        });
        // one per core keeps the cores on the crypto; SMTP alone waits for replies between
        // messages, so twice as many keep the cores busy meanwhile (measured in BENCHMARKS.md)
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = file.workers.unwrap_or(if route == Route::Smtp {
            2 * cores
        } else {
            cores
        });
        if route != Route::Pickup && smtp.host.is_empty() {
            return Err(ConfigError::Invalid {
                path: shown,
                why: "route needs an SMTP server: set [smtp] host or SMTP_HOST".into(),
            });
        }
        Ok(Config {
            source: path.map(Path::to_path_buf),
            route,
            min_free_bytes: file.min_free_bytes.unwrap_or(100 * 1024 * 1024),
            metrics_file: file.metrics_file.map(resolve),
            smtp,
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
            pickup_max_backlog: positive(
                file.pickup_max_backlog.map(|v| v as u64),
                "pickup_max_backlog",
                20_000,
            )? as usize,
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
            limits,
            seal: file.seal,
        })
    }
}

/// `[smtp]` with the variables the sparkpostSMIME tool used layered on top: SMTP_HOST, SMTP_PORT,
/// SMTP_USER, SMTP_PASSWORD, SMTP_PASSWORD_FILE.
fn resolve_smtp(
    file: SmtpFile,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    shown: &Path,
) -> Result<Smtp, ConfigError> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let invalid = |why: String| ConfigError::Invalid {
        path: shown.to_path_buf(),
        why,
    };
    let port = match env("SMTP_PORT") {
        Some(p) => p
            .parse()
            .map_err(|_| invalid(format!("SMTP_PORT={p:?} is not a port number")))?,
        None => file.port,
    };
    let password_file = env("SMTP_PASSWORD_FILE")
        .map(PathBuf::from)
        .or(file.password_file.map(resolve));
    let password = match (env("SMTP_PASSWORD"), password_file) {
        (Some(p), _) => Some(p),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid(format!("password_file {}: {e}", path.display())))?;
            Some(text.lines().next().unwrap_or_default().to_string())
        }
        (None, None) => file.password,
    };
    let helo = file.helo.unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into())
    });
    Ok(Smtp {
        host: env("SMTP_HOST").unwrap_or(file.host),
        port,
        user: env("SMTP_USER").or(file.user),
        password: password.map(Secret),
        tls: file.tls,
        tls_ca: file.tls_ca.map(resolve),
        tls_verify: file.tls_verify,
        helo,
        timeout: std::time::Duration::from_secs(file.timeout.max(1)),
        max_messages_per_connection: file.max_messages_per_connection.max(1),
    })
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
    fn limits_have_defaults_and_ranges() {
        let c = Config::from_toml("", None).unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.limits.max_mime_depth, 100);
        let c = Config::from_toml("max_mime_depth = 20\nmax_recipients = 50\n", None).unwrap();
        assert_eq!((c.limits.max_mime_depth, c.limits.max_recipients), (20, 50));
        for (text, named) in [
            (
                "max_mime_depth = 0",
                "max_mime_depth = 0: must be from 1 to 1000",
            ),
            ("max_mime_depth = 5000", "max_mime_depth = 5000"),
            (
                "max_header_bytes = 100",
                "max_header_bytes = 100: must be from 1024",
            ),
            ("max_mime_parts = 0", "max_mime_parts"),
            ("max_recipients = 0", "max_recipients"),
            ("max_message_bytes = 0", "max_message_bytes = 0"),
        ] {
            let e = Config::from_toml(text, Some(Path::new("c.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains(named), "{text}: {e}");
        }
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

#[cfg(test)]
mod reference {
    use super::*;

    /// The keys serde accepts in a section, read from its "unknown field" error.
    fn accepted(section: &str) -> Vec<String> {
        let text = if section.is_empty() {
            "not_a_key = 1\n".to_string()
        } else {
            format!("[{section}]\nnot_a_key = 1\n")
        };
        let err = Config::from_toml(&text, Some(Path::new("c.toml")))
            .unwrap_err()
            .to_string();
        let list = err
            .split("expected one of ")
            .nth(1)
            .unwrap_or_else(|| panic!("{err}"));
        list.split(',')
            .map(|k| {
                k.trim()
                    .trim_matches(|c| c == '`' || c == '.' || c == '\n')
                    .to_string()
            })
            .filter(|k| !k.is_empty())
            .collect()
    }

    /// Every key of the configuration is documented in the README's table, with its section.
    #[test]
    fn every_config_key_is_in_the_readme() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
                .unwrap();
        let mut checked = 0;
        for section in ["", "seal", "smtp"] {
            for key in accepted(section) {
                if section.is_empty() && (key == "seal" || key == "smtp") {
                    continue;
                }
                let row = if section.is_empty() {
                    format!("| `{key}` |")
                } else {
                    format!("| `[{section}] {key}` |")
                };
                assert!(
                    readme.contains(&row),
                    "README.md lacks a config reference row {row}"
                );
                checked += 1;
            }
        }
        assert!(checked > 30, "only {checked} keys checked");
    }
}
