//! Partial reads of framed chunks (format 5): a read of a few bytes of a chunk sealed as
//! frames fetches and opens only the frames that cover it, with one ranged read for a
//! run of adjacent frames, instead of the whole chunk.
//!
//! [`ChunkCache::get_range`] decides: a chunk sealed whole, one already in memory, being
//! loaded or queued for a prefetcher, one the disk tier holds, a range that covers more
//! than half of a chunk's frames, and a range that starts at the chunk's start (where a
//! sequential reader enters every chunk) are all served by the whole chunk
//! ([`ChunkCache::get`]): a sequential read fetches whole chunks even where the
//! readahead's hints were dropped. Otherwise the frames are loaded and kept in the memory tier,
//! each under its own key ([`frame_key`]), within the same byte budget as chunks; they
//! go through the same single flight (one load per frame at a time) and the same
//! failure memory (by chunk id) as chunks do. The disk tier keeps whole sealed chunks
//! only: what a frame read fetched is not written to it.
//!
//! A caller that holds flights of several frames fetches its own before it waits for
//! anyone else's, so two readers of overlapping runs never wait on each other.

use std::sync::Arc;

use crate::repo::RepoError;
use crate::repo::format::{ChunkId, ChunkRef};

use super::flight::{FlightGuard, Joined};
use super::stats::add;
use super::{Chunk, ChunkCache, FetchError};

/// The key under which the memory tier and the flights hold frame `k` of chunk `id`: a
/// hash of both, domain-separated from chunk ids (which are keyed hashes of plaintext),
/// so it never names a chunk.
pub fn frame_key(id: &ChunkId, k: usize) -> ChunkId {
    let mut h = blake3::Hasher::new_derive_key("vaultfs 2026 frame cache key");
    h.update(&id.0);
    h.update(&(k as u64).to_le_bytes());
    ChunkId(*h.finalize().as_bytes())
}

/// Bytes `a..b` of a chunk as the cache found them: `buf[at..at + (b - a)]`.
pub struct Piece {
    pub buf: Chunk,
    pub at: usize,
}

impl ChunkCache {
    /// Bytes `a..b` (`a < b <= raw_len`) of chunk `r`: from the whole chunk, or from the
    /// frames that cover them (see the module documentation).
    pub fn get_range(&self, r: &ChunkRef, a: u64, b: u64) -> Result<Piece, FetchError> {
        let whole = |c: Chunk| Piece {
            buf: c,
            at: a as usize,
        };
        let Some(f) = &r.frames else {
            return self.get(r).map(whole);
        };
        let (first, last) = f.covering(a, b);
        let most = (last - first + 1) * 2 > f.count();
        // A sequential reader enters every chunk at its start (a random read does so
        // once in 128 reads of 4 KiB of a 512 KiB chunk).
        let sequential = a == 0;
        let on_disk = self.disk.as_ref().is_some_and(|d| d.contains(&r.id));
        if most || sequential || on_disk || self.present_or_loading(&r.id) {
            return self.get(r).map(whole);
        }
        if let Some(e) = self.failures.recent(&r.id) {
            add(&self.stats.failures_remembered, 1);
            return Err(e);
        }
        let frames = self.frames(r, first, last)?;
        let base = f.raw_range(r.raw_len, first).start;
        let at = a as usize - base;
        match frames.as_slice() {
            [one] => Ok(Piece {
                buf: one.clone(),
                at,
            }),
            many => {
                let mut buf = Vec::with_capacity(many.iter().map(|c| c.len()).sum());
                for c in many {
                    buf.extend_from_slice(c);
                }
                Ok(Piece {
                    buf: Arc::new(buf),
                    at,
                })
            }
        }
    }

    /// Frames `first..=last` of framed chunk `r`, in order: from memory, from loads in
    /// flight, or fetched (a run of adjacent missing frames with one ranged read).
    fn frames(&self, r: &ChunkRef, first: usize, last: usize) -> Result<Vec<Chunk>, FetchError> {
        enum Slot<'a> {
            Have(Chunk),
            Wait(Arc<super::flight::Flight>),
            Lead(FlightGuard<'a>),
        }
        let mut slots = Vec::with_capacity(last - first + 1);
        for k in first..=last {
            let key = frame_key(&r.id, k);
            if let Some(c) = self.hit(&key) {
                slots.push(Slot::Have(c));
                continue;
            }
            slots.push(match self.flights.join(key, || self.hit(&key)) {
                Joined::Ready(c) => Slot::Have(c),
                Joined::Wait(f) => {
                    add(&self.stats.waits, 1);
                    Slot::Wait(f)
                }
                Joined::Lead(g) => {
                    add(&self.stats.misses, 1);
                    Slot::Lead(g)
                }
            });
        }
        // Our own loads first, a run of adjacent frames at a time.
        let mut out: Vec<Option<Result<Chunk, FetchError>>> = vec![None; slots.len()];
        let mut i = 0;
        while i < slots.len() {
            if !matches!(slots[i], Slot::Lead(_)) {
                i += 1;
                continue;
            }
            let mut j = i;
            while j + 1 < slots.len() && matches!(slots[j + 1], Slot::Lead(_)) {
                j += 1;
            }
            let loaded = self.load_frames(r, first + i, first + j);
            for (n, slot) in slots[i..=j].iter().enumerate() {
                let Slot::Lead(guard) = slot else { continue };
                let result = match &loaded {
                    Ok(frames) => {
                        let c = Arc::new(frames[n].clone());
                        self.insert(frame_key(&r.id, first + i + n), c.clone());
                        Ok(c)
                    }
                    Err(e) => Err(e.clone()),
                };
                guard.finish(result.clone());
                out[i + n] = Some(result);
            }
            i = j + 1;
        }
        slots
            .into_iter()
            .zip(out)
            .map(|(slot, done)| match (slot, done) {
                (Slot::Have(c), _) => Ok(c),
                (Slot::Wait(f), _) => f.wait(),
                (Slot::Lead(_), Some(result)) => result,
                (Slot::Lead(_), None) => Err(Arc::new(RepoError::Internal(
                    "a frame load was not run".into(),
                ))),
            })
            .collect()
    }

    /// Fetches frames `first..=last` of `r` with one ranged read and opens them.
    fn load_frames(
        &self,
        r: &ChunkRef,
        first: usize,
        last: usize,
    ) -> Result<Vec<Vec<u8>>, FetchError> {
        let f = r.frames.as_ref().expect("only framed chunks get here");
        let (_, len) = f.span(first, last);
        let raw = f.raw_range(r.raw_len, last).end - f.raw_range(r.raw_len, first).start;
        let _held = self.budget.hold(len + raw as u64);
        add(&self.stats.fetches, 1);
        add(&self.stats.frame_fetches, 1);
        let result = self.repo.read_frames(r, first, last).and_then(|stored| {
            add(&self.stats.fetch_bytes, stored.len() as u64);
            self.repo.open_frames(r, first, last, &stored)
        });
        match result {
            Ok(frames) => {
                let n: usize = frames.iter().map(Vec::len).sum();
                add(&self.stats.loaded_bytes, n as u64);
                Ok(frames)
            }
            Err(e) => {
                add(&self.stats.fetch_errors, 1);
                tracing::debug!(chunk = %r.id, "load of frames {first}..={last} failed: {e}");
                let e = Arc::new(e);
                self.failures.note(r.id, &e);
                Err(e)
            }
        }
    }
}
