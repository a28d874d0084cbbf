//! `[api]`: the HTTP Transmissions API route (PowerMTA 5, Momentum 4, SparkPost), and `route`, the
//! ordered list of routes a message may take.
//!
//! The variables the sparkpostSMIME tool used are layered on top: `SPARKPOST_HOST` (the default URL's
//! host, `api.sparkpost.com` when unset) and `SPARKPOST_API_KEY` (overrides `key_file` and `key`).
//! The key is a `Secret`: no error and no log line ever shows it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, Secret};

/// One delivery route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    Pickup,
    Smtp,
    Api,
}

impl Hop {
    pub fn name(self) -> &'static str {
        match self {
            Hop::Pickup => "pickup",
            Hop::Smtp => "smtp",
            Hop::Api => "api",
        }
    }

    fn parse(name: &str) -> Option<Hop> {
        [Hop::Pickup, Hop::Smtp, Hop::Api]
            .into_iter()
            .find(|h| h.name() == name)
    }
}

/// `route`: the routes in the order they are tried (the first healthy one takes a message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route(pub Vec<Hop>);

impl Route {
    pub fn uses(&self, hop: Hop) -> bool {
        self.0.contains(&hop)
    }

    /// The one route, when there is only one.
    pub fn only(&self) -> Option<Hop> {
        (self.0.len() == 1).then(|| self.0[0])
    }

    /// As written in the config: `"pickup-then-smtp"`, `["pickup", "api", "smtp"]`.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|h| h.name())
            .collect::<Vec<_>>()
            .join("-then-")
    }
}

/// `route` as written: one name, or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RouteFile {
    One(String),
    List(Vec<String>),
}

const ROUTE_HELP: &str = "expected \"pickup\", \"smtp\", \"api\", \"pickup-then-smtp\", \"pickup-then-api\" or a list such as [\"pickup\", \"api\", \"smtp\"]";

impl RouteFile {
    pub(super) fn resolve(self) -> Result<Route, String> {
        let names: Vec<String> = match self {
            RouteFile::One(s) => match s.as_str() {
                "pickup-then-smtp" => vec!["pickup".into(), "smtp".into()],
                "pickup-then-api" => vec!["pickup".into(), "api".into()],
                _ => vec![s],
            },
            RouteFile::List(l) => l,
        };
        let mut hops = Vec::new();
        for n in &names {
            let hop = Hop::parse(n).ok_or_else(|| {
                format!(
                    "route: unknown route {:?}; {ROUTE_HELP}",
                    crate::logging::escape_controls(n)
                )
            })?;
            if hops.contains(&hop) {
                return Err(format!("route: {n:?} is listed twice"));
            }
            hops.push(hop);
        }
        if hops.is_empty() {
            return Err(format!("route: the list is empty; {ROUTE_HELP}"));
        }
        Ok(Route(hops))
    }
}

/// Which options the server accepts (`[api] flavor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// PowerMTA 5: no option but `smtputf8` (any other is answered 400)
    Powermta,
    /// SparkPost and Momentum: open and click tracking turned off (on by default there)
    Sparkpost,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ApiFile {
    url: Option<String>,
    key: Option<String>,
    key_file: Option<PathBuf>,
    flavor: Option<Flavor>,
    tls_ca: Option<PathBuf>,
    pub(super) timeout: Option<u64>,
}

/// The resolved `[api]` section.
#[derive(Debug, Clone)]
pub struct Api {
    pub url: String,
    /// None: no key anywhere (only an error when the route is used)
    pub key: Option<Secret>,
    pub flavor: Flavor,
    pub tls_ca: Option<PathBuf>,
    pub timeout: std::time::Duration,
}

/// SparkPost's API host when neither `url` nor `SPARKPOST_HOST` says otherwise.
pub const DEFAULT_HOST: &str = "api.sparkpost.com";
pub const PATH: &str = "/api/v1/transmissions";

