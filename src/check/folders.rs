//! `check`, folders: the spool, pickup, staging, work and failed folders, the metrics file's
//! folder, what waits in failed/, and the layouts `run` refuses to start on.

use std::path::{Path, PathBuf};

use super::{Level, Report};
use crate::config::{Config, Hop};

pub(super) fn folders(config: &Config, r: &mut Report) {
    let needs_pickup = config.route.uses(Hop::Pickup);
    let mut wanted: Vec<(&str, Option<&PathBuf>, bool)> = vec![
        ("spool", config.spool.as_ref(), true),
        ("pickup", config.pickup.as_ref(), needs_pickup),
        ("failed", config.failed.as_ref(), true),
    ];
    wanted.push(("keys", Some(&config.keys), true));
    wanted.push(("certs", Some(&config.certs), true));
    for (key, path, required) in wanted {
        match path {
            None if required => r.add(Level::Config, format!("`{key}` is not set")),
            None => {}
            Some(p) => match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => {
                    let writable = key == "keys"
                        || key == "certs"
                        || rustix::fs::access(p, rustix::fs::Access::WRITE_OK).is_ok();
                    if writable {
                        let what = if key == "keys" || key == "certs" {
                            "a folder"
                        } else {
                            "a writable folder"
                        };
                        r.add(Level::Ok, format!("{key} {} is {what}", p.display()));
                    } else {
                        r.add(
                            Level::Missing,
                            format!("{key} {}: not writable by this user", p.display()),
                        );
                    }
                }
                Ok(_) => r.add(
                    Level::Missing,
                    format!("{key} {}: not a folder", p.display()),
                ),
                Err(e) if key == "failed" && e.kind() == std::io::ErrorKind::NotFound => r.add(
                    Level::Warning,
                    format!("failed {}: missing (created at start)", p.display()),
                ),
                Err(e) => r.add(Level::Missing, format!("{key} {}: {e}", p.display())),
            },
        }
    }
    // our own folders: they must exist and be writable, or be creatable
    let work = config
        .work
        .clone()
        .or_else(|| config.spool.as_ref().map(|s| s.join(".smime-pickup")));
    let staging = config.staging.clone().or_else(|| {
        config
            .pickup
            .as_ref()
            .and_then(|p| p.parent())
            .map(|p| p.join(".smime-pickup-staging"))
    });
    for (key, dir) in [("work", work), ("staging", staging)] {
        let Some(dir) = dir else { continue };
        let target = if dir.exists() {
            dir.clone()
        } else {
            dir.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        match rustix::fs::access(&target, rustix::fs::Access::WRITE_OK) {
            Ok(()) => r.add(
                Level::Ok,
                format!("{key} {} is writable (or can be created)", dir.display()),
            ),
            Err(e) => r.add(
                Level::Missing,
                format!(
                    "{key} {}: cannot be written by this user ({e})",
                    dir.display()
                ),
            ),
        }
    }
    // the metrics file's folder: written every second by the daemon
    if let Some(m) = &config.metrics_file {
        let dir = m
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        match rustix::fs::access(dir, rustix::fs::Access::WRITE_OK) {
            Ok(()) => r.add(
                Level::Ok,
                format!("metrics_file {}: its folder is writable", m.display()),
            ),
            Err(e) => r.add(
                Level::Missing,
                format!(
                    "metrics_file {}: its folder {} cannot be written ({e})",
                    m.display(),
                    dir.display()
                ),
            ),
        }
    }
    // what waits in the failed folder, by class (`failed list` shows each)
    if let Some(failed) = config.failed.as_deref().filter(|f| f.is_dir())
        && let Ok(list) = crate::failed::entries(failed)
        && !list.is_empty()
    {
        let by_class: Vec<String> = crate::failed::counts(&list)
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        r.add(
            Level::Warning,
            format!(
                "failed {}: {} input{} wait ({}); `smime-pickup failed list` says why",
                failed.display(),
                list.len(),
                if list.len() == 1 { "" } else { "s" },
                by_class.join(", ")
            ),
        );
    }
    // layouts that strand or loop: the same rules `run` and `once` refuse to start on
    for problem in crate::layout::problems(config) {
        r.add(Level::Config, problem);
    }
}
