//! The sealing engine: one input message in, one or more sealed messages out, each with the envelope
//! recipients it is for. A pure function of (input bytes, policy, keyring, clock): no I/O, so the daemon
//! and the `seal` command share it and tests drive it directly.
//!
//! Who gets which copy:
//! - the visible recipients (To, Cc) with a usable certificate share one copy encrypted to all of them;
//! - every hidden recipient (Bcc, or an envelope recipient absent from To/Cc) gets a copy encrypted to
//!   them alone, so nobody can read the hidden addresses from a CMS recipient list;
//! - with `missing_cert = "sign-only"`, recipients without a usable certificate share one signed,
//!   unencrypted copy (a signed copy names no recipient, so hidden ones may share it).
//!
//! The content is signed once and the signature reused in every copy.

use log::warn;
use openssl::x509::X509;
use serde::Deserialize;
use thiserror::Error;

use crate::message::{self, Envelope, Limits, ParseError};
use crate::smime::certs::{CertStore, LookupError};
use crate::smime::keys::{Identity, KeyError, KeyStore};
use crate::smime::{self, CipherChoice, KeyTransport, SignatureMode};

/// What to do when a recipient has no usable certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum MissingCert {
    #[default]
    #[serde(rename = "fail")]
    Fail,
    #[serde(rename = "sign-only")]
    SignOnly,
}

/// What to do with input that is already S/MIME.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AlreadySealed {
    #[default]
    Pass,
    Seal,
}

/// The `[seal]` section of the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub sign: bool,
    pub encrypt: bool,
    pub signature: SignatureMode,
    pub cipher: CipherChoice,
    pub key_transport: KeyTransport,
    pub encrypt_to_sender: bool,
    pub missing_cert: MissingCert,
    pub already_sealed: AlreadySealed,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            sign: true,
            encrypt: true,
            signature: SignatureMode::Detached,
            cipher: CipherChoice::Aes256Cbc,
            key_transport: KeyTransport::RsaPkcs1,
            encrypt_to_sender: false,
            missing_cert: MissingCert::Fail,
            already_sealed: AlreadySealed::Pass,
        }
    }
}

/// Sender keys and recipient certificates, loaded once.
pub struct Keyring {
    pub keys: KeyStore,
    pub certs: CertStore,
}

/// How a copy was protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    SignedAndEncrypted,
    Signed,
    Encrypted,
    /// already S/MIME on input, passed through
    Passthrough,
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protection::SignedAndEncrypted => "signed+encrypted",
            Protection::Signed => "signed only",
            Protection::Encrypted => "encrypted only",
            Protection::Passthrough => "passed through",
        })
    }
}

/// One sealed copy and the envelope recipients it goes to.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub envelope: Envelope,
    pub data: Vec<u8>,
    pub protection: Protection,
    pub message_id: String,
}

