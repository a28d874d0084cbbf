//! API delivery alone: one sealed 19 KB message sent COUNT times through our API route
//! (`ApiRoute::send`, as the daemon uses it: one agent per worker, connections kept alive, TLS
//! verified against the test CA) to a loopback HTTPS server in this file (OpenSSL, a thread per
//! connection, HTTP/1.1 keep-alive, a 200 for every request), with no sealing in the loop.
//!
//! `cargo bench --bench api -- [COUNT] [THREADS]` (defaults 4000, all cores). Prints `api <msg/s>`
//! on its last line; `fresh` as a third argument opens a connection per message (the baseline).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
use smime_pickup::config::{Config, Flavor};
use smime_pickup::deliver::api::ApiRoute;
use smime_pickup::deliver::api::client::transmission;

/// Serves every connection in its own thread until the process ends.
fn server() -> u16 {
    let private = common::pki().join("private");
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate_chain_file(private.join("localhost.crt"))
        .unwrap();
    b.set_private_key_file(private.join("localhost.key"), SslFiletype::PEM)
        .unwrap();
    let acceptor = Arc::new(b.build());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let acceptor = acceptor.clone();
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let Ok(tls) = acceptor.accept(stream) else {
                    return;
                };
                let mut r = BufReader::new(tls);
                let body =
                    r#"{"results":{"total_accepted_recipients":1,"total_rejected_recipients":0}}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let w = r.get_mut();
                    if w.write_all(reply.as_bytes())
                        .and_then(|()| w.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn main() {
    let args = common::Args::from_env();
    let number = |i: usize, default: usize| args.number(i, default);
    let args = &args.0;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (count, threads) = (number(0, 4000), number(1, cores));
    let fresh = args.get(2).is_some_and(|a| a == "fresh");

    let sealed = common::sealed_19k();
    let port = server();
    let config = Config::from_toml(
        &format!(
            "[api]\nurl = \"https://127.0.0.1:{port}/api/v1/transmissions\"\nkey = \"Bench_Key_0123456789abcdefABCDEF\"\nflavor = \"powermta\"\ntls_ca = \"{}\"\n",
            common::pki().join("ca.pem").display()
        ),
        None,
    )
    .unwrap();
    let next = AtomicUsize::new(0);
    let route = ApiRoute::new(config.api.clone()).unwrap();
    let ca = std::fs::read(common::pki().join("ca.pem")).unwrap();
    let tls = Arc::new(
        native_tls::TlsConnector::builder()
            .add_root_certificate(native_tls::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap(),
    );
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    if fresh {
                        // a new agent with the same TLS settings: a new connection and handshake
                        let agent = ureq::AgentBuilder::new().tls_connector(tls.clone()).build();
                        let body =
                            transmission(&sealed, &sealed.envelope.recipients, Flavor::Powermta)
                                .unwrap();
                        agent
                            .post(&config.api.url)
                            .set("Authorization", "Bench_Key_0123456789abcdefABCDEF")
                            .set("Content-Type", "application/json")
                            .send_bytes(&body)
                            .unwrap()
                            .into_string()
                            .unwrap();
                    } else {
                        route.send(&sealed, &sealed.envelope.recipients).unwrap();
                    }
                }
            });
        }
    });
    let rate = count as f64 / started.elapsed().as_secs_f64();
    println!(
        "{count} x {} bytes, {threads} threads, {}: {rate:.0} msg/s",
        sealed.data.len(),
        if fresh {
            "a connection per message"
        } else {
            "reused connections"
        }
    );
    println!("api {rate:.0}");
}
