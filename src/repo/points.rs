//! Point records: a recovery point's manifest together with what changed after its
//! commit (description, tags, protection, expiry, status), and the operations on them:
//! update, delete, and forget (the keep rules of [`super::retention`] applied to a vault).
//!
//! Manifests are immutable: the manifest write is the commit. A change is a new
//! `attrs/<vault>/<point>/<time>-<random>` object holding the whole new state, written
//! create-only; the greatest key wins, so two hosts that change one point at once never
//! tear it (the later change wins whole). Deleting a point writes a `deleting` update,
//! then deletes the manifest, then the point's updates: a point seen `deleting` is gone
//! for every listing, and the next delete or forget of its vault finishes the work.
//! A backup that failed once started leaves an error record under `errors/<vault>/`.

use std::collections::BTreeMap;

use super::format::*;
use super::retention::{self, Decision, KeepRules, PointFacts};
use super::{RepoError, Repository, Result, lock};

/// A recovery point (or the error record of a failed backup) as every view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointRecord {
    pub manifest: Manifest,
    /// The current attributes: the newest update's, else the manifest's.
    pub attrs: PointAttrs,
    /// `available`, `deleting` (a deletion under way) or `error` (an error record).
    pub status: PointStatus,
    /// When the attributes last changed after the commit.
    pub updated_ns: Option<i64>,
}

impl PointRecord {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Whether the point's expiry has passed at `now_ns`.
    pub fn expired(&self, now_ns: i64) -> bool {
        self.attrs.expires_ns.is_some_and(|t| t <= now_ns)
    }

    fn facts(&self) -> PointFacts {
        PointFacts {
            name: self.manifest.name.clone(),
            time_ns: self.manifest.time_ns,
            tags: self.attrs.tags.clone(),
            protected: self.attrs.protected,
            expires_ns: self.attrs.expires_ns,
        }
    }
}

/// A change asked of a point's attributes (`None`: leave as it is).
#[derive(Clone, Debug, Default)]
pub struct AttrChange {
    pub description: Option<String>,
    pub add_tags: Vec<String>,
    pub remove_tags: Vec<String>,
    pub protected: Option<bool>,
    /// `Some(None)`: no expiry.
    pub expires_ns: Option<Option<i64>>,
}

impl AttrChange {
    pub fn apply(&self, a: &mut PointAttrs) {
        if let Some(d) = &self.description {
            a.description = d.clone();
        }
        a.tags.retain(|t| !self.remove_tags.contains(t));
        a.tags.extend(self.add_tags.iter().cloned());
        normalize_tags(&mut a.tags);
        if let Some(p) = self.protected {
            a.protected = p;
        }
        if let Some(e) = self.expires_ns {
            a.expires_ns = e;
        }
    }
}

/// Tags sorted, without duplicates or empty strings.
pub fn normalize_tags(tags: &mut Vec<String>) {
    tags.retain(|t| !t.is_empty());
    tags.sort();
    tags.dedup();
}

fn check_point_name(vault: &str, point: &str) -> Result<()> {
    if point.is_empty() || point.contains('/') || point.starts_with('.') {
        return Err(RepoError::PointNotFound {
            vault: vault.to_string(),
            point: point.to_string(),
        });
    }
    Ok(())
}

impl Repository {
    /// The newest update of each point of `vault` that has one, by point name: one
    /// listing, then one read per such point.
    fn newest_updates(&self, vault: &str) -> Result<BTreeMap<String, (String, Vec<String>)>> {
        let prefix = format!("attrs/{vault}/");
        let mut by_point: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        for o in self.store().list(&prefix)? {
            let Some((point, _)) = o.key[prefix.len()..].split_once('/') else {
                continue;
            };
            let e = by_point
                .entry(point.to_string())
                .or_insert_with(|| (String::new(), Vec::new()));
            if o.key > e.0 {
                e.0 = o.key.clone();
            }
            e.1.push(o.key);
        }
        Ok(by_point)
    }

