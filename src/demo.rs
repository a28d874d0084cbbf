//! `smime-pickup demo`: seals the bundled fixture corpus with the bundled test PKI, so a new user sees
//! what the tool does with no setup. The fixtures are never modified: the PKI is copied (keys get the
//! 0600 mode the key loader insists on) and every result is written under the output folder:
//! `sealed/` holds one PowerMTA pickup-format file per sealed copy, `failed/` holds each refused input
//! with a `.reason` file beside it.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::cli::CliError;
use crate::config::Config;
use crate::keyring;
use crate::seal;
use crate::smime::certs::unix_now;

/// Runs the demo; returns (sealed inputs, sealed copies, refused inputs).
pub fn run(fixtures: &Path, out: &Path) -> Result<(usize, usize, usize), CliError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CliError::Output { path, source }
    };
    if out.exists() {
        if !out.join(".smime-pickup-demo").exists() {
            return Err(CliError::Output {
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
        "keys = \"pki/keys\"\ncerts = \"pki/certs\"\nca = \"pki/ca.pem\"\nkey_passphrase_file = \"pki/passphrase.txt\"\n",
    )
    .map_err(io(&config_path))?;
    let config = Config::read(&config_path)?;
    let ring = keyring::load(&config)?;

    let mut inputs: Vec<PathBuf> = walkdir::WalkDir::new(fixtures.join("eml"))
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    inputs.sort();
    let (sealed_dir, failed_dir) = (out.join("sealed"), out.join("failed"));
    std::fs::create_dir_all(&sealed_dir).map_err(io(&sealed_dir))?;
    std::fs::create_dir_all(&failed_dir).map_err(io(&failed_dir))?;
    let (mut ok, mut copies, mut refused) = (0, 0, 0);
    // a closed stdout (`demo | head`) ends the demo with an error, not a panic
    let mut so = std::io::stdout().lock();
    let stdout_err = |source| CliError::Output {
        path: "(stdout)".into(),
        source,
    };
    for input in &inputs {
        let name = input
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("input")
            .to_string();
        let bytes = std::fs::read(input).map_err(|source| CliError::Input {
            path: input.clone(),
            source,
        })?;
        match seal::seal(
            &bytes,
            &config.seal,
            config.max_message_bytes,
            &ring,
            unix_now(),
        ) {
            Ok(sealed) => {
                ok += 1;
                for (i, copy) in sealed.iter().enumerate() {
                    let path = sealed_dir.join(format!("{name}.{i}.eml"));
                    let mut file = format!("x-sender: {}\r\n", copy.envelope.sender).into_bytes();
                    for r in &copy.envelope.recipients {
                        file.extend_from_slice(format!("x-receiver: {r}\r\n").as_bytes());
                    }
                    for (k, v) in &copy.envelope.extras {
                        file.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
                    }
                    file.extend_from_slice(&copy.data);
                    std::fs::write(&path, file).map_err(io(&path))?;
                    let verb = if copy.protection == seal::Protection::Passthrough {
                        "passed"
                    } else {
                        "sealed"
                    };
                    writeln!(
                        so,
                        "{verb}   {:<34} -> {} ({}, to {})",
                        display(input, fixtures),
                        display(&path, out),
                        copy.protection,
                        copy.envelope.recipients.join(", ")
                    )
                    .map_err(stdout_err)?;
                    copies += 1;
                }
            }
            Err(e) => {
                refused += 1;
                let target = failed_dir.join(format!("{name}.eml"));
                std::fs::copy(input, &target).map_err(io(&target))?;
                let reason = failed_dir.join(format!("{name}.eml.reason"));
                std::fs::write(&reason, format!("{e}\n")).map_err(io(&reason))?;
                println!(
                    "refused  {:<34} -> {}: {e}",
                    display(input, fixtures),
                    display(&target, out)
                );
            }
        }
    }
    Ok((ok, copies, refused))
}

fn display(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
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
