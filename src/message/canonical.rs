//! The RFC 8551 canonical form of a MIME entity: 7-bit parts kept byte for byte with CRLF, the rest
//! re-encoded, multiparts and attached messages walked part by part.

use mail_parser::{HeaderName, MessageParser};

use super::encoding::{
    decode_base64_lenient, decode_qp, encode_base64_lines, encode_qp, is_7bit_clean, longest_line,
    mostly_ascii,
};
use super::entity::{memchr, push_crlf, split_entity, trim_eol};
use super::{Field, MAX_LINE};

/// Writes the canonical form of one MIME entity (`fields`, `body`) into `out`.
/// `top` adds an explicit Content-Type when the message had none.
pub(super) fn canonical_entity(fields: &[Field], body: &[u8], top: bool, out: &mut Vec<u8>) {
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
