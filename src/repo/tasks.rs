//! Task records: every long job (backup, restore, forget, prune, check, ingest) leaves a
//! record in the repository, so that every host and every later process sees it.
//!
//! Objects (FORMAT.md, "Tasks"):
//!
//! | key | content | written |
//! |---|---|---|
//! | `tasks/<id>` | sealed [`TaskRecord`] | by the task's process: at its start, at every status change, with its progress every [`interval`]; rewritten while it runs, never after it finished |
//! | `cancels/<id>` | sealed [`CancelRequest`] | by `task cancel` (or `rm` of the task file in a mount); the task polls it with its heartbeat and removes it once it stopped |
//!
//! The id sorts by creation and is unique across hosts: `<UTC time to the millisecond,
//! as 2026-12-02T033022.123Z>-<kind>-<8 random hex digits>`.
//!
//! Invariants:
//! - A record whose status is final (succeeded, failed, cancelled) is never rewritten, so
//!   a reader that cached it never reads it again (the mount's view relies on this).
//! - Readers decide liveness themselves ([`TaskRecord::effective`]): a record still saying
//!   `running` whose heartbeat is older than [`stale_after`] of its interval, or whose
//!   process is gone from this host (or is another process under the same pid), is shown
//!   `failed` with fail_reason `interrupted`. Nothing is rewritten for that.
//! - A damaged or unknown record is reported by whoever reads it, never a panic, and a
//!   job whose record cannot be written goes on (its writer warns once).
//! - Finished records are removed opportunistically by writers: those older than
//!   [`KEEP_AGE`] and all but the newest [`KEEP_COUNT`] ([`cleanup`]), deciding from the
//!   listing (the id holds the creation time) and reading only what it may delete.
//! - Nothing is written into a repository of an older format
//!   ([`Repository::require_current_format`]): there, tasks are not persisted.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::format::{RECORD_VERSION, encode_record, now_ns};
use super::{RepoError, Repository, Result};

/// Finished task records older than this are removed by later writers.
pub const KEEP_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// At most this many task records are kept (the newest; running ones always).
pub const KEEP_COUNT: usize = 1000;
/// The default heartbeat and progress interval of a running task.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// The reason shown for a task whose process died.
pub const INTERRUPTED: &str = "interrupted";
/// The status word shown for a restore task that failed.
pub const ERROR_RESTORING: &str = "error_restoring";

/// The heartbeat and progress interval: env `VAULTFS_TASK_INTERVAL_MS`, else 5 s.
pub fn interval() -> Duration {
    std::env::var("VAULTFS_TASK_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map_or(DEFAULT_INTERVAL, Duration::from_millis)
}

/// How old a running task's heartbeat may be before readers take it for dead: three of
/// its intervals, plus 15 s for clocks of different hosts and a slow store.
pub fn stale_after(interval_ms: u64) -> Duration {
    Duration::from_millis(interval_ms.saturating_mul(3)) + Duration::from_secs(15)
}

/// What a task does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskKind {
    Backup,
    Restore,
    Forget,
    Prune,
    Check,
    Ingest,
    Copy,
}

impl TaskKind {
    pub const ALL: [TaskKind; 7] = [
        TaskKind::Backup,
        TaskKind::Restore,
        TaskKind::Forget,
        TaskKind::Prune,
        TaskKind::Check,
        TaskKind::Ingest,
        TaskKind::Copy,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            TaskKind::Backup => "backup",
            TaskKind::Restore => "restore",
            TaskKind::Forget => "forget",
            TaskKind::Prune => "prune",
            TaskKind::Check => "check",
            TaskKind::Ingest => "ingest",
            TaskKind::Copy => "copy",
        }
    }

    pub fn parse(s: &str) -> Option<TaskKind> {
        TaskKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A task's lifecycle: `queued` → `running` → `succeeded`, `failed` or `cancelled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the task is over.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }
}

