//! `send`: seal one message and hand it to the SMTP server, or with `--api` to the HTTP
//! Transmissions API, printing what the sparkpostSMIME tool printed.

use std::path::Path;

use super::{CliError, SendArgs, seal_file};
use crate::config::{Config, ConfigError};
use crate::deliver::api::ApiRoute;
use crate::deliver::smtp::SmtpRoute;

/// `send`: seal one message and inject it over SMTP, printing what the sparkpostSMIME tool printed.
pub(super) fn send_command(config_path: Option<&Path>, mut args: SendArgs) -> Result<(), CliError> {
    let mut config = Config::locate(config_path)?;
    args.folders.apply(&mut config);
    if args.api && config.api.key.is_none() {
        return Err(CliError::NoApiKey);
    }
    if !args.api && config.smtp.host.is_empty() {
        return Err(CliError::NoSmtpHost);
    }
    if args.sign_detached {
        args.how.sign = true;
    }
    args.how.apply(&mut config);
    let sealed = seal_file(&config, &args.file, &args.file)?;
    if args.api {
        return send_api(&config, &args.file, &sealed);
    }
    let route = SmtpRoute::new(config.smtp.clone()).map_err(|why| {
        CliError::Config(ConfigError::Invalid {
            path: config.source.clone().unwrap_or_default(),
            why,
        })
    })?;
    if !config.smtp.tls_verify {
        eprintln!("warning: [smtp] tls_verify = false: the server's certificate is not checked");
    }
    let mut conn = route.open()?;
    let s = &config.smtp;
    println!(
        "Opened SMTP connection ({}) to {}, port {}, user=\"{}\", password=\"{}\"",
        conn.security,
        s.host,
        s.port,
        s.user.as_deref().unwrap_or(""),
        if s.password.is_some() { "********" } else { "" }
    );
    let mut refused = Vec::new();
    // one line pair a transaction (a copy to over a hundred recipients takes several)
    for copy in &sealed {
        for recipients in crate::deliver::smtp::transactions(copy) {
            println!(
                "Sending {} From: {} To: {}",
                args.file.display(),
                copy.envelope.sender,
                recipients.join(", ")
            );
            let (outcome, took) =
                route.send_on(&mut conn, &copy.envelope.sender, recipients, &copy.data)?;
            for (r, why) in &outcome.rejected {
                println!("Refused {r}: {why}");
                refused.push(r.clone());
            }
            if !outcome.accepted.is_empty() {
                // microseconds: a pipelined transaction to a server on this host takes well under
                // a millisecond
                println!("OK - in {:.6} seconds", took.as_secs_f64());
            }
        }
    }
    conn.quit();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(CliError::Refused(refused.join(", ")))
    }
}

/// `send --api`: one transmission per sealed copy (each Bcc copy is its own).
fn send_api(config: &Config, file: &Path, sealed: &[crate::seal::Sealed]) -> Result<(), CliError> {
    let route = ApiRoute::new(config.api.clone()).map_err(|why| {
        CliError::Config(ConfigError::Invalid {
            path: config.source.clone().unwrap_or_default(),
            why,
        })
    })?;
    println!(
        "Using the Transmissions API at {} ({}), key=\"********\"",
        route.url(),
        match config.api.flavor {
            crate::config::Flavor::Powermta => "PowerMTA",
            crate::config::Flavor::Sparkpost => "SparkPost",
        }
    );
    let mut refused = Vec::new();
    for copy in sealed {
        let recipients = &copy.envelope.recipients;
        println!(
            "Sending {} From: {} To: {}",
            file.display(),
            copy.envelope.sender,
            recipients.join(", ")
        );
        let started = std::time::Instant::now();
        let reply = route.send_now(copy, recipients)?;
        if reply.rejected > 0 {
            println!(
                "Refused: {} of {} recipients (the server does not say which)",
                reply.rejected,
                reply.rejected + reply.accepted
            );
            refused.extend(recipients.iter().cloned());
        } else {
            let id = reply.id.map(|i| format!(", id {i}")).unwrap_or_default();
            println!("OK - in {:.6} seconds{id}", started.elapsed().as_secs_f64());
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(CliError::Refused(refused.join(", ")))
    }
}
