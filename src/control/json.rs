//! JSON renderings of recovery points, vaults and policies, shared by the CLI's `--json`
//! output and the mount's `.vaultfs/` files, so scripts can use either.

use serde_json::{Value, json};

use crate::repo::format::{BackupEntry, Manifest, Policy, Retention, Trigger, now_ns, rfc3339};

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
        "auto_trigger": m.trigger != Trigger::Manual,
        "policy": m.trigger.policy(),
    })
}

/// A point record (the point with its current attributes and status): what `points
/// --json`, `point show --json` and `.vaultfs/points/<vault>/<point>.json` show.
pub fn record_json(r: &crate::repo::points::PointRecord) -> Value {
    let mut j = point_json(&r.manifest);
    j["status"] = json!(r.status.as_str());
    j["description"] = json!(r.attrs.description);
    j["tags"] = json!(r.attrs.tags);
    j["protected"] = json!(r.attrs.protected);
    j["expires"] = json!(r.attrs.expires_ns.map(rfc3339));
    j["updated"] = json!(r.updated_ns.map(rfc3339));
    j["skipped"] = r
        .manifest
        .skipped
        .iter()
        .map(|s| json!({"path": lossy(&s.path), "error": s.error}))
        .collect();
    j["skipped_resources"] = r
        .manifest
        .skipped_resources
        .iter()
        .map(|s| json!({"name": s.name, "error": s.error}))
        .collect();
    if let Some(reason) = &r.manifest.fail_reason {
        j["fail_reason"] = json!(reason);
    }
    j
}

/// A vault as every view shows it (`.vaultfs/vaults/<vault>.json`, the CLI's `vault ...
/// --json`): settings, retention, capacity, point count, latest point, and usage:
/// `bytes_used` is the sum of what its points added when taken, `bytes_referenced` the
/// stored bytes its points reference now (true after a prune), `bytes_shared` the part
/// of those that other vaults reference too (see [`crate::repo::usage`]).
///
/// With `with_usage` false (the mount, which must answer without reading packs: a
/// stalled store may not stall a control file), the usage figures are the ones last
/// recorded by a command that computed them (`vault show`, `vault list --json`: a walk of
/// every tree of the repository), with `usage_as_of` and `usage_current` (false once the
/// vault's points changed since); null when none was ever recorded.
pub fn vault_json(
    repo: &crate::repo::Repository,
    vault: &str,
    with_usage: bool,
) -> crate::repo::Result<Value> {
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
    // (bytes, shared, as of, current)
    let usage: Option<(u64, u64, Option<i64>, bool)> = if with_usage {
        let all = crate::repo::usage::usage_memo(repo)?;
        all.iter()
            .find(|u| u.vault == vault)
            .map(|u| (u.bytes, u.shared_bytes, None, true))
    } else {
        crate::repo::usage::recorded(repo, vault, &points)?
            .map(|(r, current)| (r.bytes, r.shared_bytes, Some(r.time_ns), current))
    };
    let referenced = usage.map(|u| u.0);
    let next_run = crate::repo::policy::next_backup(repo, &v, now_ns())?;
    Ok(json!({
        "name": v.name,
        "description": v.description,
        "created": rfc3339(v.created_ns),
        "bytes_used": used,
        "point_count": points.len(),
        "latest": points.last(),
        "retention": retention_json(&v.retention),
        "policy": v.policy,
        "next_run": next_run.map(rfc3339),
        "bytes_referenced": referenced,
        "bytes_shared": usage.map(|u| u.1),
        "usage_as_of": usage.and_then(|u| u.2).map(rfc3339),
        "usage_current": usage.map(|u| u.3),
        "quota": v.quota,
        "quota_used_percent": v.quota.filter(|&q| q > 0).zip(referenced).map(|(q, r)| r as f64 * 100.0 / q as f64),
        "over_warning": referenced.map(|r| crate::repo::backup::over_warning(&v, r)),
        "warn_at_percent": v.warn_at,
        "resources": repo
            .list_resources(Some(vault))?
            .iter()
            .map(|r| json!({"name": r.name, "host": r.hostname}))
            .collect::<Vec<_>>(),
        "tags": v.tags.iter().map(|(k, val)| (k.clone(), json!(val))).collect::<serde_json::Map<_, _>>(),
        // Who besides the mount's owner and root may read it (`vault share`).
        "members": {"uids": v.members.uids, "gids": v.members.gids},
    }))
}

/// Keep rules, as vaults and policies show them.
pub fn retention_json(r: &Retention) -> Value {
    let span = |s: &Option<crate::repo::retention::Span>| s.map(|s| s.to_string());
    json!({
        "keep_last": r.last,
        "keep_hourly": r.hourly,
        "keep_daily": r.daily,
        "keep_weekly": r.weekly,
        "keep_monthly": r.monthly,
        "keep_yearly": r.yearly,
        "keep_within": span(&r.within),
        "keep_tags": r.tags,
        "max_age": span(&r.max_age),
        "timezone": r.timezone,
    })
}

/// A policy as every view shows it (`policy show --json`, `.vaultfs/policies/<name>.json`):
/// its settings, the vaults it is applied to, and its next `next` backup times and next
/// prune (none while disabled).
pub fn policy_json(
    repo: &crate::repo::Repository,
    p: &Policy,
    next: usize,
) -> crate::repo::Result<Value> {
    let now = now_ns();
    let (runs, prune) = if p.enabled {
        (
            crate::repo::policy::backup_schedule(p)?.next_n(now, next),
            crate::repo::policy::prune_schedule(p)?.next_after(now),
        )
    } else {
        (Vec::new(), None)
    };
    Ok(json!({
        "name": p.name,
        "schedules": p.schedules,
        "timezone": p.timezone,
        "retention": retention_json(&p.retention),
        "retention_applies": crate::repo::policy::has_rules(&p.retention),
        "prune_schedule": p.prune_schedule,
        "enabled": p.enabled,
        "created": rfc3339(p.created_ns),
        "updated": rfc3339(p.updated_ns),
        "vaults": repo.vaults_with_policy(&p.name)?,
        "next_runs": runs.into_iter().map(rfc3339).collect::<Vec<_>>(),
        "next_prune": prune.map(rfc3339),
    }))
}