/// One task, as stored in `tasks/<id>`. Kind and status are stored as text, so that a
/// reader shows a kind or status added later as it is instead of failing to decode.
/// Later versions may append fields: postcard readers ignore trailing bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    /// `backup`, `restore`, `forget`, `prune`, `check`, `ingest`, `copy`.
    pub kind: String,
    /// None for jobs of the whole repository (prune, check, forget --all).
    pub vault: Option<String>,
    /// A short human description (the paths backed up, the point restored...).
    pub description: String,
    pub hostname: String,
    pub pid: u32,
    /// What tells this process apart from a later one with the same pid on its host:
    /// `<boot id> <start time in clock ticks>` (empty where /proc cannot tell).
    pub process: String,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    pub created_ns: i64,
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
    /// When the record was last written by its process.
    pub heartbeat_ns: i64,
    /// The writer's heartbeat interval (readers judge staleness by it).
    pub interval_ms: u64,
    pub bytes: u64,
    pub files: u64,
    pub total_bytes: Option<u64>,
    pub total_files: Option<u64>,
    /// Bytes per second over the last interval.
    pub rate: u64,
    /// The recovery point the task made.
    pub point: Option<String>,
    pub fail_reason: Option<String>,
}

impl TaskRecord {
    /// The status, when it is one this build knows.
    pub fn status(&self) -> Option<TaskStatus> {
        TaskStatus::parse(&self.status)
    }

    /// The status as shown (JSON, `vaultfs tasks`): the stored status, except that a
    /// restore that failed (or was interrupted) says `error_restoring`, as the backup
    /// services name it; filters still take it as `failed`.
    pub fn status_word(&self) -> &str {
        if self.kind == TaskKind::Restore.as_str() && self.status() == Some(TaskStatus::Failed) {
            ERROR_RESTORING
        } else {
            &self.status
        }
    }

    /// Whether the record says the task is over (an unknown status counts as over).
    pub fn is_final(&self) -> bool {
        self.status().is_none_or(|s| s.is_final())
    }

    /// The record as readers show it: a task that still says queued or running but whose
    /// process is gone is `failed` with fail_reason `interrupted` (see the module doc).
    /// `here` is this host's name; `alive(pid, process)` tells whether that process of
    /// this host still runs.
    pub fn effective(
        mut self,
        now: i64,
        here: &str,
        alive: impl Fn(u32, &str) -> bool,
    ) -> TaskRecord {
        if self.is_final() {
            return self;
        }
        let stale = Duration::from_nanos(now.saturating_sub(self.heartbeat_ns).max(0) as u64)
            > stale_after(self.interval_ms);
        let gone = self.hostname == here && !alive(self.pid, &self.process);
        if stale || gone {
            self.status = TaskStatus::Failed.as_str().to_string();
            self.fail_reason = Some(INTERRUPTED.to_string());
            self.end_ns.get_or_insert(self.heartbeat_ns);
        }
        self
    }

    /// [`Self::effective`] against this host's processes.
    pub fn effective_here(self) -> TaskRecord {
        let host = super::lock::hostname();
        self.effective(now_ns(), &host, process_alive)
    }

    /// Percent done, where a total is known.
    pub fn percent(&self) -> Option<f64> {
        if self.status() == Some(TaskStatus::Succeeded) {
            return Some(100.0);
        }
        match self.total_bytes {
            Some(t) if t > 0 => Some((self.bytes as f64 * 100.0 / t as f64).min(100.0)),
            _ => None,
        }
    }

    /// Seconds left at the current rate, where a total is known.
    pub fn eta_seconds(&self) -> Option<u64> {
        if self.is_final() {
            return None;
        }
        match self.total_bytes {
            Some(t) if self.rate > 0 => Some(t.saturating_sub(self.bytes) / self.rate),
            _ => None,
        }
    }
}

/// Asks a task to stop: `cancels/<id>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub time_ns: i64,
    pub hostname: String,
    pub pid: u32,
}

/// A new task id (see the module documentation).
pub fn new_id(kind: &str, created_ns: i64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(created_ns);
    let mut r = [0u8; 4];
    getrandom::getrandom(&mut r).expect("the OS random source failed");
    format!(
        "{}-{kind}-{}",
        t.format("%Y-%m-%dT%H%M%S%.3fZ"),
        hex::encode(r)
    )
}

/// The creation time an id starts with.
pub fn id_time(id: &str) -> Option<i64> {
    let (t, _) = id.split_once('Z')?;
    chrono::NaiveDateTime::parse_from_str(&format!("{t}Z"), "%Y-%m-%dT%H%M%S%.3fZ")
        .ok()?
        .and_utc()
        .timestamp_nanos_opt()
}

/// Whether `id` can be a task id (so it is safe in an object key).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

pub fn record_key(id: &str) -> String {
    format!("tasks/{id}")
}

pub fn cancel_key(id: &str) -> String {
    format!("cancels/{id}")
}

