//! Integration tests: the real binary on the golden corpus and on the sealing options, every output
//! checked by the `openssl cms` CLI and by gpgsm.

mod util;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use util::*;

#[derive(Debug, Deserialize)]
struct Expect {
    outcome: String,
    sender: Option<String>,
    #[serde(default)]
    recipients: Vec<String>,
    #[serde(default)]
    bcc: Vec<String>,
    error: Option<String>,
}

fn cases(dir: &Path) -> Vec<(PathBuf, Expect)> {
    let mut out: Vec<(PathBuf, Expect)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| {
            let expect = std::fs::read_to_string(p.with_extension("expect")).unwrap();
            let expect: Expect =
                toml::from_str(&expect).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, expect)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn has_key(address: &str) -> bool {
    pki()
        .join("private")
        .join(format!("{}.key", address.to_ascii_lowercase()))
        .exists()
}

fn has_p12(address: &str) -> bool {
    pki()
        .join("private")
        .join(format!("{}.p12", address.to_ascii_lowercase()))
        .exists()
}

/// One sealed copy from `--output-dir`: its bytes and envelope.
struct Copy {
    data: Vec<u8>,
    sender: String,
    recipients: Vec<String>,
}

fn seal_to_dir(d: &Dir, input: &Path, args: &[&str]) -> (std::process::Output, Vec<Copy>) {
    let out_dir = d.path().join("out");
    let _ = std::fs::remove_dir_all(&out_dir);
    let config = d.config("");
    let o = run(bin(d.path())
        .arg("-c")
        .arg(&config)
        .arg("seal")
        .args(args)
        .arg("--output-dir")
        .arg(&out_dir)
        .arg(input));
    let mut copies = Vec::new();
    for i in 0.. {
        let eml = out_dir.join(format!("{i}.eml"));
        if !eml.exists() {
            break;
        }
        let env = std::fs::read_to_string(out_dir.join(format!("{i}.env"))).unwrap();
        let field = |name: &'static str| -> Vec<String> {
            env.lines()
                .filter_map(|l| l.strip_prefix(name).map(str::to_string))
                .collect()
        };
        copies.push(Copy {
            data: std::fs::read(eml).unwrap(),
            sender: field("x-sender: ").remove(0),
            recipients: field("x-receiver: "),
        });
    }
    if o.status.success() {
        assert_eq!(
            copies.first().map(|c| &c.data[..]),
            Some(&o.stdout[..]),
            "stdout is the first copy"
        );
    }
    (o, copies)
}

