//! The HTTP Transmissions API route against a strict stand-in server (tests/util/api_server.py):
//! the request shape per flavor, every stored message opened with openssl (and one with gpgsm),
//! connections reused, and the faults: 503s, 429 with Retry-After, 401, a 400 for one message, a
//! server that hangs, a server killed mid-drain, the daemon killed mid-drain, fallback in order.

mod util;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use util::api::{self as api, ApiServer, KEY};
use util::servers::*;
use util::spool::*;
use util::*;

/// Every stored transmission decrypts for its first recipient and verifies (openssl CLI).
fn assert_all_open(s: &Setup, server: &ApiServer) {
    for t in server.transmissions() {
        let msg = api::rfc822(&t);
        assert_crlf_only(&msg, "email_rfc822");
        let to = &api::recipients(&t)[0];
        let inner = openssl_decrypt(s.d.path(), &msg, to).unwrap_or_else(|e| panic!("{to}: {e}"));
        openssl_verify(s.d.path(), &inner).unwrap();
    }
}

fn message_id(t: &serde_json::Value) -> String {
    header(&api::rfc822(t), "message-id").expect("a Message-ID")
}

#[test]
fn powermta_gets_one_transmission_per_copy_on_reused_connections() {
    let server = ApiServer::start("powermta");
    let s = Setup::new(&format!(
        "route = \"api\"\nworkers = 2\nmetrics_file = \"metrics.prom\"\n{}",
        server.section("")
    ));
    for name in ["bcc", "pickup-format", "plain-text", "html-19k"] {
        let bytes = std::fs::read(fixtures().join(format!("eml/{name}.eml"))).unwrap();
        s.drop_message(&format!("{name}.eml"), &bytes);
    }
    for n in 0..6 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(server.violations().is_empty(), "{:?}", server.violations());
    let all = server.transmissions();
    // bcc.eml: To/Cc share one copy, each Bcc recipient gets their own (3); pickup-format.eml's
    // envelope recipients are both absent from To (2)
    assert_eq!(all.len(), 3 + 2 + 1 + 1 + 6, "{all:#?}");
    let mut bcc: Vec<Vec<String>> = all
        .iter()
        .filter(|t| message_id(t).contains("bcc.1716823800"))
        .map(api::recipients)
        .collect();
    bcc.sort();
    assert_eq!(
        bcc,
        [
            vec!["bob@example.com".to_string(), "dave@example.net".into()],
            vec!["bulk03@example.com".into()],
            vec!["frank@example.com".into()],
        ]
    );
    let pf: Vec<_> = all
        .iter()
        .filter(|t| t["campaign_id"] == "spring-sale")
        .collect();
    assert_eq!(pf.len(), 2, "x-job became campaign_id");
    assert!(pf.iter().all(|t| t["return_path"] == "bounces@example.com"));
    for t in &all {
        assert!(t.get("options").is_none(), "PowerMTA: no option: {t}");
        assert!(
            !api::rfc822(t).starts_with(b"x-"),
            "no envelope lines in the message"
        );
    }
    assert_all_open(&s, &server);
    // a sample with gpgsm too
    let plain = all
        .iter()
        .map(api::rfc822)
        .find(|m| header(m, "message-id").unwrap().contains("plain-text"))
        .unwrap();
    let inner = openssl_decrypt(s.d.path(), &plain, "bob@example.com").unwrap();
    let g = gpgsm();
    assert_eq!(
        g.decrypt(s.d.path(), &b64_decode(body_of(&plain))).unwrap(),
        inner
    );
    let (signed, sig) = split_signed(&inner);
    g.verify_detached(s.d.path(), &sig, &signed).unwrap();
    drop(g);
    // kept alive: never more connections than workers
    let conns: std::collections::HashSet<usize> = server.requests().iter().map(|r| r.2).collect();
    assert!(
        conns.len() <= 2,
        "{} connections for {} requests",
        conns.len(),
        all.len()
    );
    let err = stderr(&o);
    assert_eq!(err.matches(": delivered via api").count(), 10, "{err}");
    let metrics = std::fs::read_to_string(s.path("metrics.prom")).unwrap();
    assert!(
        metrics.contains("smime_pickup_delivered_total{route=\"api\"} 10\n"),
        "{metrics}"
    );
    assert!(!err.contains(KEY));
    s.assert_nothing_in_flight();
}

