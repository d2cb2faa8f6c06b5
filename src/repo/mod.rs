//! The repository: its format, and the operations on it.
//!
//! Object keys (see FORMAT.md):
//!
//! | key | what | written |
//! |---|---|---|
//! | `config` | magic, version, KDF parameters, sealed master keys, chunker parameters | once, by `init` |
//! | `packs/<xx>/<pack id>` | sealed chunks back to back | by backups, never modified |
//! | `index/<pack id>` | the chunks of that pack (id, kind, offset, lengths) | right after its pack |
//! | `vaults/<name>` | vault settings | by `vault create/update` |
//! | `points/<vault>/<point>` | a recovery point's manifest | last: its creation is the commit |
//! | `attrs/<vault>/<point>/<t>-<r>` | a point's attributes and status after its commit | create-only, newest wins |
//! | `errors/<vault>/<name>` | the record of a backup that failed once started | create-only |
//! | `forward/<pack id>` | where prune moved the live chunks of a removed pack | by prune |
//! | `resources/<vault>/<name>` | what a vault protects on a host | `resource add/remove` |
//! | `usage/<vault>` | a vault's usage as last computed, for the mount | rewritten |
//! | `locks/<random>` | a writer's lock (host, pid, time) | while a writer runs |
//! | `tasks/<id>` | a task's record: kind, status, progress, heartbeat | by its process while it runs |
//! | `cancels/<id>` | a request that a running task stop | `task cancel` |
//! | `keys/<id>` | one more password's copy of the master keys (format 4, see [`keys`]) | `key add`, `key passwd` |
//!
//! Invariants: a manifest only references chunks whose packs and index objects were
//! durably written before it; nothing except vault settings and locks is ever rewritten;
//! a crash at any moment leaves a repository that `check` passes, with at most some
//! unreferenced packs that the next backup deduplicates against.
//!
//! Readers (listing, `cat`, restore, the mount) need no lock and no index: trees and
//! manifests carry the pack location of every chunk they reference.

pub mod backup;
pub mod cancel;
pub mod check;
pub mod copy;
pub mod crypto;
pub mod dump;
pub mod export;
pub mod failpoint;
pub mod format;
pub mod history;
pub mod image_restore;
pub mod ingest;
pub mod keys;
pub mod lock;
pub mod pack;
pub mod points;
pub mod policy;
pub mod prune;
pub mod read;
pub mod resources;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod tar;
pub mod tasks;
pub mod usage;
pub mod walk;

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::{BackendError, Store};
use crypto::Keys;
use format::*;

/// What can go wrong in the repository layer. Variants name what a person needs.
///
/// Every message carries its cause in its own text (`/srv/x: Permission denied (os error
/// 13)`), and no variant returns that cause again from `source()`: a printer that walks
/// the chain (anyhow's `{:#}`) then says each thing once, and a plain `{}` (logs, task
/// files) still says all of it. The same rule holds for [`BackendError`] and the mount's
/// errors. Display is written out by hand because the `Io` variant's field is named
/// `source`, which `thiserror` would always report as the cause.
#[derive(Debug)]
pub enum RepoError {
    Backend(BackendError),
    WrongPassword(String),
    NotARepository(String),
    AlreadyInitialized(String),
    Config {
        location: String,
        error: ConfigError,
    },
    Damaged {
        object: String,
        reason: String,
    },
    VaultNotFound(String),
    VaultExists(String),
    VaultNotEmpty {
        name: String,
        points: usize,
    },
    PointNotFound {
        vault: String,
        point: String,
    },
    NoPoints(String),
    InvalidVaultName(String),
    /// A path of the machine that could not be read or written; `source` is the error.
    Io {
        path: String,
        source: std::io::Error,
    },
    Locked(String),
    /// Points that may not be deleted until unprotected.
    Protected {
        vault: String,
        points: Vec<String>,
    },
    /// A backup would take the vault's referenced bytes past its quota.
    VaultFull {
        vault: String,
        quota: u64,
        would_be: u64,
    },
    /// A write that needs the current format, in a repository of an older one.
    OldFormat {
        location: String,
        version: u32,
        what: String,
    },
    PathNotFound {
        path: String,
    },
    /// What a person asked for cannot be done as asked (a bad name, a malformed archive,
    /// a bad pattern): the message says what to change.
    BadInput(String),
    /// Something failed inside vaultfs (a worker thread that stopped, a load abandoned):
    /// not the user's doing.
    Internal(String),
    /// The job was cancelled (`vaultfs task cancel`) and stopped before finishing.
    Cancelled,
}

