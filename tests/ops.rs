//! Running as a service: the systemd unit passes `systemd-analyze verify`, and the daemon speaks the
//! notify protocol (READY, STATUS, WATCHDOG, STOPPING) to a NOTIFY_SOCKET of ours.

mod util;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use util::spool::*;
use util::*;

#[test]
fn the_unit_file_verifies() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/smime-pickup.service"),
    )
    .unwrap()
    .replace("/usr/bin/smime-pickup", env!("CARGO_BIN_EXE_smime-pickup"));
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "UMask=0077",
    ] {
        assert!(unit.contains(needed), "{needed}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smime-pickup.service");
    std::fs::write(&path, unit).unwrap();
    let o = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_daemon_notifies_systemd() {
    let s = Setup::new("");
    let sock_path = s.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = {
        let log = std::fs::File::create(s.path("run.log")).unwrap();
        Running(
            s.cmd("run")
                .env("NOTIFY_SOCKET", &sock_path)
                .env("WATCHDOG_USEC", "400000")
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let mut seen = String::new();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(10)
        && !(seen.contains("READY=1") && seen.contains("WATCHDOG=1") && seen.contains("STATUS="))
    {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            seen.push('\n');
        }
    }
    assert!(seen.contains("READY=1"), "{seen}");
    assert!(
        seen.contains("STATUS=0 delivered, 0 failed, 0 deferred"),
        "{seen}"
    );
    assert!(seen.contains("WATCHDOG=1"), "{seen}");
    signal(&child, "-TERM");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) && !seen.contains("STOPPING=1") {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(seen.contains("STOPPING=1"), "{seen}");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
}

fn check(s: &Setup, extra: &[&str]) -> (i32, String) {
    let o = run(bin(s.d.path())
        .arg("-c")
        .arg(&s.config)
        .arg("check")
        .args(extra));
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o),
    )
}

