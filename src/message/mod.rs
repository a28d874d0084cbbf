//! Parsing one input file into what the sealer needs: the envelope (who sends, who receives), the outer
//! headers that stay readable for routing, and the inner MIME entity in RFC 8551 canonical form.
//!
//! The inner entity is rebuilt from the raw bytes rather than from a parsed tree, so that parts which are
//! already 7-bit clean reach the signature byte for byte (only their line endings become CRLF). Parts
//! that are not (8bit or binary content, lines over 998 octets) are re-encoded: quoted-printable for
//! mostly-ASCII text, base64 for everything else, part by part through multiparts. mail-parser reads the
//! structured headers (addresses, Content-Type parameters) so that groups, comments and RFC 2047/2231
//! forms are understood the way a mail client would.
//!
//! Nothing here recurses as deep as the input nests, and the work is linear in the input's size: the
//! MIME tree is found in one pass over the lines (`structure`) and written out from an explicit stack
//! (`canonical`). What an input may hold is bounded by `Limits`; every limit exceeded is a refusal
//! that names it. Header lines over 998 octets are folded on output (`fold`).

use mail_parser::MessageParser;
use thiserror::Error;

mod canonical;
mod content_type;
mod encoding;
mod entity;
mod envelope;
mod fold;
mod limits;
mod structure;
#[cfg(test)]
mod tests;

pub use encoding::{encode_base64_lines, encode_qp};
pub use entity::{push_crlf, split_entity};
pub use fold::write_field;
pub use limits::Limits;

use envelope::{dedup_addresses, split_pickup_envelope};
use limits::{check_address, check_content_types, shown};

/// A NUL in a raw header field: it may not reach the outer header block (a bare CR is written as a
/// space there, see `fold`).
fn unsafe_in_header(raw: &[u8]) -> Option<&'static str> {
    raw.contains(&0).then_some("a NUL byte")
}

/// Longest line SMTP allows, without its CRLF (RFC 5322 §2.1.1).
const MAX_LINE: usize = 998;
/// Base64 and quoted-printable line length for what we encode ourselves.
const ENCODED_LINE: usize = 76;

/// Why an input cannot be sealed. All of these are permanent: retrying the same bytes gives the same answer.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("the file is empty")]
    Empty,
    #[error("not a message: {0}")]
    NotAMessage(String),
    #[error("message is {size} bytes, over max_message_bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("no From address: the message has no usable From header")]
    NoFrom,
    #[error("no recipients: no To, Cc, Bcc or x-receiver address")]
    NoRecipients,
    #[error("bad envelope line {line:?}: {why}")]
    BadEnvelope { line: String, why: &'static str },
    #[error("bad address {address:?}: {why}")]
    BadAddress { address: String, why: &'static str },
    #[error("header {name} holds {what}: it would be copied into the outer header as is")]
    BadHeader { name: String, what: &'static str },
    #[error("more than {max} recipients (max_recipients = {max})")]
    TooManyRecipients { max: usize },
    #[error("header block of {size} bytes, over max_header_bytes ({max})")]
    HeaderTooLarge { size: usize, max: usize },
    #[error("a MIME part's header block is over max_header_bytes ({max})")]
    PartHeaderTooLarge { max: usize },
    #[error("MIME parts nested more than {max} deep (max_mime_depth = {max})")]
    TooDeep { max: usize },
    #[error("more than {max} MIME parts (max_mime_parts = {max})")]
    TooManyParts { max: usize },
    #[error(
        "header field {name}: {len} octets without a place to fold them into lines of 998 (RFC 5322)"
    )]
    Unfoldable { name: String, len: usize },
    #[error("malformed MIME: {0}")]
    Malformed(String),
}

/// The SMTP envelope of one message, plus the PowerMTA pickup extras that travel with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// MAIL FROM; empty for the null sender (`x-sender: <>`)
    pub sender: String,
    /// RCPT TO, in order, without duplicates (compared case-insensitively)
    pub recipients: Vec<String>,
    /// The recipients nobody else may learn about (Bcc, or envelope recipients absent from To/Cc):
    /// each gets a copy sealed for them alone.
    pub hidden: Vec<String>,
    /// `x-envid`, `x-job`, `x-virtual-mta`, `x-sender-override` lines, as (lowercase name, value)
    pub extras: Vec<(String, String)>,
}