impl std::fmt::Display for RepoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepoError::Backend(e) => e.fmt(f),
            RepoError::WrongPassword(at) => write!(f, "wrong password for the repository at {at}"),
            RepoError::NotARepository(at) => {
                write!(
                    f,
                    "no vaultfs repository at {at} (run `vaultfs init` first)"
                )
            }
            RepoError::AlreadyInitialized(at) => write!(f, "a repository already exists at {at}"),
            RepoError::Config { location, error } => write!(f, "{location}: {error}"),
            RepoError::Damaged { object, reason } => write!(f, "damaged object {object}: {reason}"),
            RepoError::VaultNotFound(v) => write!(f, "vault {v:?} does not exist"),
            RepoError::VaultExists(v) => write!(f, "vault {v:?} already exists"),
            RepoError::VaultNotEmpty { name, points } => write!(
                f,
                "vault {name:?} holds {points} recovery point(s); delete them first or use --force"
            ),
            RepoError::PointNotFound { vault, point } => {
                write!(
                    f,
                    "recovery point {point:?} does not exist in vault {vault:?}"
                )
            }
            RepoError::NoPoints(v) => write!(f, "vault {v:?} has no recovery points"),
            RepoError::InvalidVaultName(v) => write!(
                f,
                "invalid vault name {v:?}: use 1-64 bytes of letters, digits, '.', '_' or '-', not starting with '.'"
            ),
            RepoError::Io { path, source } => write!(f, "{path}: {source}"),
            RepoError::Locked(m) | RepoError::BadInput(m) | RepoError::Internal(m) => {
                f.write_str(m)
            }
            RepoError::Protected { vault, points } => write!(
                f,
                "refusing to delete protected point(s) of vault {vault:?}: {} (unprotect them first with `vaultfs point update {vault} POINT --unprotect`)",
                points.join(", ")
            ),
            RepoError::VaultFull {
                vault,
                quota,
                would_be,
            } => write!(
                f,
                "vault {vault:?} is full: its points would reference {would_be} bytes, over its quota of {quota} bytes (raise it with `vaultfs vault update {vault} --quota SIZE`, or forget and prune points)"
            ),
            RepoError::OldFormat {
                location,
                version,
                what,
            } => write!(
                f,
                "the repository at {location} has format version {version}; {what} needs version {FORMAT_VERSION}: run `vaultfs upgrade` first (vaultfs builds older than format {FORMAT_VERSION} then no longer open it)"
            ),
            RepoError::PathNotFound { path } => write!(f, "{path}: not found in the backup"),
            RepoError::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// No `source()`: each message already says its cause (see [`RepoError`]).
impl std::error::Error for RepoError {}

impl From<BackendError> for RepoError {
    fn from(e: BackendError) -> Self {
        RepoError::Backend(e)
    }
}

impl RepoError {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        RepoError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
    pub fn damaged(object: impl Into<String>, reason: impl Into<String>) -> Self {
        RepoError::Damaged {
            object: object.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// Options for `init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub zstd_level: i32,
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            pack_size: 16 * 1024 * 1024,
            zstd_level: 3,
            kdf: crypto::default_kdf(),
        }
    }
}

/// Chunk payload flags, the first plaintext byte of a sealed chunk (decoded by
/// [`pack::decode_payload`]).
const CHUNK_RAW: u8 = 0;
const CHUNK_ZSTD: u8 = 1;

