//! The spool as an attacker (or a careless exporter) makes it: inputs rewritten while queued, links
//! to folders and files outside, FIFOs, sockets and devices, inputs the daemon may not read. Each
//! must be left where it is or taken whole, never followed, never hidden, and `once` must end.

mod util;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use util::spool::*;
use util::*;

/// A message with its own Message-ID and an end marker, so a cut copy shows.
fn version(name: &str) -> Vec<u8> {
    format!(
        "From: alice@example.com\nTo: bob@example.com\nSubject: {name}\nMessage-ID: <{name}@test>\n\n\
         {}end-of-{name}\n",
        "body line\n".repeat(200)
    )
    .into_bytes()
}

/// The inner content of every pickup file, decrypted and verified.
fn delivered_contents(s: &Setup) -> Vec<String> {
    s.pickup_files()
        .iter()
        .map(|f| {
            let sealed = std::fs::read(f).unwrap();
            let signed = openssl_decrypt(s.d.path(), &sealed, "bob@example.com").unwrap();
            String::from_utf8_lossy(&openssl_verify(s.d.path(), &signed).unwrap()).into_owned()
        })
        .collect()
}

/// Starts `run` with a full pickup folder, so the input waits in a worker (judged complete, its
/// snapshot taken) until the test empties pickup.
fn held_at_the_gate(s: &Setup, name: &str, bytes: &[u8]) -> Running {
    std::fs::write(s.path("pickup/mta-is-slow"), b"x").unwrap();
    let child = s.start("run.log");
    s.drop_message(name, bytes);
    s.wait_for_log("run.log", "is the MTA consuming? pausing");
    child
}

fn open_the_gate_and_wait_for(s: &Setup, log: &str) {
    std::fs::remove_file(s.path("pickup/mta-is-slow")).unwrap();
    s.wait_for_log("run.log", log);
}

fn stop(s: &Setup, mut child: Running) -> String {
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
    std::fs::read_to_string(s.path("run.log")).unwrap()
}

#[test]
fn an_input_truncated_in_place_while_queued_is_delivered_whole_once() {
    let s = Setup::new("pickup_max_backlog = 1\nsettle_ms = 300\nworkers = 1\n");
    let child = held_at_the_gate(&s, "q.eml", &version("first"));
    // the exporter rewrites it in place (O_TRUNC) and keeps writing, file open
    let q = s.path("spool/q.eml");
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&q)
        .unwrap();
    let second = version("second");
    let (head, tail) = second.split_at(second.len() / 2);
    w.write_all(head).unwrap();
    open_the_gate_and_wait_for(&s, "q.eml: changed since it was judged complete");
    assert!(s.pickup_files().is_empty(), "nothing taken while written");
    w.write_all(tail).unwrap();
    drop(w);
    s.wait_for("the rewritten input", Duration::from_secs(10), || {
        !s.pickup_files().is_empty()
    });
    let log = stop(&s, child);
    let contents = delivered_contents(&s);
    assert_eq!(contents.len(), 1, "delivered once: {log}");
    assert!(
        contents[0].contains("end-of-second"),
        "whole: {}",
        contents[0]
    );
    assert!(!q.exists());
    s.assert_nothing_in_flight();
}

#[test]
fn a_claimed_input_still_open_for_writing_is_put_back_and_delivered_when_done() {
    let s = Setup::new("pickup_max_backlog = 1\nsettle_ms = 300\nworkers = 1\n");
    let child = held_at_the_gate(&s, "sub/o.eml", &version("old"));
    // opened for writing (not truncated, nothing written yet): looks unchanged, but is not done
    let o = s.path("spool/sub/o.eml");
    let mut w = std::fs::OpenOptions::new().write(true).open(&o).unwrap();
    open_the_gate_and_wait_for(&s, "still open for writing; put back");
    assert!(o.exists(), "back where it was");
    assert!(s.pickup_files().is_empty());
    // the writer goes on through the descriptor it holds: the file in the spool gets it
    w.set_len(0).unwrap();
    w.write_all(&version("new")).unwrap();
    drop(w);
    s.wait_for("the finished input", Duration::from_secs(10), || {
        !s.pickup_files().is_empty()
    });
    let log = stop(&s, child);
    let contents = delivered_contents(&s);
    assert_eq!(contents.len(), 1, "{log}");
    assert!(contents[0].contains("end-of-new"), "{}", contents[0]);
    s.assert_nothing_in_flight();
}

