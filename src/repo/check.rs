//! Verifying a repository.
//!
//! Structure (always): the config opens; every index object opens and every entry lies
//! inside its pack, which exists; every vault and manifest opens; every tree reachable
//! from a manifest opens, and every chunk it references is in the index at the same
//! location. With `read_data`, every pack is read whole and every indexed chunk is
//! opened, decompressed and hashed against its id. Problems are collected, not fatal:
//! the report names every damaged object. Packs that no index describes (left by an
//! interrupted backup or prune) are reported as notes, not errors.
//!
//! Forwards (see [`super::read`]): a reference whose location is not indexed is followed
//! through the forward object of its pack, as readers do, and is fine when that leads to
//! an indexed copy with the same lengths. Every entry of every forward object must lead
//! to an indexed copy too: one pointing nowhere is damage. A forward object of a pack that
//! still exists is the leftover of an interrupted prune (a note).

use std::collections::{HashMap, HashSet};

use super::format::*;
use super::read::MAX_HOPS;
use super::walk::Progress;
use super::{RepoError, Repository, Result};

/// What a check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub errors: Vec<String>,
    pub notes: Vec<String>,
    pub packs: usize,
    pub chunks: usize,
    pub points: usize,
    pub trees: usize,
    pub bytes_read: u64,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

pub fn check(repo: &Repository, read_data: bool) -> Result<CheckReport> {
    check_with_progress(repo, read_data, &Progress::default())
}