#[test]
fn check_reports_each_problem_by_name() {
    let s = Setup::new("");
    std::fs::remove_file(s.d.keys().join("oldsender@example.com.pem")).unwrap();
    let (code, report) = check(&s, &[]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("0 problems"), "{report}");
    assert!(
        report.contains("signing key alice@example.com: usable until 2124-01-01"),
        "{report}"
    );
    assert!(
        report.contains("expired@example.com: no usable certificate")
            && report.contains("expired on 2021-01-01"),
        "{report}"
    );

    // an expired signing identity, a key others can read
    std::fs::copy(
        pki().join("keys/oldsender@example.com.pem"),
        s.d.keys().join("oldsender@example.com.pem"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        s.d.keys().join("oldsender@example.com.pem"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let (code, report) = check(&s, &[]);
    assert_eq!(code, 66, "{report}");
    assert!(
        report.contains(
            "oldsender@example.com.pem: private key readable by group or others (mode 0640)"
        ),
        "{report}"
    );

    // a missing folder
    std::fs::remove_dir(s.path("pickup")).unwrap();
    let (code, report) = check(&s, &[]);
    assert_eq!(code, 66);
    assert!(
        report.contains("PROBLEM pickup") && report.contains("No such file"),
        "{report}"
    );

    // configuration errors name the key
    std::fs::write(&s.config, "spool = \"spool\"\nbogus_key = 1\n").unwrap();
    let (code, report) = check(&s, &[]);
    assert_eq!(code, 78);
    assert!(report.contains("bogus_key"), "{report}");
    std::fs::write(&s.config, "keys = \"pki/keys\"\ncerts = \"pki/certs\"\n").unwrap();
    let (code, report) = check(&s, &[]);
    assert_eq!(code, 78);
    assert!(report.contains("`spool` is not set"), "{report}");
}

#[test]
fn check_smtp_connects_verifies_and_authenticates() {
    let pf = util::mta::Postfix::start();
    let s = Setup::new(&util::mta::postfix_section(&pf, ""));
    std::fs::remove_file(s.d.keys().join("oldsender@example.com.pem")).unwrap();
    let ok = run(bin(s.d.path())
        .arg("-c")
        .arg(&s.config)
        .args(["check", "--smtp"])
        .env("SMTP_PASSWORD", util::mta::SMTP_PASSWORD));
    let report = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{report}");
    assert!(
        report.contains("connected (STARTTLS, authenticated as \"relay\")"),
        "{report}"
    );
    let bad = run(bin(s.d.path())
        .arg("-c")
        .arg(&s.config)
        .args(["check", "--smtp"])
        .env("SMTP_PASSWORD", "nope"));
    assert_eq!(bad.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("authentication as \"relay\" failed"));
}

#[test]
fn metrics_count_what_happened() {
    let s = Setup::new("metrics_file = \"metrics.prom\"\n");
    let good = s.copy_fixtures("eml", "");
    std::fs::create_dir(s.path("spool/bad")).unwrap();
    for name in [
        "empty",
        "garbage",
        "no-from",
        "unknown-sender",
        "expired-sender",
        "expired-cert",
        "missing-cert",
    ] {
        std::fs::copy(
            fixtures().join(format!("eml/malformed/{name}.eml")),
            s.path(&format!("spool/bad/{name}.eml")),
        )
        .unwrap();
    }
    let o = s.once();
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    let text = std::fs::read_to_string(s.path("metrics.prom")).unwrap();
    for line in [
        format!("smime_pickup_delivered_total{{route=\"pickup\"}} {good}"),
        "smime_pickup_delivered_total{route=\"smtp\"} 0".to_string(),
        "smime_pickup_failed_total{reason=\"input\"} 3".to_string(),
        "smime_pickup_failed_total{reason=\"key\"} 2".to_string(),
        "smime_pickup_failed_total{reason=\"certificate\"} 2".to_string(),
        format!("smime_pickup_seal_seconds_count {}", good + 7),
        "smime_pickup_route{route=\"pickup\"} 1".to_string(),
        "smime_pickup_queue_depth 0".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let expiry: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("smime_pickup_certificate_expiry_days "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        expiry > 365 * 50,
        "the test PKI lives for decades: {expiry}"
    );
}

#[test]
fn once_shows_a_progress_bar_on_a_terminal_and_log_lines_elsewhere() {
    let s = Setup::new("settle_ms = 100\n");
    for n in 0..5 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    // under a pseudo-terminal (script(1)): the bar, then the summary
    let command = format!(
        "{} -c {} once",
        env!("CARGO_BIN_EXE_smime-pickup"),
        s.config.display()
    );
    let o = run(std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(s.d.path())
        .env_remove("RUST_LOG"));
    let screen = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{screen}");
    assert!(
        screen.contains("5/5 inputs")
            && screen.contains("left (5 delivered, 0 failed, 0 deferred)"),
        "{screen}"
    );
    assert!(
        !screen.contains("delivered via pickup"),
        "no per-message lines beside the bar: {screen}"
    );
    // the rate in the terminal's own colour (no black on black), as a whole number
    assert!(!screen.contains("\u{1b}[38;5;0m"), "{screen:?}");
    let rate = screen
        .split(" inputs, ")
        .nth(1)
        .and_then(|r| r.split("/s").next())
        .unwrap_or_else(|| panic!("no rate: {screen:?}"));
    assert!(rate.trim().parse::<u64>().is_ok(), "rate {rate:?}");
    // the summary with its time and rate
    let last = screen
        .lines()
        .rev()
        .find(|l| l.contains("delivered"))
        .unwrap();
    assert!(
        last.contains("5 delivered, 0 failed, 0 deferred in ") && last.contains(" inputs/s)"),
        "{last:?}"
    );

    // without a terminal: plain log lines, no bar
    for n in 5..8 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    let o = s.once();
    assert!(o.status.success());
    let log = stderr(&o);
    assert_eq!(log.matches("delivered via pickup").count(), 3, "{log}");
    assert!(!log.contains(" inputs, "), "{log}");
    // each line names its pickup file, in the singular for one
    for n in 5..8 {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("m{n}.eml: delivered via pickup")))
            .unwrap();
        let name = line
            .split("(1 file: ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(name.ends_with(&format!(".m{n}.eml")), "{line}");
        assert!(s.path("pickup").join(name).exists(), "{line}");
    }
}

#[test]
fn send_takes_key_folders_and_times_the_real_transaction() {
    let sink = util::mta::Sink::start(&[]);
    let d = Dir::new();
    let input = d.write("m.eml", &message(1));
    let o = run(bin(d.path())
        .env("SMTP_HOST", "127.0.0.1")
        .env("SMTP_PORT", sink.port.to_string())
        .arg("send")
        .arg("--keys")
        .arg(d.keys())
        .arg("--certs")
        .arg(d.certs())
        .arg("--ca")
        .arg(d.ca())
        .arg(&input));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{out}{}", stderr(&o));
    let secs: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("OK - in "))
        .and_then(|r| r.strip_suffix(" seconds"))
        .unwrap_or_else(|| panic!("{out}"))
        .parse()
        .unwrap();
    assert!(secs > 0.0, "a real duration, not 0.000: {out}");
    // without --keys and no config, the missing default keys folder is a configuration problem
    let o = run(bin(d.path())
        .env("SMTP_HOST", "127.0.0.1")
        .env("SMTP_PORT", sink.port.to_string())
        .arg("send")
        .arg(&input));
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("keys folder"), "{}", stderr(&o));
    // the seed tool's spellings are listed
    let help = run(bin(d.path()).args(["send", "--help"]));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--send_smtp") && help.contains("--sign_detached"),
        "{help}"
    );
}

