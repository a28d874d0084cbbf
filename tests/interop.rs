//! The SMTP route against several real servers, each started by the test on 127.0.0.1: Postfix,
//! Python's aiosmtpd (strict about RFC 5321; here also refusing a repeated EHLO) and Exim, with and
//! without STARTTLS. Every delivered message must decrypt and verify with the openssl CLI. And a
//! server that refuses the session (EHLO) makes the route unhealthy; it never fails a message.

mod util;

use std::time::Duration;

use util::mta::*;
use util::servers::*;
use util::spool::*;
use util::*;

/// A few fixtures: plain text, 19 kB HTML, an 8-bit binary part, quoted-printable, and a copy to
/// two recipients (To + Cc). All are for bob@example.com among others.
const FIXTURES: [&str; 5] = [
    "plain-text",
    "html-19k",
    "binary-attachment-8bit",
    "lf-mixed-qp",
    "multipart-attachment",
];

fn drop_fixtures(s: &Setup) {
    for f in FIXTURES {
        let bytes = std::fs::read(fixtures().join(format!("eml/{f}.eml"))).unwrap();
        s.drop_message(&format!("{f}.eml"), &bytes);
    }
}

/// `once` with route = "smtp" and `smtp` (an `[smtp]` section): every fixture is delivered.
fn deliver_fixtures(smtp: &str, password: Option<&str>) -> Setup {
    let s = Setup::new(&format!("route = \"smtp\"\n{smtp}"));
    drop_fixtures(&s);
    let mut cmd = s.cmd("once");
    if let Some(p) = password {
        cmd.env("SMTP_PASSWORD", p);
    }
    let o = run(&mut cmd);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(
        out.contains(&format!(
            "{} delivered, 0 failed, 0 deferred",
            FIXTURES.len()
        )),
        "{out}"
    );
    assert!(!s.path("failed").exists() || list_files(&s.path("failed")).is_empty());
    s.assert_nothing_in_flight();
    s
}

/// Each stored message decrypts for bob and its signature verifies; every fixture arrived.
fn assert_all_open(s: &Setup, delivered: &[Vec<u8>]) {
    let mut ids: Vec<String> = delivered
        .iter()
        .map(|m| {
            let inner = openssl_decrypt(s.d.path(), m, "bob@example.com").unwrap();
            openssl_verify(s.d.path(), &inner).unwrap();
            header(m, "message-id").expect("a Message-ID")
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), FIXTURES.len(), "{ids:?}");
}

/// `check --smtp` with `smtp`: its exit code and the report's lines about SMTP (the test PKI's
/// expired signing key is a problem of its own: 66).
fn check_smtp(smtp: &str) -> (Option<i32>, String) {
    let s = Setup::new(&format!("route = \"smtp\"\n{smtp}"));
    let o = run(s.cmd("check").arg("--smtp"));
    let report = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    let lines: Vec<&str> = report.lines().filter(|l| l.contains("SMTP")).collect();
    (o.status.code(), lines.join("\n"))
}

/// The SMTP server passed `check --smtp` (warnings allowed).
fn assert_usable(code: Option<i32>, report: &str) {
    assert_ne!(code, Some(69), "{report}");
    assert!(
        report.starts_with("ok ") && !report.contains("PROBLEM"),
        "{report}"
    );
}

fn tls_section(port: u16, extra: &str) -> String {
    format!(
        "[smtp]\nhost = \"localhost\"\nport = {port}\ntls = \"starttls\"\ntls_ca = \"{}\"\n{extra}",
        pki().join("ca.pem").display()
    )
}

/// The number of files each server stores for the fixtures: Postfix and Exim write one per
/// recipient (multipart-attachment has two), aiosmtpd one per transaction.
const PER_RECIPIENT: usize = FIXTURES.len() + 1;

#[test]
fn postfix_with_starttls_and_auth() {
    let pf = Postfix::start();
    let s = deliver_fixtures(&postfix_section(&pf, ""), Some(SMTP_PASSWORD));
    assert_all_open(&s, &pf.wait_delivered(PER_RECIPIENT));
}

#[test]
fn postfix_without_tls() {
    let pf = Postfix::start_open();
    let s = deliver_fixtures(&smtp_section(pf.port, "tls = \"none\"\n"), None);
    assert_all_open(&s, &pf.wait_delivered(PER_RECIPIENT));
    assert!(!pf.log().contains("TLS connection established"), "no TLS");
}

