//! DNS and DKIM peers for the harvest tests, independent of mail-auth: dnsmasq serving DKIM key
//! records on 127.0.0.1 (a free port, no upstream: it never asks anybody else), a name server that
//! never answers, and Python's dkimpy signing replies. Each process is stopped by its PID when its
//! guard is dropped.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::spool::SLACK;

/// A dnsmasq in the foreground on 127.0.0.1:`port`, authoritative for its domains: a name there
/// without a record gets NXDOMAIN, a name elsewhere REFUSED (no upstream server).
pub struct Dnsmasq {
    child: Child,
    pub port: u16,
    log: Arc<Mutex<String>>,
}

impl Dnsmasq {
    /// `records`: (name, TXT value), such as ("s1._domainkey.example.org", "v=DKIM1; k=rsa; p=…");
    /// `domains`: the zones it answers for alone.
    pub fn start(domains: &[&str], records: &[(&str, &str)]) -> Dnsmasq {
        // the port is free when chosen; should another process take it first, dnsmasq says so
        // and exits, and another port is tried
        for _ in 0..5 {
            match Dnsmasq::try_on(closed_port(), domains, records) {
                Ok(me) => return me,
                Err(said) => assert!(
                    said.contains("Address already in use"),
                    "dnsmasq did not start: {said}"
                ),
            }
        }
        panic!("dnsmasq found no free port in 5 tries");
    }

    /// As `start`, on this `port` (one that was closed until now, named in a config already).
    pub fn start_on(port: u16, domains: &[&str], records: &[(&str, &str)]) -> Dnsmasq {
        Dnsmasq::try_on(port, domains, records)
            .unwrap_or_else(|said| panic!("dnsmasq did not start on port {port}: {said}"))
    }

    /// Started and listening, or what it said before it gave up.
    fn try_on(port: u16, domains: &[&str], records: &[(&str, &str)]) -> Result<Dnsmasq, String> {
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--log-facility=-",
            "--log-queries",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--cache-size=0",
        ])
        .arg(format!("--port={port}"));
        if !domains.is_empty() {
            cmd.arg(format!("--local=/{}/", domains.join("/")));
        }
        for (name, value) in records {
            cmd.arg(format!("--txt-record={name},{value}"));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dnsmasq (Debian package dnsmasq-base; tests/setup.sh installs it)");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, started) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // it binds its sockets before it says it started
                if line.contains("started, version") {
                    let _ = tx.send(());
                }
                let mut log = keep.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let up = started
            .recv_timeout(Duration::from_secs(30) * SLACK)
            .is_ok();
        let me = Dnsmasq { child, port, log };
        if up { Ok(me) } else { Err(me.log()) }
    }

    /// What it logged so far (with --log-queries: every question it was asked).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// How often it was asked for TXT records of `name`.
    pub fn asked(&self, name: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(&format!("query[TXT] {name} from 127.0.0.1")))
            .count()
    }

    /// `harvest_dns` naming this server.
    pub fn config_line(&self) -> String {
        format!("harvest_dns = [\"127.0.0.1:{}\"]\n", self.port)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A name server that never answers: a UDP socket nobody reads and a TCP listener that accepts
/// (the kernel completes the handshake) but never replies, on one port.
pub struct Silent {
    _udp: UdpSocket,
    _tcp: TcpListener,
    pub port: u16,
}

impl Silent {
    pub fn start() -> Silent {
        loop {
            let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
                return Silent {
                    _udp: udp,
                    _tcp: tcp,
                    port,
                };
            }
        }
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 at the time of asking.
fn closed_port() -> u16 {
    let s = Silent::start();
    s.port
}

/// The TXT value publishing `rsa`'s public key (`v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo>`).
pub fn key_record(rsa: &openssl::rsa::Rsa<openssl::pkey::Private>) -> String {
    use base64::Engine;
    let spki = openssl::pkey::PKey::from_rsa(rsa.clone())
        .unwrap()
        .public_key_to_der()
        .unwrap();
    format!(
        "v=DKIM1; k=rsa; p={}",
        base64::engine::general_purpose::STANDARD.encode(spki)
    )
}

const DKIMPY_SIGN: &str = "\
import sys, dkim
selector, domain, keyfile = sys.argv[1:4]
message = sys.stdin.buffer.read()
key = open(keyfile, 'rb').read()
sig = dkim.sign(message, selector.encode(), domain.encode(), key,
                include_headers=[b'from', b'to', b'subject'],
                canonicalize=(b'relaxed', b'relaxed'))
sys.stdout.buffer.write(sig + message)
";

/// `message` (CRLF line ends, as on the wire) DKIM-signed by dkimpy as `d=domain`, `s=selector`
/// with the RSA key in PEM file `key`: the DKIM-Signature field, then the message.
pub fn dkimpy_sign(message: &[u8], domain: &str, selector: &str, key: &Path) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", DKIMPY_SIGN, selector, domain])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "dkimpy (PyPI dkimpy; tests/setup.sh installs it): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}
