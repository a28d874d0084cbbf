//! The pipelined transaction against a scripted server on loopback: it checks that the envelope
//! arrives in one go and that a transaction we must not finish is abandoned, not completed.
//! Real servers (Postfix, smtp-sink with and without PIPELINING) are in `tests/smtp.rs`.

use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// What the scripted server saw of one transaction.
#[derive(Debug)]
struct Seen {
    /// the envelope commands had all arrived before the first reply was sent
    pipelined: bool,
    /// the message ended with "\r\n.\r\n" (it was sent, not abandoned)
    completed: bool,
}

/// A server that offers PIPELINING, waits for MAIL … DATA without answering, then answers each
/// RCPT from `rcpt` in turn and DATA with 354 (or 554 when none was accepted).
fn server(rcpt: &'static [&'static str]) -> (u16, std::thread::JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut w, mut r) = accept_and_greet(&listener);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("MAIL FROM"), "{line}");
        // everything up to DATA must already be on its way: the client waits for no reply
        let pipelined = r.buffer().ends_with(b"DATA\r\n");
        let mut replies = String::from("250 2.1.0 ok\r\n");
        for reply in rcpt {
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.starts_with("RCPT TO"), "{line}");
            replies.push_str(reply);
            replies.push_str("\r\n");
        }
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "DATA\r\n");
        let any = rcpt.iter().any(|r| r.starts_with('2'));
        replies.push_str(if any {
            "354 go ahead\r\n"
        } else {
            "554 no valid recipients\r\n"
        });
        w.write_all(replies.as_bytes()).unwrap();
        let mut rest = Vec::new();
        if any {
            // until the client ends the message or closes the connection
            let mut buf = [0u8; 65536];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                rest.extend_from_slice(&buf[..n]);
                if rest.ends_with(b"\r\n.\r\n") {
                    w.write_all(b"250 2.0.0 queued\r\n").unwrap();
                    break;
                }
            }
        }
        Seen {
            pipelined,
            completed: rest.ends_with(b"\r\n.\r\n"),
        }
    });
    (port, handle)
}

/// Accepts one connection, greets, and answers both EHLOs offering PIPELINING.
fn accept_and_greet(listener: &TcpListener) -> (TcpStream, BufReader<TcpStream>) {
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    w.write_all(b"220 scripted ESMTP\r\n").unwrap();
    for _ in 0..2 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("EHLO"), "{line}");
        w.write_all(b"250-scripted\r\n250 PIPELINING\r\n").unwrap();
    }
    (w, r)
}

fn route_with_timeout(port: u16, seconds: u64) -> SmtpRoute {
    let config = crate::config::Config::from_toml(
        &format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout = {seconds}\n"
        ),
        None,
    )
    .unwrap();
    SmtpRoute::new(config.smtp).unwrap()
}

fn route(port: u16) -> SmtpRoute {
    route_with_timeout(port, 5)
}

fn rcpts(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("r{i}@example.com")).collect()
}

#[test]
fn the_envelope_is_pipelined_and_a_partial_refusal_delivers_to_the_rest() {
    let (port, server) = server(&["250 2.1.5 ok", "550 5.1.1 no such user"]);
    let out = route(port)
        .send("s@example.com", &rcpts(2), b"Subject: x\r\n\r\nhi\r\n")
        .unwrap();
    assert_eq!(out.accepted, ["r1@example.com"]);
    assert_eq!(out.rejected.len(), 1);
    assert!(out.rejected[0].1.contains("no such user"), "{out:?}");
    let seen = server.join().unwrap();
    assert!(seen.pipelined && seen.completed, "{seen:?}");
}

#[test]
fn a_temporary_refusal_after_354_abandons_the_message() {
    let (port, server) = server(&["250 2.1.5 ok", "450 4.2.0 try later"]);
    let err = route(port)
        .send("s@example.com", &rcpts(2), b"Subject: x\r\n\r\nhi\r\n")
        .unwrap_err();
    assert!(!err.is_permanent(), "{err}");
    assert!(err.to_string().contains("try later"), "{err}");
    let seen = server.join().unwrap();
    assert!(
        seen.pipelined && !seen.completed,
        "nothing delivered: {seen:?}"
    );
}

#[test]
fn a_server_gone_silent_costs_one_timeout_not_one_per_reply() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (_w, mut r) = accept_and_greet(&listener);
        let mut line = String::new();
        // reads the envelope, then answers nothing while the client waits
        r.read_line(&mut line).unwrap();
        std::thread::sleep(Duration::from_secs(4));
    });
    let route = route_with_timeout(port, 1);
    let mut c = route.open().unwrap();
    let started = std::time::Instant::now();
    let err = route
        .send_on(
            &mut c,
            "s@example.com",
            &rcpts(5),
            b"Subject: x\r\n\r\nhi\r\n",
        )
        .unwrap_err();
    // seven replies were due (MAIL, five RCPT, DATA): one timeout ends it, not seven
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(!err.is_permanent(), "{err}");
    assert_eq!(
        err.to_string(),
        format!("127.0.0.1:{port}: no reply to MAIL FROM within 1 s")
    );
    assert!(c.dead, "the connection is not used again");
    c.quit(); // must not wait for a reply either
    assert!(started.elapsed() < Duration::from_secs(3));
    server.join().unwrap();
}

#[test]
fn every_recipient_refused_sends_nothing() {
    let (port, server) = server(&["550 5.1.1 no", "553 5.1.3 bad"]);
    let out = route(port)
        .send("s@example.com", &rcpts(2), b"Subject: x\r\n\r\nhi\r\n")
        .unwrap();
    assert!(out.accepted.is_empty());
    assert_eq!(out.rejected.len(), 2);
    let seen = server.join().unwrap();
    assert!(seen.pipelined && !seen.completed, "{seen:?}");
}
