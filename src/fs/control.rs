//! The control files of `.vaultfs/`: the generated directories (`vaults/`, `points/`,
//! `points/<vault>/`, `incoming/`, `tasks/`, `policies/`, and the views across time
//! `versions/`, `changes/`, `deleted/` of `views.rs`) and files (`vaults/<vault>.json`,
//! `points/<vault>/<point>.json`, `tasks/<id>.json`, `policies/<name>.json`,
//! `stats.json`, `changes/<vault>/<point>/removed.json`).
//!
//! Invariants:
//! - Listings answer from the namespace's cached vault and point lists, like the rest of
//!   the tree: no store call per lookup, so a stalled store stalls no `ls .vaultfs/...`.
//!   The one exception is `policies/`: its names are listed from the store at most once
//!   per [`RENDER_REUSE`] (policies are few and change rarely, and the mount keeps no
//!   other list of them).
//! - Generated content is never cached by the kernel (zero TTL, direct I/O), and a file's
//!   content is fixed for one open (rendered at open, see `handles.rs`).
//! - A file rendered from the repository's objects (a vault's or a point's JSON) is
//!   rendered once for [`RENDER_REUSE`]: `getattr` and `open` within it agree on the size
//!   and the bytes, and `ls -l` followed by `cat` renders once. A listing with attributes
//!   (readdirplus) does not render it at all: it reports the size of the last rendering
//!   (0 before the first), which is honest enough for files read with direct I/O (a read
//!   goes on to the real end whatever the size said) and keeps `ls` of
//!   `.vaultfs/vaults/` from loading every manifest of every vault. Files rendered from
//!   memory (tasks, `stats.json`) are rendered at each `getattr` and `open`.
//!
//! `tasks/` lists the repository's tasks of every host (read from the store at its
//! first listing, as the vault list is, then re-listed in the background at most once
//! per refresh interval, while someone looks) and this daemon's own with their
//! current progress. `rm tasks/<id>.json` of a running task cancels it (this daemon's
//! directly, another's through a `cancels/<id>` request it sees at its next heartbeat);
//! the file stays and shows `cancelled` once the task stopped. Removing the file of a
//! finished task is refused (EPERM): old records are removed by retention.
//!
//! Field names of the JSON follow the CLI's `--json` output, so scripts can use either.

use serde_json::Value;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::counting::CallCounts;
use crate::cache::ChunkCache;
use crate::control::json::record_json;
use crate::control::tasks::TaskRegistry;
use crate::repo::{Repository, Result};
use crate::sync::lock;

use super::inodes::Control;
use super::namespace::Namespace;
use super::reply::{FsError, Result as FsResult};

/// `vaults/<vault>.json`: settings and usage (see [`vault_json`]).
pub fn vault_file(repo: &Repository, vault: &str) -> Result<Vec<u8>> {
    Ok(render(&vault_json(repo, vault, false)?))
}

pub use crate::control::json::vault_json;

/// `points/<vault>/<point>.json` (`restoring` while a live task restores it).
pub fn point_file(
    repo: &Repository,
    tasks: &TaskRegistry,
    vault: &str,
    point: &str,
) -> Result<Vec<u8>> {
    let mut r = repo.point_record(vault, point)?;
    let restoring = crate::repo::restore::restoring_among(&tasks.records(), vault);
    crate::repo::restore::mark_restoring(&mut r, &restoring);
    Ok(render(&record_json(&r)))
}

fn render(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("JSON encodes");
    out.push(b'\n');
    out
}

/// Whether a generated file is rendered from the repository's objects (and so reused, see
/// the module documentation), rather than from memory (tasks, stats: rendered each time).
fn from_repository(c: &Control) -> bool {
    matches!(
        c,
        Control::VaultJson(_)
            | Control::PointJson(..)
            | Control::PolicyJson(_)
            | Control::RemovedJson(..)
    )
}

/// How many due times `policies/<name>.json` shows.
const SHOWN_RUNS: usize = 5;

/// `policies/<name>.json`: the policy, its vaults and next due times.
pub fn policy_file(repo: &Repository, name: &str) -> Result<Vec<u8>> {
    let p = repo.load_policy(name)?;
    Ok(render(&crate::control::json::policy_json(
        repo, &p, SHOWN_RUNS,
    )?))
}