/// Why a message cannot be sealed.
#[derive(Debug, Error)]
pub enum SealError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("no usable certificate: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Certificates(Vec<LookupError>),
    #[error("missing_cert = \"sign-only\" cannot help when signing is off: {0}")]
    CannotSignOnly(#[source] Box<SealError>),
    #[error("openssl failed while sealing: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

impl SealError {
    /// Sealing does no I/O, so nothing here gets better by retrying: the daemon quarantines the input.
    /// An OpenSSL failure is counted permanent too: it would fail the same way on the same bytes.
    pub fn is_permanent(&self) -> bool {
        true
    }

    /// Never: see `is_permanent`.
    pub fn is_transient(&self) -> bool {
        !self.is_permanent()
    }

    /// The class the metrics count it under.
    pub fn class(&self) -> &'static str {
        match self {
            SealError::Parse(_) => "input",
            SealError::Key(_) => "key",
            SealError::Certificates(_) | SealError::CannotSignOnly(_) => "certificate",
            SealError::Crypto(_) => "internal",
        }
    }
}

/// Seals `input` (within `limits`) according to `policy` at time `now` (Unix seconds).
pub fn seal(
    input: &[u8],
    policy: &Policy,
    limits: &Limits,
    keyring: &Keyring,
    now: i64,
) -> Result<Vec<Sealed>, SealError> {
    let msg = message::parse(input, limits)?;
    if msg.already_sealed && policy.already_sealed == AlreadySealed::Pass {
        return Ok(vec![Sealed {
            envelope: msg.envelope,
            data: msg.original,
            protection: Protection::Passthrough,
            message_id: msg.message_id,
        }]);
    }
    // already-sealed input wrapped again is sealed as a whole: its entity is the original body
    let wrapped;
    let content: &[u8] = if msg.already_sealed {
        wrapped = already_sealed_entity(&msg.original);
        &wrapped
    } else {
        &msg.inner
    };

    let signer: Option<&Identity> = if policy.sign {
        Some(keyring.keys.lookup(&msg.from, now)?)
    } else {
        None
    };

    // recipient certificates (all lookups first, so a refusal names every address at once)
    let mut with_cert: Vec<(&str, &X509)> = Vec::new();
    let mut without: Vec<&str> = Vec::new();
    let mut refused: Vec<LookupError> = Vec::new();
    if policy.encrypt {
        for r in &msg.envelope.recipients {
            match keyring.certs.lookup(r, now) {
                Ok(cert) => with_cert.push((r, cert)),
                Err(e) => {
                    without.push(r);
                    refused.push(e);
                }
            }
        }
        if !refused.is_empty() {
            let err = SealError::Certificates(refused);
            match (policy.missing_cert, signer.is_some()) {
                (MissingCert::Fail, _) => return Err(err),
                (MissingCert::SignOnly, false) => {
                    return Err(SealError::CannotSignOnly(Box::new(err)));
                }
                (MissingCert::SignOnly, true) => warn!(
                    "{}: sending signed but not encrypted: {err}",
                    msg.message_id
                ),
            }
        }
    }
    let sender_cert: Option<&X509> = match (policy.encrypt && policy.encrypt_to_sender, signer) {
        (false, _) => None,
        (true, Some(id)) => Some(&id.cert),
        (true, None) => Some(
            keyring
                .certs
                .lookup(&msg.from, now)
                .map_err(|e| SealError::Certificates(vec![e]))?,
        ),
    };

    let signed = match signer {
        Some(id) => Some(smime::signed_entity(id, content, policy.signature)?),
        None => None,
    };
    let payload: &[u8] = signed.as_deref().unwrap_or(content);

    let mut groups: Vec<(Vec<String>, Vec<&X509>)> = Vec::new();
    if policy.encrypt {
        let hidden: std::collections::HashSet<&str> =
            msg.envelope.hidden.iter().map(String::as_str).collect();
        let is_hidden = |r: &str| hidden.contains(r);
        let visible: Vec<_> = with_cert.iter().filter(|(r, _)| !is_hidden(r)).collect();
        if !visible.is_empty() {
            groups.push((
                visible.iter().map(|(r, _)| r.to_string()).collect(),
                visible.iter().map(|(_, c)| *c).collect(),
            ));
        }
        for (r, c) in with_cert.iter().filter(|(r, _)| is_hidden(r)) {
            groups.push((vec![r.to_string()], vec![*c]));
        }
    }

    let mut out = Vec::with_capacity(groups.len() + 1);
    // every copy starts with the outer headers; the entity is written straight after them
    let start = |extra: usize| {
        let mut data = crate::buffers::take(msg.outer_headers.len() + 32 + extra);
        data.extend_from_slice(&msg.outer_headers);
        data.extend_from_slice(b"MIME-Version: 1.0\r\n");
        data
    };
    let copy = |recipients: Vec<String>, data: Vec<u8>, protection: Protection| Sealed {
        envelope: Envelope {
            recipients,
            hidden: Vec::new(),
            ..msg.envelope.clone()
        },
        data,
        protection,
        message_id: msg.message_id.clone(),
    };
    for (recipients, mut certs) in groups {
        if let Some(c) = sender_cert {
            certs.push(c);
        }
        // one RecipientInfo per certificate, however many of its addresses receive the copy
        let mut seen = std::collections::HashSet::new();
        certs.retain(|c| {
            c.digest(openssl::hash::MessageDigest::sha256())
                .is_ok_and(|d| seen.insert(d.to_vec()))
        });
        let mut data = start(payload.len() * 7 / 5 + 1024 * certs.len());
        smime::enveloped_entity(
            &certs,
            payload,
            policy.cipher,
            policy.key_transport,
            &mut data,
        )?;
        let protection = if signer.is_some() {
            Protection::SignedAndEncrypted
        } else {
            Protection::Encrypted
        };
        out.push(copy(recipients, data, protection));
    }
    let plain: Vec<String> = if policy.encrypt {
        without.iter().map(|s| s.to_string()).collect()
    } else {
        msg.envelope.recipients.clone()
    };
    if !plain.is_empty() {
        let mut data = start(payload.len());
        data.extend_from_slice(payload);
        out.push(copy(plain, data, Protection::Signed));
    }
    if let Some(s) = signed {
        crate::buffers::give(s);
    }
    crate::buffers::give(msg.inner);
    Ok(out)
}

/// The MIME entity of an already-sealed message (its Content-* headers and body), to be wrapped again.
fn already_sealed_entity(original: &[u8]) -> Vec<u8> {
    let Ok((fields, body)) = message::split_entity(original) else {
        return original.to_vec();
    };
    let mut out = Vec::with_capacity(original.len());
    for f in fields
        .iter()
        .filter(|f| f.name.to_ascii_lowercase().starts_with("content-"))
    {
        out.extend_from_slice(f.raw);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}
