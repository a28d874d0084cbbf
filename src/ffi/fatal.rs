//! `sigaction` for the signals a crash raises (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS):
//! before the process dies of one, its number and the id of the thread it hit are written at the
//! start of a file the crash-loop guard opened (`spool::crashguard`), so whoever adopts the dead
//! instance's claims can tell a crash from an outside `kill -9` or a power loss, which leave no
//! such note, and the input whose sealing crashed from those other threads were sealing meanwhile.
//!
//! The handler does only what a signal handler may: an atomic load, `getpid`, a `pwrite` of ten
//! bytes from its own stack, `sigaction` and `raise`. A fault (raised by the kernel) or a signal
//! this process raised itself (`abort`) is noted; then a fault goes on to whatever handled it
//! before (Rust's own stack-overflow handler for SIGSEGV and SIGBUS, which prints "has overflowed
//! its stack" and aborts), or the handler restores the default action and raises the signal again,
//! so the process dies of it as it would have: same signal, same core dump. It runs on the
//! alternate signal stack Rust gives every thread, so a stack overflow can still run it.
//!
//! A signal sent by another process (an admin's `kill -SEGV`, systemd's watchdog SIGABRT) says
//! nothing about the input being sealed: it is not noted, and the process dies of it by the default
//! action (ignored, if it was ignored before us). Rust's handler is skipped for it: it would let a
//! sent SIGSEGV pass once, and the process would run on with a crash noted that never happened.
use std::io;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};

use libc::{c_int, c_void, siginfo_t};

const SIGNALS: [c_int; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
    libc::SIGSYS,
];

/// The descriptor the handler writes to, or -1.
static NOTE: AtomicI32 = AtomicI32::new(-1);
/// What handled each of `SIGNALS` before us, set once before any handler of ours is installed.
static BEFORE: OnceLock<[libc::sigaction; SIGNALS.len()]> = OnceLock::new();

