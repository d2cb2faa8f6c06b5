//! Keys: the passwords that open a repository.
//!
//! Every password has its own sealed copy of the two master keys, under a key derived
//! from it with Argon2id and a salt of its own (`crypto::PasswordKey`): the copy `init`
//! made, in the `config` object (`config.sealed_keys`, shown as key `config`), and in
//! format 4 one key object `keys/<id>` per password added since (`key add`, `key
//! passwd`). Changing a password seals 64 bytes again; no data is re-encrypted.
//!
//! A key object is plaintext: [`KEY_MAGIC`], the layout byte [`KEY_LAYOUT`],
//! `postcard(KeyFile)`, then a 32-byte code, BLAKE3-keyed under a key derived from the id
//! master key for `key object <id>`: only someone holding the master keys can write a
//! key object that passes, and only under its own id.
//!
//! Opening ([`unlock`]) tries the config's copy first (a repository with one key costs one
//! derivation, as before format 4), then the key objects: those added on this host by
//! this user first, then those of this host, then the newest first. One Argon2id
//! derivation per distinct parameter set (salts are random, so in practice one per copy
//! tried). A copy that opens must also authenticate the `config` object, and a key object
//! its own code: a key object of another repository, or one written without the keys,
//! is skipped with a warning. So is a key object that cannot be read or decoded or whose
//! Argon2id parameters are out of bounds (`crypto::check_kdf`): the other keys still open
//! the repository, and `key list` names the damaged one.
//!
//! Writes (format 4 only; `key remove` and `key passwd` under the writer lock, so two of
//! them cannot each remove the other's last key):
//! - `key add` writes a new key object create-only, under 16 random bytes in hex.
//! - `key remove` refuses to remove the last working copy (the config's counts) and the
//!   copy this process opened the repository with. The config's copy is removed by
//!   rewriting `config` with empty `sealed_keys` (one atomic write, like `upgrade`'s).
//! - `key passwd` writes the new key object first, then removes the old copy: a kill in
//!   between leaves both working, never none.

use std::sync::Arc;

use super::crypto::{self, Keys, PasswordKey};
use super::format::{Config, ConfigError, ConfigFile, KdfParams, KeyFile, decode_config, now_ns};
use super::{CONFIG_MAC_PURPOSE, RepoError, Repository, Result, lock, signed_config};
use crate::backend::{BackendError, Store};

/// First bytes of a key object.
pub const KEY_MAGIC: &[u8; 8] = b"VAULTKEY";
/// The layout byte after the magic: what follows is `postcard(KeyFile)` and the code.
pub const KEY_LAYOUT: u8 = 1;
/// Length of the code that ends a key object.
const KEY_CODE_LEN: usize = 32;
/// Where key objects live.
pub const KEYS_PREFIX: &str = "keys/";

/// Which copy of the master keys: the config's, or a key object's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyId {
    Config,
    Object(String),
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyId::Config => f.write_str("config"),
            KeyId::Object(id) => f.write_str(id),
        }
    }
}

/// What the code of key object `id` authenticates it for.
fn code_purpose(id: &str) -> String {
    format!("key object {id}")
}

/// The bytes of key object `id`.
pub fn encode_key(keys: &Keys, id: &str, file: &KeyFile) -> Vec<u8> {
    let mut out = KEY_MAGIC.to_vec();
    out.push(KEY_LAYOUT);
    postcard::to_io(file, &mut out).expect("in-memory encoding cannot fail");
    let code = keys.mac(&code_purpose(id), &out);
    out.extend_from_slice(&code);
    out
}

/// A decoded key object (its code is checked once the keys it holds are open).
#[derive(Clone, Debug)]
pub struct KeyObject {
    pub id: String,
    pub file: KeyFile,
    code: [u8; KEY_CODE_LEN],
    signed: Vec<u8>,
}

impl KeyObject {
    /// Whether the object's code is the one these master keys give for its id.
    fn authentic(&self, keys: &Keys) -> bool {
        keys.mac(&code_purpose(&self.id), &self.signed) == self.code
    }
}

