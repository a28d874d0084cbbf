//! The session against scripted servers on loopback (real servers are in tests/smtp.rs and
//! tests/interop.rs).

use super::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

/// Serves `connections` connections: greets with `greeting` (None: stays silent), answers the
/// first EHLO with `first`, any later one with `again`, QUIT with 221. Returns how many EHLOs
/// each connection sent.
fn server(
    connections: usize,
    greeting: Option<&'static str>,
    first: &'static str,
    again: &'static str,
) -> (u16, std::thread::JoinHandle<Vec<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut ehlos = Vec::new();
        for _ in 0..connections {
            let (stream, _) = listener.accept().unwrap();
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            let Some(greeting) = greeting else {
                // silent until the client gives up
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                ehlos.push(0);
                continue;
            };
            w.write_all(greeting.as_bytes()).unwrap();
            let mut n = 0;
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let reply = match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                    Some("EHLO") => {
                        n += 1;
                        if n == 1 { first } else { again }
                    }
                    Some("QUIT") => "221 bye\r\n",
                    _ => "250 ok\r\n",
                };
                let _ = w.write_all(reply.as_bytes());
                if reply.starts_with("221") {
                    break;
                }
                line.clear();
            }
            ehlos.push(n);
        }
        ehlos
    });
    (port, handle)
}

fn route(port: u16) -> SmtpRoute {
    let config = crate::config::Config::from_toml(
        &format!("[smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntimeout = 1\n"),
        None,
    )
    .unwrap();
    SmtpRoute::new(config.smtp).unwrap()
}

#[test]
fn a_refused_second_ehlo_means_no_pipelining_and_is_not_asked_again() {
    let (port, server) = server(
        2,
        Some("220 strict\r\n"),
        "250-strict\r\n250 PIPELINING\r\n",
        "503 5.5.1 Duplicate HELO/EHLO\r\n",
    );
    let route = route(port);
    let c = route.open_tracked().expect("the session goes on");
    assert!(!c.pipelining());
    c.quit();
    let c = route.open_tracked().unwrap();
    assert!(!c.pipelining());
    c.quit();
    assert_eq!(server.join().unwrap(), [2, 1], "EHLOs per connection");
    assert_eq!(route.problem(), None);
}

#[test]
fn a_second_ehlo_that_is_answered_tells_about_pipelining() {
    let reply = "250-ok\r\n250-SIZE 1000\r\n250 PIPELINING\r\n";
    let (port, server) = server(1, Some("220 ok\r\n"), reply, reply);
    let c = route(port).open_tracked().unwrap();
    assert!(c.pipelining());
    c.quit();
    assert_eq!(server.join().unwrap(), [2]);
}

#[test]
fn a_refused_ehlo_is_the_routes_problem_with_the_servers_reply() {
    let (port, server) = server(
        1,
        Some("220 ok\r\n"),
        "554 5.7.1 not you\r\n",
        "554 5.7.1 not you\r\n",
    );
    let route = route(port);
    let Err(e) = route.open_tracked() else {
        panic!("opened")
    };
    assert!(e.is_session() && !e.is_permanent(), "{e:?}");
    let why = route.problem().unwrap();
    assert!(why.contains("554") && why.contains("not you"), "{why}");
    server.join().unwrap();
}

#[test]
fn a_silent_server_is_reported_as_a_timeout() {
    let (port, server) = server(1, None, "", "");
    let Err(e) = route(port).open() else {
        panic!("opened")
    };
    assert!(e.is_session(), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("127.0.0.1:{port}: no greeting or EHLO reply within 1 s")
    );
    server.join().unwrap();
}
