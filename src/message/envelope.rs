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
        let bad = |why| ParseError::BadEnvelope {
            line: shown(&String::from_utf8_lossy(line)),
            why,
        };
        if line.len() > MAX_LINE {
            return Err(bad("longer than 998 octets"));
        }
        if line.iter().any(|b| b.is_ascii_control() && *b != b'\t') {
            return Err(bad("contains a control character"));
        }
        let value = String::from_utf8_lossy(&line[colon + 1..])
            .trim()
            .to_string();
        let bare = value
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string();
        match name.as_str() {
            "x-sender" => env.sender = bare,
            "x-receiver" => {
                if !bare.contains('@') {
                    return Err(bad("not an address"));
                }
                env.recipients.push(bare);
            }
            _ => env.extras.push((name, value)),
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
