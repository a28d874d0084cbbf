//! The end of one input's journey: removed after its outputs are durable, or moved to the failed
//! folder with a reason beside it, or left claimed for a retry. Nothing is deleted before delivery.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::spool::claim::{Claim, sync_dir};

/// The input was delivered: drop the claim (committed or not) and its SMTP progress record.
pub fn delivered(claim: &Claim) -> std::io::Result<()> {
    for path in [
        claim.committed_path(),
        claim.path.clone(),
        crate::deliver::smtp::progress_path(claim),
    ] {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Moves a refused input to `failed/<relative path>` (subfolders kept; `.1`, `.2` … on a name
/// clash) and writes `<that>.reason`: one line with the time and the cause. Returns the new path.
pub fn quarantine(claim: &Claim, failed: &Path, reason: &str) -> std::io::Result<PathBuf> {
    place_in_failed(claim, failed, reason, false)
}

/// Like `quarantine`, but leaves the input claimed: for the recipients a server refused while the
/// others got the message (the input is then finished as delivered).
pub fn quarantine_copy(claim: &Claim, failed: &Path, reason: &str) -> std::io::Result<PathBuf> {
    place_in_failed(claim, failed, reason, true)
}

fn place_in_failed(
    claim: &Claim,
    failed: &Path,
    reason: &str,
    copy: bool,
) -> std::io::Result<PathBuf> {
    let wanted = failed.join(&claim.rel);
    let parent = wanted.parent().unwrap_or(failed).to_path_buf();
    crate::dirs::create_all(&parent)?;
    // the reason file is created first and exclusively: it reserves the name, so two workers (or two
    // instances) refusing inputs with the same name at once never overwrite each other
    let line = format!(
        "{} {}\n",
        crate::smime::certs::rfc3339(crate::smime::certs::unix_now()),
        one_line(reason)
    );
    let mut n = 0;
    let target = loop {
        let candidate = if n == 0 {
            wanted.clone()
        } else {
            let mut name = wanted.file_name().unwrap_or_default().to_owned();
            name.push(format!(".{n}"));
            parent.join(name)
        };
        n += 1;
        if candidate.exists() {
            continue;
        }
        match crate::dirs::create_new_file(&reason_path(&candidate), crate::dirs::REASON_MODE) {
            Ok(mut f) => {
                f.write_all(line.as_bytes())?;
                f.sync_all()?;
                break candidate;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    // a crash before the move leaves the input claimed, to be refused again (under a new name)
    if copy {
        std::fs::copy(claim.current_path(), &target)?;
        std::fs::File::open(&target)?.sync_all()?;
    } else {
        move_file(&claim.current_path(), &target)?;
    }
    // quarantined mail is for the service's user alone, whatever mode the exporter gave it
    std::fs::set_permissions(
        &target,
        std::os::unix::fs::PermissionsExt::from_mode(crate::dirs::INPUT_MODE),
    )?;
    sync_dir(&parent)?;
    Ok(target)
}

fn reason_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".reason");
    PathBuf::from(s)
}

/// The reason on one line: runs of white space become one space, other control characters are
/// escaped (a reason quotes file names, addresses and server replies).
fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::logging::escape_controls(&joined).into_owned()
}

/// rename, or copy + fsync + remove when `failed` is on another filesystem.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(18) => {
            // EXDEV
            std::fs::copy(from, to)?;
            std::fs::File::open(to)?.sync_all()?;
            std::fs::remove_file(from)
        }
        other => other,
    }
}