/// Decodes key object `id`; the error says what is wrong with it. Its Argon2id
/// parameters are checked here, before anything uses them.
pub fn decode_key(id: &str, data: &[u8]) -> Result<KeyObject, String> {
    let head = KEY_MAGIC.len() + 1;
    if data.len() < head + KEY_CODE_LEN || &data[..KEY_MAGIC.len()] != KEY_MAGIC {
        return Err("not a key object (bad magic or too short)".into());
    }
    if data[KEY_MAGIC.len()] != KEY_LAYOUT {
        return Err(format!(
            "unknown key object layout {}",
            data[KEY_MAGIC.len()]
        ));
    }
    let signed = data.len() - KEY_CODE_LEN;
    let file: KeyFile =
        postcard::from_bytes(&data[head..signed]).map_err(|e| format!("undecodable ({e})"))?;
    crypto::check_kdf(&file.kdf).map_err(|e| e.to_string())?;
    Ok(KeyObject {
        id: id.to_string(),
        file,
        code: data[signed..].try_into().map_err(|_| "short code")?,
        signed: data[..signed].to_vec(),
    })
}

/// Whether `name` can be a key object's id (what `add_key` makes: lowercase hex).
fn valid_id(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every key object of the store, each decoded or with why it could not be. Listing
/// failures fail; a missing object (removed since the listing) is left out.
fn read_key_objects(store: &Store) -> Result<Vec<(String, Result<KeyObject, String>)>> {
    let mut out = Vec::new();
    for o in store.list(KEYS_PREFIX)? {
        let Some(id) = o.key.strip_prefix(KEYS_PREFIX) else {
            continue;
        };
        if !valid_id(id) {
            out.push((id.to_string(), Err("not a key object name".to_string())));
            continue;
        }
        match store.get(&o.key) {
            Ok(data) => out.push((id.to_string(), decode_key(id, &data))),
            Err(e) if e.is_not_found() => {}
            Err(e) => out.push((id.to_string(), Err(e.to_string()))),
        }
    }
    Ok(out)
}

/// The user running this process, for `key list`.
fn username() -> String {
    let uid = rustix::process::getuid().as_raw();
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string())
}

/// The order in which key objects are tried: this host and user first, then this
/// host, then the newest first.
fn try_order(objects: &mut [KeyObject]) {
    let (host, user) = (lock::hostname(), username());
    objects.sort_by_key(|o| {
        let here = o.file.hostname == host;
        (
            !(here && o.file.username == user),
            !here,
            std::cmp::Reverse(o.file.created_ns),
        )
    });
}

/// The key derived from `password` with `kdf`, derived once per parameter set.
fn derived<'a>(
    cache: &'a mut Vec<(KdfParams, PasswordKey)>,
    password: &[u8],
    kdf: &KdfParams,
) -> Result<&'a PasswordKey, crypto::KdfError> {
    let i = match cache.iter().position(|(k, _)| k == kdf) {
        Some(i) => i,
        None => {
            cache.push((*kdf, PasswordKey::derive(password, kdf)?));
            cache.len() - 1
        }
    };
    Ok(&cache[i].1)
}

