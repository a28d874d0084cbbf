//! Folder layouts that cannot work, refused before anything is claimed.
//!
//! Every move the daemon makes is a `rename()`, atomic only within one filesystem: the work folder
//! must sit on the spool's, staging on pickup's (otherwise a claim is committed and then cannot be
//! published, and sealed copies would be stranded). And no folder we write may be watched as input:
//! `failed`, `pickup`, `staging`, `work` or the metrics file's folder inside the spool would feed our
//! own output back in (reason files refused as inputs, pickup files sealed again), and the spool
//! inside one of them is the same loop seen from the other side. Below a dot-folder of the spool is
//! allowed (the spool ignores dot-folders: that is where `work` lives by default).
//!
//! `run` and `once` refuse to start on any of these (exit 78); `check` lists them as problems.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::config::{Config, Hop};

/// The work folder the daemon uses for `config`.
pub fn work_folder(config: &Config, spool: &Path) -> PathBuf {
    config
        .work
        .clone()
        .unwrap_or_else(|| spool.join(".smime-pickup"))
}

/// The staging folder the daemon uses beside `pickup`.
pub fn staging_folder(config: &Config, pickup: &Path) -> PathBuf {
    config.staging.clone().unwrap_or_else(|| {
        pickup
            .parent()
            .unwrap_or(Path::new("/"))
            .join(".smime-pickup-staging")
    })
}

/// What is wrong with the layout of `config`, one sentence each; empty when it can work. Folders
/// that do not exist yet are judged by the nearest folder above them that does.
pub fn problems(config: &Config) -> Vec<String> {
    let mut found = Vec::new();
    let Some(spool) = config.spool.as_deref() else {
        return found;
    };
    let pickup = config
        .pickup
        .as_deref()
        .filter(|_| config.route.uses(Hop::Pickup));
    let spool_real = real(spool);
    let work = work_folder(config, &spool_real);
    if same_filesystem(&spool_real, &work) == Some(false) {
        found.push(format!(
            "work {} is not on the filesystem of spool {}: claims are renames",
            work.display(),
            spool.display()
        ));
    }
    let staging = pickup.map(|p| staging_folder(config, p));
    if let (Some(p), Some(s)) = (pickup, &staging)
        && same_filesystem(p, s) == Some(false)
    {
        found.push(format!(
            "staging {} is not on the filesystem of pickup {}: outputs are published by rename",
            s.display(),
            p.display()
        ));
    }
    let mut ours: Vec<(&str, PathBuf)> = vec![("work", work)];
    if let Some(f) = &config.failed {
        ours.push(("failed", f.clone()));
    }
    if let Some(p) = pickup {
        ours.push(("pickup", p.to_path_buf()));
    }
    if let Some(s) = staging {
        ours.push(("staging", s));
    }
    if let Some(m) = config.metrics_file.as_deref().and_then(Path::parent) {
        ours.push(("metrics_file's folder", m.to_path_buf()));
    }
    // replies in the spool would be sealed and sent on, not harvested
    if let Some(inbox) = &config.certs_inbox {
        ours.push(("certs_inbox", inbox.clone()));
    }
    for (key, dir) in ours {
        let dir_real = real(&dir);
        if dir_real == spool_real {
            found.push(format!("{key} {} is the spool", dir.display()));
        } else if let Ok(below) = dir_real.strip_prefix(&spool_real) {
            let hidden = below
                .components()
                .any(|c| matches!(c, Component::Normal(n) if n.to_string_lossy().starts_with('.')));
            if !hidden {
                found.push(format!(
                    "{key} {} is inside the spool {}: our own output would be taken as input \
                     (move it out, or below a dot-folder, which the spool ignores)",
                    dir.display(),
                    spool.display()
                ));
            }
        } else if spool_real.starts_with(&dir_real) && key != "metrics_file's folder" {
            found.push(format!(
                "the spool {} is inside {key} {}",
                spool.display(),
                dir.display()
            ));
        }
    }
    found
}

/// `path` with symlinks resolved as far as it exists, the rest appended: where it really is (or
/// will be once created).
pub fn real(path: &Path) -> PathBuf {
    let mut missing = Vec::new();
    let mut at = path;
    loop {
        if let Ok(c) = at.canonicalize() {
            let mut p = c;
            for part in missing.iter().rev() {
                p.push(part);
            }
            return p;
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                at = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// Whether `a` and `b` (or the nearest existing folders above them) are on one filesystem; None when
/// one cannot be read.
pub fn same_filesystem(a: &Path, b: &Path) -> Option<bool> {
    let dev = |p: &Path| -> Option<u64> {
        let mut at = real(p);
        loop {
            if let Ok(m) = std::fs::metadata(&at) {
                return Some(m.dev());
            }
            at = at.parent()?.to_path_buf();
        }
    };
    Some(dev(a)? == dev(b)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// spool, pickup and failed below `t`, with `overrides` replacing or adding keys
    fn config(t: &Path, overrides: &[(&str, &str)]) -> Config {
        let mut keys = vec![
            ("spool", "spool"),
            ("pickup", "pickup"),
            ("failed", "failed"),
        ];
        for (k, v) in overrides {
            keys.retain(|(have, _)| have != k);
            keys.push((k, v));
        }
        let text: String = keys
            .iter()
            .map(|(k, v)| format!("{k} = \"{v}\"\n"))
            .collect();
        Config::from_toml(&text, Some(&t.join("c.toml"))).unwrap()
    }

    #[test]
    fn layouts_that_loop_or_strand_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        for d in ["spool/sub", "pickup", "elsewhere"] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        std::os::unix::fs::symlink(t.join("spool/sub"), t.join("link")).unwrap();
        assert_eq!(problems(&config(t, &[])), Vec::<String>::new());
        // hidden below the spool is fine: the spool ignores dot-folders
        assert_eq!(
            problems(&config(t, &[("work", "spool/.w")])),
            Vec::<String>::new()
        );
        for (key, value, want) in [
            ("failed", "spool/failed", "failed"),
            ("failed", "spool/sub/not-yet/x", "failed"),
            ("failed", "link/f", "failed"), // a symlink into the spool is seen through
            ("work", "spool/w", "work"),
            ("staging", "spool/st", "staging"),
            ("metrics_file", "spool/m/x.prom", "metrics_file"),
            ("pickup", "spool", "pickup"),
            ("pickup", "spool/../spool/sub", "pickup"),
            ("failed", ".", "the spool"),
            ("work", "/proc/w", "work"),        // another filesystem
            ("staging", "/proc/st", "staging"), // another filesystem
        ] {
            let p = problems(&config(t, &[(key, value)]));
            assert!(p.iter().any(|m| m.contains(want)), "{key} = {value}: {p:?}");
        }
    }

    #[test]
    fn filesystems_are_told_apart() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            same_filesystem(&tmp.path().join("not/yet"), tmp.path()),
            Some(true)
        );
        assert_eq!(same_filesystem(tmp.path(), Path::new("/proc")), Some(false));
    }
}
