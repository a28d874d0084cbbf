//! Test harness: a per-test temp folder with a copy of the fixture PKI, the real binary run with a
//! scrubbed environment, and the independent checkers (the `openssl cms` CLI and `gpgsm`).

#![allow(dead_code)]

pub mod api;
pub mod child;
pub mod crafted;
pub mod dns;
pub mod gpgsm;
pub mod mta;
pub mod mutate;
pub mod nss;
pub mod reply;
pub mod servers;
pub mod spool;

#[allow(unused_imports)] // not every test binary uses every checker
pub use gpgsm::gpgsm;
#[allow(unused_imports)]
pub use nss::nss;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn pki() -> PathBuf {
    fixtures().join("pki")
}

/// A private copy of the fixture PKI (git does not keep 0600 modes, the binary insists on them).
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        copy_tree(&pki(), &tmp.path().join("pki"));
        for entry in std::fs::read_dir(tmp.path().join("pki/keys")).unwrap() {
            let p = entry.unwrap().path();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Dir { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn keys(&self) -> PathBuf {
        self.path().join("pki/keys")
    }

    pub fn certs(&self) -> PathBuf {
        self.path().join("pki/certs")
    }

    pub fn ca(&self) -> PathBuf {
        self.path().join("pki/ca.pem")
    }

    /// Writes `smime-pickup.toml` pointing at the copied PKI, with `extra` appended.
    pub fn config(&self, extra: &str) -> PathBuf {
        let path = self.path().join("smime-pickup.toml");
        let text = format!(
            "keys = \"pki/keys\"\ncerts = \"pki/certs\"\nca = \"pki/ca.pem\"\n\
             key_passphrase_file = \"pki/passphrase.txt\"\n{extra}"
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The binary, run in `dir` with only PATH and HOME from our environment.
pub fn bin(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smime-pickup"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the command starts")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// LF → CRLF (for the CRLF variant of a fixture).
pub fn to_crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 20);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// Every line ends in CRLF: no bare LF or CR anywhere.
pub fn assert_crlf_only(bytes: &[u8], what: &str) {
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' {
            assert!(
                i > 0 && bytes[i - 1] == b'\r',
                "{what}: bare LF at byte {i}"
            );
        }
        if b == b'\r' {
            assert_eq!(
                bytes.get(i + 1),
                Some(&b'\n'),
                "{what}: bare CR at byte {i}"
            );
        }
    }
}

/// No line (without its CRLF) over 998 octets, as RFC 5322 allows.
pub fn assert_lines_fit(bytes: &[u8], what: &str) {
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let len = line.strip_suffix(b"\r").unwrap_or(line).len();
        assert!(len <= 998, "{what}: line {} has {len} octets", n + 1);
    }
}

/// Runs an openssl command: its stdout, or its stderr as the error.
fn openssl(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let o = cmd.stdin(Stdio::null()).output().expect("openssl runs");
    if o.status.success() {
        Ok(o.stdout)
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// `openssl cms -decrypt` as the holder of `address`'s key; returns the decrypted entity.
pub fn openssl_decrypt(dir: &Path, sealed: &[u8], address: &str) -> Result<Vec<u8>, String> {
    let input = dir.join(format!("dec-in-{address}.eml"));
    std::fs::write(&input, sealed).unwrap();
    let private = pki().join("private");
    let cert = if private.join(format!("{address}.crt")).exists() {
        private.join(format!("{address}.crt"))
    } else {
        pki().join("certs").join(format!("{address}.crt"))
    };
    let mut o = Command::new("openssl");
    o.args(["cms", "-decrypt", "-binary", "-in"])
        .arg(&input)
        .arg("-recip")
        .arg(cert)
        .arg("-inkey")
        .arg(private.join(format!("{address}.key")));
    openssl(&mut o)
}

/// `openssl cms -verify` (detached multipart/signed or opaque) against the test CA; returns the content.
pub fn openssl_verify(dir: &Path, signed: &[u8]) -> Result<Vec<u8>, String> {
    let input = dir.join("verify-in.eml");
    std::fs::write(&input, signed).unwrap();
    let mut o = Command::new("openssl");
    o.args(["cms", "-verify", "-purpose", "smimesign", "-in"])
        .arg(&input)
        .arg("-CAfile")
        .arg(pki().join("ca.pem"));
    openssl(&mut o)
}

/// `openssl cms -verify -binary` of a DER detached signature over the exact bytes `content`.
pub fn openssl_verify_detached(dir: &Path, sig: &[u8], content: &[u8]) -> Result<(), String> {
    let (sig_path, content_path) = (dir.join("ossl-sig.der"), dir.join("ossl-content"));
    std::fs::write(&sig_path, sig).unwrap();
    std::fs::write(&content_path, content).unwrap();
    let mut o = Command::new("openssl");
    o.args([
        "cms",
        "-verify",
        "-binary",
        "-purpose",
        "smimesign",
        "-inform",
        "DER",
        "-in",
    ])
    .arg(&sig_path)
    .arg("-content")
    .arg(&content_path)
    .arg("-CAfile")
    .arg(pki().join("ca.pem"));
    openssl(&mut o).map(|_| ())
}

/// The body of a message or entity after its header block.
pub fn body_of(entity: &[u8]) -> &[u8] {
    let i = entity
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block")
        + 4;
    &entity[i..]
}

/// Header value of `name` in an entity's header block (unfolded).
pub fn header(entity: &[u8], name: &str) -> Option<String> {
    let head = &entity[..entity.len() - body_of(entity).len()];
    let text = String::from_utf8_lossy(head)
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ");
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

pub fn b64_decode(text: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .expect("valid base64")
}

/// Splits a `multipart/signed` entity into the exact signed bytes and the DER signature.
pub fn split_signed(entity: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let ct = header(entity, "content-type").unwrap();
    let boundary = ct
        .split("boundary=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let delim = format!("--{boundary}\r\n");
    let body = body_of(entity);
    let start = find(body, delim.as_bytes()).unwrap() + delim.len();
    let next = format!("\r\n--{boundary}\r\n");
    let end = start + find(&body[start..], next.as_bytes()).unwrap();
    let signed = body[start..end].to_vec();
    let sig_part = &body[end + next.len()..];
    let close = format!("--{boundary}--");
    let sig_end = find(sig_part, close.as_bytes()).unwrap();
    let sig_entity = &sig_part[..sig_end];
    (signed, b64_decode(body_of(sig_entity)))
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What a message means to a reader: the decoded text and HTML bodies and attachment contents, via
/// mail-parser (an implementation independent of our canonicaliser).
pub fn meaning(entity: &[u8]) -> Vec<(String, Vec<u8>)> {
    use mail_parser::MimeHeaders;
    let msg = mail_parser::MessageParser::new()
        .parse(entity)
        .expect("parses");
    let mut out = Vec::new();
    for part in msg.parts.iter() {
        let ct = part
            .content_type()
            .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")).to_ascii_lowercase())
            .unwrap_or_else(|| "text/plain".into());
        if ct.starts_with("multipart/") {
            continue;
        }
        let contents = match &part.body {
            mail_parser::PartType::Text(t) | mail_parser::PartType::Html(t) => {
                t.replace("\r\n", "\n").trim_end().as_bytes().to_vec()
            }
            _ => part.contents().to_vec(),
        };
        out.push((ct, contents));
    }
    out
}
