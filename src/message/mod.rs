//! Parsing one input file into what the sealer needs: the envelope (who sends, who receives), the outer
//! headers that stay readable for routing, and the inner MIME entity in RFC 8551 canonical form.
//!
//! The inner entity is rebuilt from the raw bytes rather than from a parsed tree, so that parts which are
//! already 7-bit clean reach the signature byte for byte (only their line endings become CRLF). Parts
//! that are not (8bit or binary content, lines over 998 octets) are re-encoded: quoted-printable for
//! mostly-ASCII text, base64 for everything else, recursively through multiparts. mail-parser reads the
//! structured headers (addresses, Content-Type parameters) so that groups, comments and RFC 2047/2231
//! forms are understood the way a mail client would.

use mail_parser::{HeaderName, MessageParser};
use thiserror::Error;

mod canonical;
mod encoding;
mod entity;
mod envelope;
#[cfg(test)]
mod tests;

pub use encoding::{encode_base64_lines, encode_qp};
pub use entity::{push_crlf, split_entity};

use canonical::canonical_entity;
use envelope::{dedup_addresses, split_pickup_envelope};

/// A NUL or a CR that does not end a line, in a raw header field: neither may reach the outer
/// header block (a bare CR ends a header line for some readers and not for others).
fn unsafe_in_header(raw: &[u8]) -> Option<&'static str> {
    if raw.contains(&0) {
        return Some("a NUL byte");
    }
    let bare_cr = raw
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && raw.get(i + 1) != Some(&b'\n'));
    bare_cr.then_some("a bare CR")
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

/// Parses `input` (LF or CRLF, optional leading pickup envelope lines).
pub fn parse(input: &[u8], max_bytes: usize) -> Result<Message, ParseError> {
    if input.is_empty() || input.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    if input.len() > max_bytes {
        return Err(ParseError::TooLarge {
            size: input.len(),
            max: max_bytes,
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
    let parsed = MessageParser::new()
        .parse_headers(&rest[..header_end])
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
    dedup_addresses(&mut envelope.recipients);
    if envelope.recipients.is_empty() {
        return Err(ParseError::NoRecipients);
    }
    // whatever their source (envelope lines or headers), addresses go into pickup lines and SMTP
    // commands: each must be one address and nothing more
    let senders = Some(&envelope.sender).filter(|s| !s.is_empty());
    for a in senders.into_iter().chain(&envelope.recipients) {
        envelope::mailbox(a).map_err(|why| ParseError::BadAddress {
            address: crate::logging::escape_controls(a).into_owned(),
            why,
        })?;
    }
    envelope.hidden = envelope
        .recipients
        .iter()
        .filter(|r| !visible.iter().any(|v| v.eq_ignore_ascii_case(r)))
        .cloned()
        .collect();

    let already_sealed = parsed
        .header(HeaderName::ContentType)
        .and_then(|v| v.as_content_type())
        .is_some_and(|ct| is_smime_type(ct.ctype(), ct.subtype(), ct.attribute("protocol")));

    let mut outer = Vec::with_capacity(header_end + 128);
    let mut inner_headers = Vec::new();
    for field in &fields {
        if let Some(what) = unsafe_in_header(field.raw) {
            return Err(ParseError::BadHeader {
                name: crate::logging::escape_controls(field.name).into_owned(),
                what,
            });
        }
        if field.is_content() {
            push_crlf(&mut inner_headers, field.raw);
            inner_headers.extend_from_slice(b"\r\n");
        } else if !field.is("bcc") && !field.is("mime-version") {
            push_crlf(&mut outer, field.raw);
            outer.extend_from_slice(b"\r\n");
        }
    }
    if !fields.iter().any(|f| f.is("date")) {
        outer.extend_from_slice(format!("Date: {}\r\n", rfc5322_now()).as_bytes());
    }
    let message_id = match parsed.message_id() {
        Some(id) => id.to_string(),
        None => {
            let id = new_message_id(&from);
            outer.extend_from_slice(format!("Message-ID: <{id}>\r\n").as_bytes());
            id
        }
    };

    let mut original = Vec::new();
    if already_sealed {
        push_crlf(&mut original, rest);
    }

    let mut inner = crate::buffers::take(body.len() + body.len() / 16 + inner_headers.len() + 64);
    if !already_sealed {
        let content: Vec<Field> = fields.iter().filter(|f| f.is_content()).cloned().collect();
        canonical_entity(&content, body, true, &mut inner);
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
    let domain = from.rsplit_once('@').map_or("localhost", |(_, d)| d);
    let mut rnd = [0u8; 12];
    openssl::rand::rand_bytes(&mut rnd).expect("the OpenSSL random generator works");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let hexed: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
    format!("{nanos:x}.{hexed}@{domain}")
}
