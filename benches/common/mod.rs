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

/// A P-256 key and a certificate for `address` from the test CA: a signer (`sign`) or an ECDH
/// recipient (keyAgreement).
pub fn ec_identity(address: &str, sign: bool) -> (PKey<Private>, X509) {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
    use openssl::x509::{X509Builder, X509NameBuilder};
    let read = |p: &str| std::fs::read(pki().join(p)).unwrap();
    let ca = X509::from_pem(&read("ca.pem")).unwrap();
    let ca_key = PKey::private_key_from_pem(&read("ca.key")).unwrap();
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", address).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(std::process::id()).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    let mut usage = KeyUsage::new();
    usage.critical();
    if sign {
        usage.digital_signature().non_repudiation();
    } else {
        usage.key_agreement();
    }
    b.append_extension(usage.build().unwrap()).unwrap();
    b.append_extension(ExtendedKeyUsage::new().email_protection().build().unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .email(address)
        .build(&b.x509v3_context(Some(&ca), None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    (key, b.build())
}

/// Adds an EC sender (`ec-sender@example.com`, key + certificate in `keys`) and an EC recipient
/// (`ec-bob@example.com` in `certs`) to the keyring folders of `keyring(tmp)`; returns the
/// sender's key and certificate and the recipient's certificate.
pub fn ec_pair(tmp: &Path) -> (PKey<Private>, X509, X509) {
    let (key, cert) = ec_identity("ec-sender@example.com", true);
    let (_, recipient) = ec_identity("ec-bob@example.com", false);
    let mut pem = key.private_key_to_pem_pkcs8().unwrap();
    pem.extend(cert.to_pem().unwrap());
    let path = tmp.join("keys/ec-sender@example.com.pem");
    std::fs::write(&path, pem).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        tmp.join("certs/ec-bob@example.com.crt"),
        recipient.to_pem().unwrap(),
    )
    .unwrap();
    (key, cert, recipient)
}

/// `message` with the From and To headers replaced.
pub fn readdressed(message: &[u8], from: &str, to: &str) -> Vec<u8> {
    let mut out = format!("From: {from}\nTo: {to}\n").into_bytes();
    let mut in_header = true;
    for line in message.split_inclusive(|&b| b == b'\n') {
        in_header &= line != b"\n" && line != b"\r\n";
        if !in_header || (!line.starts_with(b"From:") && !line.starts_with(b"To:")) {
            out.extend_from_slice(line);
        }
    }
    out
}

/// A bench's own arguments (cargo's `--bench` flags left out), read by position.
pub struct Args(pub Vec<String>);

impl Args {
    pub fn from_env() -> Args {
        Args(
            std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with("--"))
                .collect(),
        )
    }

    /// The number at position `i`, or `default` when there is none.
    pub fn number(&self, i: usize, default: usize) -> usize {
        self.0
            .get(i)
            .map_or(default, |v| v.parse().expect("a number"))
    }
}

/// The 19 KB fixture sealed once with the default policy (to one bulk recipient), for benches
/// that measure delivery alone.
pub fn sealed_19k() -> smime_pickup::seal::Sealed {
    use smime_pickup::message::Limits;
    use smime_pickup::seal::{self, Policy};
    let tmp = tempfile::tempdir().unwrap();
    let ring = keyring(tmp.path());
    let input = message("html-19k.eml", 1);
    seal::seal(
        &input,
        &Policy::default(),
        &Limits::NONE,
        &ring,
        smime_pickup::smime::certs::unix_now(),
    )
    .unwrap()
    .remove(0)
}
