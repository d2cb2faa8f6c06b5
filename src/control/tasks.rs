//! Tasks: every long job (backup, restore, forget, prune, check, an ingest through the
//! mount) runs as a [`Task`], with the lifecycle of the cloud backup services: `queued` →
//! `running` → `succeeded`, `failed` (with a `fail_reason`) or `cancelled`.
//!
//! A task of a repository of the current format is persisted as `tasks/<id>`
//! (`repo::tasks`): a heartbeat thread of its own writes the record at once, again at
//! every status change, and with its progress every `repo::tasks::interval()` (5 s;
//! progress never costs a store call per byte). The same thread polls `cancels/<id>` at
//! each beat and sets the task's [`Cancel`] flag when it appears. A record that cannot be
//! written is warned about once; the job goes on.
//!
//! [`run`] wraps any job: it creates the task, runs the job with it (progress, cancel
//! flag), and finishes the task as succeeded, failed or cancelled. [`TaskRegistry`] is the
//! mount's view: its own live tasks (fresh progress) over the records of every host,
//! listed when someone first looks, then re-listed in the background at most once per
//! refresh interval and only while someone looks; a finished record is never
//! rewritten, so it is read once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender};
use serde_json::{Value, json};

use crate::repo::cancel::Cancel;
use crate::repo::format::{now_ns, rfc3339};
use crate::repo::tasks::{self as records, INTERRUPTED};
use crate::repo::walk::Progress;
use crate::repo::{RepoError, Repository};
use crate::sync::lock;

pub use crate::repo::tasks::{TaskKind, TaskRecord, TaskStatus};

/// This process's identity on its host (see [`TaskRecord::process`]).
fn own_process() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(records::own_process_tag)
}

fn own_host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(crate::repo::lock::hostname)
}

#[derive(Debug)]
struct State {
    status: TaskStatus,
    started_ns: Option<i64>,
    ended_ns: Option<i64>,
    ended_at: Option<Instant>,
    point: Option<String>,
    fail_reason: Option<String>,
    name: String,
    total_files: Option<u64>,
}

/// The heartbeat thread of a persisted task.
#[derive(Debug)]
struct Writer {
    wake: Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One job.
#[derive(Debug)]
pub struct Task {
    pub id: String,
    pub kind: TaskKind,
    pub vault: Option<String>,
    pub created_ns: i64,
    pub progress: Arc<Progress>,
    /// Total bytes when known (for a percentage and an ETA).
    pub size_hint: AtomicU64,
    /// Set to stop the job (by `task cancel`, seen at a heartbeat, or by the mount).
    pub cancel: Cancel,
    /// Bytes per second over the last heartbeat interval.
    rate: AtomicU64,
    interval: Duration,
    state: Mutex<State>,
    writer: Mutex<Option<Writer>>,
}

impl Task {
    /// A new queued task, not persisted (see [`Task::persist`]).
    pub fn new(kind: TaskKind, vault: Option<&str>, description: &str) -> Arc<Task> {
        Task::with_cancel(kind, vault, description, Cancel::default())
    }

    /// [`Task::new`] with a cancel flag made before (one the job's store already
    /// watches, see `repo::cancel::CancellingStore`).
    pub fn with_cancel(
        kind: TaskKind,
        vault: Option<&str>,
        description: &str,
        cancel: Cancel,
    ) -> Arc<Task> {
        let created_ns = now_ns();
        Arc::new(Task {
            id: records::new_id(kind.as_str(), created_ns),
            kind,
            vault: vault.map(str::to_string),
            created_ns,
            progress: Arc::default(),
            size_hint: AtomicU64::new(0),
            cancel,
            rate: AtomicU64::new(0),
            interval: records::interval(),
            state: Mutex::new(State {
                status: TaskStatus::Queued,
                started_ns: None,
                ended_ns: None,
                ended_at: None,
                point: None,
                fail_reason: None,
                name: description.to_string(),
                total_files: None,
            }),
            writer: Mutex::new(None),
        })
    }