/// Decodes a record's plaintext: the record version byte (format 2 or later), then
/// postcard. An unknown version or a layout that does not decode is an error, never a
/// panic.
pub fn decode<T: for<'a> Deserialize<'a>>(data: &[u8]) -> Result<T, String> {
    match data.split_first() {
        Some((&v, rest)) if (2..=RECORD_VERSION).contains(&v) => {
            postcard::from_bytes(rest).map_err(|e| format!("undecodable ({e})"))
        }
        Some((v, _)) => Err(format!("unknown object version {v}")),
        None => Err("empty object".to_string()),
    }
}

/// Whether task records can be written in this repository (its format is current).
pub fn persistable(repo: &Repository) -> bool {
    repo.require_current_format("a task record").is_ok()
}

fn read_sealed<T: for<'a> Deserialize<'a>>(repo: &Repository, key: &str) -> Result<T> {
    let blob = repo.store().get(key)?;
    let plain = repo
        .keys()
        .open(&blob, key.as_bytes())
        .map_err(|_| RepoError::damaged(key, "authentication failed"))?;
    decode(&plain).map_err(|e| RepoError::damaged(key, e))
}

fn write_sealed<T: Serialize>(repo: &Repository, key: &str, value: &T) -> Result<()> {
    let blob = repo.keys().seal(&encode_record(value), key.as_bytes());
    repo.store().put(key, &blob)?;
    Ok(())
}

/// Writes (or rewrites) a task's record.
pub fn write(repo: &Repository, rec: &TaskRecord) -> Result<()> {
    repo.require_current_format("a task record")?;
    write_sealed(repo, &record_key(&rec.id), rec)
}

/// Reads one task's record, as stored (see [`TaskRecord::effective`]).
pub fn read(repo: &Repository, id: &str) -> Result<TaskRecord> {
    if !valid_id(id) {
        return Err(RepoError::BadInput(format!("{id:?} is not a task id")));
    }
    match read_sealed::<TaskRecord>(repo, &record_key(id)) {
        Err(RepoError::Backend(e)) if e.is_not_found() => Err(RepoError::BadInput(format!(
            "no task {id} in the repository at {}",
            repo.location()
        ))),
        Ok(r) if r.id != id => Err(RepoError::damaged(
            record_key(id),
            format!("holds task {}", r.id),
        )),
        r => r,
    }
}

/// One listed task: its size in the listing, and its record or why it could not be read.
pub struct Listed {
    pub id: String,
    pub size: u64,
    pub record: Result<TaskRecord>,
}

