//! Exported point records (`export-record` / `import-record`, Cinder's `export_record`
//! and `import_record`): a point's manifest and attributes, sealed, in a small JSON
//! document that lets the repository bring the point back after its manifest was lost or
//! deleted, as long as prune has not reclaimed its data.
//!
//! The document (FORMAT.md, "Exported point records") is self-describing: a `format`
//! name and `version`, the repository id, the vault, the point and a summary anyone can
//! read; and `sealed`, the part only the repository's keys open: the manifest record
//! bytes and the point's current attributes. The seal's associated data binds it to its
//! purpose, version, repository, vault and point, so a summary field changed by hand, or
//! a sealed part moved into another document, fails to open.
//!
//! Import never makes a point that cannot be read: under the writer lock (the one a
//! backup takes, so prune cannot delete a chunk between the check and the commit) it
//! walks every tree and data chunk the manifest references, resolves each against the
//! index and the packs that exist (through the forwards prune left, as readers do), and
//! refuses, naming the missing chunks, before it writes anything. The manifest is then
//! written create-only under its own name, like a backup's commit: a point of that name
//! already there is a no-op when it is the same point, and refused when it is another.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::format::*;
use super::points::AttrChange;
use super::read::MAX_HOPS;
use super::{RepoError, Repository, Result, lock, validate_vault_name};
use crate::backend::BackendError;

/// The `format` of an exported point record.
pub const RECORD_FORMAT: &str = "vaultfs-point-record";
/// The record version this build writes (and the newest it reads).
pub const RECORD_FILE_VERSION: u32 = 1;
/// The version byte in front of the sealed part's plaintext.
const PAYLOAD_VERSION: u8 = 1;
/// Missing chunks named in a refusal; the rest are counted.
const NAMED_MISSING: usize = 5;

/// The JSON document `export-record` writes. Every field but `sealed` is readable
/// without the key; import trusts only what `sealed` holds (and the fields its
/// associated data binds: version, repository id, vault, point).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordFile {
    pub format: String,
    pub version: u32,
    /// The repository the point is in: 32 hex digits.
    pub repo_id: String,
    pub vault: String,
    pub point: String,
    #[serde(default)]
    pub time: String,
    #[serde(default)]
    pub end_time: String,
    #[serde(default)]
    pub hostname: String,
    /// When the record was exported.
    #[serde(default)]
    pub exported: String,
    #[serde(default)]
    pub backups: Vec<BackupSummary>,
    /// base64 (standard alphabet, padded) of the sealed [`Payload`].
    pub sealed: String,
}

/// One backup of the point, as the record's summary shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    pub name: String,
    pub kind: String,
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub dirs: u64,
    #[serde(default)]
    pub bytes: u64,
}

/// The sealed part's plaintext, after its version byte: records in their own framing
/// (a record version byte, then postcard), so that a later layout of either still
/// decodes as the repository's own objects do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Payload {
    /// The manifest record: what `points/<vault>/<point>` holds once opened.
    manifest: Vec<u8>,
    /// The point's attributes after its commit (its newest `PointUpdate`), if it had any.
    update: Option<Vec<u8>>,
}

/// The associated data of a record's seal.
fn aad(version: u32, repo_id: &str, vault: &str, point: &str) -> Vec<u8> {
    let mut a = b"vaultfs exported point record\0".to_vec();
    for part in [&version.to_string(), repo_id, vault, point] {
        a.extend_from_slice(part.as_bytes());
        a.push(0);
    }
    a
}

/// The record of one point (`latest` allowed) of `vault`.
pub fn export(repo: &Repository, vault: &str, point: &str) -> Result<RecordFile> {
    let rec = repo.point_record(vault, point)?;
    if rec.status == PointStatus::Error {
        return Err(RepoError::BadInput(format!(
            "{vault}/{} is the record of a failed backup, not a point: nothing to export",
            rec.name()
        )));
    }
    let m = &rec.manifest;
    let update = rec.updated_ns.map(|t| PointUpdate {
        time_ns: t,
        hostname: lock::hostname(),
        attrs: rec.attrs.clone(),
        status: PointStatus::Available,
    });
    let payload = Payload {
        manifest: encode_record(m),
        update: update.as_ref().map(encode_record),
    };
    let mut plain = vec![PAYLOAD_VERSION];
    postcard::to_io(&payload, &mut plain).expect("in-memory encoding cannot fail");
    let repo_id = hex::encode(repo.config().repo_id);
    let sealed = repo.keys().seal(
        &plain,
        &aad(RECORD_FILE_VERSION, &repo_id, &m.vault, &m.name),
    );
    Ok(RecordFile {
        format: RECORD_FORMAT.to_string(),
        version: RECORD_FILE_VERSION,
        repo_id,
        vault: m.vault.clone(),
        point: m.name.clone(),
        time: rfc3339(m.time_ns),
        end_time: rfc3339(m.end_ns),
        hostname: m.hostname.clone(),
        exported: rfc3339(now_ns()),
        backups: m
            .backups
            .iter()
            .map(|b| BackupSummary {
                name: printable(&b.name),
                kind: b.kind.as_str().to_string(),
                files: b.stats.files,
                dirs: b.stats.dirs,
                bytes: b.stats.bytes,
            })
            .collect(),
        sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
    })
}

