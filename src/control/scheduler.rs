//! The scheduler: runs each vault's policy on time (`vaultfs serve`, and the mount unless
//! `--no-schedule`).
//!
//! At each due time of a vault's enabled policy ([`crate::repo::schedule`]), the
//! scheduler of a host backs up the vault's resources of that host into one point marked
//! as scheduled (`Trigger::Policy`), then applies the vault's retention (forget, with
//! [`Repository::effective_retention`]); a host without resources of the vault skips it
//! with a log line. On each due time of a policy's prune schedule it prunes the
//! repository. Each of these runs through one function of its kind: [`backup_job`],
//! [`forget_job`], [`prune_job`], and each is a task (`control::tasks::run`): seen by
//! `vaultfs tasks` and in every mount's `.vaultfs/tasks/`, cancellable like any other
//! (a backup polls its flag; forget and prune run over the store wrapped so that a
//! cancel stops their next call).
//!
//! Invariants:
//! - **A missed run is made once.** After a run, the due time it was for is stored in
//!   `schedule/backup/<vault>/<host>` (`schedule/prune/<policy>/<host>` for prunes). A
//!   tick runs a job when the latest due time at or before now is later than the stored
//!   one (when none is stored: than the time the policy was applied to the vault, or
//!   for prunes the policy's creation), so any number of due times missed while no
//!   scheduler ran give one run, at start.
//! - **Runs of one vault never overlap.** A job in flight is in the `running` set; a
//!   tick skips its vault (and one prune at a time runs), and once it ends a tick sees
//!   whether another due time passed meanwhile (then one more run).
//! - **One scheduler per host and repository acts.** [`HostLock`] is an `flock` on a
//!   file named after the repository id, under `/run/vaultfs` (or the temp dir); the
//!   kernel releases it when its process dies. A second scheduler says so, idles, and
//!   tries again at each tick.
//!
//! Each tick reads the policies, the vaults and the states afresh (another process may
//! have changed them), so the loop wakes at the next due time or after `refresh`,
//! whichever comes first. Jobs run on threads of their own, so a long backup of one
//! vault does not delay another's. Time comes from a [`Clock`], which tests drive.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::control::tasks::{self, TaskFailure, TaskKind, TaskSpec};
use crate::repo::backup::BackupOptions;
use crate::repo::cancel::{Cancel, CancellingStore};
use crate::repo::format::{Policy, ScheduleState, Trigger, now_ns, rfc3339};
use crate::repo::policy::{self, backup_state_key, prune_state_key};
use crate::repo::{RepoError, Repository, lock};
use crate::sync::lock as guard;

/// Where time comes from.
pub trait Clock: Send + Sync {
    /// Now, in nanoseconds since the epoch.
    fn now_ns(&self) -> i64;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        now_ns()
    }
}

