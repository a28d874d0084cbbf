//! Harvesting recipients' certificates from signed replies: replies made by independent tools
//! (`openssl smime -sign`, `gpgsm --sign`), certificates made here with the openssl CLI from the test
//! CA (and a rogue CA), the refusals an attacker would try, the daemon's `certs_inbox`, and a
//! message sealed to a harvested address that its holder decrypts with `openssl cms`.

mod util;

use std::path::Path;
use std::time::Duration;

use util::reply::*;
use util::spool::*;
use util::*;

#[test]
fn detached_and_opaque_replies_give_their_certificates() {
    let (d, config) = fresh("");
    let nina = person(
        d.path(),
        "nina",
        "Nina@Example.org",
        "intermediate",
        700,
        EMAIL_EXT,
    );
    let omar = person(d.path(), "omar", "omar@example.org", "ca", 500, EMAIL_EXT);
    let inter = pki().join("intermediate.pem");
    let detached = d.write(
        "nina.eml",
        &openssl_reply(
            d.path(),
            &nina,
            "Nina <nina@EXAMPLE.org>",
            false,
            Some(&inter),
        ),
    );
    assert!(
        String::from_utf8_lossy(&std::fs::read(&detached).unwrap()).contains("multipart/signed")
    );
    let opaque = d.write(
        "omar.eml",
        &openssl_reply(d.path(), &omar, "omar@example.org", true, None),
    );
    assert!(String::from_utf8_lossy(&std::fs::read(&opaque).unwrap()).contains("signed-data"));
    let (code, out) = import(&d, &config, &[&detached, &opaque]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("imported nina@example.org (expires "),
        "{out}"
    );
    assert!(
        lines[1].starts_with("imported omar@example.org (expires "),
        "{out}"
    );
    // leaf first, then the intermediate the message carried
    let pem = std::fs::read_to_string(d.path().join("harvested/nina@example.org.crt")).unwrap();
    let certs = openssl::x509::X509::stack_from_pem(pem.as_bytes()).unwrap();
    assert_eq!(certs.len(), 2);
    assert_eq!(
        certs[0].to_pem().unwrap(),
        std::fs::read(&nina.cert).unwrap()
    );
    assert_eq!(certs[1].to_pem().unwrap(), std::fs::read(&inter).unwrap());
    // the same reply again changes nothing and still counts as imported
    let (code, out) = import(&d, &config, &[&detached]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("already there"), "{out}");
    // list: address, expiry, key type, status, issuer
    let o = run(bin(d.path()).arg("-c").arg(&config).args(["certs", "list"]));
    let list = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{list}");
    let row = list
        .lines()
        .find(|l| l.starts_with("nina@example.org"))
        .expect("nina listed");
    assert!(
        row.contains("RSA 2048") && row.contains("ok") && row.contains("Test Intermediate"),
        "{row}"
    );
}

