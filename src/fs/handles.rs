//! Open files: what a file handle (`fh`) the kernel holds stands for.
//!
//! A handle is one of: a file of a backup (with its read [`Stream`] for the readahead),
//! a generated file of `.vaultfs/` (its content fixed at open, so that reads of one open
//! agree with each other), or a file being written into `incoming/` (its ingest session).
//! Directories need no handles: they are listed by inode and offset (see `ops.rs`).
//!
//! Handle numbers are never reused during a mount; a handle lives from `open`/`create`
//! to `release`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::control::ingest::IngestSession;
use crate::sync::lock;

use super::readahead::Stream;

/// What a handle stands for.
#[derive(Debug)]
pub enum Open {
    /// A file inside a backup.
    Backup(Stream),
    /// A generated file, with its content as rendered at open.
    Generated(Arc<Vec<u8>>),
    /// A file created in `incoming/`.
    Ingest(Arc<IngestSession>),
}

/// One open file.
#[derive(Debug)]
pub struct Handle {
    pub ino: u64,
    pub open: Open,
}

impl Handle {
    pub fn ingest(&self) -> Option<&Arc<IngestSession>> {
        match &self.open {
            Open::Ingest(s) => Some(s),
            _ => None,
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Handles {
    open: Mutex<HashMap<u64, Arc<Handle>>>,
    next: AtomicU64,
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }
}

impl Handles {
    /// Opens a handle on `ino`; returns its number.
    pub fn insert(&self, ino: u64, open: Open) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.open).insert(fh, Arc::new(Handle { ino, open }));
        fh
    }

    pub fn get(&self, fh: u64) -> Option<Arc<Handle>> {
        lock(&self.open).get(&fh).cloned()
    }

    /// The ingest session behind handle `fh`, if it is one.
    pub fn ingest(&self, fh: u64) -> Option<Arc<IngestSession>> {
        lock(&self.open).get(&fh).and_then(|h| h.ingest().cloned())
    }

    pub fn remove(&self, fh: u64) -> Option<Arc<Handle>> {
        lock(&self.open).remove(&fh)
    }

    /// How many handles are open.
    pub fn len(&self) -> usize {
        lock(&self.open).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
