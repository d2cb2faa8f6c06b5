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
//! Framed chunks (format 5): a data chunk longer than one frame ([`FRAME_SIZE`] raw
//! bytes) is sealed as a sequence of frames, each compressed and sealed on its own
//! ([`Repository::seal_frames`]), so that a reader of a few bytes fetches and opens one
//! frame, not the whole chunk. Its location carries the frame table. Deduplication is
//! still by chunk id: a chunk stored whole by an older format is never stored again.
//! Tree chunks are always sealed whole (they are read whole).
//!
//! This module also decodes what a pack holds: [`decode_payload`] turns the opened
//! plaintext of a sealed chunk (a flag byte, then the raw or zstd-compressed bytes) into
//! the chunk, refusing a length over [`MAX_CHUNK_LEN`] before allocating for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, bounded};

use super::format::{
    ChunkId, ChunkKind, ChunkRef, Frames, IndexEntry, MAX_FRAME_SIZE, MAX_FRAMES, MIN_FRAME_SIZE,
    PackId, PackIndex,
};
use super::{CHUNK_RAW, CHUNK_ZSTD, RepoError, Repository, Result};

/// The longest chunk (plaintext) a reader accepts. Data chunks are at most the
/// chunker's maximum (16 MiB); a tree chunk holds one directory's entries, and one over
/// 1 GiB (millions of entries) is refused when written too ([`PackWriter::store_chunk`]).
pub const MAX_CHUNK_LEN: u32 = 1 << 30;

/// The raw size of a frame of a framed data chunk (format 5). Measured against 32 and
/// 128 KiB (FORMAT.md, "Format 5"): a cold random 4 KiB read fetches about one frame,
/// and every frame costs 41 bytes of nonce, tag and flag and some compression.
pub const FRAME_SIZE: u32 = 64 << 10;

/// The first format whose data chunks may be framed.
pub const FRAMED_FORMAT: u32 = 5;

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
    /// Raw bytes per frame of the data chunks sealed as frames; 0: every chunk whole.
    frame_size: u32,
    #[cfg(any(test, feature = "fault-injection"))]
    fault: Mutex<Option<CodecFault>>,
}

