//! Hardening, tested as a hostile operator would: layouts that would loop or strand mail, input names
//! that imitate our own state or forge log lines, a secret in a broken config, and a umask of 000.
//! (Symlinks, special files and rewritten inputs: tests/hostile.rs; crafted MIME: tests/poison.rs.)

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use util::spool::*;
use util::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn layouts_that_loop_or_strand_never_start() {
    for (extra, want) in [
        ("failed = \"spool/failed\"\n", "failed"),
        ("work = \"spool/work\"\n", "work"),
        ("staging = \"spool/staging\"\n", "staging"),
        ("metrics_file = \"spool/metrics/m.prom\"\n", "metrics_file"),
        // another filesystem than pickup's (procfs here: nothing can be created there anyway)
        (
            "staging = \"/proc/smime-pickup-staging\"\n",
            "not on the filesystem of pickup",
        ),
        (
            "work = \"/proc/smime-pickup-work\"\n",
            "not on the filesystem of spool",
        ),
    ] {
        let s = Setup::new("");
        // the override replaces the default failed line where it names failed
        let text = std::fs::read_to_string(&s.config).unwrap();
        let text = if extra.starts_with("failed") {
            text.replace("failed = \"failed\"\n", extra)
        } else {
            format!("{text}{extra}")
        };
        std::fs::write(&s.config, text).unwrap();
        s.drop_message("m.eml", &message(1));
        for cmd in ["once", "run"] {
            let o = run(&mut s.cmd(cmd));
            assert_eq!(
                o.status.code(),
                Some(78),
                "{cmd} with {extra}: {}",
                stderr(&o)
            );
            assert!(
                stderr(&o).contains(want),
                "{cmd} with {extra}: {}",
                stderr(&o)
            );
        }
        let o = run(&mut s.cmd("check"));
        assert_eq!(o.status.code(), Some(78), "check with {extra}");
        let report = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
        assert!(report.contains(want), "check with {extra}: {report}");
        // nothing was claimed, created or delivered
        assert!(s.path("spool/m.eml").exists(), "{extra}");
        assert!(!s.path("spool/.smime-pickup").exists(), "{extra}");
        assert!(s.pickup_files().is_empty(), "{extra}");
    }
}

#[test]
fn inputs_named_like_our_state_are_delivered_like_any_other() {
    let s = Setup::new("inputs = [\"*\"]\n");
    let names = [
        "report#committed",
        "report#smtp-sent",
        "x.eml#committed#committed",
        "%23#%2F%25.eml",
        "i1-0,a.eml",
    ];
    for (n, name) in names.iter().enumerate() {
        s.drop_message(name, &message(n));
    }
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    let ids = s.delivered_ids();
    assert_eq!(ids.len(), names.len(), "{ids:?}\n{}", stderr(&o));
    assert!(ids.values().all(|&c| c == 1), "{ids:?}");
    s.assert_nothing_in_flight();
    assert!(list_files(&s.path("spool")).is_empty());
}

#[test]
fn names_with_line_breaks_cannot_split_or_forge_log_lines() {
    let s = Setup::new("");
    let names = [
        "evil\n[2026-01-01T00:00:00Z ERROR smime_pickup] forged.eml",
        "cr\r[ERROR forged].eml",
        "esc\u{1b}[31mred.eml",
    ];
    for (n, name) in names.iter().enumerate() {
        s.drop_message(name, &message(n));
    }
    // and one refused, so that a warning and a reason file quote a hostile name too
    s.drop_message("bad\nname.eml", b"no headers at all\n");
    let o = s.once();
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(65), "{log}");
    assert_eq!(s.delivered_ids().len(), 3);
    for line in log.lines() {
        assert!(
            line.starts_with('['),
            "a line that is no record: {line:?}\n{log}"
        );
        assert!(!line.contains('\r') && !line.contains('\u{1b}'), "{line:?}");
    }
    assert!(
        !log.lines()
            .any(|l| l.starts_with("[ERROR forged") || l.starts_with("[2026-01-01"))
    );
    assert!(
        log.contains("evil\\n[2026-01-01"),
        "escaped, still readable: {log}"
    );
    let reason = std::fs::read_to_string(s.path("failed/bad\nname.eml.reason")).unwrap();
    assert_eq!(reason.lines().count(), 1, "{reason:?}");
}