/// What a record holds once opened.
#[derive(Clone, Debug)]
pub struct Opened {
    pub manifest: Manifest,
    /// The attributes the point had when it was exported.
    pub attrs: PointAttrs,
}

/// Parses and opens a record with `repo`'s keys. Nothing here panics on bad input: a
/// document that is not a record, of an unknown version, changed, or sealed by another
/// repository is an error saying which.
pub fn open_record(repo: &Repository, text: &[u8]) -> Result<Opened> {
    let file: RecordFile = serde_json::from_slice(text)
        .map_err(|e| RepoError::BadInput(format!("not a vaultfs point record: {e}")))?;
    if file.format != RECORD_FORMAT {
        return Err(RepoError::BadInput(format!(
            "not a vaultfs point record: its format is {:?}, not {RECORD_FORMAT:?}",
            file.format
        )));
    }
    if file.version != RECORD_FILE_VERSION {
        return Err(RepoError::BadInput(format!(
            "point record version {} is not supported by this vaultfs (it reads version {RECORD_FILE_VERSION})",
            file.version
        )));
    }
    let what = format!("the record of {}/{}", file.vault, file.point);
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(file.sealed.trim())
        .map_err(|e| RepoError::BadInput(format!("{what} is damaged: sealed: {e}")))?;
    let ours = hex::encode(repo.config().repo_id);
    let plain = repo
        .keys()
        .open(
            &sealed,
            &aad(file.version, &file.repo_id, &file.vault, &file.point),
        )
        .map_err(|_| {
            if file.repo_id != ours {
                RepoError::BadInput(format!(
                    "{what} comes from repository {}; the repository at {} (id {ours}) does not \
                     hold its keys and cannot open it: import it into the repository it was \
                     exported from (or a copy of that repository), or copy the point with \
                     `vaultfs copy --from`",
                    file.repo_id,
                    repo.location()
                ))
            } else {
                RepoError::BadInput(format!(
                    "{what} failed authentication: it was changed or damaged"
                ))
            }
        })?;
    let damaged = |why: String| RepoError::BadInput(format!("{what} is damaged: {why}"));
    let payload: Payload = match plain.split_first() {
        Some((&PAYLOAD_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| damaged(format!("undecodable ({e})")))?
        }
        Some((v, _)) => return Err(damaged(format!("unknown payload version {v}"))),
        None => return Err(damaged("empty payload".into())),
    };
    let manifest = decode_record::<ManifestV1, Manifest>(&payload.manifest)
        .map_err(|e| damaged(format!("manifest: {e}")))?;
    if manifest.vault != file.vault || manifest.name != file.point {
        return Err(damaged(format!(
            "it holds the manifest of {}/{}",
            manifest.vault, manifest.name
        )));
    }
    if manifest.status != PointStatus::Available
        || manifest.name.is_empty()
        || manifest.name.contains('/')
        || manifest.name.starts_with('.')
    {
        return Err(damaged(format!(
            "it does not hold a point ({:?}, status {})",
            manifest.name,
            manifest.status.as_str()
        )));
    }
    let attrs = match &payload.update {
        Some(u) => {
            decode_record::<PointUpdate, PointUpdate>(u)
                .map_err(|e| damaged(format!("attributes: {e}")))?
                .attrs
        }
        None => manifest.attrs.clone(),
    };
    Ok(Opened { manifest, attrs })
}

/// Settings of one import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Import under this vault instead of the record's (created when missing, as the
    /// record's own vault is).
    pub vault: Option<String>,
    /// How long to wait for another writer (a prune, a backup) to release the lock.
    pub lock_wait: Duration,
}

/// What an import did.
#[derive(Clone, Debug, Serialize)]
pub struct ImportReport {
    pub vault: String,
    pub point: String,
    /// The vault did not exist and was created.
    pub vault_created: bool,
    /// The same point was already there: nothing was written.
    pub already_present: bool,
    /// Distinct tree and data chunks checked.
    pub trees: u64,
    pub chunks: u64,
}

