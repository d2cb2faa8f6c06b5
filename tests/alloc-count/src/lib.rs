//! A global allocator that counts, for the parser tests of vaultfs (a test binary sets
//! `#[global_allocator] static A: alloc_count::Counting = alloc_count::Counting;`).
//!
//! It records the largest single allocation of the process, how many allocations were
//! over [`LIMIT`], and the bytes each thread allocated (a measure of the work a decoder
//! did on one input that, unlike wall-clock time, does not depend on the machine's
//! load). It lives in its own crate because `GlobalAlloc` can only be implemented with
//! `unsafe`, which vaultfs forbids in its own code; the unsafe here only forwards to the
//! system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the tests call a runaway allocation: over 1 GiB at once.
pub const LIMIT: usize = 1 << 30;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
static OVER: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_BYTES: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting.
pub struct Counting;

fn record(size: usize) {
    LARGEST.fetch_max(size, Ordering::Relaxed);
    if size > LIMIT {
        OVER.fetch_add(1, Ordering::Relaxed);
    }
    let _ = THREAD_BYTES.try_with(|b| b.set(b.get().wrapping_add(size as u64)));
}

// SAFETY: every call forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The largest single allocation since the process started (or [`reset_largest`]).
pub fn largest() -> usize {
    LARGEST.load(Ordering::Relaxed)
}

pub fn reset_largest() {
    LARGEST.store(0, Ordering::Relaxed);
}

/// How many allocations were over [`LIMIT`].
pub fn over_limit() -> usize {
    OVER.load(Ordering::Relaxed)
}

/// Bytes this thread allocated so far (reallocations count their new size).
pub fn thread_bytes() -> u64 {
    THREAD_BYTES.try_with(|b| b.get()).unwrap_or(0)
}