    /// Persists the task in `repo` from now on: a heartbeat thread writes its record
    /// (see the module documentation). Nothing happens in a repository of an older
    /// format.
    pub fn persist(self: &Arc<Self>, repo: Arc<Repository>) {
        if !records::persistable(&repo) {
            return;
        }
        let (tx, rx) = crossbeam_channel::unbounded::<()>();
        let weak = Arc::downgrade(self);
        let interval = self.interval;
        let thread = std::thread::Builder::new()
            .name("task-heartbeat".into())
            .spawn(move || heartbeat(weak, repo, rx, interval));
        match thread {
            Ok(t) => {
                *lock(&self.writer) = Some(Writer {
                    wake: tx,
                    thread: Some(t),
                })
            }
            Err(e) => tracing::warn!("task {}: no heartbeat thread ({e}); not recorded", self.id),
        }
    }

    pub fn set_name(&self, name: &str) {
        lock(&self.state).name = name.to_string();
    }

    /// The recovery point the task works on, shown while it runs (a restore names the
    /// point it restores; it keeps it whatever its end).
    pub fn set_point(&self, point: &str) {
        lock(&self.state).point = Some(point.to_string());
    }

    /// The totals, where known (for a percentage and an ETA).
    pub fn set_totals(&self, bytes: Option<u64>, files: Option<u64>) {
        if let Some(b) = bytes {
            self.size_hint.store(b, Ordering::Relaxed);
        }
        lock(&self.state).total_files = files;
    }

    pub fn start(&self) {
        {
            let mut s = lock(&self.state);
            s.status = TaskStatus::Running;
            s.started_ns = Some(now_ns());
        }
        self.wake();
    }

    /// The job succeeded; `point` is the recovery point it made.
    pub fn succeed(&self, point: &str) {
        self.finish(TaskStatus::Succeeded, Some(point), None);
    }

    /// The job succeeded and made no point.
    pub fn succeed_without_point(&self) {
        self.finish(TaskStatus::Succeeded, None, None);
    }

    pub fn fail(&self, reason: &str) {
        self.finish(TaskStatus::Failed, None, Some(reason));
    }

    /// The job stopped because it was cancelled.
    pub fn cancelled(&self) {
        self.finish(TaskStatus::Cancelled, None, Some("cancelled"));
    }

    /// Sets the final status, then waits for the heartbeat thread to write it (so the
    /// record is durable when this returns). A task finishes once.
    fn finish(&self, status: TaskStatus, point: Option<&str>, reason: Option<&str>) {
        {
            let mut s = lock(&self.state);
            if s.status.is_final() {
                return;
            }
            s.status = status;
            if let Some(p) = point {
                s.point = Some(p.to_string());
            }
            s.fail_reason = reason.map(str::to_string);
            s.ended_ns = Some(now_ns());
            s.ended_at = Some(Instant::now());
        }
        let writer = lock(&self.writer).take();
        if let Some(mut w) = writer {
            let _ = w.wake.send(());
            if let Some(t) = w.thread.take()
                && t.thread().id() != std::thread::current().id()
            {
                let _ = t.join();
            }
        }
    }

    fn wake(&self) {
        if let Some(w) = lock(&self.writer).as_ref() {
            let _ = w.wake.send(());
        }
    }

    pub fn status(&self) -> TaskStatus {
        lock(&self.state).status
    }

    /// The task as a record (what is written to `tasks/<id>`).
    pub fn record(&self) -> TaskRecord {
        let s = lock(&self.state);
        let total = self.size_hint.load(Ordering::Relaxed);
        TaskRecord {
            id: self.id.clone(),
            kind: self.kind.as_str().to_string(),
            vault: self.vault.clone(),
            description: s.name.clone(),
            hostname: own_host().to_string(),
            pid: std::process::id(),
            process: own_process().to_string(),
            status: s.status.as_str().to_string(),
            created_ns: self.created_ns,
            start_ns: s.started_ns,
            end_ns: s.ended_ns,
            heartbeat_ns: now_ns(),
            interval_ms: self.interval.as_millis() as u64,
            bytes: self.progress.bytes.load(Ordering::Relaxed),
            files: self.progress.files.load(Ordering::Relaxed),
            total_bytes: (total > 0).then_some(total),
            total_files: s.total_files,
            rate: self.rate.load(Ordering::Relaxed),
            point: s.point.clone(),
            fail_reason: s.fail_reason.clone(),
        }
    }

