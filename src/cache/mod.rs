//! The lazy chunk cache: decompressed chunks, fetched once, kept within a byte budget. It
//! reads through the repository only ([`Repository::read_sealed`],
//! [`Repository::read_pack_span`], [`Repository::open_chunk`]), never the raw store.
//!
//! A read of a backup asks [`ChunkCache::get`] for each chunk that covers it. The path:
//!
//! 1. the memory tier ([`budget`]: an LRU of decompressed chunks whose byte total stays
//!    within what the memory budget leaves for chunks);
//! 2. single flight ([`flight`]): when the chunk is already being loaded, the caller
//!    waits on that load, so a chunk has at most one fetch in flight;
//! 3. a chunk queued for the prefetch pool ([`prefetch`]) is loaded now with its whole
//!    group (one ranged read), not left waiting for a prefetcher;
//! 4. the optional disk tier ([`disk::DiskCache`]): the sealed (still encrypted and
//!    authenticated) bytes, so loading from it verifies them exactly like a fetch does;
//!    any failure of the disk tier is a miss;
//! 5. one ranged read of the pack, then authenticate + decompress. A pack that is gone
//!    (repacked by a prune) is read chunk by chunk, following where each chunk went.
//!
//! A read of part of a chunk sealed as frames (format 5) asks [`ChunkCache::get_range`],
//! which loads only the frames that cover it when the whole chunk is not at hand
//! ([`frames`]).
//!
//! Errors are shared with every waiter as `Arc<RepoError>`, and classified once
//! ([`failures`]): damage is never remembered, a store that failed to answer is, briefly.
//! Counters are in [`stats`].
//!
//! Lock order: the prefetch queue, then the flights' map, then the memory tier; none is
//! held during a fetch. A flight's own mutex is taken alone.

pub mod budget;
pub mod disk;
pub mod failures;
pub mod flight;
pub mod frames;
pub mod prefetch;
pub mod stats;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::repo::format::{ChunkId, ChunkRef};
use crate::repo::{RepoError, Repository};

use budget::{Budget, MemTier};
use failures::Failures;
use flight::{Claim, FlightGuard, Flights, Joined};
use prefetch::{Group, Prefetch};
use stats::add;

pub use budget::{RSS_MARGIN, RSS_SAMPLE_EVERY};
pub use failures::FAILURE_MEMORY;
pub use frames::Piece;
pub use prefetch::{COALESCE_GAP, COALESCE_SPAN};
pub use stats::CacheStats;

/// A decompressed chunk, shared between the cache and readers.
pub type Chunk = Arc<Vec<u8>>;
/// A load failure, shared between every reader that waited for that load.
pub type FetchError = Arc<RepoError>;

/// See the module documentation.
pub struct ChunkCache {
    repo: Arc<Repository>,
    mem: MemTier,
    budget: Budget,
    flights: Flights,
    disk: Option<disk::DiskCache>,
    prefetch: Prefetch,
    failures: Failures,
    pub stats: CacheStats,
}