/// A clock that tests set.
#[derive(Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(t_ns: i64) -> Self {
        ManualClock(t_ns.into())
    }
    pub fn set(&self, t_ns: i64) {
        self.0.store(t_ns, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// What a scheduled backup did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackupOutcome {
    /// The point made, and how many resources it skipped.
    Point { name: String, skipped: usize },
    /// The host has no resources of the vault: nothing to do.
    NoResources,
}

/// The jobs a scheduler runs; [`RepoJobs`] runs them on the repository, tests count them.
pub trait Jobs: Send + Sync {
    fn backup(&self, vault: &str, policy: &str) -> Result<BackupOutcome, RepoError>;
    /// Returns the points removed.
    fn forget(&self, vault: &str) -> Result<Vec<String>, RepoError>;
    fn prune(&self) -> Result<(), RepoError>;
}

/// How long a scheduled job waits for another writer (a prune, a backup of another
/// process) before it fails.
const LOCK_WAIT: Duration = Duration::from_secs(3600);

/// A scheduled backup: the vault's resources of this host, into one point marked as made
/// by `policy`.
pub fn backup_job(
    repo: &Arc<Repository>,
    vault: &str,
    policy: &str,
) -> Result<BackupOutcome, RepoError> {
    if repo.resources_of_this_host(vault)?.is_empty() {
        return Ok(BackupOutcome::NoResources);
    }
    let spec = TaskSpec {
        kind: TaskKind::Backup,
        vault: Some(vault),
        description: format!("scheduled backup of {vault}'s resources (policy {policy})"),
        cancel: Cancel::default(),
    };
    let r = tasks::run(
        repo,
        spec,
        |r: &crate::repo::backup::BackupResult| Some(r.manifest.name.clone()),
        |task| {
            let opts = BackupOptions {
                lock_wait: LOCK_WAIT,
                trigger: Trigger::Policy(policy.to_string()),
                progress: task.progress.clone(),
                cancel: task.cancel.clone(),
                ..Default::default()
            };
            crate::repo::resources::backup_resources(repo, vault, &opts)
        },
    )
    .map_err(task_error)?;
    Ok(BackupOutcome::Point {
        name: r.manifest.name,
        skipped: r.manifest.skipped_resources.len(),
    })
}

/// A task's failure as the scheduler logs it.
fn task_error(e: TaskFailure<RepoError>) -> RepoError {
    match e {
        TaskFailure::Failed(e) => e,
        TaskFailure::Cancelled { id } => {
            tracing::info!("task {id} was cancelled");
            RepoError::Cancelled
        }
    }
}

/// Runs a job that does not poll its cancel flag as a task: over the repository's store
/// wrapped so that a cancel stops the job's next store call.
fn as_task<T>(
    repo: &Arc<Repository>,
    kind: TaskKind,
    vault: Option<&str>,
    description: String,
    job: impl FnOnce(&Arc<Repository>, &Arc<crate::repo::walk::Progress>) -> Result<T, RepoError>,
) -> Result<T, RepoError> {
    let cancel = Cancel::default();
    let wrapped = repo.over_store(CancellingStore::wrap(repo.store().clone(), cancel.clone()));
    let spec = TaskSpec {
        kind,
        vault,
        description,
        cancel,
    };
    tasks::run(repo, spec, |_| None, |t| job(&wrapped, &t.progress)).map_err(task_error)
}

/// The vault's retention after a scheduled backup: what `forget VAULT` with no rules
/// does (the newest point always stays). Returns the points removed.
pub fn forget_job(repo: &Arc<Repository>, vault: &str) -> Result<Vec<String>, RepoError> {
    let v = repo.load_vault(vault)?;
    let retention = repo.effective_retention(&v)?;
    if !policy::has_rules(&retention) {
        return Ok(Vec::new());
    }
    let description = format!("scheduled retention of {vault}");
    as_task(
        repo,
        TaskKind::Forget,
        Some(vault),
        description,
        |repo, _| forget_now(repo, vault, &retention),
    )
}

fn forget_now(
    repo: &Arc<Repository>,
    vault: &str,
    retention: &crate::repo::format::Retention,
) -> Result<Vec<String>, RepoError> {
    let tz = match &retention.timezone {
        Some(name) => name
            .parse::<chrono_tz::Tz>()
            .map_err(|_| RepoError::BadInput(format!("unknown time zone {name:?}")))?,
        None => chrono_tz::Tz::UTC,
    };
    let _lock = lock::acquire_shared_wait(repo, &format!("forget {vault}"), LOCK_WAIT)?;
    repo.finish_deletions(vault)?;
    let plan = repo.forget_plan(vault, &policy::keep_rules(retention), tz, now_ns())?;
    let remove: Vec<String> = plan
        .iter()
        .filter(|(_, d)| !d.keep)
        .map(|(r, _)| r.name().to_string())
        .collect();
    if !remove.is_empty() {
        repo.delete_points(vault, &remove, false)?;
    }
    Ok(remove)
}

/// A scheduled prune of the repository (default settings; waits for other writers).
pub fn prune_job(repo: &Arc<Repository>) -> Result<(), RepoError> {
    let opts = crate::repo::prune::PruneOptions {
        dry_run: false,
        max_unused_percent: 10.0,
        lock_wait: LOCK_WAIT,
        progress: None,
    };
    let description = "scheduled prune".to_string();
    as_task(
        repo,
        TaskKind::Prune,
        None,
        description,
        |repo, progress| {
            let opts = crate::repo::prune::PruneOptions {
                progress: Some(progress.clone()),
                ..opts
            };
            crate::repo::prune::prune(repo, &opts).map(|_| ())
        },
    )
}

/// The jobs on a repository.
pub struct RepoJobs(pub Arc<Repository>);

impl Jobs for RepoJobs {
    fn backup(&self, vault: &str, policy: &str) -> Result<BackupOutcome, RepoError> {
        backup_job(&self.0, vault, policy)
    }
    fn forget(&self, vault: &str) -> Result<Vec<String>, RepoError> {
        forget_job(&self.0, vault)
    }
    fn prune(&self) -> Result<(), RepoError> {
        prune_job(&self.0)
    }
}

/// The host-wide lock that lets one scheduler per repository act.
pub struct HostLock {
    _file: std::fs::File,
}

impl HostLock {
    /// The lock file of a repository: `/run/vaultfs/scheduler-<repository id>.lock`, or
    /// under the temp dir when `/run/vaultfs` cannot be made.
    pub fn path(repo: &Repository) -> std::path::PathBuf {
        let name = format!("scheduler-{}.lock", hex::encode(repo.config().repo_id));
        let run = std::path::Path::new("/run/vaultfs");
        if std::fs::create_dir_all(run).is_ok() && writable(run) {
            run.join(name)
        } else {
            std::env::temp_dir().join(name)
        }
    }

    /// Takes the lock; `Ok(None)` when another process holds it (`Err` only when the
    /// file cannot be opened).
    pub fn try_take(path: &std::path::Path) -> std::io::Result<Option<HostLock>> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                file.set_len(0)?;
                writeln!(file, "{}", std::process::id())?;
                Ok(Some(HostLock { _file: file }))
            }
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The pid written by the holder, if readable.
    pub fn holder(path: &std::path::Path) -> Option<u32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }
}

