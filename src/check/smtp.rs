//! `check --smtp`: the SMTP server itself (connect, TLS, AUTH), sending nothing.

use super::{Level, Report};
use crate::config::{Config, TlsMode};
use crate::deliver::smtp::SmtpRoute;

pub(super) fn smtp_check(config: &Config, r: &mut Report) {
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
