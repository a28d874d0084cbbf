use super::*;
use crate::message::Envelope;
use crate::seal::Protection;

fn setup() -> (tempfile::TempDir, Pickup, Claim) {
    let tmp = tempfile::tempdir().unwrap();
    for d in ["pickup", "staging", "work"] {
        std::fs::create_dir(tmp.path().join(d)).unwrap();
    }
    let claim = Claim {
        path: tmp.path().join("work/i1-7,m.eml"),
        id: "i1-7".into(),
        rel: "m.eml".into(),
        fresh: false,
    };
    std::fs::write(&claim.path, "input").unwrap();
    let p = Pickup {
        dir: tmp.path().join("pickup"),
        staging: tmp.path().join("staging"),
        max_recipients: 2,
        sync: SyncStrategy::File,
        pool: super::recycle::Pool::new(true),
    };
    (tmp, p, claim)
}

fn copy(recipients: &[&str]) -> Sealed {
    Sealed {
        envelope: Envelope {
            sender: "s@x.org".into(),
            recipients: recipients.iter().map(|r| r.to_string()).collect(),
            extras: vec![("x-job".into(), "j".into())],
            ..Envelope::default()
        },
        data: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
        protection: Protection::Signed,
        message_id: "id@x".into(),
    }
}

/// A folder's entries, sorted (also for the reuse pool's tests).
pub(super) fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn deliver_writes_envelope_first_and_splits_recipients() {
    let (_t, p, claim) = setup();
    let done = p
        .deliver(&claim, &[copy(&["a@y", "b@y", "c@y"]), copy(&["d@y"])])
        .unwrap();
    assert_eq!(done.units, 3);
    assert!(done.input_gone, "its inode went to the pool");
    assert_eq!(
        names(&p.dir),
        ["i1-7.0.m.eml", "i1-7.1.m.eml", "i1-7.2.m.eml"]
    );
    assert_eq!(
        done.made(),
        "3 files: i1-7.0.m.eml, i1-7.1.m.eml, i1-7.2.m.eml"
    );
    assert_eq!(
        names(&p.staging),
        [".recycled.i1-7"],
        "the claim's inode is kept"
    );
    let pooled = p.staging.join(".recycled.i1-7").metadata().unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&pooled.permissions()) & 0o777,
        0o600,
        "the old input stays its owner's"
    );
    let first = std::fs::read_to_string(p.dir.join("i1-7.0.m.eml")).unwrap();
    assert_eq!(
        first,
        "x-sender: s@x.org\r\nx-receiver: a@y\r\nx-receiver: b@y\r\nx-job: j\r\nSubject: x\r\n\r\nbody\r\n"
    );
    assert!(
        !claim.committed_path().exists() && !claim.path.exists(),
        "recycled: nothing left for finish"
    );
}

#[test]
fn one_syncfs_per_batch_delivers_the_same_files() {
    let (_t, mut p, claim) = setup();
    p.sync = SyncStrategy::Filesystem;
    let second = Claim {
        path: claim.path.with_file_name("i1-8,n.eml"),
        id: "i1-8".into(),
        rel: "n.eml".into(),
        fresh: false,
    };
    std::fs::write(&second.path, "input").unwrap();
    let (a, b) = ([copy(&["a@y", "b@y", "c@y"])], [copy(&["d@y"])]);
    let mut got = Vec::new();
    p.deliver_batch(&[(&claim, &a), (&second, &b)], &mut |i, r| {
        got.push((i, r.unwrap().units))
    });
    assert_eq!(got, [(0, 2), (1, 1)]);
    assert_eq!(
        names(&p.dir),
        ["i1-7.0.m.eml", "i1-7.1.m.eml", "i1-8.0.n.eml"]
    );
    assert_eq!(names(&p.staging), [".recycled.i1-7", ".recycled.i1-8"]);
    assert!(!claim.committed_path().exists() && !second.committed_path().exists());
}

#[test]
fn a_later_output_reuses_a_delivered_claims_inode_with_the_usual_mode() {
    use std::os::unix::fs::MetadataExt;
    let (_t, p, first) = setup();
    let claim = |n: usize| {
        let c = Claim {
            path: first.path.with_file_name(format!("i1-{n},m.eml")),
            id: format!("i1-{n}"),
            rel: "m.eml".into(),
            fresh: false,
        };
        std::fs::write(&c.path, "input").unwrap();
        c
    };
    // an input longer than the output that reuses its inode: nothing of it may show after it
    std::fs::write(&first.path, "plaintext input ".repeat(1000)).unwrap();
    let inode = first.path.metadata().unwrap().ino();
    p.deliver(&first, &[copy(&["a@y"])]).unwrap();
    // its inode is usable once the work folder was synced: by the next commit
    p.deliver(&claim(8), &[copy(&["a@y"])]).unwrap();
    p.deliver(&claim(9), &[copy(&["a@y"])]).unwrap();
    let out = p.dir.join("i1-9.0.m.eml");
    let meta = out.metadata().unwrap();
    assert_eq!(meta.ino(), inode, "the first claim's inode");
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "x-sender: s@x.org\r\nx-receiver: a@y\r\nx-job: j\r\nSubject: x\r\n\r\nbody\r\n"
    );
    assert_eq!(names(&p.staging), [".recycled.i1-8", ".recycled.i1-9"]);
}

