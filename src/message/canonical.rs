//! The RFC 8551 canonical form of a MIME entity: 7-bit parts kept byte for byte with CRLF, the rest
//! re-encoded, multiparts and attached messages walked part by part (the tree comes from
//! `structure`, and is written from an explicit stack).

use super::encoding::{
    decode_base64_lenient, decode_qp, encode_base64_lines, encode_qp, is_7bit_clean, longest_line,
    mostly_ascii,
};
use super::entity::{has_lone_cr, push_crlf};
use super::limits::shown;
use super::structure::{Kind, Node, scan};
use super::{Field, Limits, MAX_LINE, ParseError, write_field};

/// Writes the canonical form of the message's entity (its Content-* `fields` and `body`) into `out`.
/// An explicit Content-Type is added when the message had none.
pub(super) fn canonical(
    fields: Vec<Field>,
    body: &[u8],
    limits: &Limits,
    out: &mut Vec<u8>,
) -> Result<(), ParseError> {
    let nodes = scan(fields, body, limits)?;
    // what is left to write, last first: an explicit stack, however deep the tree
    enum Step {
        Entity(usize),
        Delimiter(usize, bool),
        Crlf,
        Epilogue(usize),
    }
    let mut steps = vec![Step::Entity(0)];
    while let Some(step) = steps.pop() {
        match step {
            Step::Entity(i) => {
                let node = &nodes[i];
                match &node.kind {
                    Kind::Leaf { body } => leaf(node, body, i == 0, out)?,
                    Kind::Multipart {
                        preamble,
                        delimited: false,
                        boundary,
                        ..
                    } => {
                        // no delimiter at all: kept as it is when that is safe (it shows nothing)
                        write_fields(&node.fields, out)?;
                        out.extend_from_slice(b"\r\n");
                        if !is_safe(preamble) {
                            return Err(ParseError::Malformed(format!(
                                "a multipart without any delimiter line for its boundary {:?} holds \
                                 8-bit data or lines over 998 octets",
                                shown(&String::from_utf8_lossy(boundary))
                            )));
                        }
                        push_crlf(out, preamble);
                    }
                    Kind::Multipart {
                        preamble, parts, ..
                    } => {
                        write_fields(&node.fields, out)?;
                        out.extend_from_slice(b"\r\n");
                        // preamble and epilogue are for readers without MIME: dropped when unsafe
                        if !preamble.is_empty() && is_safe(preamble) {
                            push_crlf(out, preamble);
                            out.extend_from_slice(b"\r\n");
                        }
                        steps.push(Step::Epilogue(i));
                        steps.push(Step::Delimiter(i, true));
                        for &part in parts.iter().rev() {
                            steps.push(Step::Crlf);
                            steps.push(Step::Entity(part));
                            steps.push(Step::Delimiter(i, false));
                        }
                    }
                    Kind::Message { headers, child } => {
                        write_fields(&node.fields, out)?;
                        out.extend_from_slice(b"\r\n");
                        // the embedded message's routing headers, then its own entity made canonical
                        for f in headers {
                            write_field(out, f)?;
                        }
                        steps.push(Step::Entity(*child));
                    }
                }
            }
            Step::Delimiter(i, closing) => {
                if let Kind::Multipart { boundary, .. } = &nodes[i].kind {
                    out.extend_from_slice(b"--");
                    out.extend_from_slice(boundary);
                    out.extend_from_slice(if closing { b"--\r\n" } else { b"\r\n" });
                }
            }
            Step::Crlf => out.extend_from_slice(b"\r\n"),
            Step::Epilogue(i) => {
                if let Kind::Multipart { epilogue, .. } = &nodes[i].kind
                    && !epilogue.is_empty()
                    && is_safe(epilogue)
                {
                    push_crlf(out, epilogue);
                }
            }
        }
    }
    Ok(())
}

/// 7-bit, no NUL, no line over 998 octets, no CR but in line ends: fit to be signed as it is.
fn is_safe(bytes: &[u8]) -> bool {
    is_7bit_clean(bytes) && longest_line(bytes) <= MAX_LINE && !has_lone_cr(bytes)
}

/// Writes a leaf entity: kept when it is 7-bit safe, else decoded and encoded again.
/// `top` adds an explicit Content-Type when the message had none.
fn leaf(node: &Node, body: &[u8], top: bool, out: &mut Vec<u8>) -> Result<(), ParseError> {
    let fields = &node.fields;
    let clean = is_7bit_clean(body);
    // whatever the label says: 8-bit bytes, over-long lines or a CR that ends no line are not
    // 7-bit transport safe
    let needs_reencode = !clean || longest_line(body) > MAX_LINE || has_lone_cr(body);
    if !needs_reencode {
        let label = if node.cte == "8bit" || node.cte == "binary" {
            Some("7bit")
        } else {
            None
        };
        write_fields_with_cte(fields, label, out)?;
        if top && !node.has_type {
            out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
        }
        out.extend_from_slice(b"\r\n");
        push_crlf(out, body);
        return Ok(());
    }

    // decode whatever transfer encoding the part claims, then encode it cleanly
    let decoded: Vec<u8> = match node.cte.as_str() {
        "base64" => decode_base64_lenient(body),
        "quoted-printable" => decode_qp(body),
        _ => body.to_vec(),
    };
    let use_qp = node.is_text && mostly_ascii(&decoded);
    write_fields_with_cte(
        fields,
        Some(if use_qp { "quoted-printable" } else { "base64" }),
        out,
    )?;
    if top && !node.has_type {
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
    } else if node.is_text {
        // text in base64 still carries CRLF line breaks (RFC 2045 §6.8)
        let mut text = Vec::with_capacity(decoded.len() + 16);
        push_crlf(&mut text, &decoded);
        encode_base64_lines(&text, out);
    } else {
        encode_base64_lines(&decoded, out);
    }
    Ok(())
}

/// Writes header fields with CRLF, replacing the Content-Transfer-Encoding value by `cte` (adding one
/// when absent) if `cte` is given.
fn write_fields_with_cte(
    fields: &[Field],
    cte: Option<&str>,
    out: &mut Vec<u8>,
) -> Result<(), ParseError> {
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
        write_field(out, f)?;
    }
    if let (Some(cte), false) = (cte, wrote)
        && cte != "7bit"
    {
        out.extend_from_slice(format!("Content-Transfer-Encoding: {cte}\r\n").as_bytes());
    }
    Ok(())
}

/// Multiparts and message/rfc822 entities may only be labelled 7bit once their content is.
fn write_fields(fields: &[Field], out: &mut Vec<u8>) -> Result<(), ParseError> {
    let relabel = fields.iter().any(|f| {
        f.is("content-transfer-encoding") && {
            let v = String::from_utf8_lossy(&f.raw[f.name.len() + 1..])
                .trim()
                .to_ascii_lowercase();
            v == "8bit" || v == "binary"
        }
    });
    write_fields_with_cte(fields, relabel.then_some("7bit"), out)
}
