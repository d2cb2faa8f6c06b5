//! Prune: frees the space of chunks no recovery point references any more.
//!
//! Protocol against concurrent writers: prune holds the writer lock exclusively
//! ([`lock::acquire_wait`]) from before it lists anything until it has deleted its last
//! object. Backups hold the same lock from before they load the index until after their
//! manifest is committed, so no backup can deduplicate against a chunk prune deletes, and
//! no pack is mid-upload while prune looks (a pack without an index object is a leftover).
//!
//! Steps (FORMAT.md, "Prune", has the argument that a kill at any moment is safe):
//! 1. List `packs/`, `index/`, `forward/` and `points/` (a failed listing fails the prune)
//!    and load every index and forward object.
//! 2. Mark: walk every manifest of every vault, every tree reachable from it (a tree id
//!    once), and collect every referenced location, data and tree chunks alike.
//! 3. Resolve each reference to its live copy: through the forward object of the pack it
//!    names when there is one (a forward of a pack that still exists is an interrupted
//!    repack whose copies are durable), else that pack itself when it exists and is
//!    indexed. A reference that resolves nowhere stops the prune before it changes
//!    anything. Every indexed copy that no reference resolves to is unused.
//! 4. Plan: a pack with no live copy is deleted; a pack whose unused bytes are above
//!    `max_unused` percent of its size is repacked; a pack without an index is deleted
//!    (every reference into it resolved elsewhere); an index object without a pack is
//!    deleted.
//! 5. Write: the live chunks of repacked packs, copied verbatim (the sealed bytes depend on
//!    the chunk id only) into new packs with their index objects; then every needed
//!    forward object (new, or rewritten so that it names the chunk's final home); then
//!    remove forwards nobody needs; then the index objects of the packs that go; then the
//!    packs.
//!
//! Concurrency: the mark walk is latency-bound (one small read per tree, on S3 a round
//! trip each), so manifests and trees are read by `WALK_THREADS` scoped threads, in
//! batches of `WALK_BATCH` trees so that memory stays bounded. Copying is bound by
//! bandwidth and runs in the calling thread with one reused pack buffer (`Repacker`):
//! prune's peak memory is then one pack, one span and the mark's sets (about 100 bytes a
//! referenced chunk).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::format::*;
use super::read::MAX_HOPS;
use super::{RepoError, Repository, Result, lock};

/// Settings of one prune.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Compute and report, change nothing (and take no lock).
    pub dry_run: bool,
    /// Repack a pack when more than this percentage of its bytes is unused.
    pub max_unused_percent: f64,
    /// How long to wait for other writers to release the lock (zero: fail at once).
    pub lock_wait: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            max_unused_percent: 10.0,
            lock_wait: Duration::from_secs(3600),
        }
    }
}

/// What a prune did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub points: usize,
    pub packs_before: usize,
    pub packs_after: usize,
    /// Bytes of all pack objects, before and after (estimated for a dry run).
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Bytes of packs that no referenced chunk resolves to.
    pub unused_bytes_before: u64,
    /// Packs deleted whole: no live chunk, or no index (leftovers).
    pub packs_deleted: usize,
    pub packs_repacked: usize,
    pub packs_written: u64,
    pub chunks_moved: u64,
    pub bytes_moved: u64,
    pub forwards_written: usize,
    pub forwards_removed: usize,
    /// Index objects whose pack was gone.
    pub indexes_removed: usize,
    /// Temporary files (local) or multipart uploads (S3) left by killed writers.
    pub stale_uploads_removed: usize,
    /// Objects that could not be deleted (the next prune tries again).
    pub errors: Vec<String>,
    pub seconds: f64,
}

/// Trees (and manifests) read at once by the mark walk: they are small reads, so on S3
/// the walk is bound by latency, not bandwidth.
const WALK_THREADS: usize = 8;
/// Repack reads runs of neighbouring live chunks up to about this many bytes at once.
const REPACK_SPAN: u64 = 4 << 20;
/// Trees loaded per round of the walk: bounds the trees held in memory at once.
const WALK_BATCH: usize = 256;

