//! `vaultfs tasks`, `vaultfs task show|cancel`, and [`as_task`], which runs a CLI job
//! (backup, restore, forget, prune, check) as a task recorded in the repository.
//!
//! A cancelled job prints `vaultfs: <kind> cancelled (task <id>)` on stderr, nothing on
//! stdout, and exits [`EXIT_CANCELLED`] (130, as a shell reports a job stopped by
//! Ctrl-C).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::{Global, output};
use crate::control::tasks::{Task, TaskFailure, TaskSpec, record_json, run};
use crate::repo::Repository;
use crate::repo::cancel::{Cancel, CancellingStore};
use crate::repo::format::{printable, rfc3339};
use crate::repo::tasks::{self as records, TaskKind, TaskRecord, TaskStatus};

pub use super::errors::EXIT_CANCELLED;

#[derive(Args, Debug)]
pub struct TasksArgs {
    /// Read the task files of this running mount instead of the repository (the
    /// mount's `.vaultfs/tasks/`).
    pub mountpoint: Option<PathBuf>,
    /// Only tasks of this kind: backup, restore, forget, prune, check, ingest.
    #[arg(long, value_name = "K", value_parser = parse_kind)]
    pub kind: Option<TaskKind>,
    /// Only tasks of this status: queued, running, succeeded, failed (failed restores,
    /// shown as error_restoring, too), cancelled.
    #[arg(long, value_name = "S", value_parser = parse_status)]
    pub status: Option<TaskStatus>,
    /// Only tasks of this vault.
    #[arg(long, value_name = "V")]
    pub vault: Option<String>,
    /// Only tasks created at or after TIME: RFC 3339, a date, a point name, or a span
    /// back from now (7d, 12h).
    #[arg(long, value_name = "TIME", value_parser = super::points::parse_time)]
    pub since: Option<i64>,
    /// Print the tasks as a JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// Show one task: kind, vault, status, progress, times, point, fail reason.
    Show {
        /// The task's id (as `vaultfs tasks` lists it).
        id: String,
        /// Print the task as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running task to stop, and wait until it did. A cancelled backup commits no
    /// point; the command that ran the task exits 130.
    Cancel {
        /// The task's id.
        id: String,
        /// How long to wait for the task to show it stopped (e.g. 30s, 2m; 0: do not
        /// wait).
        #[arg(long, default_value = "60s", value_name = "DURATION",
              value_parser = super::prune::parse_duration)]
        wait: Duration,
        /// Print the task as it ended (or still is) as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_kind(s: &str) -> Result<TaskKind, String> {
    TaskKind::parse(s).ok_or_else(|| {
        format!(
            "unknown task kind {s:?}: use {}",
            TaskKind::ALL.map(|k| k.as_str()).join(", ")
        )
    })
}

fn parse_status(s: &str) -> Result<TaskStatus, String> {
    TaskStatus::parse(s).ok_or_else(|| {
        format!(
            "unknown task status {s:?}: use {}",
            TaskStatus::ALL.map(|k| k.as_str()).join(", ")
        )
    })
}

/// Opens the repository for a job whose task is `cancel`led through it: once the flag is
/// set, every store call but those on locks and task objects fails (see
/// `repo::cancel`).
fn open_cancellable(g: &Global, cancel: &Cancel) -> Result<Arc<Repository>> {
    let store = CancellingStore::wrap(super::open_store(g)?, cancel.clone());
    let pw = super::read_password(g, false)?;
    Ok(Repository::open(store, &pw)?)
}

