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
pub use api::{Api, Flavor, Hop, Route};

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

/// The file as written; see `Config` for the resolved form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    spool: Option<PathBuf>,
    pickup: Option<PathBuf>,
    failed: Option<PathBuf>,
    work: Option<PathBuf>,
    staging: Option<PathBuf>,
    sync: Option<crate::deliver::pickup::SyncStrategy>,
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
    route: Option<api::RouteFile>,
    min_free_bytes: Option<u64>,
    metrics_file: Option<PathBuf>,
    inputs: Option<Vec<String>>,
    certs_inbox: Option<PathBuf>,
    harvest_trust: Option<HarvestTrust>,
    harvest_require_dkim: Option<bool>,
    #[serde(default)]
    seal: Policy,
    #[serde(default)]
    smtp: SmtpFile,
    #[serde(default)]
    api: api::ApiFile,
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
    /// How staged outputs are made durable: `auto` (by filesystem), `file`, `filesystem` (syncfs)
    pub sync: crate::deliver::pickup::SyncStrategy,
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
            seal: file.seal,
        })
    }
}

/// Every numeric setting's range (inclusive), checked when the file is read: a value outside is a
/// configuration error naming the key, never a panic or an endless wait later. README's table gives
/// the same ranges.
pub const RANGES: [(&str, u64, u64); 11] = [
    ("workers", 1, 1024),
    ("settle_ms", 0, 600_000),
    ("rescan_seconds", 1, 86_400),
    ("pickup_max_backlog", 1, 10_000_000),
    ("retry_max_seconds", 1, 86_400),
    ("max_recipients_per_file", 1, 100_000),
    ("max_message_bytes", 1, 1 << 30),
    ("min_free_bytes", 0, u64::MAX),
    ("[smtp] timeout", 1, 3_600),
    ("[smtp] max_messages_per_connection", 1, 1_000_000),
    ("[api] timeout", 1, 3_600),
];

fn check_ranges(file: &File) -> Result<(), String> {
    let value = |key: &str| -> Option<u64> {
        let as_u64 = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        match key {
            "workers" => file.workers.map(as_u64),
            "settle_ms" => file.settle_ms,
            "rescan_seconds" => file.rescan_seconds,
            "pickup_max_backlog" => file.pickup_max_backlog.map(as_u64),
            "retry_max_seconds" => file.retry_max_seconds,
            "max_recipients_per_file" => file.max_recipients_per_file.map(as_u64),
            "max_message_bytes" => file.max_message_bytes.map(as_u64),
            "min_free_bytes" => file.min_free_bytes,
            "[smtp] timeout" => Some(file.smtp.timeout),
            "[smtp] max_messages_per_connection" => {
                Some(as_u64(file.smtp.max_messages_per_connection))
            }
            "[api] timeout" => file.api.timeout,
            _ => None,
        }
    };
    for (key, lo, hi) in RANGES {
        if let Some(v) = value(key)
            && !(lo..=hi).contains(&v)
        {
            return Err(format!("{key} = {v} is out of range ({lo} to {hi})"));
        }
    }
    Ok(())
}

/// Keys whose values are secrets: never quoted in an error.
const SECRET_KEYS: [&str; 3] = ["password", "key", "api_key"];

fn parse_error(text: &str, shown: &Path, e: &toml::de::Error) -> ConfigError {
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
        timeout: std::time::Duration::from_secs(file.timeout),
        max_messages_per_connection: file.max_messages_per_connection,
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
    fn sync_is_auto_file_or_filesystem() {
        use crate::deliver::pickup::SyncStrategy;
        let parse = |t: &str| Config::from_toml(t, Some(Path::new("c.toml")));
        assert_eq!(parse("").unwrap().sync, SyncStrategy::Auto);
        for (text, want) in [
            ("sync = \"auto\"", SyncStrategy::Auto),
            ("sync = \"file\"", SyncStrategy::File),
            ("sync = \"filesystem\"", SyncStrategy::Filesystem),
        ] {
            assert_eq!(parse(text).unwrap().sync, want, "{text}");
        }
        for bad in [
            "sync = \"syncfs\"",
            "sync = \"File\"",
            "sync = true",
            "sync = \"\"",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("c.toml: line 1: ")
                    && (e.contains("expected one of `auto`, `file`, `filesystem`")
                        || e.contains("wanted string")),
                "{bad}: {e}"
            );
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

    #[test]
    fn a_parse_error_names_the_line_and_never_quotes_a_secret() {
        let secret = "s3cr3t-Value";
        for text in [
            format!("[smtp]\nhost = \"h\"\npassword = \"{secret}\n"), // unterminated
            format!("[smtp]\npassword = \"{secret}\nport = 25\n"),
            format!("[smtp]\npassword = {secret}\n"), // unquoted
            "[smtp]\npassword = 123456\n".to_string(), // wrong type: serde quotes the value
            format!("[smtp]\npassword = \"\"\"{secret}\n"),
        ] {
            let e = Config::from_toml(&text, Some(Path::new("c.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                !e.contains(secret) && !e.contains("123456") && !e.contains("password ="),
                "{text:?} gave {e}"
            );
            assert!(e.starts_with("c.toml: line "), "{e}");
        }
        let e = Config::from_toml("workers = \"many\"\n", Some(Path::new("c.toml")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("invalid type"), "{e}");
    }

    #[test]
    fn numbers_out_of_range_name_their_key() {
        for (text, key) in [
            ("workers = 100000", "workers"),
            ("workers = 9223372036854775807", "workers"),
            ("workers = 0", "workers"),
            ("rescan_seconds = 9223372036854775807", "rescan_seconds"),
            ("settle_ms = 9223372036854775807", "settle_ms"),
            ("retry_max_seconds = 0", "retry_max_seconds"),
            ("pickup_max_backlog = 0", "pickup_max_backlog"),
            ("max_recipients_per_file = 0", "max_recipients_per_file"),
            ("max_message_bytes = 0", "max_message_bytes"),
            ("[smtp]\ntimeout = 0", "[smtp] timeout"),
            ("[smtp]\ntimeout = 9223372036854775807", "[smtp] timeout"),
            (
                "[smtp]\nmax_messages_per_connection = 0",
                "max_messages_per_connection",
            ),
        ] {
            let e = Config::from_toml(text, Some(Path::new("c.toml")))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("out of range"), "{text}: {e}");
        }
        for (key, lo, hi) in RANGES {
            for v in [lo, hi] {
                let v = v.min(i64::MAX as u64);
                let text = match (key.strip_prefix("[smtp] "), key.strip_prefix("[api] ")) {
                    (Some(k), _) => format!("[smtp]\n{k} = {v}"),
                    (_, Some(k)) => format!("[api]\n{k} = {v}"),
                    _ => format!("{key} = {v}"),
                };
                assert!(
                    Config::from_toml(&text, Some(Path::new("c.toml"))).is_ok(),
                    "{text}"
                );
            }
        }
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
        for section in ["", "seal", "smtp", "api"] {
            for key in accepted(section) {
                if section.is_empty() && (key == "seal" || key == "smtp" || key == "api") {
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