/// Opens the master keys with `password`: the config's copy, then the key objects (see
/// the module documentation). `raw` is the config object as read, `file` its decoding.
pub(super) fn unlock(
    store: &Store,
    file: &ConfigFile,
    raw: &[u8],
    password: &[u8],
) -> Result<(Keys, KeyId)> {
    let config_ok = |keys: &Keys| match file.mac {
        Some((mac, signed)) => keys.mac(CONFIG_MAC_PURPOSE, &raw[..signed]) == mac,
        None => true,
    };
    let mut cache = Vec::new();
    let mut tried = 0usize;
    let config = &file.config;
    if !config.sealed_keys.is_empty() {
        match derived(&mut cache, password, &config.kdf) {
            Ok(pk) => {
                tried += 1;
                if let Ok(keys) = Keys::open_under(&config.sealed_keys, pk) {
                    if !config_ok(&keys) {
                        return Err(RepoError::Config {
                            location: store.location(),
                            error: ConfigError::Tampered,
                        });
                    }
                    return Ok((keys, KeyId::Config));
                }
            }
            Err(e) => tracing::warn!("the config object's key cannot be used ({e})"),
        }
    }
    let mut unusable = Vec::new();
    if file.version >= 4 {
        let mut objects = Vec::new();
        for (id, o) in read_key_objects(store)? {
            match o {
                Ok(o) => objects.push(o),
                Err(e) => {
                    tracing::warn!("skipping key object {KEYS_PREFIX}{id}: {e}");
                    unusable.push(id);
                }
            }
        }
        try_order(&mut objects);
        for o in objects {
            let pk = match derived(&mut cache, password, &o.file.kdf) {
                Ok(pk) => pk,
                Err(e) => {
                    tracing::warn!("skipping key object {KEYS_PREFIX}{}: {e}", o.id);
                    continue;
                }
            };
            tried += 1;
            let Ok(keys) = Keys::open_under(&o.file.sealed_keys, pk) else {
                continue;
            };
            if o.authentic(&keys) && config_ok(&keys) {
                return Ok((keys, KeyId::Object(o.id)));
            }
            tracing::warn!(
                "key object {KEYS_PREFIX}{} opens with this password but is not one of this repository's keys: ignored",
                o.id
            );
        }
    }
    if tried == 0 {
        return Err(RepoError::damaged(
            "config",
            format!(
                "no usable key: the config object holds none{}",
                if unusable.is_empty() {
                    String::new()
                } else {
                    format!(" and key object(s) {} are damaged", unusable.join(", "))
                }
            ),
        ));
    }
    Err(RepoError::WrongPassword(store.location()))
}

/// What `key list` shows of one copy of the master keys.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    pub id: KeyId,
    pub created_ns: Option<i64>,
    /// Where and by whom it was added (unknown for the config's copy).
    pub hostname: Option<String>,
    pub username: Option<String>,
    pub kdf: Option<KdfParams>,
    /// Why this copy cannot open the repository (unreadable, undecodable, parameters
    /// out of bounds, a code that does not authenticate it); None for a working copy.
    pub damaged: Option<String>,
}

impl Repository {
    /// The `config` object as stored now (a key change of another process may have
    /// rewritten it since this one opened), authenticated with this session's keys.
    fn current_config(&self) -> Result<Config> {
        let raw = self.store.get("config")?;
        let error = |error| RepoError::Config {
            location: self.location(),
            error,
        };
        let file = decode_config(&raw).map_err(error)?;
        if let Some((mac, signed)) = file.mac
            && self.keys.mac(CONFIG_MAC_PURPOSE, &raw[..signed]) != mac
        {
            return Err(error(ConfigError::Tampered));
        }
        Ok(file.config)
    }