/// Brings back the point a record describes (see the module documentation).
pub fn import(repo: &Arc<Repository>, text: &[u8], opts: &ImportOptions) -> Result<ImportReport> {
    let opened = open_record(repo, text)?;
    let mut manifest = opened.manifest;
    let vault = opts.vault.clone().unwrap_or_else(|| manifest.vault.clone());
    validate_vault_name(&vault)?;
    repo.require_current_format("importing a point")?;
    let point = manifest.name.clone();
    let _lock = lock::acquire_shared_wait(
        repo,
        &format!("import-record {vault}/{point}"),
        opts.lock_wait,
    )?;
    manifest.vault = vault.clone();
    let mut report = ImportReport {
        vault: vault.clone(),
        point: point.clone(),
        vault_created: false,
        already_present: false,
        trees: 0,
        chunks: 0,
    };
    // A deletion of a point of this name that a crash interrupted is finished first: its
    // `deleting` update would otherwise hide the imported point.
    repo.finish_deletions(&vault)?;
    if let Some(existing) = existing_point(repo, &vault, &point)? {
        same_or_refuse(&existing, &manifest)?;
        report.already_present = true;
        return Ok(report);
    }
    let found = verify(repo, &manifest)?;
    report.trees = found.trees;
    report.chunks = found.chunks;
    if !found.missing.is_empty() {
        return Err(RepoError::BadInput(format!(
            "cannot import {vault}/{point}: {} of its chunks are not in the repository at {} \
             (removed by prune, or never there): {}; nothing was written",
            found.missing.len(),
            repo.location(),
            name_missing(&found.missing)
        )));
    }
    report.vault_created = ensure_vault(repo, &vault)?;
    let key = format!("points/{vault}/{point}");
    match repo.write_record(&key, &manifest, true) {
        Ok(()) => {}
        Err(RepoError::Backend(BackendError::AlreadyExists { .. })) => {
            // Committed meanwhile by another process of this host (sharing our lock).
            if let Some(existing) = existing_point(repo, &vault, &point)? {
                same_or_refuse(&existing, &manifest)?;
                report.already_present = true;
                return Ok(report);
            }
        }
        Err(e) => return Err(e),
    }
    set_attrs(repo, &vault, &point, &manifest.attrs, &opened.attrs)?;
    Ok(report)
}

