//! What one input may hold. Real mail stays far below every default; an input over one is refused
//! with a reason naming the limit, so a crafted or runaway input costs bounded time and memory and
//! never reaches code that would choke on it.

use super::{Field, ParseError};

/// The limits an input is parsed within (config keys of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Larger inputs are refused before anything is parsed
    pub max_message_bytes: usize,
    /// MIME entities inside each other (the message itself is level 1; a part of a multipart or
    /// the message inside a message/rfc822 one level deeper than its parent)
    pub max_mime_depth: usize,
    /// One header block: the message's, and each part's
    pub max_header_bytes: usize,
    /// MIME entities in the whole message, the message itself included
    pub max_mime_parts: usize,
    /// Envelope recipients after removing duplicates
    pub max_recipients: usize,
}

impl Limits {
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 50 * 1024 * 1024;
    pub const DEFAULT_MAX_MIME_DEPTH: usize = 100;
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 1024 * 1024;
    pub const DEFAULT_MAX_MIME_PARTS: usize = 10_000;
    pub const DEFAULT_MAX_RECIPIENTS: usize = 10_000;

    /// No limit at all: for benches and tests that measure the parser itself.
    pub const NONE: Limits = Limits {
        max_message_bytes: usize::MAX,
        max_mime_depth: usize::MAX,
        max_header_bytes: usize::MAX,
        max_mime_parts: usize::MAX,
        max_recipients: usize::MAX,
    };
}

impl Limits {
    /// Sets the limit a config key names, when the file sets it; a value outside the range that
    /// keeps the daemon useful and its work bounded is refused, naming key, value and range.
    pub fn set(mut self, key: &str, value: Option<usize>) -> Result<Limits, String> {
        let Some(value) = value else {
            return Ok(self);
        };
        let (limit, range) = match key {
            "max_message_bytes" => (&mut self.max_message_bytes, 1..=1 << 30),
            "max_mime_depth" => (&mut self.max_mime_depth, 1..=1000),
            "max_header_bytes" => (&mut self.max_header_bytes, 1024..=64 << 20),
            "max_mime_parts" => (&mut self.max_mime_parts, 1..=1_000_000),
            "max_recipients" => (&mut self.max_recipients, 1..=1_000_000),
            _ => return Err(format!("{key} is no limit")),
        };
        if !range.contains(&value) {
            return Err(format!(
                "{key} = {value}: must be from {} to {}",
                range.start(),
                range.end()
            ));
        }
        *limit = value;
        Ok(self)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
            max_mime_depth: Self::DEFAULT_MAX_MIME_DEPTH,
            max_header_bytes: Self::DEFAULT_MAX_HEADER_BYTES,
            max_mime_parts: Self::DEFAULT_MAX_MIME_PARTS,
            max_recipients: Self::DEFAULT_MAX_RECIPIENTS,
        }
    }
}

/// Longest Content-Type field handed to mail-parser. Its RFC 2231 continuations (`name*0=`,
/// `name*1=` …) are joined in quadratic time (a 3 MB field of them takes half a second); real fields
/// are a few hundred octets.
const MAX_CONTENT_TYPE: usize = 64 * 1024;

/// Refuses a Content-Type field too long to be parsed in linear time.
pub(super) fn check_content_types(fields: &[Field]) -> Result<(), ParseError> {
    for f in fields.iter().filter(|f| f.is("content-type")) {
        let len = unfolded_len(f.raw);
        if len > MAX_CONTENT_TYPE {
            return Err(ParseError::Malformed(format!(
                "a Content-Type field of {len} octets (at most {MAX_CONTENT_TYPE})"
            )));
        }
    }
    Ok(())
}

/// A field's length without its line ends (CRs before an LF, and the LF), so folding it does not
/// change it.
fn unfolded_len(raw: &[u8]) -> usize {
    let mut line_ends = 0;
    for (i, _) in raw.iter().enumerate().filter(|(_, b)| **b == b'\n') {
        let crs = raw[..i].iter().rev().take_while(|&&b| b == b'\r').count();
        line_ends += 1 + crs;
    }
    raw.len() - line_ends
}

/// Longest address SMTP can carry (RFC 5321 §4.5.3.1.3: a path of 256 octets with its brackets).
const MAX_ADDRESS: usize = 254;

/// An envelope address becomes a pickup envelope line and an SMTP command: it must fit one and
/// must not end or split it.
pub(super) fn check_address(address: &str) -> Result<(), ParseError> {
    let why = if address.len() > MAX_ADDRESS {
        "longer than 254 octets (RFC 5321)"
    } else if address.bytes().any(|b| b.is_ascii_control()) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(ParseError::BadAddress {
        address: shown(address),
        why,
    })
}

/// A value from the input as it may appear in a log line or a reason: control characters replaced,
/// at most 100 characters.
pub(super) fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(100)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().nth(100).is_some() {
        out.push('…');
    }
    out
}
