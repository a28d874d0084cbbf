//! The crash-loop guard: an input the daemon crashes on (abort, fault, stack overflow) twice in a
//! row is quarantined; deaths of no known cause (`kill -9`, a signal sent from outside, a crash in
//! a thread sealing nothing) are counted apart and quarantine only after four. Each death is
//! injected through the library's test hook into a daemon run in a child process (`util::child`).

mod util;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

use util::child::{child, claims, reason};
use util::spool::*;
use util::*;

/// The child daemon (`util::child`), run by the tests below as a process of its own.
#[test]
#[ignore = "run as a child process by the tests below"]
fn child_daemon() {
    util::child::daemon();
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
