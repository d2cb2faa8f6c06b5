//! Writer locks.
//!
//! A writer (backup, vault delete, point delete) creates `locks/<random>` holding its
//! host, pid, start time and command, then lists `locks/`. If another lock exists, the
//! writer removes its own and fails with a message naming the holder — unless that lock
//! is stale: held by a process of this host that no longer runs. Stale locks are
//! removed with a warning. Locks of other hosts are never removed automatically; `vaultfs
//! unlock` removes them. Readers take no lock: everything they read is immutable.
//!
//! Within one process the lock is shared: concurrent writers of one daemon (several
//! ingests through the mount) hold one lock object between them. That is safe because
//! writers never modify anything: each has its own packs, and manifests are committed
//! with create-only writes under distinct names.
//!
//! Prune is the one writer that deletes, so it takes the lock exclusively
//! ([`acquire_wait`]): it shares with nobody, not even writers of its own process, and
//! while it holds the lock a writer of its process fails as one of another process would.
//! A backup holds its lock from before it loads the index until after its manifest is
//! committed, so it can never deduplicate against a chunk that prune is deleting.
//! Lock order: `HELD` is never held while waiting or while talking to the store of
//! another repository.

use std::sync::{Arc, Mutex, Weak};

use super::format::{LockInfo, now_ns, rfc3339};
use super::{RepoError, Repository, Result};

/// Holds a lock until the last guard of this process is dropped.
pub struct LockGuard {
    _inner: Arc<Held>,
}

struct Held {
    repo: Arc<Repository>,
    key: String,
    /// Taken by [`acquire_wait`]: never shared.
    exclusive: bool,
}

/// Locks this process holds, by repository location.
static HELD: Mutex<Vec<(String, Weak<Held>)>> = Mutex::new(Vec::new());

impl Drop for Held {
    fn drop(&mut self) {
        if let Err(e) = super::failpoint::hit("lock.release") {
            tracing::warn!("could not remove lock {}: {e}", self.key);
            return;
        }
        if let Err(e) = self.repo.store().delete(&self.key) {
            tracing::warn!("could not remove lock {}: {e}", self.key);
        }
    }
}

pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A lock is stale when its process is gone from this host.
fn is_stale(info: &LockInfo, host: &str) -> bool {
    info.hostname == host && info.pid != std::process::id() && !process_alive(info.pid)
}

/// Takes the writer lock (or shares the one this process already holds).
pub fn acquire(repo: &Arc<Repository>, command: &str) -> Result<LockGuard> {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    held.retain(|(_, w)| w.strong_count() > 0);
    let location = repo.location();
    if let Some(inner) = held
        .iter()
        .find(|(l, _)| *l == location)
        .and_then(|(_, w)| w.upgrade())
    {
        if inner.exclusive {
            return Err(RepoError::Locked(format!(
                "the repository at {location} is locked by a prune of this process"
            )));
        }
        return Ok(LockGuard { _inner: inner });
    }
    let inner = Arc::new(take(repo, command, false)?);
    held.push((location, Arc::downgrade(&inner)));
    Ok(LockGuard { _inner: inner })
}

/// Takes the writer lock exclusively (shared with no other writer, also none of this
/// process), waiting up to `max_wait` for other writers to finish (see [`retry_locked`]).
pub fn acquire_wait(
    repo: &Arc<Repository>,
    command: &str,
    max_wait: std::time::Duration,
) -> Result<LockGuard> {
    let location = repo.location();
    retry_locked(max_wait, || {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|(_, w)| w.strong_count() > 0);
        if held.iter().any(|(l, _)| *l == location) {
            return Err(RepoError::Locked(format!(
                "the repository at {location} is locked by another writer of this process"
            )));
        }
        let inner = Arc::new(take(repo, command, true)?);
        held.push((location.clone(), Arc::downgrade(&inner)));
        Ok(LockGuard { _inner: inner })
    })
}

/// Like [`acquire`] (shared within this process), waiting up to `max_wait` for a writer
/// of another process (a prune, another backup) to finish: what backups and ingests do.
pub fn acquire_shared_wait(
    repo: &Arc<Repository>,
    command: &str,
    max_wait: std::time::Duration,
) -> Result<LockGuard> {
    retry_locked(max_wait, || acquire(repo, command))
}

