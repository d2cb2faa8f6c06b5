//! Single flight: at most one load of a chunk at a time; everyone else who wants it waits
//! on that load and shares its outcome (the chunk, or the error as `Arc<RepoError>`).
//!
//! A flight is ended by its [`FlightGuard`]: on success, on error and on unwind, so a
//! panicking loader never leaves waiters hanging (they get an error saying the load was
//! abandoned) and never leaves a stale entry that would make later readers wait forever.
//! The map's lock is never held during a load; a flight's own mutex is taken alone.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use crate::repo::RepoError;
use crate::repo::format::{ChunkId, ChunkRef};
use crate::sync::lock;

use super::{Chunk, FetchError};

#[derive(Default)]
pub struct Flight {
    result: Mutex<Option<Result<Chunk, FetchError>>>,
    done: Condvar,
}

impl Flight {
    /// Waits for the outcome (set by the loader, or by its guard when abandoned).
    pub fn wait(&self) -> Result<Chunk, FetchError> {
        let mut res = lock(&self.result);
        loop {
            if let Some(r) = res.as_ref() {
                return r.clone();
            }
            res = self.done.wait(res).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The loads in flight, by chunk.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<ChunkId, Arc<Flight>>>,
}

/// What [`Flights::join`] found.
pub enum Joined<'a> {
    /// Nobody loads the chunk: the caller does, and ends the flight with the guard.
    Lead(FlightGuard<'a>),
    /// Someone loads it: wait for the outcome.
    Wait(Arc<Flight>),
    /// It turned up meanwhile.
    Ready(Chunk),
}

/// Ends a flight when dropped; see the module documentation.
pub struct FlightGuard<'a> {
    flights: &'a Flights,
    id: ChunkId,
    flight: Arc<Flight>,
}

/// A chunk claimed for loading by one loader, with its flight.
pub type Claim<'a> = (ChunkRef, FlightGuard<'a>);

impl FlightGuard<'_> {
    /// Hands the load's outcome to the waiters and wakes them at once (a grouped load
    /// goes on opening the other chunks of its read meanwhile).
    pub fn finish(&self, result: Result<Chunk, FetchError>) {
        *lock(&self.flight.result) = Some(result);
        self.flight.done.notify_all();
    }

    pub fn flight(&self) -> &Arc<Flight> {
        &self.flight
    }
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        {
            let mut r = lock(&self.flight.result);
            if r.is_none() {
                *r = Some(Err(Arc::new(RepoError::Internal(format!(
                    "the load of chunk {} was abandoned",
                    self.id
                )))));
            }
        }
        self.flight.done.notify_all();
        lock(&self.flights.map).remove(&self.id);
    }
}

impl Flights {
    /// Joins the load of `id`, or starts one. `recheck` looks for the chunk again under
    /// the map's lock (a load may have finished since the caller's first look).
    pub fn join(&self, id: ChunkId, recheck: impl FnOnce() -> Option<Chunk>) -> Joined<'_> {
        let mut map = lock(&self.map);
        if let Some(f) = map.get(&id) {
            return Joined::Wait(f.clone());
        }
        if let Some(c) = recheck() {
            return Joined::Ready(c);
        }
        let flight = Arc::new(Flight::default());
        map.insert(id, flight.clone());
        Joined::Lead(FlightGuard {
            flights: self,
            id,
            flight,
        })
    }

    /// Starts a flight for each chunk of `refs` that `take` accepts and nobody loads:
    /// `take` is called under the map's lock, so that taking a chunk from elsewhere (the
    /// prefetch queue) and starting its flight are one step.
    pub fn claim_many<'a>(
        &'a self,
        refs: &[ChunkRef],
        mut take: impl FnMut(&ChunkRef) -> bool,
    ) -> Vec<Claim<'a>> {
        let mut map = lock(&self.map);
        let mut claimed = Vec::with_capacity(refs.len());
        for r in refs {
            if !take(r) || map.contains_key(&r.id) {
                continue;
            }
            let flight = Arc::new(Flight::default());
            map.insert(r.id, flight.clone());
            claimed.push((
                r.clone(),
                FlightGuard {
                    flights: self,
                    id: r.id,
                    flight,
                },
            ));
        }
        claimed
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        lock(&self.map).contains_key(id)
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.map).is_empty()
    }
}
