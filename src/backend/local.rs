//! A repository in a local directory: one file per object, keys are relative paths.
//!
//! Writes go to a temporary file in the target directory (`.tmp-<random>`), are fsynced,
//! then renamed into place (or hard-linked, for create-only writes, so that exactly one
//! of two racing writers wins), and the directory is fsynced. Every directory a write
//! goes into is made durable in its parent first, once per store (an fsynced object in
//! a directory whose own entry is not durable vanishes with it in a power cut); also a
//! directory that already exists, since existing proves nothing: a writer killed between
//! its mkdir and the fsync of the parent, or another writer still before that fsync,
//! leaves one whose entry a power cut drops. Likewise a reader does not trust what it
//! sees: an object a killed writer renamed into place before its directory's fsync is
//! visible but not durable, and a prune that deleted a pack because such a forward
//! object exists would leave references to nothing after a power cut. So the first read
//! or listing of a directory by a store fsyncs it and its ancestors up to the root (best
//! effort: a read never fails for it). A delete fsyncs the directory before
//! it returns: prune deletes a pack only once its index's delete is durable, and an index
//! that came back without its pack would let a backup deduplicate against nothing. A
//! crash leaves at most a
//! temporary file behind, which listings ignore and [`ObjectStore::clean_stale_uploads`]
//! removes once it is old. Objects are created readable by their owner only (0600, in
//! directories of 0700): they include the sealed keys, which anyone who can read them
//! could attack offline.
//!
//! Ranged reads keep a small cache of open file handles: packs are read many times (one
//! ranged read per chunk), and objects are immutable, so a handle stays valid; writes and
//! deletes of a key drop its handle.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::num::NonZeroUsize;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{BackendError, ObjectInfo, ObjectStore, Result};

const TMP_PREFIX: &str = ".tmp-";
/// Open handles kept for ranged reads.
const HANDLES: usize = 64;

