//! How a batch's staged files are made durable (`sync`), chosen for the pickup folder's filesystem.
//!
//! - `file`: the writeback of every staged file is started, then each is fdatasynced. A journalling
//!   filesystem commits the whole batch at the first fdatasync and the others find little left to do;
//!   without a journal every fdatasync is a device flush of its own.
//! - `filesystem`: one `syncfs(2)` on the staging folder's filesystem per batch. Linux documents
//!   `syncfs` as giving the guarantees of an fsync of every file of that filesystem, folders included,
//!   and since Linux 5.8 it reports a writeback error of that filesystem. (POSIX has no `syncfs`; its
//!   `sync` only schedules the writes.) It also writes every other program's dirty data on that
//!   filesystem, the MTA's among them, and waits for it.
//! - `auto` (the default): `filesystem` on ext2/ext3/ext4 without a journal (no entry for the device
//!   in `/proc/fs/jbd2`), where it measured 1.3x to 2x faster (BENCHMARKS.md); `file` everywhere else:
//!   on journalled ext4 both measured the same, and then not flushing the MTA's writes wins. The
//!   choice is read from facts (filesystem magic, device, journal), not timed: a timing at start would
//!   be as noisy as the machine it runs on, and would flush other programs' data to decide.

use std::path::Path;

use serde::Deserialize;

/// The `sync` key; after `resolve`, never `Auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncStrategy {
    #[default]
    Auto,
    File,
    Filesystem,
}

/// What decides `auto`, read from the system for a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// "ext4" (any of ext2/3/4: one magic), "tmpfs", "xfs", "btrfs", or the magic in hex
    pub kind: String,
    /// the block device's kernel name (`vda`, `loop0`), when it has one
    pub device: Option<String>,
    /// a jbd2 journal is running for the device
    pub journal: bool,
}

impl Facts {
    pub fn of(folder: &Path) -> std::io::Result<Facts> {
        let kind = match rustix::fs::statfs(folder)?.f_type as u64 {
            0xEF53 => "ext4".to_string(),
            0x0102_1994 => "tmpfs".to_string(),
            0x5846_5342 => "xfs".to_string(),
            0x9123_683E => "btrfs".to_string(),
            other => format!("filesystem type {other:#x}"),
        };
        let dev = rustix::fs::stat(folder)?.st_dev;
        let link = format!(
            "/sys/dev/block/{}:{}",
            rustix::fs::major(dev),
            rustix::fs::minor(dev)
        );
        let device = std::fs::read_link(link)
            .ok()
            .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()));
        let journal = device.as_ref().is_some_and(|d| {
            std::fs::read_dir("/proc/fs/jbd2").is_ok_and(|entries| {
                entries.flatten().any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.rsplit_once('-').is_some_and(|(dev, _)| dev == d)
                })
            })
        });
        Ok(Facts {
            kind,
            device,
            journal,
        })
    }
}

/// The strategy for `setting` on a filesystem with `facts`, and why, for the log and `check`.
pub fn resolve(setting: SyncStrategy, facts: Option<&Facts>) -> (SyncStrategy, String) {
    let what = |s: SyncStrategy| match s {
        SyncStrategy::Filesystem => "one syncfs per batch",
        _ => "one fdatasync per file",
    };
    let on = |f: &Facts| {
        let journal = match (f.kind.as_str(), f.journal) {
            ("ext4", true) => ", journalled",
            ("ext4", false) => " without a journal",
            _ => "",
        };
        let device = f
            .device
            .as_deref()
            .map_or(String::new(), |d| format!(" on {d}"));
        format!("{}{journal}{device}", f.kind)
    };
    let chosen = match (setting, facts) {
        (SyncStrategy::Auto, Some(f)) if f.kind == "ext4" && f.device.is_some() && !f.journal => {
            SyncStrategy::Filesystem
        }
        (SyncStrategy::Auto, _) => SyncStrategy::File,
        (s, _) => s,
    };
    let why = match (setting, facts) {
        (SyncStrategy::Auto, Some(f)) => format!("sync = auto: {} ({})", what(chosen), on(f)),
        (SyncStrategy::Auto, None) => format!(
            "sync = auto: {} (the filesystem could not be identified)",
            what(chosen)
        ),
        (_, _) => format!(
            "sync = \"{}\": {}",
            if chosen == SyncStrategy::File {
                "file"
            } else {
                "filesystem"
            },
            what(chosen)
        ),
    };
    (chosen, why)
}

/// The strategy for the pickup folder `dir`, whose filesystem `facts` describe, logged once (at start).
pub fn for_folder(setting: SyncStrategy, dir: &Path, facts: Option<&Facts>) -> SyncStrategy {
    let (chosen, why) = resolve(setting, facts);
    log::info!("pickup {}: {why}", dir.display());
    chosen
}

/// The lines `check` prints about the choices made for the pickup folder's filesystem (how
/// outputs are synced, whether inodes are reused), when pickup is used.
pub fn report(config: &crate::config::Config) -> Vec<String> {
    let Some(dir) = config.pickup.as_ref() else {
        return Vec::new();
    };
    if !config.route.uses(crate::config::Hop::Pickup) {
        return Vec::new();
    }
    let facts = Facts::of(dir).ok();
    vec![
        resolve(config.sync, facts.as_ref()).1,
        super::recycle::decide(config.reuse_inodes, facts.as_ref()).1,
    ]
}

/// One syncfs on the filesystem holding `folder`.
pub fn syncfs(folder: &Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(folder)?;
    rustix::fs::syncfs(&dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kind: &str, device: Option<&str>, journal: bool) -> Facts {
        Facts {
            kind: kind.into(),
            device: device.map(Into::into),
            journal,
        }
    }

    #[test]
    fn auto_takes_syncfs_only_on_ext4_without_a_journal() {
        use SyncStrategy::*;
        for (setting, f, want, says) in [
            (
                Auto,
                Some(facts("ext4", Some("vda"), false)),
                Filesystem,
                "sync = auto: one syncfs per batch (ext4 without a journal on vda)",
            ),
            (
                Auto,
                Some(facts("ext4", Some("loop0"), true)),
                File,
                "sync = auto: one fdatasync per file (ext4, journalled on loop0)",
            ),
            (Auto, Some(facts("tmpfs", None, false)), File, "(tmpfs)"),
            (
                Auto,
                Some(facts("xfs", Some("sdb1"), false)),
                File,
                "(xfs on sdb1)",
            ),
            (
                Auto,
                Some(facts("ext4", None, false)),
                File,
                "ext4 without a journal)",
            ),
            (Auto, None, File, "could not be identified"),
            (
                File,
                Some(facts("ext4", Some("vda"), false)),
                File,
                "sync = \"file\": one fdatasync per file",
            ),
            (
                Filesystem,
                Some(facts("tmpfs", None, false)),
                Filesystem,
                "sync = \"filesystem\": one syncfs per batch",
            ),
            (Filesystem, None, Filesystem, "syncfs"),
        ] {
            let (got, why) = resolve(setting, f.as_ref());
            assert_eq!(got, want, "{setting:?} {f:?}");
            assert!(why.contains(says), "{why}");
        }
    }

    #[test]
    fn facts_of_this_machine_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let f = Facts::of(tmp.path()).unwrap();
        assert!(!f.kind.is_empty());
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            let f = Facts::of(shm).unwrap();
            assert_eq!((f.kind.as_str(), f.journal), ("tmpfs", false), "{f:?}");
        }
        assert!(Facts::of(&tmp.path().join("missing")).is_err());
        syncfs(tmp.path()).unwrap();
    }
}