#[test]
fn a_broken_password_line_is_never_printed() {
    let secret = "Sup3r-s3cret-pw";
    for broken in [
        format!("[smtp]\nhost = \"127.0.0.1\"\npassword = \"{secret}\n"),
        format!("[smtp]\nhost = \"127.0.0.1\"\npassword = {secret}\n"),
    ] {
        let s = Setup::new("");
        let text = std::fs::read_to_string(&s.config).unwrap();
        std::fs::write(&s.config, format!("{text}{broken}")).unwrap();
        for cmd in ["once", "check", "run"] {
            let o = run(&mut s.cmd(cmd));
            let out = String::from_utf8_lossy(&o.stdout).into_owned() + &stderr(&o);
            assert_eq!(o.status.code(), Some(78), "{cmd}: {out}");
            assert!(out.contains("line "), "{cmd} names the line: {out}");
            assert!(!out.contains(secret), "{cmd} printed the password: {out}");
        }
    }
}

#[test]
fn modes_do_not_follow_the_umask() {
    let s = Setup::new("failed = \"failed/deep/er\"\n");
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("failed = \"failed\"\n", "");
    std::fs::write(&s.config, text).unwrap();
    s.drop_message("good.eml", &message(1));
    s.drop_message("sub/bad.eml", b"From: nobody\n\nno recipients\n");
    std::fs::set_permissions(
        s.path("spool/sub/bad.eml"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_smime-pickup");
    let o = run(std::process::Command::new("sh")
        .current_dir(s.d.path())
        .env("RUST_LOG", "info")
        .arg("-c")
        .arg("umask 000; exec \"$0\" -c \"$1\" once")
        .arg(bin)
        .arg(&s.config));
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    for d in [
        "failed",
        "failed/deep",
        "failed/deep/er",
        "failed/deep/er/sub",
    ] {
        assert_eq!(mode(&s.path(d)), 0o750, "{d}");
    }
    assert_eq!(mode(&s.path("failed/deep/er/sub/bad.eml")), 0o600);
    assert_eq!(mode(&s.path("failed/deep/er/sub/bad.eml.reason")), 0o640);
    for f in s.pickup_files() {
        assert_eq!(mode(&f), 0o640, "{}", f.display());
    }
    assert_eq!(mode(&s.path(".smime-pickup-staging")), 0o750);
}

#[test]
fn envelope_lines_cannot_add_a_recipient() {
    for extra in ["", "[seal]\nmissing_cert = \"sign-only\"\n"] {
        let s = Setup::new(extra);
        let body = "From: Alice <alice@example.com>\nTo: bob@example.com\nSubject: s\n\nhi\n";
        for (name, envelope) in [
            (
                "cr-sender.eml",
                "x-sender: bob@example.com\rx-receiver: evil@evil.example\n",
            ),
            (
                "cr-receiver.eml",
                "x-sender: alice@example.com\nx-receiver: bob@example.com\rx-receiver: evil@evil.example\n",
            ),
            (
                "space.eml",
                "x-sender: alice@example.com\nx-receiver: bob@example.com evil@evil.example\n",
            ),
            (
                "job.eml",
                "x-sender: alice@example.com\nx-receiver: bob@example.com\nx-job: a\rx-receiver: evil@evil.example\n",
            ),
        ] {
            s.drop_message(name, format!("{envelope}{body}").as_bytes());
        }
        s.drop_message(
            "nul.eml",
            b"From: alice@example.com\nTo: bob@example.com\nSubject: a\0b\n\nhi\n",
        );
        let o = s.once();
        assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
        assert!(
            s.pickup_files().is_empty(),
            "nothing delivered: {:?}",
            s.pickup_files()
        );
        for name in [
            "cr-sender.eml",
            "cr-receiver.eml",
            "space.eml",
            "job.eml",
            "nul.eml",
        ] {
            let reason = std::fs::read_to_string(s.path(&format!("failed/{name}.reason")))
                .unwrap_or_else(|e| panic!("{name}: {e}\n{}", stderr(&o)));
            assert!(
                reason.contains("bad envelope line") || reason.contains("holds a NUL"),
                "{name}: {reason}"
            );
            assert_eq!(reason.lines().count(), 1, "{name}: {reason:?}");
        }
    }
}
