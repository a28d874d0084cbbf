//! `harvest_require_dkim` end to end: replies signed by `openssl smime`, then DKIM-signed by
//! Python's dkimpy (an implementation independent of the mail-auth we verify with), checked by the
//! real binary against dnsmasq on 127.0.0.1 named in `harvest_dns`; the daemon's `certs_inbox`;
//! lookups that fail for the moment (`outage`). Last, the library-level checks with mail-auth's
//! own signer and preloaded records.

#[path = "../util/mod.rs"]
mod util;

mod outage;

use std::path::{Path, PathBuf};
use std::time::Duration;

use openssl::pkey::Private;
use openssl::rsa::Rsa;
use util::dns::*;
use util::reply::*;
use util::spool::*;
use util::*;

/// An RSA key for DKIM, its PEM file for dkimpy beside it.
pub(crate) fn dkim_key(dir: &Path, name: &str) -> (Rsa<Private>, PathBuf) {
    let rsa = Rsa::generate(2048).unwrap();
    let pem = dir.join(format!("{name}.dkim.pem"));
    std::fs::write(&pem, rsa.private_key_to_pem().unwrap()).unwrap();
    (rsa, pem)
}

/// nina's reply as it travels (CRLF), DKIM-signed by dkimpy as `d=domain; s=selector`.
pub(crate) fn signed_reply(
    dir: &Path,
    nina: &Person,
    domain: &str,
    selector: &str,
    key: &Path,
) -> Vec<u8> {
    let reply = to_crlf(&openssl_reply(dir, nina, "nina@example.org", false, None));
    dkimpy_sign(&reply, domain, selector, key)
}

#[test]
fn certs_import_checks_dkim_with_the_name_servers_of_harvest_dns() {
    let (d, _) = fresh("");
    let dir = d.path();
    let nina = person(dir, "nina", "nina@example.org", "ca", 400, EMAIL_EXT);
    let (org, org_pem) = dkim_key(dir, "org");
    let (net, net_pem) = dkim_key(dir, "net");
    let dns = Dnsmasq::start(
        &["example.org", "example.net"],
        &[
            ("s1._domainkey.example.org", &key_record(&org)),
            ("s1._domainkey.example.net", &key_record(&net)),
        ],
    );
    let config = dir.join("dkim.toml");
    std::fs::write(
        &config,
        format!(
            "keys = \"pki/keys\"\ncerts = \"harvested\"\nca = \"pki/ca.pem\"\n\
             harvest_require_dkim = true\n{}",
            dns.config_line()
        ),
    )
    .unwrap();
    let good = signed_reply(dir, &nina, "example.org", "s1", &org_pem);
    assert!(good.starts_with(b"DKIM-Signature: "));
    // a byte of the body changed after signing, where the S/MIME signature does not reach (the
    // preamble of multipart/signed): without DKIM it would still give the certificate
    let mut tampered = good.clone();
    let at = find(&tampered, b"This is an S/MIME signed message").unwrap();
    tampered[at] = b't';
    let no_dkim = dir.join("plain.toml");
    std::fs::write(
        &no_dkim,
        "keys = \"pki/keys\"\ncerts = \"plain\"\nca = \"pki/ca.pem\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.join("plain")).unwrap();
    let f = d.write("tampered.eml", &tampered);
    let (code, out) = import(&d, &no_dkim, &[&f]);
    assert_eq!(code, 0, "the S/MIME signature still holds: {out}");
    let cases = [
        ("tampered.eml", tampered, "body hash does not match"),
        (
            "other-domain.eml",
            signed_reply(dir, &nina, "example.net", "s1", &net_pem),
            "d=example.net passes but is not the From domain example.org",
        ),
        (
            "no-record.eml",
            signed_reply(dir, &nina, "example.org", "gone", &org_pem),
            "d=example.org: ",
        ),
        (
            "unsigned.eml",
            to_crlf(&openssl_reply(dir, &nina, "nina@example.org", false, None)),
            "no DKIM signature",
        ),
    ];
    for (name, bytes, why) in &cases {
        let f = d.write(name, bytes);
        let (code, out) = import(&d, &config, &[&f]);
        assert_eq!(code, 65, "{name}: {out}");
        assert!(
            out.starts_with("refused ") && out.contains("DKIM"),
            "{name}: {out}"
        );
        assert!(out.contains(why), "{name}: expected {why:?} in {out}");
        assert_eq!(out.lines().count(), 1, "{name}: {out}");
    }
    assert!(!dir.join("harvested/nina@example.org.crt").exists());
    // the questions went to dnsmasq: the name without a record too (answered NXDOMAIN)
    assert!(dns.asked("s1._domainkey.example.net") > 0, "{}", dns.log());
    assert!(
        dns.asked("gone._domainkey.example.org") > 0,
        "{}",
        dns.log()
    );
    // mail-auth compares the body hash before it asks for the key: the tampered reply asked nothing
    assert_eq!(dns.asked("s1._domainkey.example.org"), 0, "{}", dns.log());
    // passing and aligned: imported, after asking dnsmasq for the key
    let f = d.write("good.eml", &good);
    let (code, out) = import(&d, &config, &[&f]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("imported nina@example.org"), "{out}");
    assert!(dns.asked("s1._domainkey.example.org") > 0, "{}", dns.log());
    assert!(dir.join("harvested/nina@example.org.crt").exists());
    // a name server that is not an address: a configuration error, naming the key
    std::fs::write(
        &config,
        "keys = \"pki/keys\"\ncerts = \"harvested\"\nca = \"pki/ca.pem\"\n\
         harvest_require_dkim = true\nharvest_dns = [\"dns.example.org\"]\n",
    )
    .unwrap();
    let o = run(bin(dir)
        .arg("-c")
        .arg(&config)
        .args(["certs", "import"])
        .arg(&f));
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("harvest_dns"), "{}", stderr(&o));
}

