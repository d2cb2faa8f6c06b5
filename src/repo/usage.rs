//! How many stored bytes each vault's recovery points reference.
//!
//! A vault's bytes are the stored size of every distinct chunk (by id: a chunk stored twice
//! counts once) that one of its points references, data and trees alike; `shared_bytes`
//! is the part of that which points of other vaults reference too. Both stay true after a
//! prune (which only removes what no point references, and moves chunks without changing
//! their stored size), unlike "bytes a point added when it was taken". The walk is
//! prune's mark: each distinct tree of a vault is read once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::format::ChunkId;
use super::prune::{all_points, walk_manifest};
use super::{Repository, Result};

/// The usage of one vault.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VaultUsage {
    pub vault: String,
    pub points: usize,
    /// Distinct chunks its points reference, and their stored bytes.
    pub chunks: u64,
    pub bytes: u64,
    /// The part of `bytes` that points of other vaults reference too.
    pub shared_bytes: u64,
}

/// The usage of every vault that has points (and of each vault in `vaults` even when it
/// has none), sorted by vault name.
pub fn usage(repo: &Repository, vaults: &[String]) -> Result<Vec<VaultUsage>> {
    let mut by_vault: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in vaults {
        by_vault.entry(v.clone()).or_default();
    }
    for (v, p) in all_points(repo)? {
        by_vault.entry(v).or_default().push(p);
    }
    let mut chunks: BTreeMap<String, HashMap<ChunkId, u32>> = BTreeMap::new();
    let mut holders: HashMap<ChunkId, u32> = HashMap::new();
    for (vault, points) in &by_vault {
        let mut visited = HashSet::new();
        let mut mine: HashMap<ChunkId, u32> = HashMap::new();
        for p in points {
            let m = repo.load_manifest(vault, p)?;
            walk_manifest(repo, &m, &mut visited, &mut |r, _| {
                mine.insert(r.id, r.stored_len);
            })?;
        }
        for id in mine.keys() {
            *holders.entry(*id).or_default() += 1;
        }
        chunks.insert(vault.clone(), mine);
    }
    Ok(by_vault
        .iter()
        .map(|(vault, points)| {
            let mine = &chunks[vault];
            VaultUsage {
                vault: vault.clone(),
                points: points.len(),
                chunks: mine.len() as u64,
                bytes: mine.values().map(|&n| n as u64).sum(),
                shared_bytes: mine
                    .iter()
                    .filter(|(id, _)| holders[*id] > 1)
                    .map(|(_, &n)| n as u64)
                    .sum(),
            }
        })
        .collect())
}

/// The last usage computed in this process, with the points it was computed from.
type Memo = (String, BTreeMap<String, Vec<String>>, Arc<Vec<VaultUsage>>);
static LAST: Mutex<Option<Memo>> = Mutex::new(None);

/// [`usage`] of every vault, reused while no vault's list of points changed: one listing
/// per vault instead of a walk, for views that render it often (the mount's vault JSON).
pub fn usage_memo(repo: &Repository) -> Result<Arc<Vec<VaultUsage>>> {
    let mut now: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in repo.list_vaults()? {
        let points = repo.list_points(&v)?;
        now.insert(v, points);
    }
    let location = repo.location();
    if let Some((l, seen, u)) = LAST.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
        && *l == location
        && *seen == now
    {
        return Ok(u.clone());
    }
    let vaults: Vec<String> = now.keys().cloned().collect();
    let u = Arc::new(usage(repo, &vaults)?);
    if repo.format_version() >= super::format::FORMAT_VERSION {
        for v in u.iter() {
            let mut points = now.get(&v.vault).cloned().unwrap_or_default();
            points.sort();
            let record = super::format::UsageRecord {
                time_ns: super::format::now_ns(),
                points,
                chunks: v.chunks,
                bytes: v.bytes,
                shared_bytes: v.shared_bytes,
            };
            // A view's convenience: a store that refuses it costs the view its figures.
            if let Err(e) = repo.write_record(&format!("usage/{}", v.vault), &record, false) {
                tracing::warn!("could not record the usage of vault {}: {e}", v.vault);
            }
        }
    }
    *LAST.lock().unwrap_or_else(|e| e.into_inner()) = Some((location, now, u.clone()));
    Ok(u)
}

/// The usage last recorded for `vault` (by a command that computed it), and whether it is
/// still current (the vault's points are the ones it was computed of). One small read.
pub fn recorded(
    repo: &Repository,
    vault: &str,
    points: &[String],
) -> Result<Option<(super::format::UsageRecord, bool)>> {
    use super::format::UsageRecord;
    match repo.read_record::<UsageRecord, UsageRecord>(&format!("usage/{vault}")) {
        Ok(r) => {
            let mut now = points.to_vec();
            now.sort();
            let current = r.points == now;
            Ok(Some((r, current)))
        }
        Err(super::RepoError::Backend(e)) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}
