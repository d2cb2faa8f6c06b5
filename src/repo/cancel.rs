//! Stopping a job cleanly: a shared flag, and the two ways a job notices it without
//! every algorithm polling it.
//!
//! - [`Cancel`] is the flag. Jobs that know about it (a backup's walk, file workers and
//!   commit) check it at points where stopping leaves nothing half done: a backup checks
//!   it before every entry it walks, every file it reads and right before its commit, so
//!   a cancelled backup never commits a point.
//! - [`CancellingStore`] wraps a repository's store: once the flag is set, every call
//!   fails, except on the objects a stopping job still needs (its locks, its task record
//!   and cancel request). A job that does not poll the flag (prune, forget, check,
//!   restore) then stops at its next store call, as if the store had failed there; every
//!   such job is safe against a store failing at any call (FORMAT.md's crash argument).
//! - [`CancelRead`] wraps a stream a backup reads (stdin, a command's output, an ingest):
//!   a read once the flag is set fails.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::{BackendError, ObjectInfo, ObjectStore, Result, Store};

/// A cancel flag shared by a job and whoever may stop it.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Cancelled)` once the flag is set.
    pub fn check(&self) -> super::Result<()> {
        if self.is_set() {
            Err(super::RepoError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// A reader that fails once the flag is set.
pub struct CancelRead<R> {
    pub inner: R,
    pub cancel: Cancel,
}

impl<R: Read> Read for CancelRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_set() {
            return Err(std::io::Error::other("cancelled"));
        }
        self.inner.read(buf)
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct CancellingStore {
    inner: Store,
    cancel: Cancel,
}

impl CancellingStore {
    pub fn wrap(inner: Store, cancel: Cancel) -> Store {
        Arc::new(CancellingStore { inner, cancel })
    }

    fn allow(&self, op: &'static str, key: &str) -> Result<()> {
        let exempt = ["locks/", "tasks/", "cancels/"]
            .iter()
            .any(|p| key.starts_with(p));
        if self.cancel.is_set() && !exempt {
            return Err(BackendError::Remote {
                op,
                key: key.to_string(),
                message: "cancelled".into(),
                transient: false,
            });
        }
        Ok(())
    }
}

impl ObjectStore for CancellingStore {
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.allow("get", key)?;
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.allow("get", key)?;
        self.inner.get_range(key, offset, len)
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.allow("put", key)?;
        self.inner.put(key, data)
    }
    fn put_new(&self, key: &str, data: &[u8]) -> Result<()> {
        self.allow("put", key)?;
        self.inner.put_new(key, data)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.allow("delete", key)?;
        self.inner.delete(key)
    }
    fn delete_many(&self, keys: &[String]) -> Result<Vec<(String, BackendError)>> {
        if let Some(k) = keys.first() {
            self.allow("delete", k)?;
        }
        self.inner.delete_many(keys)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.allow("list", prefix)?;
        self.inner.list(prefix)
    }
    fn head(&self, key: &str) -> Result<Option<u64>> {
        self.allow("head", key)?;
        self.inner.head(key)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn clean_stale_uploads(&self, older_than: std::time::Duration) -> Result<usize> {
        self.allow("clean", "uploads")?;
        self.inner.clean_stale_uploads(older_than)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_flag_stops_store_calls_but_not_locks_and_tasks() {
        let cancel = Cancel::default();
        let s = CancellingStore::wrap(
            Arc::new(crate::backend::memory::MemoryStore::new()),
            cancel.clone(),
        );
        s.put("packs/00/a", b"x").unwrap();
        s.put("locks/l", b"x").unwrap();
        cancel.set();
        assert!(s.get("packs/00/a").is_err());
        assert!(s.put("points/v/p", b"x").is_err());
        assert!(s.list("index/").is_err());
        s.delete("locks/l").unwrap();
        s.put("tasks/t", b"r").unwrap();
        assert_eq!(s.head("cancels/t").unwrap(), None);
        assert!(cancel.check().is_err());
        let mut r = CancelRead {
            inner: &b"data"[..],
            cancel,
        };
        assert!(r.read(&mut [0; 4]).is_err());
    }
}