/// An open repository: a store plus the keys to read it.
pub struct Repository {
    store: Store,
    keys: Keys,
    config: Config,
    /// Forward objects already read (see [`read`]): where chunks of removed packs went.
    forwards: read::ForwardCache,
    /// The format version of the repository's `config` object.
    format: u32,
}

/// What authenticates a format-2 `config` object.
const CONFIG_MAC_PURPOSE: &str = "config object";

/// The bytes of a format-2 `config` object: the signed part and its code.
fn signed_config(keys: &Keys, config: &Config) -> Vec<u8> {
    let mut out = encode_config(config, FORMAT_VERSION);
    let mac = keys.mac(CONFIG_MAC_PURPOSE, &out);
    out.extend_from_slice(&mac);
    out
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.store.location())
            .finish()
    }
}

/// Checks a vault name: 1-64 bytes of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn validate_vault_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok && name != "latest" {
        Ok(())
    } else {
        Err(RepoError::InvalidVaultName(name.to_string()))
    }
}

impl Repository {
    /// Creates a new repository in an empty store.
    pub fn init(store: Store, password: &[u8], opts: InitOptions) -> Result<Arc<Repository>> {
        Repository::init_with_keys(store, password, opts, Keys::generate())
    }

    /// [`Repository::init`] with given master keys (`init --from`: the id key of another
    /// repository, so that both give equal chunks equal ids).
    pub fn init_with_keys(
        store: Store,
        password: &[u8],
        opts: InitOptions,
        keys: Keys,
    ) -> Result<Arc<Repository>> {
        if store.head("config")?.is_some() {
            return Err(RepoError::AlreadyInitialized(store.location()));
        }
        let mut repo_id = [0u8; 16];
        getrandom::getrandom(&mut repo_id).expect("the OS random source failed");
        let config = Config {
            repo_id,
            created_ns: now_ns(),
            kdf: opts.kdf,
            sealed_keys: keys
                .seal_with_password(password, &opts.kdf)
                .map_err(|e| RepoError::BadInput(format!("init: {e}")))?,
            chunker: opts.chunker,
            pack_size: opts.pack_size,
            zstd_level: opts.zstd_level,
        };
        check_config(&config).map_err(|e| RepoError::BadInput(format!("init: {e}")))?;
        match store.put_new("config", &signed_config(&keys, &config)) {
            Ok(()) => {}
            Err(BackendError::AlreadyExists { .. }) => {
                return Err(RepoError::AlreadyInitialized(store.location()));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Arc::new(Repository {
            store,
            keys,
            config,
            format: FORMAT_VERSION,
            forwards: read::ForwardCache::default(),
        }))
    }

    /// Opens an existing repository.
    pub fn open(store: Store, password: &[u8]) -> Result<Arc<Repository>> {
        Self::open_with_key(store, password).map(|(repo, _)| repo)
    }

    /// Opens an existing repository with whichever of its keys the password opens (see
    /// [`keys`]), and says which one.
    pub fn open_with_key(store: Store, password: &[u8]) -> Result<(Arc<Repository>, keys::KeyId)> {
        let raw = match store.get("config") {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => return Err(RepoError::NotARepository(store.location())),
            Err(e) => return Err(e.into()),
        };
        let config_error = |error| RepoError::Config {
            location: store.location(),
            error,
        };
        let file = decode_config(&raw).map_err(config_error)?;
        // Checks the config's code too: a key that opens is one of this repository's.
        let (keys, used) = keys::unlock(&store, &file, &raw, password)?;
        Ok((
            Arc::new(Repository {
                store,
                keys,
                config: file.config,
                format: file.version,
                forwards: read::ForwardCache::default(),
            }),
            used,
        ))
    }

    /// Rewrites a `config` object of an older format (1 or 2) as the current one (the one
    /// object `init` does not write only once); returns the version it had. Nothing else
    /// changes: this format reads every object of the older ones. vaultfs builds that
    /// read only an older format then refuse the repository with a clear error instead
    /// of misreading what the newer one adds (a scheduled point, a vault's policy).
    pub fn upgrade(&self) -> Result<u32> {
        if self.format < FORMAT_VERSION {
            self.store
                .put("config", &signed_config(&self.keys, &self.config))?;
        }
        Ok(self.format)
    }

    /// The repository's format version.
    /// The same repository (keys, settings) over another store: e.g. the store wrapped
    /// so that a task's cancel flag stops its next call. No key derivation again.
    pub fn over_store(&self, store: Store) -> Arc<Repository> {
        Arc::new(Repository {
            store,
            keys: self.keys.clone(),
            config: self.config.clone(),
            forwards: Default::default(),
            format: self.format,
        })
    }

    pub fn format_version(&self) -> u32 {
        self.format
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// Fails unless the repository's format has what `what` writes (a repository of an
    /// older format is read as it is, and upgraded by `vaultfs upgrade`).
    pub fn require_current_format(&self, what: &str) -> Result<()> {
        if self.format >= FORMAT_VERSION {
            return Ok(());
        }
        Err(RepoError::OldFormat {
            location: self.location(),
            version: self.format,
            what: what.to_string(),
        })
    }

    // ---- chunks ----

    /// Compresses (when that helps) and seals a chunk's plaintext, in one buffer.
    pub fn seal_chunk(
        &self,
        id: &ChunkId,
        data: &[u8],
        compressor: &mut zstd::bulk::Compressor<'_>,
    ) -> Vec<u8> {
        self.seal_payload(&id.0, data, compressor)
    }

    /// `seal(flag || payload, aad)`: the payload compressed when that helps.
    fn seal_payload(
        &self,
        aad: &[u8],
        data: &[u8],
        compressor: &mut zstd::bulk::Compressor<'_>,
    ) -> Vec<u8> {
        const HEAD: usize = crypto::NONCE_LEN + 1;
        let bound = zstd::zstd_safe::compress_bound(data.len());
        let mut out = Vec::with_capacity(HEAD + bound.max(data.len()) + crypto::TAG_LEN);
        out.resize(HEAD + bound, 0);
        match compressor.compress_to_buffer(data, &mut out[HEAD..]) {
            Ok(n) if n + 1 < data.len() => {
                out.truncate(HEAD + n);
                out[HEAD - 1] = CHUNK_ZSTD;
            }
            _ => {
                out.truncate(HEAD);
                out[HEAD - 1] = CHUNK_RAW;
                out.extend_from_slice(data);
            }
        }
        self.keys.seal_in_place(&mut out, aad);
        out
    }

    /// Seals a chunk as frames of `frame_size` raw bytes (format 5): each compressed
    /// (when that helps) and sealed on its own under [`crypto::frame_aad`], stored back to
    /// back. Returns the stored bytes and the frame table. `data` must be longer than one
    /// frame and `frame_size` within the bounds readers accept.
    pub fn seal_frames(
        &self,
        id: &ChunkId,
        data: &[u8],
        frame_size: u32,
        compressor: &mut zstd::bulk::Compressor<'_>,
    ) -> (Vec<u8>, Frames) {
        let frames: Vec<&[u8]> = data.chunks(frame_size as usize).collect();
        let n = frames.len() as u32;
        let mut out = Vec::with_capacity(data.len() + frames.len() * (crypto::OVERHEAD + 1));
        let mut lens = Vec::with_capacity(frames.len());
        for (k, frame) in frames.iter().enumerate() {
            let sealed = self.seal_payload(&crypto::frame_aad(id, k as u32, n), frame, compressor);
            lens.push(sealed.len() as u32);
            out.extend_from_slice(&sealed);
        }
        let table = Frames {
            size: frame_size,
            lens: lens.into(),
        };
        (out, table)
    }

    /// Opens, decompresses and verifies a sealed chunk: every frame of a framed one.
    pub fn open_chunk(&self, r: &ChunkRef, stored: &[u8]) -> Result<Vec<u8>> {
        let Some(f) = &r.frames else {
            let name = || format!("chunk {} in pack {}", r.id, r.pack.to_hex());
            let payload = self
                .keys
                .open(stored, &r.id.0)
                .map_err(|_| RepoError::damaged(name(), "authentication failed"))?;
            return pack::decode_payload(&payload, r.raw_len)
                .map_err(|e| RepoError::damaged(name(), e));
        };
        let last = f.count().saturating_sub(1);
        let mut out = Vec::with_capacity(r.raw_len.min(pack::MAX_CHUNK_LEN) as usize);
        for frame in self.open_frames(r, 0, last, stored)? {
            out.extend_from_slice(&frame);
        }
        Ok(out)
    }

    /// Opens frames `first..=last` of a framed chunk from `stored`, their stored bytes
    /// back to back (as one ranged read of [`Frames::span`] returns them). Each frame
    /// must authenticate as frame `k` of `count` of this chunk and decode to its raw
    /// length: a frame moved to another chunk or place, cut short or changed is an error
    /// naming the chunk and the frame.
    pub fn open_frames(
        &self,
        r: &ChunkRef,
        first: usize,
        last: usize,
        stored: &[u8],
    ) -> Result<Vec<Vec<u8>>> {
        let name = || format!("chunk {} in pack {}", r.id, r.pack.to_hex());
        let Some(f) = &r.frames else {
            return Err(RepoError::damaged(name(), "not a framed chunk"));
        };
        if first > last || last >= f.count() {
            return Err(RepoError::Internal(format!(
                "frames {first}..={last} of a chunk of {} frames",
                f.count()
            )));
        }
        let (_, want) = f.span(first, last);
        if stored.len() as u64 != want {
            return Err(RepoError::damaged(
                name(),
                format!(
                    "frames {first}..={last} are {} stored bytes, expected {want}",
                    stored.len()
                ),
            ));
        }
        let n = f.count() as u32;
        let mut at = 0usize;
        let mut out = Vec::with_capacity(last - first + 1);
        for k in first..=last {
            let len = f.lens[k] as usize;
            let blob = &stored[at..at + len];
            at += len;
            let payload = self
                .keys
                .open(blob, &crypto::frame_aad(&r.id, k as u32, n))
                .map_err(|_| {
                    RepoError::damaged(name(), format!("frame {k}: authentication failed"))
                })?;
            let raw = f.raw_range(r.raw_len, k);
            let frame = pack::decode_payload(&payload, raw.len() as u32)
                .map_err(|e| RepoError::damaged(name(), format!("frame {k}: {e}")))?;
            out.push(frame);
        }
        Ok(out)
    }

    /// Fetches one chunk with one ranged read and returns its plaintext.
    pub fn read_chunk(&self, r: &ChunkRef) -> Result<Vec<u8>> {
        let stored = self.read_sealed(r)?;
        self.open_chunk(r, &stored)
    }

    /// Loads a directory tree chunk.
    pub fn load_tree(&self, r: &ChunkRef) -> Result<Tree> {
        let data = self.read_chunk(r)?;
        decode_object(&data).map_err(|e| RepoError::damaged(format!("tree {}", r.id), e))
    }

    /// Loads the top node of a backup.
    pub fn backup_root(&self, b: &BackupEntry) -> Result<Node> {
        let tree = self.load_tree(&b.root)?;
        tree.nodes
            .into_iter()
            .next()
            .ok_or_else(|| RepoError::damaged(format!("tree {}", b.root.id), "empty backup root"))
    }

    // ---- metadata objects ----

    /// The plaintext of a sealed metadata object.
    fn read_plain(&self, key: &str) -> Result<Vec<u8>> {
        let blob = self.store.get(key)?;
        self.keys
            .open(&blob, key.as_bytes())
            .map_err(|_| RepoError::damaged(key, "authentication failed"))
    }

    pub(crate) fn read_object<T: for<'a> serde::Deserialize<'a>>(&self, key: &str) -> Result<T> {
        decode_object(&self.read_plain(key)?).map_err(|e| RepoError::damaged(key, e))
    }

    /// Reads a record of this format, of format 2 (its `T::V2` layout), or of format 1
    /// in its old layout `Old`.
    pub(crate) fn read_record<Old, T>(&self, key: &str) -> Result<T>
    where
        Old: for<'a> serde::Deserialize<'a> + Into<T>,
        T: format::Record,
    {
        decode_record::<Old, T>(&self.read_plain(key)?).map_err(|e| RepoError::damaged(key, e))
    }

    /// Writes a record of this format; `create_only` uses the store's create-if-absent write.
    pub(crate) fn write_record<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        create_only: bool,
    ) -> Result<()> {
        let blob = self.keys.seal(&encode_record(value), key.as_bytes());
        if create_only {
            self.store.put_new(key, &blob)?;
        } else {
            self.store.put(key, &blob)?;
        }
        Ok(())
    }

    fn seal_object<T: serde::Serialize>(&self, key: &str, value: &T) -> Vec<u8> {
        self.keys.seal(&encode_object(value), key.as_bytes())
    }

    /// Writes a metadata object; `create_only` uses the store's create-if-absent write.
    pub(crate) fn write_object<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        create_only: bool,
    ) -> Result<()> {
        let blob = self.seal_object(key, value);
        if create_only {
            self.store.put_new(key, &blob)?;
        } else {
            self.store.put(key, &blob)?;
        }
        Ok(())
    }

