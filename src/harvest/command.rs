//! `smime-pickup certs import PATH...` and `smime-pickup certs list`.
//!
//! `import` prints one line per input (`imported ADDRESS (expires DATE)`, `refused FILE: REASON`, or
//! `deferred FILE: REASON; try again later` when the DKIM lookup failed for the moment; control
//! characters escaped) and exits 0 when every input gave a certificate, 65 when any was refused,
//! 75 (EX_TEMPFAIL) when none was refused but some were deferred. `list` prints the certs folder: address, issuer, expiry, key type, and a flag for
//! certificates that expire within 30 days, have expired or cannot be used.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::{Harvester, SetupError};
use crate::config::Config;
use crate::logging::escape_controls;
use crate::smime::certs::{CertProblem, CertStore, Usage, unix_now, ymd};

#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub action: CertsAction,
}

#[derive(Debug, Subcommand)]
pub enum CertsAction {
    /// Take recipients' certificates from signed replies (.eml files, or folders of them)
    Import {
        /// Files or folders of .eml files
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// The certificates in the certs folder: address, issuer, expiry, key type
    List,
}

/// What `certs` ended with: the text is already printed.
#[derive(Debug)]
pub enum Outcome {
    AllImported,
    SomeRefused,
    /// none refused, some to try again later (a DKIM lookup failed for the moment)
    SomeDeferred,
}

/// Runs `certs import` or `certs list`; the lines go to `out`.
pub fn run(
    config: &Config,
    args: CertsArgs,
    out: &mut dyn std::io::Write,
) -> Result<Outcome, SetupError> {
    match args.action {
        CertsAction::Import { paths } => {
            let harvester = Harvester::from_config(config)?;
            Ok(import(&harvester, &paths, out))
        }
        CertsAction::List => {
            list(config, out)?;
            Ok(Outcome::AllImported)
        }
    }
}

/// The inputs a path stands for: the file, or the `.eml` files below the folder (sorted; links,
/// dotfiles and dot-folders skipped).
fn inputs(path: &Path) -> Vec<PathBuf> {
    if !path.is_dir() {
        return vec![path.to_path_buf()];
    }
    walkdir::WalkDir::new(path)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            e.path()
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("eml"))
        })
        .map(|e| e.into_path())
        .collect()
}

pub fn import(harvester: &Harvester, paths: &[PathBuf], out: &mut dyn std::io::Write) -> Outcome {
    let mut refused = 0;
    let mut deferred = 0;
    let now = unix_now();
    for path in paths {
        let files = inputs(path);
        if files.is_empty() {
            refused += 1;
            let _ = writeln!(
                out,
                "refused {}: no .eml file in this folder",
                escape_controls(&path.display().to_string())
            );
        }
        for file in files {
            let shown = escape_controls(&file.display().to_string()).into_owned();
            let line = match harvester.harvest_file(&file, now) {
                Ok(done) => line_imported(&done),
                Err(r) if r.temporary => {
                    deferred += 1;
                    format!(
                        "deferred {shown}: {}; try again later",
                        line_temporary(&r.why)
                    )
                }
                Err(r) => {
                    refused += 1;
                    format!("refused {shown}: {}", escape_controls(&r.why))
                }
            };
            let _ = writeln!(out, "{line}");
        }
    }
    // a refusal needs someone to look at it: it decides the exit code over a deferral (as `once`)
    match (refused, deferred) {
        (0, 0) => Outcome::AllImported,
        (0, _) => Outcome::SomeDeferred,
        _ => Outcome::SomeRefused,
    }
}

/// `DKIM lookup failed for the moment: WHY` (control characters escaped).
pub fn line_temporary(why: &str) -> String {
    format!(
        "DKIM lookup failed for the moment: {}",
        escape_controls(why)
    )
}

/// `imported ADDRESS (expires DATE)`, saying when nothing changed.
pub fn line_imported(done: &super::Imported) -> String {
    let same = if done.written == super::Written::Unchanged {
        ", already there"
    } else {
        ""
    };
    format!(
        "imported {} (expires {}{same})",
        escape_controls(&done.address),
        ymd(done.not_after)
    )
}

fn list(config: &Config, out: &mut dyn std::io::Write) -> Result<(), SetupError> {
    let store = CertStore::load(&config.certs, config.ca.as_deref())?;
    let now = unix_now();
    let soon = now + 30 * 86_400;
    let mut rows: Vec<(String, String, i64, String, String)> = store
        .all()
        .map(|(address, info)| {
            let flag = match info.check(Usage::Encrypt, now) {
                Err(CertProblem::Expired { .. }) => "EXPIRED".to_string(),
                Err(p) => format!("UNUSABLE: {p}"),
                Ok(()) if info.not_after < soon => format!(
                    "EXPIRING in {} days",
                    (info.not_after - now).div_euclid(86_400)
                ),
                Ok(()) => "ok".to_string(),
            };
            (
                escape_controls(address).into_owned(),
                super::store::issuer_line(&info.cert),
                info.not_after,
                super::store::key_type(&info.cert),
                flag,
            )
        })
        .collect();
    rows.sort();
    let width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(7);
    let _ = writeln!(
        out,
        "{:width$}  {:10}  {:12}  {:8}  issuer",
        "address", "expires", "key", "status"
    );
    for (address, issuer, until, key, flag) in &rows {
        let _ = writeln!(
            out,
            "{address:width$}  {:10}  {key:12}  {flag:8}  {issuer}",
            ymd(*until)
        );
    }
    for problem in &store.unreadable {
        let _ = writeln!(out, "unreadable: {}", escape_controls(problem));
    }
    Ok(())
}
