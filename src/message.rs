//! Parsing one input file into what the sealer needs: the envelope (who sends, who receives), the outer
//! headers that stay readable for routing, and the inner MIME entity in RFC 8551 canonical form.
//!
//! The inner entity is rebuilt from the raw bytes rather than from a parsed tree, so that parts which are
//! already 7-bit clean reach the signature byte for byte (only their line endings become CRLF). Parts
//! that are not (8bit or binary content, lines over 998 octets) are re-encoded: quoted-printable for
//! mostly-ASCII text, base64 for everything else, recursively through multiparts. mail-parser reads the
//! structured headers (addresses, Content-Type parameters) so that groups, comments and RFC 2047/2231
//! forms are understood the way a mail client would.

use base64::Engine as _;
use mail_parser::{HeaderName, MessageParser};
use thiserror::Error;

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

/// Envelope lines PowerMTA reads at the top of a pickup file.
const ENVELOPE_EXTRAS: [&str; 4] = ["x-envid", "x-job", "x-virtual-mta", "x-sender-override"];

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

/// Splits leading `x-sender:`/`x-receiver:`... lines off a pickup-format input. Returns `None` when the
/// input does not start with `x-sender:` (then the headers decide the envelope).
fn split_pickup_envelope(input: &[u8]) -> Result<(Option<Envelope>, &[u8]), ParseError> {
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
                    return Err(ParseError::BadEnvelope {
                        line: String::from_utf8_lossy(line).into_owned(),
                        why: "not an address",
                    });
                }
                env.recipients.push(bare);
            }
            _ => env.extras.push((name, value)),
        }
        pos = end;
    }
    Ok((Some(env), &input[pos..]))
}

fn dedup_addresses(list: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|a| seen.insert(a.to_ascii_lowercase()));
}

/// Splits an entity into its header fields and its body (the bytes after the blank line). Accepts LF
/// and CRLF. A first line that is not a header field means the input is not a message.
pub fn split_entity(bytes: &[u8]) -> Result<(Vec<Field<'_>>, &[u8]), ParseError> {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let end = memchr(b'\n', &bytes[pos..]).map_or(bytes.len(), |i| pos + i + 1);
        let line = &bytes[pos..end];
        let content = trim_eol(line);
        if content.is_empty() {
            return Ok((fields, &bytes[end..]));
        }
        if content[0] == b' ' || content[0] == b'\t' {
            match fields.last_mut() {
                // continuation: extend the previous field up to the end of this line
                Some(last) => {
                    let start = last.raw.as_ptr() as usize - bytes.as_ptr() as usize;
                    last.raw = trim_eol(&bytes[start..end]);
                }
                None => {
                    return Err(ParseError::NotAMessage(
                        "starts with a continuation line".into(),
                    ));
                }
            }
        } else {
            let colon = content.iter().position(|&b| b == b':');
            let name_ok = colon
                .is_some_and(|c| c > 0 && content[..c].iter().all(|&b| (33..=126).contains(&b)));
            if !name_ok {
                if fields.is_empty() {
                    return Err(ParseError::NotAMessage(
                        "the first line is not a header field".into(),
                    ));
                }
                // a non-field line ends a sloppy header block: treat it as the body's first line
                return Ok((fields, &bytes[pos..]));
            }
            let name = std::str::from_utf8(&content[..colon.unwrap()]).expect("checked ASCII");
            fields.push(Field { name, raw: content });
        }
        pos = end;
    }
    Ok((fields, &bytes[bytes.len()..]))
}