/// Decrypts as `address` with openssl, verifies with openssl, and (when `gpg`) with gpgsm and NSS's
/// cmsutil too.
/// Returns the signed content (the canonical inner entity).
fn open_sealed(d: &Dir, sealed: &[u8], address: &str, gpg: bool, what: &str) -> Vec<u8> {
    assert_crlf_only(sealed, what);
    let ct = header(sealed, "content-type").unwrap();
    assert!(
        ct.contains("application/pkcs7-mime") && ct.contains("smime-type=enveloped-data"),
        "{what}: {ct}"
    );
    assert!(
        header(sealed, "bcc").is_none(),
        "{what}: Bcc leaked into the output"
    );
    for line in body_of(sealed).split(|&b| b == b'\n') {
        assert!(line.len() <= 78, "{what}: base64 line over 76 columns");
    }
    let inner = openssl_decrypt(d.path(), sealed, address)
        .unwrap_or_else(|e| panic!("{what}: openssl decrypt as {address}: {e}"));
    assert_crlf_only(&inner, &format!("{what} (signed entity)"));
    let ct = header(&inner, "content-type").unwrap();
    assert!(
        ct.contains("multipart/signed") && ct.contains("micalg=sha-256"),
        "{what}: {ct}"
    );
    let content =
        openssl_verify(d.path(), &inner).unwrap_or_else(|e| panic!("{what}: openssl verify: {e}"));
    let (signed, sig) = split_signed(&inner);
    assert_eq!(
        signed, content,
        "{what}: openssl's verified content is the signed part"
    );
    openssl_verify_detached(d.path(), &sig, &signed)
        .unwrap_or_else(|e| panic!("{what}: openssl verify of the exact signed bytes: {e}"));
    for line in signed.split(|&b| b == b'\n') {
        assert!(
            line.len() <= 999,
            "{what}: a canonical line is over 998 octets"
        );
        assert!(
            line.iter().all(|&b| b < 0x80),
            "{what}: 8-bit data in the signed entity"
        );
    }
    if gpg {
        let g = gpgsm();
        let der = b64_decode(body_of(sealed));
        let plain = g
            .decrypt(d.path(), &der)
            .unwrap_or_else(|e| panic!("{what}: gpgsm decrypt: {e}"));
        assert_eq!(
            plain, inner,
            "{what}: gpgsm and openssl decrypt to the same bytes"
        );
        g.verify_detached(d.path(), &sig, &signed)
            .unwrap_or_else(|e| panic!("{what}: gpgsm verify: {e}"));
        // NSS (Thunderbird's engine) opens the same bytes and accepts the signer for email
        let n = nss();
        let plain = n
            .decrypt(d.path(), &der)
            .unwrap_or_else(|e| panic!("{what}: cmsutil decrypt: {e}"));
        assert_eq!(
            plain, inner,
            "{what}: cmsutil and openssl decrypt to the same bytes"
        );
        n.verify_detached(d.path(), &sig, &signed)
            .unwrap_or_else(|e| panic!("{what}: cmsutil verify: {e}"));
    }
    signed
}

fn run_corpus(crlf: bool) {
    // one GnuPG home and one NSS database for the whole corpus (the last user removes them)
    let (_gpg, _nss) = (gpgsm(), nss());
    let mut ran = 0;
    for (path, expect) in cases(&fixtures().join("eml")) {
        let what = format!(
            "{} ({})",
            path.file_name().unwrap().to_string_lossy(),
            if crlf { "CRLF" } else { "LF" }
        );
        let d = Dir::new();
        let raw = std::fs::read(&path).unwrap();
        let input_bytes = if crlf { to_crlf(&raw) } else { raw.clone() };
        let input = d.write("input.eml", &input_bytes);
        let (o, copies) = seal_to_dir(&d, &input, &[]);
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        let mut all: Vec<String> = copies
            .iter()
            .flat_map(|c| c.recipients.iter().map(|r| r.to_ascii_lowercase()))
            .collect();
        all.sort();
        let mut want: Vec<String> = expect
            .recipients
            .iter()
            .map(|r| r.to_ascii_lowercase())
            .collect();
        want.sort();
        assert_eq!(all, want, "{what}: every recipient gets exactly one copy");
        for c in &copies {
            assert_eq!(
                c.sender.to_ascii_lowercase(),
                expect.sender.as_deref().unwrap().to_ascii_lowercase(),
                "{what}"
            );
        }
        if expect.outcome == "passthrough" {
            assert_eq!(copies.len(), 1, "{what}");
            assert_eq!(
                copies[0].data,
                to_crlf(&raw),
                "{what}: passed through untouched (CRLF)"
            );
            ran += 1;
            continue;
        }
        assert_eq!(expect.outcome, "sealed", "{what}");
        for b in &expect.bcc {
            let own = copies
                .iter()
                .find(|c| c.recipients.iter().any(|r| r.eq_ignore_ascii_case(b)))
                .unwrap();
            assert_eq!(
                own.recipients.len(),
                1,
                "{what}: Bcc {b} has a copy of its own"
            );
        }
        let meaning_in = meaning(&input_bytes);
        for (i, copy) in copies.iter().enumerate() {
            let holders: Vec<&String> = copy.recipients.iter().filter(|r| has_key(r)).collect();
            assert!(
                !holders.is_empty(),
                "{what}: copy {i} has no recipient whose key we hold"
            );
            // gpgsm picks whichever of its keys fits: use it on copies with one gpgsm-known recipient
            let gpg = copy.recipients.len() == 1 && has_p12(&copy.recipients[0])
                || copy.recipients.iter().all(|r| has_p12(r));
            let mut first: Option<Vec<u8>> = None;
            for r in holders {
                let content = open_sealed(
                    &d,
                    &copy.data,
                    &r.to_ascii_lowercase(),
                    gpg && first.is_none(),
                    &format!("{what} copy {i} as {r}"),
                );
                if let Some(f) = &first {
                    assert_eq!(
                        f, &content,
                        "{what}: recipients of one copy read the same content"
                    );
                }
                first = Some(content);
            }
            let content = first.unwrap();
            assert_eq!(
                meaning(&content),
                meaning_in,
                "{what}: the decrypted content means what the input meant"
            );
            // recipients of other copies cannot open this one
            for other in copies
                .iter()
                .filter(|c| !std::ptr::eq(*c, copy))
                .flat_map(|c| &c.recipients)
            {
                if has_key(other) && !copy.recipients.contains(other) {
                    assert!(
                        openssl_decrypt(d.path(), &copy.data, &other.to_ascii_lowercase()).is_err(),
                        "{what}: {other} can open copy {i}"
                    );
                }
            }
        }
        ran += 1;
    }
    assert!(ran >= 15, "the corpus ran {ran} cases");
}

