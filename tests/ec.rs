//! EC keys end to end: an ECDSA P-256 sender and an ECDH P-256 recipient, issued by the test from
//! the test CA with the openssl CLI, sealed by `seal`, opened and verified by the openssl CLI; the
//! ECDSA signature is also verified by gpgsm. (gpgsm 2.2 cannot decrypt for an EC key: importing
//! an EC PKCS#12 file crashes it, so that half is left to openssl.)

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use util::*;

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
    o.stdout
}

/// A P-256 key and a certificate from the test CA for `address` with `key_usage`; returns the key
/// and certificate files.
fn issue(d: &Dir, address: &str, key_usage: &str) -> (PathBuf, PathBuf) {
    let ext = d.write(
        &format!("{address}.ext"),
        format!(
            "basicConstraints = CA:false\nkeyUsage = critical, {key_usage}\n\
             extendedKeyUsage = emailProtection\nsubjectAltName = email:{address}\n"
        )
        .as_bytes(),
    );
    let (key, csr, crt) = (
        d.path().join(format!("{address}.key")),
        d.path().join(format!("{address}.csr")),
        d.path().join(format!("{address}.crt")),
    );
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let pki = pki();
    openssl(
        d.path(),
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ]
        .iter()
        .copied()
        .chain([
            "-nodes",
            "-subj",
            &format!("/CN=EC {address}"),
            "-keyout",
            &s(&key),
            "-out",
            &s(&csr),
        ])
        .collect::<Vec<_>>(),
    );
    let serial = format!(
        "0x{:x}",
        std::process::id() as u64 * 1000 + address.len() as u64
    );
    openssl(
        d.path(),
        &[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            &s(&pki.join("ca.pem")),
            "-CAkey",
            &s(&pki.join("ca.key")),
            "-set_serial",
            &serial,
            "-days",
            "30",
            "-extfile",
            &s(&ext),
            "-out",
            &s(&crt),
        ],
    );
    (key, crt)
}

fn print(dir: &Path, der: &[u8]) -> String {
    let path = dir.join("print.der");
    std::fs::write(&path, der).unwrap();
    String::from_utf8_lossy(&openssl(
        dir,
        &[
            "cms",
            "-cmsout",
            "-print",
            "-inform",
            "DER",
            "-in",
            path.to_str().unwrap(),
        ],
    ))
    .into_owned()
}

#[test]
fn an_ecdsa_sender_seals_to_ecdh_and_rsa_recipients_and_openssl_opens_it() {
    let d = Dir::new();
    let (skey, scrt) = issue(
        &d,
        "ecsender@example.com",
        "digitalSignature, nonRepudiation",
    );
    let (rkey, rcrt) = issue(&d, "ecbob@example.com", "keyAgreement");
    let mut identity = std::fs::read(&skey).unwrap();
    identity.extend(std::fs::read(&scrt).unwrap());
    let keyfile = d.keys().join("ecsender@example.com.pem");
    std::fs::write(&keyfile, identity).unwrap();
    std::fs::set_permissions(&keyfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::copy(&rcrt, d.certs().join("ecbob@example.com.crt")).unwrap();
    let input = d.write(
        "m.eml",
        b"From: ecsender@example.com\nTo: ecbob@example.com\nCc: bob@example.com\n\
          Subject: elliptic\nMessage-ID: <ec-1@example.com>\n\nhello from P-256\n",
    );
    let gpgsm = util::gpgsm::gpgsm();
    // the key transport setting only concerns RSA recipients; an EC one gets key agreement
    for transport in ["rsa-pkcs1", "rsa-oaep"] {
        let config = d.config(&format!("[seal]\nkey_transport = \"{transport}\"\n"));
        let o = run(bin(d.path()).arg("-c").arg(&config).arg("seal").arg(&input));
        assert!(o.status.success(), "{transport}: {}", stderr(&o));
        let sealed = o.stdout;
        let der = b64_decode(body_of(&sealed));
        let shape = print(d.path(), &der);
        assert!(
            shape.contains("d.kari") && shape.contains("d.ktri"),
            "{transport}: one key agreement and one key transport recipient:\n{shape}"
        );
        // the EC recipient, with openssl cms
        let sealed_path = d.write("sealed.eml", &sealed);
        let inner = openssl(
            d.path(),
            &[
                "cms",
                "-decrypt",
                "-binary",
                "-in",
                sealed_path.to_str().unwrap(),
                "-recip",
                rcrt.to_str().unwrap(),
                "-inkey",
                rkey.to_str().unwrap(),
            ],
        );
        // the RSA recipient of the same copy
        let inner_rsa = openssl_decrypt(d.path(), &sealed, "bob@example.com").unwrap();
        assert_eq!(inner, inner_rsa, "{transport}");
        let content = openssl_verify(d.path(), &inner).unwrap();
        assert!(
            String::from_utf8_lossy(&content).contains("hello from P-256"),
            "{transport}"
        );
        let (signed, sig) = split_signed(&inner);
        assert!(
            print(d.path(), &sig).contains("ecdsa-with-SHA256"),
            "{transport}: an ECDSA signature"
        );
        gpgsm.verify_detached(d.path(), &sig, &signed).unwrap();
    }
}
