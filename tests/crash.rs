//! Crashes and company: `kill -9` at moments chosen from progress (each message lands once, inodes
//! reused or not), what a killed daemon leaves behind after its commit point, and two daemons on one
//! spool.

mod util;

use std::time::Duration;

use util::spool::*;
use util::*;

/// A tiny deterministic generator for the kill moments (the seed is printed for reruns).
fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    // reuse is off on tmpfs by default (it pays on ext4 without a journal only): forced here, so
    // the kills also land while claims' inodes become outputs
    let s = Setup::on_tmpfs("settle_ms = 100\nreuse_inodes = \"always\"\n");
    let reused = kill_9_rounds(&s, 2000, 10);
    // tmpfs never hands out an inode number twice: these are claims' inodes, recycled
    assert!(reused > 0, "the killed runs reused no claim's inode");
}

/// With reuse on, a clean exit (`once` draining, `run` stopped by SIGTERM) leaves no delivered
/// input in staging: no pool entry outlives the process that made it.
#[test]
fn a_clean_exit_leaves_no_pool_entry_in_staging() {
    let s = Setup::on_tmpfs("reuse_inodes = \"always\"\n");
    let pool = || -> Vec<std::path::PathBuf> {
        list_files(&s.path(".smime-pickup-staging"))
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".recycled.")
            })
            .collect()
    };
    for n in 0..60 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.pickup_files().len(), 60);
    assert!(pool().is_empty(), "once left {:?}", pool());
    let mut child = s.start("run.log");
    for n in 60..120 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    s.wait_for("all files", Duration::from_secs(60), || {
        s.pickup_files().len() >= 120
    });
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
    assert!(pool().is_empty(), "run left {:?}", pool());
    s.assert_nothing_in_flight();
}

/// `reuse_inodes = "auto"` leaves tmpfs alone: every output is a new inode, and the start says why.
#[test]
fn on_tmpfs_every_output_is_a_new_file_by_default() {
    use std::os::unix::fs::MetadataExt;
    let s = Setup::on_tmpfs("");
    for n in 0..40 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    let inputs: std::collections::HashSet<u64> = list_files(&s.path("spool"))
        .iter()
        .map(|p| p.metadata().unwrap().ino())
        .collect();
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    let outputs = s.pickup_files();
    assert_eq!(outputs.len(), 40);
    if !s.path("").starts_with("/dev/shm") {
        // no tmpfs on this machine: only that the choice is logged
        assert!(
            stderr(&o).contains("reuse_inodes = auto: "),
            "{}",
            stderr(&o)
        );
        return;
    }
    assert!(
        outputs
            .iter()
            .all(|p| !inputs.contains(&p.metadata().unwrap().ino())),
        "an input's inode became an output"
    );
    let said = "reuse_inodes = auto: every output is a new file (tmpfs)";
    assert!(stderr(&o).contains(said), "{}", stderr(&o));
}

/// The same with one syncfs per batch, on the project's disk (where syncfs has work to do): the
/// strategy is the one in use (the start line says so) and every message still lands once.
#[test]
fn kill_9_with_one_syncfs_per_batch_loses_and_duplicates_nothing() {
    let s = Setup::new("settle_ms = 100\nsync = \"filesystem\"\n");
    kill_9_rounds(&s, 1000, 8);
    let log = std::fs::read_to_string(s.path("kill-0.log")).unwrap();
    assert!(
        log.contains("sync = \"filesystem\": one syncfs per batch"),
        "{log}"
    );
}