#[test]
fn corpus_lf() {
    run_corpus(false);
}

#[test]
fn corpus_crlf() {
    run_corpus(true);
}

#[test]
fn malformed_corpus_is_refused_with_its_reason() {
    let mut ran = 0;
    for crlf in [false, true] {
        for (path, expect) in cases(&fixtures().join("eml/malformed")) {
            let d = Dir::new();
            let raw = std::fs::read(&path).unwrap();
            let input = d.write("input.eml", &if crlf { to_crlf(&raw) } else { raw });
            let (o, copies) = seal_to_dir(&d, &input, &[]);
            let what = path.file_name().unwrap().to_string_lossy().into_owned();
            assert_eq!(o.status.code(), Some(65), "{what}: {}", stderr(&o));
            assert!(
                copies.is_empty() && o.stdout.is_empty(),
                "{what}: nothing written"
            );
            let err = stderr(&o).to_ascii_lowercase();
            let want = expect.error.unwrap();
            assert!(err.contains(&want), "{what}: error {err:?} lacks {want:?}");
            assert!(
                err.contains("input.eml"),
                "{what}: the error names the file: {err}"
            );
            ran += 1;
        }
    }
    assert!(ran >= 20, "ran {ran}");
}

/// Seals fixture `name` with config `extra` and `args`; returns the output, stderr and the Dir.
fn seal_fixture(name: &str, extra: &str, args: &[&str]) -> (Dir, std::process::Output) {
    let d = Dir::new();
    let config = d.config(extra);
    let o = run(bin(d.path())
        .arg("-c")
        .arg(&config)
        .arg("seal")
        .args(args)
        .arg(fixtures().join("eml").join(name)));
    (d, o)
}

