//! SMTP delivery alone: one sealed 19 KB message sent COUNT times to a local server through our SMTP
//! route (`SmtpRoute::send`, as the daemon uses it), with no sealing in the loop, so the figure is
//! what the SMTP client and the server can move. `benches/e2e.sh` runs it against smtp-sink next to
//! the end-to-end seal + SMTP figures.
//!
//! `cargo bench --bench smtp -- PORT [COUNT] [THREADS] [PER_CONNECTION]` (defaults 2000, all cores,
//! 100). Prints `smtp <msg/s>` on its last line.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use smime_pickup::config::Config;
use smime_pickup::deliver::smtp::SmtpRoute;

fn main() {
    let args = common::Args::from_env();
    let number = |i: usize, default: usize| args.number(i, default);
    let args = &args.0;
    let Some(port) = args.first() else {
        eprintln!("usage: cargo bench --bench smtp -- PORT [COUNT] [THREADS] [PER_CONNECTION]");
        std::process::exit(2);
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (count, threads, per_connection) = (number(1, 2000), number(2, cores), number(3, 100));

    let sealed = common::sealed_19k();
    let config = Config::from_toml(
        &format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nmax_messages_per_connection = {per_connection}\n"
        ),
        None,
    )
    .unwrap();
    let route = SmtpRoute::new(config.smtp).unwrap();
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    route
                        .send(
                            &sealed.envelope.sender,
                            &sealed.envelope.recipients,
                            &sealed.data,
                        )
                        .unwrap();
                }
            });
        }
    });
    let rate = count as f64 / started.elapsed().as_secs_f64();
    println!(
        "{count} x {} bytes, {threads} threads, {per_connection} per connection: {rate:.0} msg/s",
        sealed.data.len()
    );
    println!("smtp {rate:.0}");
}