fn writable(dir: &std::path::Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

/// Where the scheduler's log lines go (serve prints them, the mount too).
pub type Say = Arc<dyn Fn(&str) + Send + Sync>;

/// The scheduler of one repository on this host.
pub struct Scheduler {
    repo: Arc<Repository>,
    clock: Arc<dyn Clock>,
    jobs: Arc<dyn Jobs>,
    host: String,
    say: Say,
    /// Job keys in flight: `backup <vault>`, `prune`.
    running: Arc<Mutex<HashSet<String>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// What the last tick said of the next due times, so a repeated line is not logged
    /// again at every tick.
    told: Mutex<BTreeMap<String, String>>,
}

/// A handle to stop a scheduler's loop from another thread.
#[derive(Clone)]
pub struct Stopper(Arc<(Mutex<bool>, Condvar)>);

impl Stopper {
    pub fn stop(&self) {
        *guard(&self.0.0) = true;
        self.0.1.notify_all();
    }
}

impl Scheduler {
    pub fn new(
        repo: Arc<Repository>,
        clock: Arc<dyn Clock>,
        jobs: Arc<dyn Jobs>,
        say: Say,
    ) -> Self {
        Scheduler {
            repo,
            clock,
            jobs,
            host: lock::hostname(),
            say,
            running: Arc::default(),
            threads: Mutex::default(),
            stop: Arc::default(),
            told: Mutex::default(),
        }
    }

    /// The scheduler with the system clock and the repository's jobs, logging with `say`.
    pub fn system(repo: Arc<Repository>, say: Say) -> Self {
        let jobs = Arc::new(RepoJobs(repo.clone()));
        Scheduler::new(repo, Arc::new(SystemClock), jobs, say)
    }

    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// Whether a job is in flight.
    pub fn busy(&self) -> bool {
        !guard(&self.running).is_empty()
    }

    /// Waits for the jobs in flight to end.
    pub fn join_jobs(&self) {
        let threads = std::mem::take(&mut *guard(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Looks at every vault and policy once: starts the jobs due now (on their own
    /// threads) and returns the next due time of any job, if any.
    pub fn tick(&self) -> Result<Option<i64>, RepoError> {
        let now = self.clock.now_ns();
        let mut policies: BTreeMap<String, Policy> = BTreeMap::new();
        for name in self.repo.list_policies()? {
            match self.repo.load_policy(&name) {
                Ok(p) => {
                    policies.insert(name, p);
                }
                Err(e) => self.tell(&format!("policy {name}"), &format!("policy {name}: {e}")),
            }
        }
        let mut next: Option<i64> = None;
        let mut earliest = |t: Option<i64>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: i64| n.min(t)));
            }
        };
        let mut applied: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for vault in self.repo.list_vaults()? {
            let v = match self.repo.load_vault(&vault) {
                Ok(v) => v,
                // Deleted since the listing.
                Err(RepoError::VaultNotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let Some(pname) = v.policy.clone() else {
                continue;
            };
            let Some(p) = policies.get(&pname) else {
                self.tell(
                    &format!("vault {vault}"),
                    &format!("vault {vault}: its policy {pname} does not exist; nothing runs"),
                );
                continue;
            };
            if !p.enabled {
                continue;
            }
            applied
                .entry(pname.clone())
                .or_default()
                .push(vault.clone());
            let schedule = match policy::backup_schedule(p) {
                Ok(s) => s,
                Err(e) => {
                    self.tell(&format!("vault {vault}"), &e.to_string());
                    continue;
                }
            };
            let key = backup_state_key(&vault, &self.host);
            let since = match self.repo.schedule_state(&key)? {
                Some(s) => s.last_slot_ns,
                None => v.policy_applied_ns.unwrap_or(now),
            };
            if let Some(slot) = schedule.latest_at_or_before(now).filter(|&s| s > since) {
                // Due times between the last run and this one: missed (no scheduler ran,
                // or the last run was still going), covered by this one run.
                let missed = schedule
                    .next_n(since, 1000)
                    .into_iter()
                    .take_while(|&t| t < slot)
                    .count();
                self.start_backup(&vault, &pname, slot, missed);
            }
            let upcoming = schedule.next_after(now);
            if let Some(t) = upcoming {
                self.tell(
                    &format!("vault {vault}"),
                    &format!(
                        "vault {vault}: next backup at {} (policy {pname})",
                        rfc3339(t)
                    ),
                );
            }
            earliest(upcoming);
        }
        for (pname, vaults) in &applied {
            let p = &policies[pname];
            let Ok(schedule) = policy::prune_schedule(p) else {
                continue;
            };
            let key = prune_state_key(pname, &self.host);
            let since = match self.repo.schedule_state(&key)? {
                Some(s) => s.last_slot_ns,
                None => p.created_ns,
            };
            if let Some(slot) = schedule.latest_at_or_before(now).filter(|&s| s > since) {
                self.start_prune(pname, vaults, slot);
            }
            earliest(schedule.next_after(now));
        }
        Ok(next)
    }

    /// Logs `line` unless the last line logged for `about` was the same.
    fn tell(&self, about: &str, line: &str) {
        let mut told = guard(&self.told);
        if told.get(about).map(String::as_str) != Some(line) {
            told.insert(about.to_string(), line.to_string());
            (self.say)(line);
        }
    }

    /// Starts `job` under `key` on a thread of its own unless a job of that key runs.
    fn spawn(&self, key: String, job: impl FnOnce() + Send + 'static) -> bool {
        {
            let mut running = guard(&self.running);
            if !running.insert(key.clone()) {
                return false;
            }
        }
        let running = self.running.clone();
        let handle = std::thread::Builder::new()
            .name("scheduled".into())
            .spawn(move || {
                job();
                guard(&running).remove(&key);
            });
        match handle {
            Ok(h) => {
                let mut threads = guard(&self.threads);
                threads.retain(|t| !t.is_finished());
                threads.push(h);
                true
            }
            Err(e) => {
                (self.say)(&format!("cannot start a scheduled job: {e}"));
                false
            }
        }
    }

    fn start_backup(&self, vault: &str, policy: &str, slot: i64, missed: usize) {
        let (repo, jobs, say) = (self.repo.clone(), self.jobs.clone(), self.say.clone());
        let (vault, policy, host) = (vault.to_string(), policy.to_string(), self.host.clone());
        let key = format!("backup {vault}");
        let missed = match missed {
            0 => String::new(),
            n => format!(" ({n} earlier due time(s) missed: one run for all)"),
        };
        let line = format!(
            "vault {vault}: scheduled backup for {} (policy {policy}){missed}",
            rfc3339(slot)
        );
        let clock = self.clock.clone();
        self.spawn(key, move || {
            say(&line);
            let mut error = None;
            match jobs.backup(&vault, &policy) {
                Ok(BackupOutcome::NoResources) => {
                    say(&format!(
                        "vault {vault}: no resources on this host; nothing backed up"
                    ));
                }
                Ok(BackupOutcome::Point { name, skipped }) => {
                    say(&format!(
                        "vault {vault}: point {name} taken{}",
                        if skipped > 0 {
                            format!(", {skipped} resource(s) skipped")
                        } else {
                            String::new()
                        }
                    ));
                    match jobs.forget(&vault) {
                        Ok(removed) if removed.is_empty() => {}
                        Ok(removed) => say(&format!(
                            "vault {vault}: retention removed {}",
                            removed.join(", ")
                        )),
                        Err(e) => {
                            say(&format!("vault {vault}: retention failed: {e}"));
                            error = Some(format!("retention: {e}"));
                        }
                    }
                }
                Err(e) => {
                    say(&format!("vault {vault}: scheduled backup failed: {e}"));
                    error = Some(e.to_string());
                }
            }
            let state = ScheduleState {
                last_slot_ns: slot,
                last_run_end_ns: clock.now_ns(),
                last_error: error,
            };
            match repo.write_schedule_state(&backup_state_key(&vault, &host), &state) {
                Ok(()) => say(&format!("vault {vault}: run done")),
                Err(e) => say(&format!("vault {vault}: cannot record the run: {e}")),
            }
        });
    }

    fn start_prune(&self, policy: &str, vaults: &[String], slot: i64) {
        let (repo, jobs, say, clock) = (
            self.repo.clone(),
            self.jobs.clone(),
            self.say.clone(),
            self.clock.clone(),
        );
        let key = prune_state_key(policy, &self.host);
        let line = format!(
            "prune for {} (policy {policy}, vaults {})",
            rfc3339(slot),
            vaults.join(", ")
        );
        self.spawn("prune".to_string(), move || {
            say(&line);
            let error = match jobs.prune() {
                Ok(()) => {
                    say("prune done");
                    None
                }
                Err(e) => {
                    say(&format!("prune failed: {e}"));
                    Some(e.to_string())
                }
            };
            let state = ScheduleState {
                last_slot_ns: slot,
                last_run_end_ns: clock.now_ns(),
                last_error: error,
            };
            if let Err(e) = repo.write_schedule_state(&key, &state) {
                say(&format!("cannot record the prune: {e}"));
            }
        });
    }

    /// Runs until stopped: ticks at each due time and at least every `refresh`, while it
    /// holds the host lock (idling, and trying again every `refresh`, while another
    /// scheduler holds it). Waits for the jobs in flight before it returns.
    pub fn run(&self, refresh: Duration) {
        let path = HostLock::path(&self.repo);
        let mut held: Option<HostLock> = None;
        let mut said_idle = false;
        loop {
            if *guard(&self.stop.0) {
                break;
            }
            let mut wait = refresh;
            if held.is_none() {
                match HostLock::try_take(&path) {
                    Ok(Some(l)) => {
                        (self.say)(&format!(
                            "acting as the scheduler of the repository at {} on this host",
                            self.repo.location()
                        ));
                        held = Some(l);
                    }
                    Ok(None) => {
                        if !said_idle {
                            (self.say)(&format!(
                                "another scheduler (pid {}) acts for the repository at {} on this host; this one idles",
                                HostLock::holder(&path)
                                    .map_or_else(|| "?".to_string(), |p| p.to_string()),
                                self.repo.location()
                            ));
                            said_idle = true;
                        }
                    }
                    Err(e) => {
                        (self.say)(&format!(
                            "cannot open the scheduler lock {}: {e}; this one idles",
                            path.display()
                        ));
                        said_idle = true;
                    }
                }
            }
            if held.is_some() {
                match self.tick() {
                    Ok(Some(next)) => {
                        let until = (next - self.clock.now_ns()).max(0) as u64;
                        // Wake just past the due time: second 00 has begun.
                        wait = wait.min(Duration::from_nanos(until) + Duration::from_millis(20));
                    }
                    Ok(None) => {}
                    Err(e) => (self.say)(&format!("scheduler: {e}")),
                }
            }
            let (stop, cv) = &*self.stop;
            let stopped = guard(stop);
            if *stopped {
                break;
            }
            let _ = cv.wait_timeout(stopped, wait);
        }
        if self.busy() {
            (self.say)("waiting for the running jobs to end");
        }
        self.join_jobs();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::format::Retention;

    const DAY: i64 = 86_400_000_000_000;

    /// Jobs that record what ran; a backup waits for `gate` when one is set.
    #[derive(Default)]
    struct FakeJobs {
        calls: Mutex<Vec<String>>,
        gate: Mutex<Option<crossbeam_channel::Receiver<()>>>,
    }

    impl FakeJobs {
        fn calls(&self) -> Vec<String> {
            guard(&self.calls).clone()
        }
        /// The calls other than prunes (which run on threads of their own).
        fn vault_calls(&self) -> Vec<String> {
            self.calls().into_iter().filter(|c| c != "prune").collect()
        }
        fn prunes(&self) -> usize {
            self.calls().iter().filter(|c| *c == "prune").count()
        }
    }

    impl Jobs for FakeJobs {
        fn backup(&self, vault: &str, policy: &str) -> Result<BackupOutcome, RepoError> {
            let gate = guard(&self.gate).clone();
            if let Some(g) = gate {
                let _ = g.recv();
            }
            guard(&self.calls).push(format!("backup {vault} {policy}"));
            Ok(BackupOutcome::Point {
                name: "p".into(),
                skipped: 0,
            })
        }
        fn forget(&self, vault: &str) -> Result<Vec<String>, RepoError> {
            guard(&self.calls).push(format!("forget {vault}"));
            Ok(Vec::new())
        }
        fn prune(&self) -> Result<(), RepoError> {
            guard(&self.calls).push("prune".into());
            Ok(())
        }
    }

    fn policy(name: &str, rule: &str, prune: &str) -> Policy {
        Policy {
            name: name.into(),
            schedules: vec![rule.into()],
            timezone: "UTC".into(),
            retention: Retention::default(),
            prune_schedule: prune.into(),
            enabled: true,
            created_ns: 0,
            updated_ns: 0,
        }
    }

    /// A repository with vault `v` under policy `daily`, a scheduler on a clock set to
    /// now, and the policy's first due time.
    fn setup() -> (
        Arc<Repository>,
        Arc<ManualClock>,
        Arc<FakeJobs>,
        Scheduler,
        i64,
    ) {
        let repo = crate::repo::memory_repo();
        repo.create_vault("v", "").unwrap();
        repo.create_vault("other", "").unwrap();
        // Backups at HH:30 daily and prunes at HH+2:00, HH two hours from now: so the
        // policy's first due times of either kind come after its creation.
        let h = (chrono::Timelike::hour(&chrono::Utc::now()) + 2) % 24;
        let p = repo
            .create_policy(policy(
                "daily",
                &format!("FREQ=DAILY;BYHOUR={h};BYMINUTE=30"),
                &format!("FREQ=DAILY;BYHOUR={};BYMINUTE=0", (h + 2) % 24),
            ))
            .unwrap();
        repo.apply_policy("daily", "v").unwrap();
        let now = now_ns();
        let clock = Arc::new(ManualClock::new(now));
        let jobs = Arc::new(FakeJobs::default());
        let s = Scheduler::new(
            repo.clone(),
            clock.clone(),
            jobs.clone(),
            Arc::new(|_: &str| {}),
        );
        let first = policy::backup_schedule(&p)
            .unwrap()
            .next_after(now)
            .unwrap();
        (repo, clock, jobs, s, first)
    }

    fn tick(s: &Scheduler) -> Option<i64> {
        let next = s.tick().unwrap();
        s.join_jobs();
        next
    }

    #[test]
    fn due_times_run_the_backup_then_the_retention_once_each() {
        let (_repo, clock, jobs, s, first) = setup();
        // Before the first due time: nothing runs, and the tick says when to wake.
        clock.set(first - 1_000_000_000);
        assert_eq!(tick(&s), Some(first));
        assert!(jobs.calls().is_empty());
        clock.set(first);
        assert_eq!(
            tick(&s),
            Some(first + 90 * 60_000_000_000),
            "the prune at 04:00 is next"
        );
        assert_eq!(jobs.calls(), ["backup v daily", "forget v"]);
        // The same due time never runs twice.
        tick(&s);
        assert_eq!(jobs.calls().len(), 2);
        // The prune schedule's due time.
        clock.set(first + 90 * 60_000_000_000);
        tick(&s);
        tick(&s);
        assert_eq!(jobs.calls()[2..], ["prune"]);
        clock.set(first + DAY);
        tick(&s);
        assert_eq!(jobs.calls()[3..], ["backup v daily", "forget v"]);
        assert_eq!(jobs.prunes(), 1);
    }

    #[test]
    fn due_times_missed_while_stopped_run_once() {
        let (repo, clock, jobs, s, first) = setup();
        clock.set(first);
        tick(&s);
        assert_eq!(jobs.calls().len(), 2);
        // Five days without a scheduler: one backup at start, for the latest due time.
        clock.set(first + 5 * DAY + 3_600_000_000_000);
        tick(&s);
        tick(&s);
        let backups = jobs
            .calls()
            .iter()
            .filter(|c| c.starts_with("backup"))
            .count();
        assert_eq!(backups, 2, "{:?}", jobs.calls());
        // And the prunes missed meanwhile: one.
        assert_eq!(jobs.prunes(), 1);
        let state = repo
            .schedule_state(&backup_state_key("v", &lock::hostname()))
            .unwrap()
            .unwrap();
        assert_eq!(state.last_slot_ns, first + 5 * DAY);
        // A new scheduler (a restart) finds the state: nothing more is due.
        let again = Scheduler::new(
            repo.clone(),
            clock.clone(),
            jobs.clone(),
            Arc::new(|_: &str| {}),
        );
        tick(&again);
        assert_eq!(
            jobs.calls()
                .iter()
                .filter(|c| c.starts_with("backup"))
                .count(),
            2
        );
    }

    #[test]
    fn a_policy_applied_while_no_scheduler_ran_counts_from_then() {
        let (repo, clock, jobs, s, first) = setup();
        // Never ran on this host, applied before two due times: one run at start.
        clock.set(first + DAY + 1);
        tick(&s);
        assert_eq!(jobs.vault_calls(), ["backup v daily", "forget v"]);
        // Removed: nothing runs for it. Applied to another vault (now, before the
        // clock's three due times): one run.
        repo.remove_policy("v").unwrap();
        clock.set(first + 3 * DAY);
        tick(&s);
        assert_eq!(jobs.vault_calls().len(), 2, "no policy, nothing runs");
        repo.apply_policy("daily", "other").unwrap();
        tick(&s);
        tick(&s);
        assert_eq!(
            jobs.vault_calls()[2..],
            ["backup other daily", "forget other"]
        );
        // Applied again after the latest due time: nothing before it counts.
        repo.remove_policy("other").unwrap();
        clock.set(now_ns() + 1);
        repo.apply_policy("daily", "other").unwrap();
        tick(&s);
        assert_eq!(jobs.vault_calls().len(), 4);
        // Disabled: nothing runs, nothing is due.
        let mut p = repo.load_policy("daily").unwrap();
        p.enabled = false;
        repo.update_policy(&mut p).unwrap();
        clock.set(first + 5 * DAY);
        let prunes = jobs.prunes();
        assert_eq!(tick(&s), None);
        assert_eq!((jobs.vault_calls().len(), jobs.prunes()), (4, prunes));
    }

    #[test]
    fn runs_of_one_vault_never_overlap() {
        let (_repo, clock, jobs, s, first) = setup();
        let (open, gate) = crossbeam_channel::unbounded();
        *guard(&jobs.gate) = Some(gate);
        clock.set(first);
        s.tick().unwrap();
        assert!(s.busy());
        // The next due time comes while the backup still runs: no second run starts.
        clock.set(first + DAY);
        s.tick().unwrap();
        s.tick().unwrap();
        open.send(()).unwrap();
        s.join_jobs();
        assert_eq!(jobs.vault_calls(), ["backup v daily", "forget v"]);
        // Once it ended, the due time that passed meanwhile runs, once.
        open.send(()).unwrap();
        tick(&s);
        tick(&s);
        assert_eq!(jobs.vault_calls()[2..], ["backup v daily", "forget v"]);
    }

    #[test]
    fn a_host_without_resources_backs_up_nothing() {
        let repo = crate::repo::memory_repo();
        repo.create_vault("v", "").unwrap();
        let p = repo
            .create_policy(policy("hourly", "FREQ=HOURLY", DEFAULT_PRUNE))
            .unwrap();
        repo.apply_policy("hourly", "v").unwrap();
        let first = policy::backup_schedule(&p)
            .unwrap()
            .next_after(now_ns())
            .unwrap();
        let clock = Arc::new(ManualClock::new(first));
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = said.clone();
        let s = Scheduler::new(
            repo.clone(),
            clock,
            Arc::new(RepoJobs(repo.clone())),
            Arc::new(move |l: &str| guard(&log).push(l.to_string())),
        );
        tick(&s);
        let said = guard(&said).clone();
        assert!(
            said.iter()
                .any(|l| l == "vault v: no resources on this host; nothing backed up"),
            "{said:?}"
        );
        assert!(repo.list_points("v").unwrap().is_empty());
    }

    const DEFAULT_PRUNE: &str = crate::repo::policy::DEFAULT_PRUNE_SCHEDULE;

    #[test]
    fn one_scheduler_per_host_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scheduler.lock");
        let first = HostLock::try_take(&path).unwrap().expect("free");
        assert_eq!(HostLock::holder(&path), Some(std::process::id()));
        // flock locks belong to the open file: a second open, even in this process, is
        // refused while the first is held.
        assert!(HostLock::try_take(&path).unwrap().is_none());
        drop(first);
        assert!(HostLock::try_take(&path).unwrap().is_some());
    }
}
