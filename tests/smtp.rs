//! The SMTP route against real servers: a private Postfix (STARTTLS, SASL, Maildir) for correctness,
//! smtp-sink for fault injection and counts.

mod util;

use std::time::Duration;

use util::mta::*;
use util::spool::*;
use util::*;

fn send_cmd(s: &Setup, file: &std::path::Path) -> std::process::Command {
    let mut c = bin(s.d.path());
    c.arg("-c").arg(&s.config).arg("send").arg(file);
    c
}

#[test]
fn send_seals_and_injects_over_starttls_with_auth_like_the_old_tool() {
    let pf = Postfix::start();
    let s = Setup::new(&postfix_section(&pf, ""));
    let input = fixtures().join("eml/bcc.eml");
    // the old tool's environment variables and spellings
    let o = run(send_cmd(&s, &input)
        .env("SMTP_PASSWORD", SMTP_PASSWORD)
        .args(["--send_smtp"]));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}\n{}", stderr(&o), pf.log());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "Opened SMTP connection (STARTTLS) to localhost, port {}, user=\"{SMTP_USER}\", password=\"********\"",
            pf.port
        )
    );
    assert_eq!(
        lines[1],
        format!(
            "Sending {} From: alice@example.com To: bob@example.com, dave@example.net",
            input.display()
        )
    );
    assert!(
        lines[2].starts_with("OK - in ") && lines[2].ends_with(" seconds"),
        "{}",
        lines[2]
    );
    assert_eq!(
        out.matches("OK - in ").count(),
        3,
        "Bcc copies go as their own transactions"
    );
    assert!(!out.contains(SMTP_PASSWORD) && !stderr(&o).contains(SMTP_PASSWORD));

    // Postfix delivered one file per recipient; each opens for its recipient
    let delivered = pf.wait_delivered(4);
    let for_bob = delivered
        .iter()
        .find(|m| header(m, "delivered-to").as_deref() == Some("bob@example.com"))
        .unwrap();
    let inner = openssl_decrypt(s.d.path(), for_bob, "bob@example.com").unwrap();
    openssl_verify(s.d.path(), &inner).unwrap();
    let for_frank = delivered
        .iter()
        .find(|m| header(m, "delivered-to").as_deref() == Some("frank@example.com"))
        .unwrap();
    assert!(
        openssl_decrypt(s.d.path(), for_frank, "bob@example.com").is_err(),
        "the Bcc copy is for frank alone"
    );
    assert!(pf.log().contains("sasl_method=PLAIN, sasl_username=relay"));
}

