//! `check` for the API route: its settings always when the route uses it, and with `--api` the
//! server itself. The server is asked with a request it must refuse as malformed (an empty
//! transmission): a 400 proves the URL, the certificate and the key, and sends nothing to anyone.

use super::{Level, Report};
use crate::config::{Config, Flavor};
use crate::deliver::api::{ApiError, ApiRoute};

/// The URL, flavor, key presence and CA file, without a request.
pub fn settings(config: &Config, r: &mut Report) {
    let a = &config.api;
    if a.key.is_none() {
        r.add(
            Level::Config,
            "API: no key (set [api] key_file or key, or SPARKPOST_API_KEY)",
        );
        return;
    }
    match ApiRoute::new(a.clone()) {
        Ok(_) => r.add(
            Level::Ok,
            format!(
                "API {}: flavor {}, key set{}",
                a.url,
                match a.flavor {
                    Flavor::Powermta => "powermta (no option but smtputf8)",
                    Flavor::Sparkpost => "sparkpost (open and click tracking off)",
                },
                a.tls_ca
                    .as_ref()
                    .map(|c| format!(", extra CA {}", c.display()))
                    .unwrap_or_default()
            ),
        ),
        Err(why) => r.add(Level::Config, why),
    }
}

/// `--api`: one malformed request, judged by the reply.
pub fn server(config: &Config, r: &mut Report) {
    let a = &config.api;
    if a.key.is_none() {
        return; // reported by `settings`
    }
    let Ok(route) = ApiRoute::new(a.clone()) else {
        return; // reported by `settings`
    };
    let url = route.url().to_string();
    match route.client.post(b"{}") {
        Err(ApiError::Refused { status, text, .. }) => r.add(
            Level::Ok,
            format!(
                "API {url}: reachable, certificate verified, key accepted (an empty test transmission was refused as it must be: {status} {text})"
            ),
        ),
        Err(ApiError::Misconfigured { status, text, .. }) if status == 401 || status == 403 => r
            .add(
                Level::Unavailable,
                format!("API {url}: the key is refused: {status} {text}"),
            ),
        Err(ApiError::Misconfigured { status, text, .. }) => r.add(
            Level::Unavailable,
            format!("API {url}: wrong URL? {status} {text}"),
        ),
        Err(e) => r.add(Level::Unavailable, format!("API {e}")),
        Ok(_) => r.add(
            Level::Warning,
            format!(
                "API {url}: an empty test transmission was accepted (200): is this a Transmissions API?"
            ),
        ),
    }
}