#[test]
fn sparkpost_gets_tracking_off_and_send_api_works() {
    let server = ApiServer::start("sparkpost");
    let s = Setup::new(&format!("route = \"api\"\n{}", server.section("")));
    s.drop_message("m.eml", &message(1));
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    let file = s.d.write("one.eml", &message(2));
    for flag in ["--api", "--send_api"] {
        let o = run(s.cmd("send").arg(&file).arg(flag));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{out}{}", stderr(&o));
        assert!(
            out.contains("OK - in ") && out.contains("key=\"********\""),
            "{out}"
        );
        assert!(!out.contains(KEY) && !stderr(&o).contains(KEY));
    }
    assert!(server.violations().is_empty(), "{:?}", server.violations());
    let all = server.transmissions();
    assert_eq!(all.len(), 3);
    for t in &all {
        assert_eq!(
            t["options"],
            serde_json::json!({"open_tracking": false, "click_tracking": false})
        );
    }
    assert_all_open(&s, &server);
}

#[test]
fn errors_503_then_429_are_retried_and_retry_after_is_honoured() {
    let server = ApiServer::start("powermta");
    server.control(r#"{"fail_first": 2, "rate_limit": 1, "retry_after": 3}"#);
    let s = Setup::new(&format!(
        "route = \"api\"\nworkers = 1\nretry_max_seconds = 1\n{}",
        server.section("")
    ));
    let mut child = s.start("run.log");
    for n in 0..3 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    s.wait_for("all three stored", Duration::from_secs(60), || {
        server.stored() == 3
    });
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
    let req = server.requests();
    let statuses: Vec<u16> = req.iter().map(|r| r.1).collect();
    assert_eq!(&statuses[..3], [503, 503, 429], "{statuses:?}");
    // nothing went out before the Retry-After of the 429 had passed
    let limited = req[2].0;
    assert!(
        req[3].0 >= limited + 2.95,
        "next request {:.2} s after the 429",
        req[3].0 - limited
    );
    let log = std::fs::read_to_string(s.path("run.log")).unwrap();
    assert!(
        log.contains("API route unhealthy") && log.contains("works again"),
        "{log}"
    );
    assert!(list_files(&s.path("failed")).is_empty(), "nothing failed");
    assert_all_open(&s, &server);
    s.assert_nothing_in_flight();
}

#[test]
fn a_refused_key_defers_everything_logs_once_and_never_shows_the_key() {
    let server = ApiServer::start("powermta");
    let s = Setup::new(&format!("route = \"api\"\n{}", server.section("")));
    // a wrong key: the server answers 401
    let wrong = s.d.config(&format!(
        "spool = \"spool\"\npickup = \"pickup\"\nfailed = \"failed\"\nroute = \"api\"\n{}",
        server
            .section("")
            .replace(KEY, "Wrong_Key_0123456789abcdefABCDEFxyz")
    ));
    for n in 0..4 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    let o = run(bin(s.d.path())
        .arg("-c")
        .arg(&wrong)
        .arg("once")
        .env("RUST_LOG", "debug"));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(75), "{err}");
    assert_eq!(err.matches("API route unhealthy").count(), 1, "{err}");
    assert!(err.contains("401"), "{err}");
    assert!(
        !err.contains("Wrong_Key") && !err.contains(KEY),
        "the key was printed: {err}"
    );
    assert!(
        list_files(&s.path("failed")).is_empty(),
        "a key problem fails no message"
    );
    assert_eq!(server.stored(), 0);
    // check --api tells a refused key from an accepted one
    let o = run(bin(s.d.path())
        .arg("-c")
        .arg(&wrong)
        .args(["check", "--api"]));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("the key is refused: 401"), "{out}");
    assert_eq!(o.status.code(), Some(69), "{out}");
    let good = s.d.config(&format!(
        "spool = \"spool\"\npickup = \"pickup\"\nfailed = \"failed\"\nroute = \"api\"\n{}",
        server.section("")
    ));
    let o = run(bin(s.d.path())
        .arg("-c")
        .arg(&good)
        .args(["check", "--api"]));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("key accepted") && out.contains("400"), "{out}");
    assert!(!out.contains(KEY));
    // and the deferred inputs go out with the right key
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(server.stored(), 4);
}