#[test]
fn a_metrics_file_that_cannot_be_written_is_said_once_and_checked() {
    let s = Setup::new("metrics_file = \"nowhere/m.prom\"\n");
    let o = run(&mut s.cmd("check"));
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(
        report.contains("metrics_file") && report.contains("cannot be written"),
        "{report}"
    );
    // the count agrees with its noun
    let last = report.lines().last().unwrap();
    for part in last.split(", ") {
        let (n, word) = part.split_once(' ').unwrap();
        assert_eq!(n == "1", !word.ends_with('s'), "{last}");
    }
    let mut child = s.start("run.log");
    s.drop_message("m.eml", &message(1));
    s.wait_for("delivery", std::time::Duration::from_secs(20), || {
        s.delivered_ids().len() == 1
    });
    std::thread::sleep(std::time::Duration::from_millis(2500)); // two more metric writes
    std::fs::create_dir(s.path("nowhere")).unwrap();
    s.wait_for(
        "the metrics file",
        std::time::Duration::from_secs(10),
        || s.path("nowhere/m.prom").exists(),
    );
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, std::time::Duration::from_secs(20)).success());
    let log = std::fs::read_to_string(s.path("run.log")).unwrap();
    assert_eq!(log.matches("cannot write it").count(), 1, "{log}");
    assert!(log.contains("written again"), "{log}");
}