    fn record_of(&self, manifest: Manifest, update: Option<&str>) -> Result<PointRecord> {
        let mut rec = PointRecord {
            attrs: manifest.attrs.clone(),
            status: manifest.status,
            manifest,
            updated_ns: None,
        };
        if let Some(key) = update {
            let u: PointUpdate = self.read_record::<PointUpdate, PointUpdate>(key)?;
            rec.attrs = u.attrs;
            rec.status = u.status;
            rec.updated_ns = Some(u.time_ns);
        }
        Ok(rec)
    }

    /// The recovery points of `vault` with their current attributes, oldest first.
    /// Points being deleted are left out; error records come only with `errors`.
    pub fn point_records(&self, vault: &str, errors: bool) -> Result<Vec<PointRecord>> {
        self.load_vault(vault)?;
        let updates = self.newest_updates(vault)?;
        let mut out = Vec::new();
        for name in self.list_points(vault)? {
            let m = match self.load_manifest(vault, &name) {
                // Deleted between the listing and the read.
                Err(RepoError::PointNotFound { .. }) => continue,
                r => r?,
            };
            let rec = self.record_of(m, updates.get(&name).map(|u| u.0.as_str()))?;
            if rec.status != PointStatus::Deleting {
                out.push(rec);
            }
        }
        if errors {
            for name in self.list_error_records(vault)? {
                let key = format!("errors/{vault}/{name}");
                let m: Manifest = self.read_record::<ManifestV1, Manifest>(&key)?;
                out.push(self.record_of(m, None)?);
            }
            out.sort_by(|a, b| (a.manifest.time_ns, a.name()).cmp(&(b.manifest.time_ns, b.name())));
        }
        Ok(out)
    }

    fn list_error_records(&self, vault: &str) -> Result<Vec<String>> {
        let prefix = format!("errors/{vault}/");
        Ok(self
            .store()
            .list(&prefix)?
            .into_iter()
            .filter_map(|o| o.key.strip_prefix(&prefix).map(str::to_string))
            .filter(|n| !n.contains('/'))
            .collect())
    }

