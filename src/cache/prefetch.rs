//! The prefetch pool's queue: hints of chunks to load in the background, grouped into
//! one ranged read per run of neighbours in a pack.
//!
//! Groups go to the pool's threads through a bounded channel; when the channel is full the
//! hint is dropped (backpressure: prefetching never queues unbounded work or memory).
//! Chunks waiting in the channel are remembered with their group (`queued`), so a hint
//! repeated by every read of a stream is sent once, and a reader that wants a queued
//! chunk before a prefetcher got to it loads the chunk's whole group itself, with the one
//! ranged read the prefetcher would have made: how many reads a run of chunks costs does
//! not depend on how fast the prefetchers are scheduled. A queued chunk leaves the queue
//! and gets its flight in one step ([`Prefetch::claim`]), so exactly one loader takes it.
//!
//! Lock order: `queued`, then the flights' map, then the memory tier.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::repo::format::{ChunkId, ChunkRef};
use crate::sync::lock;

use super::budget::MemTier;
use super::flight::{Claim, Flights};
use super::stats::{CacheStats, add};

/// Largest gap between two chunks of one pack that a grouped prefetch reads through.
pub const COALESCE_GAP: u64 = 64 << 10;
/// Largest span of one grouped prefetch read.
pub const COALESCE_SPAN: u64 = 4 << 20;

/// Chunks of one pack that go out as one ranged read, in pack order.
pub type Group = Arc<[ChunkRef]>;

/// See the module documentation.
#[derive(Default)]
pub struct Prefetch {
    tx: Mutex<Option<crossbeam_channel::Sender<Group>>>,
    /// Chunks handed to the pool and not yet picked up, with the group they went out in.
    queued: Mutex<HashMap<ChunkId, Group>>,
}

/// Groups `wanted` (position of first use, chunk) into runs of neighbours of one pack,
/// whatever their order (files backed up in parallel sit in their pack slightly out of
/// order), each chunk once; the groups in the order of their first use.
pub fn plan(mut wanted: Vec<(usize, ChunkRef)>) -> Vec<Vec<ChunkRef>> {
    wanted.sort_by_key(|(i, r)| (r.pack, r.offset, *i));
    wanted.dedup_by_key(|(_, r)| r.id);
    let mut groups: Vec<(usize, Vec<ChunkRef>)> = Vec::new();
    for (i, r) in wanted {
        let joins = groups.last().and_then(|(_, g)| {
            let (first, last) = (g.first()?, g.last()?);
            let end = last.offset as u64 + last.stored_len as u64;
            let (off, stop) = (r.offset as u64, r.offset as u64 + r.stored_len as u64);
            Some(
                r.pack == last.pack
                    && off >= end
                    && off - end <= COALESCE_GAP
                    && stop - first.offset as u64 <= COALESCE_SPAN,
            )
        });
        match (joins, groups.last_mut()) {
            (Some(true), Some((first_use, g))) => {
                *first_use = (*first_use).min(i);
                g.push(r);
            }
            _ => groups.push((i, vec![r])),
        }
    }
    groups.sort_by_key(|(first_use, _)| *first_use);
    groups.into_iter().map(|(_, g)| g).collect()
}

impl Prefetch {
    /// Starts feeding the pool through `tx`.
    pub fn connect(&self, tx: crossbeam_channel::Sender<Group>) {
        *lock(&self.tx) = Some(tx);
    }

    /// Queues `refs` (soonest needed first) but those `skip` says are cached or loading
    /// and those queued already; a group is dropped when no pool runs or its queue is full.
    pub fn hint(&self, refs: &[ChunkRef], skip: impl Fn(&ChunkId) -> bool, stats: &CacheStats) {
        let tx = lock(&self.tx);
        let Some(tx) = tx.as_ref() else { return };
        let mut queued = lock(&self.queued);
        let wanted = refs
            .iter()
            .cloned()
            .enumerate()
            .filter(|(_, r)| !queued.contains_key(&r.id) && !skip(&r.id))
            .collect();
        for g in plan(wanted) {
            let n = g.len() as u64;
            let g: Group = g.into();
            if tx.try_send(g.clone()).is_ok() {
                queued.extend(g.iter().map(|r| (r.id, g.clone())));
                add(&stats.prefetches_queued, n);
            } else {
                add(&stats.prefetches_dropped, n);
            }
        }
    }

    /// The group a queued chunk went out in.
    pub fn group_of(&self, id: &ChunkId) -> Option<Group> {
        lock(&self.queued).get(id).cloned()
    }

    pub fn is_queued(&self, id: &ChunkId) -> bool {
        lock(&self.queued).contains_key(id)
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.queued).is_empty()
    }

    /// Takes the chunks of `group` that still wait in the queue: each leaves the queue and
    /// gets a flight in one step. Chunks taken by another loader, or in memory, are left
    /// out.
    pub fn claim<'a>(
        &self,
        group: &[ChunkRef],
        flights: &'a Flights,
        mem: &MemTier,
    ) -> Vec<Claim<'a>> {
        let mut queued = lock(&self.queued);
        flights.claim_many(group, |r| {
            queued.remove(&r.id).is_some() && !mem.contains(&r.id)
        })
    }
}
