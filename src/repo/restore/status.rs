//! A point's `restoring` status, derived from the task records rather than written: a
//! point shows `restoring` while a restore task of it (on any host) is live as readers
//! judge liveness ([`TaskRecord::effective_here`]: a fresh heartbeat, and on this host a
//! process that still runs). Nothing is written for it, so a restore that dies leaves
//! nothing to clean: its task becomes `failed` (`interrupted`), shown as
//! `error_restoring`, and the point is `available` again.
//!
//! A restore task names its point in the record's `point` once it resolved it (before it
//! reads a tree); ids name their kind (`...-restore-...`), so only restore records are
//! read.

use std::collections::BTreeSet;

use super::super::format::PointStatus;
use super::super::points::PointRecord;
use super::super::tasks::{self, TaskKind, TaskRecord};
use super::super::{Repository, Result};

/// The points of `vault` that live restore tasks among `records` are restoring.
pub fn restoring_among<'a>(
    records: impl IntoIterator<Item = &'a TaskRecord>,
    vault: &str,
) -> BTreeSet<String> {
    records
        .into_iter()
        .filter(|r| {
            r.kind == TaskKind::Restore.as_str()
                && !r.is_final()
                && r.vault.as_deref() == Some(vault)
        })
        .filter_map(|r| r.point.clone())
        .collect()
}

/// The points of `vault` being restored now, from the repository's task records (each
/// restore record is read; other kinds are told apart by their ids). A record that
/// cannot be read is left out.
pub fn points_being_restored(repo: &Repository, vault: &str) -> Result<BTreeSet<String>> {
    let mut live = Vec::new();
    for (id, _) in tasks::list_ids(repo)? {
        if !id.contains(&format!("-{}-", TaskKind::Restore.as_str())) {
            continue;
        }
        if let Ok(r) = tasks::read(repo, &id) {
            live.push(r.effective_here());
        }
    }
    Ok(restoring_among(&live, vault))
}

/// Shows an available point of `restoring` as restoring.
pub fn mark_restoring(rec: &mut PointRecord, restoring: &BTreeSet<String>) {
    if rec.status == PointStatus::Available && restoring.contains(rec.name()) {
        rec.status = PointStatus::Restoring;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_restores_of_the_vault_count() {
        let base = TaskRecord {
            id: tasks::new_id("restore", 1),
            kind: "restore".into(),
            vault: Some("v".into()),
            description: String::new(),
            hostname: "h".into(),
            pid: 1,
            process: String::new(),
            status: "running".into(),
            created_ns: 1,
            start_ns: None,
            end_ns: None,
            heartbeat_ns: 1,
            interval_ms: 5000,
            bytes: 0,
            files: 0,
            total_bytes: None,
            total_files: None,
            rate: 0,
            point: Some("p1".into()),
            fail_reason: None,
        };
        let with = |f: &dyn Fn(&mut TaskRecord)| {
            let mut r = base.clone();
            f(&mut r);
            r
        };
        let all = [
            base.clone(),
            with(&|r| r.point = Some("p2".into())),
            with(&|r| {
                r.point = Some("p3".into());
                r.status = "failed".into();
            }),
            with(&|r| {
                r.point = Some("p4".into());
                r.vault = Some("w".into());
            }),
            with(&|r| {
                r.point = Some("p5".into());
                r.kind = "backup".into();
            }),
            with(&|r| r.point = None),
        ];
        let got: Vec<String> = restoring_among(&all, "v").into_iter().collect();
        assert_eq!(got, ["p1", "p2"]);
        assert_eq!(all[2].status_word(), tasks::ERROR_RESTORING);
        assert_eq!(all[4].status_word(), "running");
    }
}