fn cms_print(d: &Dir, sealed: &[u8]) -> String {
    let p = d.write("print.eml", sealed);
    let o = std::process::Command::new("openssl")
        .args(["cms", "-cmsout", "-print", "-in"])
        .arg(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn sign_only_is_multipart_signed_and_verifies_with_three_tools() {
    let (d, o) = seal_fixture("utf8-html-8bit.eml", "", &["--sign"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ct = header(&o.stdout, "content-type").unwrap();
    assert!(
        ct.starts_with("multipart/signed")
            && ct.contains("protocol=\"application/pkcs7-signature\""),
        "{ct}"
    );
    let content = openssl_verify(d.path(), &o.stdout).unwrap();
    let (signed, sig) =
        split_signed(&o.stdout[find(&o.stdout, b"Content-Type: multipart/signed").unwrap()..]);
    assert_eq!(signed, content);
    gpgsm().verify_detached(d.path(), &sig, &signed).unwrap();
    nss().verify_detached(d.path(), &sig, &signed).unwrap();
    // each checker says no to one changed byte, so their yes above means something
    let mut tampered = signed.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    assert!(openssl_verify_detached(d.path(), &sig, &tampered).is_err());
    assert!(gpgsm().verify_detached(d.path(), &sig, &tampered).is_err());
    let refusal = nss()
        .verify_detached(d.path(), &sig, &tampered)
        .unwrap_err();
    assert!(refusal.contains("DigestMismatch"), "{refusal}");
    assert_eq!(
        meaning(&signed),
        meaning(&std::fs::read(fixtures().join("eml/utf8-html-8bit.eml")).unwrap())
    );
}

#[test]
fn opaque_signature_verifies_with_both_tools() {
    let (d, o) = seal_fixture("plain-text.eml", "", &["--sign", "--opaque"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ct = header(&o.stdout, "content-type").unwrap();
    assert!(
        ct.contains("application/pkcs7-mime") && ct.contains("smime-type=signed-data"),
        "{ct}"
    );
    let content = openssl_verify(d.path(), &o.stdout).unwrap();
    let printed = cms_print(&d, &o.stdout);
    assert!(
        printed.contains("S/MIME Capabilities (1.2.840.113549.1.9.15)"),
        "signed attributes announce our ciphers: {printed}"
    );
    assert!(printed.contains("signingTime"), "{printed}");
    let via_gpgsm = gpgsm()
        .verify_opaque(d.path(), &b64_decode(body_of(&o.stdout)))
        .unwrap();
    assert_eq!(content, via_gpgsm);
    assert_eq!(
        meaning(&content),
        meaning(&std::fs::read(fixtures().join("eml/plain-text.eml")).unwrap())
    );
}

#[test]
fn opaque_signed_and_encrypted_opens_with_openssl() {
    let (d, o) = seal_fixture("plain-text.eml", "[seal]\nsignature = \"opaque\"\n", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let inner = openssl_decrypt(d.path(), &o.stdout, "bob@example.com").unwrap();
    assert!(
        header(&inner, "content-type")
            .unwrap()
            .contains("smime-type=signed-data")
    );
    let content = openssl_verify(d.path(), &inner).unwrap();
    assert!(String::from_utf8_lossy(&content).contains("planning call"));
}

#[test]
fn encrypt_only_carries_the_canonical_entity() {
    let (d, o) = seal_fixture("utf8-text-8bit.eml", "", &["--encrypt"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let inner = openssl_decrypt(d.path(), &o.stdout, "dave@example.net").unwrap();
    assert!(
        header(&inner, "content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(
        meaning(&inner),
        meaning(&std::fs::read(fixtures().join("eml/utf8-text-8bit.eml")).unwrap())
    );
    let plain = gpgsm()
        .decrypt(d.path(), &b64_decode(body_of(&o.stdout)))
        .unwrap();
    assert_eq!(plain, inner);
}

#[test]
fn cipher_and_key_transport_options_reach_the_cms_structure() {
    let cases = [
        (
            "aes-128-cbc",
            "rsa-pkcs1",
            "enveloped-data",
            "aes-128-cbc",
            "rsaEncryption",
        ),
        (
            "aes-256-cbc",
            "rsa-oaep",
            "enveloped-data",
            "aes-256-cbc",
            "rsaesOaep",
        ),
        (
            "aes-128-gcm",
            "rsa-pkcs1",
            "authEnveloped-data",
            "aes-128-gcm",
            "rsaEncryption",
        ),
        (
            "aes-256-gcm",
            "rsa-oaep",
            "authEnveloped-data",
            "aes-256-gcm",
            "rsaesOaep",
        ),
    ];
    for (cipher, transport, smime_type, cms_cipher, cms_kt) in cases {
        let extra = format!("[seal]\ncipher = \"{cipher}\"\nkey_transport = \"{transport}\"\n");
        let (d, o) = seal_fixture("many-recipients.eml", &extra, &[]);
        assert!(o.status.success(), "{cipher}/{transport}: {}", stderr(&o));
        let ct = header(&o.stdout, "content-type").unwrap();
        assert!(ct.contains(&format!("smime-type={smime_type};")), "{ct}");
        let printed = cms_print(&d, &o.stdout);
        assert!(printed.contains(cms_cipher), "{cipher}: {printed}");
        assert_eq!(
            printed.matches(cms_kt).count(),
            6,
            "{transport}: one key transport per recipient"
        );
        for r in ["bob@example.com", "bulk02@example.com", "frank@example.com"] {
            let inner = openssl_decrypt(d.path(), &o.stdout, r)
                .unwrap_or_else(|e| panic!("{cipher}/{transport} as {r}: {e}"));
            openssl_verify(d.path(), &inner).unwrap();
        }
    }
}

#[test]
fn encrypt_to_sender_lets_the_sender_read_its_copy() {
    let (d, o) = seal_fixture("plain-text.eml", "", &[]);
    assert!(
        openssl_decrypt(d.path(), &o.stdout, "alice@example.com").is_err(),
        "off by default"
    );
    let (d, o) = seal_fixture("plain-text.eml", "[seal]\nencrypt_to_sender = true\n", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    openssl_decrypt(d.path(), &o.stdout, "alice@example.com").unwrap();
    openssl_decrypt(d.path(), &o.stdout, "bob@example.com").unwrap();
}

#[test]
fn missing_cert_sign_only_sends_a_signed_copy_to_the_rest() {
    let d = Dir::new();
    let config = d.config("[seal]\nmissing_cert = \"sign-only\"\n");
    let out = d.path().join("out");
    let o = run(bin(d.path())
        .arg("-c")
        .arg(&config)
        .arg("seal")
        .arg("--output-dir")
        .arg(&out)
        .arg(fixtures().join("eml/malformed/missing-cert.eml")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nocert@example.com"),
        "a warning names the address: {}",
        stderr(&o)
    );
    let enc = std::fs::read(out.join("0.eml")).unwrap();
    assert!(
        std::fs::read_to_string(out.join("0.env"))
            .unwrap()
            .contains("x-receiver: bob@example.com")
    );
    openssl_decrypt(d.path(), &enc, "bob@example.com").unwrap();
    let signed = std::fs::read(out.join("1.eml")).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("1.env"))
            .unwrap()
            .matches("x-receiver:")
            .count(),
        1
    );
    assert!(
        header(&signed, "content-type")
            .unwrap()
            .starts_with("multipart/signed")
    );
    openssl_verify(d.path(), &signed).unwrap();
}

#[test]
fn already_sealed_can_be_wrapped_on_request() {
    let (d, o) = seal_fixture(
        "already-signed.eml",
        "[seal]\nalready_sealed = \"seal\"\n",
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let inner = openssl_decrypt(d.path(), &o.stdout, "bob@example.com").unwrap();
    let content = openssl_verify(d.path(), &inner).unwrap();
    assert!(
        header(&content, "content-type")
            .unwrap()
            .starts_with("multipart/signed"),
        "the original signed entity is inside"
    );
}

#[test]
fn refused_certificates_and_keys_say_why() {
    let (_, o) = seal_fixture("plain-text.eml", "", &["--certs", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent"));

    let d = Dir::new();
    let seal_to = |to: &str| {
        let msg = d.write(
            "m.eml",
            format!("From: alice@example.com\nTo: {to}\nSubject: x\n\nhi\n").as_bytes(),
        );
        run(bin(d.path())
            .arg("-c")
            .arg(d.config(""))
            .arg("seal")
            .arg(&msg))
    };
    let o = seal_to("signonly@example.com");
    assert_eq!(o.status.code(), Some(65));
    assert!(
        stderr(&o).contains("signonly@example.com") && stderr(&o).contains("keyEncipherment"),
        "{}",
        stderr(&o)
    );

    // a private key others can read is refused, as ssh does
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        d.keys().join("alice@example.com.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let o = seal_to("bob@example.com");
    assert_eq!(o.status.code(), Some(65));
    assert!(
        stderr(&o).contains("readable by group or others (mode 0644)"),
        "{}",
        stderr(&o)
    );

    // an encrypted key without a passphrase file
    let d = Dir::new();
    std::fs::write(
        d.path().join("nopass.toml"),
        "keys = \"pki/keys\"\ncerts = \"pki/certs\"\n",
    )
    .unwrap();
    let o = run(bin(d.path())
        .args(["-c", "nopass.toml", "seal"])
        .arg(fixtures().join("eml/passphrase-sender.eml")));
    assert_eq!(o.status.code(), Some(65));
    assert!(
        stderr(&o).contains("encrypted and no key_passphrase_file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn exit_codes_for_missing_input_and_bad_config() {
    let d = Dir::new();
    let o = run(bin(d.path())
        .arg("-c")
        .arg(d.config(""))
        .args(["seal", "missing.eml"]));
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing.eml"));

    std::fs::write(d.path().join("bad.toml"), "kyes = \"pki/keys\"\n").unwrap();
    let o = run(bin(d.path()).args(["-c", "bad.toml", "seal", "-"]));
    assert_eq!(o.status.code(), Some(78));
    assert!(
        stderr(&o).contains("kyes") && stderr(&o).contains("bad.toml"),
        "{}",
        stderr(&o)
    );

    let o = run(bin(d.path()).args(["-c", "absent.toml", "seal", "-"]));
    assert_eq!(o.status.code(), Some(78));

    // SMIME_PICKUP_CONFIG is honoured, and - reads stdin
    let config = d.config("");
    let mut child = bin(d.path())
        .env("SMIME_PICKUP_CONFIG", &config)
        .args(["seal", "--sign", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"From: alice@example.com\nTo: bob@example.com\n\nhello\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    openssl_verify(d.path(), &o.stdout).unwrap();
}

#[test]
fn demo_runs_the_pipeline_on_the_corpus_without_touching_the_fixtures() {
    let d = Dir::new();
    let fixtures_status = || {
        std::process::Command::new("git")
            .args(["status", "--porcelain", "fixtures"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
            .stdout
    };
    let before = fixtures_status();
    let o = run(bin(d.path()).args(["demo", "--out", "out"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let good = cases(&fixtures().join("eml")).len();
    let bad = cases(&fixtures().join("eml/malformed")).len();
    assert!(
        text.contains(&format!("demo: {good} delivered, {bad} failed, 0 deferred")),
        "{text}"
    );
    // every refused input sits in failed/ with a reason naming the cause
    for (path, expect) in cases(&fixtures().join("eml/malformed")) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let failed = d.path().join("out/failed/malformed");
        assert_eq!(
            std::fs::read(failed.join(&name)).unwrap(),
            std::fs::read(&path).unwrap()
        );
        let reason = std::fs::read_to_string(failed.join(format!("{name}.reason"))).unwrap();
        assert!(
            reason.to_ascii_lowercase().contains(&expect.error.unwrap()),
            "{name}: {reason}"
        );
    }
    // the file the demo suggests opening opens as it says
    let sample = text
        .split_whitespace()
        .skip_while(|w| *w != "-in")
        .nth(1)
        .unwrap();
    let sealed = std::fs::read(d.path().join(sample)).unwrap();
    assert!(sealed.starts_with(b"x-sender: alice@example.com\r\nx-receiver: bob@example.com\r\n"));
    let inner = openssl_decrypt(d.path(), &sealed, "bob@example.com").unwrap();
    openssl_verify(d.path(), &inner).unwrap();
    // a second run replaces the first; the fixtures are untouched
    let o = run(bin(d.path()).args(["demo", "--out", "out"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(before, fixtures_status());
    // it refuses to clear a folder it did not make
    std::fs::create_dir(d.path().join("precious")).unwrap();
    let o = run(bin(d.path()).args(["demo", "--out", "precious"]));
    assert_eq!(o.status.code(), Some(74));
}