/// A folder outside the spool with subfolders and a message in each.
fn outside_tree(s: &Setup) -> PathBuf {
    let outside = s.d.path().join("outside");
    for i in 0..40 {
        std::fs::create_dir_all(outside.join(format!("d{i}"))).unwrap();
        std::fs::write(outside.join(format!("d{i}/m.eml")), message(1000 + i)).unwrap();
    }
    std::fs::write(outside.join("o.eml"), message(999)).unwrap();
    outside
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// A character device like /dev/null (as root).
fn mknod(path: &Path) {
    let ok = Command::new("mknod")
        .arg(path)
        .args(["c", "1", "3"])
        .status();
    assert!(ok.unwrap().success());
}

fn warnings_about(log: &str, path: &Path) -> usize {
    let needle = format!("{}: ", path.display());
    log.lines()
        .filter(|l| l.contains(&needle) && l.contains("not a regular file"))
        .count()
}

#[test]
fn links_fifos_sockets_and_devices_are_left_alone_warned_once_and_never_watched_into() {
    let s = Setup::new("rescan_seconds = 1\n");
    let outside = outside_tree(&s);
    let before = list_files(&outside);
    let spool = s.path("spool");
    std::fs::create_dir(spool.join("sub")).unwrap();
    let specials = [
        spool.join("to-folder"),
        spool.join("sub/deeper-link"),
        spool.join("to-file.eml"),
        spool.join("pipe.eml"),
        spool.join("sock.eml"),
        spool.join("null.eml"),
        spool.join("late-link"),
        spool.join("made-link.eml"),
        spool.join("late-pipe.eml"),
    ];
    std::os::unix::fs::symlink(&outside, &specials[0]).unwrap();
    std::os::unix::fs::symlink(&outside, &specials[1]).unwrap();
    std::os::unix::fs::symlink(outside.join("o.eml"), &specials[2]).unwrap();
    mkfifo(&specials[3]);
    let _sock = std::os::unix::net::UnixListener::bind(&specials[4]).unwrap();
    mknod(&specials[5]);

    let mut cmd = s.cmd("run");
    cmd.env("RUST_LOG", "info,smime_pickup::spool=debug");
    let log = std::fs::File::create(s.path("run.log")).unwrap();
    let child = Running(cmd.stderr(log).stdout(Stdio::null()).spawn().unwrap());
    let scans = |s: &Setup| {
        let log = std::fs::read_to_string(s.path("run.log")).unwrap_or_default();
        log.matches("scan took").count()
    };
    s.wait_for("two scans", Duration::from_secs(10), || scans(&s) >= 2);
    // while it runs: a link to the outside folder renamed in, a link and a FIFO made in place,
    // a file renamed into the outside folder through the link, and a real message
    let tmp_link = s.d.path().join("link-made-elsewhere");
    std::os::unix::fs::symlink(&outside, &tmp_link).unwrap();
    std::fs::rename(&tmp_link, &specials[6]).unwrap();
    std::os::unix::fs::symlink(&outside, &specials[7]).unwrap();
    mkfifo(&specials[8]);
    let via = s.d.path().join("via-link.eml");
    std::fs::write(&via, message(1)).unwrap();
    std::fs::rename(&via, specials[0].join("via-link.eml")).unwrap();
    s.drop_message("sub/real.eml", &message(2));
    s.wait_for("the real message", Duration::from_secs(10), || {
        s.delivered_ids().contains_key("<m2@test.example.com>")
    });
    let seen = scans(&s);
    s.wait_for("three more scans", Duration::from_secs(10), || {
        scans(&s) >= seen + 3
    });
    // the spool and spool/sub, nothing behind a link
    assert_eq!(watched_inodes(child.id()).len(), 2, "watches");
    let log = stop(&s, child);

    assert_eq!(s.pickup_files().len(), 1, "only the real message: {log}");
    for p in &specials {
        assert!(
            p.symlink_metadata().is_ok(),
            "{} left where it is",
            p.display()
        );
        assert_eq!(
            warnings_about(&log, p),
            1,
            "{} warned once:\n{log}",
            p.display()
        );
    }
    let mut after = list_files(&outside);
    after.retain(|p| !p.ends_with("via-link.eml"));
    let (mut before, mut after) = (before, after);
    before.sort();
    after.sort();
    assert_eq!(after, before, "nothing outside taken");
    assert!(outside.join("via-link.eml").exists(), "{log}");
    assert_eq!(
        std::fs::read(outside.join("o.eml")).unwrap(),
        message(999),
        "untouched"
    );
    s.assert_nothing_in_flight();
}

#[test]
fn once_ends_whatever_appears_in_the_spool_while_it_runs() {
    let s = Setup::new("");
    let outside = outside_tree(&s);
    let spool = s.path("spool");
    s.drop_message("m.eml", &message(1));
    // a writer that never finishes while once runs
    let mut writer = std::fs::File::create(spool.join("writing.eml")).unwrap();
    writer.write_all(b"From: alice@example.com\n").unwrap();
    mkfifo(&spool.join("early-pipe.eml"));
    std::os::unix::fs::symlink(&outside, spool.join("early-link")).unwrap();

    let log = std::fs::File::create(s.path("once.log")).unwrap();
    let mut child = Running(
        s.cmd("once")
            .stderr(log)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // made during the settle time after the first scan, while once still takes what is complete
    s.wait_for_log("once.log", "draining");
    let made = [
        spool.join("pipe.eml"),
        spool.join("link.eml"),
        spool.join("renamed-link"),
        spool.join("sock.eml"),
    ];
    mkfifo(&made[0]);
    std::os::unix::fs::symlink(outside.join("o.eml"), &made[1]).unwrap();
    let tmp_link = s.d.path().join("elsewhere");
    std::os::unix::fs::symlink(&outside, &tmp_link).unwrap();
    std::fs::rename(&tmp_link, &made[2]).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(&made[3]).unwrap();

    let status = wait_exit(&mut child, Duration::from_secs(10));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut out).unwrap();
    let log = std::fs::read_to_string(s.path("once.log")).unwrap();
    assert_eq!(status.code(), Some(75), "{out}\n{log}");
    assert!(
        out.contains("1 delivered, 0 failed, 1 deferred"),
        "{out}\n{log}"
    );
    assert!(log.contains("left in the spool for the next run"), "{log}");
    for p in made
        .iter()
        .chain(&[spool.join("early-pipe.eml"), spool.join("early-link")])
    {
        assert!(p.symlink_metadata().is_ok(), "{} stays", p.display());
    }
    assert!(spool.join("writing.eml").exists());
    for p in &made {
        assert!(warnings_about(&log, p) <= 1, "{log}");
    }
    assert_eq!(
        warnings_about(&log, &spool.join("early-pipe.eml")),
        1,
        "{log}"
    );
    assert_eq!(list_files(&outside).len(), 41, "nothing outside taken");
    drop(writer);
    s.assert_nothing_in_flight();
}

/// Makes `path` and everything below it owned by `uid`.
fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if path.symlink_metadata().unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid);
        }
    }
}

