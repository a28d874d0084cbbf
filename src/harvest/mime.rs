//! Finding the S/MIME signatures in a reply, with the exact bytes each one signs.
//!
//! A signed reply arrives as `multipart/signed` (RFC 8551 detached: the first part is signed as the
//! bytes between its boundary line and the CRLF before the next boundary line) or as
//! `application/pkcs7-mime; smime-type=signed-data` (opaque: the content is inside the signature).
//! Clients wrap these again: a signed reply can sit inside `multipart/mixed`, or be forwarded as a
//! `message/rfc822` attachment. The walk goes into both, up to `MAX_DEPTH` levels, and remembers the
//! message (header block) that carries each signature: its From is the address being claimed.
//!
//! The splitting is done here rather than by a MIME library because a signature covers bytes, not
//! a parsed model of them: the signed part must reach the verifier exactly as the message carries it.
//! Header fields (folding, quoting, parameters) are read with mail-parser.

use std::borrow::Cow;

use base64::Engine;
use mail_parser::{MessageParser, MimeHeaders};

/// Entities nested deeper than this are not looked into (a crafted reply could nest thousands).
pub const MAX_DEPTH: usize = 8;

/// One signature found in a reply.
#[derive(Debug)]
pub struct Signed<'a> {
    /// the CMS SignedData (DER)
    pub der: Vec<u8>,
    /// the signed content for a detached signature, exactly as the message carries it; `None` for
    /// an opaque one (the content is inside `der`)
    pub content: Option<&'a [u8]>,
    /// the message (header block and body) the signature belongs to: the reply itself, or a
    /// forwarded message inside it
    pub message: &'a [u8],
}

/// What the walk found: signatures, and why entities that looked signed were not usable.
#[derive(Debug, Default)]
pub struct Found<'a> {
    pub signed: Vec<Signed<'a>>,
    pub problems: Vec<String>,
}

/// Every signature in `message`, outermost first.
pub fn signatures(message: &[u8]) -> Found<'_> {
    let mut found = Found::default();
    walk(message, message, 0, &mut found);
    found
}

/// Splits an entity at its first empty line: (header block, body).
pub fn split_entity(entity: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    while pos < entity.len() {
        let end = memchr::memchr(b'\n', &entity[pos..]).map_or(entity.len(), |i| pos + i + 1);
        let line = &entity[pos..end];
        if line == b"\n" || line == b"\r\n" {
            return (&entity[..pos], &entity[end..]);
        }
        pos = end;
    }
    (entity, &[])
}

fn walk<'a>(entity: &'a [u8], message: &'a [u8], depth: usize, found: &mut Found<'a>) {
    if depth > MAX_DEPTH {
        found.problems.push(format!(
            "nested deeper than {MAX_DEPTH} levels: not looked into"
        ));
        return;
    }
    let (head, body) = split_entity(entity);
    let Some(parsed) = MessageParser::new().parse_headers(head) else {
        return;
    };
    let Some(ct) = parsed.content_type() else {
        return;
    };
    let ctype = ct.ctype().to_ascii_lowercase();
    let subtype = ct.subtype().unwrap_or("").to_ascii_lowercase();
    match (ctype.as_str(), subtype.as_str()) {
        ("multipart", sub) => {
            let Some(boundary) = ct.attribute("boundary").filter(|b| !b.is_empty()) else {
                found
                    .problems
                    .push(format!("multipart/{sub} without a boundary"));
                return;
            };
            let parts = split_multipart(body, boundary.as_bytes());
            if sub == "signed" {
                let protocol = ct.attribute("protocol").unwrap_or("").to_ascii_lowercase();
                if is_pkcs7(&protocol, "signature") {
                    detached(&parts, message, found);
                    // what was signed may itself carry a forwarded signed message; look no further:
                    // the reply's own signature is the one that counts for its From
                    return;
                }
            }
            for part in parts {
                walk(part, message, depth + 1, found);
            }
        }
        ("message", "rfc822") => {
            let inner = decoded_body(&parsed, body);
            // the forwarded message is its own sender: its header block names the address
            if let Cow::Borrowed(inner) = inner {
                walk(inner, inner, depth + 1, found);
            } else {
                found
                    .problems
                    .push("a forwarded message in a transfer encoding: not looked into".into());
            }
        }
        ("application", sub) if is_pkcs7(&format!("application/{sub}"), "mime") => {
            let smime_type = ct
                .attribute("smime-type")
                .unwrap_or("")
                .to_ascii_lowercase();
            if smime_type != "signed-data" {
                found.problems.push(format!(
                    "application/{sub} with smime-type {smime_type:?} (not signed-data)"
                ));
                return;
            }
            match base64_body(&decoded_body(&parsed, body), &parsed) {
                Some(der) => found.signed.push(Signed {
                    der,
                    content: None,
                    message,
                }),
                None => found
                    .problems
                    .push("signed-data that is not base64 or binary".into()),
            }
        }
        _ => {}
    }
}

