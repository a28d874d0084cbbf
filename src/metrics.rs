//! Counters and gauges in the Prometheus text format, written atomically to `metrics_file` (for
//! node_exporter's textfile collector) once a second by the daemon's main loop.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `smime_pickup_delivered_total{route}` | counter | inputs delivered, by route (`pickup`, `smtp`, `api`) |
//! | `smime_pickup_failed_total{reason}` | counter | inputs moved to `failed`, by class (`input`, `key`, `certificate`, `server`, `internal`) |
//! | `smime_pickup_deferred_total` | counter | deliveries deferred for a retry |
//! | `smime_pickup_bytes_total` | counter | bytes of sealed output delivered |
//! | `smime_pickup_seal_seconds` | histogram | time to parse and seal one input |
//! | `smime_pickup_queue_depth` | gauge | inputs queued or in progress |
//! | `smime_pickup_retry_waiting` | gauge | deferred inputs waiting for their retry |
//! | `smime_pickup_pickup_backlog` | gauge | files in the pickup directory at the last count |
//! | `smime_pickup_route{route}` | gauge | 1 for the route in use now |
//! | `smime_pickup_certificate_expiry_days` | gauge | days until the earliest usable certificate (key or recipient) expires |
//! | `smime_pickup_certs_imported_total` | counter | recipient certificates harvested from replies in `certs_inbox` |
//! | `smime_pickup_certs_refused_total{reason}` | counter | replies in `certs_inbox` that gave no certificate, by reason (`unsigned`, `signature`, `untrusted`, `expired`, `usage`, `address`, `dkim`, `older`, `io`) |
//! | `smime_pickup_certs_deferred_total` | counter | tries of replies in `certs_inbox` whose DKIM lookup failed for the moment (left in the inbox for the next scan) |

use std::sync::atomic::{AtomicU64, Ordering};

use crate::finish::FAILURE_CLASSES;

/// Upper bounds of the sealing-time buckets, in seconds.
const BUCKETS: [f64; 9] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

#[derive(Default)]
pub struct Metrics {
    pub delivered_pickup: AtomicU64,
    pub delivered_smtp: AtomicU64,
    pub delivered_api: AtomicU64,
    pub failed: [AtomicU64; 5],
    pub deferred: AtomicU64,
    pub bytes: AtomicU64,
    seal_buckets: [AtomicU64; 9],
    seal_count: AtomicU64,
    seal_micros: AtomicU64,
    /// certificates harvested from `certs_inbox` (the inbox thread counts into it)
    pub harvest: std::sync::Arc<crate::harvest::Counters>,
}

/// Gauges read from the daemon at render time.
pub struct Gauges<'a> {
    pub queue_depth: usize,
    pub retry_waiting: usize,
    pub pickup_backlog: usize,
    pub route: &'a str,
    pub expiry_days: Option<i64>,
}

