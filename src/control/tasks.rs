//! Tasks: one per asynchronous job (an ingest now; restore, prune and check later), with
//! the lifecycle of the cloud backup services: `queued` → `running` → `succeeded` or
//! `failed` (with a `fail_reason`). Finished tasks are kept for [`TaskRegistry::keep`],
//! then expire. Rendered as `.vaultfs/tasks/<id>.json`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::repo::format::{now_ns, rfc3339};
use crate::repo::walk::Progress;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl TaskStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
        }
    }
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
}

/// One job.
#[derive(Debug)]
pub struct Task {
    pub id: String,
    pub kind: &'static str,
    pub vault: String,
    pub created_ns: i64,
    pub progress: Arc<Progress>,
    /// Total bytes when known (for a percentage).
    pub size_hint: AtomicU64,
    state: Mutex<State>,
}

impl Task {
    pub fn set_name(&self, name: &str) {
        self.state.lock().unwrap().name = name.to_string();
    }

    pub fn start(&self) {
        let mut s = self.state.lock().unwrap();
        s.status = TaskStatus::Running;
        s.started_ns = Some(now_ns());
    }

    pub fn succeed(&self, point: &str) {
        let mut s = self.state.lock().unwrap();
        s.status = TaskStatus::Succeeded;
        s.point = Some(point.to_string());
        s.ended_ns = Some(now_ns());
        s.ended_at = Some(Instant::now());
    }

    pub fn fail(&self, reason: &str) {
        let mut s = self.state.lock().unwrap();
        s.status = TaskStatus::Failed;
        s.fail_reason = Some(reason.to_string());
        s.ended_ns = Some(now_ns());
        s.ended_at = Some(Instant::now());
    }

    pub fn status(&self) -> TaskStatus {
        self.state.lock().unwrap().status
    }

    pub fn json(&self) -> Value {
        let s = self.state.lock().unwrap();
        let bytes = self.progress.bytes.load(Ordering::Relaxed);
        let size = self.size_hint.load(Ordering::Relaxed);
        let percent = match (s.status, size) {
            (TaskStatus::Succeeded, _) => Some(100.0),
            (_, 0) => None,
            (_, n) => Some((bytes as f64 * 100.0 / n as f64).min(100.0)),
        };
        json!({
            "id": self.id,
            "kind": self.kind,
            "vault": self.vault,
            "name": s.name,
            "status": s.status.as_str(),
            "progress": { "bytes": bytes, "files": self.progress.files.load(Ordering::Relaxed), "percent": percent },
            "created": rfc3339(self.created_ns),
            "start_time": s.started_ns.map(rfc3339),
            "end_time": s.ended_ns.map(rfc3339),
            "point": s.point,
            "fail_reason": s.fail_reason,
        })
    }

    fn expired(&self, keep: Duration) -> bool {
        let s = self.state.lock().unwrap();
        s.ended_at.is_some_and(|t| t.elapsed() > keep)
    }
}

/// The tasks of one daemon.
#[derive(Debug)]
pub struct TaskRegistry {
    tasks: Mutex<BTreeMap<String, Arc<Task>>>,
    seq: AtomicU64,
    keep: Duration,
}

impl TaskRegistry {
    pub fn new(keep: Duration) -> Self {
        TaskRegistry {
            tasks: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(1),
            keep,
        }
    }

    /// How long finished tasks are kept.
    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// Registers a new queued task. Ids sort by creation: `<kind>-<time>-<n>`.
    pub fn create(&self, kind: &'static str, vault: &str, name: &str) -> Arc<Task> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let created_ns = now_ns();
        let id = format!(
            "{kind}-{}-{n:04}",
            crate::repo::format::point_name(created_ns)
        );
        let task = Arc::new(Task {
            id: id.clone(),
            kind,
            vault: vault.to_string(),
            created_ns,
            progress: Arc::default(),
            size_hint: AtomicU64::new(0),
            state: Mutex::new(State {
                status: TaskStatus::Queued,
                started_ns: None,
                ended_ns: None,
                ended_at: None,
                point: None,
                fail_reason: None,
                name: name.to_string(),
            }),
        });
        self.tasks.lock().unwrap().insert(id, task.clone());
        task
    }

    /// The live tasks, oldest first; expired ones are dropped.
    pub fn list(&self) -> Vec<Arc<Task>> {
        let mut tasks = self.tasks.lock().unwrap();
        tasks.retain(|_, t| !t.expired(self.keep));
        tasks.values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Task>> {
        self.list().into_iter().find(|t| t.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_and_expiry() {
        let r = TaskRegistry::new(Duration::from_millis(50));
        let t = r.create("ingest", "v", "etc.tar");
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
}
