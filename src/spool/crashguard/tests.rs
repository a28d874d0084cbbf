//! The crash-loop guard's own tests: slots, notes and `.suspects` read back as strikes.

use super::*;

const DEATH: Strikes = Strikes {
    crashes: 0,
    deaths: 1,
};

#[test]
fn strikes_come_from_the_sealing_slots_and_travel_with_the_claims() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let dead = CrashGuard::create(&a).unwrap();
    let sealing = dead.sealing("i1f-7");
    let _other = dead.sealing("i1f-8");
    drop(sealing); // finished before the death: no strike
    let _third = dead.sealing("i1f-9"); // in the freed slot
    std::mem::forget(_other);
    std::mem::forget(_third);
    drop(dead); // the process dies with two claims being sealed, and no crash noted
    let found = CrashGuard::read_dead(&a);
    assert_eq!(
        found,
        HashMap::from([("i1f-8".into(), DEATH), ("i1f-9".into(), DEATH)])
    );

    let me = CrashGuard::create(&b).unwrap();
    me.carry(found.clone()).unwrap();
    me.carry(found).unwrap(); // adopting the same folder again changes nothing
    assert_eq!(me.strikes("i1f-8"), DEATH);
    assert!(me.strikes("i1f-8").suspect() && me.strikes("i1f-8").out().is_none());
    me.clear("i1f-9");
    // we crash sealing the suspect: the next adopter counts a second death, and a crash
    let s = me.sealing("i1f-8");
    std::mem::forget(s);
    std::fs::write(b.join(CRASHED), "signal  6\n").unwrap();
    let again = CrashGuard::read_dead(&b);
    let both = Strikes {
        crashes: 1,
        deaths: 2,
    };
    assert_eq!(again, HashMap::from([("i1f-8".into(), both)]));
}

/// A crash note names its thread: a strike for the claim that thread was sealing, a death for
/// the others; a crash in a thread that sealed nothing (delivery, say) is a death for each.
#[test]
fn a_crash_strikes_the_claim_its_thread_was_sealing_and_no_other() {
    let tmp = tempfile::tempdir().unwrap();
    let dead = CrashGuard::create(tmp.path()).unwrap();
    let threads: Vec<i32> = std::thread::scope(|s| {
        let seal = |id| {
            let dead = &dead;
            s.spawn(move || {
                std::mem::forget(dead.sealing(id));
                crate::ffi::fatal::thread_id()
            })
        };
        let (a, b) = (seal("i1f-1"), seal("i1f-2"));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    let note = |thread: i32| {
        let text = format!("signal 11 tid {thread}\n");
        std::fs::write(tmp.path().join(CRASHED), text).unwrap();
        CrashGuard::read_dead(tmp.path())
    };
    let struck = Strikes {
        crashes: 1,
        deaths: 1,
    };
    assert_eq!(
        note(threads[1]),
        HashMap::from([("i1f-1".into(), DEATH), ("i1f-2".into(), struck)])
    );
    let elsewhere = crate::ffi::fatal::thread_id();
    assert_eq!(
        note(elsewhere),
        HashMap::from([("i1f-1".into(), DEATH), ("i1f-2".into(), DEATH)])
    );
}

#[test]
fn two_crashes_or_four_deaths_in_a_row_are_out() {
    let s = |crashes, deaths| Strikes { crashes, deaths };
    let table = [
        (s(0, 0), false, false),
        (s(0, 1), true, false),
        (s(1, 1), true, false),
        (s(1, 3), true, false),
        (s(0, 3), true, false),
        (s(2, 2), true, true),
        (s(0, 4), true, true),
        (s(1, 4), true, true),
    ];
    for (strikes, suspect, out) in table {
        assert_eq!(strikes.suspect(), suspect, "{strikes:?}");
        assert_eq!(strikes.out().is_some(), out, "{strikes:?}");
    }
    assert!(s(2, 2).out().unwrap().contains("crashed 2 times"));
    assert!(s(0, 4).out().unwrap().contains("no known cause"));
}

#[test]
fn an_older_suspects_line_counts_its_strikes_as_crashes() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(SUSPECTS), "i1-2 1\ni1-3 1 3\n").unwrap();
    assert_eq!(
        CrashGuard::read_dead(tmp.path()),
        HashMap::from([
            (
                "i1-2".into(),
                Strikes {
                    crashes: 1,
                    deaths: 1
                }
            ),
            (
                "i1-3".into(),
                Strikes {
                    crashes: 1,
                    deaths: 3
                }
            )
        ])
    );
}

#[test]
fn garbage_in_the_state_files_is_no_claim() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join(SEALING),
        b"i1-\n \0\0 ix-3\n../../etc 1\ni12-3x\n",
    )
    .unwrap();
    std::fs::write(tmp.path().join(SUSPECTS), "i1-2 x\nfoo 1\ni2-3 0 1\n").unwrap();
    assert_eq!(
        CrashGuard::read_dead(tmp.path()),
        HashMap::from([("i2-3".into(), DEATH)])
    );
}