/// The ids of every task record, oldest first, with their listed sizes.
pub fn list_ids(repo: &Repository) -> Result<Vec<(String, u64)>> {
    let mut ids: Vec<(String, u64)> = repo
        .store()
        .list("tasks/")?
        .into_iter()
        .filter_map(|o| {
            let id = o.key.strip_prefix("tasks/")?.to_string();
            valid_id(&id).then_some((id, o.size))
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// Every task, oldest first, read afresh (records gone since the listing are left out).
pub fn list(repo: &Repository) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for (id, size) in list_ids(repo)? {
        match read_sealed::<TaskRecord>(repo, &record_key(&id)) {
            Err(RepoError::Backend(e)) if e.is_not_found() => continue,
            record => out.push(Listed { id, size, record }),
        }
    }
    Ok(out)
}

/// Asks a task to stop (it sees it at its next heartbeat).
pub fn request_cancel(repo: &Repository, id: &str) -> Result<()> {
    repo.require_current_format("a cancel request")?;
    let req = CancelRequest {
        time_ns: now_ns(),
        hostname: super::lock::hostname(),
        pid: std::process::id(),
    };
    write_sealed(repo, &cancel_key(id), &req)
}

/// Whether someone asked the task to stop.
pub fn cancel_requested(repo: &Repository, id: &str) -> Result<bool> {
    Ok(repo.store().head(&cancel_key(id))?.is_some())
}

/// Removes a task's cancel request (once it stopped).
pub fn clear_cancel(repo: &Repository, id: &str) -> Result<()> {
    repo.store().delete(&cancel_key(id))?;
    Ok(())
}

/// The ids [`cleanup`] may remove, from the listing alone (oldest first): those created
/// more than `keep_age` before `now`, and all but the newest `keep_count`.
pub fn retention_candidates(
    ids: &[String],
    now: i64,
    keep_age: Duration,
    keep_count: usize,
) -> Vec<String> {
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort();
    let over = sorted.len().saturating_sub(keep_count);
    let limit = now.saturating_sub(keep_age.as_nanos().min(i64::MAX as u128) as i64);
    sorted
        .into_iter()
        .enumerate()
        .filter(|(i, id)| *i < over || id_time(id).is_none_or(|t| t < limit))
        .map(|(_, id)| id.clone())
        .collect()
}

/// Removes finished task records past the retention (see [`retention_candidates`]),
/// and the cancel requests of tasks that are over or gone; returns how many records
/// went. A candidate still running (as readers judge it) stays; one that cannot be
/// decoded goes (it is past the bound either way).
pub fn cleanup(repo: &Repository, keep_age: Duration, keep_count: usize) -> Result<usize> {
    repo.require_current_format("removing task records")?;
    let ids: Vec<String> = list_ids(repo)?.into_iter().map(|(id, _)| id).collect();
    let mut removed = 0;
    for id in retention_candidates(&ids, now_ns(), keep_age, keep_count) {
        let key = record_key(&id);
        let go = match read_sealed::<TaskRecord>(repo, &key) {
            Ok(r) => r.effective_here().is_final(),
            Err(RepoError::Backend(e)) if e.is_not_found() => false,
            Err(RepoError::Backend(e)) => return Err(e.into()),
            Err(_) => true,
        };
        if go {
            repo.store().delete(&key)?;
            let _ = repo.store().delete(&cancel_key(&id));
            removed += 1;
        }
    }
    let live: std::collections::HashSet<&String> = ids.iter().collect();
    for o in repo.store().list("cancels/")? {
        let id = o
            .key
            .strip_prefix("cancels/")
            .unwrap_or_default()
            .to_string();
        let over = !live.contains(&id)
            || read_sealed::<TaskRecord>(repo, &record_key(&id))
                .is_ok_and(|r| r.effective_here().is_final());
        if over {
            repo.store().delete(&o.key)?;
        }
    }
    Ok(removed)
}

// ---- processes ----

/// `<boot id> <start time>` of a process of this host, from /proc (None when it does
/// not exist; an empty string when /proc cannot tell more than that).
pub fn process_tag(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields after its last
    // ')' are state (3), ppid (4), ... starttime (22).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        // A zombie has exited: it only waits for its parent.
        return None;
    }
    let start = fields.get(19).copied().unwrap_or_default();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    Some(format!("{} {start}", boot.trim()))
}

/// This process's [`process_tag`].
pub fn own_process_tag() -> String {
    process_tag(std::process::id()).unwrap_or_default()
}

/// Whether process `pid` of this host runs and is the one `tag` names (an empty tag, as
/// written where /proc could not tell, matches any process of that pid).
pub fn process_alive(pid: u32, tag: &str) -> bool {
    match process_tag(pid) {
        None => false,
        Some(t) => tag.is_empty() || t == tag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: TaskStatus) -> TaskRecord {
        TaskRecord {
            id: new_id("backup", 1_000_000_000_000),
            kind: "backup".into(),
            vault: Some("v".into()),
            description: "/etc".into(),
            hostname: "here".into(),
            pid: 42,
            process: "boot 7".into(),
            status: status.as_str().into(),
            created_ns: 1_000_000_000_000,
            start_ns: Some(1_000_000_000_000),
            end_ns: None,
            heartbeat_ns: 1_000_000_000_000,
            interval_ms: 5000,
            bytes: 10,
            files: 1,
            total_bytes: Some(40),
            total_files: None,
            rate: 5,
            point: None,
            fail_reason: None,
        }
    }

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let r = record(TaskStatus::Running);
        let plain = encode_record(&r);
        assert_eq!(decode::<TaskRecord>(&plain).unwrap(), r);
        // Fields appended by a later version are ignored.
        let mut longer = plain.clone();
        longer.extend_from_slice(&[1, 2, 3]);
        assert_eq!(decode::<TaskRecord>(&longer).unwrap(), r);
        for bad in [&plain[..plain.len() / 2], &[][..], &[9, 1, 2][..], &[1][..]] {
            assert!(decode::<TaskRecord>(bad).is_err(), "{bad:?}");
        }
        assert_eq!(r.percent(), Some(25.0));
        assert_eq!(r.eta_seconds(), Some(6));
    }

    #[test]
    fn ids_sort_by_creation_and_carry_their_time() {
        let a = new_id("backup", 1_700_000_000_123_000_000);
        let b = new_id("prune", 1_700_000_001_000_000_000);
        assert!(a < b, "{a} {b}");
        assert!(valid_id(&a) && !valid_id("../x") && !valid_id("a/b") && !valid_id(""));
        assert_eq!(id_time(&a), Some(1_700_000_000_123_000_000));
        assert!(a.contains("-backup-"));
    }

    #[test]
    fn liveness_by_heartbeat_and_by_process() {
        let r = record(TaskStatus::Running);
        let beat = r.heartbeat_ns;
        let alive = |_: u32, _: &str| true;
        let dead = |_: u32, _: &str| false;
        // Fresh heartbeat, process alive: running.
        let e = r.clone().effective(beat + 1_000_000_000, "here", alive);
        assert_eq!(e.status, "running");
        // Same host, process gone: interrupted at once.
        let e = r.clone().effective(beat + 1_000_000_000, "here", dead);
        assert_eq!(e.status, "failed");
        assert_eq!(e.fail_reason.as_deref(), Some(INTERRUPTED));
        // Another host: the process is not checked, the heartbeat is.
        let e = r.clone().effective(beat + 1_000_000_000, "there", dead);
        assert_eq!(e.status, "running");
        let late = beat + stale_after(r.interval_ms).as_nanos() as i64 + 1;
        let e = r.clone().effective(late, "there", alive);
        assert_eq!(e.status, "failed");
        assert_eq!(e.end_ns, Some(beat));
        // A finished task stays as it is.
        let done = record(TaskStatus::Succeeded);
        assert_eq!(done.clone().effective(late, "here", dead), done);
        // Our own process is alive under its own tag, not under another.
        let me = std::process::id();
        assert!(process_alive(me, &own_process_tag()));
        assert!(process_alive(me, ""));
        assert!(!process_alive(me, "another boot 1"));
    }

    #[test]
    fn retention_by_age_and_count() {
        let day = 24 * 3600 * 1_000_000_000i64;
        let now = 100 * day;
        let ids: Vec<String> = (0..10)
            .map(|i| new_id("check", now - (10 - i) * day))
            .collect();
        // Age: created more than 7 days ago (3 of them: 10, 9, 8 days).
        let c = retention_candidates(&ids, now, KEEP_AGE, 1000);
        assert_eq!(c, ids[..3].to_vec());
        // Count: all but the newest 4 (age bound far away).
        let c = retention_candidates(&ids, now, Duration::from_secs(1 << 40), 4);
        assert_eq!(c, ids[..6].to_vec());
        // An id without a time is past any age bound.
        let c = retention_candidates(&["junk".to_string()], now, KEEP_AGE, 1000);
        assert_eq!(c, vec!["junk".to_string()]);
    }

    #[test]
    fn store_round_trip_cancel_and_cleanup() {
        let repo = crate::repo::memory_repo();
        let mut old = record(TaskStatus::Succeeded);
        old.id = new_id("check", now_ns() - 8 * 24 * 3600 * 1_000_000_000);
        let mut running_old = record(TaskStatus::Running);
        running_old.id = new_id("backup", now_ns() - 9 * 24 * 3600 * 1_000_000_000);
        running_old.hostname = "elsewhere".into();
        running_old.heartbeat_ns = now_ns();
        let mut fresh = record(TaskStatus::Failed);
        fresh.id = new_id("prune", now_ns());
        for r in [&old, &running_old, &fresh] {
            write(&repo, r).unwrap();
        }
        assert_eq!(read(&repo, &fresh.id).unwrap(), fresh);
        assert!(read(&repo, "nope").is_err());
        // A damaged record is listed as an error, not a panic.
        repo.store()
            .put("tasks/2026-01-01T000000.000Z-x-00", b"junk")
            .unwrap();
        let listed = list(&repo).unwrap();
        assert_eq!(listed.len(), 4);
        assert_eq!(listed.iter().filter(|l| l.record.is_err()).count(), 1);
        request_cancel(&repo, &fresh.id).unwrap();
        assert!(cancel_requested(&repo, &fresh.id).unwrap());
        assert!(!cancel_requested(&repo, &old.id).unwrap());
        // The old finished record and the damaged one go; the old one still running on
        // another host (fresh heartbeat) stays; so does the fresh one. Its cancel request
        // goes: the task is over.
        assert_eq!(cleanup(&repo, KEEP_AGE, KEEP_COUNT).unwrap(), 2);
        let left: Vec<String> = list_ids(&repo)
            .unwrap()
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(left, vec![running_old.id.clone(), fresh.id.clone()]);
        assert!(!cancel_requested(&repo, &fresh.id).unwrap());
    }
}
