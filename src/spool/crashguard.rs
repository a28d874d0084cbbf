//! The crash-loop guard: an input that was being sealed when the process crashed twice in a row is
//! not tried a third time.
//!
//! A panic is caught around the sealing of one input (the daemon quarantines it and goes on). What
//! cannot be caught (a stack overflow, an abort, the OOM killer) takes the process down with the
//! input still claimed; the next start adopts the claim and would seal it again. So each claim
//! being sealed is named in a slot of `WORK/<instance>/.sealing` (one slot per worker sealing at
//! the same time), and whoever adopts a dead instance's claims reads that file: every claim named
//! there gets a strike.
//!
//! - A claim with one strike is a suspect: it was being sealed when the process died, but so were
//!   the claims of the other workers. A suspect is sealed alone (no other worker seals meanwhile),
//!   so if the process dies again, the `.sealing` file names it and nothing else.
//! - A claim with two strikes goes to failed/ without being sealed again.
//! - A suspect sealed without dying is cleared: the two deaths must be in a row.
//!
//! Only a death that an input can cause is a strike: a crash of the thread sealing it (the
//! fatal-signal handler of `ffi::fatal` wrote its signal and thread into `.crashed`; each slot
//! names its thread too, so a crash elsewhere, a delivery thread's say, is only a death), or the
//! OOM killer (the kernel's count of OOM kills grew since the instance started, or since the
//! suspect's sealing started: `.system`). An outside `kill -9`, a stop timeout or a power loss
//! leaves neither, and is only counted: such deaths still make a suspect, sealed alone, but only
//! `DEATHS_OUT` of them in a row quarantine it (a crash-loop of a cause nobody foresaw is still cut
//! short), so the admin's `kill -9` never sends good mail to failed/.
//!
//! Strikes travel with the claims through `.suspects` (lines `<claim id> <crashes> <deaths>`), written
//! (temporary file, fsync, rename) into the adopter's folder before the claims move into it, so a
//! death during adoption loses none. Adopting the same dead folder twice gives the same count.
//!
//! Cost: a slot is one 64-byte `pwrite` before sealing and one after, and no fsync: what a process
//! wrote is in the page cache whatever way the process dies, and only a machine crash, which no
//! input causes, can lose it (then a poison input costs one restart more). The slots are aligned
//! within one page, so a process killed in the middle of a write leaves the old or the new record.
//!
//! The state files start with a dot; claim names start with their instance's id (`i…`), whatever
//! the input was called, so no input can pass for one of them or the other way round.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use log::{debug, warn};

mod death;

/// One slot per worker: the id of the claim it is sealing and the thread's id, or blanks.
pub const SEALING: &str = ".sealing";
/// Claims adopted with strikes, `<id> <crashes> <deaths>` a line.
pub const SUSPECTS: &str = ".suspects";
/// `signal NN tid TTT`, written by the fatal-signal handler as the process crashes (else empty).
pub const CRASHED: &str = ".crashed";
/// `boot <id>` and `oom_kill <count>` as of the instance's start, rewritten as each suspect's
/// sealing starts: did the OOM killer strike since?
pub const SYSTEM: &str = ".system";
const SLOT: usize = 64;
/// Crashes in a row after which a claim is quarantined instead of sealed.
pub const CRASHES_OUT: u32 = 2;
/// Deaths in a row, crashes or not, after which a claim is quarantined instead of sealed.
pub const DEATHS_OUT: u32 = 4;

/// How often the process died while sealing one claim, in a row.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Strikes {
    /// deaths an input can cause: a crash, or the OOM killer
    pub crashes: u32,
    /// all deaths, with those of no known cause (`kill -9`, a power loss)
    pub deaths: u32,
}

impl Strikes {
    /// Sealed alone: the process died while sealing it (and others, maybe).
    pub fn suspect(&self) -> bool {
        self.deaths > 0
    }

    /// Why the claim must not be sealed again, if so.
    pub fn out(&self) -> Option<String> {
        if self.crashes >= CRASHES_OUT {
            Some(format!(
                "the daemon crashed {} times in a row while sealing this input",
                self.crashes
            ))
        } else if self.deaths >= DEATHS_OUT {
            Some(format!(
                "the daemon died {} times in a row while sealing this input ({} of them a crash; \
                 the others of no known cause: killed from outside, or a power loss)",
                self.deaths, self.crashes
            ))
        } else {
            None
        }
    }

