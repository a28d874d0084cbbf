//! Large buffers kept per thread for the next message.
//!
//! Sealing a message makes several buffers of about its size (the input, its canonical form, the
//! signed entity, the output). glibc returns blocks that large to the kernel when they are freed, so
//! every message paid for faulting them in and zeroing them again: about a fifth of the time for a
//! 577 KB message. A worker seals one message after another, so it keeps a few and reuses them
//! (at most four of up to 16 MB each per thread, and 128 MB for all threads together).

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Buffers kept per thread, and the largest worth keeping (bigger ones are rare; keeping them would
/// only hold memory).
const KEEP: usize = 4;
const SMALLEST: usize = 64 * 1024;
const LARGEST: usize = 16 * 1024 * 1024;
/// What all threads together keep at most, whatever the number of workers.
const BUDGET: usize = 128 * 1024 * 1024;

/// Bytes kept by all threads now.
static KEPT: AtomicUsize = AtomicUsize::new(0);

/// One thread's spare buffers; what they held leaves the budget with the thread.
struct Spare(Vec<Vec<u8>>);

impl Drop for Spare {
    fn drop(&mut self) {
        let held: usize = self.0.iter().map(Vec::capacity).sum();
        KEPT.fetch_sub(held, Ordering::Relaxed);
    }
}

thread_local! {
    static SPARE: RefCell<Spare> = const { RefCell::new(Spare(Vec::new())) };
}

/// An empty buffer with room for at least `capacity` bytes: a spare one of this thread if any.
pub fn take(capacity: usize) -> Vec<u8> {
    if capacity < SMALLEST {
        return Vec::with_capacity(capacity);
    }
    let spare = SPARE.with(|s| {
        let s = &mut s.borrow_mut().0;
        // the smallest that fits, else the largest (it grows once)
        let fits = (0..s.len())
            .filter(|&i| s[i].capacity() >= capacity)
            .min_by_key(|&i| s[i].capacity());
        let pick = fits.or_else(|| (0..s.len()).max_by_key(|&i| s[i].capacity()));
        pick.map(|i| s.swap_remove(i))
    });
    if let Some(b) = &spare {
        KEPT.fetch_sub(b.capacity(), Ordering::Relaxed);
    }
    match spare {
        Some(mut b) => {
            b.reserve(capacity);
            b
        }
        None => Vec::with_capacity(capacity),
    }
}

/// Gives a buffer back for this thread's next message.
pub fn give(mut buf: Vec<u8>) {
    if !(SMALLEST..=LARGEST).contains(&buf.capacity()) {
        return;
    }
    buf.clear();
    let size = buf.capacity();
    if KEPT.fetch_add(size, Ordering::Relaxed) + size > BUDGET {
        KEPT.fetch_sub(size, Ordering::Relaxed);
        return;
    }
    SPARE.with(|s| {
        let s = &mut s.borrow_mut().0;
        if s.len() < KEEP {
            s.push(buf);
        } else if let Some(i) = (0..s.len()).min_by_key(|&i| s[i].capacity())
            && s[i].capacity() < size
        {
            KEPT.fetch_sub(s[i].capacity(), Ordering::Relaxed);
            s[i] = buf;
        } else {
            KEPT.fetch_sub(size, Ordering::Relaxed);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_and_small_or_huge_ones_are_not_kept() {
        let mut b = take(100_000);
        b.extend_from_slice(&[7; 100_000]);
        let ptr = b.as_ptr();
        give(b);
        let again = take(80_000);
        assert_eq!(again.as_ptr(), ptr, "the same memory");
        assert!(again.is_empty() && again.capacity() >= 100_000);
        give(Vec::with_capacity(1000));
        give(Vec::with_capacity(LARGEST + 1));
        SPARE.with(|s| assert!(s.borrow().0.is_empty()));
        // at most KEEP, the largest ones win
        for n in 1..=KEEP + 2 {
            give(Vec::with_capacity(SMALLEST * n));
        }
        SPARE.with(|s| {
            let s = &s.borrow().0;
            assert_eq!(s.len(), KEEP);
            assert!(s.iter().all(|b| b.capacity() >= SMALLEST * 3));
        });
    }
}
