//! What the benches share: the fixture PKI and the bare OpenSSL calls that are the crypto floor.
//! (Each bench uses part of it.)
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::X509;
use smime_pickup::config::Config;
use smime_pickup::seal::Keyring;

pub fn pki() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki")
}

/// alice's key and certificate, the sender in every bench.
pub fn signer() -> (PKey<Private>, X509) {
    let read = |p: &str| std::fs::read(pki().join(p)).unwrap();
    (
        PKey::private_key_from_pem(&read("private/alice@example.com.key")).unwrap(),
        X509::from_pem(&read("private/alice@example.com.crt")).unwrap(),
    )
}

/// The floor: a detached CMS signature over `inner`, then the entity and its signature encrypted
/// (AES-256-CBC) to `recipients`. No parsing, no MIME, no base64.
pub fn bare_seal(key: &PKey<Private>, cert: &X509, inner: &[u8], recipients: &[X509]) -> Vec<u8> {
    let sig = CmsContentInfo::sign(
        Some(cert),
        Some(key),
        None,
        Some(inner),
        CMSOptions::DETACHED | CMSOptions::BINARY,
    )
    .unwrap()
    .to_der()
    .unwrap();
    let mut signed = inner.to_vec();
    signed.extend_from_slice(&sig);
    let mut stack = Stack::new().unwrap();
    for r in recipients {
        stack.push(r.clone()).unwrap();
    }
    CmsContentInfo::encrypt(&stack, &signed, Cipher::aes_256_cbc(), CMSOptions::BINARY)
        .unwrap()
        .to_der()
        .unwrap()
}

/// A keyring over a private copy of the fixture PKI (keys need mode 0600).
pub fn keyring(tmp: &Path) -> Keyring {
    let fixtures = pki();
    for sub in ["keys", "certs"] {
        std::fs::create_dir_all(tmp.join(sub)).unwrap();
        for e in std::fs::read_dir(fixtures.join(sub)).unwrap() {
            let e = e.unwrap();
            let to = tmp.join(sub).join(e.file_name());
            std::fs::copy(e.path(), &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    std::fs::copy(fixtures.join("ca.pem"), tmp.join("ca.pem")).unwrap();
    let config = Config::from_toml("ca = \"ca.pem\"\n", Some(&tmp.join("c.toml"))).unwrap();
    smime_pickup::keyring::load(&config).unwrap()
}

/// The fixture with its To header replaced by `n` bulk recipients.
pub fn message(fixture: &str, n: usize) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/eml")
        .join(fixture);
    let text = std::fs::read(path).unwrap();
    let to: Vec<String> = (1..=n).map(|i| format!("bulk{i:02}@example.com")).collect();
    let mut out = format!("To: {}\n", to.join(", ")).into_bytes();
    for line in text.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b"To:") && !line.starts_with(b"Cc:") && !line.starts_with(b"Bcc:") {
            out.extend_from_slice(line);
        }
    }
    out
}
