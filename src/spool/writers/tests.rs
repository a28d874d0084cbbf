use super::*;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A test folder with one complete file in it.
fn folder() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.eml");
    std::fs::write(&path, b"complete\n").unwrap();
    (tmp, path)
}

/// What each way of asking says about `path`: (lease, /proc).
fn ask(dir: &Path, path: &Path) -> (bool, bool) {
    let f = File::open(path).unwrap();
    let meta = f.metadata().unwrap();
    let lease = Writers::new(dir).busy(&f, &meta);
    (lease, Writers::proc_only(dir).busy(&f, &meta))
}

/// A child process, killed and reaped when dropped.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Another process that holds `path` open for writing (as its stdout) until dropped; ours closes.
fn held_by_another_process(path: &Path) -> Holder {
    let w = OpenOptions::new().append(true).open(path).unwrap();
    Holder(Command::new("sleep").arg("600").stdout(w).spawn().unwrap())
}

#[test]
fn a_file_open_for_writing_is_busy_both_ways_and_a_closed_one_is_not() {
    let (tmp, path) = folder();
    assert_eq!(ask(tmp.path(), &path), (false, false));
    // readers do not count, however many
    let _reader = File::open(&path).unwrap();
    assert_eq!(ask(tmp.path(), &path), (false, false));

    let mut w = OpenOptions::new().write(true).open(&path).unwrap();
    assert_eq!(ask(tmp.path(), &path), (true, true), "another descriptor");
    w.write_all(b"more").unwrap();
    drop(w);
    assert_eq!(ask(tmp.path(), &path), (false, false), "closed");

    let holder = held_by_another_process(&path);
    assert_eq!(ask(tmp.path(), &path), (true, true), "another process");
    drop(holder);
    assert_eq!(ask(tmp.path(), &path), (false, false), "its writer gone");

    // a lease taken and given back leaves the file to the next writer at once
    let _w = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .expect("no lease left behind");
}

#[test]
fn a_granted_lease_never_scans_proc() {
    let (tmp, path) = folder();
    let f = File::open(&path).unwrap();
    let writers = Writers::new(tmp.path());
    assert!(!writers.busy(&f, &f.metadata().unwrap()));
    assert!(writers.scanned.get().is_none(), "no /proc scan needed");
}

/// A writable shared mapping whose descriptor was closed: the lease sees it, /proc fd does not.
#[test]
fn a_writable_shared_mapping_without_a_descriptor_is_busy_by_lease() {
    let (tmp, path) = folder();
    // Python's mmap keeps a duplicate descriptor of its own: closed too, by its /proc/self/fd link
    let script = "import mmap, os, sys\n\
        p = sys.argv[1]\n\
        f = open(p, 'r+b'); m = mmap.mmap(f.fileno(), 0); f.close()\n\
        for fd in os.listdir('/proc/self/fd'):\n\
        \x20   try:\n\
        \x20       if os.readlink('/proc/self/fd/' + fd) == p: os.close(int(fd))\n\
        \x20   except OSError: pass\n\
        print('mapped', flush=True)\n\
        sys.stdin.read()\n";
    let mut child = Holder(
        Command::new("python3")
            .args(["-c", script])
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3"),
    );
    let mut line = String::new();
    let out = child.0.stdout.take().unwrap();
    BufReader::new(out).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "mapped");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", child.0.id())).unwrap();
    for fd in fds.flatten() {
        assert_ne!(std::fs::read_link(fd.path()).ok().as_deref(), Some(&*path));
    }
    assert_eq!(ask(tmp.path(), &path), (true, false));
    drop(child.0.stdin.take());
    let _ = child.0.wait();
    assert_eq!(ask(tmp.path(), &path), (false, false));
}

/// A lease the kernel refuses (a file of another user, without CAP_LEASE) falls back to /proc, which
/// gives the same answers. Needs root, to own a file for another user and drop CAP_LEASE (from this
/// thread only).
#[test]
fn a_refused_lease_falls_back_to_proc_with_the_same_answers() {
    use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (tmp, path) = folder();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let before = capabilities(None).unwrap();
    let mut without = before;
    without.effective.remove(CapabilitySet::LEASE);
    set_capabilities(None, without).unwrap();

    let f = File::open(&path).unwrap();
    let refused = set_lease(f.as_fd(), Lease::Read).unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EACCES), "{refused}");
    let writers = Writers::new(tmp.path());
    assert!(!writers.busy(&f, &f.metadata().unwrap()));
    assert!(writers.scanned.get().is_some(), "fell back to /proc");
    let w = OpenOptions::new().write(true).open(&path).unwrap();
    assert_eq!(ask(tmp.path(), &path), (true, true));
    drop(w);
    let holder = held_by_another_process(&path);
    assert_eq!(ask(tmp.path(), &path), (true, true));
    drop(holder);
    assert_eq!(ask(tmp.path(), &path), (false, false));

    set_capabilities(None, before).unwrap();
}

/// A SIGIO, as a writer opening the file while we hold the lease makes the kernel send, does not
/// end the process once a `Writers` was made.
#[test]
fn sigio_is_harmless_once_a_writers_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let _ = Writers::new(tmp.path());
    // without a handler, the kernel ends the whole process while sending it (SIGIO is fatal)
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::IO).unwrap();
}

#[test]
fn proc_sees_a_file_open_for_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("w.eml");
    let mut f = File::create(&path).unwrap();
    f.write_all(b"partial").unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert!(scan_proc(tmp.path()).contains(&(meta.dev(), meta.ino())));
    drop(f);
    assert!(!scan_proc(tmp.path()).contains(&(meta.dev(), meta.ino())));
}