#[test]
fn replies_that_must_not_plant_a_certificate_are_refused() {
    let (d, config) = fresh("");
    let dir = d.path();
    let good = person(dir, "nina", "nina@example.org", "ca", 400, EMAIL_EXT);
    let rogue = person(dir, "rogue", "nina@example.org", "other-ca", 900, EMAIL_EXT);
    let no_eku = person(
        dir,
        "noeku",
        "nina@example.org",
        "ca",
        800,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    );
    let sign_only = person(
        dir,
        "signonly",
        "nina@example.org",
        "ca",
        801,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=emailProtection\n",
    );
    let dotted = person(dir, "dotted", ".hidden@example.org", "ca", 802, EMAIL_EXT);
    let expired = Person {
        key: pki().join("private/expired@example.com.key"),
        cert: pki().join("private/expired@example.com.crt"),
    };
    let mut tampered = openssl_reply(dir, &good, "nina@example.org", false, None);
    let at = find(&tampered, b"encrypted statements").unwrap();
    tampered[at] = b'E';
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "rogue.eml",
            openssl_reply(dir, &rogue, "nina@example.org", false, None),
            "not issued by a trusted CA",
        ),
        (
            "other-from.eml",
            openssl_reply(dir, &good, "mallory@example.org", false, None),
            "From mallory@example.org is not an address of the signer's certificate",
        ),
        ("tampered.eml", tampered, "does not verify"),
        (
            "expired.eml",
            openssl_reply(dir, &expired, "expired@example.com", true, None),
            "expired on",
        ),
        (
            "no-eku.eml",
            openssl_reply(dir, &no_eku, "nina@example.org", false, None),
            "not valid for email protection",
        ),
        (
            "sign-only.eml",
            openssl_reply(dir, &sign_only, "nina@example.org", false, None),
            "keyEncipherment",
        ),
        (
            "dotted.eml",
            openssl_reply(dir, &dotted, ".hidden@example.org", false, None),
            "cannot name a file",
        ),
        (
            "unsigned.eml",
            b"From: nina@example.org\r\nSubject: hi\r\n\r\nno signature\r\n".to_vec(),
            "no S/MIME signature",
        ),
        (
            "evil\nname\x1b[31m.eml",
            b"From: nina@example.org\r\n\r\nx\r\n".to_vec(),
            "no S/MIME signature",
        ),
    ];
    for (name, bytes, why) in &cases {
        let f = d.write(name, bytes);
        let (code, out) = import(&d, &config, &[&f]);
        assert_eq!(code, 65, "{name}: {out}");
        assert_eq!(out.lines().count(), 1, "{name}: one line per input: {out}");
        assert!(out.starts_with("refused "), "{name}: {out}");
        assert!(out.contains(why), "{name}: expected {why:?} in {out}");
    }
    let (_, out) = import(&d, &config, &[&d.path().join("evil\nname\x1b[31m.eml")]);
    assert!(out.contains("evil\\nname\\x1b[31m.eml"), "{out}");
    let files: Vec<_> = std::fs::read_dir(dir.join("harvested")).unwrap().collect();
    assert!(files.is_empty(), "nothing may be written: {files:?}");
    // the good one after all that, then: a mix exits 65, and the good one is imported
    let ok = d.write(
        "good.eml",
        &openssl_reply(dir, &good, "nina@example.org", false, None),
    );
    let (code, out) = import(&d, &config, &[&ok, &d.path().join("rogue.eml")]);
    assert_eq!(code, 65, "{out}");
    assert!(
        out.lines()
            .next()
            .unwrap()
            .starts_with("imported nina@example.org"),
        "{out}"
    );
}