/// `failed list`, `failed retry`, `failed purge`: what failed, why, and send it again.
#[test]
fn the_failed_folder_is_a_queue_to_list_retry_and_purge() {
    let s = Setup::new("");
    let bad = s.copy_fixtures("eml/malformed", "job42");
    assert!(bad >= 5);
    s.drop_message("job42/fine.eml", &message(1));
    let o = s.once();
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    let list = run(s.cmd("failed").arg("list"));
    assert!(list.status.success(), "{}", stderr(&list));
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    assert_eq!(
        text.lines().count(),
        bad + 1,
        "a row per input and the counts: {text}"
    );
    assert!(
        text.contains("job42/no-from.eml") && text.contains("  input "),
        "{text}"
    );
    assert!(
        text.contains("  certificate  job42/missing-cert.eml"),
        "{text}"
    );
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with(&format!("{bad} failed inputs: "))
    );
    // JSON for scripts
    let json = run(s.cmd("failed").args(["list", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["inputs"].as_array().unwrap().len(), bad);
    let inputs = v["counts"]["input"].as_u64().unwrap() as usize;
    assert!(inputs >= 3, "{v}");
    // check counts them too
    let check = run(&mut s.cmd("check"));
    assert!(
        String::from_utf8_lossy(&check.stdout).contains(&format!("{bad} inputs wait")),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // retry one class: back into the spool at the same place, reasons gone
    let o = run(s.cmd("failed").args(["retry", "--class", "input"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let moved = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        moved.contains(&format!("{inputs} put back into the spool")),
        "{moved}"
    );
    assert!(s.path("spool/job42/no-from.eml").exists());
    assert!(!s.path("failed/job42/no-from.eml.reason").exists());
    assert!(
        s.path("failed/job42/missing-cert.eml").exists(),
        "other classes stay"
    );
    // refused again (nothing was fixed): same names, no .1, no reason taken for an input
    let o = s.once();
    assert_eq!(o.status.code(), Some(65));
    assert!(s.path("failed/job42/no-from.eml.reason").exists());
    assert!(!s.path("failed/job42/no-from.1.eml").exists());

    // retry by path while the same name waits in the spool: a numbered name, nothing overwritten
    s.drop_message("job42/missing-cert.eml", &message(2));
    let o = run(s.cmd("failed").args(["retry", "job42/missing-cert.eml"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(s.path("spool/job42/missing-cert.1.eml").exists());
    assert_eq!(
        std::fs::read(s.path("spool/job42/missing-cert.eml")).unwrap(),
        message(2)
    );
    let o = run(s.cmd("failed").args(["retry", "job42/not-there.eml"]));
    assert_eq!(o.status.code(), Some(66), "{}", stderr(&o));
    let o = run(s.cmd("failed").arg("retry"));
    assert_eq!(o.status.code(), Some(64));

    // purge: nothing is a day old yet; everything is older than 0 days
    let o = run(s.cmd("failed").args(["purge", "--older-than", "1"]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("purged 0"));
    let o = run(s.cmd("failed").args(["purge", "--older-than", "0"]));
    assert!(o.status.success());
    let list = run(s.cmd("failed").arg("list"));
    assert_eq!(String::from_utf8_lossy(&list.stdout), "0 failed inputs\n");
}

/// Only `*.eml` (by default) is an input; a failed folder moved back whole feeds no reason in.
#[test]
fn only_input_names_are_taken_and_reasons_never() {
    let s = Setup::new("");
    s.drop_message("notes.txt", &message(1));
    s.drop_message("job/ok.EML", &message(2));
    s.drop_message("job/bad.eml", b"Subject: no from\n\nx\n");
    let o = s.once();
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    assert_eq!(s.delivered_ids().len(), 1, "ok.EML only");
    assert!(s.path("spool/notes.txt").exists(), "left alone");
    assert_eq!(
        stderr(&o).matches("notes.txt: not an input name").count(),
        1
    );
    // the admin's `mv failed/job/* spool/job/`: the input comes back, its reason is left alone
    for f in list_files(&s.path("failed/job")) {
        std::fs::rename(&f, s.path("spool/job").join(f.file_name().unwrap())).unwrap();
    }
    let o = s.once();
    assert_eq!(o.status.code(), Some(65));
    assert!(
        s.path("spool/job/bad.eml.reason").exists(),
        "a reason is never taken"
    );
    assert!(s.path("failed/job/bad.eml.reason").exists());
    assert!(!s.path("failed/job/bad.eml.reason.reason").exists());
    assert!(!s.path("failed/job/bad.1.eml").exists(), "same name again");
}