/// Writes the canonical form of one MIME entity (`fields`, `body`) into `out`.
/// `top` adds an explicit Content-Type when the message had none.
fn canonical_entity(fields: &[Field], body: &[u8], top: bool, out: &mut Vec<u8>) {
    let mut header_block = Vec::new();
    for f in fields {
        header_block.extend_from_slice(f.raw);
        header_block.extend_from_slice(b"\r\n");
    }
    let parsed = MessageParser::new().parse_headers(&header_block);
    let ct = parsed
        .as_ref()
        .and_then(|m| m.header(HeaderName::ContentType))
        .and_then(|v| v.as_content_type());
    let ctype = ct
        .map(|c| c.ctype().to_ascii_lowercase())
        .unwrap_or_else(|| "text".into());
    let subtype = ct
        .and_then(|c| c.subtype())
        .map(str::to_ascii_lowercase)
        .unwrap_or_else(|| "plain".into());
    let boundary = ct.and_then(|c| c.attribute("boundary")).map(str::to_string);
    let cte = fields
        .iter()
        .rev()
        .find(|f| f.is("content-transfer-encoding"))
        .map(|f| {
            let v = &f.raw[f.name.len() + 1..];
            String::from_utf8_lossy(v).trim().to_ascii_lowercase()
        })
        .unwrap_or_else(|| "7bit".into());

    if ctype == "multipart"
        && let Some(boundary) = boundary
    {
        write_fields(fields, out);
        out.extend_from_slice(b"\r\n");
        canonical_multipart(body, boundary.as_bytes(), out);
        return;
    }
    if ctype == "message"
        && (subtype == "rfc822" || subtype == "global")
        && let Ok((inner_fields, inner_body)) = split_entity(body)
    {
        write_fields(fields, out);
        out.extend_from_slice(b"\r\n");
        // the embedded message's routing headers as they are, then its own entity made canonical
        for f in inner_fields.iter().filter(|f| !f.is_content()) {
            push_crlf(out, f.raw);
            out.extend_from_slice(b"\r\n");
        }
        let inner_ct: Vec<Field> = inner_fields
            .iter()
            .filter(|f| f.is_content())
            .cloned()
            .collect();
        canonical_entity(&inner_ct, inner_body, false, out);
        return;
    }

    let is_text = ctype == "text";
    let clean = is_7bit_clean(body);
    // whatever the label says: 8-bit bytes or over-long lines are not 7-bit transport safe
    let needs_reencode = !clean || longest_line(body) > MAX_LINE;
    if !needs_reencode {
        let label = if cte == "8bit" || cte == "binary" {
            Some("7bit")
        } else {
            None
        };
        write_fields_with_cte(fields, label, out);
        if top && ct.is_none() {
            out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
        }
        out.extend_from_slice(b"\r\n");
        push_crlf(out, body);
        return;
    }

    // decode whatever transfer encoding the part claims, then encode it cleanly
    let decoded: Vec<u8> = match cte.as_str() {
        "base64" => decode_base64_lenient(body),
        "quoted-printable" => decode_qp(body),
        _ => body.to_vec(),
    };
    let use_qp = is_text && mostly_ascii(&decoded);
    write_fields_with_cte(
        fields,
        Some(if use_qp { "quoted-printable" } else { "base64" }),
        out,
    );
    if top && ct.is_none() {
        let charset = if std::str::from_utf8(&decoded).is_ok() {
            "utf-8"
        } else {
            "unknown-8bit"
        };
        out.extend_from_slice(
            format!("Content-Type: text/plain; charset={charset}\r\n").as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    if use_qp {
        let mut text = Vec::with_capacity(decoded.len() + 16);
        push_crlf(&mut text, &decoded);
        encode_qp(&text, out);
    } else if is_text {
        // text in base64 still carries CRLF line breaks (RFC 2045 §6.8)
        let mut text = Vec::with_capacity(decoded.len() + 16);
        push_crlf(&mut text, &decoded);
        encode_base64_lines(&text, out);
    } else {
        encode_base64_lines(&decoded, out);
    }
}

/// Canonicalises a multipart body: each part recursively, delimiters and preamble/epilogue with CRLF.
fn canonical_multipart(body: &[u8], boundary: &[u8], out: &mut Vec<u8>) {
    let parts = split_multipart(body, boundary);
    let Some(parts) = parts else {
        // no delimiter at all: keep the body as text, made 7-bit safe line by line
        push_crlf(out, body);
        return;
    };
    if !parts.preamble.is_empty() && is_7bit_clean(parts.preamble) {
        push_crlf(out, parts.preamble);
        out.extend_from_slice(b"\r\n");
    }
    for part in &parts.parts {
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary);
        out.extend_from_slice(b"\r\n");
        match split_entity(part) {
            Ok((fields, part_body)) => canonical_entity(&fields, part_body, false, out),
            // a part without headers is text/plain by default (RFC 2046 §5.1.1)
            Err(_) => canonical_entity(&[], part, false, out),
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--");
    out.extend_from_slice(boundary);
    out.extend_from_slice(b"--\r\n");
    if !parts.epilogue.is_empty() && is_7bit_clean(parts.epilogue) {
        push_crlf(out, parts.epilogue);
    }
}

struct Multipart<'a> {
    preamble: &'a [u8],
    parts: Vec<&'a [u8]>,
    epilogue: &'a [u8],
}

/// Finds the delimiter lines of a multipart body. The line ending before a delimiter belongs to the
/// delimiter (RFC 2046 §5.1.1), so part contents exclude it.
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Option<Multipart<'a>> {
    let mut delims: Vec<(usize, usize, bool)> = Vec::new(); // (content end, next content start, closing)
    let mut pos = 0;
    while pos < body.len() {
        let end = memchr(b'\n', &body[pos..]).map_or(body.len(), |i| pos + i + 1);
        let line = trim_eol(&body[pos..end]);
        if line.len() >= boundary.len() + 2
            && line.starts_with(b"--")
            && line[2..].starts_with(boundary)
        {
            let tail = &line[2 + boundary.len()..];
            let closing = tail.starts_with(b"--");
            let rest = if closing { &tail[2..] } else { tail };
            if rest.iter().all(|&b| b == b' ' || b == b'\t') {
                // content ends before the line break preceding this delimiter
                let mut cend = pos;
                if cend > 0 && body[cend - 1] == b'\n' {
                    cend -= 1;
                    if cend > 0 && body[cend - 1] == b'\r' {
                        cend -= 1;
                    }
                }
                delims.push((cend, end, closing));
                if closing {
                    break;
                }
            }
        }
        pos = end;
    }
    if delims.is_empty() {
        return None;
    }
    let preamble = &body[..delims[0].0];
    let mut parts = Vec::new();
    for w in delims.windows(2) {
        let start = w[0].1;
        parts.push(&body[start..w[1].0.max(start)]);
    }
    let last = delims[delims.len() - 1];
    let epilogue = if last.2 {
        &body[last.1..]
    } else {
        // no closing delimiter: the rest is the last part
        parts.push(&body[last.1..]);
        &body[body.len()..]
    };
    Some(Multipart {
        preamble,
        parts,
        epilogue,
    })
}

/// Writes header fields with CRLF, replacing the Content-Transfer-Encoding value by `cte` (adding one
/// when absent) if `cte` is given.
fn write_fields_with_cte(fields: &[Field], cte: Option<&str>, out: &mut Vec<u8>) {
    let mut wrote = false;
    for f in fields {
        if f.is("content-transfer-encoding")
            && let Some(cte) = cte
        {
            if !wrote {
                out.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n").as_bytes());
                wrote = true;
            }
            continue;
        }
        push_crlf(out, f.raw);
        out.extend_from_slice(b"\r\n");
    }
    if let (Some(cte), false) = (cte, wrote)
        && cte != "7bit"
    {
        out.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n").as_bytes());
    }
}

/// Multiparts and message/rfc822 entities may only be labelled 7bit once their content is.
fn write_fields(fields: &[Field], out: &mut Vec<u8>) {
    let relabel = fields.iter().any(|f| {
        f.is("content-transfer-encoding") && {
            let v = String::from_utf8_lossy(&f.raw[f.name.len() + 1..])
                .trim()
                .to_ascii_lowercase();
            v == "8bit" || v == "binary"
        }
    });
    write_fields_with_cte(fields, relabel.then_some("7bit"), out);
}

/// Appends `src` to `out` with every line ending (LF, CR or CRLF) written as CRLF.
pub fn push_crlf(out: &mut Vec<u8>, src: &[u8]) {
    if is_crlf_canonical(src) {
        out.extend_from_slice(src);
        return;
    }
    out.reserve(src.len() + src.len() / 32);
    let mut start = 0;
    for pos in memchr::memchr2_iter(b'\r', b'\n', src) {
        if pos < start {
            continue; // the LF of a CRLF already written
        }
        out.extend_from_slice(&src[start..pos]);
        out.extend_from_slice(b"\r\n");
        start = if src[pos] == b'\r' && src.get(pos + 1) == Some(&b'\n') {
            pos + 2
        } else {
            pos + 1
        };
    }
    out.extend_from_slice(&src[start..]);
}

/// True when every CR is followed by LF and every LF preceded by CR.
fn is_crlf_canonical(src: &[u8]) -> bool {
    let crs = memchr::memchr_iter(b'\r', src).count();
    let lfs = memchr::memchr_iter(b'\n', src).count();
    crs == lfs && memchr::memmem::find_iter(src, b"\r\n").count() == lfs
}

fn is_7bit_clean(bytes: &[u8]) -> bool {
    // two word-at-a-time scans: a byte loop with an early exit was 9 % of sealing 577 KB
    bytes.is_ascii() && memchr::memchr(0, bytes).is_none()
}

fn mostly_ascii(bytes: &[u8]) -> bool {
    let high = bytes.iter().filter(|&&b| b >= 0x80).count();
    high * 5 <= bytes.len()
}

/// Longest line length in octets, not counting line endings.
fn longest_line(bytes: &[u8]) -> usize {
    let mut longest = 0;
    let mut start = 0;
    for pos in memchr::memchr_iter(b'\n', bytes) {
        let len = if pos > start && bytes[pos - 1] == b'\r' {
            pos - 1 - start
        } else {
            pos - start
        };
        longest = longest.max(len);
        start = pos + 1;
    }
    longest.max(trim_eol(&bytes[start..]).len())
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let mut l = line;
    if let [rest @ .., b'\n'] = l {
        l = rest;
    }
    if let [rest @ .., b'\r'] = l {
        l = rest;
    }
    l
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

fn starts_with_ignore_case(hay: &[u8], prefix: &[u8]) -> bool {
    hay.len() >= prefix.len() && hay[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn decode_base64_lenient(body: &[u8]) -> Vec<u8> {
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(compact.trim_ascii_end())
        })
        .unwrap_or_else(|_| body.to_vec())
}

/// Quoted-printable decoding that keeps whatever it cannot decode (as mail clients do).
fn decode_qp(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b'=' {
            let rest = &body[i + 1..];
            if rest.starts_with(b"\r\n") {
                i += 3;
                continue;
            }
            if rest.starts_with(b"\n") {
                i += 2;
                continue;
            }
            if rest.len() >= 2
                && let (Some(h), Some(l)) = (hex(rest[0]), hex(rest[1]))
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Quoted-printable encoding (RFC 2045 §6.7) of CRLF text: hard breaks stay CRLF, lines are soft-wrapped
/// at 76, trailing white space and `From ` / lone dots are protected.
pub fn encode_qp(text: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut lines = text.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last_line = lines.peek().is_none();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut col = 0;
        for (i, &b) in line.iter().enumerate() {
            let at_end = i + 1 == line.len();
            let literal = match b {
                b'=' => false,
                b' ' | b'\t' => !at_end,
                b'.' if col == 0 && at_end => false,
                b'F' if col == 0 && line[i..].starts_with(b"From ") => false,
                33..=126 => true,
                _ => false,
            };
            let width = if literal { 1 } else { 3 };
            // keep room for the soft break "=" within 76 columns
            if col + width > ENCODED_LINE - 1 {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
            col += width;
        }
        if !last_line {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Base64 in lines of 76 characters, each ending in CRLF, encoded straight into `out`.
pub fn encode_base64_lines(data: &[u8], out: &mut Vec<u8>) {
    const RAW_PER_LINE: usize = ENCODED_LINE / 4 * 3;
    let start = out.len();
    out.resize(
        start + data.len().div_ceil(RAW_PER_LINE) * (ENCODED_LINE + 2),
        0,
    );
    let mut w = start;
    for chunk in data.chunks(RAW_PER_LINE) {
        w += base64::engine::general_purpose::STANDARD
            .encode_slice(chunk, &mut out[w..])
            .expect("the buffer is sized for 76 columns a line");
        out[w..w + 2].copy_from_slice(b"\r\n");
        w += 2;
    }
    out.truncate(w);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(input: &str) -> String {
        let m = parse(input.as_bytes(), usize::MAX).unwrap();
        String::from_utf8(m.inner).unwrap()
    }

    #[test]
    fn seven_bit_text_is_kept_with_crlf() {
        let c = canon("From: a@x.org\nTo: b@y.org\nContent-Type: text/plain\n\nhello\nworld\n");
        assert_eq!(c, "Content-Type: text/plain\r\n\r\nhello\r\nworld\r\n");
    }

    #[test]
    fn eight_bit_text_becomes_quoted_printable() {
        let c = canon(
            "From: a@x.org\nTo: b@y.org\nContent-Type: text/plain; charset=utf-8\n\
             Content-Transfer-Encoding: 8bit\n\ncaf\u{e9} au lait, merci\n",
        );
        assert_eq!(
            c,
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
             caf=C3=A9 au lait, merci\r\n"
        );
    }

    #[test]
    fn missing_content_type_is_made_explicit() {
        let c = canon("From: a@x.org\nTo: b@y.org\n\nhi\n");
        assert_eq!(
            c,
            "Content-Type: text/plain; charset=us-ascii\r\n\r\nhi\r\n"
        );
    }

    #[test]
    fn long_lines_are_wrapped_by_encoding() {
        let long = "x".repeat(3000);
        let c = canon(&format!("From: a@x.org\nTo: b@y.org\n\n{long}\n"));
        assert!(c.contains("Content-Transfer-Encoding: quoted-printable"));
        assert!(c.split("\r\n").all(|l| l.len() <= 76));
        assert_eq!(
            decode_qp(c.split_once("\r\n\r\n").unwrap().1.as_bytes()),
            format!("{long}\r\n").as_bytes()
        );
    }

    #[test]
    fn binary_part_in_multipart_becomes_base64_and_round_trips() {
        let payload: Vec<u8> = (0x80..=0xffu8).collect();
        let mut input = b"From: a@x.org\nTo: b@y.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\npreamble\n--b1\nContent-Type: text/plain\n\nhi\n--b1\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\n".to_vec();
        input.extend_from_slice(&payload);
        input.extend_from_slice(b"\n--b1--\n");
        let m = parse(&input, usize::MAX).unwrap();
        let inner = String::from_utf8(m.inner.clone()).unwrap();
        assert!(
            inner.contains("Content-Transfer-Encoding: base64\r\n"),
            "{inner}"
        );
        let reparsed = MessageParser::new().parse(&m.inner).unwrap();
        assert_eq!(reparsed.attachment(0).unwrap().contents(), &payload[..]);
        assert!(!String::from_utf8_lossy(&m.outer_headers).contains("MIME-Version"));
    }

    #[test]
    fn envelope_from_headers_and_bcc_is_hidden() {
        let m = parse(
            b"Return-Path: <bounce@x.org>\nFrom: A <a@x.org>\nTo: b@y.org, c@y.org\nCc: B@y.org\nBcc: d@y.org\n\nhi\n",
            usize::MAX,
        )
        .unwrap();
        assert_eq!(m.envelope.sender, "bounce@x.org");
        assert_eq!(m.envelope.recipients, ["b@y.org", "c@y.org", "d@y.org"]);
        assert_eq!(m.envelope.hidden, ["d@y.org"]);
        assert_eq!(m.from, "a@x.org");
        assert!(!String::from_utf8_lossy(&m.outer_headers).contains("Bcc"));
    }

    #[test]
    fn pickup_envelope_lines_are_split_off() {
        let m = parse(
            b"x-sender: s@x.org\nx-receiver: r1@y.org\nx-receiver: <r2@y.org>\nx-job: j1\nFrom: a@x.org\nTo: r1@y.org\n\nhi\n",
            usize::MAX,
        )
        .unwrap();
        assert_eq!(m.envelope.sender, "s@x.org");
        assert_eq!(m.envelope.recipients, ["r1@y.org", "r2@y.org"]);
        assert_eq!(m.envelope.hidden, ["r2@y.org"]);
        assert_eq!(m.envelope.extras, [("x-job".to_string(), "j1".to_string())]);
        assert!(m.outer_headers.starts_with(b"From: a@x.org\r\n"));
    }

    #[test]
    fn refusals_name_their_cause() {
        assert_eq!(parse(b"", 10).unwrap_err(), ParseError::Empty);
        assert!(matches!(
            parse(b"\x00\x01\x02garbage", 100).unwrap_err(),
            ParseError::NotAMessage(_)
        ));
        assert_eq!(
            parse(b"To: b@y.org\n\nhi", 100).unwrap_err(),
            ParseError::NoFrom
        );
        assert_eq!(
            parse(b"From: a@x.org\n\nhi", 100).unwrap_err(),
            ParseError::NoRecipients
        );
        assert!(matches!(
            parse(b"From: a@x.org\n\nhi", 5).unwrap_err(),
            ParseError::TooLarge { .. }
        ));
    }

    #[test]
    fn qp_round_trip_keeps_meaning() {
        let text = "From here\r\n.\r\ntrailing space \r\n=equals\r\n\u{1F600} emoji\r\n";
        let mut enc = Vec::new();
        encode_qp(text.as_bytes(), &mut enc);
        assert!(is_7bit_clean(&enc));
        assert_eq!(decode_qp(&enc), text.as_bytes());
    }

    #[test]
    fn date_and_message_id_are_added_when_missing() {
        let m = parse(b"From: a@x.org\nTo: b@y.org\n\nhi\n", usize::MAX).unwrap();
        let outer = String::from_utf8(m.outer_headers).unwrap();
        assert!(outer.contains("\r\nDate: "), "{outer}");
        assert!(
            outer.contains(&format!("\r\nMessage-ID: <{}>\r\n", m.message_id)),
            "{outer}"
        );
        assert!(m.message_id.ends_with("@x.org"));
        let kept = parse(b"From: a@x.org\nTo: b@y.org\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <k@x>\n\nhi\n", 999).unwrap();
        assert_eq!(
            String::from_utf8(kept.outer_headers)
                .unwrap()
                .matches("Date:")
                .count(),
            1
        );
        assert_eq!(kept.message_id, "k@x");
    }

    #[test]
    fn attached_message_with_8bit_body_is_made_7bit_inside() {
        let c = canon(
            "From: a@x.org\nTo: b@y.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\
             Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n\
             From: c@z.org\nSubject: fwd\nContent-Type: text/plain; charset=utf-8\n\
             Content-Transfer-Encoding: 8bit\n\n\u{fc}ber alles gut, danke sch\u{f6}n\n--b--\n",
        );
        assert!(c.is_ascii(), "{c}");
        assert!(c.contains("Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\nFrom: c@z.org\r\n"), "{c}");
        assert!(
            c.contains("Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BCber alles gut"),
            "{c}"
        );
        assert!(!c.contains("8bit"), "{c}");
    }

    #[test]
    fn already_signed_is_detected() {
        let m = parse(
            b"From: a@x.org\nTo: b@y.org\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=x\n\n--x\n\nhi\n--x--\n",
            usize::MAX,
        )
        .unwrap();
        assert!(m.already_sealed);
    }
}