/// One raw header field: its name and the whole field as written, folding included, without the final
/// line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a str,
    pub raw: &'a [u8],
}

impl Field<'_> {
    fn is_content(&self) -> bool {
        self.name.len() > 8 && self.name[..8].eq_ignore_ascii_case("content-")
    }
    fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// A parsed input: envelope, identities, and the two halves the sealer wraps.
#[derive(Debug)]
pub struct Message {
    pub envelope: Envelope,
    /// The From address: the signing identity
    pub from: String,
    /// Outer header block (CRLF, each field ending in CRLF): everything but Bcc, MIME-Version, Content-*;
    /// Date and Message-ID added when missing
    pub outer_headers: Vec<u8>,
    /// The inner entity (Content-* headers, blank line, body) in canonical form
    pub inner: Vec<u8>,
    /// The input was already S/MIME; `original` holds it with CRLF line endings
    pub already_sealed: bool,
    /// When already sealed: the message as received (envelope lines removed), CRLF line endings
    pub original: Vec<u8>,
    pub message_id: String,
}

/// Parses `input` (LF or CRLF, optional leading pickup envelope lines) within `limits`.
pub fn parse(input: &[u8], limits: &Limits) -> Result<Message, ParseError> {
    if input.is_empty() || input.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    if input.len() > limits.max_message_bytes {
        return Err(ParseError::TooLarge {
            size: input.len(),
            max: limits.max_message_bytes,
        });
    }
    let (pickup_envelope, rest) = split_pickup_envelope(input)?;
    let (fields, body) = split_entity(rest)?;
    if fields.is_empty() {
        return Err(ParseError::NotAMessage(
            "no header fields before the body".into(),
        ));
    }
    let header_end = rest.len() - body.len();
    if header_end > limits.max_header_bytes {
        return Err(ParseError::HeaderTooLarge {
            size: header_end,
            max: limits.max_header_bytes,
        });
    }
    check_content_types(&fields)?;
    // mail-parser skips a last field without its line end (a file cut short): give it one
    let block = match &rest[..header_end] {
        b @ [.., b'\n'] => std::borrow::Cow::Borrowed(b),
        b => std::borrow::Cow::Owned([b, b"\r\n"].concat()),
    };
    let parsed = MessageParser::new()
        .parse_headers(&block)
        .ok_or_else(|| ParseError::NotAMessage("unreadable header block".into()))?;

    let from = parsed
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::trim)
        .filter(|a| a.contains('@'))
        .ok_or(ParseError::NoFrom)?
        .to_string();

    let visible: Vec<String> = parsed
        .all_to()
        .chain(parsed.all_cc())
        .flat_map(|a| a.iter())
        .filter_map(|a| a.address())
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    let bcc: Vec<String> = parsed
        .all_bcc()
        .flat_map(|a| a.iter())
        .filter_map(|a| a.address())
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();

    let mut envelope = match pickup_envelope {
        Some(env) => env,
        None => {
            let sender = parsed
                .return_address()
                .map(|a| {
                    a.trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_string()
                })
                .filter(|a| a.contains('@'))
                .unwrap_or_else(|| from.clone());
            Envelope {
                sender,
                recipients: visible.iter().chain(&bcc).cloned().collect(),
                ..Envelope::default()
            }
        }
    };
    dedup_addresses(&mut envelope.recipients, limits.max_recipients)?;
    if envelope.recipients.is_empty() {
        return Err(ParseError::NoRecipients);
    }
    // the addresses become envelope lines and SMTP commands (and From names the signing key in
    // errors and logs): each must be one address and nothing more, whatever its source
    for a in [&from, &envelope.sender]
        .into_iter()
        .chain(&envelope.recipients)
    {
        check_address(a)?;
    }
    let senders = Some(&envelope.sender).filter(|s| !s.is_empty());
    for a in senders.into_iter().chain(&envelope.recipients) {
        envelope::mailbox(a).map_err(|why| ParseError::BadAddress {
            address: crate::logging::escape_controls(a).into_owned(),
            why,
        })?;
    }
    let visible: std::collections::HashSet<String> =
        visible.iter().map(|v| v.to_ascii_lowercase()).collect();
    envelope.hidden = envelope
        .recipients
        .iter()
        .filter(|r| !visible.contains(&r.to_ascii_lowercase()))
        .cloned()
        .collect();

    // read from the field itself, as the canonical form reads it (not from the whole block, where
    // a malformed field before it can hide it)
    let ct = content_type::content_type(&fields)?;
    let already_sealed = ct
        .ctype
        .as_deref()
        .is_some_and(|t| is_smime_type(t, ct.subtype.as_deref(), ct.protocol.as_deref()));

    let mut outer = Vec::with_capacity(header_end + 128);
    for field in &fields {
        if let Some(what) = unsafe_in_header(field.raw) {
            return Err(ParseError::BadHeader {
                name: crate::logging::escape_controls(field.name).into_owned(),
                what,
            });
        }
        if !field.is_content() && !field.is("bcc") && !field.is("mime-version") {
            write_field(&mut outer, field)?;
        }
    }
    if !fields.iter().any(|f| f.is("date")) {
        outer.extend_from_slice(format!("Date: {}\r\n", rfc5322_now()).as_bytes());
    }
    let message_id = match parsed.message_id() {
        Some(id) => shown(id),
        None => {
            let id = new_message_id(&from);
            outer.extend_from_slice(format!("Message-ID: <{id}>\r\n").as_bytes());
            id
        }
    };

    // passed through as it came, but for its header block (which no signature covers): folded too
    let mut original = Vec::new();
    if already_sealed {
        for field in &fields {
            write_field(&mut original, field)?;
        }
        original.extend_from_slice(b"\r\n");
        push_crlf(&mut original, body);
        // a signature covers the body: it can be neither folded nor re-encoded
        if encoding::longest_line(&original) > MAX_LINE {
            return Err(ParseError::Malformed(
                "already S/MIME, but with a line over 998 octets (RFC 5322) that cannot be \
                 changed without breaking it"
                    .into(),
            ));
        }
    }

    let mut inner = crate::buffers::take(body.len() + body.len() / 16 + header_end + 64);
    if !already_sealed {
        let content: Vec<Field> = fields.iter().filter(|f| f.is_content()).cloned().collect();
        if let Err(e) = canonical::canonical(content, body, limits, &mut inner) {
            crate::buffers::give(inner);
            return Err(e);
        }
    }
    Ok(Message {
        envelope,
        from,
        outer_headers: outer,
        inner,
        already_sealed,
        original,
        message_id,
    })
}