#[test]
fn recovery_never_takes_a_pool_entry_for_an_output() {
    let (_t, p, claim) = setup();
    std::fs::write(p.staging.join(".recycled.i1-7"), "").unwrap();
    assert_eq!(p.recover(&claim).unwrap(), None);
    std::fs::rename(&claim.path, claim.committed_path()).unwrap();
    assert_eq!(p.recover(&claim).unwrap().unwrap().units, 0);
    assert!(names(&p.dir).is_empty());
}

#[test]
fn crash_before_the_commit_point_redoes_from_scratch() {
    let (_t, p, claim) = setup();
    std::fs::write(p.staging.join("i1-7.0.eml"), "half").unwrap();
    std::fs::write(p.staging.join("i1-70.0.eml"), "another claim's").unwrap();
    assert_eq!(p.recover(&claim).unwrap(), None);
    assert_eq!(
        names(&p.staging),
        ["i1-70.0.eml"],
        "only this claim's leftovers go"
    );
    assert!(names(&p.dir).is_empty(), "nothing reached pickup");
}

#[test]
fn crash_after_the_commit_point_publishes_the_rest_once() {
    let (_t, p, claim) = setup();
    // committed two outputs; the first was renamed into pickup (and maybe consumed) before the crash
    std::fs::rename(&claim.path, claim.committed_path()).unwrap();
    std::fs::write(p.staging.join("i1-7.1.eml"), "second").unwrap();
    std::fs::write(p.staging.join("i1-70.0.eml"), "another claim's").unwrap();
    let done = p.recover(&claim).unwrap().unwrap();
    assert_eq!(done.units, 1);
    assert_eq!(
        names(&p.dir),
        ["i1-7.1.eml"],
        "the consumed first one is not recreated"
    );
    assert_eq!(names(&p.staging), ["i1-70.0.eml"]);
    // recovering again (a crash during finish) changes nothing
    p.recover(&claim).unwrap().unwrap();
    assert_eq!(names(&p.dir), ["i1-7.1.eml"]);
}

#[test]
fn a_committed_claim_found_after_a_crash_is_published_not_sealed_again() {
    let (_t, p, claim) = setup();
    std::fs::rename(&claim.path, claim.committed_path()).unwrap();
    std::fs::write(p.staging.join("i1-7.0.eml"), "only").unwrap();
    // what a restart (or an adopting instance) finds in the work folder
    let found = crate::spool::claim::parse_claim(&claim.committed_path()).unwrap();
    assert_eq!(found, claim);
    let done = p
        .recover(&found)
        .unwrap()
        .expect("recovered through pickup");
    assert_eq!(done.units, 1);
    assert_eq!(names(&p.dir), ["i1-7.0.eml"]);
    // dropping the committed claim afterwards is `finish::delivered`'s job (tested there): no
    // staging file was made in this process, so the pool cannot know what one looks like
    assert!(!done.input_gone);
    assert!(claim.committed_path().exists() && !claim.path.exists());
}

#[test]
fn a_missing_pickup_directory_is_unavailable_and_not_created() {
    let (_t, p, claim) = setup();
    std::fs::remove_dir(&p.dir).unwrap();
    let err = p.deliver(&claim, &[copy(&["a@y"])]).unwrap_err();
    assert!(err.to_string().contains("is unavailable"), "{err}");
    assert!(err.is_transient() && err.is_route_problem());
    // the cause is kept as a source, not only as text
    let mut cause = std::error::Error::source(&err);
    let mut not_found = false;
    while let Some(c) = cause {
        not_found |= c
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        cause = c.source();
    }
    assert!(not_found, "{err:?}");
    assert!(!p.dir.exists());
    assert!(
        !claim.committed_path().exists(),
        "no commit without a pickup directory"
    );
}

#[test]
fn pickup_names_carry_a_safe_form_of_the_input_name() {
    let claim = |rel: &str| Claim {
        path: PathBuf::from("/w/x"),
        id: "i1-7".into(),
        rel: rel.into(),
        fresh: true,
    };
    for (rel, want) in [
        ("job/report.eml", "i1-7.0.report.eml"),
        ("évé nt\n.EML", "i1-7.0._v__nt_.eml"),
        ("..hidden.eml", "i1-7.0.hidden.eml"),
        ("x/../../etc", "i1-7.0.etc.eml"),
        ("....eml", "i1-7.0.eml"),
    ] {
        assert_eq!(pickup_name(&claim(rel), 0), want, "{rel}");
    }
    assert!(pickup_name(&claim(&"a".repeat(300)), 0).len() < 80);
}