/// From now on, a crash writes `signal NN tid TTT\n` at offset 0 of `file` (a copy of the
/// descriptor is kept, so `file` may be closed). A later call points the note at another file;
/// the earlier copy stays open, because a handler running at that moment may still be using it.
pub fn note_crashes_in(file: &std::fs::File) -> io::Result<()> {
    let fd = OwnedFd::from(file.try_clone()?).into_raw_fd();
    NOTE.store(fd, Ordering::SeqCst);
    let mut failed = None;
    BEFORE.get_or_init(|| {
        // SAFETY: an all-zero `sigaction` is a valid value (SIG_DFL, empty mask, no flags); each
        // call gets a valid signal number and valid pointers to owned structs, and the handler
        // installed has the three-argument signature that SA_SIGINFO asks for.
        unsafe {
            let mut before: [libc::sigaction; SIGNALS.len()] = std::mem::zeroed();
            let mut ours: libc::sigaction = std::mem::zeroed();
            ours.sa_sigaction = on_crash as *const () as libc::sighandler_t;
            ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut ours.sa_mask);
            // the previous handlers are all read before any of ours can run
            for (sig, old) in SIGNALS.iter().zip(before.iter_mut()) {
                if libc::sigaction(*sig, std::ptr::null(), old) != 0 {
                    failed = Some(io::Error::last_os_error());
                }
            }
            if failed.is_none() {
                for sig in SIGNALS {
                    if libc::sigaction(sig, &ours, std::ptr::null_mut()) != 0 {
                        failed = Some(io::Error::last_os_error());
                    }
                }
            }
            before
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

extern "C" fn on_crash(sig: c_int, info: *mut siginfo_t, context: *mut c_void) {
    // who raised it: the kernel for a fault (a positive si_code), or a process, with kill, tgkill
    // or sigqueue (si_code 0 or below; si_pid names the sender): this one (abort, raise), or
    // another (`kill -SEGV`, systemd's watchdog SIGABRT), which says nothing about any input
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t; getpid is async-signal-safe.
    let (fault, ours) = unsafe {
        match info.as_ref() {
            Some(i) if i.si_code <= 0 => (false, i.si_pid() == libc::getpid()),
            _ => (true, true),
        }
    };
    let before = BEFORE
        .get()
        .and_then(|b| SIGNALS.iter().position(|s| *s == sig).map(|i| b[i]));
    let was = |action| before.is_some_and(|old| old.sa_sigaction == action);
    if !ours && was(libc::SIG_IGN) {
        return; // ignored, as it was before us
    }
    let fd = NOTE.load(Ordering::SeqCst);
    if ours && fd >= 0 {
        // one length for every note: a second (an abort after a stack overflow) covers the first
        let mut note = *b"signal NN tid TTTTTTTTTT\n";
        put_number(&mut note[7..9], sig.unsigned_abs());
        put_number(&mut note[14..24], thread_id().unsigned_abs());
        // SAFETY: a write of a local buffer to a descriptor we keep open for the process's life;
        // pwrite is async-signal-safe, and its result does not matter here.
        unsafe { libc::pwrite(fd, note.as_ptr().cast(), note.len(), 0) };
    }
    match before {
        // only a fault goes on to the handler before us (Rust's reports a stack overflow, and
        // otherwise restores the default action and returns: the fault comes again and kills).
        // A sent one would be let pass there once, and the process would go on
        Some(old) if fault && !was(libc::SIG_DFL) && !was(libc::SIG_IGN) => {
            // SAFETY: `old` is the action the kernel gave us for this signal: its handler takes
            // three arguments when SA_SIGINFO is set and one otherwise, and gets what we got.
            unsafe {
                if old.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
                        std::mem::transmute(old.sa_sigaction);
                    f(sig, info, context);
                } else {
                    let f: extern "C" fn(c_int) = std::mem::transmute(old.sa_sigaction);
                    f(sig);
                }
            }
        }
        _ => {
            // SAFETY: the default action for a valid signal number; `raise` makes the signal
            // pending (it is blocked while this handler runs), so it is delivered as we return.
            unsafe {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &default, std::ptr::null_mut());
                libc::raise(sig);
            }
        }
    }
}

/// `n` in decimal, right-aligned in `field` (blanks before it; only the lowest digits if too long).
fn put_number(field: &mut [u8], mut n: u32) {
    for (i, b) in field.iter_mut().rev().enumerate() {
        *b = if n > 0 || i == 0 {
            b'0' + (n % 10) as u8
        } else {
            b' '
        };
        n /= 10;
    }
}

/// The calling thread's id, as the kernel knows it: a crash note names the thread that crashed.
pub fn thread_id() -> i32 {
    // SAFETY: gettid takes nothing and cannot fail; it is async-signal-safe.
    unsafe { libc::gettid() }
}

/// A crash note: its signal, and the thread that crashed (not named by an older version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Noted {
    pub signal: i32,
    pub thread: Option<i32>,
}

/// What a crash note (`signal NN tid TTT`) says, if `text` is one.
pub fn noted(text: &[u8]) -> Option<Noted> {
    let text = std::str::from_utf8(text).ok()?;
    let mut fields = text.trim_end_matches('\0').split_ascii_whitespace();
    (fields.next()? == "signal").then_some(())?;
    let signal = fields
        .next()?
        .parse()
        .ok()
        .filter(|n| (1..=64).contains(n))?;
    let thread = match (fields.next(), fields.next()) {
        (Some("tid"), Some(t)) => Some(t.parse().ok().filter(|t| *t > 0)?),
        _ => None,
    };
    Some(Noted { signal, thread })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_names_its_signal_and_thread() {
        let note = |signal, thread| Some(Noted { signal, thread });
        assert_eq!(noted(b"signal  6\n"), note(6, None));
        assert_eq!(noted(b"signal 11\n"), note(11, None));
        assert_eq!(noted(b"signal 11 tid       4321\n"), note(11, Some(4321)));
        assert_eq!(noted(b""), None);
        assert_eq!(noted(b"signal 99\n"), None);
        assert_eq!(noted(b"signal 11 tid x\n"), None);
        assert_eq!(noted(b"garbage"), None);
    }

    #[test]
    fn the_note_is_written_as_it_is_read() {
        let mut note = *b"signal NN tid TTTTTTTTTT\n";
        put_number(&mut note[7..9], 6);
        put_number(&mut note[14..24], 4_194_304);
        assert_eq!(&note, b"signal  6 tid    4194304\n");
        assert_eq!(
            noted(&note),
            Some(Noted {
                signal: 6,
                thread: Some(4_194_304)
            })
        );
        put_number(&mut note[7..9], 31);
        assert!(note.starts_with(b"signal 31 "));
    }
}