#[test]
fn send_reports_server_and_setup_errors_with_their_codes() {
    let pf = Postfix::start();
    let s = Setup::new(&postfix_section(&pf, ""));
    let input = fixtures().join("eml/plain-text.eml");

    let o = run(send_cmd(&s, &input).env("SMTP_PASSWORD", "wrong-password"));
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("authentication as \"relay\" failed") && stderr(&o).contains("535"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("wrong-password")
            && !String::from_utf8_lossy(&o.stdout).contains("wrong-password")
    );

    // a CA that did not issue the server's certificate: refused, unless verification is turned off
    let other = Setup::new(&postfix_section(&pf, "").replace("ca.pem", "other-ca.pem"));
    let o = run(send_cmd(&other, &input).env("SMTP_PASSWORD", SMTP_PASSWORD));
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    assert!(
        stderr(&o).to_ascii_lowercase().contains("certificate"),
        "{}",
        stderr(&o)
    );
    let lax =
        Setup::new(&postfix_section(&pf, "tls_verify = false\n").replace("ca.pem", "other-ca.pem"));
    let o = run(send_cmd(&lax, &input).env("SMTP_PASSWORD", SMTP_PASSWORD));
    assert!(o.status.success(), "{}", stderr(&o));

    // refused recipient: code and text printed, exit 65
    let d = Dir::new();
    let msg = d.write(
        "m.eml",
        format!("From: alice@example.com\nTo: {REFUSED}\nSubject: x\n\nhi\n").as_bytes(),
    );
    let signed_only = Setup::new(&postfix_section(&pf, ""));
    let o = run(bin(d.path())
        .arg("-c")
        .arg(&signed_only.config)
        .args(["send", "--sign"])
        .arg(&msg)
        .env("SMTP_PASSWORD", SMTP_PASSWORD));
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains(&format!("Refused {REFUSED}: permanent error (550)"))
    );

    // no server configured at all
    let none = Setup::new("");
    let o = run(&mut send_cmd(&none, &input));
    assert_eq!(o.status.code(), Some(78));
    assert!(
        stderr(&o).contains("SMTP_HOST") && stderr(&o).contains("[smtp]"),
        "{}",
        stderr(&o)
    );

    // authentication is never offered over clear text unless tls = "none" says so
    let sink = Sink::start(&[]);
    let clear = Setup::new(&smtp_section(sink.port, "user = \"u\"\npassword = \"p\"\n"));
    let o = run(&mut send_cmd(&clear, &input));
    assert_eq!(o.status.code(), Some(69));
    assert!(
        stderr(&o).contains("refusing to send the password over an unencrypted connection"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_daemon_delivers_through_postfix_and_quarantines_refused_recipients() {
    let pf = Postfix::start();
    let s = Setup::new(&format!("route = \"smtp\"\n{}", postfix_section(&pf, "")));
    for n in 0..10 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    s.drop_message(
        "partial.eml",
        format!("From: alice@example.com\nTo: bob@example.com, {REFUSED}\nSubject: p\nMessage-ID: <partial@t>\n\nhi\n")
            .as_bytes(),
    );
    let o = run(s.cmd("once").env("SMTP_PASSWORD", SMTP_PASSWORD));
    // nobody@example.com has no certificate: sign-only is needed to reach the server with it
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    let delivered = pf.wait_delivered(10);
    for m in &delivered {
        let inner = openssl_decrypt(s.d.path(), m, "bob@example.com").unwrap();
        openssl_verify(s.d.path(), &inner).unwrap();
    }

    let s = Setup::new(&format!(
        "route = \"smtp\"\n[seal]\nmissing_cert = \"sign-only\"\n{}",
        postfix_section(&pf, "")
    ));
    s.drop_message(
        "partial.eml",
        format!("From: alice@example.com\nTo: bob@example.com, {REFUSED}\nSubject: p\nMessage-ID: <partial@t>\n\nhi\n")
            .as_bytes(),
    );
    let o = run(s.cmd("once").env("SMTP_PASSWORD", SMTP_PASSWORD));
    assert!(o.status.success(), "{}\n{}", stderr(&o), pf.log());
    let reason = std::fs::read_to_string(s.path("failed/partial.eml.reason")).unwrap();
    assert!(
        reason.contains(REFUSED) && reason.contains("550"),
        "{reason}"
    );
    assert!(
        pf.wait_delivered(11)
            .iter()
            .any(|m| header(m, "message-id").as_deref() == Some("<partial@t>"))
    );
    s.assert_nothing_in_flight();
}

#[test]
fn a_wrong_password_keeps_the_input() {
    let pf = Postfix::start();
    let s = Setup::new(&format!("route = \"smtp\"\n{}", postfix_section(&pf, "")));
    s.drop_message("m.eml", &message(1));
    let o = run(s.cmd("once").env("SMTP_PASSWORD", "nope"));
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 delivered, 0 failed, 1 deferred"));
    assert!(stderr(&o).contains("authentication"), "{}", stderr(&o));
    assert!(
        !s.path("failed").exists()
            || std::fs::read_dir(s.path("failed"))
                .unwrap()
                .next()
                .is_none()
    );
    // kept: the next run with the right password delivers it
    let o = run(s.cmd("once").env("SMTP_PASSWORD", SMTP_PASSWORD));
    assert!(o.status.success(), "{}", stderr(&o));
    pf.wait_delivered(1);
}

/// Runs the daemon against a faulty sink, then a healthy one on the same port: nothing may be lost,
/// nothing sent twice.
fn fault_then_recover(faults: &[&str], expect_failed: bool) {
    let total = 30;
    let sink = Sink::start(faults);
    let s = Setup::new(&format!(
        "route = \"smtp\"\nretry_max_seconds = 1\n{}",
        smtp_section(sink.port, "timeout = 5\n")
    ));
    for n in 0..total {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    let mut child = s.start("run.log");
    std::thread::sleep(Duration::from_millis(2500));
    if expect_failed {
        s.wait_for("quarantine", Duration::from_secs(20), || {
            s.path("failed").exists()
                && std::fs::read_dir(s.path("failed")).unwrap().count() == 2 * total
        });
        let reason = std::fs::read_to_string(s.path("failed/m0.eml.reason")).unwrap();
        assert!(
            reason.contains("500"),
            "the server's reply is in the reason: {reason}"
        );
    } else {
        if !faults.contains(&".") {
            assert!(
                sink.message_ids().is_empty(),
                "{faults:?}: nothing accepted yet"
            );
        }
        assert!(
            !s.path("failed").exists() || std::fs::read_dir(s.path("failed")).unwrap().count() == 0
        );
        let sink = sink.restart(&[]);
        s.wait_for("all messages", Duration::from_secs(40), || {
            sink.message_ids().len() >= total
        });
        std::thread::sleep(Duration::from_millis(500));
        let mut ids = sink.message_ids();
        ids.sort();
        let n = ids.len();
        ids.dedup();
        assert_eq!(
            (n, ids.len()),
            (total, total),
            "{faults:?}: every message once"
        );
        signal(&child, "-TERM");
        assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
        s.assert_nothing_in_flight();
        return;
    }
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
}

#[test]
fn temporary_refusals_and_dropped_connections_defer_then_deliver_once() {
    for faults in [
        &["-r", "MAIL"][..],
        &["-r", "RCPT"],
        &["-r", "DATA"],
        &["-r", "."],
        &["-q", "."],
        &["-q", "MAIL"],
        // a server without PIPELINING: one command at a time
        &["-p", "-r", "RCPT"],
        &["-p", "-q", "."],
        // the session refused: the route's problem, never the message's
        &["-f", "EHLO"],
        &["-r", "EHLO"],
        &["-f", "CONNECT"],
    ] {
        fault_then_recover(faults, false);
    }
}

#[test]
fn permanent_refusals_quarantine_with_the_reply() {
    for faults in [
        &["-f", "MAIL"][..],
        &["-f", "RCPT"],
        &["-f", "."],
        &["-p", "-f", "RCPT"],
    ] {
        fault_then_recover(faults, true);
    }
}

#[test]
fn pickup_then_smtp_follows_the_pickup_directory() {
    let sink = Sink::start(&[]);
    let s = Setup::new(&smtp_section(sink.port, ""));
    std::fs::remove_dir(s.path("pickup")).unwrap();
    let mut child = s.start("run.log");
    let mut n = 0;
    let mut drop_batch = |count: usize| {
        for _ in 0..count {
            s.drop_message(&format!("m{n}.eml"), &message(n));
            n += 1;
        }
    };
    drop_batch(5);
    s.wait_for(
        "SMTP while pickup is missing",
        Duration::from_secs(20),
        || sink.message_ids().len() == 5,
    );
    std::fs::create_dir(s.path("pickup")).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    drop_batch(5);
    s.wait_for("pickup once it exists", Duration::from_secs(20), || {
        s.pickup_files().len() == 5
    });
    let consumed = s.path("consumed");
    std::fs::create_dir(&consumed).unwrap();
    for f in s.pickup_files() {
        std::fs::rename(&f, consumed.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::remove_dir(s.path("pickup")).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    drop_batch(5);
    s.wait_for("SMTP again", Duration::from_secs(20), || {
        sink.message_ids().len() == 10
    });
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());

    let mut ids = sink.message_ids();
    for f in list_files(&consumed) {
        ids.push(header(&std::fs::read(f).unwrap(), "message-id").unwrap());
    }
    ids.sort();
    let total = ids.len();
    ids.dedup();
    assert_eq!(
        (total, ids.len()),
        (15, 15),
        "every input exactly once across both routes"
    );
    let log = std::fs::read_to_string(s.path("run.log")).unwrap();
    assert_eq!(
        log.matches("route: SMTP to").count(),
        2,
        "each switch logged once: {log}"
    );
    assert_eq!(
        log.matches("route: back to the pickup directory").count(),
        1,
        "{log}"
    );
}

#[test]
fn a_copy_to_many_recipients_goes_out_a_hundred_per_transaction() {
    let sink = Sink::start(&[]);
    // signed only: no certificates needed for 250 recipients
    let s = Setup::new(&format!(
        "route = \"smtp\"\n{}[seal]\nencrypt = false\n",
        smtp_section(sink.port, "")
    ));
    let to: Vec<String> = (0..250).map(|i| format!("r{i:03}@example.net")).collect();
    s.drop_message(
        "many.eml",
        format!(
            "From: alice@example.com\nTo: {}\nSubject: many\nMessage-ID: <many@test>\n\nhello\n",
            to.join(",\n ")
        )
        .as_bytes(),
    );
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut per_transaction = Vec::new();
    let mut all = Vec::new();
    for dump in sink.dumps() {
        let text = String::from_utf8_lossy(&std::fs::read(dump).unwrap()).into_owned();
        let rcpts: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("X-Rcpt-Args: <"))
            .map(|l| l.trim_end_matches('>').to_string())
            .collect();
        per_transaction.push(rcpts.len());
        all.extend(rcpts);
    }
    per_transaction.sort();
    assert_eq!(per_transaction, [50, 100, 100], "three transactions");
    all.sort();
    let mut want = to.clone();
    want.sort();
    assert_eq!(all, want, "every recipient once");
    s.assert_nothing_in_flight();
}