#[test]
fn a_certificate_is_replaced_only_by_one_that_expires_later() {
    let (d, config) = fresh("");
    let dir = d.path();
    let mid = person(dir, "mid", "nina@example.org", "ca", 400, EMAIL_EXT);
    let short = person(dir, "short", "nina@example.org", "ca", 100, EMAIL_EXT);
    let long = person(dir, "long", "nina@example.org", "ca", 900, EMAIL_EXT);
    let reply =
        |p: &Person, n: &str| d.write(n, &openssl_reply(dir, p, "nina@example.org", false, None));
    let (code, out) = import(&d, &config, &[&reply(&mid, "mid.eml")]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = import(&d, &config, &[&reply(&short, "short.eml")]);
    assert_eq!(code, 65, "{out}");
    assert!(
        out.contains("already has a certificate that expires as late or later"),
        "{out}"
    );
    let crt = dir.join("harvested/nina@example.org.crt");
    let first = |p: &Path| {
        openssl::x509::X509::stack_from_pem(&std::fs::read(p).unwrap()).unwrap()[0]
            .to_pem()
            .unwrap()
    };
    assert_eq!(first(&crt), std::fs::read(&mid.cert).unwrap());
    let (code, out) = import(&d, &config, &[&reply(&long, "long.eml")]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(first(&crt), std::fs::read(&long.cert).unwrap());
    assert_eq!(
        first(&dir.join("harvested/nina@example.org.crt.old")),
        std::fs::read(&mid.cert).unwrap()
    );
    // no temporary file is left behind
    let names: Vec<String> = std::fs::read_dir(dir.join("harvested"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn nested_and_forwarded_replies_and_a_folder_of_them() {
    let (d, config) = fresh("");
    let dir = d.path();
    let nina = person(dir, "nina", "nina@example.org", "ca", 400, EMAIL_EXT);
    let omar = person(dir, "omar", "omar@example.org", "ca", 400, EMAIL_EXT);
    // detached reply as the second part of a multipart/mixed
    let signed = openssl_reply(dir, &nina, "nina@example.org", false, None);
    let (head, body) = signed.split_at(find(&signed, b"MIME-Version").unwrap());
    let mut nested = b"From: nina@example.org\nSubject: wrapped\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"outer\"\n\n--outer\nContent-Type: text/plain\n\nsee below\n--outer\n".to_vec();
    let _ = head;
    nested.extend_from_slice(&body[find(body, b"Content-Type").unwrap()..]);
    nested.extend_from_slice(b"\n--outer--\n");
    // opaque reply forwarded as an attachment by someone else
    let fwd_inner = openssl_reply(dir, &omar, "omar@example.org", true, None);
    let mut forwarded = b"From: helpdesk@example.com\r\nSubject: Fwd: reply\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nforwarding\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\n".to_vec();
    forwarded.extend_from_slice(&fwd_inner);
    forwarded.extend_from_slice(b"\r\n--b1--\r\n");
    let folder = dir.join("replies");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("a-nested.eml"), &nested).unwrap();
    std::fs::write(folder.join("b-forwarded.eml"), &forwarded).unwrap();
    std::fs::write(folder.join("notes.txt"), "not a reply").unwrap();
    let (code, out) = import(&d, &config, &[&folder]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("imported nina@example.org") && out.contains("imported omar@example.org"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 2, "{out}");
}

#[test]
fn gpgsm_signed_reply_is_imported() {
    let g = gpgsm();
    let (d, config) = fresh("");
    let content = b"Content-Type: text/plain\r\n\r\nsigned by gpgsm\r\n";
    let sig = g
        .sign_detached(d.path(), "bob@example.com", content)
        .expect("gpgsm signs");
    let mut reply = b"From: Bob <bob@example.com>\r\nTo: statements@example.com\r\nSubject: Re\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"gb\"\r\n\r\n--gb\r\n".to_vec();
    reply.extend_from_slice(content);
    reply.extend_from_slice(b"\r\n--gb\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&sig);
    for chunk in b64.as_bytes().chunks(76) {
        reply.extend_from_slice(chunk);
        reply.extend_from_slice(b"\r\n");
    }
    reply.extend_from_slice(b"--gb--\r\n");
    let f = d.write("gpgsm.eml", &reply);
    let (code, out) = import(&d, &config, &[&f]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("imported bob@example.com"), "{out}");
}

#[test]
fn system_trust_uses_the_system_bundle() {
    let (d, config) = fresh("harvest_trust = \"system\"\n");
    let nina = person(d.path(), "nina", "nina@example.org", "ca", 400, EMAIL_EXT);
    let f = d.write(
        "r.eml",
        &openssl_reply(d.path(), &nina, "nina@example.org", false, None),
    );
    // the system bundle here is the test CA: imported; with the rogue CA as the bundle: refused
    for (bundle, code) in [("ca.pem", 0), ("other-ca.pem", 65)] {
        let o = run(bin(d.path())
            .env("SSL_CERT_FILE", pki().join(bundle))
            .arg("-c")
            .arg(&config)
            .args(["certs", "import"])
            .arg(&f));
        assert_eq!(
            o.status.code(),
            Some(code),
            "{bundle}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    // no `ca` and the default trust: a configuration error, nothing read
    let cfg = d.path().join("noca.toml");
    std::fs::write(&cfg, "keys = \"pki/keys\"\ncerts = \"harvested\"\n").unwrap();
    let o = run(bin(d.path())
        .arg("-c")
        .arg(&cfg)
        .args(["certs", "import"])
        .arg(&f));
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("trust anchor"), "{}", stderr(&o));
}

/// The loop closed: a harvested certificate is used by `once` and by the running daemon
/// (certs_inbox), and the recipient decrypts with `openssl cms`.
#[test]
fn the_daemon_harvests_its_inbox_and_encrypts_to_the_new_address() {
    let s = Setup::new("certs_inbox = \"replies\"\nrescan_seconds = 3600\n");
    let dir = s.d.path();
    let nina = person(dir, "nina", "nina@example.org", "ca", 400, EMAIL_EXT);
    let omar = person(dir, "omar", "omar@example.org", "ca", 400, EMAIL_EXT);
    let message = |to: &str| {
        format!("From: alice@example.com\r\nTo: {to}\r\nSubject: statement\r\nMessage-ID: <{to}@t>\r\n\r\nyour statement\r\n").into_bytes()
    };
    // before: no certificate, the message fails
    s.drop_message("before.eml", &message("nina@example.org"));
    let o = s.once();
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    // `certs import`, then `once` seals for nina
    let f = s.d.write(
        "nina.eml",
        &openssl_reply(dir, &nina, "nina@example.org", false, None),
    );
    let (code, out) = import(&s.d, &s.config, &[&f]);
    assert_eq!(code, 0, "{out}");
    s.drop_message("after.eml", &message("nina@example.org"));
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    let sealed = std::fs::read(&s.pickup_files()[0]).unwrap();
    let opened = decrypt_with(dir, &sealed, &nina).expect("nina decrypts");
    assert!(String::from_utf8_lossy(&opened).contains("your statement"));

    // the daemon: a reply renamed into certs_inbox, a bad one written in place
    let mut daemon = s.start("run.log");
    s.wait_for_log("run.log", "watching");
    let inbox = s.path("replies");
    let tmp = inbox.join(".incoming");
    std::fs::write(
        &tmp,
        openssl_reply(dir, &omar, "omar@example.org", true, None),
    )
    .unwrap();
    std::fs::rename(&tmp, inbox.join("omar.eml")).unwrap();
    std::fs::write(
        inbox.join("bad.eml"),
        b"From: omar@example.org\r\n\r\nunsigned\r\n",
    )
    .unwrap();
    s.wait_for("replies sorted", Duration::from_secs(60), || {
        inbox.join("done/omar.eml").exists() && inbox.join("refused/bad.eml.reason").exists()
    });
    let reason = std::fs::read_to_string(inbox.join("refused/bad.eml.reason")).unwrap();
    assert!(
        reason.contains(" unsigned: no S/MIME signature"),
        "{reason}"
    );
    assert!(s.path("pki/certs/omar@example.org.crt").exists());
    // used without a restart (the inbox triggers the reload SIGHUP does)
    s.wait_for_log("run.log", "reloaded");
    let before = s.pickup_files().len();
    s.drop_message("to-omar.eml", &message("omar@example.org"));
    s.wait_for("omar's message delivered", Duration::from_secs(60), || {
        s.pickup_files().len() > before
    });
    let newest = s
        .pickup_files()
        .into_iter()
        .find(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).contains("omar@example.org"))
        .unwrap();
    let opened = decrypt_with(dir, &std::fs::read(newest).unwrap(), &omar).expect("omar decrypts");
    assert!(String::from_utf8_lossy(&opened).contains("your statement"));
    signal(&daemon, "-TERM");
    assert!(wait_exit(&mut daemon, Duration::from_secs(60)).success());
    assert!(
        list_files(&s.path("failed"))
            .iter()
            .all(|p| !p.to_string_lossy().contains("omar"))
    );
}
