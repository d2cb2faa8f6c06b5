//! The memory budget (`--cache-size`) and the memory tier it bounds.
//!
//! The tier ([`MemTier`]) is an `lru::LruCache` of decompressed chunks with a byte total
//! kept beside it (the crate counts entries, not bytes); least recently used chunks are
//! evicted until the total fits the limit [`Budget`] gives at the time of the insert.
//!
//! The budget covers more than the chunks: what the tier may hold is the budget less the
//! memory outside the chunks, declared or measured, whichever is larger, and never less
//! than a quarter of the budget (reads go on when the rest outgrows it). Declared: a fixed
//! overhead (what the process held before serving), an external counter its owner keeps
//! up to date (the mount's inode table), and the buffers of loads in flight ([`Held`]).
//! Measured: the process's resident size less the chunks, plus a margin of
//! 1/[`RSS_MARGIN`] of the budget for what is allocated between two samples; it also sees
//! the allocator's slack, which no estimate does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::repo::format::ChunkId;
use crate::sync::lock;

use super::Chunk;

/// The budget's fraction kept free when the resident size is measured (1/16: 16 MiB of
/// 256 MiB), for allocations between two samples.
pub const RSS_MARGIN: u64 = 16;

/// How often the resident size is sampled at most.
pub const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// How the resident size is measured (see [`Budget::measure_rss`]).
type RssProbe = Box<dyn Fn() -> u64 + Send + Sync>;

/// The chunks in memory and their byte total.
pub struct Mem {
    pub lru: LruCache<ChunkId, Chunk>,
    pub bytes: u64,
}

/// See the module documentation.
pub struct MemTier {
    mem: Mutex<Mem>,
}

impl Default for MemTier {
    fn default() -> Self {
        Self::new()
    }
}

impl MemTier {
    pub fn new() -> MemTier {
        MemTier {
            mem: Mutex::new(Mem {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Mem> {
        lock(&self.mem)
    }

    /// The chunk, marked as used now.
    pub fn get(&self, id: &ChunkId) -> Option<Chunk> {
        self.lock().lru.get(id).cloned()
    }

    /// Whether the chunk is held (does not touch the LRU order).
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.lock().lru.contains(id)
    }

    /// Bytes of chunks held.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Keeps `c`, then evicts least recently used chunks until the total fits the limit
    /// `limit_for(bytes held)` gives.
    pub fn insert(&self, id: ChunkId, c: Chunk, limit_for: impl FnOnce(u64) -> u64) {
        let len = c.len() as u64;
        let mut mem = self.lock();
        let limit = limit_for(mem.bytes);
        if let Some(old) = mem.lru.put(id, c) {
            mem.bytes -= old.len() as u64;
        }
        mem.bytes += len;
        while mem.bytes > limit {
            match mem.lru.pop_lru() {
                Some((_, old)) => mem.bytes -= old.len() as u64,
                None => break,
            }
        }
    }

    #[cfg(test)]
    pub fn clear(&self) {
        let mut m = self.lock();
        m.lru.clear();
        m.bytes = 0;
    }
}

/// See the module documentation.
pub struct Budget {
    limit: u64,
    /// Memory outside the chunks declared once (see [`Budget::set_overhead`]).
    overhead: AtomicU64,
    /// Memory counted by its owner as it grows (see [`Budget::external_counter`]).
    external: Arc<AtomicU64>,
    /// Buffers of loads in flight: sealed bytes read and plaintext not yet in the tier.
    inflight: AtomicU64,
    rss_probe: OnceLock<RssProbe>,
    /// The last sample of the resident size, and when it was taken (ms since `created`,
    /// plus one; 0: never).
    rss_sample: AtomicU64,
    rss_sampled_ms: AtomicU64,
    created: Instant,
}

/// Counts bytes as in flight for as long as it lives.
pub struct Held<'a> {
    counter: &'a AtomicU64,
    bytes: u64,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            limit,
            overhead: AtomicU64::new(0),
            external: Arc::new(AtomicU64::new(0)),
            inflight: AtomicU64::new(0),
            rss_probe: OnceLock::new(),
            rss_sample: AtomicU64::new(0),
            rss_sampled_ms: AtomicU64::new(0),
            created: Instant::now(),
        }
    }

    /// The whole budget.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn set_overhead(&self, bytes: u64) {
        self.overhead.store(bytes, Ordering::Relaxed);
    }

    pub fn external_counter(&self) -> Arc<AtomicU64> {
        self.external.clone()
    }

    pub fn measure_rss(&self, probe: impl Fn() -> u64 + Send + Sync + 'static) {
        let _ = self.rss_probe.set(Box::new(probe));
    }

    /// Counts `bytes` of a load's buffers until the guard drops.
    pub fn hold(&self, bytes: u64) -> Held<'_> {
        self.inflight.fetch_add(bytes, Ordering::Relaxed);
        Held {
            counter: &self.inflight,
            bytes,
        }
    }

    pub fn inflight_bytes(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// The resident size, from a recent sample or a new one; 0 when not measured.
    pub fn rss(&self) -> u64 {
        let Some(probe) = self.rss_probe.get() else {
            return 0;
        };
        let now = self.created.elapsed().as_millis() as u64 + 1;
        let last = self.rss_sampled_ms.load(Ordering::Relaxed);
        if last == 0 || now >= last + RSS_SAMPLE_EVERY.as_millis() as u64 {
            self.rss_sample.store(probe(), Ordering::Relaxed);
            self.rss_sampled_ms.store(now, Ordering::Relaxed);
        }
        self.rss_sample.load(Ordering::Relaxed)
    }

    /// The tier's limit given the resident size and the bytes of chunks held.
    pub fn tier_limit(&self, rss: u64, chunk_bytes: u64) -> u64 {
        self.limit
            .saturating_sub(self.overhead_with(rss, chunk_bytes))
            .max(self.limit / 4)
    }

    /// Memory outside the chunks: declared and in flight, or measured, the larger.
    pub fn overhead_with(&self, rss: u64, chunk_bytes: u64) -> u64 {
        let declared = self.overhead.load(Ordering::Relaxed)
            + self.external.load(Ordering::Relaxed)
            + self.inflight.load(Ordering::Relaxed);
        if rss == 0 {
            return declared;
        }
        let margin = self.limit / RSS_MARGIN;
        declared.max(rss.saturating_sub(chunk_bytes) + margin)
    }
}
