//! JSON renderings of recovery points, shared by the CLI's `--json` output and the
//! mount's `.vaultfs/points/<vault>/<point>.json` files, so scripts can use either.

use serde_json::{Value, json};

use crate::repo::format::{BackupEntry, Manifest, rfc3339};

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn backup_json(b: &BackupEntry) -> Value {
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
