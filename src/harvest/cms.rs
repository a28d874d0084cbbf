//! Checking one CMS SignedData: the signature over the signed bytes, and which certificate made it.
//!
//! OpenSSL verifies in two separate steps here. First the signature alone (`CMS_verify` with
//! `NO_SIGNER_CERT_VERIFY` and `BINARY`: the message digest over the exact bytes, the signature
//! over the signed attributes), with `NOINTERN` and one candidate certificate at a time taken from
//! the message's own certificate set, so the certificate that verifies is the signer's. Then the
//! caller checks that certificate's chain, dates and usages on its own (`CertInfo`), so each
//! refusal says which check failed and the trust anchor can be the config's `ca` or the system
//! bundle. The certificate set is read with the small DER/BER reader below (the `openssl` crate has no
//! call that lists a CMS structure's certificates).

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::stack::Stack;
use openssl::x509::X509;

/// What a valid signature gave us.
pub struct Verified {
    /// the certificate whose key made the signature
    pub signer: X509,
    /// the other certificates the message carried (intermediates, perhaps other leaves)
    pub others: Vec<X509>,
    /// the signed content (for opaque signatures: the content taken out of the CMS structure)
    pub content: Vec<u8>,
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigProblem {
    Malformed(String),
    NoCertificate,
    Signers(usize),
    Invalid,
}

impl std::fmt::Display for SigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigProblem::Malformed(why) => {
                write!(f, "the signature is not a CMS SignedData ({why})")
            }
            SigProblem::NoCertificate => {
                f.write_str("the signature carries no certificate that verifies it")
            }
            SigProblem::Signers(n) => write!(f, "{n} signers (one expected)"),
            SigProblem::Invalid => {
                f.write_str("the signature does not verify over the signed content")
            }
        }
    }
}

/// Verifies `der` over `content` (detached) or over its own content (opaque). A detached content
/// stored with bare LF line ends (a mailbox that converted the message) is tried again in CRLF, the
/// form it had on the wire.
pub fn verify(der: &[u8], content: Option<&[u8]>) -> Result<Verified, SigProblem> {
    let (certs, signers) = certificates_and_signers(der).map_err(SigProblem::Malformed)?;
    if signers != 1 {
        return Err(SigProblem::Signers(signers));
    }
    let mut cms =
        CmsContentInfo::from_der(der).map_err(|e| SigProblem::Malformed(e.to_string()))?;
    let crlf = content.filter(|c| has_bare_lf(c)).map(to_crlf);
    let flags = CMSOptions::NO_SIGNER_CERT_VERIFY | CMSOptions::NOINTERN | CMSOptions::BINARY;
    let tries: Vec<Option<&[u8]>> = match (content, &crlf) {
        (Some(c), Some(l)) => vec![Some(c), Some(l)],
        (Some(c), None) => vec![Some(c)],
        (None, _) => vec![None],
    };
    // with the signer's certificate but a wrong digest or signature OpenSSL fails on the content
    // or the signature; without it, on "signer certificate not found"
    let mut signer_seen = false;
    for (i, candidate) in certs.iter().enumerate() {
        let mut one = Stack::new().map_err(|e| SigProblem::Malformed(e.to_string()))?;
        one.push(candidate.clone())
            .map_err(|e| SigProblem::Malformed(e.to_string()))?;
        for detached in &tries {
            let mut out = Vec::new();
            match cms.verify(Some(&one), None, *detached, Some(&mut out), flags) {
                Ok(()) => {
                    let others = certs
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, c)| c.clone())
                        .collect();
                    return Ok(Verified {
                        signer: candidate.clone(),
                        others,
                        content: out,
                    });
                }
                Err(e) => {
                    signer_seen |= !e.to_string().contains("signer certificate not found");
                }
            }
        }
    }
    Err(if signer_seen {
        SigProblem::Invalid
    } else {
        SigProblem::NoCertificate
    })
}

fn has_bare_lf(b: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', b).any(|i| i == 0 || b[i - 1] != b'\r')
}

fn to_crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 32);
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(c);
    }
    out
}

