//! When is a spool file complete? A pure state machine over what the watcher and the scanner report,
//! with the clock passed in, so every rule is tested with tables instead of sleeps.
//!
//! - renamed into the spool: complete at once (the writer finished elsewhere);
//! - created or written in place: open until the kernel reports close-after-write, then complete once
//!   it stayed unchanged for the settle time;
//! - found by a scan (no events seen): complete once its mtime is older than the settle time and no
//!   process holds it open for writing (see `scan_proc`); a scan that finds a tracked file closed
//!   repairs a missed close event (watch overflow);
//! - put back by a worker (it changed after it was judged complete): like a file written in place,
//!   whatever the rename back into the spool looks like to the watcher.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What was seen about one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Created,
    Modified,
    ClosedWrite,
    RenamedIn,
    Removed,
    /// found by a scan: `age` since its mtime, and whether a process has it open for writing
    Scanned {
        age: Duration,
        open_for_write: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    open: bool,
    ready_at: Instant,
    /// put back by us and its return not seen yet: the rename back is no sign of completeness, and
    /// the event of the claim's rename away may still be on its way
    returned: bool,
}

impl Entry {
    fn new(open: bool, ready_at: Instant) -> Entry {
        Entry {
            open,
            ready_at,
            returned: false,
        }
    }
}

/// Files not yet complete, and when the others become so.
#[derive(Debug)]
pub struct Tracker {
    settle: Duration,
    /// ordered, so everything below a folder is one range
    files: BTreeMap<PathBuf, Entry>,
}

impl Tracker {
    pub fn new(settle: Duration) -> Tracker {
        Tracker {
            settle,
            files: BTreeMap::new(),
        }
    }

    pub fn settle(&self) -> Duration {
        self.settle
    }

    pub fn seen(&mut self, path: &Path, what: Seen, now: Instant) {
        let settle = self.settle;
        match what {
            Seen::Removed if self.files.get(path).is_some_and(|e| e.returned) => {}
            Seen::Removed => {
                // a folder that left takes what was tracked below it along (paths order by
                // component, so those follow it directly)
                let gone: Vec<PathBuf> = self
                    .files
                    .range(path.to_path_buf()..)
                    .map(|(p, _)| p)
                    .take_while(|p| p.starts_with(path))
                    .cloned()
                    .collect();
                for p in gone {
                    self.files.remove(&p);
                }
            }
            Seen::RenamedIn => match self.files.get_mut(path) {
                Some(e) if e.returned => e.returned = false,
                _ => {
                    self.files
                        .insert(path.to_path_buf(), Entry::new(false, now));
                }
            },
            Seen::Created | Seen::Modified => {
                let e = self
                    .files
                    .entry(path.to_path_buf())
                    .or_insert(Entry::new(true, now));
                (e.open, e.ready_at) = (true, now + settle);
            }
            Seen::ClosedWrite => {
                let e = self
                    .files
                    .entry(path.to_path_buf())
                    .or_insert(Entry::new(false, now));
                (e.open, e.ready_at) = (false, now + settle);
            }
            Seen::Scanned {
                age,
                open_for_write,
            } => {
                let entry = self
                    .files
                    .entry(path.to_path_buf())
                    .or_insert(Entry::new(true, now));
                if open_for_write {
                    entry.open = true;
                } else {
                    entry.open = false;
                    entry.ready_at = entry.ready_at.max(now + settle.saturating_sub(age));
                }
            }
        }
    }

    /// A worker put `path` back (it changed after it was judged complete): complete again once
    /// closed (`open`: a process has it open for writing) and unchanged for the settle time. Called
    /// before the rename back, so the rename's event cannot make it complete at once.
    pub fn put_back(&mut self, path: &Path, open: bool, now: Instant) {
        let mut e = Entry::new(open, now + self.settle);
        e.returned = true;
        self.files.insert(path.to_path_buf(), e);
    }

    /// A worker found `path` changed before claiming it: unless events already track it, it is
    /// complete once unchanged for the settle time (a writer still on it is caught at the claim).
    pub fn changed(&mut self, path: &Path, now: Instant) {
        let settle = self.settle;
        self.files
            .entry(path.to_path_buf())
            .or_insert(Entry::new(false, now + settle));
    }

    /// Drops the files that are gone. The watcher does not report a file renamed away (each claim
    /// would come back as an event), so every full scan calls this.
    pub fn retain_existing(&mut self) {
        self.files.retain(|p, _| p.symlink_metadata().is_ok());
    }

    /// Forgets a path (a put-back that did not happen).
    pub fn forget(&mut self, path: &Path) {
        self.files.remove(path);
    }

    /// How many tracked paths, not complete yet, are still regular files.
    pub fn files_left(&self) -> usize {
        self.files
            .keys()
            .filter(|p| p.symlink_metadata().is_ok_and(|m| m.is_file()))
            .count()
    }

    /// Removes and returns the paths complete at `now`.
    pub fn take_ready(&mut self, now: Instant) -> Vec<PathBuf> {
        let ready: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(_, e)| !e.open && e.ready_at <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &ready {
            self.files.remove(p);
        }
        ready
    }

