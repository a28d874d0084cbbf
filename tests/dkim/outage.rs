//! DKIM lookups that fail for the moment (`temperror`): a name server that never answers, one that
//! answers REFUSED (no zone, no upstream), then the zone served on the same port. `certs import`
//! exits 75 and the daemon's `certs_inbox` keeps the reply until DNS answers (or 24 h have passed).

use std::path::Path;
use std::time::{Duration, Instant};

use smime_pickup::harvest::dkim::{LOOKUP_RETRIES, LOOKUP_TIMEOUT};

use super::util::dns::*;
use super::util::reply::*;
use super::util::spool::*;
use super::util::*;
use super::{dkim_key, signed_reply};

/// The longest a lookup may take by the resolver's own limits: a first try and its retries, each
/// ending after `LOOKUP_TIMEOUT` whatever the number of servers; doubled, so that only a hang
/// fails the test.
fn lookup_bound() -> Duration {
    LOOKUP_TIMEOUT * (LOOKUP_RETRIES as u32 + 1) * 2
}

#[test]
fn a_name_server_that_never_answers_defers_the_reply_in_bounded_time() {
    let (d, _) = fresh("");
    let dir = d.path();
    let nina = person(dir, "nina", "nina@example.org", "ca", 400, EMAIL_EXT);
    let (_, pem) = dkim_key(dir, "org");
    let silent = Silent::start();
    let config = dir.join("dkim.toml");
    std::fs::write(
        &config,
        format!(
            "keys = \"pki/keys\"\ncerts = \"harvested\"\nca = \"pki/ca.pem\"\n\
             harvest_require_dkim = true\nharvest_dns = [\"127.0.0.1:{}\"]\n",
            silent.port
        ),
    )
    .unwrap();
    let f = d.write(
        "r.eml",
        &signed_reply(dir, &nina, "example.org", "s1", &pem),
    );
    let start = Instant::now();
    let mut child = Running(
        bin(dir)
            .arg("-c")
            .arg(&config)
            .args(["certs", "import"])
            .arg(&f)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // wait_exit stops it (by PID) and fails the test past the bound
    let status = wait_exit(&mut child, lookup_bound());
    let took = start.elapsed();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert_eq!(status.code(), Some(75), "{out}");
    assert!(
        out.starts_with("deferred ") && out.contains("DKIM lookup failed for the moment"),
        "{out}"
    );
    assert!(
        out.contains("temperror") && out.contains("try again later"),
        "{out}"
    );
    // it waited for the resolver's timeouts: no shortcut took it
    assert!(took >= LOOKUP_TIMEOUT, "{took:?}: {out}");
    eprintln!("a silent name server: deferred after {took:?}");
}
/// `certs import` while the name server of `harvest_dns` cannot help: a dnsmasq without the zone
/// and without upstream answers REFUSED at once (as a local resolver that lost its upstream says
/// SERVFAIL; a closed port is no quicker than a silent server: hickory's UDP sockets are not
/// connected, so the ICMP "port unreachable" never reaches it). Exit 75 and "try again later",
/// nothing written; the same file again once a dnsmasq with the zone listens on that port:
/// imported.
#[test]
fn certs_import_with_the_name_server_down_exits_75_then_imports_once_it_is_up() {
    let (d, _) = fresh("");
    let dir = d.path();
    let nina = person(dir, "nina", "nina@example.org", "ca", 400, EMAIL_EXT);
    let (org, pem) = dkim_key(dir, "org");
    let down = Dnsmasq::start(&[], &[]);
    let port = down.port;
    let config = dir.join("dkim.toml");
    std::fs::write(
        &config,
        format!(
            "keys = \"pki/keys\"\ncerts = \"harvested\"\nca = \"pki/ca.pem\"\n\
             harvest_require_dkim = true\nharvest_dns = [\"127.0.0.1:{port}\"]\n"
        ),
    )
    .unwrap();
    let f = d.write(
        "r.eml",
        &signed_reply(dir, &nina, "example.org", "s1", &pem),
    );
    let start = Instant::now();
    let (code, out) = import(&d, &config, &[&f]);
    let took = start.elapsed();
    assert_eq!(code, 75, "{out}");
    assert!(
        out.starts_with("deferred ")
            && out.contains("DKIM lookup failed for the moment")
            && out.contains("d=example.org: temperror")
            && out.ends_with("; try again later\n"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    // answered, not timed out: a single timeout of the resolver is longer
    assert!(took < LOOKUP_TIMEOUT, "{took:?}: {out}");
    assert!(
        down.asked("s1._domainkey.example.org") > 0,
        "{}",
        down.log()
    );
    assert!(!dir.join("harvested/nina@example.org.crt").exists());
    eprintln!("a name server answering REFUSED: deferred after {took:?}");
    // with a refused reply beside it, the refusal decides: 65
    let unsigned = d.write(
        "unsigned.eml",
        &to_crlf(&openssl_reply(dir, &nina, "nina@example.org", false, None)),
    );
    let (code, out) = import(&d, &config, &[&f, &unsigned]);
    assert_eq!(code, 65, "{out}");
    assert!(
        out.starts_with("deferred ") && out.contains("\nrefused "),
        "{out}"
    );
    drop(down);
    let dns = Dnsmasq::start_on(
        port,
        &["example.org"],
        &[("s1._domainkey.example.org", &key_record(&org))],
    );
    let (code, out) = import(&d, &config, &[&f]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("imported nina@example.org"), "{out}");
    assert!(dns.asked("s1._domainkey.example.org") > 0, "{}", dns.log());
}

/// The daemon's `certs_inbox` while the name server of `harvest_dns` cannot help (REFUSED, as
/// above): the reply stays in the inbox (said once), is tried again at each scan (counted apart, no
/// faster than the scans), and is harvested at the first scan after a dnsmasq with the zone takes
/// over that port. Beside it, a reply signed by another domain is refused at once (it could never
/// count), and one that landed 25 h ago is refused with its temporary reason (`TEMPORARY_AT_MOST`).
#[test]
fn the_daemon_keeps_a_reply_while_dns_is_down_and_harvests_it_when_dns_is_back() {
    let dir0 = Dir::new();
    let (org, org_pem) = dkim_key(dir0.path(), "org");
    let (_, net_pem) = dkim_key(dir0.path(), "net");
    let down = Dnsmasq::start(&[], &[]);
    let port = down.port;
    let s = Setup::in_dir(
        dir0,
        &format!(
            "certs_inbox = \"replies\"\nrescan_seconds = 1\nharvest_require_dkim = true\n\
             harvest_dns = [\"127.0.0.1:{port}\"]\nmetrics_file = \"metrics.prom\"\n"
        ),
    );
    let dir = s.d.path();
    let omar = person(dir, "omar", "omar@example.org", "ca", 400, EMAIL_EXT);
    let reply = to_crlf(&openssl_reply(dir, &omar, "omar@example.org", true, None));
    let mut daemon = s.start("run.log");
    s.wait_for_log("run.log", "watching");
    let inbox = s.path("replies");
    let deliver = |name: &str, bytes: &[u8], age: Duration| {
        let tmp = inbox.join(".incoming");
        std::fs::write(&tmp, bytes).unwrap();
        let f = std::fs::File::options().write(true).open(&tmp).unwrap();
        f.set_modified(std::time::SystemTime::now() - age).unwrap();
        drop(f);
        std::fs::rename(&tmp, inbox.join(name)).unwrap();
    };
    let signed = dkimpy_sign(&reply, "example.org", "s1", &org_pem);
    let landed = Instant::now();
    deliver("omar.eml", &signed, Duration::ZERO);
    deliver("old.eml", &signed, Duration::from_secs(25 * 3600));
    deliver(
        "other.eml",
        &dkimpy_sign(&reply, "example.net", "s1", &net_pem),
        Duration::ZERO,
    );
    s.wait_for("the refusals", Duration::from_secs(60), || {
        inbox.join("refused/old.eml.reason").exists()
            && inbox.join("refused/other.eml.reason").exists()
    });
    let old = std::fs::read_to_string(inbox.join("refused/old.eml.reason")).unwrap();
    assert!(
        old.contains(
            " dkim: the DKIM lookup still failed for the moment after 25 h in the inbox: "
        ) && old.contains("temperror"),
        "{old}"
    );
    let other = std::fs::read_to_string(inbox.join("refused/other.eml.reason")).unwrap();
    assert!(
        other.contains(" dkim: ") && other.contains("d=example.net: temperror"),
        "{other}"
    );
    // tried at its arrival and at two scans after it, still down: kept, said once
    let deferred = || metric(&s.path("metrics.prom"), "smime_pickup_certs_deferred_total");
    s.wait_for("three tries", Duration::from_secs(60), || deferred() >= 3);
    let tries = deferred();
    // no faster than the scans (one a second), plus the event's own try
    assert!(
        tries <= landed.elapsed().as_secs() + 2,
        "{tries} tries in {:?}",
        landed.elapsed()
    );
    let log = std::fs::read_to_string(s.path("run.log")).unwrap();
    let said = "certs_inbox omar.eml: DKIM lookup failed for the moment: ";
    assert_eq!(log.matches(said).count(), 1, "{log}");
    assert!(
        log.contains("; left in the inbox, tried again at the next scan"),
        "{log}"
    );
    assert!(inbox.join("omar.eml").exists());
    assert!(!inbox.join("refused/omar.eml").exists() && !inbox.join("done/omar.eml").exists());
    assert!(!s.path("pki/certs/omar@example.org.crt").exists());
    let refused = metric(
        &s.path("metrics.prom"),
        "smime_pickup_certs_refused_total{reason=\"dkim\"}",
    );
    assert_eq!(refused, 2);
    assert!(
        down.asked("s1._domainkey.example.org") >= 3,
        "{}",
        down.log()
    );
    // the name server with the zone on the port of harvest_dns: the next scan harvests it
    drop(down);
    let dns = Dnsmasq::start_on(
        port,
        &["example.org"],
        &[("s1._domainkey.example.org", &key_record(&org))],
    );
    s.wait_for("omar harvested", Duration::from_secs(60), || {
        inbox.join("done/omar.eml").exists()
    });
    assert!(s.path("pki/certs/omar@example.org.crt").exists());
    assert!(dns.asked("s1._domainkey.example.org") > 0, "{}", dns.log());
    assert!(!inbox.join("refused/omar.eml").exists());
    s.wait_for_log("run.log", "imported omar@example.org");
    signal(&daemon, "-TERM");
    assert!(wait_exit(&mut daemon, Duration::from_secs(60)).success());
}

/// The value of `name` in the metrics file (0 before the file is there).
fn metric(file: &Path, name: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}