/// The daemon's `certs_inbox` with DKIM required: a reply signed by its From domain gives a
/// certificate that the next message is encrypted to (opened by `openssl cms`); one signed by
/// another domain is refused with a reason naming DKIM. `check` names the name server.
#[test]
fn the_daemon_harvests_dkim_signed_replies_from_its_inbox() {
    let dir0 = Dir::new();
    let (org, org_pem) = dkim_key(dir0.path(), "org");
    let (net, net_pem) = dkim_key(dir0.path(), "net");
    let dns = Dnsmasq::start(
        &["example.org", "example.net"],
        &[
            ("s1._domainkey.example.org", &key_record(&org)),
            ("s1._domainkey.example.net", &key_record(&net)),
        ],
    );
    let s = Setup::in_dir(
        dir0,
        &format!(
            "certs_inbox = \"replies\"\nrescan_seconds = 3600\nharvest_require_dkim = true\n{}",
            dns.config_line()
        ),
    );
    let dir = s.d.path();
    let omar = person(dir, "omar", "omar@example.org", "ca", 400, EMAIL_EXT);
    let reply = to_crlf(&openssl_reply(dir, &omar, "omar@example.org", true, None));
    let o = run(&mut s.cmd("check"));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains(&format!(
            "DKIM keys are looked up at 127.0.0.1:{} (harvest_dns)",
            dns.port
        )),
        "{said}"
    );

    let mut daemon = s.start("run.log");
    s.wait_for_log("run.log", "watching");
    let inbox = s.path("replies");
    for (name, domain, key) in [
        ("other.eml", "example.net", &net_pem),
        ("omar.eml", "example.org", &org_pem),
    ] {
        let tmp = inbox.join(".incoming");
        std::fs::write(&tmp, dkimpy_sign(&reply, domain, "s1", key)).unwrap();
        std::fs::rename(&tmp, inbox.join(name)).unwrap();
    }
    s.wait_for("replies sorted", Duration::from_secs(60), || {
        inbox.join("done/omar.eml").exists() && inbox.join("refused/other.eml.reason").exists()
    });
    let reason = std::fs::read_to_string(inbox.join("refused/other.eml.reason")).unwrap();
    assert!(
        reason.contains(" dkim: ")
            && reason.contains("d=example.net passes but is not the From domain"),
        "{reason}"
    );
    assert!(dns.asked("s1._domainkey.example.org") > 0, "{}", dns.log());
    assert!(s.path("pki/certs/omar@example.org.crt").exists());
    s.wait_for_log("run.log", "reloaded");
    s.drop_message(
        "to-omar.eml",
        b"From: alice@example.com\r\nTo: omar@example.org\r\nSubject: statement\r\nMessage-ID: <omar@t>\r\n\r\nyour statement\r\n",
    );
    s.wait_for("omar's message delivered", Duration::from_secs(60), || {
        !s.pickup_files().is_empty()
    });
    let sealed = std::fs::read(&s.pickup_files()[0]).unwrap();
    let opened = decrypt_with(dir, &sealed, &omar).expect("omar decrypts");
    assert!(String::from_utf8_lossy(&opened).contains("your statement"));
    signal(&daemon, "-TERM");
    assert!(wait_exit(&mut daemon, Duration::from_secs(60)).success());
}

