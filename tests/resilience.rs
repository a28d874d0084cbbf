//! Resilience when the world is hostile or odd: certificates with absurd address counts, settings at
//! their limits, an interrupted `once`, a full failed folder.

mod util;

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder};

use util::spool::*;
use util::*;

/// A certificate for bob's key, issued by the test CA, certifying `n` addresses `prefix<i>@example.com`.
fn cert_for_addresses(n: usize, prefix: &str) -> Vec<u8> {
    let read = |p: &str| std::fs::read(pki().join(p)).unwrap();
    let ca = openssl::x509::X509::from_pem(&read("ca.pem")).unwrap();
    let ca_key = PKey::private_key_from_pem(&read("ca.key")).unwrap();
    let key = PKey::private_key_from_pem(&read("private/bob@example.com.key")).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", &format!("{prefix} list"))
        .unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = openssl::bn::BigNum::from_u32(4242 + n as u32).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(ca.subject_name()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(365).unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.append_extension(ExtendedKeyUsage::new().email_protection().build().unwrap())
        .unwrap();
    let mut san = SubjectAlternativeName::new();
    for i in 0..n {
        san.email(&format!("{prefix}{i}@example.com"));
    }
    let san = san.build(&b.x509v3_context(Some(&ca), None)).unwrap();
    b.append_extension(san).unwrap();
    b.sign(&ca_key, MessageDigest::sha256()).unwrap();
    b.build().to_pem().unwrap()
}

/// Runs the binary with its address space capped at `limit_mb` (prlimit, util-linux).
fn capped(s: &Setup, limit_mb: u64, args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new("prlimit");
    c.arg(format!("--as={}", limit_mb << 20))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_smime-pickup"))
        .arg("-c")
        .arg(&s.config)
        .args(args)
        .current_dir(s.d.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info");
    run(&mut c)
}

#[test]
fn a_certificate_with_thousands_of_addresses_is_indexed_in_linear_memory() {
    let s = Setup::new("");
    let certs = s.path("pki/certs");
    std::fs::write(certs.join("huge.pem"), cert_for_addresses(10_000, "huge")).unwrap();
    std::fs::write(certs.join("team.pem"), cert_for_addresses(1_000, "team")).unwrap();
    // a clone of the address list per address was 5.5 GB for 10,000 addresses and 65 MB for 1,000;
    // linear indexing fits far below this cap (the binary alone maps some tens of MB)
    let o = capped(&s, 400, &["check"]);
    let report = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
    assert!(
        report.contains("huge.pem: a certificate for 10000 addresses (over 1000): not used"),
        "{report}"
    );
    // the 1,000-address certificate is used: a message to 300 of its addresses is sealed with one
    // RecipientInfo, not 300
    let to: Vec<String> = (0..300).map(|i| format!("team{i}@example.com")).collect();
    let msg = format!(
        "From: alice@example.com\nTo: {}\nSubject: all\nMessage-ID: <all@test>\n\nhello team\n",
        to.join(", ")
    );
    s.drop_message("team.eml", msg.as_bytes());
    s.drop_message("one.eml", &message(1)); // to bob, the same key, one recipient
    let o = capped(&s, 400, &["once"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let files: Vec<Vec<u8>> = s
        .pickup_files()
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    assert_eq!(files.len(), 2);
    let team = files
        .iter()
        .find(|b| header(b, "message-id").as_deref() == Some("<all@test>"))
        .unwrap();
    let der = b64_decode(body_of(team));
    let printed = std::process::Command::new("openssl")
        .args(["cms", "-cmsout", "-print", "-inform", "DER"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&der)?;
            child.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&printed.stdout);
    assert_eq!(text.matches("d.ktri:").count(), 1, "{text}");
    // and it opens with bob's key, the one behind the team certificate
    std::fs::write(s.path("team.eml.sealed"), team).unwrap();
    let o = run(std::process::Command::new("openssl")
        .args(["cms", "-decrypt", "-binary", "-in", "team.eml.sealed"])
        .arg("-recip")
        .arg(s.path("pki/certs/team.pem"))
        .arg("-inkey")
        .arg(pki().join("private/bob@example.com.key"))
        .current_dir(s.d.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let content = openssl_verify(s.d.path(), &o.stdout).unwrap();
    assert!(String::from_utf8_lossy(&content).contains("hello team"));
}
