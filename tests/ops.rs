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