/// An object store in a local directory.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    handles: Mutex<lru::LruCache<String, Arc<File>>>,
    /// Directories under the root whose entry this store made durable (directories are
    /// never removed, so an entry stays durable).
    durable_dirs: Mutex<HashSet<PathBuf>>,
    /// Directories this store fsynced before reading them: what they list is durable.
    synced_dirs: Mutex<HashSet<PathBuf>>,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore {
            root: root.into(),
            handles: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(HANDLES).expect("non-zero"),
            )),
            durable_dirs: Mutex::new(HashSet::new()),
            synced_dirs: Mutex::new(HashSet::new()),
        }
    }

    /// Fsyncs `dir` and each ancestor up to the root, once per store, so that what a
    /// reader finds there is durable before it acts on it. Errors are ignored (a
    /// read-only file system, a missing directory): reads do not depend on it.
    fn trust_dir(&self, dir: &Path) {
        let mut d = dir;
        loop {
            if !self.synced_dirs.lock().unwrap().contains(d) && sync_dir(d).is_ok() {
                self.synced_dirs.lock().unwrap().insert(d.to_path_buf());
            }
            if d == self.root {
                break;
            }
            match d.parent() {
                Some(p) if p.starts_with(&self.root) => d = p,
                _ => break,
            }
        }
    }

    /// [`Self::trust_dir`] of the directory of `key`.
    fn trust(&self, key: &str) {
        let path = self.path(key);
        self.trust_dir(path.parent().unwrap_or(&self.root));
    }

    fn handle(&self, key: &str) -> Result<Arc<File>> {
        if let Some(f) = self.handles.lock().unwrap().get(key) {
            return Ok(f.clone());
        }
        self.trust(key);
        let f = Arc::new(File::open(self.path(key)).map_err(|e| self.io("open", key, e))?);
        self.handles.lock().unwrap().put(key.to_string(), f.clone());
        Ok(f)
    }

    fn forget(&self, key: &str) {
        self.handles.lock().unwrap().pop(key);
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// An I/O error on `key`, naming the file (`read /srv/repo/config: Not a directory`).
    fn io(&self, op: &'static str, key: &str, error: std::io::Error) -> BackendError {
        if error.kind() == ErrorKind::NotFound {
            BackendError::NotFound {
                key: key.to_string(),
            }
        } else {
            BackendError::Io {
                op,
                key: self.path(key).display().to_string(),
                error,
            }
        }
    }

    /// Creates `dir` and its missing ancestors (mode 0700), and makes the entry of each
    /// directory from `dir` up to the root durable in its parent (an fsync of the parent),
    /// before anything is written into it: once per directory and store. The root's own
    /// entry only when the root is created here.
    fn create_dir_durable(&self, dir: &Path) -> std::io::Result<()> {
        let mut todo = Vec::new();
        let mut d = dir;
        loop {
            if self.durable_dirs.lock().unwrap().contains(d) {
                break;
            }
            let exists = match fs::metadata(d) {
                Ok(_) => true,
                Err(e) if e.kind() == ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            if exists && (d == self.root || !d.starts_with(&self.root)) {
                break;
            }
            todo.push(d);
            match d.parent() {
                Some(p) if !p.as_os_str().is_empty() => d = p,
                _ => break,
            }
        }
        for d in todo.into_iter().rev() {
            match fs::DirBuilder::new().mode(0o700).create(d) {
                // Made before, by this or another writer: its entry may not be durable.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                r => r?,
            }
            if let Some(p) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(p)?;
            }
            self.durable_dirs.lock().unwrap().insert(d.to_path_buf());
        }
        Ok(())
    }

    /// Writes `data` to a fresh temporary file next to `key` and returns its path.
    fn write_temp(&self, key: &str, data: &[u8]) -> Result<(PathBuf, PathBuf)> {
        let target = self.path(key);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        self.create_dir_durable(&dir)
            .map_err(|e| self.io("create directory for", key, e))?;
        let mut suffix = [0u8; 8];
        getrandom::getrandom(&mut suffix).expect("the OS random source failed");
        let tmp = dir.join(format!("{TMP_PREFIX}{}", hex::encode(suffix)));
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(BackendError::Io {
                op: "write",
                key: target.display().to_string(),
                error: e,
            });
        }
        Ok((tmp, dir))
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl ObjectStore for LocalStore {
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.trust(key);
        fs::read(self.path(key)).map_err(|e| self.io("read", key, e))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let f = self.handle(key)?;
        let mut buf = vec![0u8; len as usize];
        match f.read_exact_at(&mut buf, offset) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                Err(BackendError::OutOfRange {
                    key: key.to_string(),
                    offset,
                    len,
                    size,
                })
            }
            Err(e) => Err(self.io("read", key, e)),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.forget(key);
        let (tmp, dir) = self.write_temp(key, data)?;
        if let Err(e) = fs::rename(&tmp, self.path(key)) {
            let _ = fs::remove_file(&tmp);
            return Err(self.io("rename", key, e));
        }
        sync_dir(&dir).map_err(|e| self.io("fsync directory of", key, e))
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<()> {
        let (tmp, dir) = self.write_temp(key, data)?;
        let linked = fs::hard_link(&tmp, self.path(key));
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => sync_dir(&dir).map_err(|e| self.io("fsync directory of", key, e)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(BackendError::AlreadyExists {
                key: key.to_string(),
            }),
            Err(e) => Err(self.io("link", key, e)),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.forget(key);
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("delete", key, e)),
        }
        let dir = path.parent().unwrap_or(&self.root);
        sync_dir(dir).map_err(|e| self.io("fsync directory of", key, e))
    }

    /// Deletes one by one, then fsyncs each directory once: every delete that is not
    /// reported as failed is durable when this returns.
    fn delete_many(&self, keys: &[String]) -> Result<Vec<(String, BackendError)>> {
        let mut failed = Vec::new();
        let mut dirs: std::collections::BTreeMap<PathBuf, Vec<&String>> = Default::default();
        for k in keys {
            self.forget(k);
            let path = self.path(k);
            match fs::remove_file(&path) {
                Ok(()) => dirs
                    .entry(path.parent().unwrap_or(&self.root).to_path_buf())
                    .or_default()
                    .push(k),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => failed.push((k.clone(), self.io("delete", k, e))),
            }
        }
        for (dir, keys) in dirs {
            if let Err(e) = sync_dir(&dir) {
                for k in keys {
                    let error = std::io::Error::new(e.kind(), e.to_string());
                    failed.push((k.clone(), self.io("fsync directory of", k, error)));
                }
            }
        }
        Ok(failed)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // Walk the deepest directory that contains every key with this prefix.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let mut out = Vec::new();
        let mut stack = vec![(self.root.join(dir_part), dir_part.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            self.trust_dir(&dir);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io("list", prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io("list", prefix, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let key = if rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel}/{name}")
                };
                let ft = entry.file_type().map_err(|e| self.io("list", prefix, e))?;
                if ft.is_dir() {
                    if key.starts_with(prefix) || prefix.starts_with(&format!("{key}/")) {
                        stack.push((entry.path(), key));
                    }
                } else if key.starts_with(prefix) {
                    let size = entry
                        .metadata()
                        .map_err(|e| self.io("list", prefix, e))?
                        .len();
                    out.push(ObjectInfo { key, size });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn head(&self, key: &str) -> Result<Option<u64>> {
        self.trust(key);
        match fs::metadata(self.path(key)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("stat", key, e)),
        }
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    /// Removes the temporary files (`.tmp-*`) of writes that a crash or a kill
    /// interrupted, once older than `older_than` (a write in progress is younger).
    fn clean_stale_uploads(&self, older_than: std::time::Duration) -> Result<usize> {
        let mut removed = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(error) => {
                    return Err(BackendError::Io {
                        op: "list",
                        key: dir.display().to_string(),
                        error,
                    });
                }
            };
            for entry in entries.flatten() {
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(entry.path());
                    continue;
                }
                let stale = entry
                    .file_name()
                    .as_encoded_bytes()
                    .starts_with(TMP_PREFIX.as_bytes())
                    && entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= older_than));
                if stale && fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_private_and_stale_temporaries_are_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let s = LocalStore::new(&root);
        s.put("packs/ab/cd", b"x").unwrap();
        s.put_new("config", b"y").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root.join("packs/ab/cd")), 0o600);
        assert_eq!(mode(&root.join("config")), 0o600);
        assert_eq!(mode(&root.join("packs/ab")), 0o700);
        assert_eq!(mode(&root.join("packs")), 0o700);
        assert_eq!(mode(&root), 0o700);
        // A temporary file left by a killed writer: kept while young, removed once old.
        let tmp = root.join("packs/ab/.tmp-0123456789abcdef");
        fs::write(&tmp, b"half").unwrap();
        assert_eq!(
            s.clean_stale_uploads(std::time::Duration::from_secs(3600))
                .unwrap(),
            0
        );
        assert!(tmp.exists());
        assert_eq!(s.clean_stale_uploads(std::time::Duration::ZERO).unwrap(), 1);
        assert!(!tmp.exists());
        assert!(root.join("packs/ab/cd").exists());
    }

    #[test]
    fn put_get_list_and_create_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path());
        s.put("packs/ab/abcd", b"hello world").unwrap();
        s.put("index/1", b"x").unwrap();
        assert_eq!(s.get("packs/ab/abcd").unwrap(), b"hello world");
        assert_eq!(s.get_range("packs/ab/abcd", 6, 5).unwrap(), b"world");
        assert!(matches!(
            s.get_range("packs/ab/abcd", 8, 5),
            Err(BackendError::OutOfRange { .. })
        ));
        assert!(s.get("nope").unwrap_err().is_not_found());
        let keys: Vec<_> = s
            .list("packs/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["packs/ab/abcd"]);
        assert_eq!(s.list("").unwrap().len(), 2);
        s.put_new("points/v/1", b"a").unwrap();
        assert!(matches!(
            s.put_new("points/v/1", b"b"),
            Err(BackendError::AlreadyExists { .. })
        ));
        assert_eq!(s.get("points/v/1").unwrap(), b"a");
        s.delete("points/v/1").unwrap();
        s.delete("points/v/1").unwrap();
        assert_eq!(s.head("points/v/1").unwrap(), None);
    }
}