/// True for a top-level type that already is S/MIME.
fn is_smime_type(ctype: &str, subtype: Option<&str>, protocol: Option<&str>) -> bool {
    let sub = subtype.unwrap_or_default();
    (ctype.eq_ignore_ascii_case("multipart")
        && sub.eq_ignore_ascii_case("signed")
        && protocol.is_some_and(|p| {
            p.eq_ignore_ascii_case("application/pkcs7-signature")
                || p.eq_ignore_ascii_case("application/x-pkcs7-signature")
        }))
        || (ctype.eq_ignore_ascii_case("application")
            && (sub.eq_ignore_ascii_case("pkcs7-mime") || sub.eq_ignore_ascii_case("x-pkcs7-mime")))
}

/// The current time as an RFC 5322 date, UTC.
fn rfc5322_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    mail_builder::headers::date::Date::new(secs).to_rfc822()
}

/// A fresh Message-ID (without angle brackets) in the sender's domain.
fn new_message_id(from: &str) -> String {
    let domain = from
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| {
            !d.is_empty()
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
        .unwrap_or("localhost");
    let mut rnd = [0u8; 12];
    openssl::rand::rand_bytes(&mut rnd).expect("the OpenSSL random generator works");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let hexed: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    format!("{nanos:x}.{hexed}@{domain}")
}