    pub fn json(&self) -> Value {
        record_json(&self.record())
    }

    fn expired(&self, keep: Duration) -> bool {
        lock(&self.state)
            .ended_at
            .is_some_and(|t| t.elapsed() > keep)
    }
}

/// Writes the record at once, at every wake (a status change) and every `interval`;
/// polls the cancel request at each beat; ends after writing a final status. A task
/// dropped unfinished is written as failed (`interrupted`).
fn heartbeat(
    task: Weak<Task>,
    repo: Arc<Repository>,
    wake: crossbeam_channel::Receiver<()>,
    interval: Duration,
) {
    let mut warned = false;
    let mut last: Option<(Instant, u64)> = None;
    let mut cancel_seen = false;
    let mut id = String::new();
    let mut cleaned = false;
    loop {
        let Some(t) = task.upgrade() else {
            // Dropped without finishing: its last record says running; say why not.
            if let Ok(mut r) = records::read(&repo, &id)
                && !r.is_final()
            {
                r.status = TaskStatus::Failed.as_str().into();
                r.fail_reason = Some(INTERRUPTED.into());
                r.end_ns = Some(now_ns());
                let _ = records::write(&repo, &r);
            }
            return;
        };
        id = t.id.clone();
        let bytes = t.progress.bytes.load(Ordering::Relaxed);
        if let Some((at, before)) = last {
            let secs = at.elapsed().as_secs_f64();
            if secs > 0.0 {
                let rate = (bytes.saturating_sub(before) as f64 / secs) as u64;
                t.rate.store(rate, Ordering::Relaxed);
            }
        }
        last = Some((Instant::now(), bytes));
        let rec = t.record();
        if let Err(e) = records::write(&repo, &rec)
            && !warned
        {
            tracing::warn!("could not write the record of task {}: {e}", rec.id);
            warned = true;
        }
        if !cleaned {
            cleaned = true;
            cleanup_now_and_then(&repo);
        }
        if rec.is_final() {
            if cancel_seen || t.cancel.is_set() {
                let _ = records::clear_cancel(&repo, &rec.id);
            }
            return;
        }
        if !t.cancel.is_set() && matches!(records::cancel_requested(&repo, &rec.id), Ok(true)) {
            tracing::info!("task {}: cancel requested", rec.id);
            cancel_seen = true;
            t.cancel.set();
        }
        drop(t);
        match wake.recv_timeout(interval) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            // The task was dropped unfinished: the next round says so.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(interval),
        }
    }
}

/// Removes task records past the retention, at most once per process every ten minutes.
fn cleanup_now_and_then(repo: &Repository) {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    {
        let mut last = lock(&LAST);
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(600)) {
            return;
        }
        *last = Some(Instant::now());
    }
    match records::cleanup(repo, records::KEEP_AGE, records::KEEP_COUNT) {
        Ok(0) => {}
        Ok(n) => tracing::debug!("removed {n} old task record(s)"),
        Err(e) => tracing::debug!("could not remove old task records: {e}"),
    }
}

/// How a job wrapped by [`run`] did not succeed.
#[derive(Debug)]
pub enum TaskFailure<E> {
    /// It was cancelled and stopped (the task says `cancelled`).
    Cancelled { id: String },
    /// It failed (the task says `failed` with this error as its reason).
    Failed(E),
}