impl Metrics {
    pub fn failed(&self, class: &str) {
        let i = FAILURE_CLASSES
            .iter()
            .position(|c| *c == class)
            .unwrap_or(4);
        self.failed[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn delivered(&self, route: &str, bytes: usize) {
        let counter = match route {
            "smtp" => &self.delivered_smtp,
            "api" => &self.delivered_api,
            _ => &self.delivered_pickup,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Inputs delivered, all routes together.
    pub fn delivered_total(&self) -> usize {
        [
            &self.delivered_pickup,
            &self.delivered_smtp,
            &self.delivered_api,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed) as usize)
        .sum()
    }

    /// Inputs moved to the failed folder, all classes together.
    pub fn failed_total(&self) -> usize {
        self.failed
            .iter()
            .map(|c| c.load(Ordering::Relaxed) as usize)
            .sum()
    }

    pub fn sealed_in(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.seal_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.seal_count.fetch_add(1, Ordering::Relaxed);
        self.seal_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn render(&self, g: &Gauges) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = String::new();
        s.push_str("# HELP smime_pickup_delivered_total Inputs delivered, by route.\n# TYPE smime_pickup_delivered_total counter\n");
        s.push_str(&format!(
            "smime_pickup_delivered_total{{route=\"pickup\"}} {}\n",
            get(&self.delivered_pickup)
        ));
        s.push_str(&format!(
            "smime_pickup_delivered_total{{route=\"smtp\"}} {}\n",
            get(&self.delivered_smtp)
        ));
        s.push_str(&format!(
            "smime_pickup_delivered_total{{route=\"api\"}} {}\n",
            get(&self.delivered_api)
        ));
        s.push_str("# HELP smime_pickup_failed_total Inputs moved to the failed folder, by reason class.\n# TYPE smime_pickup_failed_total counter\n");
        for (i, class) in FAILURE_CLASSES.iter().enumerate() {
            s.push_str(&format!(
                "smime_pickup_failed_total{{reason=\"{class}\"}} {}\n",
                get(&self.failed[i])
            ));
        }
        s.push_str("# HELP smime_pickup_deferred_total Deliveries deferred for a retry.\n# TYPE smime_pickup_deferred_total counter\n");
        s.push_str(&format!(
            "smime_pickup_deferred_total {}\n",
            get(&self.deferred)
        ));
        s.push_str("# HELP smime_pickup_bytes_total Bytes of sealed output delivered.\n# TYPE smime_pickup_bytes_total counter\n");
        s.push_str(&format!("smime_pickup_bytes_total {}\n", get(&self.bytes)));
        s.push_str("# HELP smime_pickup_seal_seconds Time to parse and seal one input.\n# TYPE smime_pickup_seal_seconds histogram\n");
        for (i, bound) in BUCKETS.iter().enumerate() {
            s.push_str(&format!(
                "smime_pickup_seal_seconds_bucket{{le=\"{bound}\"}} {}\n",
                get(&self.seal_buckets[i])
            ));
        }
        let count = get(&self.seal_count);
        s.push_str(&format!(
            "smime_pickup_seal_seconds_bucket{{le=\"+Inf\"}} {count}\n"
        ));
        s.push_str(&format!(
            "smime_pickup_seal_seconds_sum {}\n",
            get(&self.seal_micros) as f64 / 1e6
        ));
        s.push_str(&format!("smime_pickup_seal_seconds_count {count}\n"));
        s.push_str("# HELP smime_pickup_queue_depth Inputs queued or in progress.\n# TYPE smime_pickup_queue_depth gauge\n");
        s.push_str(&format!("smime_pickup_queue_depth {}\n", g.queue_depth));
        s.push_str("# HELP smime_pickup_retry_waiting Deferred inputs waiting for a retry.\n# TYPE smime_pickup_retry_waiting gauge\n");
        s.push_str(&format!("smime_pickup_retry_waiting {}\n", g.retry_waiting));
        s.push_str("# HELP smime_pickup_pickup_backlog Files in the pickup directory at the last count.\n# TYPE smime_pickup_pickup_backlog gauge\n");
        s.push_str(&format!(
            "smime_pickup_pickup_backlog {}\n",
            g.pickup_backlog
        ));
        s.push_str(
            "# HELP smime_pickup_route The route in use now.\n# TYPE smime_pickup_route gauge\n",
        );
        for route in ["pickup", "smtp", "api"] {
            s.push_str(&format!(
                "smime_pickup_route{{route=\"{route}\"}} {}\n",
                u8::from(g.route == route)
            ));
        }
        s.push_str("# HELP smime_pickup_certs_imported_total Recipient certificates harvested from signed replies.\n# TYPE smime_pickup_certs_imported_total counter\n");
        s.push_str(&format!(
            "smime_pickup_certs_imported_total {}\n",
            get(&self.harvest.imported)
        ));
        s.push_str("# HELP smime_pickup_certs_refused_total Signed replies that gave no certificate, by reason.\n# TYPE smime_pickup_certs_refused_total counter\n");
        for (i, reason) in crate::harvest::REFUSAL_CLASSES.iter().enumerate() {
            s.push_str(&format!(
                "smime_pickup_certs_refused_total{{reason=\"{reason}\"}} {}\n",
                get(&self.harvest.refused[i])
            ));
        }
        s.push_str("# HELP smime_pickup_certs_deferred_total Tries of signed replies whose DKIM lookup failed for the moment.\n# TYPE smime_pickup_certs_deferred_total counter\n");
        s.push_str(&format!(
            "smime_pickup_certs_deferred_total {}\n",
            get(&self.harvest.deferred)
        ));
        if let Some(days) = g.expiry_days {
            s.push_str("# HELP smime_pickup_certificate_expiry_days Days until the earliest usable certificate expires.\n# TYPE smime_pickup_certificate_expiry_days gauge\n");
            s.push_str(&format!("smime_pickup_certificate_expiry_days {days}\n"));
        }
        s
    }
}

/// Writes `text` to `path` atomically (temporary file beside it, then rename).
pub fn write_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.sealed_in(std::time::Duration::from_micros(800));
        m.sealed_in(std::time::Duration::from_millis(30));
        let text = m.render(&Gauges {
            queue_depth: 3,
            retry_waiting: 0,
            pickup_backlog: 7,
            route: "pickup",
            expiry_days: Some(12),
        });
        assert!(text.contains("smime_pickup_seal_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(text.contains("smime_pickup_seal_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("smime_pickup_seal_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("smime_pickup_seal_seconds_count 2\n"));
        assert!(text.contains(
            "smime_pickup_route{route=\"pickup\"} 1\nsmime_pickup_route{route=\"smtp\"} 0\nsmime_pickup_route{route=\"api\"} 0\n"
        ));
        assert!(text.contains("smime_pickup_certificate_expiry_days 12\n"));
    }
}
