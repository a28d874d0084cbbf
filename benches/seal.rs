//! The sealing path next to the bare OpenSSL calls on the same bytes, so the ratio shows our overhead.
//!
//! `cargo bench --bench seal`. Cases: 19 KB and 577 KB messages, 1 and 10 recipients. "bare" is
//! `CmsContentInfo::sign` (detached) over the canonical entity plus `CmsContentInfo::encrypt` of the
//! signed entity: the crypto floor. "seal" is the whole `seal::seal` call: parse, canonicalise, sign,
//! wrap, encrypt, base64.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::pkey::PKey;
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::X509;
use smime_pickup::config::Config;
use smime_pickup::seal::{self, Keyring, Policy};
use smime_pickup::smime::certs::unix_now;

fn keyring(tmp: &Path) -> Keyring {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
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
fn message(fixture: &str, n: usize) -> Vec<u8> {
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

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let ring = keyring(tmp.path());
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pki");
    let key = PKey::private_key_from_pem(
        &std::fs::read(fixtures.join("private/alice@example.com.key")).unwrap(),
    )
    .unwrap();
    let cert =
        X509::from_pem(&std::fs::read(fixtures.join("private/alice@example.com.crt")).unwrap())
            .unwrap();
    let policy = Policy::default();
    let mut group = c.benchmark_group("seal");
    for (fixture, label) in [("html-19k.eml", "19KB"), ("large-577k.eml", "577KB")] {
        for n in [1usize, 10] {
            let input = message(fixture, n);
            let parsed = smime_pickup::message::parse(&input, usize::MAX).unwrap();
            let recipients: Vec<X509> = (1..=n)
                .map(|i| {
                    ring.certs
                        .lookup(&format!("bulk{i:02}@example.com"), unix_now())
                        .unwrap()
                        .clone()
                })
                .collect();
            group.throughput(Throughput::Bytes(input.len() as u64));
            let id = format!("{label}/{n}rcpt");
            group.bench_with_input(
                BenchmarkId::new("bare-openssl", &id),
                &parsed.inner,
                |b, inner| {
                    b.iter(|| {
                        let sig = CmsContentInfo::sign(
                            Some(&cert),
                            Some(&key),
                            None,
                            Some(inner),
                            CMSOptions::DETACHED | CMSOptions::BINARY,
                        )
                        .unwrap()
                        .to_der()
                        .unwrap();
                        let mut signed = inner.clone();
                        signed.extend_from_slice(&sig);
                        let mut stack = Stack::new().unwrap();
                        for r in &recipients {
                            stack.push(r.clone()).unwrap();
                        }
                        CmsContentInfo::encrypt(
                            &stack,
                            &signed,
                            Cipher::aes_256_cbc(),
                            CMSOptions::BINARY,
                        )
                        .unwrap()
                        .to_der()
                        .unwrap()
                    })
                },
            );
            group.bench_with_input(BenchmarkId::new("seal", &id), &input, |b, input| {
                b.iter(|| seal::seal(input, &policy, usize::MAX, &ring, unix_now()).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