#[test]
fn a_400_fails_that_message_alone_with_the_servers_words() {
    let server = ApiServer::start("powermta");
    server.control(r#"{"refuse_campaign": "bad-job"}"#);
    let s = Setup::new(&format!("route = \"api\"\n{}", server.section("")));
    let mut bad =
        b"x-sender: alice@example.com\nx-receiver: bob@example.com\nx-job: bad-job\n".to_vec();
    bad.extend_from_slice(&message(9));
    s.drop_message("bad.eml", &bad);
    s.drop_message("good1.eml", &message(1));
    s.drop_message("good2.eml", &message(2));
    let o = s.once();
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    let reason = std::fs::read_to_string(s.path("failed/bad.eml.reason")).unwrap();
    assert!(
        reason.contains("server:") && reason.contains("campaign bad-job refused on demand"),
        "{reason}"
    );
    assert_eq!(server.stored(), 2);
    s.assert_nothing_in_flight();
}

/// A 400 for the third copy of an input, after two copies were accepted: the input goes to failed/
/// (a 400 is about the input), its reason says who already got it, and the progress record goes
/// with the claim (nothing stays in the work folder).
#[test]
fn a_400_after_some_copies_went_out_names_who_got_them() {
    let server = ApiServer::start("powermta");
    server.control(r#"{"refuse_recipient": "bulk03@example.com"}"#);
    let s = Setup::new(&format!("route = \"api\"\n{}", server.section("")));
    s.drop_message(
        "bcc.eml",
        &std::fs::read(fixtures().join("eml/bcc.eml")).unwrap(),
    );
    let o = s.once();
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    let reason = std::fs::read_to_string(s.path("failed/bcc.eml.reason")).unwrap();
    assert!(
        reason.contains("recipient bulk03@example.com refused on demand"),
        "{reason}"
    );
    // To/Cc share the first copy, Frank's is the second; bulk03's was refused
    assert!(
        reason.contains(
            "3 recipients already got it (bob@example.com, dave@example.net, \
             frank@example.com): a retry of this input sends it to them again"
        ),
        "{reason}"
    );
    assert_eq!(server.stored(), 2);
    s.assert_nothing_in_flight();
}

#[test]
fn a_hanging_server_defers_after_the_timeout() {
    let server = ApiServer::start("powermta");
    server.control(r#"{"hang": true}"#);
    let s = Setup::new(&format!(
        "route = \"api\"\n{}",
        server.section("timeout = 1\n")
    ));
    s.drop_message("m1.eml", &message(1));
    s.drop_message("m2.eml", &message(2));
    let started = Instant::now();
    let o = s.once();
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(stderr(&o).contains("no reply within 1 s"), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(30));
    server.control("{}");
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(server.stored(), 2);
}

/// Message-ID -> transmissions of it, over everything the server stored.
fn counts(server: &ApiServer) -> HashMap<(String, Vec<String>), usize> {
    let mut seen = HashMap::new();
    for t in server.transmissions() {
        *seen
            .entry((message_id(&t), api::recipients(&t)))
            .or_default() += 1;
    }
    seen
}

#[test]
fn a_server_killed_mid_drain_loses_nothing() {
    let total = 40;
    let workers = 2;
    let mut server = ApiServer::start("powermta");
    let answered = 10;
    server.control(&format!(r#"{{"hold": {answered}}}"#));
    let s = Setup::new(&format!(
        "route = \"api\"\nworkers = {workers}\nretry_max_seconds = 1\n{}",
        server.section("timeout = 5\n")
    ));
    let mut child = s.start("run.log");
    for n in 0..total {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    s.wait_for(
        "a transmission beyond those answered",
        Duration::from_secs(60),
        || server.stored() > answered,
    );
    server.control("{}");
    server.restart();
    s.wait_for("every message", Duration::from_secs(120), || {
        counts(&server).len() == total
    });
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
    let dups: usize = counts(&server).values().map(|n| n - 1).sum();
    assert!(dups <= workers, "{dups} duplicates");
    s.assert_nothing_in_flight();
}

#[test]
fn kill_9_during_an_api_drain_sends_at_most_one_transmission_per_worker_again() {
    let total = 60;
    let workers = 2;
    let kills = 3;
    let server = ApiServer::start("powermta");
    server.control(r#"{"hold": 0}"#);
    let s = Setup::new(&format!(
        "route = \"api\"\nworkers = {workers}\nretry_max_seconds = 1\n{}",
        server.section("")
    ));
    // two copies each (a hidden recipient gets their own): the second relies on #api-sent
    for n in 0..total {
        let mut m = b"x-sender: alice@example.com\nx-receiver: bob@example.com\nx-receiver: frank@example.com\n".to_vec();
        m.extend_from_slice(&message(n));
        s.drop_message(&format!("m{n}.eml"), &m);
    }
    let step = 2 * total / (kills + 1);
    for k in 1..=kills {
        let answered = k * step;
        server.control(&format!(r#"{{"hold": {answered}}}"#));
        let mut child = s.start(&format!("run{k}.log"));
        s.wait_for(
            &format!("a transmission beyond {answered}"),
            Duration::from_secs(120),
            || server.stored() > answered,
        );
        signal(&child, "-KILL");
        wait_exit(&mut child, Duration::from_secs(20));
    }
    server.control("{}");
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    let seen = counts(&server);
    assert_eq!(seen.len(), 2 * total, "every copy arrived");
    let dups: usize = seen.values().map(|n| n - 1).sum();
    eprintln!("{dups} duplicates after {kills} kills with {workers} workers");
    assert!(dups <= kills * workers, "{dups} duplicates");
    assert!(list_files(&s.path("failed")).is_empty());
    s.assert_nothing_in_flight();
}

#[test]
fn pickup_then_api_uses_the_api_while_pickup_is_missing() {
    let server = ApiServer::start("powermta");
    let s = Setup::new(&format!(
        "route = \"pickup-then-api\"\n{}",
        server.section("")
    ));
    std::fs::remove_dir(s.path("pickup")).unwrap();
    for n in 0..3 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(server.stored(), 3);
    assert_eq!(
        stderr(&o).matches("route: API to").count(),
        1,
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_route_list_goes_on_to_smtp_when_the_api_is_refused() {
    let server = ApiServer::start("powermta");
    server.control(r#"{"status": 401}"#);
    let smtp = Aiosmtpd::start(AioOptions::default());
    let s = Setup::new(&format!(
        "route = [\"pickup\", \"api\", \"smtp\"]\n{}\n{}",
        util::mta::smtp_section(smtp.port, ""),
        server.section("")
    ));
    std::fs::remove_dir(s.path("pickup")).unwrap();
    for n in 0..4 {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(smtp.wait_delivered(4).len(), 4);
    assert_eq!(server.stored(), 0);
    let err = stderr(&o);
    assert!(err.contains("route: SMTP to"), "{err}");
}