/// nobody/nogroup: the daemon must not be root for a permission to mean anything.
const NOBODY: u32 = 65534;

#[test]
fn an_input_the_daemon_may_not_read_stays_visible_in_the_spool() {
    let s = Setup::new("rescan_seconds = 1\n");
    s.drop_message("ok.eml", &message(1));
    s.drop_message("sub/secret.eml", &message(2));
    chown_tree(s.d.path(), NOBODY);
    let secret = s.path("spool/sub/secret.eml");
    std::os::unix::fs::lchown(&secret, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();

    let o = run(s.cmd("once").uid(NOBODY).gid(NOBODY));
    let (out, log) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert_eq!(o.status.code(), Some(75), "{out}\n{log}");
    assert!(
        out.contains("1 delivered, 0 failed, 1 deferred"),
        "{out}\n{log}"
    );
    assert!(secret.exists(), "left where it was, not hidden: {log}");
    assert!(log.contains("sub/secret.eml: cannot read it"), "{log}");
    s.assert_nothing_in_flight();

    // the daemon says so at every rescan, and takes it once its owner lets it
    let log = std::fs::File::create(s.path("run.log")).unwrap();
    let mut cmd = s.cmd("run");
    cmd.uid(NOBODY)
        .gid(NOBODY)
        .stderr(log)
        .stdout(Stdio::null());
    let child = Running(cmd.spawn().unwrap());
    let said = |s: &Setup| {
        let log = std::fs::read_to_string(s.path("run.log")).unwrap_or_default();
        log.matches("sub/secret.eml: cannot read it").count()
    };
    s.wait_for("two warnings", Duration::from_secs(10), || said(&s) >= 2);
    assert!(secret.exists());
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    s.wait_for("the fixed input", Duration::from_secs(10), || {
        s.delivered_ids().contains_key("<m2@test.example.com>")
    });
    let log = stop(&s, child);
    assert_eq!(s.delivered_ids().len(), 2, "{log}");
    assert!(!secret.exists());
    s.assert_nothing_in_flight();
}

/// `run` as nobody (see `NOBODY`) over a spool of nobody's, its log in `run.log`; with `cap_lease`,
/// with CAP_LEASE in its ambient set, as the systemd unit gives it.
fn start_as_nobody(s: &Setup, cap_lease: bool) -> Running {
    let plain = s.cmd("run");
    let mut cmd = if cap_lease {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["--inh-caps=+lease", "--ambient-caps=+lease", "--"])
            .arg(plain.get_program())
            .args(plain.get_args())
            .env_clear()
            .current_dir(plain.get_current_dir().unwrap());
        for (k, v) in plain.get_envs() {
            c.env(k, v.unwrap());
        }
        c
    } else {
        let mut c = plain;
        c.uid(NOBODY).gid(NOBODY);
        c
    };
    let log = std::fs::File::create(s.path("run.log")).unwrap();
    Running(cmd.stderr(log).stdout(Stdio::null()).spawn().unwrap())
}

