//! `smime-pickup check`: everything the daemon relies on, verified before it matters, as a readable
//! report. Each problem names its path or address. Exit 0 only when all is well: 78 for configuration,
//! 66 for missing folders or keys, 69 when the SMTP or API server cannot be used.

use crate::config::{Config, Hop};

mod api;
mod folders;
mod harvest;
mod keys;
mod smtp;

use folders::folders;
use harvest::harvest;
use keys::keys_and_certs;
use smtp::smtp_check;

/// What one line of the report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    /// a missing folder, key or certificate: 66
    Missing,
    /// SMTP or the API unusable: 69
    Unavailable,
    /// the configuration itself: 78
    Config,
}

pub struct Report {
    pub lines: Vec<(Level, String)>,
}

impl Report {
    pub(crate) fn add(&mut self, level: Level, text: impl Into<String>) {
        self.lines.push((level, text.into()));
    }

    /// sysexits code for the worst problem found (0 when there is none).
    pub fn exit_code(&self) -> u8 {
        match self
            .lines
            .iter()
            .map(|(l, _)| *l)
            .max()
            .unwrap_or(Level::Ok)
        {
            Level::Ok | Level::Warning => 0,
            Level::Missing => 66,
            Level::Unavailable => 69,
            Level::Config => 78,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (level, text) in &self.lines {
            let tag = match level {
                Level::Ok => "ok     ",
                Level::Warning => "warning",
                _ => "PROBLEM",
            };
            out.push_str(&format!("{tag} {text}\n"));
        }
        let problems = self
            .lines
            .iter()
            .filter(|(l, _)| *l > Level::Warning)
            .count();
        let warnings = self
            .lines
            .iter()
            .filter(|(l, _)| *l == Level::Warning)
            .count();
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        out.push_str(&format!(
            "{}, {}\n",
            plural(problems, "problem"),
            plural(warnings, "warning")
        ));
        out
    }
}

/// Checks `config` (already parsed: a parse error is reported by the caller with code 78).
pub fn check(config: &Config, smtp: bool, api: bool) -> Report {
    let mut r = Report { lines: Vec::new() };
    match &config.source {
        Some(p) => r.add(Level::Ok, format!("config {} parses", p.display())),
        None => r.add(Level::Warning, "no config file: built-in defaults"),
    }
    folders(config, &mut r);
    r.lines.extend(
        crate::deliver::pickup::sync::report(config)
            .into_iter()
            .map(|l| (Level::Ok, l)),
    );
    keys_and_certs(config, &mut r);
    if config.route.uses(Hop::Api) || api {
        api::settings(config, &mut r);
    }
    harvest(config, &mut r);
    if smtp {
        smtp_check(config, &mut r);
    }
    if api {
        api::server(config, &mut r);
    }
    r
}
