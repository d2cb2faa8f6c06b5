//! Readahead: what the mount loads before it is asked, told by three hooks.
//!
//! - [`Readahead::on_read`]: a sequential reader of one file gets the next chunks
//!   prefetched; the window grows by one chunk per read that continued the previous one,
//!   up to `bytes / average chunk size` chunks (the repository's `chunker.avg_size`, so
//!   the byte bound is what usually stops it, whatever the chunk size), and never more
//!   than [`Readahead::limit`] bytes. The window is refilled in batches, only when less
//!   than half of it is cached or loading, so that a run of chunks goes out as one
//!   grouped read.
//! - [`Readahead::on_open`]: files of one directory opened one after the other (`cp -a`,
//!   `tar`, `rsync`, `sha256sum *`) get the chunks of the next small files loaded in the
//!   background. Such opens mark a tree walk as under way for `walk_linger`.
//! - [`Readahead::on_list`]: a directory listed from its start gets its subdirectories'
//!   tree chunks prefetched (a walk then rarely waits for a tree); during a walk that
//!   reads files, also its own small files and those of the next few directories.
//!   `find` and `ls -R`, which open no files, prefetch no content.
//!
//! Everything here is a hint to [`ChunkCache::prefetch_run`], which groups neighbours
//! of a pack into one ranged read and drops hints when its queue is full: readahead
//! never blocks a request and never holds memory the cache's budget does not allow
//! (at most half of the chunk tier, see [`Readahead::limit`]).
//!
//! State: per open file a [`Stream`] (kept in its handle); per directory recently opened
//! from, how far the readahead across its files has gone ([`DirProgress`], a bounded LRU
//! of [`DIRS_TRACKED`] directories: forgetting one only makes its next open look like a
//! first one); and until when a walk counts as under way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::cache::ChunkCache;
use crate::repo::format::{ChunkRef, Extent, NodeKind};
use crate::sync::lock;

use super::inodes::{Body, Inode, TreeNode};
use super::namespace::Namespace;

/// Small files of a directory prefetched at once by the readahead across files.
pub const READAHEAD_FILES: usize = 64;
/// How long a tree walk that reads files counts as under way after its last sign, by
/// default.
pub const WALK_LINGER: Duration = Duration::from_secs(1);
/// Directories whose readahead progress is remembered.
pub const DIRS_TRACKED: usize = 1024;
/// Files at most this large count as small for the readahead across files.
const SMALL_FILE: u64 = 1 << 20;
/// Requests of one stream may reach us slightly out of order (the kernel sends its
/// readahead requests asynchronously to several session threads): a read continues the
/// stream when it starts within this much of the last one.
const SLACK: u64 = 128 << 10;

/// The read position of one open file.
#[derive(Debug)]
pub struct Stream {
    last_start: AtomicU64,
    last_end: AtomicU64,
    /// How many reads in a row continued the previous one.
    streak: AtomicU64,
}

impl Default for Stream {
    fn default() -> Self {
        Stream {
            last_start: AtomicU64::new(u64::MAX),
            last_end: AtomicU64::new(u64::MAX),
            streak: AtomicU64::new(0),
        }
    }
}

/// The position of the child of a directory opened last, and how far the readahead
/// across its files has gone (a position in its listing).
#[derive(Clone, Copy, Debug)]
pub struct DirProgress {
    last_open: Option<usize>,
    ahead_until: usize,
}

/// See the module documentation.
pub struct Readahead {
    cache: Arc<ChunkCache>,
    /// `--readahead`: bytes ahead of a sequential reader.
    bytes: u64,
    /// The repository's average chunk size: the window's bound in chunks is
    /// `bytes / chunk_avg`.
    chunk_avg: u64,
    walk_linger: Duration,
    /// Until when (ms since `epoch`) a tree walk that reads files counts as under way.
    walk_until_ms: AtomicU64,
    epoch: Instant,
    dirs: Mutex<LruCache<u64, DirProgress>>,
}

impl std::fmt::Debug for Readahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readahead")
            .field("bytes", &self.bytes)
            .field("chunk_avg", &self.chunk_avg)
            .finish()
    }
}

