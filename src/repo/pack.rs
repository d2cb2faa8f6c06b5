//! The pack writer: gathers sealed chunks into pack objects and uploads them.
//!
//! Chunks are appended to an in-memory pack; a chunk's location (pack id, offset) is
//! known the moment it is appended, before the pack is uploaded, so trees can reference
//! it at once. A full pack is handed to the uploader thread through a rendezvous (the
//! worker that filled it waits until the previous upload is done, which bounds memory to
//! two packs), and the uploader writes the pack and then its index object. A manifest
//! may only be committed after [`PackWriter::finish`] returned `Ok`: then every chunk it
//! references is durable.
//!
//! Deduplication happens here too: `add` returns the existing location of a chunk that
//! is already in the repository (from the index loaded at start) or was added earlier in
//! this run. Lock order: `state` only; the uploader takes no lock of ours.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, bounded};

use super::format::{ChunkId, ChunkKind, ChunkRef, IndexEntry, PackId, PackIndex};
use super::{RepoError, Repository, Result};

struct OpenPack {
    id: PackId,
    data: Vec<u8>,
    entries: Vec<IndexEntry>,
}

impl OpenPack {
    fn new(capacity: usize) -> Self {
        OpenPack {
            id: PackId::random(),
            data: Vec::with_capacity(capacity),
            entries: Vec::new(),
        }
    }
}

struct State {
    known: HashMap<ChunkId, ChunkRef>,
    open: OpenPack,
    chunks_new: u64,
    bytes_new: u64,
}

/// Counters of what a writer stored.
#[derive(Clone, Copy, Debug, Default)]
pub struct PackStats {
    pub chunks_new: u64,
    pub bytes_new: u64,
    pub packs: u64,
}

pub struct PackWriter {
    repo: Arc<Repository>,
    state: Mutex<State>,
    queue: Mutex<Option<Sender<OpenPack>>>,
    uploader: Mutex<Option<JoinHandle<std::result::Result<u64, RepoError>>>>,
    pack_size: usize,
    /// The packs the index named when this writer started.
    indexed_packs: std::collections::HashSet<PackId>,
}

impl PackWriter {
    /// A writer that deduplicates against `known` (usually [`Repository::load_index`]).
    pub fn new(repo: Arc<Repository>, known: HashMap<ChunkId, ChunkRef>) -> Self {
        let pack_size = repo.config().pack_size as usize;
        let indexed_packs = known.values().map(|r| r.pack).collect();
        let (tx, rx) = bounded::<OpenPack>(0);
        let up_repo = repo.clone();
        let uploader = std::thread::Builder::new()
            .name("pack-upload".into())
            .spawn(move || {
                let mut packs = 0u64;
                let mut first_error = None;
                for pack in rx {
                    if first_error.is_some() {
                        continue; // drain so that senders never block forever
                    }
                    if let Err(e) = upload(&up_repo, pack) {
                        first_error = Some(e);
                    } else {
                        packs += 1;
                    }
                }
                match first_error {
                    Some(e) => Err(e),
                    None => Ok(packs),
                }
            })
            .expect("spawn the pack uploader");
        PackWriter {
            repo,
            state: Mutex::new(State {
                known,
                open: OpenPack::new(pack_size + pack_size / 8),
                chunks_new: 0,
                bytes_new: 0,
            }),
            queue: Mutex::new(Some(tx)),
            uploader: Mutex::new(Some(uploader)),
            pack_size,
            indexed_packs,
        }
    }

    pub fn repo(&self) -> &Arc<Repository> {
        &self.repo
    }

    /// Whether the index named this pack when the writer started (a pack that prune
    /// removed is not named any more).
    pub fn knows_pack(&self, pack: &PackId) -> bool {
        self.indexed_packs.contains(pack)
    }

    /// The location of a chunk already stored (or added in this run), if any.
    pub fn lookup(&self, id: &ChunkId) -> Option<ChunkRef> {
        self.state.lock().unwrap().known.get(id).copied()
    }

    /// Hashes, seals and adds a chunk unless it is already stored; returns its location.
    pub fn store_chunk(
        &self,
        kind: ChunkKind,
        data: &[u8],
        compressor: &mut zstd::bulk::Compressor<'_>,
    ) -> Result<ChunkRef> {
        let id = self.repo.keys().chunk_id(data);
        if let Some(r) = self.lookup(&id) {
            return Ok(r);
        }
        let sealed = self.repo.seal_chunk(&id, data, compressor);
        self.add(id, kind, data.len() as u32, &sealed)
    }

    /// Appends a sealed chunk unless its id is already known.
    pub fn add(
        &self,
        id: ChunkId,
        kind: ChunkKind,
        raw_len: u32,
        sealed: &[u8],
    ) -> Result<ChunkRef> {
        let (r, full) = {
            let mut st = self.state.lock().unwrap();
            if let Some(r) = st.known.get(&id) {
                return Ok(*r);
            }
            let r = ChunkRef {
                id,
                pack: st.open.id,
                offset: st.open.data.len() as u32,
                stored_len: sealed.len() as u32,
                raw_len,
            };
            st.open.data.extend_from_slice(sealed);
            st.open.entries.push(IndexEntry {
                id,
                kind,
                offset: r.offset,
                stored_len: r.stored_len,
                raw_len,
            });
            st.known.insert(id, r);
            st.chunks_new += 1;
            st.bytes_new += sealed.len() as u64;
            let full = (st.open.data.len() >= self.pack_size).then(|| {
                let cap = self.pack_size + self.pack_size / 8;
                std::mem::replace(&mut st.open, OpenPack::new(cap))
            });
            (r, full)
        };
        if let Some(pack) = full {
            self.send(pack)?;
        }
        Ok(r)
    }

    fn send(&self, pack: OpenPack) -> Result<()> {
        let queue = self.queue.lock().unwrap().clone();
        match queue {
            Some(tx) if tx.send(pack).is_ok() => Ok(()),
            _ => Err(RepoError::Internal("the pack writer is closed".into())),
        }
    }

    /// What this writer stored so far.
    pub fn counts(&self) -> PackStats {
        let st = self.state.lock().unwrap();
        PackStats {
            chunks_new: st.chunks_new,
            bytes_new: st.bytes_new,
            packs: 0,
        }
    }

    /// Uploads the last pack, waits for every upload, and reports what was stored.
    pub fn finish(&self) -> Result<PackStats> {
        let last = {
            let mut st = self.state.lock().unwrap();
            std::mem::replace(&mut st.open, OpenPack::new(0))
        };
        if !last.entries.is_empty() {
            self.send(last)?;
        }
        drop(self.queue.lock().unwrap().take());
        let handle = self.uploader.lock().unwrap().take();
        let packs = match handle {
            Some(h) => h.join().expect("the pack uploader panicked")?,
            None => 0,
        };
        let st = self.state.lock().unwrap();
        Ok(PackStats {
            chunks_new: st.chunks_new,
            bytes_new: st.bytes_new,
            packs,
        })
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        drop(self.queue.lock().unwrap().take());
        if let Some(h) = self.uploader.lock().unwrap().take() {
            let _ = h.join();
        }
    }
}

fn upload(repo: &Repository, pack: OpenPack) -> Result<()> {
    crate::failpoint!("pack.write");
    repo.store().put(&pack.id.key(), &pack.data)?;
    crate::failpoint!("pack.written");
    repo.write_pack_index(&PackIndex {
        pack: pack.id,
        entries: pack.entries,
    })?;
    crate::failpoint!("index.written");
    Ok(())
}
