//! kill -9 on the SMTP route. Each message is finished right after the server's 250, before the
//! worker sends the next, so a crash can send again only what each worker has in flight: at most one
//! message per worker per crash. The kill moments come from the server, not from a clock: it answers
//! the end of DATA only for the first N messages it stored and holds the rest, and the daemon is
//! killed once a message beyond N has arrived.

mod util;

use std::collections::HashMap;
use std::time::Duration;

use util::mta::smtp_section;
use util::servers::*;
use util::spool::*;
use util::*;

#[test]
fn kill_9_during_an_smtp_drain_sends_at_most_one_message_per_worker_again() {
    let total = 300;
    let workers = 3;
    let kills = 5;
    let server = Aiosmtpd::start(AioOptions {
        hold: true,
        ..AioOptions::default()
    });
    let s = Setup::new(&format!(
        "route = \"smtp\"\nworkers = {workers}\nretry_max_seconds = 1\n{}",
        smtp_section(server.port, "")
    ));
    for n in 0..total {
        s.drop_message(&format!("m{n}.eml"), &message(n));
    }
    let step = total / (kills + 1);
    for k in 1..=kills {
        // the server answers `k * step` messages; the daemon is killed once one more has arrived
        let answered = k * step;
        server.answer_up_to(answered);
        let mut child = s.start(&format!("run{k}.log"));
        s.wait_for(
            &format!("a message beyond the {answered} answered"),
            Duration::from_secs(120),
            || server.stored() > answered,
        );
        signal(&child.0, "-KILL");
        wait_exit(&mut child.0, Duration::from_secs(20));
    }
    server.answer_up_to(usize::MAX >> 1);
    let o = s.once();
    assert!(o.status.success(), "{}", stderr(&o));

    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in server.delivered() {
        *seen
            .entry(header(&m, "message-id").expect("a Message-ID"))
            .or_default() += 1;
    }
    assert_eq!(seen.len(), total, "every message arrived");
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!("{duplicates} duplicates after {kills} kills with {workers} workers");
    // each kill left at least the held message unanswered: it goes again (at-least-once)
    assert!(
        (kills..=kills * workers).contains(&duplicates),
        "{duplicates} duplicates after {kills} kills with {workers} workers"
    );
    assert!(!s.path("failed").exists() || list_files(&s.path("failed")).is_empty());
    s.assert_nothing_in_flight();
}
