//! The crypto floor on every core, for the end-to-end benchmark to compare against in the same run.
//!
//! `cargo bench --bench floor -- [FIXTURE] [THREADS] [SECONDS]` (defaults: html-19k.eml, all cores,
//! 5 s). Each row runs THREADS threads for SECONDS and prints operations per second, all threads
//! together:
//! - `rsa2048-sign`: one RSA-2048 PKCS#1 signature of a SHA-256 digest, the part no S/MIME signer
//!   can skip;
//! - `bare-seal`: the bare OpenSSL calls of `benches/seal.rs` (CMS sign, then encrypt to one
//!   recipient) over the fixture's canonical entity;
//! - `seal`: our whole `seal::seal` in memory (parse, canonical form, sign, MIME, encrypt, base64).
//!
//! Then the same three with P-256 keys made for the run from the test CA: an ECDSA P-256 signature
//! (`ecdsa-p256-sign`), and the bare calls and `seal::seal` from an ECDSA sender to an ECDH
//! recipient (`bare-seal-ec`, `seal-ec`), with the sealed sizes of both kinds.
//!
//! The last line is machine-readable for `benches/e2e.sh`: `floor <bare-seal msg/s> <seal msg/s>`.

mod common;

use std::time::{Duration, Instant};

use openssl::hash::MessageDigest;
use openssl::sign::Signer;
use smime_pickup::message::Limits;
use smime_pickup::seal::{self, Policy};
use smime_pickup::smime::certs::unix_now;

/// Runs `op` on `threads` threads for `secs` and returns the operations per second in all.
fn rate(threads: usize, secs: f64, op: &(dyn Fn() + Sync)) -> f64 {
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(secs);
    let total: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < until {
                        op();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let fixture = args.first().map_or("html-19k.eml", String::as_str);
    let threads = args.get(1).map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |t| t.parse().expect("THREADS is a number"),
    );
    let secs: f64 = args
        .get(2)
        .map_or(5.0, |t| t.parse().expect("SECONDS is a number"));

    let tmp = tempfile::tempdir().unwrap();
    let ring = common::keyring(tmp.path());
    let (key, cert) = common::signer();
    let input = common::message(fixture, 1);
    let parsed = smime_pickup::message::parse(&input, &Limits::NONE).unwrap();
    let bulk01 = vec![
        ring.certs
            .lookup("bulk01@example.com", unix_now())
            .unwrap()
            .clone(),
    ];
    let policy = Policy::default();

    let sign = rate(threads, secs, &|| {
        let mut s = Signer::new(MessageDigest::sha256(), &key).unwrap();
        s.update(b"the floor").unwrap();
        std::hint::black_box(s.sign_to_vec().unwrap());
    });
    let bare = rate(threads, secs, &|| {
        std::hint::black_box(common::bare_seal(&key, &cert, &parsed.inner, &bulk01));
    });
    let ours = rate(threads, secs, &|| {
        std::hint::black_box(
            seal::seal(&input, &policy, &Limits::NONE, &ring, unix_now()).unwrap(),
        );
    });
    // the same with P-256: ECDSA sender, ECDH recipient
    let (ec_key, ec_cert, ec_bob) = common::ec_pair(tmp.path());
    let ring = common::keyring(tmp.path());
    let ec_input = common::readdressed(&input, "ec-sender@example.com", "ec-bob@example.com");
    let ec_sign = rate(threads, secs, &|| {
        let mut s = Signer::new(MessageDigest::sha256(), &ec_key).unwrap();
        s.update(b"the floor").unwrap();
        std::hint::black_box(s.sign_to_vec().unwrap());
    });
    let ec_recipients = [ec_bob];
    let ec_bare = rate(threads, secs, &|| {
        std::hint::black_box(common::bare_seal(
            &ec_key,
            &ec_cert,
            &parsed.inner,
            &ec_recipients,
        ));
    });
    let ec_ours = rate(threads, secs, &|| {
        std::hint::black_box(
            seal::seal(&ec_input, &policy, &Limits::NONE, &ring, unix_now()).unwrap(),
        );
    });
    let size = |m: &[u8]| {
        let sealed = seal::seal(m, &policy, &Limits::NONE, &ring, unix_now()).unwrap();
        sealed[0].data.len()
    };
    println!("{fixture}, {threads} threads, {secs} s each:");
    println!("  rsa2048-sign    {sign:8.0} /s");
    println!("  bare-seal       {bare:8.0} msg/s");
    println!(
        "  seal            {ours:8.0} msg/s ({:.0} % of bare), {} bytes sealed",
        100.0 * ours / bare,
        size(&input)
    );
    println!(
        "  ecdsa-p256-sign {ec_sign:8.0} /s ({:.1}x RSA-2048)",
        ec_sign / sign
    );
    println!(
        "  bare-seal-ec    {ec_bare:8.0} msg/s ({:.2}x bare-seal)",
        ec_bare / bare
    );
    println!(
        "  seal-ec         {ec_ours:8.0} msg/s ({:.2}x seal), {} bytes sealed",
        ec_ours / ours,
        size(&ec_input)
    );
    println!("floor {bare:.0} {ours:.0}");
}