/// Runs a CLI job as a task (see the module documentation). `Ok(None)`: the job was
/// cancelled, and that was said on stderr; the caller exits [`EXIT_CANCELLED`].
pub fn as_task<T>(
    g: &Global,
    kind: TaskKind,
    vault: Option<&str>,
    description: String,
    point_of: impl FnOnce(&T) -> Option<String>,
    job: impl FnOnce(&Arc<Repository>, &Arc<Task>) -> Result<T>,
) -> Result<Option<T>> {
    let cancel = Cancel::default();
    let repo = open_cancellable(g, &cancel)?;
    let spec = TaskSpec {
        kind,
        vault,
        description,
        cancel,
    };
    match run(&repo, spec, point_of, |task| job(&repo, task)) {
        Ok(v) => Ok(Some(v)),
        Err(TaskFailure::Cancelled { id }) => {
            eprintln!("vaultfs: {} cancelled (task {id})", kind.as_str());
            Ok(None)
        }
        Err(TaskFailure::Failed(e)) => Err(e),
    }
}

/// `vaultfs tasks`.
pub fn list(g: &Global, a: &TasksArgs) -> Result<i32> {
    let mut rows: Vec<Value> = match &a.mountpoint {
        Some(m) => mount_tasks(m)?,
        None => {
            let repo = super::open_repo(g)?;
            let mut rows = Vec::new();
            for l in records::list(&repo)? {
                match l.record {
                    Ok(r) => {
                        let r = r.effective_here();
                        if keep(&r, a) {
                            rows.push(record_json(&r));
                        }
                    }
                    Err(e) => eprintln!("warning: task {}: {e}", printable(l.id.as_bytes())),
                }
            }
            rows
        }
    };
    if a.mountpoint.is_some() {
        rows.retain(|j| keep_json(j, a));
    }
    if a.json {
        output::print_json(&Value::Array(rows));
        return Ok(0);
    }
    println!(
        "{:<42} {:<8} {:<15} {:<14} {:>16}  {:<24} DETAIL",
        "TASK", "KIND", "STATUS", "VAULT", "PROGRESS", "STARTED"
    );
    for t in &rows {
        println!(
            "{:<42} {:<8} {:<15} {:<14} {:>16}  {:<24} {}",
            text(&t["id"]),
            text(&t["kind"]),
            text(&t["status"]),
            t["vault"]
                .as_str()
                .map_or("-".to_string(), |v| printable(v.as_bytes())),
            progress_text(t),
            t["start_time"].as_str().unwrap_or("-"),
            detail(t)
        );
    }
    Ok(0)
}

fn text(v: &Value) -> String {
    printable(v.as_str().unwrap_or("").as_bytes())
}

fn progress_text(t: &Value) -> String {
    let p = &t["progress"];
    let bytes = output::human(p["bytes"].as_u64().unwrap_or(0));
    match p["percent"].as_f64() {
        Some(pc) => format!("{bytes} {pc:.0}%"),
        None => bytes,
    }
}

fn detail(t: &Value) -> String {
    if let Some(r) = t["fail_reason"].as_str() {
        return printable(r.as_bytes());
    }
    match t["point"].as_str() {
        Some(p) => format!("point {}", printable(p.as_bytes())),
        None => text(&t["name"]),
    }
}

fn keep(r: &TaskRecord, a: &TasksArgs) -> bool {
    a.kind.is_none_or(|k| r.kind == k.as_str())
        && a.status.is_none_or(|s| r.status == s.as_str())
        && a.vault.as_ref().is_none_or(|v| r.vault.as_ref() == Some(v))
        && a.since.is_none_or(|t| r.created_ns >= t)
}

fn keep_json(j: &Value, a: &TasksArgs) -> bool {
    let since_ok = a.since.is_none_or(|t| {
        j["created"]
            .as_str()
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .and_then(|c| c.timestamp_nanos_opt())
            .is_some_and(|c| c >= t)
    });
    a.kind.is_none_or(|k| j["kind"] == k.as_str())
        && a.status.is_none_or(|s| {
            j["status"] == s.as_str()
                || (s == TaskStatus::Failed && j["status"] == records::ERROR_RESTORING)
        })
        && a.vault.as_ref().is_none_or(|v| j["vault"] == v.as_str())
        && since_ok
}

