//! The failed folder as a queue an admin can work: `failed list`, `failed retry`, `failed purge`.
//!
//! Each refused input sits at `FAILED/<its relative path in the spool>` with `NAME.reason` beside it:
//! one line, `<RFC 3339 time> <class>: <cause>` (`finish::quarantine` writes it). The class is one of
//! the metric's failure classes (`input`, `key`, `certificate`, `server`, `internal`). A reason's name
//! ends in `.reason`, which the spool's input filter (`*.eml` by default) never takes, and a second
//! failure under a taken name becomes `NAME.1.eml`, `NAME.2.eml`… (the extension stays last).
//!
//! `retry` renames inputs back into the spool at the same relative path (a unique name when that is
//! taken) and then removes their reasons; a running daemon takes them as new inputs. Renames are
//! atomic, so this is safe while the daemon runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::finish::{numbered, reason_of};

#[derive(Debug, Args)]
pub struct FailedArgs {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, Subcommand)]
pub enum Action {
    /// One row per failed input: when, class, path under failed/, reason; counts per class
    List {
        /// One JSON object: {"inputs": [{path, time, class, reason}], "counts": {class: n}}
        #[arg(long)]
        json: bool,
    },
    /// Put failed inputs back into the spool (after fixing the cause); prints what moved
    Retry {
        /// Every failed input
        #[arg(long, conflicts_with_all = ["class", "paths"])]
        all: bool,
        /// Every failed input of this class (input, key, certificate, server, internal)
        #[arg(long, value_name = "CLASS", conflicts_with = "paths")]
        class: Option<String>,
        /// Inputs by their path under failed/ (as `failed list` shows them)
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Remove failed inputs (and their reasons) older than DAYS days
    Purge {
        #[arg(long, value_name = "DAYS")]
        older_than: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FailedError {
    #[error("`failed` and `spool` must be set in the configuration")]
    NotConfigured,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a failed input (see `smime-pickup failed list`)")]
    Unknown(PathBuf),
    #[error("say what to retry: --all, --class CLASS or PATH...")]
    NothingChosen,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FailedError + '_ {
    move |source| FailedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One failed input and what its reason file says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// relative to the failed folder
    pub path: PathBuf,
    pub time: String,
    pub class: String,
    pub reason: String,
}

/// Reads a reason line: `<time> <class>: <cause>` (older lines without a class read as `unknown`).
pub fn parse_reason(line: &str) -> (String, String, String) {
    let line = line.trim_end();
    let (time, rest) = line.split_once(' ').unwrap_or((line, ""));
    match rest.split_once(": ") {
        Some((class, reason)) if crate::finish::FAILURE_CLASSES.contains(&class) => {
            (time.into(), class.into(), reason.into())
        }
        _ => (time.into(), "unknown".into(), rest.into()),
    }
}

/// Every failed input below `failed`, oldest first. Links, dot-files and reasons are not inputs.
pub fn entries(failed: &Path) -> Result<Vec<Entry>, FailedError> {
    let mut found = Vec::new();
    if !failed.exists() {
        return Ok(found);
    }
    for e in walkdir::WalkDir::new(failed).follow_links(false) {
        let e = e.map_err(|e| FailedError::Io {
            path: e.path().unwrap_or(failed).to_path_buf(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("walk error")),
        })?;
        let name = e.file_name().to_string_lossy();
        if !e.file_type().is_file() || name.starts_with('.') || name.ends_with(".reason") {
            continue;
        }
        let line = std::fs::read_to_string(reason_of(e.path())).unwrap_or_default();
        let (time, class, reason) = if line.is_empty() {
            (String::new(), "unknown".into(), "(no reason file)".into())
        } else {
            parse_reason(&line)
        };
        found.push(Entry {
            path: e
                .path()
                .strip_prefix(failed)
                .unwrap_or(e.path())
                .to_path_buf(),
            time,
            class,
            reason,
        });
    }
    found.sort_by(|a, b| (&a.time, &a.path).cmp(&(&b.time, &b.path)));
    Ok(found)
}

/// How many failed inputs there are of each class.
pub fn counts(entries: &[Entry]) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for e in entries {
        *c.entry(e.class.clone()).or_insert(0) += 1;
    }
    c
}

/// Runs `smime-pickup failed …`; returns what to print.
pub fn run(config: &Config, args: FailedArgs) -> Result<String, FailedError> {
    let failed = config.failed.as_deref().ok_or(FailedError::NotConfigured)?;
    match args.action {
        Action::List { json } => {
            let list = entries(failed)?;
            Ok(if json {
                render_json(&list)
            } else {
                render(&list)
            })
        }
        Action::Retry { all, class, paths } => {
            let spool = config.spool.as_deref().ok_or(FailedError::NotConfigured)?;
            let list = entries(failed)?;
            let chosen: Vec<&Entry> = if all {
                list.iter().collect()
            } else if let Some(class) = &class {
                list.iter().filter(|e| &e.class == class).collect()
            } else if !paths.is_empty() {
                let mut chosen = Vec::new();
                for p in &paths {
                    let rel = p.strip_prefix(failed).unwrap_or(p);
                    let e = list
                        .iter()
                        .find(|e| e.path == rel)
                        .ok_or_else(|| FailedError::Unknown(p.clone()))?;
                    chosen.push(e);
                }
                chosen
            } else {
                return Err(FailedError::NothingChosen);
            };
            let mut out = String::new();
            for e in &chosen {
                let to = retry(failed, spool, &e.path)?;
                out.push_str(&format!(
                    "retried {} -> {}\n",
                    failed.join(&e.path).display(),
                    to.display()
                ));
            }
            out.push_str(&format!("{} put back into the spool\n", chosen.len()));
            Ok(out)
        }
        Action::Purge { older_than } => {
            let cutoff = std::time::SystemTime::now()
                - std::time::Duration::from_secs(older_than.saturating_mul(86_400));
            let mut n = 0;
            for e in entries(failed)? {
                let input = failed.join(&e.path);
                let when = std::fs::metadata(reason_of(&input))
                    .or_else(|_| std::fs::metadata(&input))
                    .and_then(|m| m.modified())
                    .map_err(io(&input))?;
                if when < cutoff {
                    std::fs::remove_file(&input).map_err(io(&input))?;
                    let _ = std::fs::remove_file(reason_of(&input));
                    n += 1;
                }
            }
            Ok(format!(
                "purged {n} failed inputs older than {older_than} days\n"
            ))
        }
    }
}

/// Moves `failed/rel` back to `spool/rel` (or a numbered name when taken), then drops its reason.
fn retry(failed: &Path, spool: &Path, rel: &Path) -> Result<PathBuf, FailedError> {
    let from = failed.join(rel);
    let wanted = spool.join(rel);
    let parent = wanted.parent().unwrap_or(spool).to_path_buf();
    crate::dirs::create_all(&parent).map_err(io(&parent))?;
    let across = crate::layout::same_filesystem(&from, &parent) != Some(true);
    // across filesystems: a complete copy under a dot-name (ignored by the spool), then renamed in
    let source = if across {
        let tmp = parent.join(format!(".smime-pickup-retry-{}", std::process::id()));
        std::fs::copy(&from, &tmp)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .map_err(io(&tmp))?;
        tmp
    } else {
        from.clone()
    };
    let mut n = 0;
    let to = loop {
        let candidate = if n == 0 {
            wanted.clone()
        } else {
            numbered(&wanted, n)
        };
        n += 1;
        match crate::dirs::rename_exclusive(&source, &candidate) {
            Ok(()) => break candidate,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(&candidate)(e)),
        }
    };
    if across {
        std::fs::remove_file(&from).map_err(io(&from))?;
    }
    let reason = reason_of(&from);
    match std::fs::remove_file(&reason) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&reason)(e)),
        _ => {}
    }
    Ok(to)
}