    // ---- vaults ----

    pub fn list_vaults(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .list("vaults/")?
            .into_iter()
            .filter_map(|o| o.key.strip_prefix("vaults/").map(str::to_string))
            .filter(|n| !n.contains('/'))
            .collect())
    }

    pub fn load_vault(&self, name: &str) -> Result<Vault> {
        validate_vault_name(name).map_err(|_| RepoError::VaultNotFound(name.to_string()))?;
        match self.read_record::<VaultV1, Vault>(&format!("vaults/{name}")) {
            Err(RepoError::Backend(e)) if e.is_not_found() => {
                Err(RepoError::VaultNotFound(name.to_string()))
            }
            r => r,
        }
    }

    pub fn create_vault(&self, name: &str, description: &str) -> Result<Vault> {
        self.create_vault_with(Vault {
            name: name.to_string(),
            description: description.to_string(),
            created_ns: now_ns(),
            retention: Retention::default(),
            quota: None,
            warn_at: None,
            tags: Vec::new(),
            policy: None,
            policy_applied_ns: None,
            members: Members::default(),
        })
    }

    /// Creates a vault with all its settings (`created_ns` is set to now).
    pub fn create_vault_with(&self, mut vault: Vault) -> Result<Vault> {
        let name = vault.name.clone();
        validate_vault_name(&name)?;
        self.require_current_format("creating a vault")?;
        vault.created_ns = now_ns();
        match self.write_record(&format!("vaults/{name}"), &vault, true) {
            Err(RepoError::Backend(BackendError::AlreadyExists { .. })) => {
                Err(RepoError::VaultExists(name.to_string()))
            }
            r => r.map(|()| vault),
        }
    }

    pub fn update_vault(&self, vault: &Vault) -> Result<()> {
        self.load_vault(&vault.name)?;
        self.require_current_format("changing a vault")?;
        self.write_record(&format!("vaults/{}", vault.name), vault, false)
    }

    /// Deletes a vault; with `force`, its recovery points (and error records) too,
    /// refused before anything is deleted when one is protected. Their data stays until
    /// prune.
    pub fn delete_vault(&self, name: &str, force: bool) -> Result<()> {
        self.load_vault(name)?;
        let points = self.list_points(name)?;
        if !points.is_empty() && !force {
            return Err(RepoError::VaultNotEmpty {
                name: name.to_string(),
                points: points.len(),
            });
        }
        if force {
            self.require_current_format("deleting a vault")?;
        }
        let names: Vec<String> = self
            .point_records(name, true)?
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        // Refuses protected points before deleting anything.
        self.delete_points(name, &names, false)?;
        self.finish_deletions(name)?;
        match self.store.delete(&format!("usage/{name}")) {
            Err(e) if !e.is_not_found() => return Err(e.into()),
            _ => {}
        }
        self.delete_schedule_states(name)?;
        self.store.delete(&format!("vaults/{name}"))?;
        Ok(())
    }

    // ---- recovery points ----

    /// The names of a vault's recovery points, oldest first.
    pub fn list_points(&self, vault: &str) -> Result<Vec<String>> {
        let prefix = format!("points/{vault}/");
        let mut names: Vec<String> = self
            .store
            .list(&prefix)?
            .into_iter()
            .filter_map(|o| o.key.strip_prefix(&prefix).map(str::to_string))
            .collect();
        names.sort_by(|a, b| point_order(a).cmp(&point_order(b)));
        Ok(names)
    }

    pub fn load_manifest(&self, vault: &str, point: &str) -> Result<Manifest> {
        if point.contains('/') || point.starts_with('.') {
            return Err(RepoError::PointNotFound {
                vault: vault.to_string(),
                point: point.to_string(),
            });
        }
        let m: Manifest =
            match self.read_record::<ManifestV1, Manifest>(&format!("points/{vault}/{point}")) {
                Err(RepoError::Backend(e)) if e.is_not_found() => {
                    return Err(RepoError::PointNotFound {
                        vault: vault.to_string(),
                        point: point.to_string(),
                    });
                }
                r => r?,
            };
        Ok(m)
    }

    /// Resolves `latest` (or a name) to a point name.
    pub fn resolve_point(&self, vault: &str, point: &str) -> Result<String> {
        self.load_vault(vault)?;
        if point == "latest" {
            self.list_points(vault)?
                .pop()
                .ok_or_else(|| RepoError::NoPoints(vault.to_string()))
        } else {
            Ok(point.to_string())
        }
    }

    /// Writes a manifest under a fresh name derived from its time; the create-only write
    /// is the commit. Returns the name used.
    pub fn commit_manifest(&self, manifest: &mut Manifest) -> Result<String> {
        self.commit_record("points", manifest)
    }

    /// Writes `manifest` create-only under `<prefix>/<vault>/<fresh name>`.
    pub(crate) fn commit_record(&self, prefix: &str, manifest: &mut Manifest) -> Result<String> {
        self.require_current_format("a backup")?;
        let mut base = point_name(manifest.time_ns);
        if prefix != "points" {
            // Never the name of a point: `point show` and `point delete` find both.
            base.push_str("-error");
        }
        for n in 0..1000 {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            manifest.name = name.clone();
            let key = format!("{prefix}/{}/{}", manifest.vault, name);
            match self.write_record(&key, manifest, true) {
                Ok(()) => return Ok(name),
                Err(RepoError::Backend(BackendError::AlreadyExists { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(RepoError::Internal(
            "too many recovery points in one second".into(),
        ))
    }

    /// Deletes one recovery point (refused when it is protected); its data stays until
    /// prune.
    pub fn delete_point(&self, vault: &str, point: &str) -> Result<()> {
        self.delete_points(vault, &[point.to_string()], false)?;
        Ok(())
    }

    // ---- index ----

    /// Reads one index object.
    pub fn load_pack_index(&self, key: &str) -> Result<PackIndex> {
        self.read_object(key)
    }

    /// Writes the index object of a pack.
    pub(crate) fn write_pack_index(&self, index: &PackIndex) -> Result<()> {
        self.write_object(&index.pack.index_key(), index, false)
    }

    /// Loads every index object into a map from chunk id to its location. Damaged index
    /// objects are reported in the second return value and skipped: their chunks are
    /// then simply stored again.
    pub fn load_index(&self) -> Result<(HashMap<ChunkId, ChunkRef>, Vec<RepoError>)> {
        let mut map = HashMap::new();
        let mut damaged = Vec::new();
        for o in self.store.list("index/")? {
            match self.load_pack_index(&o.key) {
                Ok(idx) => {
                    for e in idx.entries {
                        map.insert(e.id, e.chunk_ref(idx.pack));
                    }
                }
                Err(e) => damaged.push(e),
            }
        }
        Ok((map, damaged))
    }

    /// Follows `path` (components separated by `/`, the first being the backup's name)
    /// in a point. Returns the node; an empty path is an error.
    pub fn find_node(&self, manifest: &Manifest, path: &[u8]) -> Result<Node> {
        let not_found = || RepoError::PathNotFound {
            path: String::from_utf8_lossy(path).into_owned(),
        };
        let mut parts = path.split(|&b| b == b'/').filter(|p| !p.is_empty());
        let first = parts.next().ok_or_else(not_found)?;
        let backup = manifest
            .backups
            .iter()
            .find(|b| b.name == first)
            .ok_or_else(not_found)?;
        let mut node = self.backup_root(backup)?;
        for part in parts {
            let sub = node.subtree.ok_or_else(not_found)?;
            let tree = self.load_tree(&sub)?;
            let i = tree
                .nodes
                .binary_search_by(|n| n.name.as_slice().cmp(part))
                .map_err(|_| not_found())?;
            node = tree.nodes.into_iter().nth(i).expect("index from search");
        }
        Ok(node)
    }

    /// Reads a file node's bytes into `out`, chunk by chunk.
    pub fn read_file(&self, node: &Node, out: &mut dyn std::io::Write) -> Result<()> {
        for e in &node.content {
            match e {
                Extent::Data(r) => {
                    let data = self.read_chunk(r)?;
                    out.write_all(&data)
                        .map_err(|e| RepoError::io("<output>", e))?;
                }
                Extent::Hole(n) => {
                    let zeros = vec![0u8; (*n).min(1 << 20) as usize];
                    let mut left = *n;
                    while left > 0 {
                        let k = left.min(zeros.len() as u64) as usize;
                        out.write_all(&zeros[..k])
                            .map_err(|e| RepoError::io("<output>", e))?;
                        left -= k as u64;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A repository in memory with a cheap password derivation, for unit tests.
#[cfg(test)]
pub(crate) fn memory_repo() -> Arc<Repository> {
    let opts = InitOptions {
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            salt: [1; 16],
        },
        ..Default::default()
    };
    Repository::init(
        Arc::new(crate::backend::memory::MemoryStore::new()),
        b"pw",
        opts,
    )
    .expect("a memory repository")
}

/// Sort key of point names: the time part, then the numeric `-N` suffix.
fn point_order(name: &str) -> (&str, u32) {
    match name.rsplit_once('-') {
        Some((base, n)) if base.ends_with('Z') => (base, n.parse().unwrap_or(0)),
        _ => (name, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vault_names() {
        for ok in ["a", "prod-db", "x.y_z", &"a".repeat(64)] {
            validate_vault_name(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "latest",
            &"a".repeat(65),
            "é",
        ] {
            assert!(validate_vault_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn point_order_handles_suffixes() {
        let mut v = vec![
            "2026-01-01T000001Z",
            "2026-01-01T000000Z-10",
            "2026-01-01T000000Z-2",
            "2026-01-01T000000Z",
        ];
        v.sort_by(|a, b| point_order(a).cmp(&point_order(b)));
        assert_eq!(
            v,
            vec![
                "2026-01-01T000000Z",
                "2026-01-01T000000Z-2",
                "2026-01-01T000000Z-10",
                "2026-01-01T000001Z"
            ]
        );
    }
}