impl<E: std::fmt::Display> std::fmt::Display for TaskFailure<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskFailure::Cancelled { id } => write!(f, "cancelled (task {id})"),
            TaskFailure::Failed(e) => e.fmt(f),
        }
    }
}

/// What a job wrapped by [`run`] is.
pub struct TaskSpec<'a> {
    pub kind: TaskKind,
    pub vault: Option<&'a str>,
    pub description: String,
    /// The task's cancel flag (a fresh one by default).
    pub cancel: Cancel,
}

/// Runs `job` as a task persisted in `repo`: creates it (running), gives the job the
/// task (its `progress`, its `cancel` flag, [`Task::set_point`]-like finishing through
/// the return value), and finishes it: succeeded (with the point `point_of` finds in the
/// result), cancelled (the job failed and the flag is set), or failed with the error as
/// its reason.
///
/// A backup polls the flag itself (`BackupOptions::cancel = task.cancel.clone()`). A job
/// that does not (prune, forget, check, restore) stops when cancelled if its repository
/// was opened over `repo::cancel::CancellingStore::wrap(store, spec.cancel.clone())`:
/// its next store call then fails (the CLI does this, see `cli::tasks::as_task`).
pub fn run<T, E: std::fmt::Display>(
    repo: &Arc<Repository>,
    spec: TaskSpec<'_>,
    point_of: impl FnOnce(&T) -> Option<String>,
    job: impl FnOnce(&Arc<Task>) -> Result<T, E>,
) -> Result<T, TaskFailure<E>> {
    let task = Task::with_cancel(spec.kind, spec.vault, &spec.description, spec.cancel);
    task.persist(repo.clone());
    task.start();
    // `task{id, kind, vault}`: every log line of the job carries them.
    let span = tracing::info_span!(
        "task",
        id = %task.id,
        kind = spec.kind.as_str(),
        vault = spec.vault.unwrap_or("")
    );
    let result = span.in_scope(|| job(&task));
    match result {
        Ok(v) => {
            match point_of(&v) {
                Some(p) => task.succeed(&p),
                None => task.succeed_without_point(),
            }
            Ok(v)
        }
        Err(_) if task.cancel.is_set() => {
            task.cancelled();
            Err(TaskFailure::Cancelled {
                id: task.id.clone(),
            })
        }
        Err(e) => {
            task.fail(&e.to_string());
            Err(TaskFailure::Failed(e))
        }
    }
}

/// A task as JSON: the same fields in `vaultfs tasks --json`, `task show --json` and
/// `.vaultfs/tasks/<id>.json`.
pub fn record_json(r: &TaskRecord) -> Value {
    json!({
        "id": r.id,
        "kind": r.kind,
        "vault": r.vault,
        "name": r.description,
        "status": r.status_word(),
        "progress": {
            "bytes": r.bytes,
            "files": r.files,
            "total_bytes": r.total_bytes,
            "total_files": r.total_files,
            "percent": r.percent(),
            "rate": r.rate,
            "eta_seconds": r.eta_seconds(),
        },
        "created": rfc3339(r.created_ns),
        "start_time": r.start_ns.map(rfc3339),
        "end_time": r.end_ns.map(rfc3339),
        "heartbeat": rfc3339(r.heartbeat_ns),
        "hostname": r.hostname,
        "pid": r.pid,
        "point": r.point,
        "fail_reason": r.fail_reason,
    })
}

/// The repository's task records as last listed by the mount.
#[derive(Debug, Default)]
struct View {
    /// id -> (listed size, record)
    records: BTreeMap<String, (u64, TaskRecord)>,
    refreshed: Option<Instant>,
    refreshing: bool,
}

/// The tasks of one daemon, over the repository's (see the module documentation).
#[derive(Debug)]
pub struct TaskRegistry {
    tasks: Mutex<BTreeMap<String, Arc<Task>>>,
    keep: Duration,
    repo: Option<Arc<Repository>>,
    refresh: Duration,
    view: Arc<Mutex<View>>,
}

