//! `sigaction` for the signals a crash raises (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS):
//! before the process dies of one, its number is written at the start of a file the crash-loop
//! guard opened (`spool::crashguard`), so whoever adopts the dead instance's claims can tell a crash
//! from an outside `kill -9` or a power loss, which leave no such note.
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

/// From now on, a crash writes `signal NN\n` at offset 0 of `file` (a copy of the descriptor is
/// kept, so `file` may be closed). A later call points the note at another file; the earlier copy
/// stays open, because a handler running at that moment may still be using it.
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
    // who raised it: the kernel for a fault (a positive si_code), or a process, with kill, tgkill or
    // sigqueue (si_code 0 or below; si_pid names the sender): this one (abort, raise), or another
    // (`kill -SEGV`, systemd's watchdog SIGABRT), which says nothing about the input being sealed
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
        let mut note = *b"signal   \n";
        let n = sig.unsigned_abs();
        note[7] = b'0' + (n / 10 % 10) as u8;
        note[8] = b'0' + (n % 10) as u8;
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

/// The signal a crash note names (`signal NN`), if `text` is one.
pub fn noted_signal(text: &[u8]) -> Option<i32> {
    let text = std::str::from_utf8(text).ok()?;
    text.trim_end_matches('\0')
        .trim()
        .strip_prefix("signal ")?
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=64).contains(n))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_note_names_its_signal() {
        assert_eq!(super::noted_signal(b"signal  6\n"), Some(6));
        assert_eq!(super::noted_signal(b"signal 11\n"), Some(11));
        assert_eq!(super::noted_signal(b""), None);
        assert_eq!(super::noted_signal(b"signal 99\n"), None);
        assert_eq!(super::noted_signal(b"garbage"), None);
    }
}
