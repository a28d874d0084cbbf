//! NSS's `cmsutil` (Mozilla's S/MIME engine, the one Thunderbird uses), a third implementation
//! besides the openssl CLI and gpgsm.
//!
//! One certificate database (the test CA trusted for email, every recipient's PKCS#12 key imported)
//! is shared by the tests of a binary that run at the same time and removed by the last of them.
//! cmsutil runs no daemon, so nothing outlives the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, Weak};

use super::pki;

pub struct Nss {
    db: tempfile::TempDir,
}

static SHARED: Mutex<Weak<Nss>> = Mutex::new(Weak::new());

/// The shared database; hold the handle for as long as the test uses cmsutil.
pub fn nss() -> Arc<Nss> {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = shared.upgrade() {
        return n;
    }
    let n = Arc::new(Nss::new());
    *shared = Arc::downgrade(&n);
    n
}

fn ok(o: std::io::Result<Output>, what: &str) -> Output {
    let o = o.unwrap_or_else(|e| panic!("{what}: {e} (libnss3-tools: tests/setup.sh installs it)"));
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

impl Nss {
    fn new() -> Nss {
        let db = tempfile::Builder::new().prefix("nssdb").tempdir().unwrap();
        let n = Nss { db };
        let d = n.dir();
        ok(
            Command::new("certutil")
                .args(["-N", "-d", &d, "--empty-password"])
                .output(),
            "certutil -N",
        );
        ok(
            Command::new("certutil")
                .args(["-A", "-d", &d, "-n", "test-ca", "-t", "CT,C,C", "-i"])
                .arg(pki().join("ca.pem"))
                .output(),
            "certutil -A (the test CA)",
        );
        for entry in std::fs::read_dir(pki().join("private")).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "p12") {
                ok(
                    Command::new("pk12util")
                        .args(["-d", &d, "-W", "test", "-K", "", "-i"])
                        .arg(&p)
                        .output(),
                    &format!("pk12util {}", p.display()),
                );
            }
        }
        n
    }

    fn dir(&self) -> String {
        format!("sql:{}", self.db.path().display())
    }

    fn cmsutil(&self, args: &[&str], files: &[&Path]) -> Output {
        let mut c = Command::new("cmsutil");
        c.args(["-d", &self.dir(), "-p", ""]).args(args);
        for f in files {
            c.arg(f);
        }
        c.output()
            .unwrap_or_else(|e| panic!("cmsutil: {e} (libnss3-tools: tests/setup.sh installs it)"))
    }

    fn failure(o: &Output) -> String {
        format!(
            "cmsutil exit {:?}: {}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    /// Decrypts a DER EnvelopedData with whichever imported key it is for.
    pub fn decrypt(&self, dir: &Path, der: &[u8]) -> Result<Vec<u8>, String> {
        let input = dir.join("nss-in.der");
        let output: PathBuf = dir.join("nss-out");
        let _ = std::fs::remove_file(&output);
        std::fs::write(&input, der).unwrap();
        let o = self.cmsutil(&["-D", "-i", input.to_str().unwrap(), "-o"], &[&output]);
        if o.status.success() {
            Ok(std::fs::read(&output).unwrap())
        } else {
            Err(Self::failure(&o))
        }
    }

    /// Verifies a detached signature over the exact `content` for an email signer (`-u 4`).
    pub fn verify_detached(&self, dir: &Path, sig: &[u8], content: &[u8]) -> Result<(), String> {
        let sig_path = dir.join("nss-sig.der");
        let content_path = dir.join("nss-content");
        std::fs::write(&sig_path, sig).unwrap();
        std::fs::write(&content_path, content).unwrap();
        let o = self.cmsutil(
            &[
                "-D",
                "-u",
                "4",
                "-v",
                "-i",
                sig_path.to_str().unwrap(),
                "-c",
            ],
            &[&content_path],
        );
        let text = String::from_utf8_lossy(&o.stdout);
        if o.status.success() && !text.contains("DigestMismatch") {
            Ok(())
        } else {
            Err(Self::failure(&o))
        }
    }
}
