//! How a dead instance died, from what it left: a crash note (`.crashed`, written by the
//! fatal-signal handler), or the kernel's count of OOM kills having grown since the instance
//! started or began sealing a suspect (`.system`). Neither: an outside `kill -9`, a stop timeout,
//! a power loss.

use std::fmt;
use std::path::Path;

use super::{CRASHED, SYSTEM};

/// The cause of a death, as far as it can be known afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// it crashed with this signal (SIGSEGV, SIGABRT, ...), in this thread (if the note says)
    Crash(i32, Option<i32>),
    /// the OOM killer killed a process on this machine since the instance started
    OutOfMemory,
    /// no sign of either
    Unknown,
}

impl Cause {
    /// Reads the dead instance folder `dir`.
    pub fn of(dir: &Path) -> Cause {
        let note = std::fs::read(dir.join(CRASHED)).unwrap_or_default();
        if let Some(n) = crate::ffi::fatal::noted(&note) {
            return Cause::Crash(n.signal, n.thread);
        }
        let started = std::fs::read_to_string(dir.join(SYSTEM)).unwrap_or_default();
        if oom_kills_since(&started, &system_now()) {
            Cause::OutOfMemory
        } else {
            Cause::Unknown
        }
    }

    /// Could the input being sealed by `thread` have caused it? A crash in another thread could
    /// not (where the note names no thread, that cannot be told); the OOM killer strikes them all.
    pub fn is_crash(self, thread: Option<i32>) -> bool {
        match self {
            Cause::Crash(_, Some(crashed)) => thread.is_none_or(|t| t == crashed),
            Cause::Crash(_, None) | Cause::OutOfMemory => true,
            Cause::Unknown => false,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Crash(sig, _) => write!(f, "it crashed (signal {sig})"),
            Cause::OutOfMemory => f.write_str("the OOM killer was at work meanwhile"),
            Cause::Unknown => f.write_str(
                "no crash was seen (killed from outside, or a power loss), so this death is \
                 counted but is no strike",
            ),
        }
    }
}

/// `boot <id>\noom_kill <count>\n` for this machine now (fields left out when /proc lacks them).
pub fn system_now() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let vmstat = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
    let mut text = String::new();
    if !boot.trim().is_empty() {
        text.push_str(&format!("boot {}\n", boot.trim()));
    }
    if let Some(line) = vmstat.lines().find(|l| l.starts_with("oom_kill ")) {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Did the OOM killer strike between `then` and `now` (both from `system_now`)? Only within one
/// boot, and only when both counts are known.
fn oom_kills_since(then: &str, now: &str) -> bool {
    let field = |text: &str, key: &str| -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .map(|v| v.trim().to_string())
    };
    let count = |text: &str| field(text, "oom_kill")?.parse::<u64>().ok();
    let same_boot = field(then, "boot").is_some() && field(then, "boot") == field(now, "boot");
    matches!((count(then), count(now)), (Some(a), Some(b)) if same_boot && b > a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oom_kill_counts_only_within_one_boot_and_when_both_counts_are_known() {
        let at = |boot: &str, n: u64| format!("boot {boot}\noom_kill {n}\n");
        let table = [
            (at("a", 3), at("a", 4), true),
            (at("a", 3), at("a", 3), false),
            (at("a", 3), at("b", 9), false), // rebooted: a power loss, the count starts again
            (String::new(), at("a", 9), false),
            ("boot a\n".to_string(), at("a", 9), false),
            (at("a", 3), "boot a\n".to_string(), false),
            (
                "oom_kill 1\n".to_string(),
                "oom_kill 2\n".to_string(),
                false,
            ),
        ];
        for (then, now, want) in table {
            assert_eq!(oom_kills_since(&then, &now), want, "{then:?} → {now:?}");
        }
    }

    #[test]
    fn a_crash_note_wins_and_no_note_is_no_crash() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(Cause::of(tmp.path()), Cause::Unknown);
        std::fs::write(tmp.path().join(SYSTEM), system_now()).unwrap();
        std::fs::write(tmp.path().join(CRASHED), "").unwrap();
        // (an OOM kill elsewhere on this machine during the test would make this OutOfMemory)
        assert!(matches!(
            Cause::of(tmp.path()),
            Cause::Unknown | Cause::OutOfMemory
        ));
        std::fs::write(tmp.path().join(CRASHED), "signal 11\n").unwrap();
        assert_eq!(Cause::of(tmp.path()), Cause::Crash(11, None));
        std::fs::write(tmp.path().join(CRASHED), "signal 11 tid 77\n").unwrap();
        assert_eq!(Cause::of(tmp.path()), Cause::Crash(11, Some(77)));
        // the thread that crashed, one the note does not name, one an older slot does not name
        let crash = Cause::Crash(11, Some(77));
        assert!(crash.is_crash(Some(77)) && !crash.is_crash(Some(78)) && crash.is_crash(None));
        assert!(Cause::Crash(11, None).is_crash(Some(78)));
        assert!(Cause::OutOfMemory.is_crash(Some(78)) && Cause::OutOfMemory.is_crash(None));
        assert!(!Cause::Unknown.is_crash(Some(77)) && !Cause::Unknown.is_crash(None));
    }
}
