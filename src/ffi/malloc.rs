//! `mallopt`: glibc's allocator gives memory freed at the top of a heap back to the kernel once
//! more than 128 KiB are free there, and serves each request of 128 KiB or more with its own
//! mapping, unmapped when freed. Sealing reallocates its buffers all the time (OpenSSL grows the
//! buffer it encrypts into step by step), so each message faulted pages in again: 3 faults per
//! 19 KB message, 2 % of a drain's CPU in the profile, and a `madvise` every few dozen messages.
//! Neither the openssl crate nor rustix sets allocator options. Two integers cross each call, no
//! pointer.

/// Keeps up to `bytes` of freed memory in each heap, and serves requests under `bytes / 2` from
/// the heaps (glibc's own defaults grow toward such values only after large blocks were freed).
/// Peak memory is unchanged: what is kept was in use a moment before. `false` if glibc refused.
pub fn keep_freed_memory(bytes: i32) -> bool {
    // SAFETY: mallopt takes two plain integers and only changes allocator parameters, under
    // glibc's own arena locks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, bytes / 2) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, bytes) == 1
    }
}

#[cfg(test)]
mod tests {
    /// Minor page faults of the calling thread so far (`/proc/thread-self/stat`, field 10).
    fn faults() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // the command name may hold spaces: count fields after its closing parenthesis
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(7).unwrap().parse().unwrap()
    }

    #[test]
    fn memory_freed_by_a_thread_is_reused_without_faulting_it_in_again() {
        assert!(super::keep_freed_memory(8 << 20));
        std::thread::spawn(|| {
            let fill = |n: usize| std::hint::black_box(vec![1u8; n]);
            // another test's thread may share this heap and take the block in between: the best
            // of three tries. 512 pages each time when freed memory goes back to the kernel.
            let again = (0..3)
                .map(|_| {
                    drop(fill(2 << 20)); // 2 MiB: mapped and unmapped by glibc's defaults
                    let before = faults();
                    drop(fill(2 << 20));
                    faults() - before
                })
                .min()
                .unwrap();
            assert!(
                again < 64,
                "{again} page faults for memory freed a moment before"
            );
        })
        .join()
        .unwrap();
    }
}
