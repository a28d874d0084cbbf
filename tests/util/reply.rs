//! Signed replies made for the harvest tests: a person (key and certificate from the fixture PKI's
//! CAs, made with the openssl CLI), their reply signed by `openssl smime -sign`, `certs import` run
//! on files, and `openssl cms -decrypt` with that person's key.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// A person made for this test: key + certificate issued by `issuer` (`ca`, `intermediate`,
/// `other-ca` of the fixture PKI) with `ext` as its extensions.
pub struct Person {
    pub key: PathBuf,
    pub cert: PathBuf,
}

pub const EMAIL_EXT: &str = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
                         extendedKeyUsage=emailProtection\n";

pub fn person(dir: &Path, name: &str, email: &str, issuer: &str, days: u32, ext: &str) -> Person {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let cert = dir.join(format!("{name}.crt"));
    let extfile = dir.join(format!("{name}.ext"));
    std::fs::write(&extfile, format!("{ext}subjectAltName=email:{email}\n")).unwrap();
    let ok = |c: &mut Command| {
        let o = c.output().unwrap();
        assert!(o.status.success(), "{c:?}: {}", stderr(&o));
    };
    ok(Command::new("openssl")
        .args(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    let ca = pki();
    ok(Command::new("openssl")
        .args(["x509", "-req", "-sha256", "-days", &days.to_string(), "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(ca.join(format!("{issuer}.pem")))
        .arg("-CAkey")
        .arg(ca.join(format!("{issuer}.key")))
        .arg("-set_serial")
        .arg(format!("{}", 1000 + days + name.len() as u32))
        .arg("-extfile")
        .arg(&extfile)
        .arg("-out")
        .arg(&cert));
    Person { key, cert }
}

/// A reply signed by `openssl smime -sign`: detached (multipart/signed) or `-nodetach` (opaque),
/// with `certfile` carried in the signature's certificate set.
pub fn openssl_reply(
    dir: &Path,
    p: &Person,
    from: &str,
    opaque: bool,
    certfile: Option<&Path>,
) -> Vec<u8> {
    let body = dir.join("body.txt");
    std::fs::write(
        &body,
        "Content-Type: text/plain\r\n\r\nPlease send encrypted statements.\r\n",
    )
    .unwrap();
    let mut c = Command::new("openssl");
    c.args(["smime", "-sign", "-in"])
        .arg(&body)
        .arg("-signer")
        .arg(&p.cert)
        .arg("-inkey")
        .arg(&p.key)
        .args([
            "-from",
            from,
            "-to",
            "statements@example.com",
            "-subject",
            "Re: statements",
        ]);
    if opaque {
        c.arg("-nodetach");
    }
    if let Some(f) = certfile {
        c.arg("-certfile").arg(f);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "openssl smime -sign: {}", stderr(&o));
    o.stdout
}

pub fn import(d: &Dir, config: &Path, files: &[&Path]) -> (i32, String) {
    let o = run(bin(d.path())
        .arg("-c")
        .arg(config)
        .args(["certs", "import"])
        .args(files));
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

/// An empty certs folder beside the copied PKI, so every import is new.
pub fn fresh(extra: &str) -> (Dir, PathBuf) {
    let d = Dir::new();
    std::fs::create_dir(d.path().join("harvested")).unwrap();
    let config = d.path().join("harvest.toml");
    std::fs::write(
        &config,
        format!("keys = \"pki/keys\"\ncerts = \"harvested\"\nca = \"pki/ca.pem\"\n{extra}"),
    )
    .unwrap();
    (d, config)
}

/// `openssl cms -decrypt` with a person made in the test (the pickup file's envelope lines read
/// as header fields).
pub fn decrypt_with(dir: &Path, pickup_file: &[u8], p: &Person) -> Result<Vec<u8>, String> {
    let input = dir.join("to-decrypt.eml");
    std::fs::write(&input, pickup_file).unwrap();
    let o = Command::new("openssl")
        .args(["cms", "-decrypt", "-in"])
        .arg(&input)
        .arg("-recip")
        .arg(&p.cert)
        .arg("-inkey")
        .arg(&p.key)
        .output()
        .unwrap();
    if o.status.success() {
        Ok(o.stdout)
    } else {
        Err(stderr(&o))
    }
}
