//! The bytes and the name of a pickup file.

use std::fs::File;
use std::io::{self, IoSlice, Write};

use crate::seal::Sealed;
use crate::spool::claim::Claim;

/// The pickup file for one copy and one slice of its recipients: envelope lines first, then the
/// message; CRLF; no dot-stuffing.
pub fn pickup_file(copy: &Sealed, recipients: &[String]) -> Vec<u8> {
    let mut out = envelope_lines(copy, recipients);
    out.extend_from_slice(message_part(copy));
    out
}

/// Writes the pickup file for `copy` and `recipients` into `file`, which holds `old` bytes (a reused
/// inode's earlier input): what `pickup_file` returns, without copying the message after its
/// envelope lines first (one `writev` for both, as many as the kernel needs), cut to its length,
/// then made readable by the MTA's group (whatever the service's umask: 0077 under systemd) once
/// nothing of the old content is left. Returns whether the length stayed `old`: then only a full
/// fsync makes the new mode durable (fdatasync writes the inode when the size changed only).
pub(super) fn write(
    file: &mut File,
    copy: &Sealed,
    recipients: &[String],
    old: u64,
) -> io::Result<bool> {
    let head = envelope_lines(copy, recipients);
    let body = message_part(copy);
    let mut parts = [IoSlice::new(&head), IoSlice::new(body)];
    let mut left = &mut parts[..];
    while !left.is_empty() {
        match file.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = (head.len() + body.len()) as u64;
    if old > len {
        file.set_len(len)?;
    }
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o640))?;
    Ok(old == len)
}

/// A pickup file's envelope lines (`x-sender`, `x-receiver`, extras): what comes before
/// `message_part`.
fn envelope_lines(copy: &Sealed, recipients: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * (recipients.len() + 1));
    out.extend_from_slice(b"x-sender: ");
    out.extend_from_slice(copy.envelope.sender.as_bytes());
    out.extend_from_slice(b"\r\n");
    for r in recipients {
        out.extend_from_slice(b"x-receiver: ");
        out.extend_from_slice(r.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &copy.envelope.extras {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out
}

/// What a pickup file carries after its envelope lines: the sealed message as it is (CRLF, no
/// dot-stuffing). The API route sends exactly these bytes as `email_rfc822`.
pub fn message_part(copy: &Sealed) -> &[u8] {
    &copy.data
}

/// A pickup file's name: `<claim id>.<n>.<input's name>.eml`. The claim id makes it unique and is
/// what recovery looks for (`<id>.` prefix); the input's name, reduced to letters, digits, `-`, `_`
/// and `.` and at most 60 bytes, tells an admin (and PowerMTA's badmail folder) where it came from.
pub fn pickup_name(claim: &Claim, n: usize) -> String {
    let input = claim.rel.file_name().unwrap_or_default().to_string_lossy();
    let input = match input.len().checked_sub(4) {
        Some(cut) if input.is_char_boundary(cut) && input[cut..].eq_ignore_ascii_case(".eml") => {
            &input[..cut]
        }
        _ => &input[..],
    };
    let mut stem: String = input
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    stem = stem.trim_start_matches('.').to_string();
    if stem.is_empty() {
        format!("{}.{n}.eml", claim.id)
    } else {
        format!("{}.{n}.{stem}.eml", claim.id)
    }
}
