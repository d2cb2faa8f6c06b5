//! The lazy chunk cache: decompressed chunks, fetched once, kept within a byte budget.
//!
//! A read of a backup asks [`ChunkCache::get`] for each chunk that covers it. The path:
//!
//! 1. the in-memory tier: an `lru::LruCache` of decompressed chunks with a byte total kept
//!    beside it (the crate counts entries, not bytes); least recently used chunks are
//!    evicted until the total fits `mem_bytes`;
//! 2. single flight: when the chunk is already being loaded, the caller waits on that
//!    load (a `Condvar`), so a chunk has at most one fetch in flight;
//! 3. the optional disk tier ([`disk::DiskCache`]): the sealed (still encrypted and
//!    authenticated) bytes, so loading from it verifies them exactly like a fetch does; any
//!    failure of the disk tier is a miss;
//! 4. one ranged read of the pack object, then authenticate + decompress.
//!
//! Errors are shared with every waiter as `Arc<RepoError>`. Damage is never remembered:
//! the next read tries again. A store that failed to answer (a timeout, a 5xx after the
//! retries) is remembered for a short while ([`FAILURE_MEMORY`]) per chunk: the kernel
//! retries a failed read at once (readahead, then the read itself), and without this a
//! stalled store would make every EIO take twice the store's whole retry budget. The in-flight entry is removed by a guard, on success, on error and on
//! unwind, so a panicking loader never leaves waiters hanging.
//!
//! Readahead ([`ChunkCache::prefetch_run`]) hands groups of chunk refs (one ranged read
//! each) to a pool of background threads through a bounded channel; when the channel is
//! full the hint is dropped (backpressure: prefetching never queues unbounded work or
//! memory). Chunks waiting in the channel are remembered with their group (`queued`), so a
//! hint repeated by every read of a stream is sent once, and a reader that wants a queued
//! chunk before a prefetcher got to it loads the chunk's whole group itself, with the one
//! ranged read the prefetcher would have made: how many reads a run of chunks costs does
//! not depend on how fast the prefetchers are scheduled. A queued chunk leaves the queue
//! and gets its flight in one step under the `queued` lock ([`ChunkCache::claim_queued`]),
//! so exactly one loader takes it.
//!
//! Lock order: `queued`, then `inflight`, then `mem`; none is held during a fetch. A
//! flight's own mutex is taken alone.

pub mod disk;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::repo::format::{ChunkId, ChunkRef};
use crate::repo::{RepoError, Repository};

/// How long a chunk whose load failed in the store (not damage) answers with that error
/// without a new fetch.
pub const FAILURE_MEMORY: std::time::Duration = std::time::Duration::from_secs(2);

/// A decompressed chunk, shared between the cache and readers.
pub type Chunk = Arc<Vec<u8>>;
/// A load failure, shared between every reader that waited for that load.
pub type FetchError = Arc<RepoError>;

/// Chunks of one pack that go out as one ranged read, in pack order.
type Group = Arc<[ChunkRef]>;

/// A chunk claimed for loading by one loader: its flight, ended when the guard drops.
type Claim<'a> = (ChunkRef, FlightGuard<'a>);

/// Counters, for logs and tests.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Loads served by the disk tier.
    pub disk_hits: AtomicU64,
    /// Ranged reads of the store.
    pub fetches: AtomicU64,
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

struct Mem {
    lru: LruCache<ChunkId, Chunk>,
    bytes: u64,
}

#[derive(Default)]
struct Flight {
    result: Mutex<Option<Result<Chunk, FetchError>>>,
    done: Condvar,
}

/// See the module documentation.
pub struct ChunkCache {
    repo: Arc<Repository>,
    mem: Mutex<Mem>,
    mem_limit: u64,
    inflight: Mutex<HashMap<ChunkId, Arc<Flight>>>,
    disk: Option<disk::DiskCache>,
    prefetch_tx: Mutex<Option<crossbeam_channel::Sender<Group>>>,
    /// Chunks handed to the prefetchers and not yet picked up, with the group they went
    /// out in: a hint repeated while its first copy waits in the queue is not queued
    /// again, and a reader that needs one of them loads the group itself.
    queued: Mutex<HashMap<ChunkId, Group>>,
    /// Recent store failures, by chunk: see the module documentation.
    failed: Mutex<HashMap<ChunkId, (Instant, FetchError)>>,
    failure_memory: Duration,
    /// Memory outside the chunks that the budget covers too (see [`ChunkCache::set_overhead`]).
    overhead: AtomicU64,
    /// Memory counted by its owner as it grows (a mount's inode table), see
    /// [`ChunkCache::external_counter`].
    external: Arc<AtomicU64>,
    /// Buffers of loads in flight: sealed bytes read and plaintext not yet in the tier.
    inflight_bytes: AtomicU64,
    /// The process's resident size, when measured (see [`ChunkCache::measure_rss`]): its
    /// last sample and when it was taken (ms since `created`, plus one; 0: never).
    rss_probe: std::sync::OnceLock<RssProbe>,
    rss_sample: AtomicU64,
    rss_sampled_ms: AtomicU64,
    created: Instant,
    pub stats: CacheStats,
}

/// Counts bytes in `counter` for as long as it lives.
struct Held<'a> {
    counter: &'a AtomicU64,
    bytes: u64,
}

