//! The optional on-disk tier of the chunk cache (`--disk-cache DIR`).
//!
//! Layout: `DIR/<repository id>/<first two hex digits>/<chunk id>`, one file per chunk,
//! holding the chunk exactly as stored in its pack: sealed (encrypted and authenticated
//! with the chunk id as associated data). So the disk tier never holds plaintext, and
//! loading from it verifies the bytes the same way a fetch does; a file that fails is
//! deleted and the chunk fetched again.
//!
//! Everything here is best effort: any I/O failure is a miss (or a skipped store), logged
//! once at debug level, never a failed read. Files are written to a temporary name and
//! renamed, without fsync: a torn file after a crash fails authentication, which is a miss.
//! The tier keeps its total within `limit` bytes, evicting least recently used files; the
//! order survives a remount only as the directory scan order (good enough for a cache).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lru::LruCache;

use crate::repo::format::ChunkId;

struct State {
    lru: LruCache<ChunkId, u64>,
    bytes: u64,
}

/// See the module documentation.
pub struct DiskCache {
    dir: PathBuf,
    limit: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("dir", &self.dir)
            .field("limit", &self.limit)
            .finish()
    }
}

impl DiskCache {
    /// Opens (creating it if needed) the tier for one repository under `dir`, and indexes
    /// the files a previous mount left.
    pub fn open(dir: &Path, repo_id: &[u8; 16], limit: u64) -> std::io::Result<DiskCache> {
        let dir = dir.join(hex::encode(repo_id));
        std::fs::create_dir_all(&dir)?;
        let mut state = State {
            lru: LruCache::unbounded(),
            bytes: 0,
        };
        for sub in std::fs::read_dir(&dir)? {
            let sub = sub?;
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(sub.path())? {
                let f = f?;
                let name = f.file_name();
                let Some(id) = name.to_str().and_then(parse_id) else {
                    // Temporary files of an interrupted write, or strangers: remove.
                    let _ = std::fs::remove_file(f.path());
                    continue;
                };
                let len = f.metadata()?.len();
                state.lru.put(id, len);
                state.bytes += len;
            }
        }
        let cache = DiskCache {
            dir,
            limit,
            state: Mutex::new(state),
        };
        cache.evict();
        Ok(cache)
    }

    fn path(&self, id: &ChunkId) -> PathBuf {
        let h = id.to_hex();
        self.dir.join(&h[..2]).join(h)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Whether the chunk is held (does not touch the LRU order).
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.lock().lru.contains(id)
    }

    /// The sealed chunk, when present with the expected length.
    pub fn get(&self, id: &ChunkId, stored_len: u32) -> Option<Vec<u8>> {
        self.lock().lru.get(id)?;
        match std::fs::read(self.path(id)) {
            Ok(data) if data.len() == stored_len as usize => Some(data),
            Ok(_) => {
                self.remove(id);
                None
            }
            Err(e) => {
                tracing::debug!(chunk = %id, "disk cache read failed (a miss): {e}");
                self.remove(id);
                None
            }
        }
    }

    /// Stores a sealed chunk; failures are logged and ignored.
    pub fn put(&self, id: &ChunkId, sealed: &[u8]) {
        if sealed.len() as u64 > self.limit || self.lock().lru.contains(id) {
            return;
        }
        let path = self.path(id);
        let write = || -> std::io::Result<()> {
            let parent = path.parent().expect("has a parent");
            std::fs::create_dir_all(parent)?;
            let mut rnd = [0u8; 8];
            getrandom::getrandom(&mut rnd).expect("the OS random source failed");
            let tmp = parent.join(format!(".tmp-{}", hex::encode(rnd)));
            let mut f = std::fs::File::create(&tmp)?;
            if let Err(e) = f.write_all(sealed) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            drop(f);
            std::fs::rename(&tmp, &path).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })
        };
        match write() {
            Ok(()) => {
                {
                    let mut st = self.lock();
                    if st.lru.put(*id, sealed.len() as u64).is_none() {
                        st.bytes += sealed.len() as u64;
                    }
                }
                self.evict();
            }
            Err(e) => tracing::debug!(chunk = %id, "disk cache write failed (skipped): {e}"),
        }
    }

    /// Forgets a chunk and deletes its file.
    pub fn remove(&self, id: &ChunkId) {
        {
            let mut st = self.lock();
            if let Some(len) = st.lru.pop(id) {
                st.bytes -= len;
            }
        }
        let _ = std::fs::remove_file(self.path(id));
    }

    fn evict(&self) {
        loop {
            let victim = {
                let mut st = self.lock();
                if st.bytes <= self.limit {
                    return;
                }
                match st.lru.pop_lru() {
                    Some((id, len)) => {
                        st.bytes -= len;
                        id
                    }
                    None => return,
                }
            };
            let _ = std::fs::remove_file(self.path(&victim));
        }
    }
}

fn parse_id(s: &str) -> Option<ChunkId> {
    let v = hex::decode(s).ok()?;
    Some(ChunkId(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_survives_reopen_and_evicts() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<ChunkId> = (0..4u8).map(|i| ChunkId([i; 32])).collect();
        {
            let c = DiskCache::open(dir.path(), &[1; 16], 250).unwrap();
            for (i, id) in ids.iter().enumerate() {
                c.put(id, &[i as u8; 100]);
            }
            assert_eq!(c.bytes(), 200);
            assert!(c.get(&ids[0], 100).is_none());
            assert_eq!(c.get(&ids[3], 100).unwrap(), vec![3u8; 100]);
            // A wrong expected length is a miss and drops the file.
            assert!(c.get(&ids[2], 99).is_none());
            assert_eq!(c.bytes(), 100);
        }
        let c = DiskCache::open(dir.path(), &[1; 16], 250).unwrap();
        assert_eq!(c.get(&ids[3], 100).unwrap(), vec![3u8; 100]);
        // Another repository id sees nothing.
        let other = DiskCache::open(dir.path(), &[2; 16], 250).unwrap();
        assert!(other.get(&ids[3], 100).is_none());
    }
}