/// Root's input (readable, not nobody's to lease) judged complete and waiting at the gate of a
/// daemon running as nobody.
fn roots_input_at_a_nobody_gate(s: &Setup, cap_lease: bool) -> (Running, PathBuf) {
    std::fs::write(s.path("pickup/mta-is-slow"), b"x").unwrap();
    chown_tree(s.d.path(), NOBODY);
    let child = start_as_nobody(s, cap_lease);
    s.wait_for_log("run.log", "watching");
    s.drop_message("o.eml", &version("old"));
    let o = s.path("spool/o.eml");
    assert_eq!(std::fs::metadata(&o).unwrap().uid(), 0);
    s.wait_for_log("run.log", "is the MTA consuming? pausing");
    (child, o)
}

/// Then a writer holds it open while the gate opens: put back, and delivered once it is closed.
fn put_back_while_held_then_delivered(s: &Setup, child: Running, writer: impl FnOnce()) -> String {
    open_the_gate_and_wait_for(s, "o.eml: still open for writing; put back");
    assert!(s.path("spool/o.eml").exists(), "back where it was");
    assert!(s.pickup_files().is_empty());
    writer();
    s.wait_for("the closed input", Duration::from_secs(10), || {
        !s.pickup_files().is_empty()
    });
    let log = stop(s, child);
    let contents = delivered_contents(s);
    assert_eq!(contents.len(), 1, "{log}");
    assert!(contents[0].contains("end-of-old"), "{}", contents[0]);
    s.assert_nothing_in_flight();
    log
}

#[test]
fn a_daemon_that_may_not_lease_an_input_finds_its_writer_in_proc() {
    let s = Setup::new("pickup_max_backlog = 1\nsettle_ms = 300\nworkers = 1\n");
    let (child, o) = roots_input_at_a_nobody_gate(&s, false);
    // a writer of the daemon's own user: /proc shows its descriptors to the daemon
    let w = std::fs::OpenOptions::new().append(true).open(&o).unwrap();
    let mut writer = Command::new("sleep");
    let writer = Running(
        writer
            .arg("600")
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(w)
            .spawn()
            .unwrap(),
    );
    let log = put_back_while_held_then_delivered(&s, child, || drop(writer));
    let fallback = "cannot take a lease on inputs owned by uid 0 (no CAP_LEASE): checking /proc \
                    for writers instead (slower)";
    assert_eq!(log.matches(fallback).count(), 1, "said once: {log}");
}

#[test]
fn with_cap_lease_a_daemon_sees_a_writer_of_another_user() {
    let s = Setup::new("pickup_max_backlog = 1\nsettle_ms = 300\nworkers = 1\n");
    let (child, o) = roots_input_at_a_nobody_gate(&s, true);
    // root's descriptor: invisible to nobody in /proc, so only the lease can tell
    let w = std::fs::OpenOptions::new().append(true).open(&o).unwrap();
    let log = put_back_while_held_then_delivered(&s, child, || drop(w));
    assert!(!log.contains("checking /proc"), "{log}");
}
