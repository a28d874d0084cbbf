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

/// A tmpfs mounted on `dir` for the test's lifetime (tests run as root, as CI does).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let o = run(std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir));
        assert!(
            o.status.success(),
            "mount tmpfs (the tests run as root, as CI does): {}",
            stderr(&o)
        );
        Tmpfs(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let o = run(std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0));
        assert!(o.status.success(), "remount: {}", stderr(&o));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_failed_folder_keeps_inputs_whole_and_names_stable() {
    let s = Setup::new("");
    let full = Tmpfs::mount(&s.path("failed"), "64k");
    // refused inputs (no From), one larger than the whole folder
    let big = format!("Subject: big\n\n{}\n", "x".repeat(200_000));
    s.drop_message("bad-big.eml", big.as_bytes());
    for n in 0..5 {
        s.drop_message(&format!("bad-{n}.eml"), b"Subject: no from\n\nbody\n");
    }
    s.drop_message("good.eml", &message(1));
    for attempt in 0..3 {
        let o = s.once();
        assert_ne!(
            o.status.code(),
            Some(0),
            "attempt {attempt}: {}",
            stderr(&o)
        );
        // nothing partial: no empty reason, no truncated input, no temporary left
        for f in list_files(&s.path("failed")) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "temporary left: {name}");
            let len = std::fs::metadata(&f).unwrap().len();
            if let Some(input) = name.strip_suffix(".reason") {
                assert!(len > 0, "empty reason {name}");
                assert!(
                    s.path("failed").join(input).exists(),
                    "orphan reason {name}"
                );
            } else {
                assert!(
                    name.starts_with("bad-") && len < 100,
                    "truncated or misplaced: {name}"
                );
            }
        }
        // the big one is still claimed or in the spool, whole
        let kept: Vec<_> = list_files(&s.path("spool"))
            .into_iter()
            .filter(|p| std::fs::metadata(p).unwrap().len() > 200_000)
            .collect();
        assert_eq!(
            kept.len(),
            1,
            "attempt {attempt}: the big input is kept whole"
        );
    }
    assert_eq!(s.delivered_ids().len(), 1, "good mail is not held up");
    // room again: everything lands under its own name, one reason each
    full.resize("8m");
    let o = s.once();
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    let mut names: Vec<String> = list_files(&s.path("failed"))
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = (0..5)
        .flat_map(|n| [format!("bad-{n}.eml"), format!("bad-{n}.eml.reason")])
        .chain(["bad-big.eml".to_string(), "bad-big.eml.reason".to_string()])
        .collect();
    want.sort();
    assert_eq!(names, want);
    assert_eq!(
        std::fs::read(s.path("failed/bad-big.eml")).unwrap(),
        big.as_bytes(),
        "whole"
    );
    s.assert_nothing_in_flight();
}

#[test]
fn an_interrupted_once_says_so_and_exits_75() {
    let s = Setup::on_tmpfs("");
    let total = 2000;
    for n in 0..total {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    let child = s
        .cmd("once")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    // interrupted mid-drain, by progress
    s.wait_for(
        "the first 50 deliveries",
        std::time::Duration::from_secs(60),
        || s.pickup_files().len() >= 50,
    );
    signal(&child, "-INT");
    let status = wait_exit(&mut child, std::time::Duration::from_secs(30));
    let mut out = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let delivered = s.pickup_files().len();
    assert!(delivered < total, "the drain finished before the interrupt");
    assert_eq!(status.code(), Some(75), "{out}");
    assert!(
        out.contains(&format!("{delivered} delivered")) && out.contains("interrupted"),
        "{out}"
    );
    // the rest is where it was, and a second run finishes it
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.delivered_ids().len(), total);
}

#[test]
fn no_usable_signing_key_is_said_loudly() {
    let s = Setup::new("");
    let keys = s.path("pki/keys");
    for entry in std::fs::read_dir(&keys).unwrap() {
        let p = entry.unwrap().path();
        if !p.to_string_lossy().contains("oldsender") {
            std::fs::remove_file(p).unwrap(); // only the expired identity is left
        }
    }
    s.drop_message("m.eml", &message(1));
    let o = s.once();
    assert_eq!(o.status.code(), Some(65));
    assert!(
        stderr(&o).contains("no usable signing key"),
        "{}",
        stderr(&o)
    );
    let o = run(&mut s.cmd("check"));
    assert_eq!(o.status.code(), Some(66));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("none of the 1 signing keys is usable"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn settings_out_of_range_are_refused_by_name() {
    for (setting, key) in [
        ("workers = 100000", "workers"),
        ("workers = 9223372036854775807", "workers"),
        ("rescan_seconds = 9223372036854775807", "rescan_seconds"),
        ("settle_ms = 9223372036854775807", "settle_ms"),
    ] {
        let s = Setup::new(&format!("{setting}\n"));
        s.drop_message("m.eml", &message(1));
        for cmd in ["check", "once", "run"] {
            let o = run(&mut s.cmd(cmd));
            let out = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
            assert_eq!(o.status.code(), Some(78), "{cmd} {setting}: {out}");
            assert!(out.contains(key) && out.contains("out of range"), "{out}");
            assert!(!out.contains("panicked"), "{out}");
        }
        assert!(s.path("spool/m.eml").exists());
    }
}

#[test]
fn a_spool_replaced_under_a_running_daemon_is_watched_again() {
    // work outside the spool (beside it, same filesystem): the daemon carries on
    let s = Setup::new("rescan_seconds = 1\nwork = \"work\"\n");
    let mut child = s.start("run.log");
    s.drop_message("a.eml", &message(1));
    s.wait_for(
        "the first delivery",
        std::time::Duration::from_secs(20),
        || s.delivered_ids().len() == 1,
    );
    std::fs::rename(s.path("spool"), s.path("old-spool")).unwrap();
    std::fs::create_dir(s.path("spool")).unwrap();
    s.wait_for_log("run.log", "was replaced by a new one; watching it");
    for n in 2..22 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    s.wait_for(
        "20 more deliveries",
        std::time::Duration::from_secs(30),
        || s.delivered_ids().len() == 21,
    );
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, std::time::Duration::from_secs(20)).success());
}

#[test]
fn a_vanished_work_folder_stops_the_daemon_with_the_reason_and_a_restart_recovers() {
    for replace_spool in [false, true] {
        let s = Setup::new("rescan_seconds = 1\n");
        let mut child = s.start("run.log");
        s.drop_message("a.eml", &message(1));
        s.wait_for(
            "the first delivery",
            std::time::Duration::from_secs(20),
            || s.delivered_ids().len() == 1,
        );
        if replace_spool {
            // the default work folder lives inside the spool and leaves with it
            std::fs::rename(s.path("spool"), s.path("old-spool")).unwrap();
            std::fs::create_dir(s.path("spool")).unwrap();
        } else {
            std::fs::remove_dir_all(s.path("spool/.smime-pickup")).unwrap();
        }
        let status = wait_exit(&mut child, std::time::Duration::from_secs(30));
        assert_eq!(status.code(), Some(74), "replace_spool {replace_spool}");
        let log = std::fs::read_to_string(s.path("run.log")).unwrap();
        assert!(
            log.contains("the work folder") && log.contains("is gone"),
            "{log}"
        );
        // systemd restarts it: new inputs are delivered
        for n in 2..12 {
            s.drop_message(&format!("m{n}.eml"), &message(n));
        }
        let o = s.once();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(s.delivered_ids().len(), 11);
    }
}
