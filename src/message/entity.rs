//! Lines and header fields: splitting an entity into its fields and body, and CRLF line endings.
//! A line ends at LF; CRs right before it belong to the line end (so a file converted to CRLF twice
//! reads as it was meant).

use super::{Field, ParseError};

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

/// Appends `src` to `out` with every line ending written as CRLF: LF, CRLF, and CRs before an LF
/// (a file converted twice) end one line; a CR that ends no line is a line end of its own.
pub fn push_crlf(out: &mut Vec<u8>, src: &[u8]) {
    if is_crlf_canonical(src) {
        out.extend_from_slice(src);
        return;
    }
    out.reserve(src.len() + src.len() / 32);
    let mut start = 0;
    while let Some(i) = memchr::memchr2(b'\r', b'\n', &src[start..]) {
        let at = start + i;
        out.extend_from_slice(&src[start..at]);
        let run = src[at..].iter().take_while(|&&b| b == b'\r').count();
        if src.get(at + run) == Some(&b'\n') {
            out.extend_from_slice(b"\r\n");
            start = at + run + 1;
        } else {
            for _ in 0..run {
                out.extend_from_slice(b"\r\n");
            }
            start = at + run;
        }
    }
    out.extend_from_slice(&src[start..]);
}

/// Whether `src` holds a CR that ends no line (is followed by neither LF nor CRs and an LF): such
/// a CR would become a line break of its own, which the input's structure did not have.
pub(super) fn has_lone_cr(src: &[u8]) -> bool {
    let mut from = 0;
    while let Some(i) = memchr(b'\r', &src[from..]) {
        let at = from + i;
        let run = src[at..].iter().take_while(|&&b| b == b'\r').count();
        if src.get(at + run) != Some(&b'\n') {
            return true;
        }
        from = at + run + 1;
    }
    false
}

/// True when every CR is followed by LF and every LF preceded by CR.
fn is_crlf_canonical(src: &[u8]) -> bool {
    let crs = memchr::memchr_iter(b'\r', src).count();
    let lfs = memchr::memchr_iter(b'\n', src).count();
    crs == lfs && memchr::memmem::find_iter(src, b"\r\n").count() == lfs
}

/// A line without its line end (LF, CRLF, or CRs and an LF).
pub(super) fn trim_eol(line: &[u8]) -> &[u8] {
    let mut l = line;
    if let [rest @ .., b'\n'] = l {
        l = rest;
    }
    while let [rest @ .., b'\r'] = l {
        l = rest;
    }
    l
}

pub(super) fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

pub(super) fn starts_with_ignore_case(hay: &[u8], prefix: &[u8]) -> bool {
    hay.len() >= prefix.len() && hay[..prefix.len()].eq_ignore_ascii_case(prefix)
}
