//! The sealing path next to the bare OpenSSL calls on the same bytes, so the ratio shows our overhead.
//!
//! `cargo bench --bench seal`. Cases: 19 KB and 577 KB messages, 1 and 10 recipients. "bare" is
//! `CmsContentInfo::sign` (detached) over the canonical entity plus `CmsContentInfo::encrypt` of the
//! signed entity: the crypto floor. "seal" is the whole `seal::seal` call: parse, canonicalise, sign,
//! wrap, encrypt, base64.

mod common;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use openssl::x509::X509;
use smime_pickup::message::Limits;
use smime_pickup::seal::{self, Policy};
use smime_pickup::smime::certs::unix_now;

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let ring = common::keyring(tmp.path());
    let (key, cert) = common::signer();
    let policy = Policy::default();
    let mut group = c.benchmark_group("seal");
    for (fixture, label) in [("html-19k.eml", "19KB"), ("large-577k.eml", "577KB")] {
        for n in [1usize, 10] {
            let input = common::message(fixture, n);
            let parsed = smime_pickup::message::parse(&input, &Limits::NONE).unwrap();
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
                |b, inner| b.iter(|| common::bare_seal(&key, &cert, inner, &recipients)),
            );
            group.bench_with_input(BenchmarkId::new("seal", &id), &input, |b, input| {
                b.iter(|| seal::seal(input, &policy, &Limits::NONE, &ring, unix_now()).unwrap())
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