/// The manifest of `vault/point` when it exists.
fn existing_point(repo: &Repository, vault: &str, point: &str) -> Result<Option<Manifest>> {
    match repo.load_manifest(vault, point) {
        Ok(m) => Ok(Some(m)),
        Err(RepoError::PointNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn same_or_refuse(existing: &Manifest, wanted: &Manifest) -> Result<()> {
    if existing == wanted {
        return Ok(());
    }
    Err(RepoError::BadInput(format!(
        "vault {:?} already holds another point named {}: import the record into another vault with --vault",
        wanted.vault, wanted.name
    )))
}

/// Creates `vault` with default settings unless it exists; true when it was created.
pub(crate) fn ensure_vault(repo: &Repository, vault: &str) -> Result<bool> {
    match repo.load_vault(vault) {
        Ok(_) => Ok(false),
        Err(RepoError::VaultNotFound(_)) => match repo.create_vault(vault, "") {
            Ok(_) => Ok(true),
            Err(RepoError::VaultExists(_)) => Ok(false),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Gives a committed point the attributes `want` when its manifest says `committed`
/// (a point update, as `point update` writes).
pub(crate) fn set_attrs(
    repo: &Repository,
    vault: &str,
    point: &str,
    committed: &PointAttrs,
    want: &PointAttrs,
) -> Result<()> {
    if committed == want {
        return Ok(());
    }
    let change = AttrChange {
        description: Some(want.description.clone()),
        add_tags: want.tags.clone(),
        remove_tags: committed.tags.clone(),
        protected: Some(want.protected),
        expires_ns: Some(want.expires_ns),
    };
    repo.update_point(vault, point, &change)?;
    Ok(())
}

/// A chunk a manifest references that the repository does not hold.
#[derive(Clone, Debug)]
pub struct Missing {
    pub chunk: ChunkRef,
    pub kind: ChunkKind,
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default)]
pub struct Found {
    pub trees: u64,
    pub chunks: u64,
    pub missing: Vec<Missing>,
}

fn name_missing(missing: &[Missing]) -> String {
    let mut names: Vec<String> = missing
        .iter()
        .take(NAMED_MISSING)
        .map(|m| {
            format!(
                "{} chunk {} (pack {})",
                match m.kind {
                    ChunkKind::Data => "data",
                    ChunkKind::Tree => "tree",
                },
                m.chunk.id,
                m.chunk.pack.to_hex()
            )
        })
        .collect();
    if missing.len() > NAMED_MISSING {
        names.push(format!("and {} more", missing.len() - NAMED_MISSING));
    }
    names.join(", ")
}

/// The indexed copies of a repository and its packs, for [`verify`].
struct Held {
    packs: HashSet<PackId>,
    /// (pack, chunk id, offset) -> (stored length, raw length).
    indexed: HashMap<(PackId, ChunkId, u32), (u32, u32)>,
}

impl Held {
    fn load(repo: &Repository) -> Result<Held> {
        let mut packs = HashSet::new();
        for o in repo.store().list("packs/")? {
            if let Some(id) = o.key.rsplit('/').next().and_then(PackId::from_hex)
                && o.key == id.key()
            {
                packs.insert(id);
            }
        }
        let mut indexed = HashMap::new();
        for o in repo.store().list("index/")? {
            match repo.load_pack_index(&o.key) {
                Ok(idx) if o.key == idx.pack.index_key() => {
                    for e in idx.entries {
                        indexed.insert((idx.pack, e.id, e.offset), (e.stored_len, e.raw_len));
                    }
                }
                Ok(_) => tracing::warn!("index object {} describes another pack: ignored", o.key),
                // Its chunks then count as missing: `check` says more.
                Err(e) => tracing::warn!("ignoring a damaged index object: {e}"),
            }
        }
        Ok(Held { packs, indexed })
    }

    fn has_copy(&self, r: &ChunkRef) -> bool {
        self.packs.contains(&r.pack)
            && self.indexed.get(&(r.pack, r.id, r.offset)) == Some(&(r.stored_len, r.raw_len))
    }

    /// Whether `r` leads to an indexed copy: where it says, or through forwards.
    fn resolves(&self, repo: &Repository, r: &ChunkRef) -> Result<bool> {
        let mut at = r.clone();
        let mut seen = vec![at.pack];
        for _ in 0..=MAX_HOPS {
            if self.has_copy(&at) {
                return Ok(true);
            }
            match repo.forwarded(&at, true)? {
                Some(next) if !seen.contains(&next.pack) => {
                    seen.push(next.pack);
                    at = next;
                }
                _ => return Ok(false),
            }
        }
        Ok(false)
    }
}

/// Walks every tree and data chunk `m` references and resolves each against the
/// repository's index and packs (forwards followed). Trees are read (they name what is
/// below them); data chunks are only looked up.
pub fn verify(repo: &Repository, m: &Manifest) -> Result<Found> {
    let held = Held::load(repo)?;
    let mut found = Found::default();
    let mut visited: HashSet<ChunkId> = HashSet::new();
    let mut data_seen: HashSet<(PackId, ChunkId, u32)> = HashSet::new();
    let mut stack: Vec<ChunkRef> = Vec::new();
    for b in &m.backups {
        if visited.insert(b.root.id) {
            stack.push(b.root.clone());
        }
    }
    while !stack.is_empty() {
        let batch = stack.split_off(stack.len().saturating_sub(256));
        let mut readable = Vec::with_capacity(batch.len());
        for r in batch {
            found.trees += 1;
            if held.resolves(repo, &r)? {
                readable.push(r);
            } else {
                found.missing.push(Missing {
                    chunk: r,
                    kind: ChunkKind::Tree,
                });
            }
        }
        let trees = super::prune::par_map(&readable, |r| Ok(repo.load_tree(r)))?;
        for (r, tree) in readable.iter().zip(trees) {
            let tree = match tree {
                Ok(t) => t,
                Err(RepoError::Backend(e)) => return Err(RepoError::Backend(e)),
                Err(e) => {
                    return Err(RepoError::BadInput(format!(
                        "tree {} of the point cannot be read: {e}; nothing was written (run `vaultfs check`)",
                        r.id
                    )));
                }
            };
            for n in &tree.nodes {
                for e in &n.content {
                    if let Extent::Data(c) = e
                        && data_seen.insert((c.pack, c.id, c.offset))
                    {
                        found.chunks += 1;
                        if !held.resolves(repo, c)? {
                            found.missing.push(Missing {
                                chunk: c.clone(),
                                kind: ChunkKind::Data,
                            });
                        }
                    }
                }
                if let Some(sub) = &n.subtree
                    && visited.insert(sub.id)
                {
                    stack.push(sub.clone());
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::repo::backup::{BackupOptions, Source, backup};

    fn repo_with_point() -> (Arc<Repository>, tempfile::TempDir, String) {
        let repo = crate::repo::memory_repo();
        repo.create_vault("v", "").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a"), vec![7u8; 300_000]).unwrap();
        std::fs::write(src.join("sub/b"), b"hello").unwrap();
        let r = backup(
            &repo,
            "v",
            Source::Trees(vec![src]),
            &BackupOptions::default(),
        )
        .unwrap();
        (repo, dir, r.manifest.name)
    }

    #[test]
    fn a_record_round_trips_and_tampering_is_refused() {
        let (repo, _dir, point) = repo_with_point();
        let rec = export(&repo, "v", "latest").unwrap();
        assert_eq!(rec.point, point);
        let text = serde_json::to_vec(&rec).unwrap();
        let opened = open_record(&repo, &text).unwrap();
        assert_eq!(opened.manifest, repo.load_manifest("v", &point).unwrap());

        // A summary field the seal binds, changed by hand.
        let mut moved = rec.clone();
        moved.point = "2000-01-01T000000Z".into();
        let e = open_record(&repo, &serde_json::to_vec(&moved).unwrap()).unwrap_err();
        assert!(e.to_string().contains("failed authentication"), "{e}");
        // Not JSON, another format, a later version, garbage in `sealed`: errors.
        for (bad, says) in [
            (b"{".to_vec(), "not a vaultfs point record"),
            (
                serde_json::to_vec(&RecordFile {
                    format: "other".into(),
                    ..rec.clone()
                })
                .unwrap(),
                "format",
            ),
            (
                serde_json::to_vec(&RecordFile {
                    version: 9,
                    ..rec.clone()
                })
                .unwrap(),
                "version 9",
            ),
            (
                serde_json::to_vec(&RecordFile {
                    sealed: "@@@".into(),
                    ..rec.clone()
                })
                .unwrap(),
                "damaged",
            ),
            (
                serde_json::to_vec(&RecordFile {
                    sealed: "AAAA".into(),
                    ..rec.clone()
                })
                .unwrap(),
                "failed authentication",
            ),
        ] {
            let e = open_record(&repo, &bad).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        // Another repository cannot open it, and says why.
        let other = crate::repo::memory_repo();
        let e = open_record(&other, &text).unwrap_err().to_string();
        assert!(
            e.contains(&rec.repo_id) && e.contains("does not hold its keys"),
            "{e}"
        );
    }

    #[test]
    fn import_restores_a_deleted_point_and_is_idempotent() {
        let (repo, _dir, point) = repo_with_point();
        repo.update_point(
            "v",
            &point,
            &AttrChange {
                add_tags: vec!["kept".into()],
                protected: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        let before = repo.point_record("v", &point).unwrap();
        let text = serde_json::to_vec(&export(&repo, "v", &point).unwrap()).unwrap();
        repo.update_point(
            "v",
            &point,
            &AttrChange {
                protected: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
        repo.delete_point("v", &point).unwrap();
        assert!(repo.list_points("v").unwrap().is_empty());

        let r = import(&repo, &text, &ImportOptions::default()).unwrap();
        assert!(!r.already_present && !r.vault_created);
        assert!(r.chunks >= 2 && r.trees >= 3, "{r:?}");
        let after = repo.point_record("v", &point).unwrap();
        assert_eq!(after.manifest, before.manifest);
        assert_eq!(after.attrs, before.attrs);
        // Again: the same point is there, nothing is written.
        let r = import(&repo, &text, &ImportOptions::default()).unwrap();
        assert!(r.already_present);
        // Into another vault, created for it.
        let r = import(
            &repo,
            &text,
            &ImportOptions {
                vault: Some("w".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(r.vault_created && !r.already_present);
        let node = repo
            .find_node(&repo.load_manifest("w", &point).unwrap(), b"src/sub/b")
            .unwrap();
        let mut out = Vec::new();
        repo.read_file(&node, &mut out).unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn import_names_the_chunks_that_are_gone() {
        let (repo, _dir, point) = repo_with_point();
        let text = serde_json::to_vec(&export(&repo, "v", &point).unwrap()).unwrap();
        repo.delete_point("v", &point).unwrap();
        let m = open_record(&repo, &text).unwrap().manifest;
        // Lose one pack (as prune would, with nothing left to forward).
        let pack = m.backups[0].root.pack;
        repo.store().delete(&pack.key()).unwrap();
        let e = import(&repo, &text, &ImportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot import") && e.contains("nothing was written"),
            "{e}"
        );
        assert!(e.contains(&pack.to_hex()), "{e}");
        assert!(repo.list_points("v").unwrap().is_empty());
    }
}
