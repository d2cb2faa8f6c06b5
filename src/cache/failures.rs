//! How the cache treats a failed load: errors are classified once, here.
//!
//! - Damage (a chunk that fails authentication or decompression, a pack shorter than its
//!   index says, a chunk whose pack is gone): never remembered, the next read tries again
//!   (the store may have been repaired).
//! - A store that failed to answer (a timeout, a 5xx after the retries): remembered for a
//!   short while per chunk ([`FAILURE_MEMORY`]). The kernel retries a failed read at once
//!   (readahead, then the read itself); without this a stalled store would make every
//!   EIO take twice the store's whole retry budget.
//! - Anything else (a load abandoned by a panicking loader): not remembered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::repo::RepoError;
use crate::repo::format::ChunkId;
use crate::sync::lock;

use super::FetchError;

/// How long a chunk whose load failed in the store (not damage) answers with that error
/// without a new fetch.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(2);

/// What kind of failure a load met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Damage,
    Store,
    Other,
}

/// The one classification of a load's error.
pub fn classify(e: &RepoError) -> Failure {
    match e {
        RepoError::Backend(_) => Failure::Store,
        RepoError::Damaged { .. } => Failure::Damage,
        _ => Failure::Other,
    }
}

/// Recent store failures, by chunk.
pub struct Failures {
    failed: Mutex<HashMap<ChunkId, (Instant, FetchError)>>,
    memory: Duration,
}

impl Failures {
    pub fn new(memory: Duration) -> Failures {
        Failures {
            failed: Mutex::new(HashMap::new()),
            memory,
        }
    }

    /// A store failure of this chunk recent enough to answer for it.
    pub fn recent(&self, id: &ChunkId) -> Option<FetchError> {
        let mut failed = lock(&self.failed);
        let (at, e) = failed.get(id)?;
        if at.elapsed() < self.memory {
            return Some(e.clone());
        }
        failed.remove(id);
        None
    }

    /// Notes a failed load of `id` (only store failures are kept).
    pub fn note(&self, id: ChunkId, e: &FetchError) {
        if self.memory.is_zero() || classify(e) != Failure::Store {
            return;
        }
        let mut failed = lock(&self.failed);
        let keep = self.memory;
        failed.retain(|_, (at, _)| at.elapsed() < keep);
        failed.insert(id, (Instant::now(), e.clone()));
    }
}
