//! Poison inputs: none may stop the daemon. Crafted inputs dropped beside normal mail into the
//! running binary; panics while sealing and delivering, injected through the library's test hook
//! into a daemon run in a child process (`util::child`). Crash-loops: tests/deaths.rs.

mod util;

use std::path::Path;
use std::time::{Duration, Instant};

use util::child::{child, child_with, claims, reason, summary};
use util::crafted;
use util::spool::*;
use util::*;

/// The child daemon (`util::child`), run by the tests below as a process of its own.
#[test]
#[ignore = "run as a child process by the tests below"]
fn child_daemon() {
    util::child::daemon();
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