/// A usable key: visible ASCII, no spaces (it goes into a header line), 1 to 1024 characters.
/// PowerMTA's are 32-128 of `[A-Za-z0-9_]`, SparkPost's 40 hex digits.
fn key_ok(key: &str) -> bool {
    (1..=1024).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

pub(super) fn resolve_api(
    file: ApiFile,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    shown: &Path,
) -> Result<Api, ConfigError> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let invalid = |why: String| ConfigError::Invalid {
        path: shown.to_path_buf(),
        why,
    };
    let explicit_url = file.url.is_some();
    let url = match file.url {
        Some(u) => u,
        None => {
            let host = env("SPARKPOST_HOST").unwrap_or_else(|| DEFAULT_HOST.into());
            let base = if host.contains("://") {
                host
            } else {
                format!("https://{host}")
            };
            format!("{}{PATH}", base.trim_end_matches('/'))
        }
    };
    let shown_url = crate::logging::escape_controls(&url).into_owned();
    if !url.starts_with("https://") || url.len() <= "https://".len() {
        return Err(invalid(format!(
            "[api] url {shown_url:?} must start with https:// (the key is sent with every request)"
        )));
    }
    if url.chars().any(|c| c.is_control() || c == ' ') {
        return Err(invalid(format!(
            "[api] url {shown_url:?} holds spaces or control characters"
        )));
    }
    // a URL of our own choosing (PowerMTA) says which server it is; SparkPost's default does not
    // need the flavor spelled out
    let flavor = match file.flavor {
        Some(f) => f,
        None if !explicit_url => Flavor::Sparkpost,
        None => {
            return Err(invalid(
                "[api] flavor is needed with [api] url: \"powermta\" or \"sparkpost\" (also Momentum)"
                    .into(),
            ));
        }
    };
    let key = match (env("SPARKPOST_API_KEY"), file.key_file) {
        (Some(k), _) => Some(k),
        (None, Some(path)) => {
            let path = resolve(path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid(format!("[api] key_file {}: {e}", path.display())))?;
            Some(text.lines().next().unwrap_or_default().trim().to_string())
        }
        (None, None) => file.key,
    };
    if let Some(k) = &key
        && !key_ok(k)
    {
        // never quoted: it is a secret even when malformed
        return Err(invalid(
            "[api] key (or key_file, SPARKPOST_API_KEY): not a usable key (1 to 1024 visible ASCII characters, no spaces)"
                .into(),
        ));
    }
    Ok(Api {
        url,
        key: key.map(Secret),
        flavor,
        tls_ca: file.tls_ca.map(resolve),
        timeout: std::time::Duration::from_secs(file.timeout.unwrap_or(30)),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Flavor, Hop};
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Some(Path::new("c.toml"))).map_err(|e| e.to_string())
    }

    #[test]
    fn routes_are_names_or_ordered_lists() {
        let key = "[api]\nkey = \"k_123\"\n[smtp]\nhost = \"h\"\n";
        for (route, want) in [
            ("\"api\"", vec![Hop::Api]),
            ("\"pickup-then-api\"", vec![Hop::Pickup, Hop::Api]),
            ("\"pickup-then-smtp\"", vec![Hop::Pickup, Hop::Smtp]),
            (
                "[\"pickup\", \"api\", \"smtp\"]",
                vec![Hop::Pickup, Hop::Api, Hop::Smtp],
            ),
            ("[\"smtp\", \"api\"]", vec![Hop::Smtp, Hop::Api]),
        ] {
            let c = parse(&format!("route = {route}\n{key}")).unwrap();
            assert_eq!(c.route.0, want, "{route}");
        }
        for bad in ["\"ftp\"", "[]", "[\"api\", \"api\"]", "\"api-then-pickup\""] {
            let e = parse(&format!("route = {bad}\n{key}")).unwrap_err();
            assert!(e.contains("route"), "{bad}: {e}");
        }
        let e = parse("route = \"api\"\n").unwrap_err();
        assert!(e.contains("needs an API key"), "{e}");
    }

    #[test]
    fn the_url_defaults_to_sparkpost_and_a_url_of_ones_own_needs_a_flavor() {
        let c = parse("[api]\nkey = \"k\"\n").unwrap();
        assert!(
            c.api.url.ends_with("/api/v1/transmissions"),
            "{}",
            c.api.url
        );
        assert_eq!(c.api.flavor, Flavor::Sparkpost);
        let e = parse("[api]\nkey = \"k\"\nurl = \"https://pmta:8585/api/v1/transmissions\"\n")
            .unwrap_err();
        assert!(e.contains("flavor"), "{e}");
        let e = parse("[api]\nkey = \"k\"\nflavor = \"powermta\"\nurl = \"http://pmta/x\"\n")
            .unwrap_err();
        assert!(e.contains("https://"), "{e}");
    }

    #[test]
    fn a_key_is_never_shown_in_an_error() {
        let secret = "Zz_secret_Value_42";
        for text in [
            format!("[api]\nkey = \"{secret}\n"),
            format!("[api]\nkey = \"{secret} with space\"\n"),
            format!("[api]\nkey = {secret}\n"),
            format!("[api]\nkey = \"{secret}\"\nflavor = \"pmta\"\n"),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(!e.contains(secret), "{text:?} gave {e}");
        }
        let c = parse(&format!("[api]\nkey = \"{secret}\"\n")).unwrap();
        assert!(!format!("{c:?}").contains(secret));
    }
}