/// `harvest_require_dkim`: a reply DKIM-signed by mail-auth's signer with a test key, verified
/// against preloaded key records (the resolver has no name server: nothing leaves the machine).
#[test]
fn dkim_aligned_with_the_from_domain_is_required() {
    use mail_auth::common::crypto::{RsaKey, Sha256};
    use mail_auth::common::headers::HeaderWriter;
    use mail_auth::dkim::DkimSigner;
    use smime_pickup::harvest::{Harvester, dkim::Dkim};
    let (d, _) = fresh("");
    let dir = d.path();
    let nina = person(dir, "nina", "nina@example.org", "ca", 400, EMAIL_EXT);
    let reply = openssl_reply(dir, &nina, "nina@example.org", false, None);
    let rsa = Rsa::generate(2048).unwrap();
    let sign = |domain: &str, message: &[u8]| {
        let der = rsa.private_key_to_der().unwrap();
        let key =
            RsaKey::<Sha256>::from_key_der(rustls_pki_types::PrivateKeyDer::Pkcs1(der.into()))
                .unwrap();
        let sig = DkimSigner::from_key(key)
            .domain(domain)
            .selector("s1")
            .headers(["From", "To", "Subject"])
            .sign(message)
            .unwrap();
        let mut out = sig.to_header().into_bytes();
        out.extend_from_slice(message);
        out
    };
    let good_record = key_record(&rsa);
    let other_record = key_record(&Rsa::generate(2048).unwrap());
    let harvester = |records: &[(&str, &str)]| {
        Harvester::new(
            dir.join("harvested"),
            &pki().join("ca.pem"),
            Some(Dkim::preloaded(records).unwrap()),
        )
        .unwrap()
    };
    let now = smime_pickup::smime::certs::unix_now();
    // no DKIM signature at all
    let h = harvester(&[("s1._domainkey.example.org", &good_record)]);
    let r = h.harvest(&reply, now).unwrap_err();
    assert_eq!((r.class, r.why.as_str()), ("dkim", "no DKIM signature"));
    // signed by another domain: passes, but is not aligned with From
    let h = harvester(&[("s1._domainkey.example.net", &good_record)]);
    let r = h.harvest(&sign("example.net", &reply), now).unwrap_err();
    assert_eq!(r.class, "dkim");
    assert!(r.why.contains("not the From domain"), "{}", r.why);
    // the published key is another one: fails
    let h = harvester(&[("s1._domainkey.example.org", &other_record)]);
    let r = h.harvest(&sign("example.org", &reply), now).unwrap_err();
    assert_eq!(r.class, "dkim", "{}", r.why);
    assert!(r.why.contains("fail"), "{}", r.why);
    assert!(!dir.join("harvested/nina@example.org.crt").exists());
    // aligned and passing: imported
    let h = harvester(&[("s1._domainkey.example.org", &good_record)]);
    let done = h.harvest(&sign("example.org", &reply), now).unwrap();
    assert_eq!(done.address, "nina@example.org");
    assert!(dir.join("harvested/nina@example.org.crt").exists());
}
