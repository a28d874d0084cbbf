//! An entity's Content-Type field as mail-parser reads it once written out: type, subtype, boundary
//! and protocol, which decide how the structure scan and the canonical form treat the entity.

use mail_parser::{HeaderName, MessageParser};

use super::limits::check_content_types;
use super::{Field, ParseError, write_field};

pub(super) fn trim_wsp_end(mut s: &[u8]) -> &[u8] {
    while let [head @ .., b' ' | b'\t'] = s {
        s = head;
    }
    s
}

/// What the Content-Type field of an entity says (type and subtype lowercase, the boundary
/// without trailing white space).
#[derive(Default)]
pub(super) struct ContentType {
    pub ctype: Option<String>,
    pub subtype: Option<String>,
    pub boundary: Option<Vec<u8>>,
    pub protocol: Option<String>,
}

/// The Content-Type of `fields`, as mail-parser reads it once written out: with several fields,
/// the last counts, as when mail-parser reads the whole block.
pub(super) fn content_type(fields: &[Field]) -> Result<ContentType, ParseError> {
    check_content_types(fields)?;
    // read as it will be written: a lone CR is white space there
    let mut block = Vec::new();
    if let Some(f) = fields.iter().rev().find(|f| f.is("content-type")) {
        write_field(&mut block, f)?;
    }
    if block.is_empty() {
        return Ok(ContentType::default());
    }
    let parsed = MessageParser::new().parse_headers(&block);
    let Some(ct) = parsed
        .as_ref()
        .and_then(|m| m.header(HeaderName::ContentType))
        .and_then(|v| v.as_content_type())
    else {
        return Ok(ContentType::default());
    };
    Ok(ContentType {
        ctype: Some(ct.ctype().to_ascii_lowercase()),
        subtype: ct.subtype().map(str::to_ascii_lowercase),
        boundary: ct
            .attribute("boundary")
            .map(|b| trim_wsp_end(b.as_bytes()).to_vec()),
        protocol: ct.attribute("protocol").map(str::to_ascii_lowercase),
    })
}
