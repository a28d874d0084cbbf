//! Poison inputs: none may stop the daemon, and none may crash-loop it. Crafted inputs dropped
//! beside normal mail into the running binary; a panic and an abort while sealing, injected through
//! the library's test hook into a daemon run in a child process (this test binary, started again).

mod util;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use smime_pickup::config::Config;
use smime_pickup::daemon::{self, Mode};
use util::crafted;
use util::spool::*;
use util::*;

/// The child: `daemon::run` in `once` mode on the config named by the environment, with the test
/// hook aborting the process on inputs named `abort-*`, faulting on `segv-*`, overflowing the stack
/// on `overflow-*`, killing itself (`kill -9`) on `kill-*` and panicking on `panic-*` while sealing,
/// and (with `POISON_DELIVERY_PANIC` set) panicking on `deliverpanic-*` while delivering and on
/// `afterpanic-*` once its pickup files are published.
#[test]
#[ignore = "run as a child process by the tests below"]
fn child_daemon() {
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
fn child(s: &Setup) -> Output {
    child_with(s, &[])
}

/// The same with more environment; a child that never ends (a `once` that hangs) is killed and
/// fails the test instead of hanging it (the bound is far above what these few inputs take).
fn child_with(s: &Setup, env: &[(&str, &str)]) -> Output {
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
fn summary(out: &str) -> (&str, Vec<usize>) {
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

fn claims(s: &Setup) -> Vec<PathBuf> {
    list_files(&s.path("spool/.smime-pickup"))
        .into_iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

fn reason(s: &Setup, name: &str) -> String {
    std::fs::read_to_string(s.path("failed").join(format!("{name}.reason"))).unwrap_or_default()
}

#[test]
fn an_input_the_daemon_aborts_on_twice_is_quarantined_and_the_rest_delivered() {
    let why = "the daemon crashed 2 times in a row while sealing this input";
    dies_on_it("abort-", 6, 2, why, "it crashed (signal 6)");
}

#[test]
fn an_input_the_daemon_segfaults_on_twice_is_quarantined() {
    let why = "the daemon crashed 2 times in a row while sealing this input";
    dies_on_it("segv-", 11, 2, why, "it crashed (signal 11)");
}

/// Rust's own handler still reports the overflow (ours hands the signal on to it), then aborts.
#[test]
fn an_input_that_overflows_the_stack_twice_is_quarantined_and_the_overflow_reported() {
    let why = "the daemon crashed 2 times in a row while sealing this input";
    let err = dies_on_it("overflow-", 6, 2, why, "it crashed (signal 6)");
    assert!(err.contains("has overflowed its stack"), "{err}");
}

/// `kill -9` from outside (an admin, a stop timeout) is no crash: twice is not enough to call an
/// input poison, and good mail is not quarantined for it; four deaths in a row still end a loop.
#[test]
fn an_input_the_daemon_is_killed_on_is_quarantined_only_after_four_deaths_in_a_row() {
    let why = "the daemon died 4 times in a row while sealing this input (0 of them a crash";
    dies_on_it("kill-", 9, 4, why, "no crash was seen");
}

/// A fatal signal another process sends (an admin's `kill -SEGV`, systemd's watchdog SIGABRT)
/// is no crash the input caused: the process dies of it (Rust's own handler would let a SIGSEGV
/// pass once), leaving no crash note, and it counts as a death of no known cause.
#[test]
fn a_segv_sent_from_outside_kills_and_is_no_strike() {
    let why = "the daemon died 4 times in a row while sealing this input (0 of them a crash";
    dies_on_it("sentsegv-", 11, 4, why, "no crash was seen");
}

#[test]
fn an_abort_sent_from_outside_kills_and_is_no_strike() {
    let why = "the daemon died 4 times in a row while sealing this input (0 of them a crash";
    dies_on_it("sentabrt-", 6, 4, why, "no crash was seen");
}

/// A crash in a thread that was sealing nothing (a delivery thread's, say) is no strike for the
/// inputs being sealed meanwhile: each gets a death, and only four in a row quarantine it.
#[test]
fn a_crash_in_another_thread_is_no_strike_for_the_input_being_sealed() {
    let why = "the daemon died 4 times in a row while sealing this input (0 of them a crash";
    dies_on_it("elsewhere-", 11, 4, why, "in a thread sealing none of them");
}

/// Drops 30 messages and one the child daemon dies on (its name starts with `prefix`), each time
/// of `signal`: it stays claimed, named as sealed, and is tried again (alone) for `deaths` starts;
/// the next start quarantines it with `why` and delivers everything else once. `said` is in what
/// the second start logs about the death. Returns the last death's stderr.
fn dies_on_it(prefix: &str, signal: i32, deaths: usize, why: &str, said: &str) -> String {
    let s = Setup::new("workers = 2\n");
    for n in 0..30 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    let name = format!("{prefix}poison.eml");
    s.drop_message(&name, &message(999));

    let mut last = String::new();
    for start in 1..=deaths {
        // the process dies while sealing the poison, alone from the second start on
        let o = child(&s);
        last = stderr(&o);
        assert_eq!(o.status.signal(), Some(signal), "start {start}: {last}");
        if start == 2 {
            assert!(last.contains(said), "{last}");
        }
        let left = claims(&s);
        let poison = left
            .iter()
            .find(|p| p.to_string_lossy().ends_with(&format!(",{name}")))
            .expect("the poison stays claimed");
        let id = poison.file_name().unwrap().to_string_lossy();
        let id = id.split(',').next().unwrap();
        let sealing = list_files(&s.path("spool/.smime-pickup"))
            .into_iter()
            .find(|p| p.ends_with(".sealing"))
            .unwrap();
        assert!(std::fs::read_to_string(sealing).unwrap().contains(id));
        assert!(!s.path("failed").join(&name).exists(), "start {start}");
    }

    // the next start: not sealed again but quarantined; everything else is delivered once
    let o = child(&s);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(reason(&s, &name).contains(why), "{}", reason(&s, &name));
    let failed: Vec<PathBuf> = list_files(&s.path("failed"));
    assert_eq!(
        failed.len(),
        2,
        "only the poison and its reason: {failed:?}"
    );
    let ids = s.delivered_ids();
    for n in 0..30 {
        assert_eq!(
            ids.get(&format!("<m{n}@test.example.com>")),
            Some(&1),
            "m{n}"
        );
    }
    assert_eq!(ids.len(), 30);
    s.assert_nothing_in_flight();
    last
}

#[test]
fn a_panic_while_sealing_costs_that_input_only() {
    // one worker: had the panic killed it, nothing after the panic would be delivered
    let s = Setup::new("workers = 1\n");
    s.drop_message("panic-first.eml", &message(100));
    for n in 0..5 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    s.drop_message("sub/panic-second.eml", &message(101));
    let o = child(&s);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("SUMMARY 5 delivered, 2 failed, 0 deferred"),
        "{out}\n{}",
        stderr(&o)
    );
    for name in ["panic-first.eml", "sub/panic-second.eml"] {
        let file = Path::new(name).file_name().unwrap().to_string_lossy();
        assert!(
            reason(&s, name).contains(&format!(
                "internal error while sealing: a test panic on {file}"
            )),
            "{name}: {}",
            reason(&s, name)
        );
        // logged with its name
        assert!(
            stderr(&o).contains(&format!("{name}: internal error while sealing")),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(s.delivered_ids().len(), 5);
    s.assert_nothing_in_flight();
}

#[test]
fn a_panic_while_delivering_defers_its_batch_and_the_next_run_delivers_it_once() {
    // one worker and one delivery thread: had the panic killed the delivery thread, the worker
    // would wait for it for ever and `once` would never end
    let s = Setup::new("workers = 1\n");
    s.drop_message("deliverpanic-x.eml", &message(100));
    for n in 0..5 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    let o = child_with(&s, &[("POISON_DELIVERY_PANIC", "1")]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(
        stderr(&o).contains("internal error while delivering")
            && stderr(&o).contains("a test panic delivering deliverpanic-x.eml"),
        "{}",
        stderr(&o)
    );
    // the batch that met the panic is deferred whole (still claimed), the rest delivered
    let (summary, numbers) = summary(&out);
    let (delivered, failed, deferred) = (numbers[0], numbers[1], numbers[2]);
    assert_eq!(failed, 0, "{summary}");
    assert!(deferred >= 1 && delivered + deferred == 6, "{summary}");
    assert_eq!(s.delivered_ids().len(), delivered);
    assert_eq!(claims(&s).len(), deferred, "{:?}", claims(&s));
    // the next run (the bug gone) delivers what waited, each message once
    let o = child(&s);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "SUMMARY {deferred} delivered, 0 failed, 0 deferred"
        )),
        "{out}\n{}",
        stderr(&o)
    );
    assert_eq!(s.delivered_ids().len(), 6);
    s.assert_nothing_in_flight();
}

#[test]
fn a_panic_after_publishing_defers_only_what_is_still_claimed_and_publishes_nothing_twice() {
    // the panic comes once the batch is published: with inode reuse on, the delivered claims of a
    // batch of 8 or more (most of these 60) are kept under their committed names for the next one
    let s = Setup::on_tmpfs("workers = 1\nreuse_inodes = \"always\"\n");
    for n in 0..59 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    s.drop_message("afterpanic-x.eml", &message(100));
    let o = child_with(&s, &[("POISON_DELIVERY_PANIC", "1")]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(
        stderr(&o).contains("a test panic after delivering afterpanic-x.eml"),
        "{}",
        stderr(&o)
    );
    let (summary, numbers) = summary(&out);
    // what the summary calls deferred is what waits, claimed, for the next run
    assert_eq!(claims(&s).len(), numbers[2], "{summary}: {:?}", claims(&s));
    let once = |s: &Setup| {
        let ids = s.delivered_ids();
        assert!(ids.values().all(|&c| c == 1), "{ids:?}");
        ids.len()
    };
    assert_eq!(
        once(&s),
        60,
        "every message published, before or after the panic"
    );
    let o = child(&s);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(once(&s), 60, "nothing published again");
    s.assert_nothing_in_flight();
}

/// Waits until `done`, failing only when nothing moved in the spool, pickup or failed folder for
/// `stall` (progress, not the clock, decides: the machine may be slow).
fn wait_progressing(s: &Setup, what: &str, stall: Duration, done: impl Fn() -> bool) {
    let count = || {
        ["spool", "pickup", "failed"]
            .iter()
            .map(|d| list_files(&s.path(d)).len())
            .collect::<Vec<_>>()
    };
    let (mut last, mut since) = (count(), Instant::now());
    while !done() {
        let now = count();
        if now != last {
            (last, since) = (now, Instant::now());
        }
        assert!(
            since.elapsed() < stall,
            "no progress for {stall:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The inputs of the "done when", by name, and the refusal each must get with the default
/// limits (`None`: delivered).
fn crafted_inputs() -> Vec<(&'static str, Vec<u8>, Option<&'static str>)> {
    vec![
        (
            "nested-5000.eml",
            crafted::nested("n5k", 5_000),
            Some("max_mime_depth = 100"),
        ),
        (
            "nested-50000.eml",
            crafted::nested("n50k", 50_000),
            Some("max_mime_depth = 100"),
        ),
        (
            "messages-5000.eml",
            crafted::nested_messages("m5k", 5_000),
            Some("max_mime_depth = 100"),
        ),
        ("nested-60.eml", crafted::nested("n60", 60), None),
        (
            "header-5mb.eml",
            crafted::long_header("h5m", 5 << 20, false),
            Some("over max_header_bytes (1048576)"),
        ),
        (
            "header-500k-words.eml",
            crafted::long_header("h500k", 500 << 10, true),
            None,
        ),
        (
            "header-500k-word.eml",
            crafted::long_header("h500kw", 500 << 10, false),
            Some("without a place to fold"),
        ),
        (
            "parts-200000.eml",
            crafted::many_parts("p200k", 200_000),
            Some("max_mime_parts = 10000"),
        ),
        ("parts-5000.eml", crafted::many_parts("p5k", 5_000), None),
        (
            "fields-100000.eml",
            crafted::many_fields("f100k", 100_000),
            Some("over max_header_bytes"),
        ),
        (
            "fields-10000.eml",
            crafted::many_fields("f10k", 10_000),
            None,
        ),
    ]
}

#[test]
fn crafted_inputs_beside_normal_mail_end_delivered_or_refused_and_the_daemon_runs_on() {
    let s = Setup::on_tmpfs("workers = 2\n");
    let mut daemon = s.start("daemon.log");
    let inputs = crafted_inputs();
    let normal = 40;
    for n in 0..normal / 2 {
        s.drop_message(&format!("before-{n}.eml"), &message(n));
    }
    for (name, bytes, _) in &inputs {
        s.drop_message(name, bytes);
    }
    for n in normal / 2..normal {
        s.drop_message(&format!("after-{n}.eml"), &message(n));
    }
    let refused = inputs.iter().filter(|i| i.2.is_some()).count();
    let delivered = normal + inputs.len() - refused;
    wait_progressing(&s, "every input to end", Duration::from_secs(60), || {
        let failed = list_files(&s.path("failed"))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "reason"))
            .count();
        failed == refused && s.delivered_ids().len() == delivered
    });
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited");

    for (name, _, refusal) in &inputs {
        match refusal {
            Some(why) => assert!(
                reason(&s, name).contains(why),
                "{name}: {}",
                reason(&s, name)
            ),
            None => assert!(
                !s.path("failed").join(name).exists(),
                "{name}: {}",
                reason(&s, name)
            ),
        }
    }
    let ids = s.delivered_ids();
    for n in 0..normal {
        assert_eq!(
            ids.get(&format!("<m{n}@test.example.com>")),
            Some(&1),
            "m{n}"
        );
    }
    for f in s.pickup_files() {
        let bytes = std::fs::read(&f).unwrap();
        assert_crlf_only(&bytes, &f.display().to_string());
        assert_lines_fit(&bytes, &f.display().to_string());
    }
    // the folded header arrives whole: unfolded, it is the value that went in
    let folded = s
        .pickup_files()
        .into_iter()
        .map(|f| std::fs::read(f).unwrap())
        .find(|b| header(b, "message-id").unwrap().contains("h500k@"))
        .unwrap();
    let unfolded = String::from_utf8_lossy(&folded).replace("\r\n ", " ");
    assert!(unfolded.contains(&format!(
        "X-Long: {}end\r\n",
        "word ".repeat((500 << 10) / 5)
    )));

    signal(&daemon, "-TERM");
    assert!(wait_exit(&mut daemon, Duration::from_secs(30)).success());
    s.assert_nothing_in_flight();
}

#[test]
fn with_the_widest_limits_the_same_inputs_are_sealed_in_bounded_time() {
    // the engine itself, not the limits, must cope: everything it may be allowed
    let s = Setup::on_tmpfs(
        "workers = 2\nmax_mime_depth = 1000\nmax_header_bytes = 67108864\nmax_mime_parts = 1000000\n",
    );
    let inputs = [
        ("nested-1000.eml", crafted::nested("n1k", 1_000), None),
        (
            "messages-1000.eml",
            crafted::nested_messages("m1k", 1_000),
            None,
        ),
        (
            "nested-50000.eml",
            crafted::nested("n50k", 50_000),
            Some("max_mime_depth = 1000"),
        ),
        (
            "parts-200000.eml",
            crafted::many_parts("p200k", 200_000),
            None,
        ),
        (
            "fields-100000.eml",
            crafted::many_fields("f100k", 100_000),
            None,
        ),
        (
            "header-5mb-words.eml",
            crafted::long_header("h5mw", 5 << 20, true),
            None,
        ),
        (
            "header-5mb.eml",
            crafted::long_header("h5m", 5 << 20, false),
            Some("without a place to fold"),
        ),
    ];
    for (name, bytes, _) in &inputs {
        s.drop_message(name, bytes);
    }
    let o = s.once();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("5 delivered, 2 failed, 0 deferred"),
        "{out}\n{}",
        stderr(&o)
    );
    for (name, _, refusal) in &inputs {
        if let Some(why) = refusal {
            assert!(
                reason(&s, name).contains(why),
                "{name}: {}",
                reason(&s, name)
            );
        }
    }
    for f in s.pickup_files() {
        let bytes = std::fs::read(&f).unwrap();
        assert_lines_fit(&bytes, &f.display().to_string());
    }
}

/// An input far larger than memory (a sparse 200 GB file) is refused for its size before anything
/// is read, fresh from the spool or left claimed by a daemon that died: memory for it is never asked
/// for (it aborted the process at every start), and the others are delivered.
#[test]
fn an_input_larger_than_memory_is_refused_unread() {
    let s = Setup::new("");
    let huge = |path: &std::path::Path| {
        let f = std::fs::File::create(path).unwrap();
        f.set_len(200 << 30).unwrap(); // sparse: no blocks
    };
    huge(&s.path("spool/huge.eml"));
    // what a daemon killed while holding the same kind of input leaves behind
    let dead = s.path("spool/.smime-pickup/i1dead");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join(".lock"), "").unwrap();
    huge(&dead.join("i1dead-0,claimed.eml"));
    s.drop_message("fine.eml", &message(1));
    let o = s.once();
    let out = String::from_utf8_lossy(&o.stdout);
    // 65: some inputs went to the failed folder (it ran to the end: no abort)
    assert_eq!(o.status.code(), Some(65), "{out}\n{}", stderr(&o));
    assert!(
        out.contains("1 delivered, 2 failed, 0 deferred"),
        "{out}\n{}",
        stderr(&o)
    );
    for name in ["huge.eml", "claimed.eml"] {
        let why = reason(&s, name);
        assert!(
            why.contains("input: message is 214748364800 bytes, over max_message_bytes"),
            "{name}: {why}"
        );
    }
    s.assert_nothing_in_flight();
}