/// Drops `total` messages, kills the daemon `rounds` times at moments chosen from progress, then
/// drains with `once`: each message must be in pickup exactly once. `rounds` x 99 < `total`.
/// Returns how many files in pickup before the final run have an input's inode number (delivered
/// claims' inodes are reused for new outputs: `deliver::pickup::recycle`).
fn kill_9_rounds(s: &Setup, total: usize, rounds: usize) -> usize {
    use std::os::unix::fs::MetadataExt;
    for n in 0..total {
        s.drop_message(&format!("d{}/m{n}.eml", n % 7), &message(n));
    }
    let ino = |p: &std::path::PathBuf| p.metadata().map_or(0, |m| m.ino());
    let inputs: std::collections::HashSet<u64> =
        list_files(&s.path("spool")).iter().map(ino).collect();
    std::thread::sleep(Duration::from_millis(200)); // settled: every round can start work at once
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill -9 test seed: {seed}");
    // Kill moments come from progress, not the clock: each round lets 0 to 99 more messages reach
    // pickup (0: killed while starting up and recovering), whatever the machine's speed. At most
    // rounds x 99 of total are delivered before the final run, so the kills always land mid-drain.
    for round in 0..rounds {
        let log = format!("kill-{round}.log");
        let more = (lcg(&mut seed) % 100) as usize;
        let target = s.pickup_files().len() + more;
        let mut child = s.start(&log);
        if more == 0 {
            s.wait_for_log(&log, "watching");
        } else {
            s.wait_for(
                &format!("{target} pickup files (round {round})"),
                Duration::from_secs(60),
                || s.pickup_files().len() >= target,
            );
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let before = s.pickup_files().len();
    let reused = s
        .pickup_files()
        .iter()
        .filter(|p| inputs.contains(&ino(p)))
        .count();
    let recovered: usize = (0..rounds)
        .map(|r| std::fs::read_to_string(s.path(&format!("kill-{r}.log"))).unwrap())
        .map(|log| log.matches("recovered ").count())
        .sum();
    eprintln!(
        "delivered before the final run: {before} ({reused} in recycled inodes); restarts that recovered claims: {recovered}"
    );
    assert!(before < total, "the kills came too late to test anything");
    let o = s.once();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let ids = s.delivered_ids();
    let dupes: Vec<_> = ids.iter().filter(|(_, c)| **c != 1).collect();
    assert!(dupes.is_empty(), "duplicated: {dupes:?}");
    let left = list_files(&s.path("spool"));
    if ids.len() != total {
        let failed: Vec<String> = list_files(&s.path("failed"))
            .iter()
            .map(|p| {
                format!(
                    "{}: {}",
                    p.display(),
                    std::fs::read_to_string(p)
                        .unwrap_or_default()
                        .lines()
                        .next()
                        .unwrap_or("")
                )
            })
            .collect();
        let logs: String = (0..rounds)
            .map(|r| std::fs::read_to_string(s.path(&format!("kill-{r}.log"))).unwrap())
            .collect();
        panic!(
            "{} of {total} delivered\nfailed/: {failed:#?}\nspool: {left:?}\nfinal run: {}\nkilled runs:\n{logs}",
            ids.len(),
            stderr(&o)
        );
    }
    assert!(left.is_empty(), "spool not drained: {left:?}");
    s.assert_nothing_in_flight();
    reused
}

#[test]
fn two_instances_on_one_spool_deliver_each_file_once() {
    let s = Setup::on_tmpfs("");
    let total = 2000;
    let mut a = s.start("a.log");
    let mut b = s.start("b.log");
    for n in 0..total {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    s.wait_for("all files", Duration::from_secs(120), || {
        s.pickup_files().len() >= total
    });
    signal(&a, "-TERM");
    signal(&b, "-TERM");
    assert!(wait_exit(&mut a, Duration::from_secs(20)).success());
    assert!(wait_exit(&mut b, Duration::from_secs(20)).success());
    let ids = s.delivered_ids();
    assert_eq!(ids.len(), total);
    assert!(ids.values().all(|&c| c == 1), "a file delivered twice");
    let logs = std::fs::read_to_string(s.path("a.log")).unwrap()
        + &std::fs::read_to_string(s.path("b.log")).unwrap();
    assert_eq!(logs.matches(": delivered via pickup").count(), total);
    s.assert_nothing_in_flight();
}

/// The work folder of an instance that died (unlocked), for claims a test leaves in it.
fn dead_instance(s: &Setup) -> std::path::PathBuf {
    let dead = s.path("spool/.smime-pickup/i1dead");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join(".lock"), "").unwrap();
    dead
}

#[test]
fn a_crash_after_the_commit_point_is_finished_not_redone() {
    // what a daemon killed between its commit rename and its publish leaves behind
    let s = Setup::new("");
    let dead = dead_instance(&s);
    std::fs::write(dead.join("i1dead-0,sub%2Fm.eml#committed"), message(42)).unwrap();
    let staging = s.d.path().join(".smime-pickup-staging");
    std::fs::create_dir_all(&staging).unwrap();
    let staged = b"x-sender: alice@example.com\r\nx-receiver: bob@example.com\r\nMessage-ID: <m42@test.example.com>\r\n\r\nsealed before the crash\r\n";
    std::fs::write(staging.join("i1dead-0.0.eml"), staged).unwrap();
    // and one that had not reached its commit point: sealed again from scratch
    std::fs::write(dead.join("i1dead-1,n.eml"), message(43)).unwrap();
    std::fs::write(staging.join("i1dead-1.0.eml"), b"half writ").unwrap();

    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 delivered, 0 failed, 0 deferred"));
    let files = s.pickup_files();
    assert_eq!(files.len(), 2);
    let published = files
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .find(|b| b.ends_with(b"sealed before the crash\r\n"));
    assert!(
        published.is_some(),
        "the committed output is published as it was, not sealed again"
    );
    let ids = s.delivered_ids();
    assert_eq!(ids.get("<m42@test.example.com>"), Some(&1));
    assert_eq!(ids.get("<m43@test.example.com>"), Some(&1));
    s.assert_nothing_in_flight();
}

#[test]
fn a_committed_claim_whose_files_were_all_published_is_removed_not_counted_again() {
    // what a daemon killed after publishing leaves behind: a delivered claim kept for its inode
    let s = Setup::new("");
    let dead = dead_instance(&s);
    std::fs::write(dead.join("i1dead-0,m.eml#committed"), message(42)).unwrap();
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("0 delivered, 0 failed, 0 deferred"), "{out}");
    assert!(
        stderr(&o).contains("m.eml: its pickup files were all published before the stop"),
        "{}",
        stderr(&o)
    );
    assert!(
        s.pickup_files().is_empty(),
        "nothing sealed or published again"
    );
    s.assert_nothing_in_flight();
}

/// A large batch's delivered claims are kept where they are for the next batch's staging files;
/// when no batch comes, the deliverer's pause moves them into the pool, so a `run` that then sits
/// idle leaves no committed claim for a crash to find.
#[test]
fn a_pause_moves_kept_claims_into_the_pool() {
    let s = Setup::on_tmpfs("reuse_inodes = \"always\"\n");
    // waiting at the start: taken in batches large enough to keep their claims
    for n in 0..200 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    let mut child = s.start("run.log");
    s.wait_for("the files", Duration::from_secs(60), || {
        s.pickup_files().len() == 200
    });
    let staging = s.path(".smime-pickup-staging");
    s.wait_for("the claim pooled", Duration::from_secs(30), || {
        list_files(&s.path("spool/.smime-pickup")).iter().all(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            !name.ends_with("#committed")
        }) && list_files(&staging).iter().any(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".recycled.")
        })
    });
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
    s.assert_nothing_in_flight();
}

/// An outside `kill -SEGV` (no crash: nothing faulted) stops the daemon with that signal, as the
/// sender meant, and leaves no crash note that a later `kill -9` would be blamed on. (Rust's own
/// SIGSEGV handler lets a sent SIGSEGV pass once: the daemon ran on with `signal 11` noted.)
#[test]
fn a_segv_sent_from_outside_stops_the_daemon_and_notes_no_crash() {
    use std::os::unix::process::ExitStatusExt;
    let s = Setup::new("");
    let mut child = s.start("run.log");
    let file = |name: &str| {
        list_files(&s.path("spool/.smime-pickup"))
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n == name))
    };
    // `.system` is written once the crash handler is in place
    s.wait_for("the instance's state", Duration::from_secs(10), || {
        file(".system").is_some()
    });
    let crashed = file(".crashed").unwrap();
    signal(&child, "-SEGV");
    s.wait_for("an exit or a note", Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_))) || std::fs::metadata(&crashed).unwrap().len() > 0
    });
    let note = std::fs::read_to_string(&crashed).unwrap();
    assert!(note.is_empty(), "a crash noted: {note:?}");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status:?}");
}
