//! Reading stored chunks out of packs: the one place that turns a chunk location into a
//! ranged read of the store, and a failed read into a [`RepoError`].
//!
//! Every reader (the chunk cache of the mount, `cat`, restore, check, prune's walk) goes
//! through here, so that a rule about where a chunk lives holds for all of them at once.
//!
//! Trees carry chunk locations and are immutable, so when prune moves the live chunks of
//! a pack it leaves `forward/<old pack>` (a [`Forward`]) saying where each went. A reader
//! reads the location its tree names; only when that pack is gone does it read the
//! forward object, look the chunk up, and read the new location, following further
//! forwards if that pack is gone too (at most [`MAX_HOPS`], never a pack twice). A pack
//! that is gone with no forward covering the chunk is damage, as it always was.
//!
//! Forward objects are cached (a small map, cleared when full). A cached forward can be
//! outdated: a later prune may rewrite `forward/<p>` to point at the chunk's newest home
//! and remove what the old one pointed to. So a chain that fails after using the cache
//! is walked once more reading every forward afresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::format::{ChunkId, ChunkRef, Forward, PackId};
use super::{RepoError, Repository, Result};
use crate::backend::BackendError;

/// The longest chain of forwards a reader follows (a complete prune leaves chains of one;
/// interrupted ones can leave two).
pub const MAX_HOPS: usize = 16;

/// Forward objects kept in memory at most; the map is cleared when it would pass this.
const CACHED_FORWARDS: usize = 256;

/// Forward objects read so far, by removed pack. Lock order: taken alone, never held
/// across a store call.
#[derive(Default)]
pub(crate) struct ForwardCache {
    map: Mutex<HashMap<PackId, Arc<HashMap<ChunkId, ChunkRef>>>>,
}

fn chunk_name(r: &ChunkRef) -> String {
    format!("chunk {} in pack {}", r.id, r.pack.to_hex())
}

/// A failed ranged read: a missing object or range is damage to `what`, anything else a
/// store failure (which may pass).
pub(crate) fn read_error(what: String, e: BackendError) -> RepoError {
    match e {
        BackendError::NotFound { .. } | BackendError::OutOfRange { .. } => {
            RepoError::damaged(what, e.to_string())
        }
        e => RepoError::Backend(e),
    }
}

impl Repository {
    /// The sealed bytes of one chunk, with one ranged read of its pack; when the pack was
    /// removed by prune, from where its forward object says the chunk went. The sealed
    /// bytes are the same wherever the chunk lives (they are bound to the chunk id only).
    pub fn read_sealed(&self, r: &ChunkRef) -> Result<Vec<u8>> {
        self.read_stored(r, 0, r.stored_len as u64)
    }

    /// The stored bytes of frames `first..=last` of a framed chunk (format 5), with one
    /// ranged read, wherever the chunk lives (as [`Repository::read_sealed`]).
    pub fn read_frames(&self, r: &ChunkRef, first: usize, last: usize) -> Result<Vec<u8>> {
        let Some(f) = &r.frames else {
            return Err(RepoError::Internal(format!("chunk {} is not framed", r.id)));
        };
        if first > last || last >= f.count() {
            return Err(RepoError::Internal(format!(
                "frames {first}..={last} of chunk {} of {} frames",
                r.id,
                f.count()
            )));
        }
        let (start, len) = f.span(first, last);
        self.read_stored(r, start, len)
    }

    /// `len` stored bytes from `start` on of chunk `r`, following forwards.
    fn read_stored(&self, r: &ChunkRef, start: u64, len: u64) -> Result<Vec<u8>> {
        let _span = tracing::debug_span!("chunk", id = %r.id, pack = %r.pack.to_hex(), start, len)
            .entered();
        match self.get_stored(r, start, len) {
            Err(BackendError::NotFound { .. }) => {}
            res => return res.map_err(|e| read_error(chunk_name(r), e)),
        }
        match self.read_forwarded(r, start, len, true) {
            Err(first) => match self.read_forwarded(r, start, len, false) {
                Ok(buf) => Ok(buf),
                Err(_) => Err(first),
            },
            ok => ok,
        }
    }

