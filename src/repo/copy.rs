//! Copying points between repositories (`vaultfs copy`, restic's `copy`): the same
//! names, times, attributes, trigger and statistics, in a repository with other keys and
//! possibly another backend.
//!
//! Chunk ids are keyed under each repository's id key, so a chunk's id in the source
//! says nothing about the destination unless the two share the id key (`init --from`).
//! Each data chunk is read from the source (opened, decompressed), hashed under the
//! destination's id key, and stored only when the destination's index lacks that id:
//! a second copy, or a point whose files the destination already holds from its own
//! backups, uploads no data. With a shared id key the source id is the destination id,
//! so a chunk the destination holds is not even read, and one it lacks is opened and
//! sealed again under the destination's key as it is stored (compressed), with no zstd
//! round trip (`check --read-data` hashes it, as every chunk).
//!
//! Trees carry chunk locations, so they are written anew, children first, naming where
//! each chunk lives in the destination. The manifest is written last, create-only, under
//! the point's own name, after every pack and index object it depends on is durable:
//! like a backup's commit, a kill at any moment leaves either no point or a complete
//! one, and the packs a killed copy uploaded are indexed, so the next copy reuses them
//! (prune reclaims them otherwise). Each point is committed on its own, so a long copy
//! interrupted keeps the points it finished. The destination's writer lock is held
//! throughout, as a backup holds it, so prune cannot remove a chunk the copy reuses.
//!
//! A point whose name the destination's vault already holds is skipped when it is the
//! same point (same time, host and backups), and refused, before anything is written,
//! when it is another one.
//!
//! Concurrency: the data chunks of one directory are read and stored by up to eight
//! threads at once (the source may be a distant store, where each read waits a round
//! trip); trees are written in the calling thread, depth first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::cancel::Cancel;
use super::export::set_attrs;
use super::format::*;
use super::pack::PackWriter;
use super::points::PointRecord;
use super::walk::{Progress, with_compressor};
use super::{RepoError, Repository, Result, lock};
use crate::backend::BackendError;

/// Settings of one copy.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// How long to wait for another writer of the destination to release its lock.
    pub lock_wait: Duration,
    /// Set to stop the copy: it stops before its next point's commit.
    pub cancel: Cancel,
    /// Bytes (of chunk plaintext) and chunks gone through so far.
    pub progress: Arc<Progress>,
}

/// What a copy did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CopyReport {
    pub vault: String,
    /// The destination had no such vault: it was made with the source vault's settings.
    pub vault_created: bool,
    /// The two repositories share their id key (`init --from`): chunk ids are kept.
    pub same_ids: bool,
    /// Points written into the destination, oldest first.
    pub points_copied: Vec<String>,
    /// Points the destination already held.
    pub points_present: Vec<String>,
    /// Data chunks stored in the destination, and those it already held.
    pub chunks_uploaded: u64,
    pub chunks_skipped: u64,
    /// Tree chunks stored, and those already there.
    pub trees_uploaded: u64,
    pub trees_skipped: u64,
    /// Stored bytes of everything uploaded (chunks and trees).
    pub bytes_uploaded: u64,
    /// Plaintext bytes read from the source.
    pub bytes_read: u64,
    /// Pack objects written.
    pub packs: u64,
}

