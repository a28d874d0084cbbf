//! The PowerMTA pickup envelope lines an input may start with, and the recipient list they make.

use super::entity::{memchr, starts_with_ignore_case, trim_eol};
use super::limits::shown;
use super::{Envelope, MAX_LINE, ParseError};

/// Envelope lines PowerMTA reads at the top of a pickup file.
const ENVELOPE_EXTRAS: [&str; 4] = ["x-envid", "x-job", "x-virtual-mta", "x-sender-override"];

/// Splits leading `x-sender:`/`x-receiver:`... lines off a pickup-format input. Returns `None` when the
/// input does not start with `x-sender:` (then the headers decide the envelope).
pub(super) fn split_pickup_envelope(input: &[u8]) -> Result<(Option<Envelope>, &[u8]), ParseError> {
    if !starts_with_ignore_case(input, b"x-sender:") {
        return Ok((None, input));
    }
    let mut env = Envelope::default();
    let mut pos = 0;
    while pos < input.len() {
        let end = memchr(b'\n', &input[pos..]).map_or(input.len(), |i| pos + i + 1);
        let line = trim_eol(&input[pos..end]);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            break;
        };
        let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
        let known =
            name == "x-sender" || name == "x-receiver" || ENVELOPE_EXTRAS.contains(&name.as_str());
        if !known {
            break;
        }
        // written again at the top of the pickup file: it must stay one valid line there
        let bad = |why: &'static str| ParseError::BadEnvelope {
            line: shown(&String::from_utf8_lossy(line)),
            why,
        };
        if line.len() > MAX_LINE {
            return Err(bad("longer than 998 octets"));
        }
        if line.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
            return Err(bad("contains a control character (CR, LF, NUL...)"));
        }
        let value = std::str::from_utf8(&line[colon + 1..])
            .map_err(|_| bad("not UTF-8"))?
            .trim_matches(|c| c == ' ' || c == '\t');
        let bare = value.strip_prefix('<').unwrap_or(value);
        let bare = bare.strip_suffix('>').unwrap_or(bare);
        match name.as_str() {
            "x-sender" if bare.is_empty() => env.sender = String::new(), // the null sender
            "x-sender" => {
                mailbox(bare).map_err(bad)?;
                env.sender = bare.to_string();
            }
            "x-receiver" => {
                mailbox(bare).map_err(bad)?;
                env.recipients.push(bare.to_string());
            }
            "x-sender-override" => {
                mailbox(bare).map_err(bad)?;
                env.extras.push((name, bare.to_string()));
            }
            _ => {
                token(value).map_err(bad)?;
                env.extras.push((name, value.to_string()));
            }
        }
        pos = end;
    }
    Ok((Some(env), &input[pos..]))
}

/// Removes repeated addresses (compared case-insensitively), and refuses more than `max` different
/// ones; the work stops there, however long the list.
pub(super) fn dedup_addresses(list: &mut Vec<String>, max: usize) -> Result<(), ParseError> {
    let mut seen = std::collections::HashSet::new();
    let mut over = false;
    list.retain(|a| {
        if over {
            return false;
        }
        let new = seen.insert(a.to_ascii_lowercase());
        over = seen.len() > max;
        new
    });
    if over {
        return Err(ParseError::TooManyRecipients { max });
    }
    Ok(())
}

/// Whether `a` can stand in an SMTP envelope and a pickup line as one address: `local@domain` with
/// no white space, no control character (a CR would end the line and start another: an
/// `x-receiver` the author never wrote) and none of the characters that delimit addresses.
/// UTF-8 is allowed (SMTPUTF8); quoted local parts with spaces are not.
pub fn mailbox(a: &str) -> Result<(), &'static str> {
    if a.len() > 320 {
        return Err("address longer than 320 octets");
    }
    if a.chars().any(|c| c.is_control()) {
        return Err("control character (CR, LF, NUL...) in an address");
    }
    if a.chars().any(char::is_whitespace) {
        return Err("white space in an address");
    }
    if a.chars().any(|c| "<>()[],;:\\\"".contains(c)) {
        return Err("an address delimiter (<>()[],;:\\\") in an address");
    }
    match a.rsplit_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && !domain.is_empty()
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains("..") =>
        {
            Ok(())
        }
        _ => Err("not an address (local@domain)"),
    }
}

/// Whether `v` is what PowerMTA takes in `x-job`, `x-virtual-mta` and `x-envid`: printable ASCII,
/// no spaces.
pub fn token(v: &str) -> Result<(), &'static str> {
    if v.is_empty() {
        return Err("empty value");
    }
    if v.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("only printable ASCII without spaces is allowed here")
    }
}