    /// One point's record (`latest` is the newest available point); an error record is
    /// found by its name too.
    pub fn point_record(&self, vault: &str, point: &str) -> Result<PointRecord> {
        self.load_vault(vault)?;
        if point == "latest" {
            return self
                .point_records(vault, false)?
                .pop()
                .ok_or_else(|| RepoError::NoPoints(vault.to_string()));
        }
        check_point_name(vault, point)?;
        let m = match self.load_manifest(vault, point) {
            Ok(m) => m,
            Err(RepoError::PointNotFound { .. }) => {
                let key = format!("errors/{vault}/{point}");
                return match self.read_record::<ManifestV1, Manifest>(&key) {
                    Ok(m) => self.record_of(m, None),
                    Err(RepoError::Backend(e)) if e.is_not_found() => {
                        Err(RepoError::PointNotFound {
                            vault: vault.to_string(),
                            point: point.to_string(),
                        })
                    }
                    Err(e) => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
        let updates = self.newest_updates_of(vault, point)?;
        let rec = self.record_of(m, updates.last().map(String::as_str))?;
        if rec.status == PointStatus::Deleting {
            return Err(RepoError::PointNotFound {
                vault: vault.to_string(),
                point: point.to_string(),
            });
        }
        Ok(rec)
    }

    /// The update keys of one point, oldest first.
    fn newest_updates_of(&self, vault: &str, point: &str) -> Result<Vec<String>> {
        let mut keys: Vec<String> = self
            .store()
            .list(&format!("attrs/{vault}/{point}/"))?
            .into_iter()
            .map(|o| o.key)
            .collect();
        keys.sort();
        Ok(keys)
    }

    fn write_update(
        &self,
        vault: &str,
        point: &str,
        attrs: &PointAttrs,
        status: PointStatus,
    ) -> Result<i64> {
        self.require_current_format("changing a recovery point")?;
        // Strictly after the newest update, even with a clock that went back.
        let newest = self
            .newest_updates_of(vault, point)?
            .last()
            .and_then(|k| k.rsplit('/').next()?.split('-').next()?.parse::<i64>().ok());
        let t = now_ns().max(newest.map_or(i64::MIN, |n| n + 1));
        let mut rnd = [0u8; 4];
        getrandom::getrandom(&mut rnd).expect("the OS random source failed");
        let key = format!("attrs/{vault}/{point}/{t:020}-{}", hex::encode(rnd));
        let update = PointUpdate {
            time_ns: t,
            hostname: lock::hostname(),
            attrs: attrs.clone(),
            status,
        };
        crate::failpoint!("attrs.write");
        self.write_record(&key, &update, true)?;
        crate::failpoint!("attrs.written");
        Ok(t)
    }

    /// Changes a point's attributes; returns the new record.
    pub fn update_point(
        &self,
        vault: &str,
        point: &str,
        change: &AttrChange,
    ) -> Result<PointRecord> {
        let mut rec = self.point_record(vault, point)?;
        if rec.status == PointStatus::Error {
            return Err(RepoError::BadInput(format!(
                "{vault}/{} is the record of a failed backup: it can only be deleted",
                rec.name()
            )));
        }
        let name = rec.name().to_string();
        change.apply(&mut rec.attrs);
        rec.updated_ns = Some(self.write_update(vault, &name, &rec.attrs, rec.status)?);
        Ok(rec)
    }

    /// Deletes recovery points (and error records) of `vault`; the caller holds the
    /// writer lock. Refuses, before deleting anything, when one is protected (naming
    /// them all). Returns the names deleted (with `dry_run`, that would be).
    pub fn delete_points(
        &self,
        vault: &str,
        points: &[String],
        dry_run: bool,
    ) -> Result<Vec<String>> {
        let mut recs = Vec::new();
        for p in points {
            recs.push(self.point_record(vault, p)?);
        }
        let protected: Vec<String> = recs
            .iter()
            .filter(|r| r.attrs.protected)
            .map(|r| r.name().to_string())
            .collect();
        if !protected.is_empty() {
            return Err(RepoError::Protected {
                vault: vault.to_string(),
                points: protected,
            });
        }
        let names: Vec<String> = recs.iter().map(|r| r.name().to_string()).collect();
        if dry_run {
            return Ok(names);
        }
        self.require_current_format("deleting a recovery point")?;
        for r in &recs {
            self.remove_record(vault, r)?;
        }
        Ok(names)
    }

    fn remove_record(&self, vault: &str, r: &PointRecord) -> Result<()> {
        let name = r.name();
        if r.status == PointStatus::Error {
            return Ok(self.store().delete(&format!("errors/{vault}/{name}"))?);
        }
        self.write_update(vault, name, &r.attrs, PointStatus::Deleting)?;
        self.finish_delete(vault, name)
    }

    /// The manifest, then the updates: once the `deleting` update exists, every step may
    /// be repeated.
    fn finish_delete(&self, vault: &str, point: &str) -> Result<()> {
        crate::failpoint!("delete.manifest");
        match self.store().delete(&format!("points/{vault}/{point}")) {
            Err(e) if !e.is_not_found() => return Err(e.into()),
            _ => {}
        }
        crate::failpoint!("delete.updates");
        for key in self.newest_updates_of(vault, point)? {
            match self.store().delete(&key) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Finishes deletions that a crash interrupted (points seen `deleting`), and removes
    /// updates left by points whose manifest is gone. Returns how many points it finished.
    pub fn finish_deletions(&self, vault: &str) -> Result<usize> {
        let updates = self.newest_updates(vault)?;
        let points: std::collections::HashSet<String> =
            self.list_points(vault)?.into_iter().collect();
        let mut n = 0;
        for (point, (newest, keys)) in &updates {
            if !points.contains(point) {
                for k in keys {
                    match self.store().delete(k) {
                        Err(e) if !e.is_not_found() => return Err(e.into()),
                        _ => {}
                    }
                }
                continue;
            }
            let u: PointUpdate = self.read_record::<PointUpdate, PointUpdate>(newest)?;
            if u.status == PointStatus::Deleting {
                self.finish_delete(vault, point)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Decides, for each point of `vault`, whether `rules` keep it (buckets in `tz`).
    pub fn forget_plan(
        &self,
        vault: &str,
        rules: &KeepRules,
        tz: chrono_tz::Tz,
        now_ns: i64,
    ) -> Result<Vec<(PointRecord, Decision)>> {
        let recs = self.point_records(vault, false)?;
        let facts: Vec<PointFacts> = recs.iter().map(PointRecord::facts).collect();
        let decisions = retention::decide(&facts, rules, tz, now_ns);
        Ok(recs.into_iter().zip(decisions).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    fn repo() -> Arc<Repository> {
        crate::repo::memory_repo()
    }

    fn point(repo: &Repository, vault: &str, t: i64, attrs: PointAttrs) -> String {
        let mut m = Manifest {
            vault: vault.into(),
            name: String::new(),
            time_ns: t,
            end_ns: t,
            hostname: "h".into(),
            status: PointStatus::Available,
            parent: None,
            backups: Vec::new(),
            attrs,
            skipped: Vec::new(),
            fail_reason: None,
            skipped_resources: Vec::new(),
            trigger: Trigger::Manual,
        };
        repo.commit_manifest(&mut m).unwrap()
    }

    #[test]
    fn updates_win_over_the_manifest_and_the_newest_wins() {
        let repo = repo();
        repo.create_vault("v", "").unwrap();
        let first = PointAttrs {
            description: "nightly".into(),
            tags: vec!["a".into()],
            ..Default::default()
        };
        let p = point(&repo, "v", 1_700_000_000_000_000_000, first.clone());
        assert_eq!(repo.point_record("v", &p).unwrap().attrs, first);
        let change = AttrChange {
            add_tags: vec!["b".into(), "a".into()],
            protected: Some(true),
            ..Default::default()
        };
        repo.update_point("v", &p, &change).unwrap();
        let change = AttrChange {
            remove_tags: vec!["a".into()],
            description: Some("kept".into()),
            ..Default::default()
        };
        let rec = repo.update_point("v", &p, &change).unwrap();
        assert_eq!(rec.attrs.tags, vec!["b".to_string()]);
        let again = repo.point_record("v", "latest").unwrap();
        assert_eq!(again.attrs, rec.attrs);
        assert!(again.attrs.protected);
        assert_eq!(again.attrs.description, "kept");
    }

    #[test]
    fn protected_points_are_refused_and_nothing_is_deleted() {
        let repo = repo();
        repo.create_vault("v", "").unwrap();
        let a = point(&repo, "v", 1_700_000_000_000_000_000, PointAttrs::default());
        let b = point(
            &repo,
            "v",
            1_700_000_100_000_000_000,
            PointAttrs {
                protected: true,
                ..Default::default()
            },
        );
        let err = repo
            .delete_points("v", &[a.clone(), b.clone()], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&b) && !err.contains(&a), "{err}");
        assert_eq!(repo.point_records("v", false).unwrap().len(), 2);
        assert_eq!(
            repo.delete_points("v", std::slice::from_ref(&a), true)
                .unwrap(),
            vec![a.clone()]
        );
        assert_eq!(repo.point_records("v", false).unwrap().len(), 2);
        repo.delete_points("v", &[a], false).unwrap();
        let left: Vec<String> = repo
            .point_records("v", false)
            .unwrap()
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        assert_eq!(left, vec![b.clone()]);
        // No update objects are left behind by a finished delete.
        assert_eq!(repo.store().list("attrs/v/").unwrap().len(), 0);
    }

    #[test]
    fn an_interrupted_delete_hides_the_point_and_is_finished_later() {
        let repo = repo();
        repo.create_vault("v", "").unwrap();
        let a = point(&repo, "v", 1_700_000_000_000_000_000, PointAttrs::default());
        // A crash right after the `deleting` update: the manifest is still there.
        repo.write_update("v", &a, &PointAttrs::default(), PointStatus::Deleting)
            .unwrap();
        assert!(repo.point_records("v", false).unwrap().is_empty());
        assert!(matches!(
            repo.point_record("v", &a),
            Err(RepoError::PointNotFound { .. })
        ));
        assert_eq!(repo.list_points("v").unwrap(), vec![a.clone()]);
        assert_eq!(repo.finish_deletions("v").unwrap(), 1);
        assert!(repo.list_points("v").unwrap().is_empty());
        assert!(repo.store().list("attrs/").unwrap().is_empty());
    }
}