/// A staged file whose writing fails is removed at once: a reused inode would otherwise keep an
/// earlier input's bytes in staging, and a claim that then goes out another route never comes back
/// to remove it. (`/dev/full` stands in for a full disk.)
#[test]
fn a_staged_file_that_cannot_be_written_is_removed() {
    let (_t, p, claim) = setup();
    let name = pickup_name(&claim, 0);
    std::os::unix::fs::symlink("/dev/full", p.staging.join(&name)).unwrap();
    let e = p.deliver(&claim, &[copy(&["a@y"])]).unwrap_err();
    assert!(e.to_string().contains(&name), "{e}");
    assert!(names(&p.staging).is_empty(), "{:?}", names(&p.staging));
    assert!(names(&p.dir).is_empty());
    assert!(
        claim.path.exists(),
        "not committed: still claimed for a retry"
    );
}

/// The same when an earlier file of the claim was written: nothing of a claim that failed before its
/// commit point stays in staging (another route may deliver it, and nothing would remove it then).
#[test]
fn a_claim_that_fails_before_its_commit_leaves_nothing_in_staging() {
    let (_t, p, claim) = setup();
    let second = pickup_name(&claim, 1);
    std::os::unix::fs::symlink("/dev/full", p.staging.join(&second)).unwrap();
    let e = p
        .deliver(&claim, &[copy(&["a@y", "b@y", "c@y"])])
        .unwrap_err();
    assert!(e.to_string().contains(&second), "{e}");
    assert!(names(&p.staging).is_empty(), "{:?}", names(&p.staging));
    assert!(names(&p.dir).is_empty());
    assert!(claim.path.exists());
}

/// Only a file whose length did not change needs a full fsync for its new mode: `write` says so.
#[test]
fn a_reused_file_of_the_same_length_asks_for_a_full_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    let c = copy(&["a@y"]);
    let len = pickup_file(&c, &c.envelope.recipients).len() as u64;
    for (old, full) in [(0, false), (len - 1, false), (len, true), (len + 7, false)] {
        std::fs::write(&path, vec![b'p'; old as usize]).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert_eq!(
            format::write(&mut f, &c, &c.envelope.recipients, old).unwrap(),
            full
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            pickup_file(&c, &c.envelope.recipients)
        );
    }
}

/// A batch of `KEEP_FROM` claims or more keeps its delivered claims where they are: the next such
/// batch writes its outputs into them with one rename each; a pause or a small batch pools them.
#[test]
fn a_large_batch_keeps_its_claims_for_the_next_one() {
    use std::os::unix::fs::MetadataExt;
    let (_t, p, first) = setup();
    let claims = |from: usize| -> Vec<Claim> {
        (from..from + KEEP_FROM)
            .map(|n| {
                let c = Claim {
                    path: first.path.with_file_name(format!("i1-{n},m{n}.eml")),
                    id: format!("i1-{n}"),
                    rel: format!("m{n}.eml").into(),
                    fresh: false,
                };
                std::fs::write(&c.path, "plaintext input ".repeat(100)).unwrap();
                c
            })
            .collect()
    };
    let copies = [copy(&["a@y"])];
    let deliver = |batch: &[Claim]| {
        let items: Vec<(&Claim, &[Sealed])> = batch.iter().map(|c| (c, &copies[..])).collect();
        let mut ok = 0;
        p.deliver_batch(&items, &mut |_, r| ok += usize::from(r.unwrap().input_gone));
        assert_eq!(ok, batch.len(), "every input's inode kept or pooled");
    };
    p.deliver(&first, &copies).unwrap(); // the pool learns who owns a staging file
    let one = claims(100);
    let inodes: std::collections::HashSet<u64> = one
        .iter()
        .map(|c| c.path.metadata().unwrap().ino())
        .collect();
    deliver(&one);
    assert!(
        one.iter().all(|c| c.committed_path().exists()),
        "kept in place"
    );
    let two = claims(200);
    deliver(&two);
    assert!(one.iter().all(|c| !c.committed_path().exists()));
    for c in &two {
        let out = p.dir.join(format!("{}.0.{}", c.id, c.rel.display()));
        let meta = out.metadata().unwrap();
        assert!(
            inodes.contains(&meta.ino()),
            "{} is a kept claim",
            out.display()
        );
        assert_eq!(meta.mode() & 0o7777, 0o640);
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(!text.contains("plaintext"), "cut to its own length");
    }
    assert_eq!(
        names(&p.staging),
        [".recycled.i1-7"],
        "only the lone one pooled"
    );
    p.idle(); // a pause pools what no batch took
    assert!(two.iter().all(|c| !c.committed_path().exists()));
    let pooled = names(&p.staging);
    assert_eq!(pooled.len(), 1 + KEEP_FROM, "{pooled:?}");
    assert!(pooled.iter().all(|n| n.starts_with(".recycled.")));
}
