//! TCP_NODELAY for lettre's SMTP sockets.
//!
//! lettre 0.11.23 leaves Nagle's algorithm on and writes the final `\r\n.\r\n` of DATA as a separate
//! five-byte write; Nagle then holds it until the server's delayed ACK, 40 ms later, for every message
//! (measured: 44 ms a transaction against smtp-sink, 0.5 ms for Python's smtplib on the same
//! machine). The fix is merged upstream (lettre pull request 1159) but not released. lettre does not
//! expose its socket, so after each connect we find it: every socket of this process whose peer is the
//! SMTP server gets TCP_NODELAY, through a duplicate descriptor obtained with pidfd_getfd(2) (safe
//! rustix calls; a duplicate shares the socket and so its options). If the kernel or a seccomp filter
//! refuses, nothing breaks: messages are only slower. Remove this module when lettre ships the fix.

use std::net::SocketAddr;

use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

/// Sets TCP_NODELAY on every socket of ours connected to `peer`; returns how many it set.
pub fn for_peer(peer: SocketAddr) -> std::io::Result<usize> {
    let pidfd = pidfd_open(getpid(), PidfdFlags::empty())?;
    let mut set = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Ok(n) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        let Ok(fd) = pidfd_getfd(&pidfd, n, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let connected_to_peer = rustix::net::getpeername(&fd)
            .ok()
            .flatten()
            .and_then(|a| SocketAddr::try_from(a).ok())
            .is_some_and(|a| {
                a.port() == peer.port() && (a.ip() == peer.ip() || peer.ip().is_unspecified())
            });
        if connected_to_peer && rustix::net::sockopt::set_tcp_nodelay(&fd, true).is_ok() {
            set += 1;
        }
    }
    Ok(set)
}