/// How long one rendering of a generated file answers `getattr` and `open`.
pub const RENDER_REUSE: Duration = Duration::from_secs(1);

/// A generated file's content, and when it was rendered.
type Rendering = (Instant, Arc<Vec<u8>>);

/// See the module documentation.
#[derive(Debug, Default)]
pub struct ControlFiles {
    /// The last rendering of each generated file, and when it was made.
    renders: Mutex<HashMap<Control, Rendering>>,
    /// Reads of backup files served, and their bytes (for `stats.json`).
    pub reads: AtomicU64,
    pub bytes_served: AtomicU64,
    /// The store's call counts, when the store was wrapped to count them.
    backend_counts: Mutex<Option<Arc<CallCounts>>>,
    /// The policy names last listed, and when.
    policies: Mutex<Option<(Instant, Vec<String>)>>,
    /// The views across time.
    pub views: super::views::Views,
}

/// What a generated file is rendered from.
pub struct Sources<'a> {
    pub repo: &'a Repository,
    pub ns: &'a Namespace,
    pub tasks: &'a TaskRegistry,
    pub cache: &'a ChunkCache,
    pub handles: &'a super::handles::Handles,
    pub incoming: &'a super::incoming::Incoming,
}

impl ControlFiles {
    /// Shows these call counts of the store in `stats.json`.
    pub fn set_backend_counts(&self, c: Arc<CallCounts>) {
        *lock(&self.backend_counts) = Some(c);
    }

    /// Counts a read of a backup file.
    pub fn count_read(&self, bytes: usize) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes_served.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The entries of a generated directory. `incoming` lists the files being ingested
    /// into one vault (they belong to `incoming.rs`).
    pub fn children(
        &self,
        ns: &Namespace,
        tasks: &TaskRegistry,
        ino: u64,
        c: &Control,
        incoming: impl FnOnce(&str) -> Vec<(Vec<u8>, u64)>,
    ) -> FsResult<Vec<(Vec<u8>, u64)>> {
        let vaults =
            || -> FsResult<Vec<String>> { Ok(ns.vaults()?.into_iter().map(|(n, _)| n).collect()) };
        let entry = |name: Vec<u8>, c: Control| {
            let i = ns.control_ino(ino, &name, c);
            (name, i)
        };
        Ok(match c {
            Control::Top => vec![
                entry(b"vaults".to_vec(), Control::Vaults),
                entry(b"points".to_vec(), Control::Points),
                entry(b"incoming".to_vec(), Control::Incoming),
                entry(b"tasks".to_vec(), Control::Tasks),
                entry(b"policies".to_vec(), Control::Policies),
                entry(b"stats.json".to_vec(), Control::Stats),
                entry(b"versions".to_vec(), Control::Versions),
                entry(b"changes".to_vec(), Control::Changes),
                entry(b"deleted".to_vec(), Control::Deleted),
            ],
            Control::Policies => self
                .policy_names(ns.repo())?
                .into_iter()
                .map(|p| entry(format!("{p}.json").into_bytes(), Control::PolicyJson(p)))
                .collect(),
            Control::Incoming => vaults()?
                .into_iter()
                .map(|v| entry(v.clone().into_bytes(), Control::IncomingVault(v)))
                .collect(),
            Control::IncomingVault(v) => incoming(v),
            Control::Tasks => tasks
                .records()
                .into_iter()
                .map(|t| {
                    entry(
                        format!("{}.json", t.id).into_bytes(),
                        Control::TaskJson(t.id),
                    )
                })
                .collect(),
            Control::Vaults => vaults()?
                .into_iter()
                .map(|v| entry(format!("{v}.json").into_bytes(), Control::VaultJson(v)))
                .collect(),
            Control::Points => vaults()?
                .into_iter()
                .map(|v| entry(v.clone().into_bytes(), Control::PointsOf(v)))
                .collect(),
            Control::PointsOf(v) => ns
                .points_of(v)?
                .into_iter()
                .map(|(p, _)| {
                    entry(
                        format!("{p}.json").into_bytes(),
                        Control::PointJson(v.clone(), p),
                    )
                })
                .collect(),
            Control::Versions
            | Control::VersionsOf(..)
            | Control::Changes
            | Control::ChangesOf(_)
            | Control::ChangesIn(..)
            | Control::Deleted
            | Control::DeletedIn(..) => self.views.children(ns.repo(), ns, ino, c, vaults()?)?,
            Control::VaultJson(_)
            | Control::PointJson(..)
            | Control::RemovedJson(..)
            | Control::IncomingFile(_)
            | Control::TaskJson(_)
            | Control::PolicyJson(_)
            | Control::Stats => return Err(FsError::NotDir),
        })
    }

