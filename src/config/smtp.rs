//! `[smtp]`: the SMTP route's server, credentials and TLS, with the SMTP_* environment variables
//! the sparkpostSMIME tool used layered on top.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, Secret};

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
pub(super) struct SmtpFile {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) tls: TlsMode,
    pub(super) tls_ca: Option<PathBuf>,
    pub(super) tls_verify: bool,
    pub(super) helo: Option<String>,
    pub(super) timeout: u64,
    pub(super) max_messages_per_connection: usize,
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

/// `[smtp]` with the variables the sparkpostSMIME tool used layered on top: SMTP_HOST, SMTP_PORT,
/// SMTP_USER, SMTP_PASSWORD, SMTP_PASSWORD_FILE.
pub(super) fn resolve_smtp(
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
