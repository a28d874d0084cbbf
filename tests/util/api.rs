//! The strict HTTP Transmissions API stand-in (`api_server.py`, Python's http.server over TLS with
//! the test CA's `localhost` certificate) as a test's server: started on a free port, steered through
//! its control file, stopped by PID when dropped (or killed with -9 by the test).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use super::mta::free_port;
use super::pki;
use super::servers::spawn_ready;

/// The key the server accepts (PowerMTA's form: 32-128 of `[A-Za-z0-9_]`).
pub const KEY: &str = "Test_Key_0123456789abcdefABCDEF_xyz";

pub struct ApiServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub flavor: &'static str,
    child: Option<Child>,
}

impl ApiServer {
    pub fn start(flavor: &'static str) -> ApiServer {
        let dir = tempfile::Builder::new()
            .prefix("api-server")
            .tempdir()
            .unwrap();
        let mut s = ApiServer {
            dir,
            port: free_port(),
            flavor,
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let script = d.join("server.py");
        std::fs::write(&script, include_str!("api_server.py")).unwrap();
        let private = pki().join("private");
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg(self.port.to_string())
            .arg(d)
            .arg(private.join("localhost.crt"))
            .arg(private.join("localhost.key"))
            .arg(KEY)
            .arg(self.flavor);
        self.child = Some(spawn_ready(&mut cmd, "api_server.py"));
    }

    /// Kills the server with SIGKILL (a crash: what it stored stays, what it did not answer is lost).
    pub fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A new server process on the same port and folder (after `kill_9`).
    pub fn restart(&mut self) {
        self.kill_9();
        self.spawn();
    }

    /// Replaces the behaviour on demand (see api_server.py), atomically.
    pub fn control(&self, json: &str) {
        let tmp = self.dir.path().join(".control.json");
        std::fs::write(&tmp, json).unwrap();
        std::fs::rename(tmp, self.dir.path().join("control.json")).unwrap();
    }

    /// `[api]` for this server, `extra` appended.
    pub fn section(&self, extra: &str) -> String {
        format!(
            "[api]\nurl = \"https://127.0.0.1:{}/api/v1/transmissions\"\nkey = \"{KEY}\"\n\
             flavor = \"{}\"\ntls_ca = \"pki/ca.pem\"\n{extra}",
            self.port, self.flavor
        )
    }

    fn mail(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// How many transmissions it stored.
    pub fn stored(&self) -> usize {
        std::fs::read_dir(self.mail()).map_or(0, |e| {
            e.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
    }

    /// Every stored transmission, in the order stored.
    pub fn transmissions(&self) -> Vec<serde_json::Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.mail())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// (monotonic time, status, connection number) of every answered request.
    pub fn requests(&self) -> Vec<(f64, u16, usize)> {
        read_lines(&self.dir.path().join("requests.log"))
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect()
    }

    pub fn violations(&self) -> Vec<String> {
        read_lines(&self.dir.path().join("violations.log"))
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The message a transmission carries (`content.email_rfc822`), as bytes.
pub fn rfc822(t: &serde_json::Value) -> Vec<u8> {
    t["content"]["email_rfc822"]
        .as_str()
        .unwrap()
        .as_bytes()
        .to_vec()
}

/// Its recipients' addresses.
pub fn recipients(t: &serde_json::Value) -> Vec<String> {
    t["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"]["email"].as_str().unwrap().to_string())
        .collect()
}