/// `f` over `items` on up to `WALK_THREADS` threads, results in order; the first error
/// (in item order) is returned and stops the rest early.
pub(crate) fn par_map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    if items.len() <= 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<R>>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..WALK_THREADS.min(items.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() {
                        break;
                    }
                    let r = f(&items[i]);
                    let failed = r.is_err();
                    *slots[i].lock().unwrap() = Some(r);
                    if failed {
                        next.store(items.len(), Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    let results: Vec<Option<Result<R>>> = slots
        .into_iter()
        .map(|s| s.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect();
    // Slots after an error may be empty; an error is always in its slot.
    let mut out = Vec::with_capacity(results.len());
    let mut complete = true;
    for r in results {
        match r {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => return Err(e),
            None => complete = false,
        }
    }
    assert!(complete, "an item was skipped without an error");
    Ok(out)
}

/// Calls `on_ref` for every chunk location reachable from `roots` (tree chunks): the roots,
/// every tree below them and every data extent. A tree whose id is in `visited` is
/// reported but not read again; trees read are added. Trees are read in parallel.
pub(crate) fn walk_trees(
    repo: &Repository,
    roots: &[ChunkRef],
    visited: &mut HashSet<ChunkId>,
    on_ref: &mut dyn FnMut(&ChunkRef, ChunkKind),
) -> Result<()> {
    let mut stack = Vec::new();
    for r in roots {
        on_ref(r, ChunkKind::Tree);
        if visited.insert(r.id) {
            stack.push(r.clone());
        }
    }
    while !stack.is_empty() {
        let batch = stack.split_off(stack.len().saturating_sub(WALK_BATCH));
        let trees = par_map(&batch, |r| repo.load_tree(r))?;
        for tree in &trees {
            for n in &tree.nodes {
                for e in &n.content {
                    if let Extent::Data(c) = e {
                        on_ref(c, ChunkKind::Data);
                    }
                }
                if let Some(sub) = &n.subtree {
                    on_ref(sub, ChunkKind::Tree);
                    if visited.insert(sub.id) {
                        stack.push(sub.clone());
                    }
                }
            }
        }
    }
    Ok(())
}

/// [`walk_trees`] from the backup roots of one manifest.
pub(crate) fn walk_manifest(
    repo: &Repository,
    m: &Manifest,
    visited: &mut HashSet<ChunkId>,
    on_ref: &mut dyn FnMut(&ChunkRef, ChunkKind),
) -> Result<()> {
    let roots: Vec<ChunkRef> = m.backups.iter().map(|b| b.root.clone()).collect();
    walk_trees(repo, &roots, visited, on_ref)
}

/// Every recovery point in the repository as (vault, point), from a listing of `points/`
/// (so that points of a vault whose settings object is gone count too).
pub(crate) fn all_points(repo: &Repository) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for o in repo.store().list("points/")? {
        let rest = o.key.strip_prefix("points/").unwrap_or(&o.key);
        if let Some((v, p)) = rest.split_once('/') {
            out.push((v.to_string(), p.to_string()));
        }
    }
    Ok(out)
}

/// The repository as prune sees it: objects listed, indexes and forwards loaded.
struct View {
    /// Pack objects and their sizes.
    packs: HashMap<PackId, u64>,
    /// Index entries by pack, then by (id, offset).
    indexes: HashMap<PackId, HashMap<(ChunkId, u32), IndexEntry>>,
    /// Forward objects by removed pack.
    forwards: HashMap<PackId, HashMap<ChunkId, ChunkRef>>,
}

impl View {
    fn load(repo: &Repository) -> Result<View> {
        let store = repo.store();
        let mut packs = HashMap::new();
        for o in store.list("packs/")? {
            if let Some(id) = o.key.rsplit('/').next().and_then(PackId::from_hex)
                && o.key == id.key()
            {
                packs.insert(id, o.size);
            }
        }
        let mut indexes = HashMap::new();
        for o in store.list("index/")? {
            let idx = repo.load_pack_index(&o.key).map_err(|e| {
                RepoError::Internal(format!(
                    "prune stopped before changing anything: {e}; run `vaultfs check`"
                ))
            })?;
            if o.key != idx.pack.index_key() {
                return Err(RepoError::Internal(format!(
                    "prune stopped before changing anything: index object {} describes pack \
                     {}; run `vaultfs check`",
                    o.key,
                    idx.pack.to_hex()
                )));
            }
            let entries = idx
                .entries
                .iter()
                .map(|e| ((e.id, e.offset), e.clone()))
                .collect();
            indexes.insert(idx.pack, entries);
        }
        let mut forwards = HashMap::new();
        for o in store.list("forward/")? {
            let Some(id) = o.key.strip_prefix("forward/").and_then(PackId::from_hex) else {
                continue;
            };
            let f = repo.load_forward(&id).map_err(|e| {
                RepoError::Internal(format!(
                    "prune stopped before changing anything: {e}; run `vaultfs check`"
                ))
            })?;
            forwards.insert(id, f.moved.iter().map(|m| (m.id, m.clone())).collect());
        }
        Ok(View {
            packs,
            indexes,
            forwards,
        })
    }

    /// Whether `r` names an indexed copy in an existing pack.
    fn has_copy(&self, r: &ChunkRef) -> bool {
        self.packs.contains_key(&r.pack)
            && self
                .indexes
                .get(&r.pack)
                .and_then(|i| i.get(&(r.id, r.offset)))
                .is_some_and(|e| e.stored_len == r.stored_len && e.raw_len == r.raw_len)
    }

    /// The live copy of a referenced chunk: through its pack's forward first, then the
    /// pack itself. `None`: no copy anywhere.
    fn resolve(&self, r: &ChunkRef) -> Option<ChunkRef> {
        self.resolve_from(r, &mut vec![r.pack])
    }

    fn resolve_from(&self, r: &ChunkRef, seen: &mut Vec<PackId>) -> Option<ChunkRef> {
        if seen.len() <= MAX_HOPS
            && let Some(next) = self.forwards.get(&r.pack).and_then(|f| f.get(&r.id))
            && !seen.contains(&next.pack)
        {
            seen.push(next.pack);
            if let Some(c) = self.resolve_from(next, seen) {
                return Some(c);
            }
        }
        self.has_copy(r).then(|| r.clone())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Keep,
    Repack,
    Delete,
}

/// Runs a prune. See the module documentation.
pub fn prune(repo: &Arc<Repository>, opts: &PruneOptions) -> Result<PruneReport> {
    let started = Instant::now();
    let _lock = if opts.dry_run {
        None
    } else {
        Some(lock::acquire_wait(repo, "prune", opts.lock_wait)?)
    };
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let view = View::load(repo)?;
    report.packs_before = view.packs.len();
    report.bytes_before = view.packs.values().sum();

    // Mark.
    let stopped = |e: RepoError| {
        RepoError::Internal(format!(
            "prune stopped before changing anything: {e}; run `vaultfs check`"
        ))
    };
    let points = all_points(repo)?;
    let manifests = par_map(&points, |(v, p)| repo.load_manifest(v, p)).map_err(stopped)?;
    report.points = manifests.len();
    let roots: Vec<ChunkRef> = manifests
        .iter()
        .flat_map(|m| m.backups.iter().map(|b| b.root.clone()))
        .collect();
    drop(manifests);
    let mut refs: HashMap<(PackId, u32), ChunkRef> = HashMap::new();
    let mut visited = HashSet::new();
    walk_trees(repo, &roots, &mut visited, &mut |r, _| {
        refs.entry((r.pack, r.offset)).or_insert_with(|| r.clone());
    })
    .map_err(stopped)?;
    drop(visited);

    // Resolve.
    let mut resolved: Vec<(ChunkRef, ChunkRef)> = Vec::with_capacity(refs.len());
    let mut live: HashSet<(PackId, u32)> = HashSet::new();
    let mut missing = Vec::new();
    for r in refs.values() {
        match view.resolve(r) {
            Some(c) => {
                live.insert((c.pack, c.offset));
                resolved.push((r.clone(), c));
            }
            None => missing.push(r.clone()),
        }
    }
    if let Some(r) = missing.first() {
        return Err(RepoError::Internal(format!(
            "prune stopped before changing anything: {} referenced chunk(s) have no copy in \
             an indexed pack, e.g. chunk {} in pack {}; run `vaultfs check`",
            missing.len(),
            r.id,
            r.pack.to_hex()
        )));
    }

    // Plan.
    let mut plan: BTreeMap<PackId, Plan> = BTreeMap::new();
    let mut live_bytes: HashMap<PackId, u64> = HashMap::new();
    for (pack, &size) in &view.packs {
        let Some(entries) = view.indexes.get(pack) else {
            plan.insert(*pack, Plan::Delete); // a leftover: nothing resolves to it
            report.unused_bytes_before += size;
            continue;
        };
        let l: u64 = entries
            .values()
            .filter(|e| live.contains(&(*pack, e.offset)))
            .map(|e| e.stored_len as u64)
            .sum();
        live_bytes.insert(*pack, l);
        let unused = size.saturating_sub(l);
        report.unused_bytes_before += unused;
        let p = if l == 0 {
            Plan::Delete
        } else if unused as f64 * 100.0 > opts.max_unused_percent * size as f64 {
            Plan::Repack
        } else {
            Plan::Keep
        };
        plan.insert(*pack, p);
    }
    let dangling: Vec<PackId> = view
        .indexes
        .keys()
        .filter(|p| !view.packs.contains_key(p))
        .copied()
        .collect();
    report.packs_deleted = plan.values().filter(|p| **p == Plan::Delete).count();
    report.packs_repacked = plan.values().filter(|p| **p == Plan::Repack).count();
    report.indexes_removed = dangling.len();

    if opts.dry_run {
        let mut after = report.bytes_before;
        for (pack, p) in &plan {
            if *p != Plan::Keep {
                after -= view.packs[pack];
            }
            if *p == Plan::Repack {
                after += live_bytes[pack];
                report.bytes_moved += live_bytes[pack];
                report.chunks_moved += view.indexes[pack]
                    .values()
                    .filter(|e| live.contains(&(*pack, e.offset)))
                    .count() as u64;
            }
        }
        report.bytes_after = after;
        report.packs_after = plan.values().filter(|p| **p == Plan::Keep).count()
            + (report.bytes_moved as usize).div_ceil(repo.config().pack_size.max(1) as usize);
        report.forwards_written = plan.values().filter(|p| **p == Plan::Repack).count();
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    repo.require_current_format("prune")?;
    // No writer runs (the lock is exclusive): what a killed one left half-written goes.
    // The age bound keeps a writer that runs without a lock (`unlock --all`) safe.
    report.stale_uploads_removed = repo
        .store()
        .clean_stale_uploads(std::time::Duration::from_secs(600))?;

    // Copy the live chunks of repacked packs; durable when `finish` returns.
    let mut moved: HashMap<(PackId, u32), ChunkRef> = HashMap::new();
    let repack: Vec<PackId> = plan
        .iter()
        .filter(|(_, p)| **p == Plan::Repack)
        .map(|(id, _)| *id)
        .collect();
    if !repack.is_empty() {
        let mut writer = Repacker::new(repo);
        for pack in &repack {
            let mut entries: Vec<&IndexEntry> = view.indexes[pack]
                .values()
                .filter(|e| live.contains(&(*pack, e.offset)))
                .collect();
            entries.sort_by_key(|e| e.offset);
            // Runs of neighbouring live chunks, each read with one ranged read (not the
            // whole pack: less to read, and no pack-sized buffers besides the writer's).
            let mut i = 0;
            while i < entries.len() {
                let start = entries[i].offset as u64;
                let mut end = start + entries[i].stored_len as u64;
                let mut j = i + 1;
                while j < entries.len()
                    && entries[j].offset as u64 == end
                    && end - start < REPACK_SPAN
                {
                    end += entries[j].stored_len as u64;
                    j += 1;
                }
                let span = repo
                    .read_pack_span(pack, start, end - start)?
                    .ok_or_else(|| {
                        RepoError::damaged(format!("pack {}", pack.to_hex()), "vanished")
                    })?;
                for e in &entries[i..j] {
                    let a = (e.offset as u64 - start) as usize;
                    let sealed = &span[a..a + e.stored_len as usize];
                    let to = writer.add(e.id, e.kind, e.raw_len, sealed, e.frames.clone())?;
                    moved.insert((*pack, e.offset), to);
                    report.chunks_moved += 1;
                    report.bytes_moved += e.stored_len as u64;
                }
                i = j;
            }
        }
        report.packs_written = writer.finish()?;
    }

    // Forwards: for every reference whose chunk does not stay where it names, the forward
    // object of the named pack says where the chunk finally lives.
    let stays = |r: &ChunkRef| plan.get(&r.pack) == Some(&Plan::Keep) && view.has_copy(r);
    let mut needed: BTreeMap<PackId, BTreeMap<ChunkId, ChunkRef>> = BTreeMap::new();
    for (r, c) in &resolved {
        if stays(r) {
            continue;
        }
        let fin = moved
            .get(&(c.pack, c.offset))
            .cloned()
            .unwrap_or_else(|| c.clone());
        needed.entry(r.pack).or_default().insert(r.id, fin);
    }
    for (pack, entries) in &needed {
        let same = view.forwards.get(pack).is_some_and(|old| {
            old.len() == entries.len() && entries.iter().all(|(id, r)| old.get(id) == Some(r))
        });
        if same {
            continue;
        }
        repo.write_forward(&Forward {
            pack: *pack,
            moved: entries.values().cloned().collect(),
        })?;
        crate::failpoint!("prune.forward_written");
        report.forwards_written += 1;
    }
    let stale: Vec<String> = view
        .forwards
        .keys()
        .filter(|p| !needed.contains_key(p))
        .map(|p| p.forward_key())
        .collect();
    report.forwards_removed = delete(repo, &stale, &mut report.errors)?.len();
    crate::failpoint!("prune.forwards_deleted");

    // Index objects of the packs that go, then the packs (only those whose index is gone:
    // an index without its pack would let a backup deduplicate against nothing).
    let going: Vec<PackId> = plan
        .iter()
        .filter(|(_, p)| **p != Plan::Keep)
        .map(|(id, _)| *id)
        .collect();
    let index_keys: Vec<String> = going
        .iter()
        .filter(|p| view.indexes.contains_key(p))
        .chain(dangling.iter())
        .map(|p| p.index_key())
        .collect();
    let removed: HashSet<String> = delete(repo, &index_keys, &mut report.errors)?
        .into_iter()
        .collect();
    crate::failpoint!("prune.indexes_deleted");
    let pack_keys: Vec<String> = going
        .iter()
        .filter(|p| !view.indexes.contains_key(p) || removed.contains(&p.index_key()))
        .map(|p| p.key())
        .collect();
    delete(repo, &pack_keys, &mut report.errors)?;
    crate::failpoint!("prune.packs_deleted");

    let after = repo.store().list("packs/")?;
    report.packs_after = after.len();
    report.bytes_after = after.iter().map(|o| o.size).sum();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Writes copied chunks into new packs, each pack then its index object, in the calling
/// thread with one buffer that is reused: prune's memory stays at one pack and one span
/// (the backup's pack writer overlaps uploads and keeps up to three packs).
struct Repacker<'a> {
    repo: &'a Repository,
    pack: PackId,
    data: Vec<u8>,
    entries: Vec<IndexEntry>,
    /// Chunks copied in this run (a chunk live in two repacked packs is copied once).
    done: HashMap<ChunkId, ChunkRef>,
    packs: u64,
}

impl<'a> Repacker<'a> {
    fn new(repo: &'a Repository) -> Self {
        let size = repo.config().pack_size as usize;
        Repacker {
            repo,
            pack: PackId::random(),
            data: Vec::with_capacity(size + size / 8),
            entries: Vec::new(),
            done: HashMap::new(),
            packs: 0,
        }
    }

    fn add(
        &mut self,
        id: ChunkId,
        kind: ChunkKind,
        raw_len: u32,
        sealed: &[u8],
        frames: Option<Arc<Frames>>,
    ) -> Result<ChunkRef> {
        if let Some(r) = self.done.get(&id) {
            return Ok(r.clone());
        }
        let r = ChunkRef {
            id,
            pack: self.pack,
            offset: self.data.len() as u32,
            stored_len: sealed.len() as u32,
            raw_len,
            frames,
        };
        self.data.extend_from_slice(sealed);
        self.entries.push(r.index_entry(kind));
        self.done.insert(id, r.clone());
        if self.data.len() >= self.repo.config().pack_size as usize {
            self.flush()?;
        }
        Ok(r)
    }

    fn flush(&mut self) -> Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        self.repo.store().put(&self.pack.key(), &self.data)?;
        crate::failpoint!("prune.repack.pack_written");
        self.repo.write_pack_index(&PackIndex {
            pack: self.pack,
            entries: std::mem::take(&mut self.entries),
        })?;
        crate::failpoint!("prune.repack.index_written");
        self.data.clear();
        self.pack = PackId::random();
        self.packs += 1;
        Ok(())
    }

    /// Writes the last pack; returns how many were written. Every copy is durable then.
    fn finish(mut self) -> Result<u64> {
        self.flush()?;
        Ok(self.packs)
    }
}

/// Deletes `keys` in batches; returns the keys deleted, and records the others in `errors`.
fn delete(repo: &Repository, keys: &[String], errors: &mut Vec<String>) -> Result<Vec<String>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let failed = repo.store().delete_many(keys)?;
    let bad: HashSet<&str> = failed.iter().map(|(k, _)| k.as_str()).collect();
    for (_, e) in &failed {
        errors.push(e.to_string());
    }
    Ok(keys
        .iter()
        .filter(|k| !bad.contains(k.as_str()))
        .cloned()
        .collect())
}