impl std::fmt::Debug for ChunkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkCache")
            .field("mem_limit", &self.budget.limit())
            .finish()
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
        Self::with_failure_memory(repo, mem_bytes, disk, FAILURE_MEMORY)
    }

    /// Like [`ChunkCache::new`], remembering store failures for `d` instead of
    /// [`FAILURE_MEMORY`] (zero: never).
    pub fn with_failure_memory(
        repo: Arc<Repository>,
        mem_bytes: u64,
        disk: Option<disk::DiskCache>,
        d: Duration,
    ) -> Arc<ChunkCache> {
        Arc::new(ChunkCache {
            repo,
            mem: MemTier::new(),
            budget: Budget::new(mem_bytes),
            flights: Flights::default(),
            disk,
            prefetch: Prefetch::default(),
            failures: Failures::new(d),
            stats: CacheStats::default(),
        })
    }

    /// Declares memory outside the chunks that the budget must also cover (a mount: what
    /// the process held before its first read). The memory tier keeps
    /// `budget - overhead - buffers in flight`, and never less than a quarter of the
    /// budget, so that reads go on when the rest outgrows it.
    pub fn set_overhead(&self, bytes: u64) {
        self.budget.set_overhead(bytes);
    }

    /// A counter of memory outside the chunks that its owner keeps up to date as it grows
    /// and shrinks (the mount's inode table): counted like the overhead.
    pub fn external_counter(&self) -> Arc<AtomicU64> {
        self.budget.external_counter()
    }

    #[cfg(test)]
    fn clear_for_test(&self) {
        self.mem.clear();
    }

    /// Makes the budget count what the process really holds: `probe` gives its resident
    /// size (sampled at most every [`RSS_SAMPLE_EVERY`]), and everything resident beyond
    /// the chunks is taken from the memory tier, as the declared overhead is (see
    /// [`budget`]).
    pub fn measure_rss(&self, probe: impl Fn() -> u64 + Send + Sync + 'static) {
        self.budget.measure_rss(probe);
    }

    /// What the memory tier may hold now.
    pub fn tier_limit(&self) -> u64 {
        let rss = self.budget.rss();
        self.budget.tier_limit(rss, self.mem_bytes())
    }

    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// Bytes of decompressed chunks held in memory now.
    pub fn mem_bytes(&self) -> u64 {
        self.mem.bytes()
    }

    /// The counters and the memory tier's fill, as JSON fields (`.vaultfs/stats.json`).
    pub fn stats_json(&self) -> serde_json::Value {
        let (bytes, chunks) = {
            let m = self.mem.lock();
            (m.bytes, m.lru.len())
        };
        let rss = self.budget.rss();
        let mut o = self.stats.json_fields();
        let mut put = |k: &str, v: u64| o.insert(k.to_string(), v.into());
        put("cache_bytes", bytes);
        put("cache_chunks", chunks as u64);
        put("cache_limit", self.budget.limit());
        put("cache_tier_limit", self.budget.tier_limit(rss, bytes));
        put(
            "budget_overhead_bytes",
            self.budget.overhead_with(rss, bytes),
        );
        put("inflight_bytes", self.budget.inflight_bytes());
        serde_json::Value::Object(o)
    }

    /// Whether a chunk is in the memory tier (does not touch the LRU order).
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.mem.contains(id)
    }

    fn hit(&self, id: &ChunkId) -> Option<Chunk> {
        let c = self.mem.get(id)?;
        add(&self.stats.hits, 1);
        Some(c)
    }

    /// The plaintext of a chunk: from memory, from a load in flight, from the disk tier, or
    /// with one ranged read of its pack.
    pub fn get(&self, r: &ChunkRef) -> Result<Chunk, FetchError> {
        if let Some(c) = self.hit(&r.id) {
            return Ok(c);
        }
        if let Some(e) = self.failures.recent(&r.id) {
            add(&self.stats.failures_remembered, 1);
            return Err(e);
        }
        // Queued for a prefetcher that has not got to it yet: load its group now.
        if let Some(group) = self.prefetch.group_of(&r.id) {
            let claimed = self.prefetch.claim(&group, &self.flights, &self.mem);
            if claimed.iter().any(|(c, _)| c.id == r.id) {
                add(&self.stats.misses, 1);
                if let Some(result) = self.load_claimed(claimed, Some(r.id)) {
                    return result;
                }
            }
        }
        let guard = match self.flights.join(r.id, || self.hit(&r.id)) {
            Joined::Ready(c) => return Ok(c),
            Joined::Wait(flight) => {
                add(&self.stats.waits, 1);
                return flight.wait();
            }
            Joined::Lead(guard) => guard,
        };
        add(&self.stats.misses, 1);
        let flight = guard.flight().clone();
        self.load_claimed(vec![(r.clone(), guard)], Some(r.id))
            .unwrap_or_else(|| flight.wait())
    }

    fn insert(&self, id: ChunkId, c: Chunk) {
        if c.len() as u64 > self.budget.limit() {
            return;
        }
        let rss = self.budget.rss();
        self.mem
            .insert(id, c, |held| self.budget.tier_limit(rss, held));
    }

    /// Ends one chunk's load: keeps the chunk, or notes the failure (see [`failures`]),
    /// then wakes its waiters.
    fn settle(
        &self,
        r: &ChunkRef,
        guard: &FlightGuard<'_>,
        result: Result<Vec<u8>, RepoError>,
    ) -> Result<Chunk, FetchError> {
        let result = result.map(Arc::new).map_err(Arc::new);
        match &result {
            Ok(c) => self.insert(r.id, c.clone()),
            Err(e) => {
                tracing::debug!(chunk = %r.id, "load failed: {e}");
                self.failures.note(r.id, e);
            }
        }
        guard.finish(result.clone());
        result
    }

    /// The chunk from the disk tier, verified; an entry that fails verification is
    /// dropped (a miss).
    fn load_from_disk(&self, r: &ChunkRef) -> Option<Vec<u8>> {
        let disk = self.disk.as_ref()?;
        let sealed = disk.get(&r.id, r.stored_len)?;
        match self.repo.open_chunk(r, &sealed) {
            Ok(plain) => {
                add(&self.stats.disk_hits, 1);
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
        let _held = self.budget.hold(r.stored_len as u64 + r.raw_len as u64);
        add(&self.stats.fetches, 1);
        let sealed = self
            .repo
            .read_sealed(r)
            .inspect_err(|_| add(&self.stats.fetch_errors, 1))?;
        add(&self.stats.fetch_bytes, sealed.len() as u64);
        self.open_fetched(r, &sealed)
    }

    /// Authenticates and decompresses a chunk read from the store, counts it, and keeps
    /// its sealed bytes in the disk tier.
    fn open_fetched(&self, r: &ChunkRef, sealed: &[u8]) -> Result<Vec<u8>, RepoError> {
        let plain = self
            .repo
            .open_chunk(r, sealed)
            .inspect_err(|_| add(&self.stats.fetch_errors, 1))?;
        add(&self.stats.loaded_bytes, plain.len() as u64);
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
                        let claimed = cache.prefetch.claim(&group, &cache.flights, &cache.mem);
                        cache.load_claimed(claimed, None);
                    }
                })
                .expect("spawning a prefetch thread");
        }
        self.prefetch.connect(tx);
    }

    /// Whether no prefetch waits in the queue and no load is in flight: what a test waits
    /// for before it counts the reads a sequence of operations cost.
    #[cfg(test)]
    pub(crate) fn is_settled(&self) -> bool {
        self.prefetch.is_empty() && self.flights.is_empty()
    }

    /// Whether the chunk is in memory, being loaded, or queued for a prefetcher.
    pub fn present_or_loading(&self, id: &ChunkId) -> bool {
        self.prefetch.is_queued(id) || self.cached_or_loading(id)
    }

    fn cached_or_loading(&self, id: &ChunkId) -> bool {
        self.contains(id) || self.flights.contains(id)
    }

    /// Asks for a chunk to be loaded in the background; see [`ChunkCache::prefetch_run`].
    pub fn prefetch(&self, r: &ChunkRef) {
        self.prefetch_run(std::slice::from_ref(r));
    }

    /// Asks for chunks to be loaded in the background, soonest needed first. A hint only:
    /// chunks cached, loading or queued already are left out, and a group is dropped when
    /// no prefetchers run or the queue is full. Chunks that lie next to each other in one
    /// pack (gaps of at most [`COALESCE_GAP`], spans of at most [`COALESCE_SPAN`]) are
    /// fetched with one ranged read, whatever their order in `refs`: one request for a
    /// run of small files, or for a stretch of a large one.
    pub fn prefetch_run(&self, refs: &[ChunkRef]) {
        self.prefetch
            .hint(refs, |id| self.cached_or_loading(id), &self.stats);
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
        let mut settle = |r: &ChunkRef, guard: &FlightGuard<'_>, result| {
            let result = self.settle(r, guard, result);
            if want == Some(r.id) {
                wanted = Some(result);
            }
        };
        if let [(r, guard)] = claimed.as_slice() {
            settle(r, guard, self.load(r));
            return wanted;
        }
        // What the disk tier holds comes from there; the rest from the store.
        claimed.retain(|(r, guard)| match self.load_from_disk(r) {
            Some(plain) => {
                settle(r, guard, Ok(plain));
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
        let _held = self.budget.hold(len + raw);
        add(&self.stats.fetches, 1);
        match self.repo.read_pack_span(&pack, start, len) {
            Ok(None) => {
                // The pack is gone (repacked by a prune): each chunk alone, following
                // where it went.
                for (r, guard) in &claimed {
                    settle(r, guard, self.load(r));
                }
            }
            Ok(Some(buf)) => {
                add(&self.stats.fetch_bytes, buf.len() as u64);
                for (r, guard) in &claimed {
                    let at = (r.offset as u64 - start) as usize;
                    let result = match buf.get(at..at + r.stored_len as usize) {
                        Some(sealed) => self.open_fetched(r, sealed),
                        None => Err(RepoError::damaged(
                            format!("chunk {} in pack {}", r.id, pack.to_hex()),
                            format!("the store answered {} of {len} bytes", buf.len()),
                        )),
                    };
                    settle(r, guard, result);
                }
            }
            Err(e) => {
                add(&self.stats.fetch_errors, 1);
                tracing::debug!(pack = %pack.to_hex(), "load of {} chunks failed: {e}", claimed.len());
                let e: FetchError = Arc::new(e);
                for (r, guard) in &claimed {
                    self.failures.note(r.id, &e);
                    guard.finish(Err(e.clone()));
                    if want == Some(r.id) {
                        wanted = Some(Err(e.clone()));
                    }
                }
            }
        }
        // The guards wake the waiters and clear the flights as they drop.
        wanted
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::Store;
    use crate::backend::faulty::{Fault, FaultyStore, Op, Rule};
    use crate::backend::memory::MemoryStore;
    use crate::repo::InitOptions;
    use crate::repo::format::{ChunkerParams, KdfParams};
    use std::sync::atomic::Ordering;

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
            frames: None,
        }
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
        assert!(cache.flights.is_empty());
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
        wait_cached(&cache, std::slice::from_ref(&r));
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
                frames: None,
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
        run.push(other[0].clone());
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
        let mut hint: Vec<ChunkRef> = refs.iter().rev().cloned().collect();
        hint.swap(3, 7);
        hint.push(refs[4].clone());
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
        wait_cached(&cache, &[a[0].clone(), b[0].clone(), b[1].clone()]);
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
        let good = [refs[0].clone(), refs[1].clone(), refs[3].clone()];
        wait_cached(&cache, &good);
        assert!(!cache.contains(&refs[2].id));
        let e = cache.get(&refs[2]).unwrap_err();
        assert!(matches!(*e, RepoError::Damaged { .. }), "{e}");
        assert_eq!(*cache.get(&refs[3]).unwrap(), datas[3]);
    }
}