    fn max(self, other: Strikes) -> Strikes {
        Strikes {
            crashes: self.crashes.max(other.crashes),
            deaths: self.deaths.max(other.deaths),
        }
    }
}

/// This instance's side of the guard.
pub struct CrashGuard {
    dir: PathBuf,
    sealing: File,
    strikes: Mutex<HashMap<String, Strikes>>,
    /// slots free for reuse, and how many there are
    slots: Mutex<(Vec<usize>, usize)>,
    /// read: an ordinary claim is being sealed; write: a suspect is, alone
    alone: RwLock<()>,
}

/// Held while one claim is sealed: its slot names it until this is dropped.
pub struct Sealing<'g> {
    guard: &'g CrashGuard,
    slot: usize,
    _turn: Turn<'g>,
}

enum Turn<'g> {
    Shared(#[allow(dead_code)] RwLockReadGuard<'g, ()>),
    Alone(#[allow(dead_code)] RwLockWriteGuard<'g, ()>),
}

impl CrashGuard {
    /// Creates the state of a new instance folder, and has a crash of this process noted there.
    pub fn create(dir: &Path) -> std::io::Result<CrashGuard> {
        let open = |name| {
            File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.join(name))
        };
        let sealing = open(SEALING)?;
        if let Err(e) = crate::ffi::fatal::note_crashes_in(&open(CRASHED)?) {
            // then every death counts as one of no known cause: a poison input costs four restarts
            warn!("cannot note crashes (sigaction): {e}");
        }
        std::fs::write(dir.join(SYSTEM), death::system_now())?;
        Ok(CrashGuard {
            dir: dir.to_path_buf(),
            sealing,
            strikes: Mutex::new(HashMap::new()),
            slots: Mutex::new((Vec::new(), 0)),
            alone: RwLock::new(()),
        })
    }

    /// Strikes of the claims in a dead instance's folder: those it carried, plus a death (and a
    /// crash, if it was one) for each claim a worker was sealing when it died.
    pub fn read_dead(dir: &Path) -> HashMap<String, Strikes> {
        let mut strikes = read_suspects(&dir.join(SUSPECTS));
        let bytes = std::fs::read(dir.join(SEALING)).unwrap_or_default();
        let sealed: Vec<(&str, Option<i32>)> = bytes
            .chunks(SLOT)
            .filter_map(|slot| std::str::from_utf8(slot).ok())
            .filter_map(read_slot)
            .collect();
        if sealed.is_empty() {
            return strikes;
        }
        let cause = death::Cause::of(dir);
        let (n, many) = (sealed.len(), sealed.len() > 1);
        let struck = sealed.iter().any(|(_, thread)| cause.is_crash(*thread));
        let elsewhere = if !struck && matches!(cause, death::Cause::Crash(..)) {
            " in a thread sealing none of them, so this death is counted but is no strike"
        } else {
            ""
        };
        warn!(
            "{}: the instance died while sealing {n} input{}: {cause}{elsewhere}; {} sealed alone \
             next",
            dir.display(),
            if many { "s" } else { "" },
            if many { "each is" } else { "it is" }
        );
        for (id, thread) in sealed {
            let s = strikes.entry(id.to_string()).or_default();
            s.deaths += 1;
            s.crashes += u32::from(cause.is_crash(thread));
        }
        strikes
    }

    /// Takes over the strikes of claims about to be adopted, durably, before they move.
    pub fn carry(&self, adopted: HashMap<String, Strikes>) -> std::io::Result<()> {
        if adopted.is_empty() {
            return Ok(());
        }
        let mut strikes = self.strikes.lock().expect("strikes lock");
        for (id, n) in adopted {
            let kept = strikes.entry(id).or_default();
            *kept = kept.max(n);
        }
        self.save(&strikes)
    }

    /// How often the process died while sealing this claim, in a row.
    pub fn strikes(&self, id: &str) -> Strikes {
        self.strikes
            .lock()
            .expect("strikes lock")
            .get(id)
            .copied()
            .unwrap_or_default()
    }

    /// The claim was sealed (or refused) without the process dying, or left for good: it starts
    /// with a clean record.
    pub fn clear(&self, id: &str) {
        let mut strikes = self.strikes.lock().expect("strikes lock");
        if strikes.remove(id).is_some()
            && let Err(e) = self.save(&strikes)
        {
            debug!("{}: {e}", self.dir.join(SUSPECTS).display());
        }
    }

    /// Notes that the claim `id` is being sealed until the result is dropped. A suspect waits
    /// until no other claim is being sealed, and no other starts meanwhile.
    pub fn sealing(&self, id: &str) -> Sealing<'_> {
        let turn = if self.strikes(id).suspect() {
            let alone = self.alone.write().unwrap_or_else(|e| e.into_inner());
            // an OOM kill from here on is this suspect's (rare: no cost on the usual path)
            if let Err(e) = std::fs::write(self.dir.join(SYSTEM), death::system_now()) {
                debug!("{}: {e}", self.dir.join(SYSTEM).display());
            }
            Turn::Alone(alone)
        } else {
            Turn::Shared(self.alone.read().unwrap_or_else(|e| e.into_inner()))
        };
        let slot = {
            let mut slots = self.slots.lock().expect("slots lock");
            slots.0.pop().unwrap_or_else(|| {
                slots.1 += 1;
                slots.1 - 1
            })
        };
        // the thread is named too: a crash in another one is no strike for this claim
        self.write_slot(slot, &format!("{id} {}", crate::ffi::fatal::thread_id()));
        Sealing {
            guard: self,
            slot,
            _turn: turn,
        }
    }

    fn write_slot(&self, worker: usize, id: &str) {
        let mut record = [b' '; SLOT];
        record[SLOT - 1] = b'\n';
        let id = &id.as_bytes()[..id.len().min(SLOT - 1)];
        record[..id.len()].copy_from_slice(id);
        if let Err(e) = self.sealing.write_all_at(&record, (worker * SLOT) as u64) {
            debug!("{}: {e}", self.dir.join(SEALING).display());
        }
    }

    fn save(&self, strikes: &HashMap<String, Strikes>) -> std::io::Result<()> {
        let tmp = self.dir.join(".suspects.new");
        let mut f = File::create(&tmp)?;
        for (id, n) in strikes {
            writeln!(f, "{id} {} {}", n.crashes, n.deaths)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(SUSPECTS))
    }
}

