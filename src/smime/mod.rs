//! S/MIME: the CMS operations (sign, encrypt) and the MIME entities that carry their results.
//!
//! OpenSSL produces the CMS structures (DER); the MIME wrappers are written here, because OpenSSL's own
//! S/MIME writer mixes bare LF into CRLF output and re-translates what it signs. Signing is always done
//! with `BINARY` over bytes that are already canonical CRLF, so the signed bytes are exactly the bytes
//! we send.

pub mod certs;
pub mod keys;

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::error::ErrorStack;
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::X509;
use serde::Deserialize;

use crate::message::encode_base64_lines;
use keys::Identity;

/// Content-encryption algorithm (`[seal] cipher`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum CipherChoice {
    #[serde(rename = "aes-128-cbc")]
    Aes128Cbc,
    #[default]
    #[serde(rename = "aes-256-cbc")]
    Aes256Cbc,
    #[serde(rename = "aes-128-gcm")]
    Aes128Gcm,
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}

impl CipherChoice {
    fn cipher(self) -> Cipher {
        match self {
            CipherChoice::Aes128Cbc => Cipher::aes_128_cbc(),
            CipherChoice::Aes256Cbc => Cipher::aes_256_cbc(),
            CipherChoice::Aes128Gcm => Cipher::aes_128_gcm(),
            CipherChoice::Aes256Gcm => Cipher::aes_256_gcm(),
        }
    }

    /// GCM makes CMS AuthEnvelopedData (RFC 5083), announced with its own smime-type.
    fn smime_type(self) -> &'static str {
        match self {
            CipherChoice::Aes128Gcm | CipherChoice::Aes256Gcm => "authEnveloped-data",
            _ => "enveloped-data",
        }
    }
}

/// How the content key is wrapped for each recipient (`[seal] key_transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum KeyTransport {
    #[default]
    #[serde(rename = "rsa-pkcs1")]
    RsaPkcs1,
    #[serde(rename = "rsa-oaep")]
    RsaOaep,
}

/// Detached (`multipart/signed`) or opaque (`application/pkcs7-mime; smime-type=signed-data`) signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SignatureMode {
    #[default]
    Detached,
    Opaque,
}

/// OpenSSL's S/MIME capabilities attribute, encoded once per process (`ffi::sign`); `None` if that
/// failed, and every signature builds it as `CMS_sign` does.
fn standard_smimecap() -> Option<&'static [u8]> {
    static CAP: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    CAP.get_or_init(|| crate::ffi::sign::standard_smimecap().ok())
        .as_deref()
}

/// Signs the canonical entity `content` and returns the MIME entity (headers, blank line, body) that
/// carries it: `multipart/signed` for detached, `application/pkcs7-mime` for opaque signatures.
pub fn signed_entity(
    id: &Identity,
    content: &[u8],
    mode: SignatureMode,
) -> Result<Vec<u8>, ErrorStack> {
    let mut flags = CMSOptions::BINARY;
    if mode == SignatureMode::Detached {
        flags |= CMSOptions::DETACHED;
    }
    let cms = match standard_smimecap() {
        Some(cap) => crate::ffi::sign::sign(&id.cert, &id.key, &id.chain, content, flags, cap)?,
        None => {
            let chain = Some(&*id.chain);
            CmsContentInfo::sign(Some(&id.cert), Some(&id.key), chain, Some(content), flags)?
        }
    };
    let der = cms.to_der()?;
    let mut out = crate::buffers::take(content.len() + der.len() * 4 / 3 + 512);
    match mode {
        SignatureMode::Opaque => {
            out.extend_from_slice(
                b"Content-Type: application/pkcs7-mime; smime-type=signed-data; name=\"smime.p7m\"\r\n\
                  Content-Transfer-Encoding: base64\r\n\
                  Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n",
            );
            encode_base64_lines(&der, &mut out);
        }
        SignatureMode::Detached => {
            let boundary = new_boundary();
            out.extend_from_slice(
                format!(
                    "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n\
                     \tmicalg={}; boundary=\"{boundary}\"\r\n\r\n\
                     This is a cryptographically signed message in MIME format.\r\n\r\n--{boundary}\r\n",
                    micalg(&der)
                )
                .as_bytes(),
            );
            out.extend_from_slice(content);
            out.extend_from_slice(
                format!(
                    "\r\n--{boundary}\r\n\
                     Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
                     Content-Transfer-Encoding: base64\r\n\
                     Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
                     Content-Description: S/MIME Cryptographic Signature\r\n\r\n"
                )
                .as_bytes(),
            );
            encode_base64_lines(&der, &mut out);
            out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        }
    }
    Ok(out)
}

/// Encrypts the entity `content` for `recipients` and appends the `application/pkcs7-mime` entity to
/// `out` (which may already hold the message's outer headers: no copy of the result is then needed).
pub fn enveloped_entity(
    recipients: &[&X509],
    content: &[u8],
    cipher: CipherChoice,
    transport: KeyTransport,
    out: &mut Vec<u8>,
) -> Result<(), ErrorStack> {
    let der = match transport {
        KeyTransport::RsaOaep => {
            crate::ffi::oaep::encrypt_oaep(recipients, content, cipher.cipher())?
        }
        KeyTransport::RsaPkcs1 => {
            let mut stack = Stack::new()?;
            for c in recipients {
                stack.push((*c).clone())?;
            }
            CmsContentInfo::encrypt(&stack, content, cipher.cipher(), CMSOptions::BINARY)?
                .to_der()?
        }
    };
    out.reserve(der.len() * 4 / 3 + der.len() / 38 + 256);
    out.extend_from_slice(
        format!(
            "Content-Type: application/pkcs7-mime; smime-type={}; name=\"smime.p7m\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\
             Content-Description: S/MIME Encrypted Message\r\n\r\n",
            cipher.smime_type()
        )
        .as_bytes(),
    );
    encode_base64_lines(&der, out);
    Ok(())
}