    fn get_stored(
        &self,
        r: &ChunkRef,
        start: u64,
        len: u64,
    ) -> std::result::Result<Vec<u8>, BackendError> {
        self.store()
            .get_range(&r.pack.key(), r.offset as u64 + start, len)
    }

    /// Follows the forwards of `r`'s (gone) pack to a copy that can be read.
    fn read_forwarded(&self, r: &ChunkRef, start: u64, len: u64, cached: bool) -> Result<Vec<u8>> {
        let mut at = r.clone();
        let mut seen = vec![at.pack];
        for _ in 0..MAX_HOPS {
            let Some(next) = self.forwarded(&at, cached)? else {
                return Err(RepoError::damaged(
                    chunk_name(r),
                    format!(
                        "pack {} is gone and no forward object says where the chunk went",
                        at.pack.to_hex()
                    ),
                ));
            };
            if seen.contains(&next.pack) {
                return Err(RepoError::damaged(
                    chunk_name(r),
                    "the forward objects of its pack form a loop",
                ));
            }
            seen.push(next.pack);
            at = next;
            match self.get_stored(&at, start, len) {
                Ok(buf) => return Ok(buf),
                Err(BackendError::NotFound { .. }) => continue,
                Err(e) => return Err(read_error(chunk_name(&at), e)),
            }
        }
        Err(RepoError::damaged(
            chunk_name(r),
            format!("more than {MAX_HOPS} forward objects in a row"),
        ))
    }