/// [`check`], counting the packs and bytes read with `read_data` into `progress` (its
/// totals set once the packs are listed), for a progress bar and the task record.
pub fn check_with_progress(
    repo: &Repository,
    read_data: bool,
    progress: &Progress,
) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let store = repo.store();
    // Leftovers of interrupted writes (S3 multipart uploads, local temporary files)
    // older than a day.
    match store.clean_stale_uploads(std::time::Duration::from_secs(24 * 3600)) {
        Ok(0) => {}
        Ok(n) => report.notes.push(format!(
            "removed {n} leftover(s) of interrupted writes older than a day"
        )),
        Err(e) => report
            .notes
            .push(format!("could not clean interrupted uploads: {e}")),
    }

    // Packs and their sizes.
    let mut packs: HashMap<PackId, u64> = HashMap::new();
    for o in store.list("packs/")? {
        let id = o.key.rsplit('/').next().and_then(PackId::from_hex);
        match id {
            Some(id) if o.key == id.key() => {
                packs.insert(id, o.size);
            }
            _ => report.notes.push(format!("stray object {}", o.key)),
        }
    }
    report.packs = packs.len();

    // Index objects.
    // Every indexed location; a chunk may be stored more than once (concurrent writers).
    let mut index: HashMap<(ChunkId, PackId, u32), (ChunkRef, ChunkKind)> = HashMap::new();
    let mut per_pack: HashMap<PackId, Vec<IndexEntry>> = HashMap::new();
    for o in store.list("index/")? {
        let idx = match repo.load_pack_index(&o.key) {
            Ok(i) => i,
            Err(e) => {
                report.errors.push(e.to_string());
                continue;
            }
        };
        if o.key != idx.pack.index_key() {
            report.errors.push(format!(
                "index object {} describes pack {:?}",
                o.key, idx.pack
            ));
            continue;
        }
        let Some(&size) = packs.get(&idx.pack) else {
            report.errors.push(format!(
                "index object {} refers to missing pack {}",
                o.key,
                idx.pack.key()
            ));
            continue;
        };
        for e in &idx.entries {
            if e.offset as u64 + e.stored_len as u64 > size {
                report.errors.push(format!(
                    "chunk {} lies outside pack {} ({}+{} > {size} bytes)",
                    e.id,
                    idx.pack.key(),
                    e.offset,
                    e.stored_len
                ));
                continue;
            }
            index.insert((e.id, idx.pack, e.offset), (e.chunk_ref(idx.pack), e.kind));
        }
        per_pack.insert(idx.pack, idx.entries);
    }
    report.chunks = index.len();
    for id in packs.keys() {
        if !per_pack.contains_key(id) {
            report.notes.push(format!(
                "pack {} is not indexed (left by an interrupted backup or prune; prune removes it)",
                id.key()
            ));
        }
    }

    // Forward objects of packs removed by prune.
    let mut forwards: HashMap<PackId, HashMap<ChunkId, ChunkRef>> = HashMap::new();
    for o in store.list("forward/")? {
        let Some(id) = o.key.strip_prefix("forward/").and_then(PackId::from_hex) else {
            report.notes.push(format!("stray object {}", o.key));
            continue;
        };
        match repo.load_forward(&id) {
            Ok(f) => {
                if packs.contains_key(&id) {
                    report.notes.push(format!(
                        "pack {} still exists beside its forward object (an interrupted \
                         prune; prune finishes it)",
                        id.key()
                    ));
                }
                forwards.insert(id, f.moved.iter().map(|m| (m.id, m.clone())).collect());
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    let refs = Refs {
        index: &index,
        forwards: &forwards,
    };
    let mut fwd_ids: Vec<&PackId> = forwards.keys().collect();
    fwd_ids.sort();
    for pack in fwd_ids {
        let mut moved: Vec<&ChunkRef> = forwards[pack].values().collect();
        moved.sort_by_key(|m| m.id);
        for m in moved {
            let found = refs.locate(m);
            let ok = found
                .is_some_and(|(loc, _)| loc.stored_len == m.stored_len && loc.raw_len == m.raw_len);
            if !ok {
                report.errors.push(format!(
                    "forward object {} sends chunk {} to pack {} offset {}, where it is not \
                     indexed",
                    pack.forward_key(),
                    m.id,
                    m.pack.to_hex(),
                    m.offset
                ));
            }
        }
    }

    // Vaults, manifests and trees.
    let mut seen_trees: HashSet<ChunkId> = HashSet::new();
    let mut vaults: Vec<String> = repo.list_vaults()?;
    for o in store.list("points/")? {
        let vault = o
            .key
            .strip_prefix("points/")
            .and_then(|k| k.split('/').next());
        if let Some(v) = vault
            && !vaults.iter().any(|x| x == v)
        {
            report.errors.push(format!(
                "recovery points of unknown vault {v:?} ({})",
                o.key
            ));
            vaults.push(v.to_string());
        }
    }
    for vault in &vaults {
        if let Err(e) = repo.load_vault(vault)
            && !matches!(e, RepoError::VaultNotFound(_))
        {
            report.errors.push(e.to_string());
        }
        for point in repo.list_points(vault)? {
            report.points += 1;
            let m = match repo.load_manifest(vault, &point) {
                Ok(m) => m,
                Err(e) => {
                    report.errors.push(e.to_string());
                    continue;
                }
            };
            for b in &m.backups {
                let mut stack = vec![b.root.clone()];
                while let Some(r) = stack.pop() {
                    if !seen_trees.insert(r.id) {
                        continue;
                    }
                    report.trees += 1;
                    let ctx = format!("{vault}/{point}/{}", String::from_utf8_lossy(&b.name));
                    if !check_ref(&refs, &r, ChunkKind::Tree, &ctx, &mut report) {
                        continue;
                    }
                    let tree = match repo.load_tree(&r) {
                        Ok(t) => t,
                        Err(e) => {
                            report.errors.push(format!("{e} (in {ctx})"));
                            continue;
                        }
                    };
                    for n in &tree.nodes {
                        for e in &n.content {
                            if let Extent::Data(c) = e {
                                check_ref(&refs, c, ChunkKind::Data, &ctx, &mut report);
                            }
                        }
                        if let Some(s) = &n.subtree {
                            stack.push(s.clone());
                        }
                    }
                }
            }
        }
    }

    // Key objects: each must decode and authenticate (the config was read again too).
    match repo.list_keys() {
        Ok(keys) => report.errors.extend(
            keys.into_iter()
                .filter_map(|k| k.damaged.map(|why| format!("damaged key {}: {why}", k.id))),
        ),
        Err(e) => report.errors.push(e.to_string()),
    }

    if read_data {
        let mut ids: Vec<&PackId> = per_pack.keys().collect();
        ids.sort();
        let total: u64 = ids.iter().filter_map(|p| packs.get(*p)).sum();
        progress
            .total_bytes
            .store(total, std::sync::atomic::Ordering::Relaxed);
        progress
            .total_files
            .store(ids.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for pack in ids {
            let data = match store.get(&pack.key()) {
                Ok(d) => d,
                Err(e) => {
                    report.errors.push(e.to_string());
                    progress.add(1, 0);
                    continue;
                }
            };
            report.bytes_read += data.len() as u64;
            progress.add(1, data.len() as u64);
            for e in &per_pack[pack] {
                let Some((r, _)) = index.get(&(e.id, *pack, e.offset)) else {
                    continue;
                };
                let end = e.offset as usize + e.stored_len as usize;
                if end > data.len() {
                    continue; // already reported
                }
                match repo.open_chunk(r, &data[e.offset as usize..end]) {
                    Ok(plain) => {
                        if repo.keys().chunk_id(&plain) != e.id {
                            report.errors.push(format!(
                                "damaged object chunk {} in pack {}: content does not match its id",
                                e.id,
                                pack.to_hex()
                            ));
                        }
                    }
                    Err(err) => report.errors.push(err.to_string()),
                }
            }
        }
    }
    Ok(report)
}

/// Indexed locations, and where forward objects send chunks of removed packs.
struct Refs<'a> {
    index: &'a HashMap<(ChunkId, PackId, u32), (ChunkRef, ChunkKind)>,
    forwards: &'a HashMap<PackId, HashMap<ChunkId, ChunkRef>>,
}

impl Refs<'_> {
    /// The indexed copy a reference leads to: its own location, else through forwards
    /// (at most [`MAX_HOPS`]), as readers follow them.
    fn locate(&self, r: &ChunkRef) -> Option<&(ChunkRef, ChunkKind)> {
        let mut at = r;
        for _ in 0..=MAX_HOPS {
            if let Some(found) = self.index.get(&(at.id, at.pack, at.offset)) {
                return Some(found);
            }
            at = self.forwards.get(&at.pack)?.get(&at.id)?;
        }
        None
    }
}

fn check_ref(
    refs: &Refs<'_>,
    r: &ChunkRef,
    kind: ChunkKind,
    ctx: &str,
    report: &mut CheckReport,
) -> bool {
    match refs.locate(r) {
        None => {
            report.errors.push(format!(
                "chunk {} (referenced by {ctx}) is not in the index at pack {} offset {}, \
                 and no forward object says where it went",
                r.id,
                r.pack.to_hex(),
                r.offset
            ));
            false
        }
        Some((loc, k)) => {
            let same = loc.stored_len == r.stored_len && loc.raw_len == r.raw_len;
            if !same {
                report.errors.push(format!(
                    "chunk {} (referenced by {ctx}) has other lengths in the index",
                    r.id
                ));
                false
            } else if loc.frames != r.frames {
                report.errors.push(format!(
                    "chunk {} (referenced by {ctx}) has another frame table in the index",
                    r.id
                ));
                false
            } else if *k != kind {
                report.errors.push(format!(
                    "chunk {} (referenced by {ctx}) has kind {k:?}, expected {kind:?}",
                    r.id
                ));
                false
            } else {
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    fn repo() -> Arc<Repository> {
        let r = crate::repo::memory_repo();
        r.create_vault("v", "").unwrap();
        r
    }

    /// Stores one chunk in a pack of its own, indexed.
    fn store(repo: &Repository, kind: ChunkKind, plain: &[u8]) -> ChunkRef {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let id = repo.keys().chunk_id(plain);
        let sealed = repo.seal_chunk(&id, plain, &mut c);
        let pack = PackId::random();
        repo.store().put(&pack.key(), &sealed).unwrap();
        let r = ChunkRef {
            id,
            pack,
            offset: 0,
            stored_len: sealed.len() as u32,
            raw_len: plain.len() as u32,
            frames: None,
        };
        repo.write_pack_index(&PackIndex {
            pack,
            entries: vec![IndexEntry {
                id,
                kind,
                offset: 0,
                stored_len: r.stored_len,
                raw_len: r.raw_len,
                frames: None,
            }],
        })
        .unwrap();
        r
    }

    /// A point holding one file whose content is `data`.
    fn point(repo: &Repository, data: ChunkRef) {
        let mut node = Node::empty(b"f".to_vec(), NodeKind::File);
        node.size = data.raw_len as u64;
        node.content = vec![Extent::Data(data)];
        let tree = encode_object(&Tree { nodes: vec![node] });
        let root = store(repo, ChunkKind::Tree, &tree);
        let mut m = Manifest {
            vault: "v".into(),
            name: String::new(),
            time_ns: 1,
            end_ns: 2,
            hostname: "h".into(),
            status: PointStatus::Available,
            parent: None,
            backups: vec![BackupEntry {
                name: b"f".to_vec(),
                kind: BackupKind::Image,
                source: b"-".to_vec(),
                root,
                stats: BackupStats::default(),
            }],
            attrs: PointAttrs::default(),
            skipped: Vec::new(),
            fail_reason: None,
            skipped_resources: Vec::new(),
            trigger: Trigger::Manual,
        };
        repo.commit_manifest(&mut m).unwrap();
    }

    /// `check --read-data` opens every frame of a framed chunk: one flipped bit in any
    /// frame is damage naming the chunk and the frame; a tree whose frame table differs
    /// from the index's is reported too.
    #[test]
    fn read_data_opens_every_frame() {
        let repo = repo();
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i % 253) as u8 ^ (i >> 11) as u8)
            .collect();
        let w = super::super::pack::PackWriter::new(repo.clone(), HashMap::new());
        let r = w.store_chunk(ChunkKind::Data, &data, &mut c).unwrap();
        w.finish().unwrap();
        let f = r.frames.clone().expect("framed");
        assert!(f.count() >= 4);
        point(&repo, r.clone());
        assert!(check(&repo, true).unwrap().ok());
        let key = r.pack.key();
        let good = repo.store().get(&key).unwrap();
        for k in [0, f.count() / 2, f.count() - 1] {
            let (start, len) = f.span(k, k);
            let mut bad = good.clone();
            bad[(r.offset as u64 + start + len / 2) as usize] ^= 0x10;
            repo.store().put(&key, &bad).unwrap();
            // Without reading data nothing shows; with it, the frame is named.
            assert!(check(&repo, false).unwrap().ok());
            let rep = check(&repo, true).unwrap();
            assert!(
                rep.errors
                    .iter()
                    .any(|e| e.contains(&r.id.to_hex()) && e.contains(&format!("frame {k}: "))),
                "{:?}",
                rep.errors
            );
        }
        repo.store().put(&key, &good).unwrap();
        // A reference with another frame table than the index's.
        let mut other = r.clone();
        let mut lens = f.lens.to_vec();
        lens[0] += 1;
        lens[1] -= 1;
        other.frames = Some(Arc::new(crate::repo::format::Frames {
            size: f.size,
            lens: lens.into(),
        }));
        point(&repo, other);
        let rep = check(&repo, false).unwrap();
        assert!(
            rep.errors.iter().any(|e| e.contains("another frame table")),
            "{:?}",
            rep.errors
        );
    }

    #[test]
    fn forwards_are_followed_and_one_pointing_nowhere_is_damage() {
        let repo = repo();
        let a = store(&repo, ChunkKind::Data, b"some file data");
        point(&repo, a.clone());
        assert!(check(&repo, true).unwrap().ok());

        // Prune moved the chunk: a copy, a forward, and the old pack and index gone.
        let sealed = repo.read_sealed(&a).unwrap();
        let b_pack = PackId::random();
        let mut data = vec![0u8; 10];
        data.extend_from_slice(&sealed);
        repo.store().put(&b_pack.key(), &data).unwrap();
        let b = ChunkRef {
            pack: b_pack,
            offset: 10,
            ..a.clone()
        };
        repo.write_pack_index(&PackIndex {
            pack: b_pack,
            entries: vec![IndexEntry {
                id: a.id,
                kind: ChunkKind::Data,
                offset: 10,
                stored_len: a.stored_len,
                raw_len: a.raw_len,
                frames: None,
            }],
        })
        .unwrap();
        repo.write_forward(&Forward {
            pack: a.pack,
            moved: vec![b.clone()],
        })
        .unwrap();
        // Interrupted before the old pack went: a note, no error.
        let r = check(&repo, true).unwrap();
        assert!(r.ok(), "{:?}", r.errors);
        assert!(
            r.notes.iter().any(|n| n.contains("beside its forward")),
            "{:?}",
            r.notes
        );
        repo.store().delete(&a.pack.index_key()).unwrap();
        let r = check(&repo, true).unwrap();
        assert!(r.ok(), "{:?}", r.errors);
        assert!(
            r.notes.iter().any(|n| n.contains("not indexed")),
            "{:?}",
            r.notes
        );
        repo.store().delete(&a.pack.key()).unwrap();
        let r = check(&repo, true).unwrap();
        assert!(r.ok(), "{:?}", r.errors);
        assert!(r.notes.is_empty(), "{:?}", r.notes);

        // A forward entry that leads nowhere is damage, and so is the reference through it.
        repo.write_forward(&Forward {
            pack: a.pack,
            moved: vec![ChunkRef {
                pack: PackId::random(),
                ..b
            }],
        })
        .unwrap();
        let r = check(&repo, false).unwrap();
        assert!(
            r.errors.iter().any(|e| e.contains("sends chunk")),
            "{:?}",
            r.errors
        );
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains("no forward object says")),
            "{:?}",
            r.errors
        );
    }
}
