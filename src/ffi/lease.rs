//! `fcntl(fd, F_SETLEASE, arg)`: is a file open for writing (or at all) anywhere? Neither rustix (1.x) nor nix
//! (up to 0.32) wraps file leases, and no other way asks the kernel, per file, whether anyone holds
//! it open for writing. One call, with a borrowed (so open) descriptor and an integer argument: no
//! pointer and no memory crosses it, and the kernel checks everything else.
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The lease to hold on an open file description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// `F_RDLCK`: refused (EAGAIN) while the file is open for writing anywhere.
    Read,
    /// `F_WRLCK`: refused (EAGAIN) while any other open file description of the file exists.
    Write,
    /// `F_UNLCK`: give it back.
    Unlock,
}

/// `fcntl(fd, F_SETLEASE, F_RDLCK | F_WRLCK | F_UNLCK)`.
pub fn set_lease(fd: BorrowedFd<'_>, lease: Lease) -> io::Result<()> {
    let arg = match lease {
        Lease::Read => libc::F_RDLCK,
        Lease::Write => libc::F_WRLCK,
        Lease::Unlock => libc::F_UNLCK,
    };
    // SAFETY: F_SETLEASE takes a plain int; `fd` stays open for the borrow.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, arg) };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
