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
//!
//! Verify before upload: every chunk sealed here is opened again, decompressed and
//! compared with the plaintext it was made from before it joins a pack
//! ([`PackWriter::store_chunk`]), so that a faulty compressor or cipher (a library bug, a
//! bad CPU or bad memory) fails the backup with a clear error instead of storing a chunk
//! that no reader can open. The check costs one decryption and one decompression per new
//! chunk (RELIABILITY.md has the figures); deduplicated chunks cost nothing.
//!
//! This module also decodes what a pack holds: [`decode_payload`] turns the opened
//! plaintext of a sealed chunk (a flag byte, then the raw or zstd-compressed bytes) into
//! the chunk, refusing a length over [`MAX_CHUNK_LEN`] before allocating for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, bounded};

use super::format::{ChunkId, ChunkKind, ChunkRef, IndexEntry, PackId, PackIndex};
use super::{CHUNK_RAW, CHUNK_ZSTD, RepoError, Repository, Result};

/// The longest chunk (plaintext) a reader accepts. Data chunks are at most the
/// chunker's maximum (16 MiB); a tree chunk holds one directory's entries, and one over
/// 1 GiB (millions of entries) is refused when written too ([`PackWriter::store_chunk`]).
pub const MAX_CHUNK_LEN: u32 = 1 << 30;

thread_local! {
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's zstd decompression context (made once per thread: a fresh
/// context per chunk costs more than decompressing a small file's chunk).
fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        let d = match &mut *d {
            Some(d) => d,
            empty => empty.insert(zstd::bulk::Decompressor::new()?),
        };
        f(d)
    })
}

/// Decodes the opened plaintext of a sealed chunk, which must give `raw_len` bytes: the
/// flag byte, then the bytes as they are or one zstd frame. The error says what is
/// wrong. Nothing is allocated for a length over [`MAX_CHUNK_LEN`], nor for a zstd frame
/// whose header announces another length than `raw_len`.
pub fn decode_payload(payload: &[u8], raw_len: u32) -> std::result::Result<Vec<u8>, String> {
    if raw_len > MAX_CHUNK_LEN {
        return Err(format!(
            "a length of {raw_len} bytes, over the {MAX_CHUNK_LEN} a chunk may have"
        ));
    }
    let data = match payload.split_first() {
        Some((&CHUNK_RAW, rest)) => rest.to_vec(),
        Some((&CHUNK_ZSTD, rest)) => match zstd::zstd_safe::get_frame_content_size(rest) {
            // What vaultfs writes: a frame that says its size. Only then is the whole
            // length allocated up front.
            Ok(Some(n)) if n == u64::from(raw_len) => {
                with_decompressor(|d| d.decompress(rest, raw_len as usize))
                    .map_err(|e| format!("zstd: {e}"))?
            }
            Ok(Some(n)) => return Err(format!("zstd frame of {n} bytes, expected {raw_len}")),
            // A frame that does not say: memory grows only with what it really holds.
            Ok(None) => {
                use std::io::Read;
                let mut out = Vec::new();
                zstd::stream::read::Decoder::new(rest)
                    .map_err(|e| format!("zstd: {e}"))?
                    .take(u64::from(raw_len) + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("zstd: {e}"))?;
                out
            }
            Err(_) => return Err("zstd: not a zstd frame".into()),
        },
        _ => return Err("unknown chunk encoding".into()),
    };
    if data.len() != raw_len as usize {
        return Err(format!("{} bytes, expected {raw_len}", data.len()));
    }
    Ok(data)
}

/// A deliberately faulty codec, for tests of the verification before upload: the chunk
/// sealed is not the one given (`Compress`: as a compressor returning wrong bytes would
/// make), or its sealed bytes are changed after sealing (`Cipher`). Builds with the
/// `fault-injection` feature read it from `VAULTFS_CODEC_FAULT` (`compress`, `cipher`).
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecFault {
    Compress,
    Cipher,
}

