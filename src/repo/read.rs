//! Reading stored chunks out of packs: the one place that turns a chunk location into a
//! ranged read of the store, and a failed read into a [`RepoError`].
//!
//! Every reader (the chunk cache of the mount, `cat`, restore, check) goes through here,
//! so that a rule about where a chunk lives holds for all of them at once.

use super::format::{ChunkRef, PackId};
use super::{RepoError, Repository, Result};
use crate::backend::BackendError;

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
    /// The sealed bytes of one chunk, with one ranged read of its pack.
    pub fn read_sealed(&self, r: &ChunkRef) -> Result<Vec<u8>> {
        self.store()
            .get_range(&r.pack.key(), r.offset as u64, r.stored_len as u64)
            .map_err(|e| read_error(chunk_name(r), e))
    }

    /// `len` bytes at `offset` of a pack: several neighbouring chunks in one ranged read.
    /// `Ok(None)` when the pack is gone: the caller then reads chunk by chunk with
    /// [`Repository::read_sealed`], which knows where chunks of a removed pack went.
    pub fn read_pack_span(&self, pack: &PackId, offset: u64, len: u64) -> Result<Option<Vec<u8>>> {
        match self.store().get_range(&pack.key(), offset, len) {
            Ok(buf) => Ok(Some(buf)),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(read_error(format!("pack {}", pack.to_hex()), e)),
        }
    }
}