    /// The earliest moment a closed file becomes complete.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.files
            .values()
            .filter(|e| !e.open)
            .map(|e| e.ready_at)
            .min()
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// name, events at millisecond offsets, moment checked (ms), expected ready
    type Case = (&'static str, Vec<(u64, Seen)>, u64, bool);

    #[test]
    fn readiness_table() {
        let scanned = |age_ms: u64, open: bool| Seen::Scanned {
            age: Duration::from_millis(age_ms),
            open_for_write: open,
        };
        let cases: Vec<Case> = vec![
            (
                "renamed in is ready at once",
                vec![(0, Seen::RenamedIn)],
                0,
                true,
            ),
            (
                "created and still open",
                vec![(0, Seen::Created), (500, Seen::Modified)],
                10_000,
                false,
            ),
            (
                "slow writer, chunks 2 s apart",
                vec![
                    (0, Seen::Created),
                    (2000, Seen::Modified),
                    (4000, Seen::Modified),
                ],
                5500,
                false,
            ),
            (
                "closed, not yet settled",
                vec![(0, Seen::Created), (100, Seen::ClosedWrite)],
                900,
                false,
            ),
            (
                "closed and settled",
                vec![(0, Seen::Created), (100, Seen::ClosedWrite)],
                1100,
                true,
            ),
            (
                "reopened after close",
                vec![(0, Seen::ClosedWrite), (500, Seen::Modified)],
                5000,
                false,
            ),
            (
                "scan finds an old file",
                vec![(0, scanned(5000, false))],
                0,
                true,
            ),
            (
                "scan finds a fresh file",
                vec![(0, scanned(200, false))],
                500,
                false,
            ),
            (
                "fresh file settles",
                vec![(0, scanned(200, false))],
                800,
                true,
            ),
            (
                "scan finds a file open for writing",
                vec![(0, scanned(9000, true))],
                60_000,
                false,
            ),
            (
                "scan repairs a missed close",
                vec![(0, Seen::Created), (30_000, scanned(29_000, false))],
                30_000,
                true,
            ),
            (
                "removed before ready",
                vec![(0, Seen::ClosedWrite), (10, Seen::Removed)],
                5000,
                false,
            ),
        ];
        for (name, events, at, want) in cases {
            let t0 = Instant::now();
            let mut t = Tracker::new(S);
            let p = Path::new("/spool/a.eml");
            for (ms, what) in events {
                t.seen(p, what, t0 + Duration::from_millis(ms));
            }
            let ready = t.take_ready(t0 + Duration::from_millis(at));
            assert_eq!(ready.len() == 1, want, "{name}");
            if want {
                assert!(t.is_empty(), "{name}: taken once");
            }
        }
    }

    #[test]
    fn a_folder_that_leaves_takes_its_tracked_files_along() {
        let t0 = Instant::now();
        let mut t = Tracker::new(S);
        for p in [
            "/spool/x/a.eml",
            "/spool/x/y/b.eml",
            "/spool/x-2/c.eml",
            "/spool/xa.eml",
        ] {
            t.seen(Path::new(p), Seen::Created, t0);
        }
        t.seen(Path::new("/spool/x"), Seen::Removed, t0);
        assert!(!t.contains(Path::new("/spool/x/a.eml")));
        assert!(!t.contains(Path::new("/spool/x/y/b.eml")));
        assert!(
            t.contains(Path::new("/spool/x-2/c.eml")) && t.contains(Path::new("/spool/xa.eml"))
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_put_back_file_settles_again_whatever_its_rename_events_say() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let p = Path::new("/spool/a.eml");
        // the claim's rename away arrives late, then the rename back: neither counts
        let mut t = Tracker::new(S);
        t.put_back(p, true, at(0));
        t.seen(p, Seen::Removed, at(1));
        t.seen(p, Seen::RenamedIn, at(2));
        assert!(
            t.take_ready(at(60_000)).is_empty(),
            "open: waits for the close"
        );
        t.seen(p, Seen::ClosedWrite, at(3000));
        assert!(t.take_ready(at(3900)).is_empty(), "settling");
        assert_eq!(t.take_ready(at(4000)), vec![p.to_path_buf()]);
        // closed already: complete after the settle time, not at the rename back
        let mut t = Tracker::new(S);
        t.put_back(p, false, at(0));
        t.seen(p, Seen::RenamedIn, at(5));
        assert!(t.take_ready(at(500)).is_empty());
        assert_eq!(t.take_ready(at(1000)).len(), 1);
        // once back, a removal is a removal, and a new file renamed in is complete at once
        let mut t = Tracker::new(S);
        t.put_back(p, false, at(0));
        t.seen(p, Seen::RenamedIn, at(1));
        t.seen(p, Seen::Removed, at(2));
        assert!(t.is_empty());
        t.seen(p, Seen::RenamedIn, at(3));
        assert_eq!(t.take_ready(at(3)).len(), 1);
    }

    #[test]
    fn next_deadline_ignores_open_files() {
        let t0 = Instant::now();
        let mut t = Tracker::new(S);
        t.seen(Path::new("/a"), Seen::Created, t0);
        assert_eq!(t.next_deadline(), None);
        t.seen(Path::new("/b"), Seen::ClosedWrite, t0);
        assert_eq!(t.next_deadline(), Some(t0 + S));
    }

    #[test]
    fn a_full_scan_forgets_files_renamed_away_while_open() {
        let tmp = tempfile::tempdir().unwrap();
        let (here, gone) = (tmp.path().join("here.eml"), tmp.path().join("gone.eml"));
        std::fs::write(&here, b"x").unwrap();
        let mut t = Tracker::new(S);
        let t0 = Instant::now();
        t.seen(&here, Seen::Created, t0);
        t.seen(&gone, Seen::Created, t0); // made, then renamed away before it was closed
        t.retain_existing();
        assert!(t.contains(&here) && !t.contains(&gone));
        assert_eq!(t.len(), 1);
    }
}