/// The `micalg` parameter for a SignedData: the digest OpenSSL really used, read from the DER (the
/// first digest algorithm identifier in a SignedData is its digestAlgorithms set).
fn micalg(der: &[u8]) -> &'static str {
    const OIDS: [(&[u8], &str); 5] = [
        (
            &[
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
            ],
            "sha-256",
        ),
        (
            &[
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
            ],
            "sha-384",
        ),
        (
            &[
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
            ],
            "sha-512",
        ),
        (
            &[
                0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04,
            ],
            "sha-224",
        ),
        (&[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a], "sha-1"),
    ];
    // one pass, comparing only where an OBJECT IDENTIFIER tag (0x06) starts: the first digest OID
    // is the one of digestAlgorithms, near the start
    (0..der.len())
        .filter(|&i| der[i] == 0x06)
        .find_map(|i| {
            OIDS.iter()
                .find(|(oid, _)| der[i..].starts_with(oid))
                .map(|(_, name)| *name)
        })
        .unwrap_or("sha-256")
}

/// A MIME boundary that cannot occur in base64 or quoted-printable text ("=_" never does), nor, being
/// 96 random bits, in 7-bit text: nobody can guess it from the boundaries of earlier messages. The
/// random bytes are drawn from the generator for 64 boundaries at a time (one call per message was
/// 0.5 % of a drain's CPU).
fn new_boundary() -> String {
    const RAW: usize = 12;
    const BATCH: usize = RAW * 64;
    thread_local! {
        static RANDOM: std::cell::RefCell<([u8; BATCH], usize)> =
            const { std::cell::RefCell::new(([0; BATCH], BATCH)) };
    }
    let hex: String = RANDOM.with_borrow_mut(|(bytes, used)| {
        if *used == BATCH {
            openssl::rand::rand_bytes(bytes).expect("the OpenSSL random generator works");
            *used = 0;
        }
        let rnd = &bytes[*used..*used + RAW];
        *used += RAW;
        rnd.iter().map(|b| format!("{b:02x}")).collect()
    });
    format!("----=_smime_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_unique_and_never_base64_or_quoted_printable() {
        let all: std::collections::HashSet<String> = (0..1000).map(|_| new_boundary()).collect();
        assert_eq!(all.len(), 1000);
        for b in &all {
            assert!(b.starts_with("----=_smime_") && b.len() > 30, "{b}");
            assert!(b.bytes().all(|c| c.is_ascii_graphic()), "{b}");
        }
    }

    /// A boundary can be guessed from none before it: a line of 7-bit text that a later
    /// message's author chose cannot be its delimiter, and a recipient learns nothing (a process's
    /// identity, how many messages it signed) from the boundary of the message it got.
    #[test]
    fn no_boundary_can_be_told_from_the_ones_before_it() {
        let all: Vec<String> = (0..200).map(|_| new_boundary()).collect();
        let random = |b: &String| b["----=_smime_".len()..].to_string();
        // 96 random bits each: a shared first 32 bits is a one in 10^5 chance among 200
        let firsts: std::collections::HashSet<String> =
            all.iter().map(|b| random(b)[..8].to_string()).collect();
        assert!(firsts.len() >= 199, "{all:?}");
        assert!(all.iter().all(|b| random(b).len() == 24), "{all:?}");
    }

    const SHA256: &[u8] = &[
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
    ];
    const SHA384: &[u8] = &[
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
    ];

    #[test]
    fn micalg_names_the_first_digest_oid_of_the_der() {
        let der = |parts: &[&[u8]]| parts.concat();
        // other OIDs and stray 0x06 bytes before it are skipped
        let other_oid: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
        let noise: &[u8] = &[0x30, 0x06, 0x06, 0x06, 0x02, 0x01, 0x06];
        for (parts, want) in [
            (der(&[noise, SHA384, SHA256]), "sha-384"),
            (der(&[other_oid, SHA256, SHA384]), "sha-256"),
            (
                der(&[noise, &[0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a]]),
                "sha-1",
            ),
            (der(&[noise, other_oid]), "sha-256"), // none found: the default
            (der(&[&SHA384[..5]]), "sha-256"),     // cut short at the end
        ] {
            assert_eq!(micalg(&parts), want, "{parts:02x?}");
        }
    }

    #[test]
    fn micalg_of_a_real_signature_is_the_digest_used() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
        // key and certificate in one PEM file, as the keys folder holds them
        let pem = std::fs::read(dir.join("keys/alice@example.com.pem")).unwrap();
        let key = openssl::pkey::PKey::private_key_from_pem(&pem).unwrap();
        let cert = X509::from_pem(&pem).unwrap();
        let cms = CmsContentInfo::sign(
            Some(&cert),
            Some(&key),
            None,
            Some(b"x"),
            CMSOptions::BINARY | CMSOptions::DETACHED,
        )
        .unwrap();
        assert_eq!(micalg(&cms.to_der().unwrap()), "sha-256");
    }
}