impl PackWriter {
    /// A writer that deduplicates against `known` (usually [`Repository::load_index`]).
    pub fn new(repo: Arc<Repository>, known: HashMap<ChunkId, ChunkRef>) -> Self {
        let pack_size = repo.config().pack_size as usize;
        let indexed_packs = known.values().map(|r| r.pack).collect();
        let frame_size = match repo.format_version() >= FRAMED_FORMAT {
            true => FRAME_SIZE,
            false => 0,
        };
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
            frame_size,
            #[cfg(any(test, feature = "fault-injection"))]
            fault: Mutex::new(CodecFault::from_env()),
        }
    }

    /// Makes every chunk this writer seals from now on come out wrong, as `fault` says.
    #[cfg(any(test, feature = "fault-injection"))]
    pub fn inject_codec_fault(&self, fault: Option<CodecFault>) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Seals data chunks longer than one frame as frames of `frame_size` raw bytes (0:
    /// every chunk whole), instead of what the repository's format says: for measuring
    /// frame sizes. `frame_size` must be within the bounds readers accept.
    pub fn with_frame_size(mut self, frame_size: u32) -> Self {
        assert!(frame_size == 0 || (MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&frame_size));
        self.frame_size = frame_size;
        self
    }

    /// Compresses and seals a chunk, as frames when it is a data chunk longer than one
    /// frame (through the injected fault, if any).
    fn seal(
        &self,
        id: &ChunkId,
        kind: ChunkKind,
        data: &[u8],
        compressor: &mut zstd::bulk::Compressor<'_>,
    ) -> (Vec<u8>, Option<Arc<Frames>>) {
        let framed = kind == ChunkKind::Data
            && self.frame_size > 0
            && data.len() > self.frame_size as usize
            && data.len().div_ceil(self.frame_size as usize) <= MAX_FRAMES;
        let seal = |data: &[u8], c: &mut zstd::bulk::Compressor<'_>| match framed {
            true => {
                let (sealed, f) = self.repo.seal_frames(id, data, self.frame_size, c);
                (sealed, Some(Arc::new(f)))
            }
            false => (self.repo.seal_chunk(id, data, c), None),
        };
        #[cfg(any(test, feature = "fault-injection"))]
        match *self.fault.lock().unwrap() {
            Some(CodecFault::Compress) => {
                let mut wrong = data.to_vec();
                match wrong.get_mut(data.len() / 2) {
                    Some(b) => *b ^= 0x20,
                    None => wrong.push(0),
                }
                return seal(&wrong, compressor);
            }
            Some(CodecFault::Cipher) => {
                let (mut sealed, f) = seal(data, compressor);
                let at = sealed.len() / 2;
                sealed[at] ^= 0x01;
                return (sealed, f);
            }
            None => {}
        }
        seal(data, compressor)
    }

    /// Opens a chunk just sealed as a reader will (every frame of a framed one), and
    /// compares it with its plaintext.
    fn verify(
        &self,
        id: &ChunkId,
        data: &[u8],
        sealed: &[u8],
        frames: &Option<Arc<Frames>>,
    ) -> Result<()> {
        let r = ChunkRef {
            id: *id,
            pack: PackId([0; 16]),
            offset: 0,
            stored_len: sealed.len() as u32,
            raw_len: data.len() as u32,
            frames: frames.clone(),
        };
        let table = match frames {
            Some(f) => f.check(r.stored_len, r.raw_len),
            None => Ok(()),
        };
        let why = match table
            .map_err(RepoError::Internal)
            .and_then(|()| self.repo.open_chunk(&r, sealed))
        {
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
        self.state.lock().unwrap().known.get(id).cloned()
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
        let (sealed, frames) = self.seal(&id, kind, data, compressor);
        self.verify(&id, data, &sealed, &frames)?;
        self.add(id, kind, data.len() as u32, &sealed, frames)
    }

    /// Appends a sealed chunk (with its frame table when it is framed) unless its id is
    /// already known.
    pub fn add(
        &self,
        id: ChunkId,
        kind: ChunkKind,
        raw_len: u32,
        sealed: &[u8],
        frames: Option<Arc<Frames>>,
    ) -> Result<ChunkRef> {
        let (r, full) = {
            let mut st = self.state.lock().unwrap();
            if let Some(r) = st.known.get(&id) {
                return Ok(r.clone());
            }
            let r = ChunkRef {
                id,
                pack: st.open.id,
                offset: st.open.data.len() as u32,
                stored_len: sealed.len() as u32,
                raw_len,
                frames,
            };
            st.open.data.extend_from_slice(sealed);
            st.open.entries.push(r.index_entry(kind));
            st.known.insert(id, r.clone());
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
    use crate::repo::format::FRAMED;

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

    /// A chunk of `frames` frames of 4 KiB (the smallest frame size), sealed as frames,
    /// and its location.
    fn framed(repo: &Repository, frames: usize) -> (Vec<u8>, ChunkRef, Vec<u8>) {
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let data: Vec<u8> = (0..frames * 4096 - 100)
            .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[(i / 700) % 4] % 7)
            .collect();
        let id = repo.keys().chunk_id(&data);
        let (sealed, f) = repo.seal_frames(&id, &data, 4096, &mut c);
        let r = ChunkRef {
            id,
            pack: PackId::random(),
            offset: 0,
            stored_len: sealed.len() as u32,
            raw_len: data.len() as u32,
            frames: Some(Arc::new(f)),
        };
        (data, r, sealed)
    }

    #[test]
    fn frames_open_alone_and_together() {
        let repo = crate::repo::memory_repo();
        let (data, r, sealed) = framed(&repo, 5);
        let f = r.frames.clone().unwrap();
        f.check(r.stored_len, r.raw_len).unwrap();
        assert_eq!(f.count(), 5);
        assert_eq!(repo.open_chunk(&r, &sealed).unwrap(), data);
        for (first, last) in [(0, 0), (1, 3), (4, 4), (0, 4)] {
            let (start, len) = f.span(first, last);
            let part = &sealed[start as usize..(start + len) as usize];
            let frames = repo.open_frames(&r, first, last, part).unwrap();
            let got: Vec<u8> = frames.concat();
            let want = f.raw_range(r.raw_len, first).start..f.raw_range(r.raw_len, last).end;
            assert_eq!(got, data[want]);
        }
        assert_eq!(f.covering(0, 1), (0, 0));
        assert_eq!(f.covering(4095, 4097), (0, 1));
        assert_eq!(f.covering(16384, data.len() as u64), (4, 4));
    }

    /// A frame moved to another chunk or another place, frames swapped, a chunk cut to
    /// fewer frames, a flipped bit: each is an error that names the chunk, never other
    /// bytes.
    #[test]
    fn frames_moved_swapped_truncated_or_flipped_fail_naming_the_chunk() {
        let repo = crate::repo::memory_repo();
        let (_, r, sealed) = framed(&repo, 4);
        let (_, other, other_sealed) = framed(&repo, 3);
        let f = r.frames.clone().unwrap();
        let lens = f.lens.clone();
        let frame = |s: &[u8], fr: &Frames, k: usize| {
            let (start, len) = fr.span(k, k);
            s[start as usize..(start + len) as usize].to_vec()
        };
        let fails = |r: &ChunkRef, first: usize, last: usize, bytes: &[u8], what: &str| {
            let e = repo
                .open_frames(r, first, last, bytes)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&r.id.to_hex()) && e.contains(what), "{e}");
        };
        // Frame 1 read as frame 2 (lengths patched so that only the seal can tell).
        let one = frame(&sealed, &f, 1);
        let mut moved = r.clone();
        let mut l = lens.to_vec();
        l.swap(1, 2);
        moved.frames = Some(Arc::new(Frames {
            size: f.size,
            lens: l.clone().into(),
        }));
        let swapped = [
            frame(&sealed, &f, 0),
            frame(&sealed, &f, 2),
            one.clone(),
            frame(&sealed, &f, 3),
        ]
        .concat();
        fails(&moved, 2, 2, &one, "frame 2: authentication failed");
        let e = repo.open_chunk(&moved, &swapped).unwrap_err().to_string();
        assert!(
            e.contains(&r.id.to_hex()) && e.contains("authentication"),
            "{e}"
        );
        // A frame of another chunk, at the same index.
        let foreign = frame(&other_sealed, other.frames.as_ref().unwrap(), 0);
        let mut at = r.clone();
        let mut l = lens.to_vec();
        l[0] = foreign.len() as u32;
        at.frames = Some(Arc::new(Frames {
            size: f.size,
            lens: l.into(),
        }));
        fails(&at, 0, 0, &foreign, "frame 0: authentication failed");
        // Cut to three frames: the count is in every frame's seal.
        let mut cut = r.clone();
        cut.frames = Some(Arc::new(Frames {
            size: f.size,
            lens: lens[..3].into(),
        }));
        cut.raw_len = 3 * 4096;
        let (_, three) = f.span(0, 2);
        cut.stored_len = three as u32;
        assert!(
            cut.frames
                .as_ref()
                .unwrap()
                .check(cut.stored_len, cut.raw_len)
                .is_ok()
        );
        let e = repo
            .open_chunk(&cut, &sealed[..three as usize])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&r.id.to_hex()) && e.contains("frame 0: authentication failed"),
            "{e}"
        );
        // Fewer bytes than the frames' span.
        fails(
            &r,
            0,
            1,
            &sealed[..f.span(0, 1).1 as usize - 1],
            "stored bytes",
        );
        // A flipped bit in each frame.
        for k in 0..4 {
            let mut b = frame(&sealed, &f, k);
            let mid = b.len() / 2;
            b[mid] ^= 4;
            fails(&r, k, k, &b, &format!("frame {k}: authentication failed"));
        }
        // The whole chunk opened with the wrong id or as an unframed chunk.
        let mut wrong = r.clone();
        wrong.id = other.id;
        assert!(repo.open_chunk(&wrong, &sealed).is_err());
        let mut whole = r.clone();
        whole.frames = None;
        assert!(repo.open_chunk(&whole, &sealed).is_err());
    }

    /// A location sealed whole encodes exactly as formats 1 to 4 wrote it; a framed one
    /// round-trips; a frame table that cannot describe its chunk does not decode.
    #[test]
    fn locations_keep_the_old_encoding_and_bad_frame_tables_are_refused() {
        let repo = crate::repo::memory_repo();
        let (_, r, _) = framed(&repo, 4);
        let mut old = r.clone();
        old.frames = None;
        let tuple = (old.id, old.pack, old.offset, old.stored_len, old.raw_len);
        assert_eq!(
            postcard::to_stdvec(&old).unwrap(),
            postcard::to_stdvec(&tuple).unwrap()
        );
        assert_eq!(
            postcard::from_bytes::<ChunkRef>(&postcard::to_stdvec(&tuple).unwrap()).unwrap(),
            old
        );
        let enc = postcard::to_stdvec(&r).unwrap();
        assert_eq!(postcard::from_bytes::<ChunkRef>(&enc).unwrap(), r);
        let e = r.index_entry(ChunkKind::Data);
        let enc_e = postcard::to_stdvec(&e).unwrap();
        assert_eq!(postcard::from_bytes::<IndexEntry>(&enc_e).unwrap(), e);
        let f = r.frames.clone().unwrap();
        for (size, lens, stored) in [
            (f.size, f.lens[..3].to_vec(), r.stored_len), // too few frames
            (f.size, f.lens.to_vec(), r.stored_len + 1),  // lengths do not add up
            (1024, f.lens.to_vec(), r.stored_len),        // frame size out of bounds
            (f.size, vec![1, 1, 1, r.stored_len - 3], r.stored_len), // frames too short
            (u32::MAX, f.lens.to_vec(), r.stored_len),
        ] {
            let bad = (
                r.id,
                r.pack,
                r.offset,
                stored,
                r.raw_len | FRAMED,
                size,
                lens,
            );
            let bytes = postcard::to_stdvec(&bad).unwrap();
            assert!(postcard::from_bytes::<ChunkRef>(&bytes).is_err());
        }
        // A huge frame count is refused without allocating for it, and a cut encoding
        // is an error.
        let mut bytes = postcard::to_stdvec(&(
            r.id,
            r.pack,
            r.offset,
            r.stored_len,
            r.raw_len | FRAMED,
            f.size,
        ))
        .unwrap();
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(postcard::from_bytes::<ChunkRef>(&bytes).is_err());
        assert!(postcard::from_bytes::<ChunkRef>(&enc[..enc.len() - 2]).is_err());
    }

    /// A writer of format 5 frames long data chunks (and verifies every frame before
    /// upload), keeps trees and short chunks whole, and deduplicates against a chunk
    /// stored whole by an older format.
    #[test]
    fn the_writer_frames_long_data_chunks_only() {
        let repo = crate::repo::memory_repo();
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let long: Vec<u8> = (0..200_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        let w = PackWriter::new(repo.clone(), HashMap::new());
        let r = w.store_chunk(ChunkKind::Data, &long, &mut c).unwrap();
        let f = r.frames.clone().expect("framed");
        assert_eq!((f.size, f.count()), (FRAME_SIZE, 4));
        let t = w.store_chunk(ChunkKind::Tree, &long[1..], &mut c).unwrap();
        assert!(t.frames.is_none());
        let short = w
            .store_chunk(ChunkKind::Data, &long[..FRAME_SIZE as usize], &mut c)
            .unwrap();
        assert!(short.frames.is_none());
        w.finish().unwrap();
        assert_eq!(repo.read_chunk(&r).unwrap(), long);
        let (index, _) = repo.load_index().unwrap();
        assert_eq!(index[&r.id], r);

        // Stored whole (as format 4 did), then met again by a framing writer.
        let other: Vec<u8> = long.iter().map(|b| b ^ 0x55).collect();
        let old = PackWriter::new(repo.clone(), HashMap::new()).with_frame_size(0);
        let o = old.store_chunk(ChunkKind::Data, &other, &mut c).unwrap();
        old.finish().unwrap();
        assert!(o.frames.is_none());
        let (index, _) = repo.load_index().unwrap();
        let w = PackWriter::new(repo.clone(), index);
        assert_eq!(w.store_chunk(ChunkKind::Data, &other, &mut c).unwrap(), o);
        assert_eq!(w.finish().unwrap().chunks_new, 0);
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
