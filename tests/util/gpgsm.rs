//! gpgsm (GnuPG's S/MIME tool), an S/MIME implementation independent of OpenSSL.
//!
//! One GnuPG home (test CA trusted, the recipients' PKCS#12 keys imported) is shared by the tests of a
//! binary that run at the same time; the last of them to let go stops the home's gpg-agent
//! (`gpgconf --kill`) and removes the folder, so a test run leaves no agent behind. A later test
//! makes a new home.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, Weak};

use super::pki;

pub struct Gpgsm {
    home: tempfile::TempDir,
    /// gpgsm calls on one home are serialised: they share the keybox and the agent.
    lock: Mutex<()>,
}

static SHARED: Mutex<Weak<Gpgsm>> = Mutex::new(Weak::new());

/// The shared home; hold the handle for as long as the test uses gpgsm.
pub fn gpgsm() -> Arc<Gpgsm> {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(g) = shared.upgrade() {
        return g;
    }
    let g = Arc::new(Gpgsm::new());
    *shared = Arc::downgrade(&g);
    g
}

impl Drop for Gpgsm {
    fn drop(&mut self) {
        // the agent was started by gpgsm on first use of a private key; it would outlive the test
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Gpgsm {
    fn new() -> Gpgsm {
        let home = tempfile::Builder::new().prefix("gnupg").tempdir().unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(home.path().join("gpgsm.conf"), "disable-crl-checks\n").unwrap();
        std::fs::write(
            home.path().join("gpg-agent.conf"),
            "allow-loopback-pinentry\n",
        )
        .unwrap();
        let g = Gpgsm {
            home,
            lock: Mutex::new(()),
        };
        let o = g
            .cmd(&["--batch", "--import"])
            .arg(pki().join("ca.pem"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "gpgsm import CA: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        for entry in std::fs::read_dir(pki().join("private")).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "p12") {
                let o = g.with_passphrase(
                    &[
                        "--batch",
                        "--pinentry-mode",
                        "loopback",
                        "--passphrase-fd",
                        "0",
                        "--import",
                    ],
                    &p,
                );
                assert!(
                    o.status.success(),
                    "gpgsm import {}: {}",
                    p.display(),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
        let o = g
            .cmd(&["--with-colons", "--fingerprint", "smime-pickup Test CA"])
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&o.stdout);
        let fpr = listing
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.split(':').nth(8).unwrap().to_string())
            })
            .expect("the CA fingerprint");
        std::fs::write(g.home.path().join("trustlist.txt"), format!("{fpr} S\n")).unwrap();
        g
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("gpgsm");
        c.env("GNUPGHOME", self.home.path()).args(args);
        c
    }

    fn with_passphrase(&self, args: &[&str], file: &Path) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd(args)
            .arg(file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"test\n").unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs gpgsm with a private key (the passphrase on stdin) over `input`, written to `dir`;
    /// Ok(what it wrote) only when its status lines say `done`.
    fn with_key(
        &self,
        dir: &Path,
        input: &[u8],
        args: &[&str],
        done: &str,
    ) -> Result<Vec<u8>, String> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let (in_path, out_path) = (dir.join("gpgsm-in"), dir.join("gpgsm-out"));
        let _ = std::fs::remove_file(&out_path);
        std::fs::write(&in_path, input).unwrap();
        let mut all = vec![
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase-fd",
            "0",
            "--status-fd",
            "1",
            "--output",
            out_path.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let o = self.with_passphrase(&all, &in_path);
        let status = String::from_utf8_lossy(&o.stdout);
        if status.contains(done) {
            Ok(std::fs::read(&out_path).unwrap())
        } else {
            Err(format!("{status}\n{}", String::from_utf8_lossy(&o.stderr)))
        }
    }

    /// Decrypts a DER EnvelopedData; Ok(plaintext) only when gpgsm says DECRYPTION_OKAY.
    pub fn decrypt(&self, dir: &Path, der: &[u8]) -> Result<Vec<u8>, String> {
        self.with_key(dir, der, &["--decrypt"], "DECRYPTION_OKAY")
    }

    /// `gpgsm --detach-sign` of `content` as `signer` (a key imported from `private/`): the DER
    /// SignedData, with every certificate of the chain but the root.
    pub fn sign_detached(
        &self,
        dir: &Path,
        signer: &str,
        content: &[u8],
    ) -> Result<Vec<u8>, String> {
        let args = [
            "--include-certs",
            "-2",
            "--local-user",
            signer,
            "--detach-sign",
        ];
        self.with_key(dir, content, &args, "SIG_CREATED")
    }

    /// Verifies a detached signature over `content`; Ok only with GOODSIG and VALIDSIG.
    pub fn verify_detached(&self, dir: &Path, sig: &[u8], content: &[u8]) -> Result<(), String> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let sig_path = dir.join("gpgsm-sig.p7s");
        let content_path = dir.join("gpgsm-content");
        std::fs::write(&sig_path, sig).unwrap();
        std::fs::write(&content_path, content).unwrap();
        let o = self
            .cmd(&["--batch", "--status-fd", "1", "--verify"])
            .arg(&sig_path)
            .arg(&content_path)
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&o.stdout);
        if status.contains("GOODSIG") && status.contains("VALIDSIG") {
            Ok(())
        } else {
            Err(format!("{status}\n{}", String::from_utf8_lossy(&o.stderr)))
        }
    }

    /// Verifies an opaque SignedData; returns its content.
    pub fn verify_opaque(&self, dir: &Path, der: &[u8]) -> Result<Vec<u8>, String> {
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let input = dir.join("gpgsm-signed.der");
        let output = dir.join("gpgsm-content-out");
        let _ = std::fs::remove_file(&output);
        std::fs::write(&input, der).unwrap();
        let o = self
            .cmd(&[
                "--batch",
                "--status-fd",
                "1",
                "--output",
                output.to_str().unwrap(),
                "--verify",
            ])
            .arg(&input)
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&o.stdout);
        if status.contains("GOODSIG") && status.contains("VALIDSIG") {
            Ok(std::fs::read(&output).unwrap())
        } else {
            Err(format!("{status}\n{}", String::from_utf8_lossy(&o.stderr)))
        }
    }
}