    /// Where the forward object of `r.pack` says chunk `r.id` went; `None` when there is no
    /// forward object or it does not name the chunk.
    pub fn forwarded(&self, r: &ChunkRef, cached: bool) -> Result<Option<ChunkRef>> {
        if cached && let Some(f) = self.forwards.map.lock().unwrap().get(&r.pack).cloned() {
            return Ok(f.get(&r.id).cloned());
        }
        let f = match self.load_forward(&r.pack) {
            Ok(f) => f,
            Err(RepoError::Backend(e)) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let map: Arc<HashMap<ChunkId, ChunkRef>> =
            Arc::new(f.moved.iter().map(|m| (m.id, m.clone())).collect());
        let found = map.get(&r.id).cloned();
        let mut cache = self.forwards.map.lock().unwrap();
        if cache.len() >= CACHED_FORWARDS {
            cache.clear();
        }
        cache.insert(r.pack, map);
        Ok(found)
    }

    /// Reads the forward object of a removed pack.
    pub fn load_forward(&self, pack: &PackId) -> Result<Forward> {
        let key = pack.forward_key();
        let f: Forward = self.read_object(&key)?;
        if f.pack != *pack {
            return Err(RepoError::damaged(
                key,
                format!("describes pack {}", f.pack.to_hex()),
            ));
        }
        Ok(f)
    }

    /// Writes (or replaces) the forward object of a pack prune removes. Replacing is safe
    /// for readers: every location a forward object names is durable before it is
    /// written, and a reader whose cached copy led nowhere reads it again.
    pub(crate) fn write_forward(&self, f: &Forward) -> Result<()> {
        self.write_object(&f.pack.forward_key(), f, false)
    }

    /// `len` bytes at `offset` of a pack: several neighbouring chunks in one ranged read.
    /// `Ok(None)` when the pack is gone: the caller then reads chunk by chunk with
    /// [`Repository::read_sealed`], which knows where chunks of a removed pack went.
    pub fn read_pack_span(&self, pack: &PackId, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        let _span = tracing::debug_span!("pack_span", pack = %pack.to_hex(), offset, len).entered();
        match self.store().get_range(&pack.key(), offset, len) {
            Ok(buf) => Ok(Some(buf)),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(read_error(format!("pack {}", pack.to_hex()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::repo::format::{ChunkKind, IndexEntry, PackIndex};

    fn repo() -> Arc<Repository> {
        crate::repo::memory_repo()
    }

    /// Stores `sealed` at `offset` of a new pack (after filler bytes) with its index.
    fn put_pack(repo: &Repository, id: ChunkId, sealed: &[u8], offset: usize) -> ChunkRef {
        let pack = PackId::random();
        let mut data = vec![7u8; offset];
        data.extend_from_slice(sealed);
        repo.store().put(&pack.key(), &data).unwrap();
        let r = ChunkRef {
            id,
            pack,
            offset: offset as u32,
            stored_len: sealed.len() as u32,
            raw_len: 5,
            frames: None,
        };
        repo.write_pack_index(&PackIndex {
            pack,
            entries: vec![IndexEntry {
                id,
                kind: ChunkKind::Data,
                offset: r.offset,
                stored_len: r.stored_len,
                raw_len: 5,
                frames: None,
            }],
        })
        .unwrap();
        r
    }

    /// Moves a chunk as prune does: copy, forward, then the old pack goes.
    fn forward(repo: &Repository, from: &ChunkRef, to: &ChunkRef) {
        repo.write_forward(&Forward {
            pack: from.pack,
            moved: vec![to.clone()],
        })
        .unwrap();
        repo.store().delete(&from.pack.index_key()).unwrap();
        repo.store().delete(&from.pack.key()).unwrap();
    }

    #[test]
    fn reads_follow_forwards_chains_and_rewritten_forwards() {
        let repo = repo();
        let mut c = zstd::bulk::Compressor::new(3).unwrap();
        let id = repo.keys().chunk_id(b"hello");
        let sealed = repo.seal_chunk(&id, b"hello", &mut c);
        let a = put_pack(&repo, id, &sealed, 0);
        assert_eq!(repo.read_chunk(&a).unwrap(), b"hello");

        let b = put_pack(&repo, id, &sealed, 100);
        forward(&repo, &a, &b);
        assert_eq!(repo.read_chunk(&a).unwrap(), b"hello");

        // A chain: b moves on too.
        let c2 = put_pack(&repo, id, &sealed, 33);
        forward(&repo, &b, &c2);
        assert_eq!(repo.read_chunk(&a).unwrap(), b"hello");
        assert_eq!(repo.read_chunk(&b).unwrap(), b"hello");

        // A later prune rewrites a's forward to the newest home and drops b's forward:
        // the cached copy of a's forward (pointing at b) leads nowhere, and the read
        // retries with a fresh one.
        let d = put_pack(&repo, id, &sealed, 9);
        repo.write_forward(&Forward {
            pack: a.pack,
            moved: vec![d.clone()],
        })
        .unwrap();
        repo.store().delete(&b.pack.forward_key()).unwrap();
        repo.store().delete(&c2.pack.key()).unwrap();
        assert_eq!(repo.read_chunk(&a).unwrap(), b"hello");

        // A pack gone with no forward is damage, named.
        repo.store().delete(&d.pack.key()).unwrap();
        let e = repo.read_chunk(&a).unwrap_err();
        assert!(matches!(e, RepoError::Damaged { .. }), "{e}");
        let other = repo.keys().chunk_id(b"other");
        let lost = ChunkRef { id: other, ..a };
        let e = repo.read_sealed(&lost).unwrap_err().to_string();
        assert!(e.contains("no forward object"), "{e}");
    }

    #[test]
    fn a_forward_loop_is_damage_not_a_hang() {
        let repo = repo();
        let id = repo.keys().chunk_id(b"x");
        let p = PackId::random();
        let q = PackId::random();
        let at = |pack| ChunkRef {
            id,
            pack,
            offset: 0,
            stored_len: 40,
            raw_len: 1,
            frames: None,
        };
        repo.write_forward(&Forward {
            pack: p,
            moved: vec![at(q)],
        })
        .unwrap();
        repo.write_forward(&Forward {
            pack: q,
            moved: vec![at(p)],
        })
        .unwrap();
        let e = repo.read_sealed(&at(p)).unwrap_err().to_string();
        assert!(e.contains("loop"), "{e}");
    }
}
