//! The chunk cache's counters: what `.vaultfs/stats.json` shows and tests count.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters, for logs and tests. Each is only ever added to.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Loads served by the disk tier.
    pub disk_hits: AtomicU64,
    /// Ranged reads of the store.
    pub fetches: AtomicU64,
    /// Those that fetched frames of a framed chunk, not whole chunks.
    pub frame_fetches: AtomicU64,
    /// Bytes those reads returned (stored: compressed and sealed).
    pub fetch_bytes: AtomicU64,
    /// Decompressed bytes of the chunks loaded (from the store or the disk tier).
    pub loaded_bytes: AtomicU64,
    pub fetch_errors: AtomicU64,
    /// Callers that waited on another caller's load.
    pub waits: AtomicU64,
    pub prefetches_queued: AtomicU64,
    pub prefetches_dropped: AtomicU64,
    /// Reads answered by a remembered store failure, without a fetch.
    pub failures_remembered: AtomicU64,
}

/// Adds `n` to a counter.
pub(super) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl CacheStats {
    /// The counters as JSON fields, under the names `stats.json` has always used.
    pub fn json_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let l = |c: &AtomicU64| serde_json::Value::from(c.load(Ordering::Relaxed));
        [
            ("cache_hits", l(&self.hits)),
            ("cache_misses", l(&self.misses)),
            ("cache_waits", l(&self.waits)),
            ("disk_hits", l(&self.disk_hits)),
            ("chunk_fetches", l(&self.fetches)),
            ("chunk_fetch_bytes", l(&self.fetch_bytes)),
            ("frame_fetches", l(&self.frame_fetches)),
            ("chunk_loaded_bytes", l(&self.loaded_bytes)),
            ("fetch_errors", l(&self.fetch_errors)),
            ("prefetches_queued", l(&self.prefetches_queued)),
            ("prefetches_dropped", l(&self.prefetches_dropped)),
            ("failures_remembered", l(&self.failures_remembered)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}
