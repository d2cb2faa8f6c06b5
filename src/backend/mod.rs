//! The storage seam: every repository object goes through [`ObjectStore`].
//!
//! Objects are immutable blobs named by `/`-separated keys (`config`, `packs/ab/<id>`,
//! `index/<id>`, `points/<vault>/<name>`, ...). A store offers whole and ranged reads,
//! plain writes, create-only writes (the commit primitive: it fails with
//! [`BackendError::AlreadyExists`] when the key exists), deletes and listings.
//!
//! Rules every implementation keeps:
//! - a write is durable when it returns (local: temp file, fsync, rename, fsync dir);
//! - a reader never sees a half-written object;
//! - a listing either returns every key under the prefix or fails, never a partial list;
//! - errors name the object and say whether a retry can help ([`BackendError::is_transient`]).
//!
//! The trait is blocking on purpose: the backup pipeline and the FUSE session threads are
//! plain OS threads. Backends that are asynchronous inside (S3) own their runtime.

pub mod counting;
#[cfg(any(test, feature = "fault-injection"))]
pub mod faulty;
pub mod local;
pub mod memory;
#[cfg(feature = "s3")]
pub mod s3;

use std::fmt;
use std::sync::Arc;

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full key, including the listed prefix.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// What went wrong in a backend call. Every variant names the object involved, and says
/// its cause in its own message (no `source()`, so a chain printer says it once).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("object {key} not found")]
    NotFound { key: String },
    #[error("object {key} already exists")]
    AlreadyExists { key: String },
    #[error("range {offset}+{len} of object {key} is out of bounds (object has {size} bytes)")]
    OutOfRange {
        key: String,
        offset: u64,
        len: u64,
        size: u64,
    },
    /// A local I/O error; `key` is the object's path on this machine.
    #[error("{op} {key}: {error}")]
    Io {
        op: &'static str,
        key: String,
        error: std::io::Error,
    },
    #[error("{op} {key}: {message}")]
    Remote {
        op: &'static str,
        key: String,
        message: String,
        /// Whether retrying the same call may succeed (timeouts, 5xx, throttling).
        transient: bool,
    },
}

impl BackendError {
    /// Whether retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            BackendError::NotFound { .. }
            | BackendError::AlreadyExists { .. }
            | BackendError::OutOfRange { .. } => false,
            BackendError::Io { error, .. } => matches!(
                error.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            BackendError::Remote { transient, .. } => *transient,
        }
    }

    /// Whether the error means "the object is not there".
    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound { .. })
    }

    /// Whether the error means the disk or quota is full.
    pub fn is_storage_full(&self) -> bool {
        match self {
            BackendError::Io { error, .. } => {
                error.raw_os_error() == Some(libc::ENOSPC)
                    || error.raw_os_error() == Some(libc::EDQUOT)
            }
            _ => false,
        }
    }
}

pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// A store of immutable objects. See the module documentation for the rules.
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Reads a whole object.
    fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// Reads `len` bytes at `offset`; fails with `OutOfRange` rather than returning less.
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Writes an object, replacing any object of that key. Durable on return.
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Writes an object only if no object of that key exists; `AlreadyExists` otherwise.
    /// Two concurrent callers can never both succeed.
    fn put_new(&self, key: &str, data: &[u8]) -> Result<()>;
    /// Deletes an object; deleting a missing object is not an error.
    fn delete(&self, key: &str) -> Result<()>;
    /// Deletes many objects (missing ones are not an error). Returns the keys that could
    /// not be deleted with why; an `Err` means the whole call failed. Stores with a batch
    /// delete (S3 DeleteObjects) use it; the default deletes one by one.
    fn delete_many(&self, keys: &[String]) -> Result<Vec<(String, BackendError)>> {
        let mut failed = Vec::new();
        for k in keys {
            if let Err(e) = self.delete(k) {
                failed.push((k.clone(), e));
            }
        }
        Ok(failed)
    }
    /// Lists every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// The size of an object, or `None` when it does not exist.
    fn head(&self, key: &str) -> Result<Option<u64>>;
    /// A human-readable location, for messages ("/srv/repo", "s3://bucket/prefix").
    fn location(&self) -> String;
    /// Removes leftovers of interrupted writes older than `older_than` (unfinished S3
    /// multipart uploads); returns how many. Stores without such leftovers have none.
    fn clean_stale_uploads(&self, older_than: std::time::Duration) -> Result<usize> {
        let _ = older_than;
        Ok(0)
    }
}

