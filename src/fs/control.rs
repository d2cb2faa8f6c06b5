//! The generated JSON files of `.vaultfs/`: `vaults/<vault>.json` and
//! `points/<vault>/<point>.json`. Generated at each open (and stat), from the repository's
//! metadata objects; the kernel never caches them (zero TTL, direct I/O).
//!
//! Field names follow the CLI's `--json` output, so scripts can use either.

use serde_json::{Value, json};

use crate::repo::format::{BackupEntry, Manifest, rfc3339};
use crate::repo::{Repository, Result};

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn backup_json(b: &BackupEntry) -> Value {
    json!({
        "name": lossy(&b.name),
        "kind": b.kind.as_str(),
        "source": lossy(&b.source),
        "size": b.stats.bytes,
        "files": b.stats.files,
        "dirs": b.stats.dirs,
        "other": b.stats.other,
        "files_unchanged": b.stats.files_unchanged,
        "bytes_read": b.stats.bytes_read,
        "chunks_new": b.stats.chunks_new,
        "bytes_stored": b.stats.bytes_stored_new,
    })
}

/// The recovery point's details.
pub fn point_json(m: &Manifest) -> Value {
    json!({
        "id": m.name,
        "vault": m.vault,
        "time": rfc3339(m.time_ns),
        "end_time": rfc3339(m.end_ns),
        "status": m.status.as_str(),
        "parent": m.parent,
        "hostname": m.hostname,
        "size": m.backups.iter().map(|b| b.stats.bytes).sum::<u64>(),
        "bytes_stored": m.backups.iter().map(|b| b.stats.bytes_stored_new).sum::<u64>(),
        "backups": m.backups.iter().map(backup_json).collect::<Vec<_>>(),
    })
}

/// `vaults/<vault>.json`: settings and usage. Reads every manifest of the vault (the
/// usage is the sum of what its points added).
pub fn vault_file(repo: &Repository, vault: &str) -> Result<Vec<u8>> {
    let v = repo.load_vault(vault)?;
    let points = repo.list_points(vault)?;
    let mut used = 0u64;
    for p in &points {
        let m = repo.load_manifest(vault, p)?;
        used += m
            .backups
            .iter()
            .map(|b| b.stats.bytes_stored_new)
            .sum::<u64>();
    }
    let j = json!({
        "name": v.name,
        "description": v.description,
        "created": rfc3339(v.created_ns),
        "bytes_used": used,
        "point_count": points.len(),
        "latest": points.last(),
    });
    Ok(render(&j))
}

/// `points/<vault>/<point>.json`.
pub fn point_file(repo: &Repository, vault: &str, point: &str) -> Result<Vec<u8>> {
    let m = repo.load_manifest(vault, point)?;
    Ok(render(&point_json(&m)))
}

fn render(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("JSON encodes");
    out.push(b'\n');
    out
}