/// Copies `points` (names or `latest`; none: every point) of `vault` from `src` into
/// `dst` (see the module documentation).
pub fn copy(
    src: &Arc<Repository>,
    dst: &Arc<Repository>,
    vault: &str,
    points: &[String],
    opts: &CopyOptions,
) -> Result<CopyReport> {
    if src.config().repo_id == dst.config().repo_id && src.location() == dst.location() {
        return Err(RepoError::BadInput(
            "the source and the destination are the same repository".into(),
        ));
    }
    let source_vault = src.load_vault(vault).map_err(|e| match e {
        RepoError::VaultNotFound(_) => RepoError::BadInput(format!(
            "vault {vault:?} does not exist in the source repository at {}",
            src.location()
        )),
        e => e,
    })?;
    let records = chosen_points(src, vault, points)?;
    dst.require_current_format("a copy")?;
    let _lock = lock::acquire_shared_wait(
        dst,
        &format!("copy {vault} from {}", src.location()),
        opts.lock_wait,
    )?;
    let mut report = CopyReport {
        vault: vault.to_string(),
        same_ids: src.keys().chunk_id(ID_PROBE) == dst.keys().chunk_id(ID_PROBE),
        ..Default::default()
    };
    let exists = match dst.load_vault(vault) {
        Ok(_) => true,
        Err(RepoError::VaultNotFound(_)) => false,
        Err(e) => return Err(e),
    };
    if exists {
        dst.finish_deletions(vault)?;
    }
    // Which points are there already; another point under one of the names stops the
    // copy before anything is written.
    let mut todo = Vec::new();
    let mut conflicts = Vec::new();
    for rec in records {
        let there = if exists {
            match dst.load_manifest(vault, rec.name()) {
                Ok(m) => Some(m),
                Err(RepoError::PointNotFound { .. }) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        match there {
            Some(m) if same_point(&m, &rec.manifest) => {
                sync_attrs(dst, vault, &rec)?;
                report.points_present.push(rec.name().to_string());
            }
            Some(_) => conflicts.push(rec.name().to_string()),
            None => todo.push(rec),
        }
    }
    if !conflicts.is_empty() {
        return Err(RepoError::BadInput(format!(
            "vault {vault:?} of the repository at {} already holds other points under the names {}: nothing was copied",
            dst.location(),
            conflicts.join(", ")
        )));
    }
    if !exists {
        let mut v = source_vault;
        // A policy of the source may not exist here: the copy is not scheduled.
        v.policy = None;
        v.policy_applied_ns = None;
        report.vault_created = match dst.create_vault_with(v) {
            Ok(_) => true,
            Err(RepoError::VaultExists(_)) => false,
            Err(e) => return Err(e),
        };
    }
    if todo.is_empty() {
        return Ok(report);
    }
    let (known, damaged) = dst.load_index()?;
    for d in damaged {
        tracing::warn!("ignoring a damaged index object (its chunks will be stored again): {d}");
    }
    let copier = Copier {
        src: src.clone(),
        dst: dst.clone(),
        same_ids: report.same_ids,
        known: Mutex::new(known),
        data: Mutex::new(HashMap::new()),
        trees: Mutex::new(HashMap::new()),
        counts: Counts::default(),
        opts,
    };
    for rec in &todo {
        opts.cancel.check()?;
        let packs = copier.point(vault, rec)?;
        report.packs += packs;
        report.points_copied.push(rec.name().to_string());
    }
    let c = &copier.counts;
    report.chunks_uploaded = c.chunks_uploaded.load(Ordering::Relaxed);
    report.chunks_skipped = c.chunks_skipped.load(Ordering::Relaxed);
    report.trees_uploaded = c.trees_uploaded.load(Ordering::Relaxed);
    report.trees_skipped = c.trees_skipped.load(Ordering::Relaxed);
    report.bytes_uploaded = c.bytes_uploaded.load(Ordering::Relaxed);
    report.bytes_read = c.bytes_read.load(Ordering::Relaxed);
    Ok(report)
}

/// Trees below one another that a copy follows at most: a path of at most 4095 bytes
/// has at most 2048 components.
const MAX_DEPTH: usize = 2100;

/// Plaintext whose id tells whether two repositories share their id key.
const ID_PROBE: &[u8] = b"vaultfs: do these repositories share their id key?";

/// The source points to copy, oldest first, each once.
fn chosen_points(src: &Repository, vault: &str, points: &[String]) -> Result<Vec<PointRecord>> {
    let mut recs = if points.is_empty() {
        src.point_records(vault, false)?
    } else {
        let mut recs: Vec<PointRecord> = Vec::new();
        for p in points {
            let r = src.point_record(vault, p)?;
            if r.status == PointStatus::Error {
                return Err(RepoError::BadInput(format!(
                    "{vault}/{} is the record of a failed backup, not a point: nothing to copy",
                    r.name()
                )));
            }
            if !recs.iter().any(|x| x.name() == r.name()) {
                recs.push(r);
            }
        }
        recs
    };
    recs.sort_by(|a, b| (a.manifest.time_ns, a.name()).cmp(&(b.manifest.time_ns, b.name())));
    Ok(recs)
}

/// Whether the destination's `there` is a copy of the source's `m`: the same time, host
/// and backups (their trees differ: they name other locations).
fn same_point(there: &Manifest, m: &Manifest) -> bool {
    there.time_ns == m.time_ns
        && there.end_ns == m.end_ns
        && there.hostname == m.hostname
        && there.backups.len() == m.backups.len()
        && there
            .backups
            .iter()
            .zip(&m.backups)
            .all(|(a, b)| a.name == b.name && a.kind == b.kind && a.stats == b.stats)
}

/// A point already copied gets the source's current attributes when nobody changed it
/// here since (a copy killed between its commit and its attributes).
fn sync_attrs(dst: &Repository, vault: &str, rec: &PointRecord) -> Result<()> {
    let here = dst.point_record(vault, rec.name())?;
    if here.updated_ns.is_none() && here.attrs == rec.manifest.attrs && here.attrs != rec.attrs {
        set_attrs(dst, vault, rec.name(), &here.attrs, &rec.attrs)?;
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    chunks_uploaded: AtomicU64,
    chunks_skipped: AtomicU64,
    trees_uploaded: AtomicU64,
    trees_skipped: AtomicU64,
    bytes_uploaded: AtomicU64,
    bytes_read: AtomicU64,
}

/// One copy's state. Lock order: each mutex alone, never two at once, never across a
/// store call.
struct Copier<'a> {
    src: Arc<Repository>,
    dst: Arc<Repository>,
    same_ids: bool,
    /// Every chunk the destination holds, by destination id: its index at the start, and
    /// what this copy stored since (durable once its point's writer finished).
    known: Mutex<HashMap<ChunkId, ChunkRef>>,
    /// Source data chunk id -> its destination location.
    data: Mutex<HashMap<ChunkId, ChunkRef>>,
    /// Source tree id -> the destination tree written for it.
    trees: Mutex<HashMap<ChunkId, ChunkRef>>,
    counts: Counts,
    opts: &'a CopyOptions,
}

impl Copier<'_> {
    /// Copies one point and commits it; returns the packs written.
    fn point(&self, vault: &str, rec: &PointRecord) -> Result<u64> {
        let m = &rec.manifest;
        // A writer per point: its finish makes the point's chunks durable before its
        // commit. Deduplication is against `known`, not the writer's own map.
        let writer = PackWriter::new(self.dst.clone(), HashMap::new());
        let mut backups = Vec::with_capacity(m.backups.len());
        for b in &m.backups {
            let root = self.tree(&writer, &b.root, 0)?;
            backups.push(BackupEntry { root, ..b.clone() });
        }
        self.opts.cancel.check()?;
        let stats = writer.finish()?;
        self.counts
            .bytes_uploaded
            .fetch_add(stats.bytes_new, Ordering::Relaxed);
        self.opts.cancel.check()?;
        let manifest = Manifest {
            vault: vault.to_string(),
            backups,
            ..m.clone()
        };
        let key = format!("points/{vault}/{}", m.name);
        crate::failpoint!("copy.commit");
        match self.dst.write_record(&key, &manifest, true) {
            Ok(()) => {}
            Err(RepoError::Backend(BackendError::AlreadyExists { .. })) => {
                return Err(RepoError::BadInput(format!(
                    "point {vault}/{} was written into the destination by someone else meanwhile",
                    m.name
                )));
            }
            Err(e) => return Err(e),
        }
        crate::failpoint!("copy.committed");
        set_attrs(&self.dst, vault, &m.name, &m.attrs, &rec.attrs)?;
        Ok(stats.packs)
    }

    /// The destination tree for source tree `r`, written (children first) unless it was
    /// written before in this copy or the destination holds it.
    fn tree(&self, writer: &PackWriter, r: &ChunkRef, depth: usize) -> Result<ChunkRef> {
        if let Some(d) = self.trees.lock().unwrap().get(&r.id) {
            return Ok(d.clone());
        }
        if depth > MAX_DEPTH {
            // Deeper than any path a file system holds: a tree that names an ancestor.
            return Err(RepoError::damaged(
                format!("tree {} of the source", r.id),
                format!("more than {MAX_DEPTH} directories deep"),
            ));
        }
        self.opts.cancel.check()?;
        let mut tree = self.src.load_tree(r)?;
        let mut wanted: Vec<ChunkRef> = Vec::new();
        {
            let done = self.data.lock().unwrap();
            let mut seen = std::collections::HashSet::new();
            for n in &tree.nodes {
                for e in &n.content {
                    if let Extent::Data(c) = e
                        && !done.contains_key(&c.id)
                        && seen.insert(c.id)
                    {
                        wanted.push(c.clone());
                    }
                }
            }
        }
        super::prune::par_map(&wanted, |c| self.data_chunk(writer, c))?;
        for n in &mut tree.nodes {
            {
                let done = self.data.lock().unwrap();
                for e in &mut n.content {
                    if let Extent::Data(c) = e {
                        *c = done.get(&c.id).cloned().ok_or_else(|| {
                            RepoError::Internal(format!("chunk {} was not copied", c.id))
                        })?;
                    }
                }
            }
            if let Some(sub) = n.subtree.clone() {
                n.subtree = Some(self.tree(writer, &sub, depth + 1)?);
            }
        }
        let data = encode_object(&tree);
        let id = self.dst.keys().chunk_id(&data);
        let d = match self.lookup(&id) {
            Some(d) => {
                self.counts.trees_skipped.fetch_add(1, Ordering::Relaxed);
                d
            }
            None => {
                let d = self.store(writer, ChunkKind::Tree, &data)?;
                self.counts.trees_uploaded.fetch_add(1, Ordering::Relaxed);
                d
            }
        };
        self.trees.lock().unwrap().insert(r.id, d.clone());
        Ok(d)
    }

    /// Copies one data chunk unless the destination holds it.
    fn data_chunk(&self, writer: &PackWriter, r: &ChunkRef) -> Result<()> {
        let progress = &self.opts.progress;
        if self.same_ids
            && let Some(d) = self.lookup(&r.id)
        {
            self.counts.chunks_skipped.fetch_add(1, Ordering::Relaxed);
            progress.add(1, r.raw_len as u64);
            self.data.lock().unwrap().insert(r.id, d);
            return Ok(());
        }
        self.opts.cancel.check()?;
        if self.same_ids && r.frames.is_none() {
            // The id stays: the sealed payload (compressed or not) is opened and sealed
            // again under the destination's key as it is, with no zstd round trip.
            let stored = self.src.read_sealed(r)?;
            let name = || format!("chunk {} in pack {} of the source", r.id, r.pack.to_hex());
            let payload = self
                .src
                .keys()
                .open(&stored, &r.id.0)
                .map_err(|_| RepoError::damaged(name(), "authentication failed"))?;
            if !matches!(
                payload.first(),
                Some(&super::CHUNK_RAW | &super::CHUNK_ZSTD)
            ) {
                return Err(RepoError::damaged(name(), "unknown chunk encoding"));
            }
            self.counts
                .bytes_read
                .fetch_add(payload.len() as u64, Ordering::Relaxed);
            let sealed = self.dst.keys().seal(&payload, &r.id.0);
            let d = writer.add(r.id, ChunkKind::Data, r.raw_len, &sealed, None)?;
            self.known.lock().unwrap().insert(d.id, d.clone());
            self.counts.chunks_uploaded.fetch_add(1, Ordering::Relaxed);
            progress.add(1, r.raw_len as u64);
            self.data.lock().unwrap().insert(r.id, d);
            return Ok(());
        }
        let plain = self.src.read_chunk(r)?;
        self.counts
            .bytes_read
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        let id = self.dst.keys().chunk_id(&plain);
        let d = match self.lookup(&id) {
            Some(d) => {
                self.counts.chunks_skipped.fetch_add(1, Ordering::Relaxed);
                d
            }
            None => {
                let d = self.store(writer, ChunkKind::Data, &plain)?;
                self.counts.chunks_uploaded.fetch_add(1, Ordering::Relaxed);
                d
            }
        };
        progress.add(1, r.raw_len as u64);
        self.data.lock().unwrap().insert(r.id, d);
        Ok(())
    }

    fn lookup(&self, id: &ChunkId) -> Option<ChunkRef> {
        self.known.lock().unwrap().get(id).cloned()
    }

    /// Stores a chunk in the destination (the writer dedups within this point).
    fn store(&self, writer: &PackWriter, kind: ChunkKind, data: &[u8]) -> Result<ChunkRef> {
        let level = self.dst.config().zstd_level;
        let d = with_compressor(level, |c| writer.store_chunk(kind, data, c))?;
        self.known.lock().unwrap().insert(d.id, d.clone());
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::repo::backup::{BackupOptions, Source, backup};
    use crate::repo::crypto::Keys;

    fn memory(keys: Option<&Keys>) -> Arc<Repository> {
        let opts = crate::repo::InitOptions {
            kdf: KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
                salt: [1; 16],
            },
            ..Default::default()
        };
        let store = Arc::new(crate::backend::memory::MemoryStore::new());
        let keys = keys.map_or_else(Keys::generate, Keys::sharing_ids_of);
        Repository::init_with_keys(store, b"pw", opts, keys).unwrap()
    }

    fn content(repo: &Repository, vault: &str, point: &str, path: &[u8]) -> Vec<u8> {
        let node = repo
            .find_node(&repo.load_manifest(vault, point).unwrap(), path)
            .unwrap();
        let mut out = Vec::new();
        repo.read_file(&node, &mut out).unwrap();
        out
    }

    #[test]
    fn copies_with_other_keys_and_with_shared_ids_then_nothing_twice() {
        let src = memory(None);
        src.create_vault("v", "laptop").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("t");
        std::fs::create_dir_all(tree.join("d")).unwrap();
        let big: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(tree.join("big"), &big).unwrap();
        std::fs::write(tree.join("d/small"), b"small").unwrap();
        let p1 = backup(
            &src,
            "v",
            Source::Trees(vec![tree.clone()]),
            &BackupOptions::default(),
        )
        .unwrap()
        .manifest
        .name;

        for shared in [false, true] {
            let dst = memory(shared.then(|| src.keys()));
            let r = copy(&src, &dst, "v", &[], &CopyOptions::default()).unwrap();
            assert_eq!(r.same_ids, shared);
            assert!(r.vault_created);
            assert_eq!(r.points_copied, vec![p1.clone()]);
            assert!(r.chunks_uploaded >= 2 && r.chunks_skipped == 0, "{r:?}");
            assert_eq!(dst.load_vault("v").unwrap().description, "laptop");
            let stored: u64 = dst
                .store()
                .list("packs/")
                .unwrap()
                .iter()
                .map(|o| o.size)
                .sum();
            assert_eq!(r.bytes_uploaded, stored);
            assert_eq!(content(&dst, "v", &p1, b"t/big"), big);
            assert_eq!(content(&dst, "v", &p1, b"t/d/small"), b"small");
            let a = src.load_manifest("v", &p1).unwrap();
            let b = dst.load_manifest("v", &p1).unwrap();
            assert_eq!(
                (a.time_ns, &a.hostname, &a.trigger),
                (b.time_ns, &b.hostname, &b.trigger)
            );
            let same_file_ids = src.find_node(&a, b"t/big").unwrap().content
                == dst.find_node(&b, b"t/big").unwrap().content;
            let ids = |repo: &Repository, m: &Manifest| -> Vec<ChunkId> {
                repo.find_node(m, b"t/big")
                    .unwrap()
                    .content
                    .iter()
                    .filter_map(|e| match e {
                        Extent::Data(r) => Some(r.id),
                        Extent::Hole(_) => None,
                    })
                    .collect()
            };
            assert_eq!(ids(&src, &a) == ids(&dst, &b), shared);
            assert!(!same_file_ids, "locations are the destination's own");

            let packs = dst.store().list("packs/").unwrap().len();
            let again = copy(&src, &dst, "v", &[], &CopyOptions::default()).unwrap();
            assert_eq!(again.points_present, vec![p1.clone()]);
            assert!(again.points_copied.is_empty());
            assert_eq!(again.chunks_uploaded + again.trees_uploaded, 0);
            assert_eq!(dst.store().list("packs/").unwrap().len(), packs);
            let report = crate::repo::check::check(&dst, true).unwrap();
            assert!(report.ok(), "{:?}", report.errors);
        }
    }

    fn manifest(roots: Vec<BackupEntry>) -> Manifest {
        Manifest {
            vault: "v".into(),
            name: String::new(),
            time_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_000_000_000_000,
            hostname: "a".into(),
            status: PointStatus::Available,
            parent: None,
            backups: roots,
            attrs: PointAttrs::default(),
            skipped: Vec::new(),
            fail_reason: None,
            skipped_resources: Vec::new(),
            trigger: Trigger::Manual,
        }
    }

    /// A point whose backup is `depth` directories, one in another, each named `d`.
    fn deep_point(repo: &Arc<Repository>, depth: usize) -> String {
        let w = PackWriter::new(repo.clone(), HashMap::new());
        let mut sub = None;
        for _ in 0..depth {
            let mut n = Node::empty(b"d".to_vec(), NodeKind::Dir);
            n.subtree = sub;
            let data = encode_object(&Tree { nodes: vec![n] });
            sub = Some(with_compressor(3, |c| w.store_chunk(ChunkKind::Tree, &data, c)).unwrap());
        }
        w.finish().unwrap();
        let mut m = manifest(vec![BackupEntry {
            name: b"d".to_vec(),
            kind: BackupKind::Tree,
            source: b"/d".to_vec(),
            root: sub.unwrap(),
            stats: BackupStats::default(),
        }]);
        repo.commit_manifest(&mut m).unwrap()
    }

    #[test]
    fn trees_as_deep_as_paths_go_are_copied_and_deeper_ones_refused() {
        let src = memory(None);
        src.create_vault("v", "").unwrap();
        let p = deep_point(&src, 2048);
        let dst = memory(None);
        // On a thread with a stack no larger than the main thread's.
        let (s, d) = (src.clone(), dst.clone());
        std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || copy(&s, &d, "v", &[], &CopyOptions::default()).unwrap())
            .unwrap()
            .join()
            .unwrap();
        let path = vec!["d"; 2048].join("/");
        let m = dst.load_manifest("v", &p).unwrap();
        assert_eq!(dst.find_node(&m, path.as_bytes()).unwrap().subtree, None);

        let src = memory(None);
        src.create_vault("v", "").unwrap();
        deep_point(&src, MAX_DEPTH + 5);
        let dst = memory(None);
        let e = std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn(move || copy(&src, &dst, "v", &[], &CopyOptions::default()).unwrap_err())
            .unwrap()
            .join()
            .unwrap();
        assert!(e.to_string().contains("directories deep"), "{e}");
    }

    #[test]
    fn a_point_the_destination_holds_under_another_content_is_refused() {
        let src = memory(None);
        src.create_vault("v", "").unwrap();
        let dst = memory(None);
        dst.create_vault("v", "").unwrap();
        let mut m = manifest(Vec::new());
        src.commit_manifest(&mut m.clone()).unwrap();
        m.hostname = "b".into();
        dst.commit_manifest(&mut m).unwrap();
        let e = copy(&src, &dst, "v", &[], &CopyOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("already holds other points") && e.contains(&m.name),
            "{e}"
        );
    }
}