fn render(list: &[Entry]) -> String {
    let mut out = String::new();
    for e in list {
        out.push_str(&format!(
            "{}  {:<11}  {}  {}\n",
            if e.time.is_empty() { "-" } else { &e.time },
            e.class,
            crate::logging::escape_controls(&e.path.to_string_lossy()),
            e.reason
        ));
    }
    let counts = counts(list);
    let by_class: Vec<String> = counts.iter().map(|(c, n)| format!("{c} {n}")).collect();
    out.push_str(&format!(
        "{} failed input{}{}{}\n",
        list.len(),
        if list.len() == 1 { "" } else { "s" },
        if by_class.is_empty() { "" } else { ": " },
        by_class.join(", ")
    ));
    out
}

fn render_json(list: &[Entry]) -> String {
    let value = serde_json::json!({ "inputs": list, "counts": counts(list) });
    format!("{value}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_lines_and_numbered_names() {
        assert_eq!(
            parse_reason("2026-01-02T03:04:05Z certificate: bob@x: no usable certificate\n"),
            (
                "2026-01-02T03:04:05Z".into(),
                "certificate".into(),
                "bob@x: no usable certificate".into()
            )
        );
        assert_eq!(
            parse_reason("2026-01-02T03:04:05Z no From address: x"),
            (
                "2026-01-02T03:04:05Z".into(),
                "unknown".into(),
                "no From address: x".into()
            )
        );
        assert_eq!(numbered(Path::new("d/a.eml"), 1), Path::new("d/a.1.eml"));
        assert_eq!(numbered(Path::new("d/a"), 2), Path::new("d/a.2"));
        assert_eq!(numbered(Path::new("d/.x"), 1), Path::new("d/.x.1"));
    }
}