/// `application/pkcs7-<what>` or `application/x-pkcs7-<what>`.
fn is_pkcs7(value: &str, what: &str) -> bool {
    value == format!("application/pkcs7-{what}") || value == format!("application/x-pkcs7-{what}")
}

fn detached<'a>(parts: &[&'a [u8]], message: &'a [u8], found: &mut Found<'a>) {
    let [content, signature] = parts else {
        found.problems.push(format!(
            "multipart/signed with {} parts (expected 2)",
            parts.len()
        ));
        return;
    };
    let (head, body) = split_entity(signature);
    let sig = MessageParser::new().parse_headers(head);
    let ok_type = sig
        .as_ref()
        .and_then(|m| m.content_type())
        .map(|ct| {
            format!(
                "{}/{}",
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or("").to_ascii_lowercase()
            )
        })
        .is_some_and(|t| is_pkcs7(&t, "signature"));
    let der = sig
        .as_ref()
        .filter(|_| ok_type)
        .and_then(|m| base64_body(&Cow::Borrowed(body), m));
    match der {
        Some(der) => found.signed.push(Signed {
            der,
            content: Some(content),
            message,
        }),
        None => found
            .problems
            .push("multipart/signed whose second part is not a PKCS #7 signature".into()),
    }
}

/// The parts of a multipart body: the bytes after each delimiter line, up to (not including) the
/// line break before the next delimiter line. The preamble and epilogue are dropped.
pub fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = memchr::memchr(b'\n', &body[pos..]).map_or(body.len(), |i| pos + i + 1);
        let line = &body[pos..end];
        if let Some(rest) = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
        {
            let closing = rest.starts_with(b"--");
            let rest = if closing { &rest[2..] } else { rest };
            // transport padding (spaces, tabs) may follow the boundary
            if rest.iter().all(|b| b" \t\r\n".contains(b)) {
                if let Some(s) = start {
                    // the line break before the delimiter belongs to the delimiter
                    let mut e = pos;
                    if e > s && body[e - 1] == b'\n' {
                        e -= 1;
                        if e > s && body[e - 1] == b'\r' {
                            e -= 1;
                        }
                    }
                    parts.push(&body[s..e.max(s)]);
                }
                if closing {
                    return parts;
                }
                start = Some(end);
            }
        }
        pos = end;
    }
    // no closing delimiter: what follows the last one is not a complete part
    parts
}

/// The body after its Content-Transfer-Encoding, when that is an identity encoding (7bit, 8bit,
/// binary); base64 is left to `base64_body`.
fn decoded_body<'a>(parsed: &mail_parser::Message<'_>, body: &'a [u8]) -> Cow<'a, [u8]> {
    match transfer_encoding(parsed).as_str() {
        "" | "7bit" | "8bit" | "binary" => Cow::Borrowed(body),
        _ => Cow::Owned(body.to_vec()),
    }
}

fn transfer_encoding(parsed: &mail_parser::Message<'_>) -> String {
    parsed
        .header_raw("Content-Transfer-Encoding")
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The DER of a signature entity's body: base64 decoded (whitespace ignored), or as it is in binary.
fn base64_body(body: &[u8], parsed: &mail_parser::Message<'_>) -> Option<Vec<u8>> {
    match transfer_encoding(parsed).as_str() {
        "base64" => {
            let clean: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(&clean)
                .ok()
        }
        "binary" => Some(body.to_vec()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_the_bytes_between_the_delimiter_lines() {
        let body = b"preamble\r\n--b\r\nA: 1\r\n\r\nx\r\n\r\n--b \r\nsecond\r\n--b--\r\nepilogue";
        let parts = split_multipart(body, b"b");
        assert_eq!(parts, vec![&b"A: 1\r\n\r\nx\r\n"[..], &b"second"[..]]);
        // a line that only starts like the boundary is content
        let body = b"--b\nx\n--bc\ny\n--b--\n";
        assert_eq!(split_multipart(body, b"b"), vec![&b"x\n--bc\ny"[..]]);
        // no closing delimiter: the open part is dropped
        assert_eq!(split_multipart(b"--b\nx\n--b\ny", b"b"), vec![&b"x"[..]]);
    }

    #[test]
    fn deep_nesting_stops_at_the_limit() {
        let mut m = b"Content-Type: application/pkcs7-mime; smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n".to_vec();
        for _ in 0..=MAX_DEPTH {
            let mut outer = b"Content-Type: message/rfc822\r\n\r\n".to_vec();
            outer.extend_from_slice(&m);
            m = outer;
        }
        let found = signatures(&m);
        assert!(found.signed.is_empty());
        assert!(found.problems[0].contains("nested deeper"), "{found:?}");
    }
}
