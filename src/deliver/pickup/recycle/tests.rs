use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;
use crate::deliver::pickup::tests::names;

/// A pool that knows the owner of files created in `staging`, and a delivered claim in `work`.
fn setup() -> (tempfile::TempDir, Pool, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (staging, work) = (tmp.path().join("staging"), tmp.path().join("work"));
    std::fs::create_dir(&staging).unwrap();
    std::fs::create_dir(&work).unwrap();
    let pool = Pool::new(true);
    pool.created(&File::create(staging.join("first.eml")).unwrap());
    let claim = work.join("i1-7,m.eml#committed");
    std::fs::write(&claim, "plaintext").unwrap();
    (tmp, pool, staging, claim)
}

fn work_of(claim: &Path) -> PathBuf {
    claim.parent().unwrap().to_path_buf()
}

#[test]
fn a_kept_claim_becomes_the_next_staging_file_of_its_own_work_folder() {
    let (_t, pool, staging, claim) = setup();
    let inode = claim.metadata().unwrap().ino();
    std::fs::set_permissions(&claim, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(pool.keep(&claim, "i1-7"));
    assert!(
        claim.exists(),
        "kept where it is until a staging file takes it"
    );
    let other = staging.parent().unwrap().join("other-work");
    assert!(
        pool.take_kept(&staging, "i2-1.0.eml", &other).is_none(),
        "never for another work folder: its commit would not sync the one the claim left"
    );
    assert!(claim.exists());
    let (mut file, old) = pool
        .take_kept(&staging, "i1-9.0.eml", &work_of(&claim))
        .expect("reused");
    assert_eq!(old, "plaintext".len() as u64, "its blocks are kept");
    assert!(
        !claim.exists(),
        "one rename: from the work folder to its staging name"
    );
    let made = staging.join("i1-9.0.eml").metadata().unwrap();
    assert_eq!(made.ino(), inode);
    assert_eq!(
        made.mode() & 0o777,
        0o600,
        "owner-only before it left the work folder"
    );
    std::io::Write::write_all(&mut file, b"sealed").unwrap();
    assert_eq!(pool.len(), 0);
}

#[test]
fn a_kept_claim_that_no_longer_fits_is_removed_not_reused() {
    let (_t, pool, staging, claim) = setup();
    assert!(pool.keep(&claim, "i1-7"));
    let held = File::open(&claim).unwrap(); // someone kept a descriptor of the input
    assert!(
        pool.take_kept(&staging, "i1-9.0.eml", &work_of(&claim))
            .is_none()
    );
    assert!(!claim.exists(), "delivered already: removed");
    assert_eq!(names(&staging), ["first.eml"]);
    drop(held);
}

#[test]
fn a_pause_pools_the_kept_claims_no_batch_took() {
    let (_t, pool, staging, claim) = setup();
    let second = claim.with_file_name("i1-8,n.eml#committed");
    std::fs::write(&second, "plaintext").unwrap();
    assert!(pool.keep(&claim, "i1-7"));
    assert!(pool.keep(&second, "i1-8"));
    pool.park(&staging);
    assert!(!claim.exists() && !second.exists());
    assert_eq!(
        names(&staging),
        [".recycled.i1-7", ".recycled.i1-8", "first.eml"]
    );
    for entry in [".recycled.i1-7", ".recycled.i1-8"] {
        let mode = staging.join(entry).metadata().unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        pool.take(&staging, "i1-9.0.eml").is_none(),
        "pooled: not before the work folder it left is synced"
    );
    pool.synced(&work_of(&claim));
    assert!(pool.take(&staging, "i1-9.0.eml").is_some());
}

#[test]
fn kept_claims_are_removed_at_a_clean_exit() {
    let (_t, pool, staging, claim) = setup();
    assert!(pool.keep(&claim, "i1-7"));
    pool.clear(&staging);
    assert!(!claim.exists());
    assert_eq!(pool.len(), 0);
}

#[test]
fn nothing_is_kept_when_the_pool_is_off_or_before_a_staging_file_was_created() {
    let (_t, _, staging, claim) = setup();
    assert!(!Pool::new(false).keep(&claim, "i1-7"));
    assert!(!Pool::new(true).keep(&claim, "i1-7"), "owner not known yet");
    let _ = staging;
}

#[test]
fn a_delivered_claim_becomes_an_owner_only_staging_file_once_its_folder_is_synced() {
    let (_t, pool, staging, claim) = setup();
    let inode = claim.metadata().unwrap().ino();
    std::fs::set_permissions(&claim, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(pool.recycle(&staging, &claim, "i1-7"));
    assert!(!claim.exists());
    let entry = staging.join(".recycled.i1-7").metadata().unwrap();
    assert_eq!(
        entry.mode() & 0o777,
        0o600,
        "the old input: its owner's only"
    );
    assert!(
        pool.take(&staging, "i1-9.0.eml").is_none(),
        "not before the work folder it left is synced"
    );
    pool.synced(claim.parent().unwrap());
    let (mut file, old) = pool.take(&staging, "i1-9.0.eml").expect("reused");
    assert_eq!(old, "plaintext".len() as u64, "its blocks are kept");
    std::io::Write::write_all(&mut file, b"sealed").unwrap();
    let made = staging.join("i1-9.0.eml");
    assert_eq!(made.metadata().unwrap().ino(), inode, "the same inode");
    assert_eq!(made.metadata().unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read(&made).unwrap(),
        b"sealedext",
        "written over from its start"
    );
    assert_eq!(names(&staging), ["first.eml", "i1-9.0.eml"]);
    assert_eq!(pool.len(), 0);
    assert!(pool.take(&staging, "i1-9.1.eml").is_none(), "empty now");
}

#[test]
fn nothing_is_recycled_before_a_staging_file_was_created() {
    let (_t, _, staging, claim) = setup();
    let pool = Pool::new(true);
    assert!(!pool.recycle(&staging, &claim, "i1-7"));
    assert_eq!(std::fs::read(&claim).unwrap(), b"plaintext");
}

#[test]
fn claims_that_are_not_like_a_new_staging_file_are_left_whole() {
    let (tmp, pool, staging, claim) = setup();
    // a second link: emptying it would empty the other name too
    let other = tmp.path().join("other-name");
    std::fs::hard_link(&claim, &other).unwrap();
    assert!(!pool.recycle(&staging, &claim, "i1-7"));
    std::fs::remove_file(&other).unwrap();
    // extended attributes (an ACL, a label) a new file would not have
    rustix::fs::setxattr(&claim, "user.origin", b"x", rustix::fs::XattrFlags::empty()).unwrap();
    assert!(!pool.recycle(&staging, &claim, "i1-7"));
    // a link in the claim's place is never followed
    let target = tmp.path().join("target");
    std::fs::write(&target, "keep").unwrap();
    let link = claim.with_file_name("i1-8,n.eml#committed");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(!pool.recycle(&staging, &link, "i1-8"));
    assert_eq!(std::fs::read(&claim).unwrap(), b"plaintext");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert_eq!(names(&staging), ["first.eml"]);
}

#[test]
fn an_entry_replaced_in_the_pool_is_not_written_to() {
    let (tmp, pool, staging, claim) = setup();
    assert!(pool.recycle(&staging, &claim, "i1-7"));
    pool.synced(claim.parent().unwrap());
    let target = tmp.path().join("target");
    std::fs::write(&target, "keep").unwrap();
    let entry = staging.join(".recycled.i1-7");
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink(&target, &entry).unwrap();
    assert!(pool.take(&staging, "i1-9.0.eml").is_none());
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert_eq!(names(&staging), ["first.eml"], "the stranger is removed");
}

#[test]
fn leftovers_of_an_earlier_run_are_removed_at_first_use() {
    let (_t, pool, staging, claim) = setup();
    std::fs::write(
        staging.join(".recycled.i0-1"),
        "an old input, its rename lost in a crash",
    )
    .unwrap();
    std::fs::write(staging.join("i0-2.0.eml"), "a staged output").unwrap();
    assert!(pool.recycle(&staging, &claim, "i1-7"));
    assert_eq!(
        names(&staging),
        [".recycled.i1-7", "first.eml", "i0-2.0.eml"]
    );
}

#[test]
fn the_pool_is_bounded() {
    let (_t, pool, staging, claim) = setup();
    for n in 0..MAX {
        let c = claim.with_file_name(format!("i2-{n},m.eml#committed"));
        std::fs::write(&c, "x").unwrap();
        assert!(pool.recycle(&staging, &c, &format!("i2-{n}")));
    }
    assert!(!pool.recycle(&staging, &claim, "i1-7"), "full");
    assert!(!pool.keep(&claim, "i1-7"), "full, kept claims counted too");
    assert!(claim.exists());
    assert_eq!(pool.len(), MAX);
}

/// Whoever opened the input while it was readable (its writer, or anyone its mode let in) and kept
/// the descriptor must not read the later messages staged in the same inode.
#[test]
fn an_inode_still_open_elsewhere_is_not_reused() {
    use std::io::{Read, Seek};
    let (_t, pool, staging, claim) = setup();
    let mut kept = File::open(&claim).unwrap();
    if pool.recycle(&staging, &claim, "i1-7") {
        pool.synced(claim.parent().unwrap());
        if let Some((mut file, _)) = pool.take(&staging, "i1-9.0.eml") {
            std::io::Write::write_all(&mut file, b"x-receiver: someone@else\r\n").unwrap();
        }
    }
    let mut seen = String::new();
    kept.rewind().unwrap();
    kept.read_to_string(&mut seen).unwrap();
    assert!(
        !seen.contains("someone@else"),
        "read through an old descriptor: {seen:?}"
    );
    // once nobody else holds it, it is reused
    drop(kept);
    let again = claim.with_file_name("i1-8,n.eml#committed");
    std::fs::write(&again, "plaintext").unwrap();
    assert!(pool.recycle(&staging, &again, "i1-8"));
}

#[test]
fn a_clean_exit_leaves_no_old_input_in_staging() {
    let (_t, pool, staging, claim) = setup();
    let second = claim.with_file_name("i1-8,n.eml#committed");
    std::fs::write(&second, "plaintext").unwrap();
    assert!(pool.recycle(&staging, &claim, "i1-7"));
    pool.synced(claim.parent().unwrap());
    // this one's work folder is not synced yet: it is synced before its entry goes
    assert!(pool.recycle(&staging, &second, "i1-8"));
    assert_eq!(pool.len(), 2);
    pool.clear(&staging);
    assert_eq!(names(&staging), ["first.eml"]);
    assert_eq!(pool.len(), 0);
}

#[test]
fn auto_reuses_inodes_only_on_ext4_without_a_journal() {
    use Reuse::*;
    let facts = |kind: &str, device: Option<&str>, journal| Facts {
        kind: kind.into(),
        device: device.map(Into::into),
        journal,
    };
    for (setting, f, want, says) in [
        (
            Auto,
            Some(facts("ext4", Some("vda"), false)),
            true,
            "(ext4 without a journal)",
        ),
        (
            Auto,
            Some(facts("ext4", Some("loop0"), true)),
            false,
            "new file (ext4)",
        ),
        (
            Auto,
            Some(facts("tmpfs", None, false)),
            false,
            "new file (tmpfs)",
        ),
        (
            Auto,
            Some(facts("xfs", Some("sdb1"), false)),
            false,
            "(xfs)",
        ),
        (Auto, Some(facts("ext4", None, false)), false, "(ext4)"),
        (Auto, None, false, "could not be identified"),
        (
            Always,
            Some(facts("tmpfs", None, false)),
            true,
            "\"always\"",
        ),
        (
            Never,
            Some(facts("ext4", Some("vda"), false)),
            false,
            "\"never\"",
        ),
    ] {
        let (got, why) = decide(setting, f.as_ref());
        assert_eq!(got, want, "{setting:?} {f:?}");
        assert!(why.contains(says), "{why}");
    }
}

#[test]
fn a_pool_that_is_off_keeps_nothing_but_still_removes_old_leftovers() {
    let (_t, _, staging, claim) = setup();
    let pool = Pool::new(false);
    pool.created(&File::create(staging.join("second.eml")).unwrap());
    std::fs::write(staging.join(".recycled.i0-1"), "an old input").unwrap();
    assert!(!pool.recycle(&staging, &claim, "i1-7"));
    assert!(pool.take(&staging, "i1-9.0.eml").is_none());
    assert_eq!(std::fs::read(&claim).unwrap(), b"plaintext");
    assert_eq!(names(&staging), ["first.eml", "second.eml"]);
}
