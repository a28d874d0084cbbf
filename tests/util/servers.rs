//! More real SMTP servers for the interop matrix: Python's aiosmtpd (through `aiosmtpd_server.py`,
//! which stores each message as a file) and a private Exim instance (its own config, spool and
//! Maildir in a temp folder, run in the foreground). Both listen on 127.0.0.1 at a free port, offer
//! STARTTLS with the test CA's `localhost` certificate when asked to, and are stopped by PID when
//! dropped. `tests/setup.sh` installs them; a missing one fails the test with that advice.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::mta::{free_port, wait_listening};
use super::pki;

/// Where `tests/setup.sh` unpacks Exim (Debian's exim4 package conflicts with Postfix, so it is
/// unpacked, not installed).
pub const EXIM: &str = "/opt/smime-pickup-tests/exim4/usr/sbin/exim4";

/// The message files in `dir` (not its hidden temporaries), LF line ends made CRLF.
fn messages_in(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .map(|m| super::to_crlf(&m))
        .collect()
}

/// Waits until `dir` holds `n` messages; the servers store a message before they answer 250 (aiosmtpd)
/// or soon after (Exim's delivery process), so this only waits for the latter.
fn wait_messages(dir: &Path, n: usize, what: &str) -> Vec<Vec<u8>> {
    let start = Instant::now();
    loop {
        let got = messages_in(dir);
        if got.len() >= n {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} stored {} of {n} messages",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Copies the test CA's `localhost` leaf certificate and key into `dir` (tls.crt, tls.key).
fn leaf_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let private = pki().join("private");
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::copy(private.join("localhost.crt"), &crt).unwrap();
    std::fs::copy(private.join("localhost.key"), &key).unwrap();
    (crt, key)
}

/// Starts one of our Python test servers and waits for the "ready" line it prints once it listens
/// (or for its end, which closes stdout); one that does not start is stopped, and the test fails.
pub fn spawn_ready(cmd: &mut Command, what: &str) -> Child {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    if line.trim() != "ready" {
        stop(&mut child);
        panic!("{what} did not start");
    }
    child
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// How an aiosmtpd server behaves.
#[derive(Default, Clone, Copy)]
pub struct AioOptions {
    /// offer STARTTLS
    pub tls: bool,
    /// answer a repeated EHLO with 503 (as Python's old smtpd did)
    pub strict_ehlo: bool,
    /// answer every EHLO and HELO with this reply
    pub ehlo_reply: Option<&'static str>,
    /// answer the end of DATA only for as many messages as this file says (see `release`)
    pub hold: bool,
}

pub struct Aiosmtpd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Aiosmtpd {
    pub fn start(options: AioOptions) -> Aiosmtpd {
        Aiosmtpd::start_on(free_port(), options)
    }

    /// On a given port (one a stopped server used: Python sets SO_REUSEADDR).
    pub fn start_on(port: u16, options: AioOptions) -> Aiosmtpd {
        let found = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "python3 with aiosmtpd is needed (run tests/setup.sh, or: pip install aiosmtpd)"
        );
        let dir = tempfile::Builder::new()
            .prefix("aiosmtpd")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("mail")).unwrap();
        let script = d.join("server.py");
        std::fs::write(&script, include_str!("aiosmtpd_server.py")).unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg(port.to_string()).arg(d.join("mail"));
        if options.tls {
            let (crt, key) = leaf_cert(d);
            cmd.arg("--tls").arg(crt).arg(key);
        }
        if options.strict_ehlo {
            cmd.arg("--strict-ehlo");
        }
        if let Some(reply) = options.ehlo_reply {
            cmd.args(["--ehlo-reply", reply]);
        }
        if options.hold {
            std::fs::write(d.join("answered"), "0").unwrap();
            cmd.arg("--hold-file").arg(d.join("answered"));
        }
        let child = spawn_ready(&mut cmd, &format!("aiosmtpd_server.py on port {port}"));
        Aiosmtpd { dir, port, child }
    }

    pub fn delivered(&self) -> Vec<Vec<u8>> {
        messages_in(&self.dir.path().join("mail"))
    }

    /// How many messages are stored: cheaper than `delivered` for progress checks.
    pub fn stored(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("mail")).map_or(0, |e| {
            e.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
    }

    /// With `hold`: the server answers the first `n` messages it stored (in order), holds the rest.
    pub fn answer_up_to(&self, n: usize) {
        let tmp = self.dir.path().join(".answered");
        std::fs::write(&tmp, n.to_string()).unwrap();
        std::fs::rename(tmp, self.dir.path().join("answered")).unwrap();
    }

    pub fn wait_delivered(&self, n: usize) -> Vec<Vec<u8>> {
        wait_messages(&self.dir.path().join("mail"), n, "aiosmtpd")
    }
}

impl Drop for Aiosmtpd {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A private Exim: accepts any recipient but [`super::mta::REFUSED`], delivers into one Maildir.
pub struct Exim {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Exim {
    pub fn start(tls: bool) -> Exim {
        assert!(
            Path::new(EXIM).exists(),
            "{EXIM} is missing: run tests/setup.sh (it unpacks Debian's exim4-daemon-light there)"
        );
        let dir = tempfile::Builder::new().prefix("exim").tempdir().unwrap();
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["spool", "log", "mail"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        let owner = Command::new("chown")
            .args(["-R", "Debian-exim:Debian-exim"])
            .arg(d.join("spool"))
            .arg(d.join("log"))
            .arg(d.join("mail"))
            .status()
            .unwrap();
        assert!(
            owner.success(),
            "the Debian-exim user is missing: run tests/setup.sh"
        );
        let dd = d.display();
        let tls_lines = if tls {
            let (crt, key) = leaf_cert(d);
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            format!(
                "tls_advertise_hosts = *\ntls_certificate = {}\ntls_privatekey = {}\n",
                crt.display(),
                key.display()
            )
        } else {
            "tls_advertise_hosts =\n".to_string()
        };
        // run as root with -C, Exim drops to its own user for deliveries: the transport runs as it
        let config = format!(
            "exim_path = {EXIM}\nexim_user = Debian-exim\nexim_group = Debian-exim\n\
             primary_hostname = localhost\nspool_directory = {dd}/spool\nlog_file_path = {dd}/log/%slog\n\
             local_interfaces = <; 127.0.0.1\nhost_lookup =\nrfc1413_hosts =\nkeep_environment =\n\
             message_size_limit = 60M\nacl_smtp_rcpt = acl_rcpt\n{tls_lines}\
             begin acl\nacl_rcpt:\n  deny recipients = {refused}\n       message = no such user here\n  accept\n\
             begin routers\nall:\n  driver = accept\n  transport = store\n\
             begin transports\nstore:\n  driver = appendfile\n  directory = {dd}/mail\n  maildir_format\n\
             \x20 user = Debian-exim\n  group = Debian-exim\n",
            refused = super::mta::REFUSED,
        );
        std::fs::write(d.join("exim.conf"), config).unwrap();
        let port = free_port();
        let child = Command::new(EXIM)
            .arg("-C")
            .arg(d.join("exim.conf"))
            .args(["-bdf", "-oX", &port.to_string()])
            .arg("-oP")
            .arg(d.join("exim.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("exim starts");
        let mut exim = Exim { dir, port, child };
        if let Ok(Some(status)) = exim.child.try_wait() {
            panic!("exim exited at once ({status}): {}", exim.log());
        }
        wait_listening(port, "exim");
        exim
    }

    pub fn delivered(&self) -> Vec<Vec<u8>> {
        messages_in(&self.dir.path().join("mail/new"))
    }

    pub fn wait_delivered(&self, n: usize) -> Vec<Vec<u8>> {
        wait_messages(&self.dir.path().join("mail/new"), n, "exim")
    }

    pub fn log(&self) -> String {
        let d = self.dir.path().join("log");
        ["mainlog", "paniclog", "rejectlog"]
            .iter()
            .map(|f| std::fs::read_to_string(d.join(f)).unwrap_or_default())
            .collect()
    }
}

impl Drop for Exim {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