#[test]
fn aiosmtpd_with_starttls_refusing_a_second_ehlo() {
    let aio = Aiosmtpd::start(AioOptions {
        tls: true,
        strict_ehlo: true,
        ..AioOptions::default()
    });
    let s = deliver_fixtures(&tls_section(aio.port, ""), None);
    assert_all_open(&s, &aio.wait_delivered(FIXTURES.len()));
    let (code, report) = check_smtp(&tls_section(aio.port, ""));
    assert_usable(code, &report);
    assert!(report.contains("connected (STARTTLS)"), "{report}");
}

/// The regression: a server that answers a second EHLO with 503 once sent every input to failed/.
#[test]
fn aiosmtpd_without_tls_refusing_a_second_ehlo() {
    let aio = Aiosmtpd::start(AioOptions {
        strict_ehlo: true,
        ..AioOptions::default()
    });
    let s = deliver_fixtures(&smtp_section(aio.port, ""), None);
    assert_all_open(&s, &aio.wait_delivered(FIXTURES.len()));
    // tls = "opportunistic" (the default) against a server without STARTTLS: a warning, not a problem
    let (code, report) = check_smtp(&smtp_section(aio.port, ""));
    assert_usable(code, &report);
    assert!(
        report.contains("warning SMTP") && report.contains("offers no STARTTLS"),
        "{report}"
    );
    // chosen deliberately: no warning
    let (code, report) = check_smtp(&smtp_section(aio.port, "tls = \"none\"\n"));
    assert_usable(code, &report);
    assert!(!report.contains("offers no STARTTLS"), "{report}");
}

#[test]
fn exim_with_starttls() {
    let exim = Exim::start(true);
    let s = deliver_fixtures(&tls_section(exim.port, ""), None);
    assert_all_open(&s, &exim.wait_delivered(PER_RECIPIENT));
    assert!(exim.log().contains("P=esmtps"), "{}", exim.log());
    // Exim offers PIPELINING and takes a repeated EHLO: the envelope is pipelined
    let (code, report) = check_smtp(&tls_section(exim.port, ""));
    assert_usable(code, &report);
    assert!(
        report.contains("connected (STARTTLS), offers PIPELINING"),
        "{report}"
    );
}

#[test]
fn exim_without_tls() {
    let exim = Exim::start(false);
    let s = deliver_fixtures(&smtp_section(exim.port, "tls = \"none\"\n"), None);
    assert_all_open(&s, &exim.wait_delivered(PER_RECIPIENT));
    assert!(exim.log().contains("P=esmtp "), "{}", exim.log());
    let (code, report) = check_smtp(&smtp_section(exim.port, ""));
    assert_usable(code, &report);
    assert!(report.contains("offers no STARTTLS"), "{report}");
}

/// A server that refuses EHLO: every input is deferred (none fails), `check --smtp` shows the reply,
/// and the daemon retries with backoff until the server takes them, each once.
#[test]
fn a_refused_session_defers_and_the_daemon_delivers_once_the_server_recovers() {
    let refusing = Aiosmtpd::start(AioOptions {
        ehlo_reply: Some("554 5.7.1 not now, not you"),
        ..AioOptions::default()
    });
    let port = refusing.port;
    let smtp = smtp_section(port, "");
    let s = Setup::new(&format!("route = \"smtp\"\nretry_max_seconds = 1\n{smtp}"));
    drop_fixtures(&s);
    let o = s.once();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(75), "{out}{}", stderr(&o));
    assert!(
        out.contains(&format!(
            "0 delivered, 0 failed, {} deferred",
            FIXTURES.len()
        )),
        "{out}"
    );
    assert!(
        stderr(&o).contains("SMTP route unhealthy") && stderr(&o).contains("not now, not you"),
        "{}",
        stderr(&o)
    );
    assert!(!s.path("failed").exists() || list_files(&s.path("failed")).is_empty());
    let (code, report) = check_smtp(&smtp);
    assert_eq!(code, Some(69), "{report}");
    assert!(
        report.contains("554") && report.contains("not now, not you"),
        "{report}"
    );

    // the daemon: unhealthy first, then the server recovers on the same port
    let mut child = s.start("run.log");
    s.wait_for_log("run.log", "SMTP route unhealthy");
    drop(refusing);
    let healthy = Aiosmtpd::start_on(port, AioOptions::default());
    let delivered = healthy.wait_delivered(FIXTURES.len());
    s.wait_for_log("run.log", "works again");
    signal(&child.0, "-TERM");
    assert!(wait_exit(&mut child.0, Duration::from_secs(20)).success());
    assert_eq!(healthy.delivered().len(), FIXTURES.len(), "each once");
    assert_all_open(&s, &delivered);
    assert!(!s.path("failed").exists() || list_files(&s.path("failed")).is_empty());
    s.assert_nothing_in_flight();
}