/// One DER (or BER) element: (tag byte, content, the whole element).
type Element<'a> = (u8, &'a [u8], &'a [u8]);
/// An element and what follows it.
type Tlv<'a> = (Element<'a>, &'a [u8]);

fn tlv(input: &[u8]) -> Result<Tlv<'_>, String> {
    tlv_at(input, 0)
}

/// Indefinite-length elements nest by recursion: a crafted structure is cut off at this depth.
const MAX_BER_DEPTH: usize = 32;

fn tlv_at(input: &[u8], depth: usize) -> Result<Tlv<'_>, String> {
    if depth > MAX_BER_DEPTH {
        return Err("BER nested too deep".into());
    }
    let short = || "truncated DER".to_string();
    let tag = *input.first().ok_or_else(short)?;
    if tag & 0x1f == 0x1f {
        return Err("multi-byte DER tags are not expected in SignedData".into());
    }
    let first = *input.get(1).ok_or_else(short)?;
    if first == 0x80 {
        // BER indefinite length (gpgsm writes SignedData so): elements up to end-of-contents
        if tag & 0x20 == 0 {
            return Err("indefinite length on a primitive element".into());
        }
        let mut rest = &input[2..];
        loop {
            if rest.starts_with(&[0, 0]) {
                let used = input.len() - rest.len();
                return Ok(((tag, &input[2..used], &input[..used + 2]), &rest[2..]));
            }
            rest = tlv_at(rest, depth + 1)?.1;
        }
    }
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err("oversized DER length".into());
        }
        let bytes = input.get(2..2 + n).ok_or_else(short)?;
        (
            bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)),
            2 + n,
        )
    };
    let end = head.checked_add(len).ok_or_else(short)?;
    let whole = input.get(..end).ok_or_else(short)?;
    Ok(((tag, &whole[head..], whole), &input[end..]))
}

/// The elements of a constructed element's content.
fn children(mut content: &[u8]) -> Result<Vec<Element<'_>>, String> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (el, rest) = tlv(content)?;
        out.push(el);
        content = rest;
    }
    Ok(out)
}

/// The certificates of a ContentInfo holding SignedData (RFC 5652 5.1), and its number of signers.
fn certificates_and_signers(der: &[u8]) -> Result<(Vec<X509>, usize), String> {
    let ((tag, content_info, _), _) = tlv(der)?;
    let ci = children(content_info)?;
    const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
    let (Some((0x06, oid, _)), Some((0xa0, explicit, _)), 0x30) = (ci.first(), ci.get(1), tag)
    else {
        return Err("not a ContentInfo".into());
    };
    if *oid != SIGNED_DATA {
        return Err("not signed-data".into());
    }
    let ((0x30, signed_data, _), _) = tlv(explicit)? else {
        return Err("SignedData is not a SEQUENCE".into());
    };
    let fields = children(signed_data)?;
    let mut certs = Vec::new();
    for (tag, content, _) in &fields {
        // [0] IMPLICIT CertificateSet: plain certificates are SEQUENCEs; other choices are skipped
        if *tag == 0xa0 {
            for (t, _, whole) in children(content)? {
                if t == 0x30 {
                    certs.push(X509::from_der(whole).map_err(|e| e.to_string())?);
                }
            }
        }
    }
    let signers = match fields.last() {
        Some((0x31, infos, _)) => children(infos)?.len(),
        _ => return Err("no SignerInfos".into()),
    };
    Ok((certs, signers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let deep: Vec<u8> = std::iter::repeat_n([0x30u8, 0x80], 100_000)
            .flatten()
            .collect();
        assert!(matches!(verify(&deep, None), Err(SigProblem::Malformed(_))));
        for der in [
            &b""[..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x80, 0x30, 0x80],
            &[0x04, 0x80, 0, 0],
            &[0x30, 0x03, 0x06, 0x01, 0x00],
            &[0x1f, 0x01],
        ] {
            assert!(matches!(verify(der, None), Err(SigProblem::Malformed(_))));
        }
    }

    #[test]
    fn bare_lf_becomes_crlf_and_crlf_stays() {
        assert!(has_bare_lf(b"a\nb"));
        assert!(!has_bare_lf(b"a\r\nb"));
        assert_eq!(to_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
    }
}