impl TaskRegistry {
    /// A registry of this daemon's tasks only, kept in memory.
    pub fn new(keep: Duration) -> Self {
        TaskRegistry {
            tasks: Mutex::new(BTreeMap::new()),
            keep,
            repo: None,
            refresh: Duration::from_secs(2),
            view: Arc::default(),
        }
    }

    /// A registry whose tasks are persisted in `repo`, and which shows the repository's
    /// tasks of every host, re-listed at most every `refresh`.
    pub fn with_repo(repo: Arc<Repository>, keep: Duration, refresh: Duration) -> Self {
        TaskRegistry {
            repo: Some(repo),
            refresh: refresh.max(Duration::from_millis(200)),
            ..TaskRegistry::new(keep)
        }
    }

    /// How long finished tasks are kept.
    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// Registers a new queued task of this daemon (persisted when the registry has a
    /// repository).
    pub fn create(&self, kind: TaskKind, vault: &str, name: &str) -> Arc<Task> {
        let task = Task::new(kind, Some(vault), name);
        if let Some(repo) = &self.repo {
            task.persist(repo.clone());
        }
        lock(&self.tasks).insert(task.id.clone(), task.clone());
        task
    }

    /// This daemon's tasks, oldest first; expired ones are dropped.
    pub fn list(&self) -> Vec<Arc<Task>> {
        let mut tasks = lock(&self.tasks);
        tasks.retain(|_, t| !t.expired(self.keep));
        tasks.values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Task>> {
        self.list().into_iter().find(|t| t.id == id)
    }

    /// Every task: the repository's as last listed (liveness applied), with this
    /// daemon's own at their current state; oldest first. Starts a background re-listing
    /// when the last one is older than the refresh interval.
    pub fn records(&self) -> Vec<TaskRecord> {
        self.refresh_soon();
        let mut all: BTreeMap<String, TaskRecord> = lock(&self.view)
            .records
            .iter()
            .map(|(id, (_, r))| (id.clone(), r.clone().effective_here()))
            .collect();
        for t in self.list() {
            all.insert(t.id.clone(), t.record());
        }
        all.into_values().collect()
    }

    /// One task (see [`Self::records`]).
    pub fn record(&self, id: &str) -> Option<TaskRecord> {
        if let Some(t) = self.get(id) {
            return Some(t.record());
        }
        self.refresh_soon();
        lock(&self.view)
            .records
            .get(id)
            .map(|(_, r)| r.clone().effective_here())
    }

    /// Asks a task to stop: one of this daemon's directly, another through the
    /// repository (`cancels/<id>`). Returns whether the task was running.
    pub fn cancel(&self, id: &str) -> Result<bool, RepoError> {
        if let Some(t) = self.get(id) {
            if t.status().is_final() {
                return Ok(false);
            }
            t.cancel.set();
            return Ok(true);
        }
        let Some(r) = self.record(id) else {
            return Ok(false);
        };
        if r.is_final() {
            return Ok(false);
        }
        match &self.repo {
            Some(repo) => records::request_cancel(repo, id).map(|()| true),
            None => Ok(false),
        }
    }

    /// Re-lists the repository's tasks on a thread of its own, unless one runs or the
    /// last listing is younger than the refresh interval; the first listing (nothing is
    /// read before someone looks) is made by the caller, as the namespace's first vault
    /// list is. Records that say they are final are read once; the others again at each
    /// listing.
    fn refresh_soon(&self) {
        let Some(repo) = self.repo.clone() else {
            return;
        };
        let first = {
            let mut v = lock(&self.view);
            if v.refreshing || v.refreshed.is_some_and(|t| t.elapsed() < self.refresh) {
                return;
            }
            v.refreshing = true;
            v.refreshed.is_none()
        };
        let view = self.view.clone();
        if first {
            let fresh = relist(&repo, &view);
            let mut v = lock(&view);
            if let Some(records) = fresh {
                v.records = records;
            }
            v.refreshed = Some(Instant::now());
            v.refreshing = false;
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("task-list".into())
            .spawn(move || {
                let fresh = relist(&repo, &view);
                let mut v = lock(&view);
                if let Some(records) = fresh {
                    v.records = records;
                }
                v.refreshed = Some(Instant::now());
                v.refreshing = false;
            });
        if spawned.is_err() {
            lock(&self.view).refreshing = false;
        }
    }
}

/// The repository's task records, reading only those that are new, changed in size, or
/// not final when last read. None when the listing failed (the old view stays).
fn relist(repo: &Repository, view: &Mutex<View>) -> Option<BTreeMap<String, (u64, TaskRecord)>> {
    let ids = match records::list_ids(repo) {
        Ok(ids) => ids,
        Err(e) => {
            tracing::debug!("could not list tasks: {e}");
            return None;
        }
    };
    let old: BTreeMap<String, (u64, TaskRecord)> = lock(view).records.clone();
    let mut out = BTreeMap::new();
    for (id, size) in ids {
        if let Some((s, r)) = old.get(&id)
            && *s == size
            && r.is_final()
        {
            out.insert(id, (size, r.clone()));
            continue;
        }
        match records::read(repo, &id) {
            Ok(r) => {
                out.insert(id, (size, r));
            }
            Err(e) => tracing::debug!("task {id}: {e}"),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_and_expiry() {
        let r = TaskRegistry::new(Duration::from_millis(50));
        let t = r.create(TaskKind::Ingest, "v", "etc.tar");
        assert_eq!(t.json()["status"], "queued");
        t.start();
        t.progress.add(0, 10);
        t.size_hint.store(40, Ordering::Relaxed);
        assert_eq!(t.json()["progress"]["percent"], 25.0);
        t.fail("malformed archive: truncated");
        let j = t.json();
        assert_eq!(j["status"], "failed");
        assert_eq!(j["fail_reason"], "malformed archive: truncated");
        assert!(j["end_time"].is_string());
        assert_eq!(r.list().len(), 1);
        std::thread::sleep(Duration::from_millis(80));
        assert!(r.list().is_empty());
    }

    #[test]
    fn run_records_success_failure_and_cancel() {
        let repo = crate::repo::memory_repo();
        let spec = |d: &str| TaskSpec {
            kind: TaskKind::Check,
            vault: None,
            description: d.to_string(),
            cancel: Cancel::default(),
        };
        let ok: Result<u32, TaskFailure<String>> =
            run(&repo, spec("ok"), |_| Some("p1".into()), |_| Ok(7));
        assert_eq!(ok.unwrap(), 7);
        let failed: Result<u32, _> = run(&repo, spec("bad"), |_| None, |_| Err("broken"));
        assert!(matches!(failed, Err(TaskFailure::Failed("broken"))));
        let cancelled: Result<u32, _> = run(
            &repo,
            spec("stop"),
            |_| None,
            |t| {
                // A cancel request in the repository, as `task cancel` writes it: the
                // heartbeat sees it and sets the flag.
                records::request_cancel(&repo, &t.id).unwrap();
                let start = Instant::now();
                while !t.cancel.is_set() {
                    assert!(start.elapsed() < Duration::from_secs(30), "never seen");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err("stopped")
            },
        );
        assert!(matches!(cancelled, Err(TaskFailure::Cancelled { .. })));
        let all: Vec<TaskRecord> = records::list(&repo)
            .unwrap()
            .into_iter()
            .map(|l| l.record.unwrap())
            .collect();
        let by = |d: &str| all.iter().find(|r| r.description == d).unwrap().clone();
        assert_eq!(by("ok").status, "succeeded");
        assert_eq!(by("ok").point.as_deref(), Some("p1"));
        assert_eq!(by("bad").status, "failed");
        assert_eq!(by("bad").fail_reason.as_deref(), Some("broken"));
        let stop = by("stop");
        assert_eq!(stop.status, "cancelled");
        assert!(!records::cancel_requested(&repo, &stop.id).unwrap());
    }
}