/// The task files of a running mount, by id.
fn mount_tasks(mountpoint: &std::path::Path) -> Result<Vec<Value>> {
    let dir = mountpoint.join(".vaultfs/tasks");
    let mut tasks = Vec::new();
    let entries = std::fs::read_dir(&dir)
        .with_context(|| format!("{}: not a vaultfs mount", mountpoint.display()))?;
    for e in entries {
        let path = e?.path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            // Removed by retention between the listing and the read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        tasks.push(serde_json::from_slice::<Value>(&text)?);
    }
    tasks.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Ok(tasks)
}

/// `vaultfs task show|cancel`.
pub fn task_cmd(g: &Global, cmd: TaskCmd) -> Result<i32> {
    let repo = super::open_repo(g)?;
    match cmd {
        TaskCmd::Show { id, json } => {
            let r = records::read(&repo, &id)?.effective_here();
            if json {
                output::print_json(&record_json(&r));
            } else {
                show(&r);
            }
            Ok(0)
        }
        TaskCmd::Cancel { id, wait, json } => cancel(&repo, &id, wait, json),
    }
}

fn show(r: &TaskRecord) {
    let j = record_json(r);
    let line = |k: &str, v: String| println!("{:<12} {v}", format!("{k}:"));
    line("id", text(&j["id"]));
    line("kind", text(&j["kind"]));
    line(
        "vault",
        r.vault
            .as_deref()
            .map_or("-".to_string(), |v| printable(v.as_bytes())),
    );
    line("status", text(&j["status"]));
    line("description", printable(r.description.as_bytes()));
    line(
        "host",
        format!("{} (pid {})", printable(r.hostname.as_bytes()), r.pid),
    );
    let mut progress = format!("{} in {} files", output::human(r.bytes), r.files);
    if let Some(p) = r.percent() {
        progress.push_str(&format!(", {p:.0}%"));
    }
    if r.rate > 0 && !r.is_final() {
        progress.push_str(&format!(", {}/s", output::human(r.rate)));
    }
    if let Some(eta) = r.eta_seconds() {
        progress.push_str(&format!(", {eta}s left"));
    }
    line("progress", progress);
    line("created", rfc3339(r.created_ns));
    line("started", r.start_ns.map_or("-".into(), rfc3339));
    line("ended", r.end_ns.map_or("-".into(), rfc3339));
    line("heartbeat", rfc3339(r.heartbeat_ns));
    if let Some(p) = &r.point {
        line("point", printable(p.as_bytes()));
    }
    if let Some(f) = &r.fail_reason {
        line("fail reason", printable(f.as_bytes()));
    }
}

/// `vaultfs task cancel`: exit 0 once the task shows `cancelled`; 1 when it was not
/// running, ended otherwise, or still runs after `wait`.
fn cancel(repo: &Arc<Repository>, id: &str, wait: Duration, json: bool) -> Result<i32> {
    let r = records::read(repo, id)?.effective_here();
    if r.is_final() {
        if json {
            output::print_json(&record_json(&r));
        }
        bail!(
            "task {id} is not running: {}{}",
            r.status,
            r.fail_reason.map(|f| format!(" ({f})")).unwrap_or_default()
        );
    }
    records::request_cancel(repo, id).map_err(|e| anyhow!(e))?;
    let start = Instant::now();
    let mut r = r;
    while !r.is_final() && start.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(100).min(wait));
        r = records::read(repo, id)?.effective_here();
    }
    if json {
        output::print_json(&record_json(&r));
    }
    match r.status() {
        Some(TaskStatus::Cancelled) => {
            if !json {
                println!("cancelled task {id}");
            }
            Ok(0)
        }
        _ if !r.is_final() => {
            eprintln!(
                "vaultfs: task {id} was asked to stop and still runs after {}s (on {}, pid {}); it stops at its next check",
                wait.as_secs(),
                printable(r.hostname.as_bytes()),
                r.pid
            );
            Ok(1)
        }
        _ => {
            eprintln!(
                "vaultfs: task {id} ended before it could stop: {}{}",
                r.status,
                r.fail_reason
                    .as_deref()
                    .map(|f| format!(" ({})", printable(f.as_bytes())))
                    .unwrap_or_default()
            );
            Ok(1)
        }
    }
}
