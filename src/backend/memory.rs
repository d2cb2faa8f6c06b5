//! An in-memory object store, for unit tests of the layers above.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{BackendError, ObjectInfo, ObjectStore, Result};

/// Each store is a repository of its own, with a location of its own (`memory:N`): the
/// writer lock of a process is shared per location, so two stores must never look alike.
#[derive(Debug)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    n: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        MemoryStore {
            objects: Mutex::default(),
            n: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces an object's bytes in place: for damage tests.
    pub fn corrupt(&self, key: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let mut objects = self.objects.lock().unwrap();
        f(objects.get_mut(key).expect("no such object"));
    }
}

impl ObjectStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.objects
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .ok_or_else(|| BackendError::NotFound {
                key: key.to_string(),
            })
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let objects = self.objects.lock().unwrap();
        let data = objects.get(key).ok_or_else(|| BackendError::NotFound {
            key: key.to_string(),
        })?;
        let end = offset.checked_add(len).filter(|&e| e <= data.len() as u64);
        match end {
            Some(end) => Ok(data[offset as usize..end as usize].to_vec()),
            None => Err(BackendError::OutOfRange {
                key: key.to_string(),
                offset,
                len,
                size: data.len() as u64,
            }),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.objects
            .lock()
            .unwrap()
            .insert(key.to_string(), data.to_vec());
        Ok(())
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<()> {
        let mut objects = self.objects.lock().unwrap();
        if objects.contains_key(key) {
            return Err(BackendError::AlreadyExists {
                key: key.to_string(),
            });
        }
        objects.insert(key.to_string(), data.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectInfo {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    fn head(&self, key: &str) -> Result<Option<u64>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .map(|v| v.len() as u64))
    }

    fn location(&self) -> String {
        format!("memory:{}", self.n)
    }
}
