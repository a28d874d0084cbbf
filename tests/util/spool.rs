//! A spool daemon set up in a temp folder: config, folders, the binary in `run` or `once`, and the
//! checks on what came out.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A daemon child that is killed if a test fails before stopping it.
pub struct Running(pub Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A spool, pickup and failed folder beside a copy of the test PKI.
pub struct Setup {
    pub d: Dir,
    pub config: PathBuf,
}

impl Setup {
    pub fn new(extra: &str) -> Setup {
        Setup::in_dir(Dir::new(), extra)
    }

    /// On tmpfs: bursts of thousands of fsyncs stay fast and the disk is not worn.
    pub fn on_tmpfs(extra: &str) -> Setup {
        let tmp = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
        copy_tree(&pki(), &tmp.path().join("pki"));
        for entry in std::fs::read_dir(tmp.path().join("pki/keys")).unwrap() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                entry.unwrap().path(),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
        }
        Setup::in_dir(Dir { tmp }, extra)
    }

    pub fn in_dir(d: Dir, extra: &str) -> Setup {
        for sub in ["spool", "pickup"] {
            std::fs::create_dir_all(d.path().join(sub)).unwrap();
        }
        let config = d.config(&format!(
            "spool = \"spool\"\npickup = \"pickup\"\nfailed = \"failed\"\n{extra}"
        ));
        Setup { d, config }
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.d.path().join(sub)
    }

    pub fn cmd(&self, sub: &str) -> Command {
        let mut c = bin(self.d.path());
        c.arg("-c")
            .arg(&self.config)
            .arg(sub)
            .env("RUST_LOG", "info");
        c
    }

    pub fn once(&self) -> std::process::Output {
        run(&mut self.cmd("once"))
    }

    pub fn start(&self, log: &str) -> Running {
        let log = std::fs::File::create(self.path(log)).unwrap();
        self.cmd("run")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(Running)
            .unwrap()
    }

    /// Copies every `.eml` of `fixtures/<from>` into `spool/<to>`; returns how many.
    pub fn copy_fixtures(&self, from: &str, to: &str) -> usize {
        let target = self.path("spool").join(to);
        std::fs::create_dir_all(&target).unwrap();
        let mut n = 0;
        for entry in std::fs::read_dir(fixtures().join(from)).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "eml") {
                std::fs::copy(&p, target.join(p.file_name().unwrap())).unwrap();
                n += 1;
            }
        }
        n
    }

    /// Drops a message into the spool the way a well-behaved exporter does: write beside, rename in.
    pub fn drop_message(&self, rel: &str, bytes: &[u8]) {
        let target = self.path("spool").join(rel);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let tmp = self
            .path("spool")
            .join(format!(".incoming-{}", rel.replace('/', "_")));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &target).unwrap();
    }

    pub fn pickup_files(&self) -> Vec<PathBuf> {
        list_files(&self.path("pickup"))
    }

    /// Message-ID → number of pickup files carrying it.
    pub fn delivered_ids(&self) -> HashMap<String, usize> {
        let mut ids = HashMap::new();
        for f in self.pickup_files() {
            let bytes = std::fs::read(&f).unwrap();
            let id = header(&bytes, "message-id")
                .unwrap_or_else(|| panic!("{}: no Message-ID", f.display()));
            *ids.entry(id).or_default() += 1;
        }
        ids
    }

    /// Waits until the daemon's log (`log`, under the test folder) contains `text`.
    pub fn wait_for_log(&self, log: &str, text: &str) {
        self.wait_for(text, Duration::from_secs(10), || {
            std::fs::read_to_string(self.path(log))
                .unwrap_or_default()
                .contains(text)
        });
    }

    /// Waits until `done()`, checking every few milliseconds (tests take their moments from
    /// progress). `timeout` only bounds a failing test: it is stretched by [`SLACK`] so that a slow
    /// or loaded machine never fails a test that would pass.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            if start.elapsed() >= timeout * SLACK {
                // what the daemons said is the first thing anyone needs to see
                let mut logs = String::new();
                for f in std::fs::read_dir(self.d.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let p = f.path();
                    if p.extension().is_some_and(|e| e == "log") {
                        let text = std::fs::read_to_string(&p).unwrap_or_default();
                        let tail: Vec<&str> = text.lines().rev().take(40).collect();
                        logs.push_str(&format!("--- {} (last lines)\n", p.display()));
                        for l in tail.into_iter().rev() {
                            logs.push_str(l);
                            logs.push('\n');
                        }
                    }
                }
                panic!("timed out waiting for {what}\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// No claimed input left in any work folder, no staged output left behind (dot-files there are
    /// an instance's own state: its lock and its crash guard).
    pub fn assert_nothing_in_flight(&self) {
        let work = self.path("spool/.smime-pickup");
        let leftovers: Vec<PathBuf> = list_files(&work)
            .into_iter()
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "work folder not empty: {leftovers:?}");
        // pool entries (inodes of delivered claims kept for reuse) may stay after a kill, always
        // readable by the service's user only
        let (pool, staged): (Vec<PathBuf>, Vec<PathBuf>) =
            list_files(&self.d.path().join(".smime-pickup-staging"))
                .into_iter()
                .partition(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".recycled.")
                });
        assert!(staged.is_empty(), "staging not empty: {staged:?}");
        for p in pool {
            use std::os::unix::fs::PermissionsExt;
            let mode = p.metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{} is {mode:o}", p.display());
        }
    }
}

/// How much longer than its nominal timeout a test waits before it calls a wait a failure: timeouts
/// are upper bounds for broken behaviour, never the moment a test acts on.
pub const SLACK: u32 = 4;

pub fn list_files(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

/// A small message to bob with a unique Message-ID.
pub fn message(n: usize) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.com>\nTo: Bob <bob@example.com>\nSubject: number {n}\n\
         Message-ID: <m{n}@test.example.com>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\n\
         This is message {n}.\n"
    )
    .into_bytes()
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > timeout * SLACK {
            let _ = child.kill();
            panic!("the daemon did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The inodes watched by the inotify descriptors of process `pid` (from its fdinfo).
pub fn watched_inodes(pid: u32) -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let fd = fd.unwrap();
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        if target.to_string_lossy() != "anon_inode:inotify" {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        for line in std::fs::read_to_string(info).unwrap().lines() {
            // inotify wd:1 ino:9a2b sdev:... mask:...
            if let Some(ino) = line
                .strip_prefix("inotify wd:")
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|f| f.strip_prefix("ino:"))
            {
                inodes.insert(u64::from_str_radix(ino, 16).unwrap());
            }
        }
    }
    inodes
}
