//! The range of every numeric setting, checked when the file is read (README's table gives the
//! same ranges).

use super::file::File;

/// Every numeric setting's range (inclusive), checked when the file is read: a value outside is a
/// configuration error naming the key, never a panic or an endless wait later. README's table gives
/// the same ranges.
pub const RANGES: [(&str, u64, u64); 11] = [
    ("workers", 1, 1024),
    ("settle_ms", 0, 600_000),
    ("rescan_seconds", 1, 86_400),
    ("pickup_max_backlog", 1, 10_000_000),
    ("retry_max_seconds", 1, 86_400),
    ("max_recipients_per_file", 1, 100_000),
    ("max_message_bytes", 1, 1 << 30),
    ("min_free_bytes", 0, u64::MAX),
    ("[smtp] timeout", 1, 3_600),
    ("[smtp] max_messages_per_connection", 1, 1_000_000),
    ("[api] timeout", 1, 3_600),
];

pub(super) fn check_ranges(file: &File) -> Result<(), String> {
    let value = |key: &str| -> Option<u64> {
        let as_u64 = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        match key {
            "workers" => file.workers.map(as_u64),
            "settle_ms" => file.settle_ms,
            "rescan_seconds" => file.rescan_seconds,
            "pickup_max_backlog" => file.pickup_max_backlog.map(as_u64),
            "retry_max_seconds" => file.retry_max_seconds,
            "max_recipients_per_file" => file.max_recipients_per_file.map(as_u64),
            "max_message_bytes" => file.max_message_bytes.map(as_u64),
            "min_free_bytes" => file.min_free_bytes,
            "[smtp] timeout" => Some(file.smtp.timeout),
            "[smtp] max_messages_per_connection" => {
                Some(as_u64(file.smtp.max_messages_per_connection))
            }
            "[api] timeout" => file.api.timeout,
            _ => None,
        }
    };
    for (key, lo, hi) in RANGES {
        if let Some(v) = value(key)
            && !(lo..=hi).contains(&v)
        {
            return Err(format!("{key} = {v} is out of range ({lo} to {hi})"));
        }
    }
    Ok(())
}