impl Readahead {
    pub fn new(cache: Arc<ChunkCache>, bytes: u64, walk_linger: Duration) -> Readahead {
        let chunk_avg = u64::from(cache.repo().config().chunker.avg_size).max(1);
        Readahead {
            cache,
            bytes,
            chunk_avg,
            walk_linger,
            walk_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            dirs: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(DIRS_TRACKED).expect("non-zero"),
            )),
        }
    }

    /// The window's bound in chunks.
    fn window_chunks(&self) -> usize {
        (self.bytes / self.chunk_avg) as usize
    }

    /// Bytes one readahead may ask for: `--readahead`, and never more than half of what
    /// the chunk cache may hold now (a window the cache cannot keep would evict its own
    /// chunks before they are read, and fetch them twice).
    pub fn limit(&self) -> u64 {
        self.bytes.min(self.cache.tier_limit() / 2)
    }

    /// Whether a walk that reads files was seen within the linger.
    fn walking(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        now < self.walk_until_ms.load(Ordering::Relaxed)
    }

    /// Ends the walk under way, as if its linger had passed.
    #[cfg(test)]
    pub fn end_walk(&self) {
        self.walk_until_ms.store(0, Ordering::Relaxed);
    }

    fn progress(&self, dir: u64) -> DirProgress {
        lock(&self.dirs).get(&dir).copied().unwrap_or(DirProgress {
            last_open: None,
            ahead_until: 0,
        })
    }

    fn set_progress(&self, dir: u64, p: DirProgress) {
        lock(&self.dirs).put(dir, p);
    }

    /// A read of `offset..end` of file `t` through the handle whose stream is `s`.
    pub fn on_read(&self, t: &TreeNode, s: &Stream, offset: u64, end: u64) {
        let last_start = s.last_start.swap(offset, Ordering::Relaxed);
        let last_end = s.last_end.swap(end, Ordering::Relaxed);
        let sequential = last_end != u64::MAX
            && offset + SLACK >= last_start
            && offset <= last_end.saturating_add(SLACK);
        let streak = if sequential {
            s.streak.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            s.streak.store(0, Ordering::Relaxed);
            0
        };
        if streak == 0 || end >= t.node.size {
            return;
        }
        let want = (streak as usize).min(self.window_chunks());
        let limit = self.limit();
        let mut window = Vec::with_capacity(want.min(1024));
        let mut bytes = 0u64;
        for e in &t.node.content[t.extent_at(end.saturating_sub(1))..] {
            if let Extent::Data(r) = e {
                if window.len() >= want || bytes >= limit {
                    break;
                }
                window.push(r.clone());
                bytes += r.raw_len as u64;
            }
        }
        let ahead = window
            .iter()
            .take_while(|r| self.cache.present_or_loading(&r.id))
            .count();
        if ahead * 2 < window.len().max(1) {
            self.cache.prefetch_run(&window[ahead..]);
        }
    }

    /// An open of the backup file `inode`: the readahead across files (see the module
    /// documentation). Opening a lone file fetches nothing extra.
    pub fn on_open(&self, ns: &Namespace, inode: &Inode) {
        let Some((dir, listing, idx)) = ns.place_in_parent(inode) else {
            return;
        };
        let Body::Node(_) = &dir.body else { return };
        let mut p = self.progress(dir.ino);
        let sequential = match p.last_open {
            None => self.walking(),
            Some(last) => idx > last && idx <= last + 8,
        };
        p.last_open = Some(idx);
        self.set_progress(dir.ino, p);
        if !sequential {
            return;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        self.walk_until_ms
            .fetch_max(now + self.walk_linger.as_millis() as u64, Ordering::Relaxed);
        if idx + READAHEAD_FILES / 2 >= p.ahead_until {
            self.files(ns, dir.ino, &listing, idx + 1);
        }
    }

    /// A listing of the backup directory `dir` from its start.
    pub fn on_list(&self, ns: &Namespace, dir: &Inode, listing: &[(Vec<u8>, u64)]) {
        self.subtrees(ns, listing);
        if self.walking() {
            // A walk that reads files lists a directory, then reads its files, and then
            // goes on to the next directories.
            self.files(ns, dir.ino, listing, 0);
            self.next_dirs(ns, dir);
        }
    }

    /// Readahead down the tree: the tree chunks of the subdirectories not listed yet, in
    /// pack order so that neighbours go out as one read.
    fn subtrees(&self, ns: &Namespace, listing: &[(Vec<u8>, u64)]) {
        let refs: Vec<ChunkRef> = listing
            .iter()
            .filter_map(|(_, child)| {
                let c = ns.inodes.get(*child)?;
                match &c.body {
                    // A directory listed once keeps its listing: nothing to load.
                    Body::Node(t)
                        if t.node.kind == NodeKind::Dir && lock(&t.children).is_none() =>
                    {
                        t.node.subtree.clone()
                    }
                    _ => None,
                }
            })
            .collect();
        self.cache.prefetch_run(&refs);
    }

    /// During a walk, the directories listed after `dir` in its parent get their small
    /// files prefetched too, as far as their tree chunks are loaded already (the parent's
    /// listing asked for them): the walk then finds a directory's files loading before it
    /// gets there, instead of waiting for them at every directory.
    fn next_dirs(&self, ns: &Namespace, dir: &Inode) {
        const DIRS: usize = 4;
        let Some((_, listing, idx)) = ns.place_in_parent(dir) else {
            return;
        };
        let mut dirs = 0;
        for (_, child) in &listing[idx + 1..] {
            if dirs >= DIRS {
                break;
            }
            let Some(c) = ns.inodes.get(*child) else {
                continue;
            };
            let Body::Node(ct) = &c.body else { continue };
            if ct.node.kind != NodeKind::Dir {
                continue;
            }
            dirs += 1;
            let loaded = lock(&ct.children).is_some()
                || ct
                    .node
                    .subtree
                    .as_ref()
                    .is_none_or(|r| self.cache.contains(&r.id));
            if !loaded {
                continue;
            }
            if let Ok(l) = ns.tree_children(*child, ct) {
                self.files(ns, *child, &l, 0);
            }
        }
    }

    /// Prefetches the chunks of the small files of directory `dir` from position `from` of
    /// its listing on (at most [`READAHEAD_FILES`] files and [`Readahead::limit`] bytes).
    fn files(&self, ns: &Namespace, dir: u64, listing: &[(Vec<u8>, u64)], from: usize) {
        let mut p = self.progress(dir);
        // What an earlier call covered is queued already.
        let from = from.max(p.ahead_until);
        let limit = self.limit();
        let mut refs = Vec::new();
        let (mut files, mut bytes) = (0, 0u64);
        let mut next = from;
        while let Some((_, child)) = listing.get(next) {
            if files >= READAHEAD_FILES || bytes >= limit {
                break;
            }
            next += 1;
            let Some(c) = ns.inodes.get(*child) else {
                continue;
            };
            let Body::Node(ct) = &c.body else { continue };
            if ct.node.kind != NodeKind::File || ct.node.size > SMALL_FILE {
                continue;
            }
            files += 1;
            for e in &ct.node.content {
                if let Extent::Data(r) = e {
                    refs.push(r.clone());
                    bytes += r.stored_len as u64;
                }
            }
        }
        p.ahead_until = next;
        self.set_progress(dir, p);
        self.cache.prefetch_run(&refs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryStore;

    #[test]
    fn the_window_is_counted_in_the_repository_s_chunks() {
        // The test repository's chunks average 16 KiB: 1 MiB ahead is 64 of them, and
        // 32 MiB 2,048 (a fixed 512 KiB guess would have allowed 2 and 64).
        let repo = crate::cache::tests::test_repo(Arc::new(MemoryStore::new()));
        assert_eq!(repo.config().chunker.avg_size, 16384);
        let cache = ChunkCache::new(repo, 64 << 20, None);
        let r = Readahead::new(cache.clone(), 1 << 20, WALK_LINGER);
        assert_eq!(r.window_chunks(), 64);
        let r = Readahead::new(cache, 32 << 20, WALK_LINGER);
        assert_eq!(r.window_chunks(), 2048);
        // The byte bound: at most half of what the chunk tier may hold.
        assert_eq!(r.limit(), 32 << 20);
    }
}
