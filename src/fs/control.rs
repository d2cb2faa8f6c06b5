//! The generated JSON files of `.vaultfs/`: `vaults/<vault>.json` and
//! `points/<vault>/<point>.json`. Generated at each open (and stat), from the repository's
//! metadata objects; the kernel never caches them (zero TTL, direct I/O).
//!
//! Field names follow the CLI's `--json` output, so scripts can use either.

use serde_json::Value;

use crate::control::json::record_json;
use crate::repo::{Repository, Result};

/// `vaults/<vault>.json`: settings and usage (see [`vault_json`]).
pub fn vault_file(repo: &Repository, vault: &str) -> Result<Vec<u8>> {
    Ok(render(&vault_json(repo, vault)?))
}

pub use crate::control::json::vault_json;

/// `points/<vault>/<point>.json`.
pub fn point_file(repo: &Repository, vault: &str, point: &str) -> Result<Vec<u8>> {
    Ok(render(&record_json(&repo.point_record(vault, point)?)))
}

fn render(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("JSON encodes");
    out.push(b'\n');
    out
}
