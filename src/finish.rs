//! The end of one input's journey: removed after its outputs are durable, or moved to the failed
//! folder with a reason beside it, or left claimed for a retry. Nothing is deleted before delivery.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::spool::claim::{Claim, sync_dir};

/// The classes a reason line names (`<time> <class>: <cause>`), read back by `failed list` and
/// counted by the metrics.
pub const FAILURE_CLASSES: [&str; 5] = ["input", "key", "certificate", "server", "internal"];

/// The input was delivered: drop the claim, under its committed name or its own (the commit renames
/// it, so it is under one of them at most), and, when `records` says a network route may have written
/// some, its progress records (SMTP, API). `gone`: the route already moved the claim away (pickup
/// keeps its inode for a later output, `deliver::pickup::recycle`), so it is not looked for.
pub fn delivered(claim: &Claim, records: bool, gone: bool) -> std::io::Result<()> {
    if !gone && !removed(&claim.committed_path())? {
        removed(&claim.path)?;
    }
    if records {
        drop_records(claim)?;
    }
    Ok(())
}

/// Removes `path`; false if it was not there.
fn removed(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes the claim's progress records (SMTP, API), those that exist.
fn drop_records(claim: &Claim) -> std::io::Result<()> {
    for path in crate::deliver::progress::paths(claim) {
        removed(&path)?;
    }
    Ok(())
}

/// Moves a refused input to `failed/<relative path>` (subfolders kept; `NAME.1.eml` … on a name
/// clash) and writes `<that>.reason`: one line, `<time> <class>: <cause>`. Returns the new path.
///
/// When a network route already handed some copies over (its progress records name recipients),
/// the reason says who got the message, since a retry of the whole input sends it to them again,
/// and the records go: no claim will ever read them.
pub fn quarantine(
    claim: &Claim,
    failed: &Path,
    class: &str,
    reason: &str,
) -> std::io::Result<PathBuf> {
    let served = crate::deliver::progress::sent_recipients(claim);
    let reason = if served.is_empty() {
        reason.to_string()
    } else {
        format!("{reason}; {}", already_served(served))
    };
    let to = place_in_failed(claim, failed, class, &reason, false)?;
    // the input is in failed/ by now: a record that cannot go is only litter in the work folder
    if let Err(e) = drop_records(claim) {
        log::warn!("{}: progress records: {e}", claim.path.display());
    }
    Ok(to)
}

/// "N recipients already got it (a, b, …): a retry sends it to them again", at most ten named.
fn already_served(served: std::collections::HashSet<String>) -> String {
    const NAMED: usize = 10;
    let mut served: Vec<String> = served.into_iter().collect();
    served.sort();
    let more = served.len().saturating_sub(NAMED);
    let mut list = served[..served.len().min(NAMED)].join(", ");
    if more > 0 {
        list.push_str(&format!(" and {more} more"));
    }
    let n = served.len();
    let noun = if n == 1 { "recipient" } else { "recipients" };
    format!("{n} {noun} already got it ({list}): a retry of this input sends it to them again")
}

/// Like `quarantine`, but leaves the input claimed: for the recipients a server refused while the
/// others got the message (the input is then finished as delivered).
pub fn quarantine_copy(
    claim: &Claim,
    failed: &Path,
    class: &str,
    reason: &str,
) -> std::io::Result<PathBuf> {
    place_in_failed(claim, failed, class, reason, true)
}

fn place_in_failed(
    claim: &Claim,
    failed: &Path,
    class: &str,
    reason: &str,
    copy: bool,
) -> std::io::Result<PathBuf> {
    let wanted = failed.join(&claim.rel);
    let parent = wanted.parent().unwrap_or(failed).to_path_buf();
    crate::dirs::create_all(&parent)?;
    // `<time> <class>: <cause>`, read back by `failed list`
    let line = format!(
        "{} {class}: {}\n",
        crate::smime::certs::rfc3339(crate::smime::certs::unix_now()),
        one_line(reason)
    );
    // Both halves are written complete under temporary dot-names first (a full disk fails here and
    // leaves nothing behind, so a retry finds the same final name free), then take their final names
    // by link/rename: no empty reason, no truncated input an admin could resubmit.
    let from = claim.current_path();
    let tmp_reason = parent.join(format!(".{}.reason.tmp", claim.id));
    let tmp_input = parent.join(format!(".{}.input.tmp", claim.id));
    // leftovers of an attempt that crashed: the claim is still ours, so are they
    let _ = std::fs::remove_file(&tmp_reason);
    let _ = std::fs::remove_file(&tmp_input);
    // across filesystems the input is copied beside its final name first; otherwise it is renamed
    // straight from the work folder at the end (it never sits under a temporary name)
    let across = copy
        || crate::layout::same_filesystem(from.parent().unwrap_or(Path::new("/")), &parent)
            != Some(true);
    let staged = (|| {
        let mut f = crate::dirs::create_new_file(&tmp_reason, crate::dirs::REASON_MODE)?;
        f.write_all(line.as_bytes())?;
        f.sync_all()?;
        if across {
            copy_synced(&from, &tmp_input)?;
        }
        Ok::<(), std::io::Error>(())
    })();
    if let Err(e) = staged {
        let _ = std::fs::remove_file(&tmp_reason);
        let _ = std::fs::remove_file(&tmp_input);
        return Err(e);
    }
    // the reason's link reserves the name exclusively: two workers (or two instances) refusing
    // inputs of the same name at once never overwrite each other
    let mut n = 0;
    let target = loop {
        let candidate = if n == 0 {
            wanted.clone()
        } else {
            numbered(&wanted, n) // a.eml → a.1.eml: still an input name, not a reason
        };
        n += 1;
        if candidate.symlink_metadata().is_ok() {
            continue;
        }
        match crate::dirs::rename_exclusive(&tmp_reason, &reason_of(&candidate)) {
            Ok(()) => break candidate,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    std::fs::rename(if across { &tmp_input } else { &from }, &target)?;
    // quarantined mail is for the service's user alone, whatever mode the exporter gave it
    std::fs::set_permissions(
        &target,
        std::os::unix::fs::PermissionsExt::from_mode(crate::dirs::INPUT_MODE),
    )?;
    sync_dir(&parent)?;
    if across && !copy {
        std::fs::remove_file(&from)?; // the original goes last, once its copy is durable
    }
    Ok(target)
}

/// Where the reason for a failed input is written: `NAME.reason` beside it.
pub fn reason_of(input: &Path) -> PathBuf {
    let mut s = input.as_os_str().to_owned();
    s.push(".reason");
    PathBuf::from(s)
}

/// `name` with `.n` before its extension: `a.eml` → `a.1.eml`, `a` → `a.1`.
pub fn numbered(path: &Path, n: usize) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let numbered = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.{n}.{ext}"),
        _ => format!("{name}.{n}"),
    };
    path.with_file_name(numbered)
}

/// Copies `from` to a new file `to` and makes it durable; a failed copy leaves no file.
fn copy_synced(from: &Path, to: &Path) -> std::io::Result<()> {
    let done = std::fs::copy(from, to).and_then(|_| std::fs::File::open(to)?.sync_all());
    if done.is_err() {
        let _ = std::fs::remove_file(to);
    }
    done
}

/// The reason on one line: runs of white space become one space, other control characters are
/// escaped (a reason quotes file names, addresses and server replies).
fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::logging::escape_controls(&joined).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivered_drops_a_committed_claim_and_its_progress_records() {
        let tmp = tempfile::tempdir().unwrap();
        let claim = Claim {
            path: tmp.path().join("i1-7,m.eml"),
            id: "i1-7".into(),
            rel: "m.eml".into(),
            fresh: false,
        };
        std::fs::write(claim.committed_path(), "input").unwrap();
        let [smtp, api] = crate::deliver::progress::paths(&claim);
        std::fs::write(&smtp, "a@y\n").unwrap();
        std::fs::write(&api, "b@y\n").unwrap();
        std::fs::write(tmp.path().join("i1-8,n.eml"), "another claim").unwrap();
        let left = || {
            let mut names: Vec<_> = std::fs::read_dir(tmp.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        // without network routes the records are not looked for (none can exist then)
        delivered(&claim, false, false).unwrap();
        assert_eq!(left().len(), 3, "{:?}", left());
        assert!(!claim.committed_path().exists());
        delivered(&claim, true, false).unwrap();
        assert_eq!(left(), ["i1-8,n.eml"]);
        // finishing again (a crash during finish) is not an error
        delivered(&claim, true, false).unwrap();
        // a claim delivered before its commit (SMTP, API) is dropped under its own name
        std::fs::write(&claim.path, "input").unwrap();
        delivered(&claim, true, false).unwrap();
        assert_eq!(left(), ["i1-8,n.eml"]);
        // a claim the route moved away itself is not looked for; its records still go
        std::fs::write(&claim.path, "a name that came back").unwrap();
        std::fs::write(&smtp, "a@y\n").unwrap();
        delivered(&claim, true, true).unwrap();
        assert_eq!(left(), ["i1-7,m.eml", "i1-8,n.eml"]);
    }

    /// An input refused after a route handed some copies over: the reason names who got it (a
    /// retry sends it to them again), and the progress records do not outlive the claim.
    #[test]
    fn a_quarantine_after_a_partial_send_names_who_got_it_and_drops_the_records() {
        let tmp = tempfile::tempdir().unwrap();
        let (work, failed) = (tmp.path().join("work"), tmp.path().join("failed"));
        std::fs::create_dir_all(&work).unwrap();
        let claim = Claim {
            path: work.join("i1-7,m.eml"),
            id: "i1-7".into(),
            rel: "m.eml".into(),
            fresh: false,
        };
        std::fs::write(&claim.path, "input").unwrap();
        let [smtp, api] = crate::deliver::progress::paths(&claim);
        let many: Vec<String> = (0..12).map(|n| format!("r{n:02}@y")).collect();
        std::fs::write(&smtp, format!("B@y,a@y\n{}\n", many.join(","))).unwrap();
        std::fs::write(&api, "c@y\n").unwrap();
        let to = quarantine(&claim, &failed, "server", "550 no").unwrap();
        let reason = std::fs::read_to_string(reason_of(&to)).unwrap();
        assert!(
            reason.contains(
                "server: 550 no; 15 recipients already got it (a@y, b@y, c@y, r00@y, r01@y, \
                 r02@y, r03@y, r04@y, r05@y, r06@y and 5 more): a retry of this input sends it \
                 to them again"
            ),
            "{reason}"
        );
        assert!(!smtp.exists() && !api.exists());
        assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0);
        // nothing handed over: the reason is the cause alone
        let other = Claim {
            path: work.join("i1-8,n.eml"),
            id: "i1-8".into(),
            rel: "n.eml".into(),
            fresh: false,
        };
        std::fs::write(&other.path, "input").unwrap();
        let to = quarantine(&other, &failed, "input", "no From").unwrap();
        let reason = std::fs::read_to_string(reason_of(&to)).unwrap();
        assert!(reason.ends_with(" input: no From\n"), "{reason}");
    }
}
