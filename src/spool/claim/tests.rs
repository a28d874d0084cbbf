use super::*;

#[test]
fn relative_paths_round_trip_through_claim_names() {
    for rel in [
        "a.eml",
        "sub/dir/b.eml",
        "odd%2F/name,with,commas.eml",
        "report#committed",
        "x#smtp-sent",
        "%23#%25#",
    ] {
        let name = format!("i1-0,{}", encode_rel(Path::new(rel)));
        let claim = parse_claim(Path::new(&name)).unwrap();
        assert_eq!(claim.rel, Path::new(rel));
        assert_eq!(claim.id, "i1-0");
    }
    // an input named like our state suffixes is neither committed nor a sidecar once claimed
    for name in ["report#committed", "report#smtp-sent"] {
        let claimed = format!("i1-0,{}", encode_rel(Path::new(name)));
        assert!(!claimed.contains('#'), "{claimed}");
        assert!(is_claim_name(&claimed));
        let c = parse_claim(Path::new(&claimed)).unwrap();
        assert_eq!(
            c.path,
            Path::new(&claimed),
            "not taken for a committed claim"
        );
    }
    let deep = "d/".repeat(150) + "x#committed";
    assert!(!encode_rel(Path::new(&deep)).contains('#'));
    let deep = "d/".repeat(150) + "x.eml";
    assert!(encode_rel(Path::new(&deep)).ends_with("x.eml"));
    let wide = format!("a{}.eml", "\u{e9}".repeat(100)); // 205 bytes, multibyte
    let kept = encode_rel(Path::new(&wide));
    assert!(kept.len() <= MAX_ENCODED && kept.ends_with(".eml"));
    // a committed claim is the same claim
    let committed = parse_claim(Path::new("/w/i1-3,sub%2Fm.eml#committed")).unwrap();
    assert_eq!(
        committed,
        parse_claim(Path::new("/w/i1-3,sub%2Fm.eml")).unwrap()
    );
    assert_eq!(
        committed.committed_path(),
        Path::new("/w/i1-3,sub%2Fm.eml#committed")
    );
}

#[test]
fn a_dead_instance_is_adopted_and_a_live_one_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let work = tmp.path().join("work");
    let dead = Instance::start(&work).unwrap();
    std::fs::write(spool.join("m.eml"), "x").unwrap();
    let c = dead.claim(&spool, &spool.join("m.eml")).unwrap().unwrap();
    assert!(
        dead.claim(&spool, &spool.join("m.eml")).unwrap().is_none(),
        "second claim loses"
    );
    let live = Instance::start(&work).unwrap();
    let me = Instance::start(&work).unwrap();
    assert!(
        me.adopt_dead().unwrap().is_empty(),
        "both others hold their locks"
    );
    drop(dead); // its lock goes with it, as with kill -9
    let claims = me.adopt_dead().unwrap();
    assert_eq!(claims.len(), 1);
    assert!(
        claims[0].path.starts_with(&me.dir),
        "moved into the adopter's folder"
    );
    assert_eq!(claims[0].id, c.id);
    assert_eq!(claims[0].rel, Path::new("m.eml"));
    assert!(live.dir.exists());
}

#[test]
fn a_dead_instances_state_comes_along_as_strikes_not_as_claims() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let work = tmp.path().join("work");
    let dead = Instance::start(&work).unwrap();
    // inputs named like our state files are claims like any other
    for name in ["a.eml", ".sealing", "x.suspects"] {
        std::fs::write(spool.join(name), "x").unwrap();
    }
    let a = dead.claim(&spool, &spool.join("a.eml")).unwrap().unwrap();
    let odd = dead
        .claim(&spool, &spool.join(".sealing"))
        .unwrap()
        .unwrap();
    dead.claim(&spool, &spool.join("x.suspects"))
        .unwrap()
        .unwrap();
    std::mem::forget(dead.guard.sealing(&a.id)); // it dies sealing a.eml
    let dead_dir = dead.dir.clone();
    drop(dead);

    let me = Instance::start(&work).unwrap();
    let claims = me.adopt_dead().unwrap();
    assert_eq!(claims.len(), 3, "{claims:?}");
    assert!(claims.iter().any(|c| c.rel == Path::new(".sealing")));
    assert_eq!(me.guard.strikes(&a.id).deaths, 1);
    assert!(!me.guard.strikes(&odd.id).suspect());
    assert!(
        !dead_dir.exists(),
        "the dead folder is gone, state files and all"
    );
    // the strikes are in our folder now, for whoever adopts from us
    let ours = super::super::crashguard::CrashGuard::read_dead(&me.dir);
    assert_eq!(ours.get(&a.id).map(|s| s.deaths), Some(1));
}

#[test]
fn only_regular_files_are_claimed() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    std::fs::create_dir_all(spool.join("folder")).unwrap();
    std::fs::write(spool.join("folder/m.eml"), "x").unwrap();
    std::os::unix::fs::symlink(spool.join("folder/m.eml"), spool.join("link.eml")).unwrap();
    let me = Instance::start(&tmp.path().join("work")).unwrap();
    for path in ["folder", "link.eml", "gone.eml"] {
        assert!(
            me.claim(&spool, &spool.join(path)).unwrap().is_none(),
            "{path}"
        );
    }
    assert!(spool.join("folder/m.eml").exists() && spool.join("link.eml").exists());
    assert!(
        me.claim(&spool, &spool.join("folder/m.eml"))
            .unwrap()
            .is_some()
    );
}