impl Drop for Sealing<'_> {
    fn drop(&mut self) {
        self.guard.write_slot(self.slot, "");
        self.guard
            .slots
            .lock()
            .expect("slots lock")
            .0
            .push(self.slot);
    }
}

/// A slot's `<claim id> <thread id>` (an older version wrote the claim id alone), if it names one.
fn read_slot(slot: &str) -> Option<(&str, Option<i32>)> {
    let mut fields = slot
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .split_ascii_whitespace();
    let id = fields.next().filter(|id| is_claim_id(id))?;
    let thread = match fields.next() {
        Some(t) => Some(t.parse().ok()?),
        None => None,
    };
    fields.next().is_none().then_some((id, thread))
}

/// `.suspects`; a line of an older version, `<id> <strikes>`, counts its strikes as crashes.
fn read_suspects(path: &Path) -> HashMap<String, Strikes> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut fields = l.split_ascii_whitespace();
            let id = fields.next().filter(|id| is_claim_id(id))?;
            let crashes = fields.next()?.parse().ok()?;
            let deaths = match fields.next() {
                Some(n) => n.parse().ok()?,
                None => crashes,
            };
            Some((id.to_string(), Strikes { crashes, deaths }))
        })
        .collect()
}

/// `i<hex>-<seq>`, as `Instance` makes them.
fn is_claim_id(id: &str) -> bool {
    id.strip_prefix('i')
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(inst, seq)| {
            !inst.is_empty()
                && inst.bytes().all(|b| b.is_ascii_hexdigit())
                && !seq.is_empty()
                && seq.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Where the test hook is called from.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// as an input's sealing starts
    Sealing,
    /// as its delivery starts
    Delivering,
    /// as the route's result for it is acted on (its pickup files are published by then)
    Delivered,
}

/// Called with the stage and the claim's spool path, once set.
static HOOK: OnceLock<fn(Stage, &Path)> = OnceLock::new();

/// A seam for tests that must make the process die (or a worker panic) while an input is being
/// sealed, the way a stack overflow or the OOM killer would, or a delivery thread panic. Only a
/// program linking this library can set it: the `smime-pickup` binary never does, and no
/// configuration or environment variable reaches it.
#[doc(hidden)]
pub fn set_test_hook(hook: fn(Stage, &Path)) {
    let _ = HOOK.set(hook);
}

/// Runs the test hook, if a test set one (see `set_test_hook`).
pub fn test_hook(stage: Stage, rel: &Path) {
    if let Some(hook) = HOOK.get() {
        hook(stage, rel);
    }
}

#[cfg(test)]
mod tests;
