//! `smime-pickup demo`: the real pipeline (`once`) on the bundled fixture corpus with the bundled test
//! PKI, so a new user sees what the tool does with no setup. The fixtures are never modified: the PKI
//! and the messages are copied into the output folder (keys get the 0600 mode the key loader insists
//! on), which then holds `spool/` (drained), `pickup/` (one PowerMTA pickup file per sealed copy) and
//! `failed/` (each refused input with a `.reason` file beside it).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::{Config, ConfigError};
use crate::daemon::{self, DaemonError, Mode, Summary};

/// Why the demo could not run (the `cli` maps each to its exit code).
#[derive(Debug, Error)]
pub enum DemoError {
    /// the output folder, or a fixture copied into it
    #[error("{path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// Runs the demo into `out`.
pub fn run(fixtures: &Path, out: &Path) -> Result<Summary, DemoError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DemoError::Output { path, source }
    };
    if out.exists() {
        if !out.join(".smime-pickup-demo").exists() {
            return Err(DemoError::Output {
                path: out.to_path_buf(),
                source: std::io::Error::other(
                    "exists and is not a previous demo output; choose another --out",
                ),
            });
        }
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    let pki = out.join("pki");
    for sub in ["keys", "certs"] {
        copy_dir(&fixtures.join("pki").join(sub), &pki.join(sub)).map_err(io(&pki))?;
    }
    for file in ["ca.pem", "passphrase.txt"] {
        std::fs::copy(fixtures.join("pki").join(file), pki.join(file))
            .map_err(io(&fixtures.join("pki").join(file)))?;
    }
    for entry in std::fs::read_dir(pki.join("keys")).map_err(io(&pki))? {
        let path = entry.map_err(io(&pki))?.path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(io(&path))?;
    }
    std::fs::write(out.join(".smime-pickup-demo"), "").map_err(io(out))?;
    let config_path = out.join("smime-pickup.toml");
    std::fs::write(
        &config_path,
        "spool = \"spool\"\npickup = \"pickup\"\nfailed = \"failed\"\n\
         keys = \"pki/keys\"\ncerts = \"pki/certs\"\nca = \"pki/ca.pem\"\n\
         key_passphrase_file = \"pki/passphrase.txt\"\n",
    )
    .map_err(io(&config_path))?;
    // the corpus goes into the spool (the malformed cases in a subfolder), the pipeline does the rest
    for (from, to) in [
        (fixtures.join("eml"), out.join("spool")),
        (fixtures.join("eml/malformed"), out.join("spool/malformed")),
    ] {
        std::fs::create_dir_all(&to).map_err(io(&to))?;
        for entry in std::fs::read_dir(&from).map_err(io(&from))? {
            let path = entry.map_err(io(&from))?.path();
            if path.extension().is_some_and(|e| e == "eml") {
                std::fs::copy(&path, to.join(path.file_name().unwrap_or_default()))
                    .map_err(io(&path))?;
            }
        }
    }
    std::fs::create_dir_all(out.join("pickup")).map_err(io(out))?;
    let mut config = Config::read(&config_path)?;
    // the files were just copied: they are complete, no need to wait for them to settle
    config.settle = std::time::Duration::ZERO;
    Ok(daemon::run(config, Mode::Once, daemon::Control::none())?)
}

/// The pickup file holding the message whose Message-ID contains `needle`, for the "open one" hint.
pub fn find_pickup_file(pickup: &Path, needle: &str) -> Option<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(pickup)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files.into_iter().find(|f| {
        std::fs::read(f).is_ok_and(|b| {
            let head = &b[..b.len().min(4096)];
            String::from_utf8_lossy(head)
                .lines()
                .any(|l| l.starts_with("Message-ID:") && l.contains(needle))
        })
    })
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}
