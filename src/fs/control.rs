//! The generated JSON files of `.vaultfs/`: `vaults/<vault>.json` and
//! `points/<vault>/<point>.json`. Generated at each open (and stat), from the repository's
//! metadata objects; the kernel never caches them (zero TTL, direct I/O).
//!
//! Field names follow the CLI's `--json` output, so scripts can use either.

use serde_json::{Value, json};

use crate::control::json::point_json;
use crate::repo::format::rfc3339;
use crate::repo::{Repository, Result};

/// `vaults/<vault>.json`: settings and usage (see [`vault_json`]).
pub fn vault_file(repo: &Repository, vault: &str) -> Result<Vec<u8>> {
    Ok(render(&vault_json(repo, vault)?))
}

/// A vault as every view shows it (this file, and the CLI's `vault ... --json`): settings,
/// point count, latest point, and usage. Reads every manifest of the vault (the usage is
/// the sum of what its points added).
pub fn vault_json(repo: &Repository, vault: &str) -> Result<Value> {
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
    Ok(json!({
        "name": v.name,
        "description": v.description,
        "created": rfc3339(v.created_ns),
        "bytes_used": used,
        "point_count": points.len(),
        "latest": points.last(),
    }))
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