    /// The policy names, listed again once the last listing is [`RENDER_REUSE`] old.
    fn policy_names(&self, repo: &Repository) -> Result<Vec<String>> {
        if let Some((at, names)) = lock(&self.policies).as_ref()
            && at.elapsed() < RENDER_REUSE
        {
            return Ok(names.clone());
        }
        let names = repo.list_policies()?;
        *lock(&self.policies) = Some((Instant::now(), names.clone()));
        Ok(names)
    }

    /// The content of a generated file: a rendering younger than [`RENDER_REUSE`], or a
    /// new one.
    pub fn content(&self, src: &Sources<'_>, c: &Control) -> FsResult<Arc<Vec<u8>>> {
        if !from_repository(c) {
            return Ok(Arc::new(self.render(src, c)?));
        }
        if let Some((at, data)) = lock(&self.renders).get(c)
            && at.elapsed() < RENDER_REUSE
        {
            return Ok(data.clone());
        }
        let data = Arc::new(self.render(src, c)?);
        let mut renders = lock(&self.renders);
        renders.retain(|_, (at, _)| at.elapsed() < RENDER_REUSE);
        renders.insert(c.clone(), (Instant::now(), data.clone()));
        Ok(data)
    }

    /// The size of the last rendering of a generated file, without rendering it (0 before
    /// the first): what a listing with attributes reports.
    pub fn last_size(&self, src: &Sources<'_>, c: &Control) -> u64 {
        if !from_repository(c) {
            return self.render(src, c).map_or(0, |d| d.len() as u64);
        }
        lock(&self.renders)
            .get(c)
            .map_or(0, |(_, d)| d.len() as u64)
    }

    fn render(&self, src: &Sources<'_>, c: &Control) -> FsResult<Vec<u8>> {
        Ok(match c {
            Control::VaultJson(v) => vault_file(src.repo, v)?,
            Control::PointJson(v, p) => point_file(src.repo, src.tasks, v, p)?,
            Control::PolicyJson(name) => policy_file(src.repo, name)?,
            Control::TaskJson(id) => render(&crate::control::tasks::record_json(
                &src.tasks.record(id).ok_or(FsError::NotFound)?,
            )),
            Control::Stats => render(&self.stats_json(src)),
            Control::RemovedJson(v, p) => self.views.removed_json(src.repo, v, p)?,
            _ => return Err(FsError::IsDir),
        })
    }

    /// `.vaultfs/stats.json`: what the daemon has done and holds, for monitoring and
    /// benchmarks (read amplification = `chunk_fetch_bytes` / bytes asked).
    pub fn stats_json(&self, src: &Sources<'_>) -> Value {
        let mut j = src.cache.stats_json();
        let o = j.as_object_mut().expect("an object");
        o.insert("reads".into(), self.reads.load(Ordering::Relaxed).into());
        o.insert(
            "bytes_served".into(),
            self.bytes_served.load(Ordering::Relaxed).into(),
        );
        o.insert("inodes".into(), src.ns.inodes.len().into());
        o.insert("inode_bytes".into(), src.ns.inodes.bytes().into());
        o.insert(
            "inodes_trimmed".into(),
            src.ns.trimmed.load(Ordering::Relaxed).into(),
        );
        o.insert("open_files".into(), src.handles.len().into());
        o.insert("rss_bytes".into(), rss_bytes().into());
        o.insert("pid".into(), std::process::id().into());
        let records = src.tasks.records();
        o.insert(
            "tasks".into(),
            crate::metrics::task_counts(
                records.iter().map(|r| (r.kind.as_str(), r.status.as_str())),
            ),
        );
        o.insert("ingests_running".into(), src.incoming.running().into());
        if let Some(c) = lock(&self.backend_counts).as_ref() {
            o.insert("backend".into(), c.json());
        }
        j
    }
}

/// This process's resident set size, from /proc (0 where that is not readable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
