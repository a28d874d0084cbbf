//! A daemon run in a child process (the test binary, started again on its ignored `child_daemon`
//! test, which calls `daemon()`), with the library's test hook making it panic, abort, fault,
//! overflow its stack or be killed while it seals or delivers inputs of chosen names.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use smime_pickup::config::Config;
use smime_pickup::daemon::{self, Mode};

use super::spool::*;

/// The child's body: `daemon::run` in `once` mode on the config named by the environment, with the test
/// hook aborting the process on inputs named `abort-*`, faulting on `segv-*`, overflowing the stack
/// on `overflow-*`, killing itself (`kill -9`) on `kill-*` and panicking on `panic-*` while sealing,
/// and (with `POISON_DELIVERY_PANIC` set) panicking on `deliverpanic-*` while delivering and on
/// `afterpanic-*` once its pickup files are published.
pub fn daemon() {
    let Some(config) = std::env::var_os("POISON_TEST_CONFIG") else {
        return;
    };
    let _ = env_logger::Builder::new().parse_filters("info").try_init();
    smime_pickup::spool::crashguard::set_test_hook(|stage, rel| {
        let name = rel.file_name().unwrap().to_string_lossy();
        if stage == smime_pickup::spool::crashguard::Stage::Delivered {
            if name.starts_with("afterpanic-")
                && std::env::var_os("POISON_DELIVERY_PANIC").is_some()
            {
                panic!("a test panic after delivering {name}");
            }
            return;
        }
        if stage == smime_pickup::spool::crashguard::Stage::Delivering {
            if name.starts_with("deliverpanic-")
                && std::env::var_os("POISON_DELIVERY_PANIC").is_some()
            {
                panic!("a test panic delivering {name}");
            }
            return;
        }
        if name.starts_with("abort-") {
            std::process::abort();
        }
        if name.starts_with("segv-") {
            // SAFETY: none; the point is the fault (a write to the unmapped first page)
            unsafe {
                std::ptr::null_mut::<u8>()
                    .wrapping_add(64)
                    .write_volatile(1)
            };
        }
        if name.starts_with("elsewhere-") {
            // a crash in a thread that seals nothing (as a delivery thread's would be)
            std::thread::spawn(|| {
                // SAFETY: none; the point is the fault
                unsafe {
                    std::ptr::null_mut::<u8>()
                        .wrapping_add(64)
                        .write_volatile(1)
                };
            });
            loop {
                std::thread::park();
            }
        }
        if name.starts_with("overflow-") {
            std::hint::black_box(deep(std::hint::black_box(1)));
        }
        for (prefix, sig) in [("sentsegv-", libc::SIGSEGV), ("sentabrt-", libc::SIGABRT)] {
            if name.starts_with(prefix) {
                sent_from_outside(sig);
                // let pass: the process goes on; it is killed the way an admin would
                let me = std::process::id().to_string();
                let _ = Command::new("kill").args(["-9", &me]).status();
                loop {
                    std::thread::park();
                }
            }
        }
        if name.starts_with("kill-") {
            let me = std::process::id().to_string();
            let _ = Command::new("kill").args(["-9", &me]).status();
            loop {
                std::thread::park(); // until the signal lands
            }
        }
        if name.starts_with("panic-") {
            panic!("a test panic on {name}");
        }
    });
    let config = Config::read(Path::new(&config)).unwrap();
    let summary = daemon::run(config, Mode::Once, daemon::Control::none()).unwrap();
    println!("SUMMARY {summary}");
}

/// `sig` as another process sends it (`kill -SEGV`, systemd's watchdog SIGABRT): the kernel's
/// record names the sender (here the test runner) and no fault. Sent to this very thread, it is
/// handled before the call returns.
fn sent_from_outside(sig: i32) {
    // siginfo_t: signo, errno, code, then (after padding on 64 bits) the sender's pid and uid
    let mut info = [0i32; 32];
    let fields = if cfg!(target_pointer_width = "64") {
        4
    } else {
        3
    };
    info[0] = sig;
    info[2] = libc::SI_USER;
    info[fields] = std::os::unix::process::parent_id() as i32;
    // SAFETY: getuid cannot fail; rt_tgsigqueueinfo reads 128 bytes of `info`, and a process may
    // send itself any si_code
    unsafe {
        info[fields + 1] = libc::getuid() as i32;
        let (pid, tid) = (libc::getpid(), libc::gettid());
        let sent = libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, tid, sig, info.as_ptr());
        assert_eq!(sent, 0, "{}", std::io::Error::last_os_error());
    }
}

/// Recursion without end (but for the compiler's sake), each frame with a buffer on the stack.
fn deep(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 64]);
    if n == u64::MAX {
        return 0;
    }
    deep(n + 1).wrapping_add(frame[7])
}

/// Runs `child_daemon` on `s`'s config in a new process.
pub fn child(s: &Setup) -> Output {
    child_with(s, &[])
}

/// The same with more environment; a child that never ends (a `once` that hangs) is killed and
/// fails the test instead of hanging it (the bound is far above what these few inputs take).
pub fn child_with(s: &Setup, env: &[(&str, &str)]) -> Output {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_daemon", "--nocapture"])
        .args(["--test-threads", "1"])
        .env("POISON_TEST_CONFIG", &s.config)
        .envs(env.iter().copied())
        .current_dir(s.d.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(120) * SLACK) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the child daemon did not end: `once` hangs");
        }
    }
}

/// The child's `SUMMARY` line and its numbers: delivered, failed, deferred.
pub fn summary(out: &str) -> (&str, Vec<usize>) {
    let line = out[out.find("SUMMARY").expect("a summary")..]
        .lines()
        .next()
        .unwrap();
    let numbers = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    (line, numbers)
}

pub fn claims(s: &Setup) -> Vec<PathBuf> {
    list_files(&s.path("spool/.smime-pickup"))
        .into_iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

pub fn reason(s: &Setup, name: &str) -> String {
    std::fs::read_to_string(s.path("failed").join(format!("{name}.reason"))).unwrap_or_default()
}
