//! Real SMTP peers for the tests: a private Postfix instance (STARTTLS with a leaf certificate from the
//! test CA, SASL users in a sasldb, delivery into one Maildir) and smtp-sink for load and fault
//! injection. Both listen on 127.0.0.1 at a free port and are stopped when dropped.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pki;

pub const SMTP_USER: &str = "relay";
pub const SMTP_PASSWORD: &str = "injection-secret-42";
/// Postfix refuses this recipient for good (to test partial rejections).
pub const REFUSED: &str = "nobody@example.com";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_listening(port: u16, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15) * super::spool::SLACK,
            "{what} did not start listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sh(cmd: &mut Command, what: &str) {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (is postfix installed? .ci/run installs it)"));
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn id(flag: &str) -> String {
    let o = Command::new("id").args([flag, "postfix"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub struct Postfix {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Postfix {
    pub fn start() -> Postfix {
        Postfix::start_with("")
    }

    /// Also relays for 127.0.0.1 without AUTH (for sessions without TLS).
    pub fn start_open() -> Postfix {
        Postfix::start_with(
            "mynetworks = 127.0.0.0/8\n\
             smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject\n\
             smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated, reject\n",
        )
    }

    /// `extra` main.cf lines replace the defaults of the same name.
    fn start_with(extra: &str) -> Postfix {
        let dir = tempfile::Builder::new()
            .prefix("postfix")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for sub in ["etc/sasl", "queue", "data", "mail"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let private = pki().join("private");
        std::fs::copy(private.join("localhost.crt"), d.join("etc/tls.crt")).unwrap();
        std::fs::copy(private.join("localhost.key"), d.join("etc/tls.key")).unwrap();
        std::fs::set_permissions(
            d.join("etc/tls.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let port = free_port();
        let dd = d.display();
        let main_cf = format!(
            "compatibility_level = 3.6\nqueue_directory = {dd}/queue\ndata_directory = {dd}/data\n\
             mail_owner = postfix\nsetgid_group = postdrop\ninet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n\
             myhostname = localhost\nmydestination =\nalias_maps =\nalias_database =\nmaillog_file = {dd}/maillog\nmaillog_file_prefixes = {dd}\n\
             virtual_mailbox_domains = example.com example.net example.org\nvirtual_mailbox_base = {dd}/mail\n\
             virtual_mailbox_maps = static:inbox/\nvirtual_uid_maps = static:{uid}\nvirtual_gid_maps = static:{gid}\n\
             virtual_mailbox_limit = 0\nmailbox_size_limit = 0\nmessage_size_limit = 60000000\n\
             smtpd_tls_cert_file = {dd}/etc/tls.crt\nsmtpd_tls_key_file = {dd}/etc/tls.key\n\
             smtpd_tls_security_level = may\nsmtpd_tls_auth_only = yes\nsmtpd_sasl_auth_enable = yes\n\
             smtpd_sasl_type = cyrus\nsmtpd_sasl_path = smtpd\ncyrus_sasl_config_path = {dd}/etc/sasl\n\
             smtpd_relay_restrictions = permit_sasl_authenticated, reject\n\
             smtpd_recipient_restrictions = check_recipient_access inline:{{ {{ {REFUSED} = 550 5.1.1 no such user here }} }}, permit_sasl_authenticated, reject\n",
            uid = id("-u"),
            gid = id("-g"),
        );
        std::fs::write(d.join("etc/main.cf"), overridden(&main_cf, extra)).unwrap();
        // Debian's master.cf with our port and no chroot
        let master =
            std::fs::read_to_string("/etc/postfix/master.cf").expect("postfix is installed");
        let mut out = String::new();
        for line in master.lines() {
            if line.starts_with('#')
                || line.starts_with(' ')
                || line.starts_with('\t')
                || line.is_empty()
            {
                out.push_str(line);
            } else {
                let mut cols: Vec<String> = line.split_whitespace().map(str::to_string).collect();
                if cols.len() >= 8 {
                    if cols[0] == "smtp" && cols[1] == "inet" {
                        cols[0] = format!("127.0.0.1:{port}");
                    }
                    cols[4] = "n".into();
                }
                out.push_str(&cols.join(" "));
            }
            out.push('\n');
        }
        std::fs::write(d.join("etc/master.cf"), out).unwrap();
        let sasldb = d.join("etc/sasldb2");
        let mut child = Command::new("saslpasswd2")
            .args(["-c", "-p", "-f"])
            .arg(&sasldb)
            .args(["-u", "localhost", SMTP_USER])
            .stdin(Stdio::piped())
            .spawn()
            .expect("saslpasswd2 (sasl2-bin) is installed");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(SMTP_PASSWORD.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        sh(
            Command::new("chgrp").arg("postfix").arg(&sasldb),
            "chgrp sasldb",
        );
        std::fs::set_permissions(&sasldb, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::fs::write(
            d.join("etc/sasl/smtpd.conf"),
            format!("pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {}\nmech_list: PLAIN LOGIN\n", sasldb.display()),
        )
        .unwrap();
        sh(
            Command::new("chown")
                .arg("postfix")
                .arg(d.join("mail"))
                .arg(d.join("data")),
            "chown",
        );
        sh(
            Command::new("postfix")
                .arg("-c")
                .arg(d.join("etc"))
                .arg("start"),
            "postfix start",
        );
        wait_listening(port, "postfix");
        Postfix { dir, port }
    }

    /// Messages delivered so far (Maildir new/ files; Postfix stores them with LF, given back as CRLF).
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        let new = self.dir.path().join("mail/inbox/new");
        let Ok(entries) = std::fs::read_dir(new) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .map(|m| super::to_crlf(&m))
            .collect()
    }

    pub fn wait_delivered(&self, n: usize) -> Vec<Vec<u8>> {
        let start = Instant::now();
        loop {
            let got = self.delivered();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30) * super::spool::SLACK,
                "postfix delivered {} of {n}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

/// `main_cf` with each setting of `extra` in place of the one of the same name. Postfix would take
/// the last of two, but every one of its processes then warns "overriding earlier entry" as it
/// starts: with `maillog_file`, postlogd logs its own warning to its own socket, and when the other
/// processes' warnings have filled that socket's queue (`net.unix.max_dgram_qlen`, 10 here) it
/// waits on itself for ever, and with it every process that logs (`postfix stop` too).
fn overridden(main_cf: &str, extra: &str) -> String {
    let key = |line: &str| line.split('=').next().unwrap_or("").trim().to_string();
    let replaced: Vec<String> = extra.lines().map(key).filter(|k| !k.is_empty()).collect();
    let mut out: String = main_cf
        .lines()
        .filter(|l| !replaced.contains(&key(l)))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(extra);
    out
}

impl Drop for Postfix {
    /// `postfix stop`; should it not end (a Postfix that hangs must not hang the suite), the
    /// instance's process group (its master's pid: master runs in a session of its own) is killed.
    fn drop(&mut self) {
        let master = std::fs::read_to_string(self.dir.path().join("queue/pid/master.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        let stop = Command::new("postfix")
            .arg("-c")
            .arg(self.dir.path().join("etc"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut stop) = stop else { return };
        let start = Instant::now();
        while stop.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(30) * super::spool::SLACK {
                let _ = stop.kill();
                let _ = stop.wait();
                if let Some(pid) = master.filter(|p| *p > 1) {
                    let group = format!("-{pid}");
                    let _ = Command::new("kill").args(["-9", "--", &group]).status();
                }
                eprintln!("postfix stop hung: its processes were killed");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// smtp-sink, dumping each accepted transaction into a file.
pub struct Sink {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Sink {
    /// `faults`: smtp-sink options such as `["-r", "RCPT"]` (4xx), `["-f", "MAIL"]` (5xx),
    /// `["-q", "."]` (drop the connection after the message).
    pub fn start(faults: &[&str]) -> Sink {
        let dir = tempfile::Builder::new().prefix("sink").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        Sink::start_in(dir, free_port(), faults)
    }

    /// Restarts on the same port with other faults. The dumps so far are dropped: smtp-sink writes
    /// a dump before it answers, so a transaction it then refused (or hung up on) leaves one too.
    pub fn restart(self, faults: &[&str]) -> Sink {
        let port = self.port;
        let mut me = self;
        let _ = me.child.kill();
        let _ = me.child.wait();
        for dump in me.dumps() {
            let _ = std::fs::remove_file(dump);
        }
        let dir = std::mem::replace(&mut me.dir, tempfile::tempdir().unwrap());
        Sink::start_in(dir, port, faults)
    }

    fn start_in(dir: tempfile::TempDir, port: u16, faults: &[&str]) -> Sink {
        let template = format!("{}/%s.", dir.path().display());
        let mut cmd = Command::new("smtp-sink");
        if nix_is_root() {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .args(faults)
            .args(["-d", &template])
            .arg(format!("127.0.0.1:{port}"))
            .arg("256")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink (postfix package) is installed");
        wait_listening(port, "smtp-sink");
        Sink { dir, port, child }
    }

    /// Message-IDs of the messages accepted so far, one entry per accepted transaction.
    pub fn message_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let text = String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap_or_default())
                .into_owned();
            if let Some(id) = text.lines().find_map(|l| l.strip_prefix("Message-ID: ")) {
                ids.push(id.trim().to_string());
            }
        }
        ids
    }

    pub fn dumps(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|v| v.split_whitespace().next() == Some("0"))
            })
        })
        .unwrap_or(false)
}

/// The `[smtp]` section for a server on `port`.
pub fn smtp_section(port: u16, extra: &str) -> String {
    format!("[smtp]\nhost = \"127.0.0.1\"\nport = {port}\n{extra}")
}

pub fn postfix_section(pf: &Postfix, extra: &str) -> String {
    format!(
        "[smtp]\nhost = \"localhost\"\nport = {}\nuser = \"{SMTP_USER}\"\ntls = \"starttls\"\ntls_ca = \"{}\"\n{extra}",
        pf.port,
        pki().join("ca.pem").display()
    )
}