    /// Every copy of the master keys: the config's (when it still holds one), then the
    /// key objects, oldest first; damaged ones say why.
    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        let config = self.current_config()?;
        if !config.sealed_keys.is_empty() {
            out.push(KeyInfo {
                id: KeyId::Config,
                created_ns: Some(config.created_ns),
                hostname: None,
                username: None,
                kdf: Some(config.kdf),
                damaged: crypto::check_kdf(&config.kdf).err().map(|e| e.to_string()),
            });
        }
        let mut objects: Vec<KeyInfo> = read_key_objects(&self.store)?
            .into_iter()
            .map(|(id, o)| match o {
                Ok(o) => KeyInfo {
                    damaged: (!o.authentic(&self.keys))
                        .then(|| "its authentication code does not match".to_string()),
                    id: KeyId::Object(id),
                    created_ns: Some(o.file.created_ns),
                    hostname: Some(o.file.hostname),
                    username: Some(o.file.username),
                    kdf: Some(o.file.kdf),
                },
                Err(e) => KeyInfo {
                    id: KeyId::Object(id),
                    created_ns: None,
                    hostname: None,
                    username: None,
                    kdf: None,
                    damaged: Some(e),
                },
            })
            .collect();
        objects.sort_by_key(|k| (k.created_ns, k.id.to_string()));
        out.extend(objects);
        Ok(out)
    }

    /// The key `given` names: `config`, a key object's id, or a prefix of exactly one.
    pub fn resolve_key(&self, given: &str) -> Result<KeyId> {
        if given == "config" {
            return Ok(KeyId::Config);
        }
        let ids: Vec<String> = self
            .store
            .list(KEYS_PREFIX)?
            .into_iter()
            .filter_map(|o| o.key.strip_prefix(KEYS_PREFIX).map(str::to_string))
            .collect();
        if let Some(id) = ids.iter().find(|id| *id == given) {
            return Ok(KeyId::Object(id.clone()));
        }
        let matching: Vec<&String> = if given.is_empty() {
            Vec::new()
        } else {
            ids.iter().filter(|id| id.starts_with(given)).collect()
        };
        match matching.as_slice() {
            [one] => Ok(KeyId::Object((*one).clone())),
            [] => Err(RepoError::BadInput(format!(
                "no key {given:?} in the repository at {} (`vaultfs key list` shows them)",
                self.location()
            ))),
            several => Err(RepoError::BadInput(format!(
                "key {given:?} is ambiguous: it starts {}",
                several
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Argon2id parameters for a new key: those of key `like` (else the defaults), with
    /// a fresh random salt.
    pub fn kdf_like(&self, like: &KeyId) -> Result<KdfParams> {
        let fresh = crypto::default_kdf();
        let found = self
            .list_keys()?
            .into_iter()
            .find(|k| &k.id == like)
            .and_then(|k| k.kdf);
        Ok(match found {
            Some(k) => KdfParams {
                salt: fresh.salt,
                ..k
            },
            None => fresh,
        })
    }

    /// Adds a key: a new key object holding the master keys sealed under `password`
    /// with `kdf` (its salt is used as given). Returns the new key's id.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<String> {
        self.require_current_format("adding a key")?;
        if password.is_empty() {
            return Err(RepoError::BadInput(
                "an empty password is not allowed".into(),
            ));
        }
        let pk = PasswordKey::derive(password, &kdf)
            .map_err(|e| RepoError::BadInput(format!("the new key's parameters: {e}")))?;
        let file = KeyFile {
            kdf,
            sealed_keys: self.keys.seal_under(&pk),
            created_ns: now_ns(),
            hostname: lock::hostname(),
            username: username(),
        };
        loop {
            let mut raw = [0u8; 16];
            getrandom::getrandom(&mut raw).expect("the OS random source failed");
            let id = hex::encode(raw);
            let bytes = encode_key(&self.keys, &id, &file);
            match self.store.put_new(&format!("{KEYS_PREFIX}{id}"), &bytes) {
                Ok(()) => return Ok(id),
                // 128 random bits never collide; were they to, another id is drawn.
                Err(BackendError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Removes key `id`. Refused when no other working copy would remain, and when `id`
    /// is `current`, the key this process opened the repository with (as restic does:
    /// open it with another key's password to remove it).
    pub fn remove_key(self: &Arc<Self>, id: &KeyId, current: &KeyId) -> Result<()> {
        self.require_current_format("removing a key")?;
        let _lock = lock::acquire(self, &format!("key remove {id}"))?;
        let keys = self.list_keys()?;
        if !keys.iter().any(|k| &k.id == id) {
            return Err(RepoError::BadInput(format!(
                "no key {id} in the repository at {} (`vaultfs key list` shows them)",
                self.location()
            )));
        }
        if !keys.iter().any(|k| &k.id != id && k.damaged.is_none()) {
            return Err(RepoError::BadInput(format!(
                "refusing to remove key {id}: it is the last key that opens the repository (add another first: `vaultfs key add`)"
            )));
        }
        if id == current {
            return Err(RepoError::BadInput(format!(
                "refusing to remove key {id}: this command opened the repository with it; give another key's password to remove it, or change its password with `vaultfs key passwd`"
            )));
        }
        self.delete_key_copy(id)
    }

    /// Replaces key `current`'s password: a new key object (same Argon2id costs, new
    /// salt), then the old copy removed. Returns the new key's id.
    pub fn change_password(
        self: &Arc<Self>,
        current: &KeyId,
        new_password: &[u8],
    ) -> Result<String> {
        self.require_current_format("changing a password")?;
        let _lock = lock::acquire(self, "key passwd")?;
        let kdf = self.kdf_like(current)?;
        let id = self.add_key(new_password, kdf)?;
        // The new copy is durable: only now may the old one go.
        self.delete_key_copy(current)?;
        Ok(id)
    }

    fn delete_key_copy(&self, id: &KeyId) -> Result<()> {
        match id {
            KeyId::Config => {
                let mut config = self.current_config()?;
                config.sealed_keys.clear();
                self.store
                    .put("config", &signed_config(&self.keys, &config))?;
            }
            KeyId::Object(o) => self.store.delete(&format!("{KEYS_PREFIX}{o}"))?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::memory_repo;

    fn fast(salt: u8) -> KdfParams {
        KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            salt: [salt; 16],
        }
    }

    fn open(repo: &Repository, pw: &[u8]) -> Result<(Arc<Repository>, KeyId)> {
        Repository::open_with_key(repo.store().clone(), pw)
    }

    #[test]
    fn several_passwords_open_one_repository() {
        let repo = memory_repo();
        let second = repo.add_key(b"second", fast(2)).unwrap();
        let (a, used_a) = open(&repo, b"pw").unwrap();
        let (b, used_b) = open(&repo, b"second").unwrap();
        assert_eq!(used_a, KeyId::Config);
        assert_eq!(used_b, KeyId::Object(second.clone()));
        assert_eq!(a.keys().chunk_id(b"x"), b.keys().chunk_id(b"x"));
        assert!(matches!(
            open(&repo, b"neither"),
            Err(RepoError::WrongPassword(_))
        ));
        let listed = repo.list_keys().unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|k| k.damaged.is_none()));
        assert_eq!(repo.resolve_key(&second[..6]).unwrap(), used_b);
    }

    #[test]
    fn passwd_replaces_the_copy_and_the_last_key_stays() {
        let repo = memory_repo();
        let new = repo.change_password(&KeyId::Config, b"new").unwrap();
        assert!(matches!(
            open(&repo, b"pw"),
            Err(RepoError::WrongPassword(_))
        ));
        let (r, used) = open(&repo, b"new").unwrap();
        assert_eq!(used, KeyId::Object(new.clone()));
        assert_eq!(r.list_keys().unwrap().len(), 1);
        let err = r.remove_key(&used, &used).unwrap_err().to_string();
        assert!(err.contains("last key"), "{err}");
        let other = r.add_key(b"other", fast(3)).unwrap();
        let err = r.remove_key(&used, &used).unwrap_err().to_string();
        assert!(err.contains("opened the repository with it"), "{err}");
        let (r2, used2) = open(&repo, b"other").unwrap();
        assert_eq!(used2, KeyId::Object(other));
        r2.remove_key(&used, &used2).unwrap();
        assert!(matches!(
            open(&repo, b"new"),
            Err(RepoError::WrongPassword(_))
        ));
        assert!(open(&repo, b"other").is_ok());
    }

    #[test]
    fn damaged_key_objects_are_skipped_and_named() {
        let repo = memory_repo();
        let id = repo.add_key(b"second", fast(2)).unwrap();
        let key = format!("{KEYS_PREFIX}{id}");
        let good = repo.store().get(&key).unwrap();
        // Out-of-bounds Argon2 parameters must not reach Argon2 (nor allocate 4 TiB).
        let mut file = decode_key(&id, &good).unwrap().file;
        file.kdf.memory_kib = u32::MAX;
        let mut bad = KEY_MAGIC.to_vec();
        bad.push(KEY_LAYOUT);
        postcard::to_io(&file, &mut bad).unwrap();
        bad.extend_from_slice(&[0; 32]);
        for damaged in [bad, good[..20].to_vec(), b"garbage".to_vec()] {
            repo.store().put(&key, &damaged).unwrap();
            assert!(matches!(
                open(&repo, b"second"),
                Err(RepoError::WrongPassword(_))
            ));
            assert!(open(&repo, b"pw").is_ok());
            let listed = repo.list_keys().unwrap();
            assert!(listed[1].damaged.is_some(), "{listed:?}");
        }
        // A key object whose code fails (written without the keys) is not trusted.
        let mut forged = good.clone();
        let n = forged.len();
        forged[n - 1] ^= 1;
        repo.store().put(&key, &forged).unwrap();
        assert!(open(&repo, b"second").is_err());
        repo.store().put(&key, &good).unwrap();
        assert!(open(&repo, b"second").is_ok());
    }
}
