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

/// Decrypts as `address` with openssl, verifies with openssl, and (when `gpg`) with gpgsm too.
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
    }
    signed
}

fn run_corpus(crlf: bool) {
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