/// A shared handle on a store.
pub type Store = Arc<dyn ObjectStore>;

/// Settings given on the command line; they override the environment's.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    pub s3_endpoint: Option<String>,
    pub s3_path_style: Option<bool>,
    pub s3_region: Option<String>,
    /// `when_required` (default) or `when_supported`.
    pub s3_checksum: Option<String>,
    /// Create the bucket when it does not exist (for `init`).
    pub create: bool,
}

/// Opens the store a repository address names: a local directory path, or (when built
/// with S3 support) `s3://bucket/prefix`, with settings from the environment.
pub fn open(address: &str) -> std::result::Result<Store, String> {
    open_with(address, &OpenOptions::default())
}

/// Like [`open`], with explicit settings that override the environment's.
///
/// In builds with the `fault-injection` feature (the tests'), when `VAULTFS_FAULTS` is
/// set, the store is wrapped in the fault injector (`faulty::FaultyStore`) with those
/// rules (`;`-separated, see `faulty::Rule`'s `FromStr`): a way to rehearse failures
/// (slow or failing objects) end to end. Other builds ignore the variable.
pub fn open_with(address: &str, opts: &OpenOptions) -> std::result::Result<Store, String> {
    let store: Store = match address.strip_prefix("s3://") {
        Some(rest) => open_s3(rest, opts)?,
        None => Arc::new(local::LocalStore::new(address)),
    };
    with_faults(store)
}

/// Wraps `store` in the fault injector when `VAULTFS_FAULTS` asks for it (builds with
/// the `fault-injection` feature only: the tests').
#[cfg(any(test, feature = "fault-injection"))]
fn with_faults(store: Store) -> std::result::Result<Store, String> {
    match std::env::var("VAULTFS_FAULTS") {
        Ok(spec) if !spec.trim().is_empty() => {
            let faulty = faulty::FaultyStore::new(store);
            for rule in spec.split(';').filter(|r| !r.trim().is_empty()) {
                faulty.add_rule(rule.parse()?);
            }
            tracing::warn!("VAULTFS_FAULTS is set: injecting faults ({spec})");
            Ok(Arc::new(faulty))
        }
        _ => Ok(store),
    }
}

#[cfg(not(any(test, feature = "fault-injection")))]
fn with_faults(store: Store) -> std::result::Result<Store, String> {
    Ok(store)
}

fn open_s3(rest: &str, opts: &OpenOptions) -> std::result::Result<Store, String> {
    #[cfg(feature = "s3")]
    {
        let mut options = s3::S3Options::from_env()?;
        if let Some(e) = &opts.s3_endpoint {
            options.endpoint = Some(e.clone());
        }
        if let Some(p) = opts.s3_path_style {
            options.path_style = Some(p);
        }
        if let Some(r) = &opts.s3_region {
            options.region = Some(r.clone());
        }
        if let Some(c) = &opts.s3_checksum {
            options.checksum = c.parse().map_err(|e| format!("--s3-checksum: {e}"))?;
        }
        let store = if opts.create {
            s3::S3Store::create_bucket_if_missing(rest, options)
        } else {
            s3::S3Store::open(rest, options)
        };
        Ok(Arc::new(store.map_err(|e| e.to_string())?))
    }
    #[cfg(not(feature = "s3"))]
    {
        let _ = (rest, opts);
        Err("this build of vaultfs has no S3 support (built without the `s3` feature)".to_string())
    }
}
