//! A pass-through store that counts calls and bytes, for `.vaultfs/stats.json` and logs.
//!
//! The counts are of calls made by vaultfs, before any retry inside the backend: an S3
//! request retried after a timeout counts once here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{BackendError, ObjectInfo, ObjectStore, Result, Store};

/// Calls and bytes through a [`CountingStore`].
#[derive(Debug, Default)]
pub struct CallCounts {
    pub get: AtomicU64,
    pub get_range: AtomicU64,
    /// Bytes returned by `get` and `get_range`.
    pub get_bytes: AtomicU64,
    pub put: AtomicU64,
    pub put_bytes: AtomicU64,
    pub delete: AtomicU64,
    /// Batch deletes, and the keys they named.
    pub delete_many: AtomicU64,
    pub delete_many_keys: AtomicU64,
    pub list: AtomicU64,
    pub head: AtomicU64,
    pub errors: AtomicU64,
}

impl CallCounts {
    /// The counts as JSON fields.
    pub fn json(&self) -> serde_json::Value {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "get": l(&self.get),
            "get_range": l(&self.get_range),
            "get_bytes": l(&self.get_bytes),
            "put": l(&self.put),
            "put_bytes": l(&self.put_bytes),
            "delete": l(&self.delete),
            "delete_many": l(&self.delete_many),
            "delete_many_keys": l(&self.delete_many_keys),
            "list": l(&self.list),
            "head": l(&self.head),
            "errors": l(&self.errors),
        })
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct CountingStore {
    inner: Store,
    counts: Arc<CallCounts>,
}

impl CountingStore {
    pub fn new(inner: Store) -> Self {
        CountingStore {
            inner,
            counts: Arc::default(),
        }
    }

    pub fn counts(&self) -> Arc<CallCounts> {
        self.counts.clone()
    }

    fn count<T>(&self, c: &AtomicU64, r: Result<T>) -> Result<T> {
        c.fetch_add(1, Ordering::Relaxed);
        if r.is_err() {
            self.counts.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn got(&self, c: &AtomicU64, r: Result<Vec<u8>>) -> Result<Vec<u8>> {
        if let Ok(v) = &r {
            self.counts
                .get_bytes
                .fetch_add(v.len() as u64, Ordering::Relaxed);
        }
        self.count(c, r)
    }

    fn wrote(&self, data: &[u8], r: Result<()>) -> Result<()> {
        if r.is_ok() {
            self.counts
                .put_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        self.count(&self.counts.put, r)
    }
}

impl ObjectStore for CountingStore {
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.got(&self.counts.get, self.inner.get(key))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.got(
            &self.counts.get_range,
            self.inner.get_range(key, offset, len),
        )
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.wrote(data, self.inner.put(key, data))
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<()> {
        self.wrote(data, self.inner.put_new(key, data))
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.count(&self.counts.delete, self.inner.delete(key))
    }

    fn delete_many(&self, keys: &[String]) -> Result<Vec<(String, BackendError)>> {
        self.counts
            .delete_many_keys
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        let r = self.inner.delete_many(keys);
        if let Ok(failed) = &r {
            self.counts
                .errors
                .fetch_add(failed.len() as u64, Ordering::Relaxed);
        }
        self.count(&self.counts.delete_many, r)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.count(&self.counts.list, self.inner.list(prefix))
    }

    fn head(&self, key: &str) -> Result<Option<u64>> {
        self.count(&self.counts.head, self.inner.head(key))
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn clean_stale_uploads(&self, older_than: std::time::Duration) -> Result<usize> {
        self.inner.clean_stale_uploads(older_than)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryStore;

    #[test]
    fn counts_calls_bytes_and_errors() {
        let s = CountingStore::new(Arc::new(MemoryStore::new()));
        let c = s.counts();
        s.put("a", b"hello").unwrap();
        assert!(s.put_new("a", b"x").is_err());
        assert_eq!(s.get("a").unwrap(), b"hello");
        assert_eq!(s.get_range("a", 1, 3).unwrap(), b"ell");
        assert!(s.get("missing").is_err());
        s.list("").unwrap();
        s.head("a").unwrap();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(l(&c.put), 2);
        assert_eq!(l(&c.put_bytes), 5);
        assert_eq!(l(&c.get), 2);
        assert_eq!(l(&c.get_range), 1);
        assert_eq!(l(&c.get_bytes), 8);
        assert_eq!(l(&c.errors), 2);
        assert_eq!((l(&c.list), l(&c.head)), (1, 1));
        assert_eq!(c.json()["get_bytes"], 8);
        let failed = s.delete_many(&["a".into(), "missing".into()]).unwrap();
        assert!(failed.is_empty());
        assert_eq!((l(&c.delete_many), l(&c.delete_many_keys)), (1, 2));
        assert_eq!(s.head("a").unwrap(), None);
    }
}