#[cfg(any(test, feature = "fault-injection"))]
impl CodecFault {
    fn from_env() -> Option<CodecFault> {
        match std::env::var("VAULTFS_CODEC_FAULT").ok()?.as_str() {
            "compress" => Some(CodecFault::Compress),
            "cipher" => Some(CodecFault::Cipher),
            _ => None,
        }
    }
}

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
    #[cfg(any(test, feature = "fault-injection"))]
    fault: Mutex<Option<CodecFault>>,
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
            #[cfg(any(test, feature = "fault-injection"))]
            fault: Mutex::new(CodecFault::from_env()),
        }
    }

    /// Makes every chunk this writer seals from now on come out wrong, as `fault` says.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn inject_codec_fault(&self, fault: Option<CodecFault>) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Compresses and seals a chunk (through the injected fault, if any).
    fn seal(
        &self,
        id: &ChunkId,
        data: &[u8],
        compressor: &mut zstd::bulk::Compressor<'_>,
    ) -> Vec<u8> {
        #[cfg(any(test, feature = "fault-injection"))]
        match *self.fault.lock().unwrap() {
            Some(CodecFault::Compress) => {
                let mut wrong = data.to_vec();
                match wrong.get_mut(data.len() / 2) {
                    Some(b) => *b ^= 0x20,
                    None => wrong.push(0),
                }
                return self.repo.seal_chunk(id, &wrong, compressor);
            }
            Some(CodecFault::Cipher) => {
                let mut sealed = self.repo.seal_chunk(id, data, compressor);
                let at = sealed.len() / 2;
                sealed[at] ^= 0x01;
                return sealed;
            }
            None => {}
        }
        self.repo.seal_chunk(id, data, compressor)
    }

    /// Opens a chunk just sealed as a reader will, and compares it with its plaintext.
    fn verify(&self, id: &ChunkId, data: &[u8], sealed: &[u8]) -> Result<()> {
        let r = ChunkRef {
            id: *id,
            pack: PackId([0; 16]),
            offset: 0,
            stored_len: sealed.len() as u32,
            raw_len: data.len() as u32,
        };
        let why = match self.repo.open_chunk(&r, sealed) {
            Ok(plain) if plain == data => return Ok(()),
            Ok(_) => "it opens to other bytes".to_string(),
            Err(RepoError::Damaged { reason, .. }) => reason,
            Err(e) => e.to_string(),
        };
        Err(RepoError::Internal(format!(
            "chunk {id} did not read back as it was written, before upload ({why}): the \
             compressor or the cipher is faulty (a library bug, bad memory or a bad CPU); \
             nothing of this chunk was stored"
        )))
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

    /// Hashes, seals, verifies (see the module documentation) and adds a chunk unless it
    /// is already stored; returns its location.
    pub fn store_chunk(
        &self,
        kind: ChunkKind,
        data: &[u8],
        compressor: &mut zstd::bulk::Compressor<'_>,
    ) -> Result<ChunkRef> {
        if data.len() > MAX_CHUNK_LEN as usize {
            return Err(RepoError::BadInput(format!(
                "a {kind:?} chunk of {} bytes is over the {MAX_CHUNK_LEN} a chunk may have \
                 (a directory with too many entries?)",
                data.len()
            )));
        }
        let id = self.repo.keys().chunk_id(data);
        if let Some(r) = self.lookup(&id) {
            return Ok(r);
        }
        let sealed = self.seal(&id, data, compressor);
        self.verify(&id, data, &sealed)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A faulty compressor or cipher is caught before its chunk joins a pack: the store
    /// fails, nothing is uploaded, and the same writer stores correct chunks again once
    /// the fault is gone.
    #[test]
    fn a_faulty_codec_is_caught_before_upload() {
        let repo = crate::repo::memory_repo();
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        for fault in [CodecFault::Compress, CodecFault::Cipher] {
            let writer = PackWriter::new(repo.clone(), HashMap::new());
            writer.inject_codec_fault(Some(fault));
            for data in [
                b"compressible ".repeat(1000),
                (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
                vec![7u8],
                Vec::new(),
            ] {
                let e = writer
                    .store_chunk(ChunkKind::Data, &data, &mut c)
                    .unwrap_err();
                assert!(
                    matches!(&e, RepoError::Internal(m) if m.contains("faulty")),
                    "{fault:?}: {e}"
                );
                assert!(writer.lookup(&repo.keys().chunk_id(&data)).is_none());
            }
            assert_eq!(writer.finish().unwrap().packs, 0);
            assert!(repo.store().list("packs/").unwrap().is_empty());
            assert!(repo.store().list("index/").unwrap().is_empty());
        }
        let writer = PackWriter::new(repo.clone(), HashMap::new());
        let r = writer
            .store_chunk(ChunkKind::Data, b"fine data", &mut c)
            .unwrap();
        assert_eq!(writer.finish().unwrap().packs, 1);
        assert_eq!(repo.read_chunk(&r).unwrap(), b"fine data");
    }

    #[test]
    fn payloads_with_impossible_lengths_are_refused_before_allocating() {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let data = b"abc".repeat(100);
        let mut z = vec![CHUNK_ZSTD];
        z.extend(c.compress(&data).unwrap());
        assert_eq!(decode_payload(&z, 300).unwrap(), data);
        for raw_len in [0, 299, 301, MAX_CHUNK_LEN, MAX_CHUNK_LEN + 1, u32::MAX] {
            assert!(decode_payload(&z, raw_len).is_err(), "{raw_len}");
        }
        let mut raw = vec![CHUNK_RAW];
        raw.extend_from_slice(b"xyz");
        assert_eq!(decode_payload(&raw, 3).unwrap(), b"xyz");
        assert!(decode_payload(&raw, 4).is_err());
        assert!(decode_payload(&[], 0).is_err());
        assert!(decode_payload(&[9, 1, 2], 2).is_err());
    }
}