/// Runs `attempt` until it is not `Locked`, polling with a backoff of 50 ms doubling up
/// to 5 s, with jitter, for at most `max_wait` (zero: once). After `max_wait` the error
/// names the holder, as [`acquire`]'s does.
fn retry_locked(
    max_wait: std::time::Duration,
    mut attempt: impl FnMut() -> Result<LockGuard>,
) -> Result<LockGuard> {
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(50);
    let mut told = false;
    loop {
        match attempt() {
            Ok(g) => return Ok(g),
            Err(RepoError::Locked(m)) => {
                let waited = start.elapsed();
                if waited >= max_wait {
                    return Err(RepoError::Locked(if max_wait.is_zero() {
                        m
                    } else {
                        format!("{m} (waited {}s)", waited.as_secs())
                    }));
                }
                if !told {
                    tracing::info!("waiting for the lock: {m}");
                    told = true;
                }
                let mut j = [0u8; 1];
                getrandom::getrandom(&mut j).expect("the OS random source failed");
                let jitter = pause / 4 * j[0] as u32 / 255;
                std::thread::sleep((pause + jitter).min(max_wait - waited));
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

fn take(repo: &Arc<Repository>, command: &str, exclusive: bool) -> Result<Held> {
    let host = hostname();
    let info = LockInfo {
        hostname: host.clone(),
        pid: std::process::id(),
        time_ns: now_ns(),
        command: command.to_string(),
    };
    let mut suffix = [0u8; 8];
    getrandom::getrandom(&mut suffix).expect("the OS random source failed");
    let key = format!("locks/{}", hex::encode(suffix));
    repo.write_object(&key, &info, true)?;
    let guard = Held {
        repo: repo.clone(),
        key: key.clone(),
        exclusive,
    };
    crate::failpoint!("lock.create");
    for other in repo.store().list("locks/")? {
        if other.key == key {
            continue;
        }
        let holder: LockInfo = match repo.read_object(&other.key) {
            Ok(h) => h,
            Err(RepoError::Backend(e)) if e.is_not_found() => continue, // released meanwhile
            Err(e) => return Err(e),
        };
        if is_stale(&holder, &host) {
            tracing::warn!(
                "removing stale lock {} of pid {} on {} (taken {})",
                other.key,
                holder.pid,
                holder.hostname,
                rfc3339(holder.time_ns)
            );
            eprintln!(
                "warning: removed a stale lock of pid {} on {} from {} ({})",
                holder.pid,
                holder.hostname,
                rfc3339(holder.time_ns),
                holder.command
            );
            repo.store().delete(&other.key)?;
            continue;
        }
        let how = if holder.hostname == host {
            "if that process is gone, run `vaultfs unlock`"
        } else {
            "if that process is gone, run `vaultfs unlock --all` (it is another machine's lock)"
        };
        return Err(RepoError::Locked(format!(
            "the repository at {} is locked by `{}` (pid {} on {}, since {}, {} ago); wait for it to finish, or pass --lock-wait; {how}",
            repo.location(),
            holder.command,
            holder.pid,
            holder.hostname,
            rfc3339(holder.time_ns),
            age(now_ns().saturating_sub(holder.time_ns))
        )));
    }
    Ok(guard)
}

/// A lock's age for people: `45s`, `12m`, `3h 05m`, `2d 04h`.
fn age(ns: i64) -> String {
    let s = ns.max(0) / 1_000_000_000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Lists the current locks.
pub fn list(repo: &Repository) -> Result<Vec<(String, LockInfo)>> {
    let mut out = Vec::new();
    for o in repo.store().list("locks/")? {
        match repo.read_object(&o.key) {
            Ok(info) => out.push((o.key, info)),
            Err(RepoError::Backend(e)) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Removes every lock (or only stale ones); returns how many were removed.
pub fn remove(repo: &Repository, all: bool) -> Result<usize> {
    let host = hostname();
    let mut n = 0;
    for (key, info) in list(repo)? {
        if all || is_stale(&info, &host) {
            repo.store().delete(&key)?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::{Duration, Instant};

    fn repo() -> Arc<Repository> {
        crate::repo::memory_repo()
    }

    #[test]
    fn an_exclusive_lock_waits_for_writers_and_shares_with_none() {
        let repo = repo();
        let backup = acquire(&repo, "backup v").unwrap();
        // Zero wait: fails at once while a writer of this process holds the lock.
        let e = acquire_wait(&repo, "prune", Duration::ZERO).err().unwrap();
        assert!(matches!(e, RepoError::Locked(_)), "{e}");
        assert_eq!(
            list(&repo).unwrap().len(),
            1,
            "the failed attempt left a lock"
        );
        // Waiting: gets it once the writer is done.
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(backup);
        });
        let start = Instant::now();
        let prune = acquire_wait(&repo, "prune", Duration::from_secs(30)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(150));
        t.join().unwrap();
        // While prune holds it, a writer of the same process does not share it.
        let e = acquire(&repo, "backup v").err().unwrap();
        assert!(e.to_string().contains("prune"), "{e}");
        let e = acquire_wait(&repo, "prune", Duration::ZERO).err().unwrap();
        assert!(matches!(e, RepoError::Locked(_)), "{e}");
        drop(prune);
        assert!(list(&repo).unwrap().is_empty());
        drop(acquire(&repo, "backup v").unwrap());
    }

    #[test]
    fn a_lock_of_another_process_makes_prune_wait_then_fail_naming_it() {
        let repo = repo();
        let other = LockInfo {
            hostname: "elsewhere".into(),
            pid: 1,
            time_ns: now_ns(),
            command: "backup db".into(),
        };
        repo.write_object("locks/other", &other, true).unwrap();
        let e = acquire_wait(&repo, "prune", Duration::from_millis(300))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`backup db`") && e.contains("waited"), "{e}");
        assert_eq!(list(&repo).unwrap().len(), 1);
    }
}