impl<'a> Held<'a> {
    fn new(counter: &'a AtomicU64, bytes: u64) -> Held<'a> {
        counter.fetch_add(bytes, Ordering::Relaxed);
        Held { counter, bytes }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache")
            .field("mem_limit", &self.mem_limit)
            .finish()
    }
}

/// Removes the in-flight entry and wakes the waiters, whatever happens to the loader.
struct FlightGuard<'a> {
    cache: &'a ChunkCache,
    id: ChunkId,
    flight: Arc<Flight>,
}

impl FlightGuard<'_> {
    /// Hands the load's outcome to the waiters and wakes them at once (a grouped load
    /// goes on opening the other chunks of its read meanwhile).
    fn finish(&self, result: Result<Chunk, FetchError>) {
        *self.flight.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        self.flight.done.notify_all();
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        {
            let mut r = self.flight.result.lock().unwrap_or_else(|e| e.into_inner());
            if r.is_none() {
                *r = Some(Err(Arc::new(RepoError::Invalid(format!(
                    "the load of chunk {} was abandoned",
                    self.id
                )))));
            }
        }
        self.flight.done.notify_all();
        self.cache
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl ChunkCache {
    /// A cache of at most `mem_bytes` of decompressed chunks in memory (a chunk larger than
    /// the whole budget is still returned, just not kept), over an optional disk tier.
    pub fn new(
        repo: Arc<Repository>,
        mem_bytes: u64,
        disk: Option<disk::DiskCache>,
    ) -> Arc<ChunkCache> {
        Arc::new(ChunkCache {
            repo,
            mem: Mutex::new(Mem {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            mem_limit: mem_bytes,
            inflight: Mutex::new(HashMap::new()),
            disk,
            prefetch_tx: Mutex::new(None),
            queued: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            failure_memory: FAILURE_MEMORY,
            overhead: AtomicU64::new(0),
            external: Arc::new(AtomicU64::new(0)),
            inflight_bytes: AtomicU64::new(0),
            rss_probe: std::sync::OnceLock::new(),
            rss_sample: AtomicU64::new(0),
            rss_sampled_ms: AtomicU64::new(0),
            created: Instant::now(),
            stats: CacheStats::default(),
        })
    }

    /// Like [`ChunkCache::new`], remembering store failures for `d` instead of
    /// [`FAILURE_MEMORY`] (zero: never).
    pub fn with_failure_memory(
        repo: Arc<Repository>,
        mem_bytes: u64,
        disk: Option<disk::DiskCache>,
        d: Duration,
    ) -> Arc<ChunkCache> {
        let mut c = Self::new(repo, mem_bytes, disk);
        Arc::get_mut(&mut c).expect("not shared yet").failure_memory = d;
        c
    }

    /// A store failure of this chunk recent enough to answer for it.
    fn remembered_failure(&self, id: &ChunkId) -> Option<FetchError> {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let (at, e) = failed.get(id)?;
        if at.elapsed() < self.failure_memory {
            self.stats
                .failures_remembered
                .fetch_add(1, Ordering::Relaxed);
            return Some(e.clone());
        }
        failed.remove(id);
        None
    }

    fn remember_failure(&self, id: ChunkId, e: &FetchError) {
        if self.failure_memory.is_zero() || !matches!(**e, RepoError::Backend(_)) {
            return;
        }
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let keep = self.failure_memory;
        failed.retain(|_, (at, _)| at.elapsed() < keep);
        failed.insert(id, (Instant::now(), e.clone()));
    }

    /// Declares memory outside the chunks that the budget must also cover (a mount: what
    /// the process held before its first read, and its inode table). The memory tier
    /// keeps `budget - overhead - buffers in flight`, and never less than a quarter of
    /// the budget, so that reads go on when the rest outgrows it.
    pub fn set_overhead(&self, bytes: u64) {
        self.overhead.store(bytes, Ordering::Relaxed);
    }

    /// A counter of memory outside the chunks that its owner keeps up to date as it grows
    /// (the mount's inode table adds each inode's estimate): counted like the overhead.
    pub fn external_counter(&self) -> Arc<AtomicU64> {
        self.external.clone()
    }

    /// Memory outside the chunks the budget covers now: the declared overhead and the
    /// external counter.
    fn other_bytes(&self) -> u64 {
        self.overhead.load(Ordering::Relaxed) + self.external.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn clear_for_test(&self) {
        let mut m = self.lock_mem();
        m.lru.clear();
        m.bytes = 0;
    }

    /// Makes the budget count what the process really holds: `probe` gives its resident
    /// size (sampled at most every [`RSS_SAMPLE_EVERY`]), and everything resident beyond
    /// the chunks (the allocator's free-but-kept memory included, which no estimate
    /// sees) is taken from the memory tier, as the declared overhead is. The larger of the
    /// measured and the declared overhead counts.
    pub fn measure_rss(&self, probe: impl Fn() -> u64 + Send + Sync + 'static) {
        let _ = self.rss_probe.set(Box::new(probe));
    }

    /// The resident size, from a recent sample or a new one; 0 when not measured.
    fn rss(&self) -> u64 {
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

    /// What the memory tier may hold now (see [`ChunkCache::set_overhead`] and
    /// [`ChunkCache::measure_rss`]).
    pub fn tier_limit(&self) -> u64 {
        let rss = self.rss();
        self.limit_with(rss, self.mem_bytes())
    }

    /// The tier's limit given the resident size and the bytes of chunks held.
    fn limit_with(&self, rss: u64, chunk_bytes: u64) -> u64 {
        self.mem_limit
            .saturating_sub(self.overhead_with(rss, chunk_bytes))
            .max(self.mem_limit / 4)
    }

    /// Memory outside the chunks: declared and in flight, or measured, the larger. A
    /// measured figure gets a margin ([`RSS_MARGIN`] of the budget) for what is
    /// allocated between two samples.
    fn overhead_with(&self, rss: u64, chunk_bytes: u64) -> u64 {
        let declared = self.other_bytes() + self.inflight_bytes.load(Ordering::Relaxed);
        if rss == 0 {
            return declared;
        }
        let margin = self.mem_limit / RSS_MARGIN;
        declared.max(rss.saturating_sub(chunk_bytes) + margin)
    }

    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// Bytes of decompressed chunks held in memory now.
    pub fn mem_bytes(&self) -> u64 {
        self.lock_mem().bytes
    }

    /// The counters and the memory tier's fill, as JSON fields (`.vaultfs/stats.json`).
    pub fn stats_json(&self) -> serde_json::Value {
        let s = &self.stats;
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (bytes, chunks) = {
            let m = self.lock_mem();
            (m.bytes, m.lru.len())
        };
        let rss = self.rss();
        serde_json::json!({
            "cache_hits": l(&s.hits),
            "cache_misses": l(&s.misses),
            "cache_waits": l(&s.waits),
            "disk_hits": l(&s.disk_hits),
            "chunk_fetches": l(&s.fetches),
            "chunk_fetch_bytes": l(&s.fetch_bytes),
            "chunk_loaded_bytes": l(&s.loaded_bytes),
            "fetch_errors": l(&s.fetch_errors),
            "prefetches_queued": l(&s.prefetches_queued),
            "prefetches_dropped": l(&s.prefetches_dropped),
            "failures_remembered": l(&s.failures_remembered),
            "cache_bytes": bytes,
            "cache_chunks": chunks,
            "cache_limit": self.mem_limit,
            "cache_tier_limit": self.limit_with(rss, bytes),
            "budget_overhead_bytes": self.overhead_with(rss, bytes),
            "inflight_bytes": self.inflight_bytes.load(Ordering::Relaxed),
        })
    }

    fn lock_mem(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a chunk is in the memory tier (does not touch the LRU order).
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.lock_mem().lru.contains(id)
    }

    /// The plaintext of a chunk: from memory, from a load in flight, from the disk tier, or
    /// with one ranged read of its pack.
    pub fn get(&self, r: &ChunkRef) -> Result<Chunk, FetchError> {
        if let Some(c) = self.lock_mem().lru.get(&r.id) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(c.clone());
        }
        if let Some(e) = self.remembered_failure(&r.id) {
            return Err(e);
        }
        // Queued for a prefetcher that has not got to it yet: load its group now.
        let group = self.lock_queued().get(&r.id).cloned();
        if let Some(group) = group {
            let claimed = self.claim_queued(&group);
            if claimed.iter().any(|(c, _)| c.id == r.id) {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                if let Some(result) = self.load_claimed(claimed, Some(r.id)) {
                    return result;
                }
            }
        }
        let (flight, leader) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get(&r.id) {
                Some(f) => (f.clone(), false),
                None => {
                    // Checked again under the in-flight lock: a load may have finished
                    // between the first look and here.
                    if let Some(c) = self.lock_mem().lru.get(&r.id) {
                        self.stats.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(c.clone());
                    }
                    let f = Arc::new(Flight::default());
                    inflight.insert(r.id, f.clone());
                    (f, true)
                }
            }
        };
        if !leader {
            self.stats.waits.fetch_add(1, Ordering::Relaxed);
            return flight_result(&flight);
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let guard = FlightGuard {
            cache: self,
            id: r.id,
            flight: flight.clone(),
        };
        self.load_claimed(vec![(*r, guard)], Some(r.id))
            .unwrap_or_else(|| flight_result(&flight))
    }

    fn insert(&self, id: ChunkId, c: Chunk) {
        let len = c.len() as u64;
        if len > self.mem_limit {
            return;
        }
        let rss = self.rss();
        let mut mem = self.lock_mem();
        let limit = self.limit_with(rss, mem.bytes);
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

    /// The chunk from the disk tier, verified; an entry that fails verification is
    /// dropped (a miss).
    fn load_from_disk(&self, r: &ChunkRef) -> Option<Vec<u8>> {
        let disk = self.disk.as_ref()?;
        let sealed = disk.get(&r.id, r.stored_len)?;
        match self.repo.open_chunk(r, &sealed) {
            Ok(plain) => {
                self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                Some(plain)
            }
            Err(e) => {
                tracing::warn!(chunk = %r.id, "disk cache entry failed verification, dropped: {e}");
                disk.remove(&r.id);
                None
            }
        }
    }

    /// Disk tier, then the store. Never called twice at once for one chunk.
    fn load(&self, r: &ChunkRef) -> Result<Vec<u8>, RepoError> {
        if let Some(plain) = self.load_from_disk(r) {
            return Ok(plain);
        }
        let _held = Held::new(&self.inflight_bytes, r.stored_len as u64 + r.raw_len as u64);
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let sealed = self.repo.read_sealed(r).inspect_err(|_| {
            self.stats.fetch_errors.fetch_add(1, Ordering::Relaxed);
        })?;
        self.stats
            .fetch_bytes
            .fetch_add(sealed.len() as u64, Ordering::Relaxed);
        self.open_fetched(r, &sealed)
    }

    /// Authenticates and decompresses a chunk read from the store, counts it, and keeps
    /// its sealed bytes in the disk tier.
    fn open_fetched(&self, r: &ChunkRef, sealed: &[u8]) -> Result<Vec<u8>, RepoError> {
        let plain = self.repo.open_chunk(r, sealed).inspect_err(|_| {
            self.stats.fetch_errors.fetch_add(1, Ordering::Relaxed);
        })?;
        self.stats
            .loaded_bytes
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        if let Some(disk) = &self.disk {
            disk.put(&r.id, sealed);
        }
        Ok(plain)
    }

    /// Starts `threads` background prefetch workers fed by a channel of `queue` slots.
    pub fn start_prefetchers(self: &Arc<Self>, threads: usize, queue: usize) {
        let (tx, rx) = crossbeam_channel::bounded::<Group>(queue.max(1));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let weak = Arc::downgrade(self);
            std::thread::Builder::new()
                .name(format!("prefetch-{i}"))
                .spawn(move || {
                    while let Ok(group) = rx.recv() {
                        let Some(cache) = weak.upgrade() else { break };
                        let claimed = cache.claim_queued(&group);
                        cache.load_claimed(claimed, None);
                    }
                })
                .expect("spawning a prefetch thread");
        }
        *self.prefetch_tx.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
    }

    /// Whether no prefetch waits in the queue and no load is in flight: what a test waits
    /// for before it counts the reads a sequence of operations cost.
    #[cfg(test)]
    pub(crate) fn is_settled(&self) -> bool {
        self.lock_queued().is_empty()
            && self
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
    }

    /// Whether the chunk is in memory, being loaded, or queued for a prefetcher.
    pub fn present_or_loading(&self, id: &ChunkId) -> bool {
        self.lock_queued().contains_key(id) || self.cached_or_loading(id)
    }

    fn cached_or_loading(&self, id: &ChunkId) -> bool {
        self.contains(id)
            || self
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(id)
    }

    /// Asks for a chunk to be loaded in the background; see [`ChunkCache::prefetch_run`].
    pub fn prefetch(&self, r: &ChunkRef) {
        self.prefetch_run(std::slice::from_ref(r));
    }

    /// Asks for chunks to be loaded in the background, soonest needed first. A hint only:
    /// chunks cached, loading or queued already are left out, and a group is dropped when
    /// no prefetchers run or the queue is full. Chunks that lie next to each other in one
    /// pack (gaps of at most [`COALESCE_GAP`], spans of at most [`COALESCE_SPAN`]) are
    /// fetched with one ranged read, whatever their order in `refs` (files backed up in
    /// parallel sit in their pack slightly out of order): one request for a run of small
    /// files, or for a stretch of a large one. Groups go out in the order of their first
    /// chunk in `refs`.
    pub fn prefetch_run(&self, refs: &[ChunkRef]) {
        let tx = self.prefetch_tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = tx.as_ref() else { return };
        let mut queued = self.lock_queued();
        // (position in refs, chunk), in pack order, each chunk once.
        let mut wanted: Vec<(usize, ChunkRef)> = refs
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, r)| !queued.contains_key(&r.id) && !self.cached_or_loading(&r.id))
            .collect();
        wanted.sort_by_key(|(i, r)| (r.pack, r.offset, *i));
        wanted.dedup_by_key(|(_, r)| r.id);
        let mut groups: Vec<(usize, Vec<ChunkRef>)> = Vec::new();
        for (i, r) in wanted {
            let joins = groups.last().and_then(|(_, g)| {
                let (first, last) = (g.first()?, g.last()?);
                let end = last.offset as u64 + last.stored_len as u64;
                let (off, stop) = (r.offset as u64, r.offset as u64 + r.stored_len as u64);
                Some(
                    r.pack == last.pack
                        && off >= end
                        && off - end <= COALESCE_GAP
                        && stop - first.offset as u64 <= COALESCE_SPAN,
                )
            });
            match (joins, groups.last_mut()) {
                (Some(true), Some((first_use, g))) => {
                    *first_use = (*first_use).min(i);
                    g.push(r);
                }
                _ => groups.push((i, vec![r])),
            }
        }
        groups.sort_by_key(|(first_use, _)| *first_use);
        for (_, g) in groups {
            let n = g.len() as u64;
            let g: Group = g.into();
            if tx.try_send(g.clone()).is_ok() {
                queued.extend(g.iter().map(|r| (r.id, g.clone())));
                self.stats.prefetches_queued.fetch_add(n, Ordering::Relaxed);
            } else {
                self.stats
                    .prefetches_dropped
                    .fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn lock_queued(&self) -> std::sync::MutexGuard<'_, HashMap<ChunkId, Group>> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the chunks of `group` that still wait in the queue: each leaves the queue and
    /// gets a flight in one step, so that exactly one loader (a prefetcher, or a reader
    /// that got there first) loads it. Chunks taken by another loader already are left out.
    fn claim_queued(&self, group: &[ChunkRef]) -> Vec<Claim<'_>> {
        let mut queued = self.lock_queued();
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        let mut claimed = Vec::with_capacity(group.len());
        for r in group {
            if queued.remove(&r.id).is_none()
                || inflight.contains_key(&r.id)
                || self.contains(&r.id)
            {
                continue;
            }
            let flight = Arc::new(Flight::default());
            inflight.insert(r.id, flight.clone());
            claimed.push((
                *r,
                FlightGuard {
                    cache: self,
                    id: r.id,
                    flight,
                },
            ));
        }
        claimed
    }

    /// Loads claimed chunks of one pack: a single chunk the usual way (disk tier, then the
    /// store), several with one ranged read of what the disk tier does not hold. Each
    /// chunk's waiters are woken as soon as it is open; a chunk that fails to open fails
    /// alone, a failed read fails them all. Returns the outcome for `want` when it was
    /// one of them.
    fn load_claimed(
        &self,
        mut claimed: Vec<Claim<'_>>,
        want: Option<ChunkId>,
    ) -> Option<Result<Chunk, FetchError>> {
        let mut wanted = None;
        let mut settle =
            |r: &ChunkRef, guard: &FlightGuard<'_>, result: Result<Chunk, FetchError>| {
                if want == Some(r.id) {
                    wanted = Some(result.clone());
                }
                guard.finish(result);
            };
        if let [(r, guard)] = claimed.as_slice() {
            let result = self.load(r).map(Arc::new).map_err(Arc::new);
            match &result {
                Ok(c) => self.insert(r.id, c.clone()),
                Err(e) => {
                    tracing::debug!(chunk = %r.id, "load failed: {e}");
                    self.remember_failure(r.id, e);
                }
            }
            settle(r, guard, result);
            return wanted;
        }
        // What the disk tier holds comes from there; the rest from the store.
        claimed.retain(|(r, guard)| match self.load_from_disk(r) {
            Some(plain) => {
                let c = Arc::new(plain);
                self.insert(r.id, c.clone());
                settle(r, guard, Ok(c));
                false
            }
            None => true,
        });
        let (Some((first, _)), Some((last, _))) = (claimed.first(), claimed.last()) else {
            return wanted;
        };
        let pack = first.pack;
        let start = first.offset as u64;
        let len = last.offset as u64 + last.stored_len as u64 - start;
        let raw: u64 = claimed.iter().map(|(r, _)| r.raw_len as u64).sum();
        let _held = Held::new(&self.inflight_bytes, len + raw);
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        match self.repo.read_pack_span(&pack, start, len) {
            Ok(None) => {
                // The pack is gone (repacked by a prune): each chunk alone, following
                // where it went.
                for (r, guard) in &claimed {
                    let result = self.load(r).map(Arc::new).map_err(Arc::new);
                    match &result {
                        Ok(c) => self.insert(r.id, c.clone()),
                        Err(e) => {
                            tracing::debug!(chunk = %r.id, "load failed: {e}");
                            self.remember_failure(r.id, e);
                        }
                    }
                    settle(r, guard, result);
                }
            }
            Ok(Some(buf)) => {
                self.stats
                    .fetch_bytes
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                for (r, guard) in &claimed {
                    let at = (r.offset as u64 - start) as usize;
                    let result = match buf.get(at..at + r.stored_len as usize) {
                        Some(sealed) => self.open_fetched(r, sealed),
                        None => Err(RepoError::damaged(
                            format!("chunk {} in pack {}", r.id, pack.to_hex()),
                            format!("the store answered {} of {len} bytes", buf.len()),
                        )),
                    }
                    .map(Arc::new)
                    .map_err(Arc::new);
                    match &result {
                        Ok(c) => self.insert(r.id, c.clone()),
                        Err(e) => tracing::debug!(chunk = %r.id, "load failed: {e}"),
                    }
                    settle(r, guard, result);
                }
            }
            Err(e) => {
                self.stats.fetch_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(pack = %pack.to_hex(), "load of {} chunks failed: {e}", claimed.len());
                let e: FetchError = Arc::new(e);
                for (r, guard) in &claimed {
                    self.remember_failure(r.id, &e);
                    settle(r, guard, Err(e.clone()));
                }
            }
        }
        // The guards wake the waiters and clear the flights as they drop.
        wanted
    }
}

/// Waits for a flight's outcome (set by its loader, or by its guard when abandoned).
fn flight_result(flight: &Flight) -> Result<Chunk, FetchError> {
    let mut res = flight.result.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(r) = res.as_ref() {
            return r.clone();
        }
        res = flight.done.wait(res).unwrap_or_else(|e| e.into_inner());
    }
}

/// How the resident size is measured (see [`ChunkCache::measure_rss`]).
type RssProbe = Box<dyn Fn() -> u64 + Send + Sync>;

/// The budget's fraction kept free when the resident size is measured (1/16: 16 MiB of
/// 256 MiB), for allocations between two samples.
pub const RSS_MARGIN: u64 = 16;

/// How often the resident size is sampled at most.
pub const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(5);

/// Largest gap between two chunks of one pack that a grouped prefetch reads through.
pub const COALESCE_GAP: u64 = 64 << 10;
/// Largest span of one grouped prefetch read.
pub const COALESCE_SPAN: u64 = 4 << 20;

/// Parses a size such as `268435456`, `256M`, `256MiB`, `1G`, `512k` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 256M, 1G or a number of bytes)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => return Err(format!("unknown size unit {u:?} in {s:?}")),
    };
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Store;
    use crate::backend::faulty::{Fault, FaultyStore, Op, Rule};
    use crate::backend::memory::MemoryStore;
    use crate::repo::InitOptions;
    use crate::repo::format::{ChunkerParams, KdfParams};

    pub(crate) fn test_repo(store: Store) -> Arc<Repository> {
        let opts = InitOptions {
            chunker: ChunkerParams {
                min_size: 4096,
                avg_size: 16384,
                max_size: 65536,
            },
            pack_size: 1 << 20,
            zstd_level: 1,
            kdf: KdfParams {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1,
                salt: [7; 16],
            },
        };
        Repository::init(store, b"pw", opts).unwrap()
    }

    /// Stores chunks through the pack writer-free path: one pack per chunk, by hand.
    fn put_chunk(repo: &Repository, data: &[u8]) -> ChunkRef {
        let id = repo.keys().chunk_id(data);
        let mut z = zstd::bulk::Compressor::new(1).unwrap();
        let sealed = repo.seal_chunk(&id, data, &mut z);
        let pack = crate::repo::format::PackId::random();
        repo.store().put(&pack.key(), &sealed).unwrap();
        ChunkRef {
            id,
            pack,
            offset: 0,
            stored_len: sealed.len() as u32,
            raw_len: data.len() as u32,
        }
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3X").is_err());
    }

    #[test]
    fn hits_misses_and_byte_budget() {
        let repo = test_repo(Arc::new(MemoryStore::new()));
        let refs: Vec<ChunkRef> = (0..4u8).map(|i| put_chunk(&repo, &vec![i; 1000])).collect();
        let cache = ChunkCache::new(repo, 2500, None);
        for (i, r) in refs.iter().enumerate() {
            assert_eq!(*cache.get(r).unwrap(), vec![i as u8; 1000]);
        }
        // Only two chunks of 1000 bytes fit in 2500.
        assert_eq!(cache.mem_bytes(), 2000);
        assert!(cache.contains(&refs[3].id) && cache.contains(&refs[2].id));
        assert!(!cache.contains(&refs[0].id));
        cache.get(&refs[3]).unwrap();
        assert_eq!(cache.stats.hits.load(Ordering::Relaxed), 1);
        assert_eq!(cache.stats.fetches.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn the_budget_covers_declared_overhead_and_loads_in_flight() {
        let mem = Arc::new(MemoryStore::new());
        let faulty = Arc::new(FaultyStore::new(mem));
        let repo = test_repo(faulty.clone());
        let refs: Vec<ChunkRef> = (0..8u8).map(|i| put_chunk(&repo, &vec![i; 1000])).collect();
        let cache = ChunkCache::new(repo, 8000, None);
        for r in &refs {
            cache.get(r).unwrap();
        }
        assert_eq!(cache.mem_bytes(), 8000);
        // Memory declared elsewhere (an inode table) leaves less room for chunks.
        cache.set_overhead(3500);
        assert_eq!(cache.tier_limit(), 4500);
        cache.get(&refs[0]).unwrap();
        let again = put_chunk(cache.repo(), &[42u8; 1000]);
        cache.get(&again).unwrap();
        assert_eq!(cache.mem_bytes(), 4000);
        // However much that is, a quarter of the budget stays for chunks.
        cache.set_overhead(1 << 30);
        assert_eq!(cache.tier_limit(), 2000);
        cache.set_overhead(0);
        // A load in flight counts its buffers (sealed and plain) until it is in the tier.
        let stall = faulty.add_rule(Rule::new(
            Op::GetRange,
            refs[7].pack.key(),
            Fault::Stall {
                timeout: std::time::Duration::from_secs(60),
            },
        ));
        cache.clear_for_test();
        std::thread::scope(|s| {
            let t = s.spawn(|| cache.get(&refs[7]).unwrap());
            wait_until("the load to reach the store", || faulty.hits(stall) > 0);
            let held = (refs[7].stored_len + refs[7].raw_len) as u64;
            assert_eq!(cache.tier_limit(), 8000 - held);
            faulty.clear_rules();
            faulty.release();
            t.join().unwrap();
        });
        assert_eq!(cache.tier_limit(), 8000);
    }

    #[test]
    fn the_budget_covers_what_the_process_really_holds_when_measured() {
        let repo = test_repo(Arc::new(MemoryStore::new()));
        let refs: Vec<ChunkRef> = (0..8u8).map(|i| put_chunk(&repo, &vec![i; 1000])).collect();
        let cache = ChunkCache::new(repo, 8000, None);
        for r in &refs {
            cache.get(r).unwrap();
        }
        assert_eq!(cache.mem_bytes(), 8000);
        // The process holds 3,000 bytes more than its chunks (heap slack, say): the tier
        // makes room for them, and a margin of 1/16 of the budget, at the next insert.
        let resident = Arc::new(AtomicU64::new(8000 + 3000));
        let probe = resident.clone();
        cache.measure_rss(move || probe.load(Ordering::Relaxed));
        assert_eq!(cache.tier_limit(), 8000 - 3000 - 500);
        let again = put_chunk(cache.repo(), &[42u8; 1000]);
        cache.get(&again).unwrap();
        assert_eq!(cache.mem_bytes(), 4000);
        // A declared overhead larger than the measured one wins.
        resident.store(4000 + 1000, Ordering::Relaxed);
        std::thread::sleep(RSS_SAMPLE_EVERY * 2);
        assert_eq!(cache.tier_limit(), 8000 - 1000 - 500);
        cache.set_overhead(4000);
        assert_eq!(cache.tier_limit(), 4000);
        cache.set_overhead(0);
        // The quarter of the budget stays, however much the process holds; samples are
        // taken at most every RSS_SAMPLE_EVERY.
        resident.store(1 << 30, Ordering::Relaxed);
        std::thread::sleep(RSS_SAMPLE_EVERY * 2);
        assert_eq!(cache.tier_limit(), 2000);
    }

    #[test]
    fn concurrent_readers_share_one_fetch() {
        let mem = Arc::new(MemoryStore::new());
        let faulty = Arc::new(FaultyStore::new(mem));
        let repo = test_repo(faulty.clone());
        let r = put_chunk(&repo, &[9u8; 50_000]);
        faulty.add_rule(Rule::new(
            Op::GetRange,
            "packs/",
            Fault::Delay(std::time::Duration::from_millis(200)),
        ));
        let cache = ChunkCache::new(repo, 1 << 20, None);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| assert_eq!(cache.get(&r).unwrap().len(), 50_000));
            }
        });
        assert_eq!(cache.stats.fetches.load(Ordering::Relaxed), 1);
        assert!(cache.inflight.lock().unwrap().is_empty());
    }

    #[test]
    fn damage_is_an_error_for_every_waiter_and_not_cached() {
        let repo = test_repo(Arc::new(MemoryStore::new()));
        let r = put_chunk(&repo, b"some bytes that will be damaged");
        let mut blob = repo.store().get(&r.pack.key()).unwrap();
        blob[30] ^= 0xff;
        repo.store().put(&r.pack.key(), &blob).unwrap();
        let cache = ChunkCache::new(repo.clone(), 1 << 20, None);
        let e = cache.get(&r).unwrap_err();
        assert!(matches!(*e, RepoError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains(&r.id.to_hex()));
        // Repaired: the next read succeeds (errors are not cached).
        blob[30] ^= 0xff;
        repo.store().put(&r.pack.key(), &blob).unwrap();
        assert!(cache.get(&r).is_ok());
        let missing = ChunkRef {
            pack: crate::repo::format::PackId::random(),
            ..r
        };
        let cache = ChunkCache::new(repo, 1 << 20, None);
        assert!(matches!(
            *cache.get(&missing).unwrap_err(),
            RepoError::Damaged { .. }
        ));
    }

    #[test]
    fn store_failures_are_remembered_briefly_damage_is_not() {
        use crate::backend::faulty::{Fault, FaultyStore, Op, Rule};
        let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
        let repo = test_repo(faulty.clone());
        let r = put_chunk(&repo, b"a chunk behind a failing store");
        let memory = Duration::from_millis(300);
        let cache = ChunkCache::with_failure_memory(repo, 1 << 20, None, memory);
        faulty
            .add_rule(Rule::new(Op::GetRange, "packs/", Fault::Error { transient: true }).times(1));
        let calls = || faulty.calls(Op::GetRange);
        assert!(cache.get(&r).is_err());
        let after_first = calls();
        // At once again: the same error, no new fetch (the rule has no uses left, so a
        // fetch would have succeeded).
        let e = cache.get(&r).unwrap_err();
        assert!(matches!(*e, RepoError::Backend(_)), "{e}");
        assert_eq!(calls(), after_first);
        assert_eq!(cache.stats.failures_remembered.load(Ordering::Relaxed), 1);
        std::thread::sleep(memory + Duration::from_millis(50));
        assert!(cache.get(&r).is_ok());
        assert_eq!(calls(), after_first + 1);
    }

    #[test]
    fn prefetch_loads_in_background() {
        let repo = test_repo(Arc::new(MemoryStore::new()));
        let r = put_chunk(&repo, &[1u8; 10_000]);
        let cache = ChunkCache::new(repo, 1 << 20, None);
        cache.prefetch(&r); // no workers yet: dropped silently
        cache.start_prefetchers(2, 4);
        cache.prefetch(&r);
        wait_cached(&cache, &[r]);
        cache.get(&r).unwrap();
        assert_eq!(cache.stats.fetches.load(Ordering::Relaxed), 1);
    }

    /// Chunks sealed one after the other into one pack object.
    fn put_pack(repo: &Repository, datas: &[Vec<u8>]) -> Vec<ChunkRef> {
        let mut z = zstd::bulk::Compressor::new(1).unwrap();
        let pack = crate::repo::format::PackId::random();
        let (mut blob, mut refs) = (Vec::new(), Vec::new());
        for d in datas {
            let id = repo.keys().chunk_id(d);
            let sealed = repo.seal_chunk(&id, d, &mut z);
            refs.push(ChunkRef {
                id,
                pack,
                offset: blob.len() as u32,
                stored_len: sealed.len() as u32,
                raw_len: d.len() as u32,
            });
            blob.extend_from_slice(&sealed);
        }
        repo.store().put(&pack.key(), &blob).unwrap();
        refs
    }

    /// Waits until `cond` holds, with a bound generous enough for a loaded machine.
    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let t = std::time::Instant::now();
        while !cond() {
            assert!(t.elapsed().as_secs() < 120, "waited 120 s for {what}");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    fn wait_cached(cache: &ChunkCache, refs: &[ChunkRef]) {
        wait_until("the prefetch to land", || {
            refs.iter().all(|r| cache.contains(&r.id))
        });
    }

    #[test]
    fn neighbouring_chunks_are_prefetched_with_one_read() {
        use crate::backend::faulty::{FaultyStore, Op};
        let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
        let repo = test_repo(faulty.clone());
        let datas: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 3000 + i as usize]).collect();
        let refs = put_pack(&repo, &datas);
        let other = put_pack(
            &repo,
            &datas[..1]
                .iter()
                .map(|d| [d.clone(), vec![9]].concat())
                .collect::<Vec<_>>(),
        );
        let cache = ChunkCache::new(repo, 1 << 20, None);
        cache.start_prefetchers(2, 4);
        let before = faulty.calls(Op::GetRange);
        // One cached already: the run reads through that small gap.
        cache.get(&refs[5]).unwrap();
        let mut run = refs.clone();
        run.push(other[0]);
        cache.prefetch_run(&run);
        wait_cached(&cache, &run);
        // refs[5] by itself, refs[0..5] + refs[6..20] as one read, the other pack alone.
        assert_eq!(faulty.calls(Op::GetRange) - before, 3);
        for (r, d) in refs.iter().zip(&datas) {
            assert_eq!(*cache.get(r).unwrap(), *d);
        }
        assert_eq!(cache.stats.fetches.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn neighbours_out_of_order_and_repeated_still_go_out_as_one_read() {
        use crate::backend::faulty::{FaultyStore, Op};
        let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
        let repo = test_repo(faulty.clone());
        let datas: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i; 2000 + i as usize]).collect();
        let refs = put_pack(&repo, &datas);
        let cache = ChunkCache::new(repo, 1 << 20, None);
        cache.start_prefetchers(2, 4);
        // Files backed up in parallel: their chunks sit in the pack out of listing order,
        // and one chunk is shared by two files.
        let mut hint: Vec<ChunkRef> = refs.iter().rev().copied().collect();
        hint.swap(3, 7);
        hint.push(refs[4]);
        let before = faulty.calls(Op::GetRange);
        cache.prefetch_run(&hint);
        wait_cached(&cache, &refs);
        assert_eq!(faulty.calls(Op::GetRange) - before, 1);
        assert_eq!(cache.stats.prefetches_queued.load(Ordering::Relaxed), 12);
        for (r, d) in refs.iter().zip(&datas) {
            assert_eq!(*cache.get(r).unwrap(), *d);
        }
    }

    #[test]
    fn a_hint_repeated_while_queued_is_queued_once() {
        use crate::backend::faulty::{Fault, FaultyStore, Op, Rule};
        let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
        let repo = test_repo(faulty.clone());
        let a = put_pack(&repo, &[vec![1u8; 3000]]);
        let b = put_pack(&repo, &[vec![2u8; 3000], vec![3u8; 3000]]);
        let cache = ChunkCache::new(repo, 1 << 20, None);
        // The one prefetcher is held up by the first group: the second waits in the queue.
        let stall = faulty.add_rule(Rule::new(
            Op::GetRange,
            a[0].pack.to_hex(),
            Fault::Stall {
                timeout: std::time::Duration::from_secs(10),
            },
        ));
        cache.start_prefetchers(1, 8);
        cache.prefetch_run(&a);
        wait_until("the first group to start", || faulty.hits(stall) > 0);
        for _ in 0..5 {
            cache.prefetch_run(&b);
        }
        assert!(
            cache.present_or_loading(&b[1].id),
            "queued counts as coming"
        );
        assert_eq!(cache.stats.prefetches_queued.load(Ordering::Relaxed), 3);
        faulty.release();
        wait_cached(&cache, &[a[0], b[0], b[1]]);
        assert_eq!(faulty.calls(Op::GetRange), 2);
    }

    #[test]
    fn a_reader_of_a_queued_chunk_loads_its_group_without_waiting_for_a_prefetcher() {
        use crate::backend::faulty::{Fault, FaultyStore, Op, Rule};
        let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
        let repo = test_repo(faulty.clone());
        let a = put_pack(&repo, &[vec![1u8; 3000]]);
        let datas: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i + 2; 3000]).collect();
        let b = put_pack(&repo, &datas);
        let cache = ChunkCache::new(repo, 1 << 20, None);
        // The one prefetcher is stuck on the first group; the second waits in the queue.
        let stall = faulty.add_rule(Rule::new(
            Op::GetRange,
            a[0].pack.to_hex(),
            Fault::Stall {
                timeout: std::time::Duration::from_secs(60),
            },
        ));
        cache.start_prefetchers(1, 8);
        cache.prefetch_run(&a);
        wait_until("the first group to start", || faulty.hits(stall) > 0);
        cache.prefetch_run(&b);
        // A reader of the queued group's third chunk: the whole group in one read, now.
        assert_eq!(*cache.get(&b[2]).unwrap(), datas[2]);
        assert_eq!(faulty.calls(Op::GetRange), 2);
        for (r, d) in b.iter().zip(&datas) {
            assert!(cache.contains(&r.id));
            assert_eq!(*cache.get(r).unwrap(), *d);
        }
        // The prefetcher, released, finds nothing of it left to load.
        faulty.clear_rules();
        faulty.release();
        wait_cached(&cache, &a);
        wait_until("the prefetcher to finish", || cache.is_settled());
        assert_eq!(faulty.calls(Op::GetRange), 2);
        assert_eq!(cache.stats.fetches.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_damaged_chunk_in_a_group_fails_alone() {
        let repo = test_repo(Arc::new(MemoryStore::new()));
        let datas: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 5000]).collect();
        let refs = put_pack(&repo, &datas);
        let key = refs[0].pack.key();
        let mut blob = repo.store().get(&key).unwrap();
        blob[refs[2].offset as usize + 30] ^= 0xff;
        repo.store().put(&key, &blob).unwrap();
        let cache = ChunkCache::new(repo, 1 << 20, None);
        cache.start_prefetchers(1, 4);
        cache.prefetch_run(&refs);
        let good = [refs[0], refs[1], refs[3]];
        wait_cached(&cache, &good);
        assert!(!cache.contains(&refs[2].id));
        let e = cache.get(&refs[2]).unwrap_err();
        assert!(matches!(*e, RepoError::Damaged { .. }), "{e}");
        assert_eq!(*cache.get(&refs[3]).unwrap(), datas[3]);
    }
}
