//! The writable corners of the mount: `.vaultfs/incoming/<vault>/` (a snapshot file
//! written there becomes a recovery point, see `control::ingest`), vault `mkdir`/`rmdir`
//! at the root, and `rmdir` of a recovery point when the mount allows deletes.
//!
//! An ingested file shows in `incoming/<vault>/` while it is written; `close()` (the FUSE
//! flush) waits for the commit and returns its outcome: 0 once the point is durable, EIO
//! (or ENOSPC) when it failed. Then the file disappears from `incoming/` and the new point
//! appears in the vault at once; the task file in `.vaultfs/tasks/` keeps the outcome.
//! Only the mount's owner and root may write there (EACCES otherwise).
//!
//! A point is made only from a write that completed and that the writer meant to finish:
//! - Only a `close()` by the process that wrote last, after something was written, ends
//!   the ingest: `dd` and shells open the file, `dup2` it and close the original before
//!   writing, and a child that inherited the descriptor closes it when it execs; those
//!   closes flush too, and must not commit a half-written file. (A file written by several
//!   processes in turn is committed at the first close of the one that wrote last.)
//! - A close that comes from the exit of a writer that failed (killed by a signal, or
//!   exiting with a non-zero status while it still held the file open: `timeout cp`,
//!   `kill -9`, Ctrl-C) abandons the ingest. The kernel sends that FLUSH from the exiting
//!   task, which waits for the answer, so `/proc/<pid>/stat` still shows it exiting
//!   (`PF_EXITING`) with its exit code set.
//! - A failed write fails the ingest: the next close answers the error.
//! - A file with a temporary name (rsync's `.name.XXXXXX`) is committed when it is renamed
//!   to its final name (the rename answers the outcome), and abandoned when removed: an
//!   interrupted rsync deletes its temporary file.
//! - A tar must reach its end-of-archive blocks (see `repo::ingest`).
//!
//! A finished file stays visible for [`LINGER`], so that tools which stat, chmod, touch
//! and rename a file after closing it see it; the backup carries the file's final name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::control::ingest::IngestSession;
use crate::control::tasks::TaskRegistry;
use crate::repo::format::now_ns;
use crate::repo::{RepoError, Repository, lock as repo_lock};
use crate::sync::lock;

use super::handles::{Handles, Open};
use super::inodes::{Body, CONTROL_NAME, Control, Key, ROOT_INO};
use super::namespace::Namespace;
use super::reply::{CONTROL_TTL, Entry, FsError, Inval, Opened, Result};

/// How long a finished file stays visible in incoming/.
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

fn visible(s: &IngestSession) -> bool {
    s.finished_for().is_none_or(|t| t < LINGER)
}

/// See the module documentation.
#[derive(Debug)]
pub struct Incoming {
    repo: Arc<Repository>,
    /// Files being ingested in incoming/, by inode.
    sessions: Mutex<HashMap<u64, Arc<IngestSession>>>,
    /// The mount's owner: with root, the only one who may write.
    owner: u32,
    /// Whether `rmdir` of a recovery point deletes it (EPERM otherwise).
    pub allow_delete: bool,
}

impl Incoming {
    pub fn new(repo: Arc<Repository>, owner: u32, allow_delete: bool) -> Incoming {
        Incoming {
            repo,
            sessions: Mutex::new(HashMap::new()),
            owner,
            allow_delete,
        }
    }

    /// Attributes of a file being ingested: its size so far.
    pub fn attr(&self, ns: &Namespace, ino: u64) -> Entry {
        let size = lock(&self.sessions).get(&ino).map_or(0, |s| s.size());
        let attr = ns.dir_attr(ino, now_ns()).as_file(size, 0o644);
        Entry {
            attr,
            ttl: CONTROL_TTL,
        }
    }

    /// The files being ingested in one vault's incoming directory.
    pub fn files(&self, vault: &str) -> Vec<(Vec<u8>, u64)> {
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, s| visible(s));
        let mut v: Vec<(Vec<u8>, u64)> = sessions
            .iter()
            .filter(|(_, s)| s.vault() == vault)
            .map(|(ino, s)| (s.file_name(), *ino))
            .collect();
        v.sort();
        v
    }

    /// Ingests not yet committed or failed (`vaultfs umount` waits for them).
    pub fn running(&self) -> usize {
        lock(&self.sessions)
            .values()
            .filter(|s| !s.is_finished())
            .count()
    }

    fn may_write(&self, uid: u32) -> Result<()> {
        if uid == 0 || uid == self.owner {
            Ok(())
        } else {
            Err(FsError::Access)
        }
    }

    fn incoming_vault(&self, ns: &Namespace, parent: u64) -> Result<String> {
        match &ns.inode(parent)?.body {
            Body::Control(Control::IncomingVault(v)) => Ok(v.clone()),
            _ => Err(FsError::ReadOnly),
        }
    }

    fn session_named(&self, vault: &str, name: &[u8]) -> Option<(u64, Arc<IngestSession>)> {
        lock(&self.sessions)
            .iter()
            .find(|(_, s)| s.vault() == vault && s.file_name() == name && visible(s))
            .map(|(i, s)| (*i, s.clone()))
    }

    /// `create` in `incoming/<vault>/`: starts an ingest session.
    pub fn create(
        &self,
        ns: &Namespace,
        handles: &Handles,
        tasks: &TaskRegistry,
        parent: u64,
        name: &[u8],
        uid: u32,
    ) -> Result<(Entry, Opened)> {
        let vault = self.incoming_vault(ns, parent)?;
        self.may_write(uid)?;
        if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
            return Err(FsError::Invalid);
        }
        if self.session_named(&vault, name).is_some() {
            return Err(FsError::Exists);
        }
        self.repo.load_vault(&vault)?;
        let session = IngestSession::new(self.repo.clone(), &vault, name, tasks);
        static SEQ: AtomicU64 = AtomicU64::new(1);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let ino = ns.inodes.alloc(
            parent,
            name.to_vec(),
            Body::Control(Control::IncomingFile(n)),
        );
        lock(&self.sessions).insert(ino, session.clone());
        let fh = handles.insert(ino, Open::Ingest(session));
        // A new task, a new file in incoming/<vault>/: generated listings that changed.
        ns.invalidate_generated(Control::Tasks);
        ns.invalidate(Inval::Inode(parent));
        let entry = self.attr(ns, ino);
        Ok((
            entry,
            Opened {
                fh,
                keep_cache: false,
                direct_io: false,
            },
        ))
    }

    /// `write` to a file in incoming/. A refused write fails the whole ingest.
    pub fn write(&self, s: &IngestSession, offset: u64, data: &[u8], pid: u32) -> Result<u32> {
        s.note_writer(pid, process_of);
        if let Err(e) = s.write(offset, data) {
            s.abort(&e.to_string());
            return Err(FsError::Ingest(e));
        }
        Ok(data.len() as u32)
    }

    /// `flush` (every `close()`): once data was written, waits for the point; the
    /// ingest's outcome is the answer. See the module documentation for the closes that
    /// do not commit.
    pub fn flush(&self, ns: &Namespace, s: &IngestSession, pid: u32) -> Result<()> {
        if !s.is_finished() {
            // The kernel names the closing thread: a writer's threads count as one.
            if !s.ends_on_close_by(process_of(pid)) {
                return Ok(());
            }
            if let Some(why) = failed_exit(pid) {
                tracing::warn!(
                    "ingest of {:?} abandoned: {why}",
                    String::from_utf8_lossy(&s.file_name())
                );
                s.abort(&why);
            } else if s.awaits_rename() {
                s.note_closed();
                return Ok(());
            }
        }
        self.finish_ingest(ns, s)
    }

    fn finish_ingest(&self, ns: &Namespace, s: &IngestSession) -> Result<()> {
        let r = s.finish();
        let vault = s.vault().to_string();
        if let Some(ino) = ns
            .inodes
            .find_key(&Key::Control(Control::IncomingVault(vault.clone())))
        {
            ns.invalidate(Inval::Entry {
                parent: ino,
                name: s.file_name(),
            });
            ns.invalidate(Inval::Inode(ino));
        }
        match r {
            Ok(point) => {
                tracing::info!(
                    "ingested {} into {vault}/{point}",
                    crate::repo::format::printable(&s.file_name())
                );
                ns.expire_points(&vault);
                Ok(())
            }
            Err(e) => Err(FsError::Ingest(e)),
        }
    }

    /// `setattr` on a file in incoming/: a size at or above what was written extends
    /// the file with a hole (cp of a sparse file ends with ftruncate); mode and time
    /// changes (cp -p, rsync) are accepted and ignored; anything else is refused.
    pub fn setattr(&self, ns: &Namespace, ino: u64, size: Option<u64>) -> Result<Entry> {
        let s = lock(&self.sessions)
            .get(&ino)
            .cloned()
            .ok_or(FsError::ReadOnly)?;
        if let Some(n) = size {
            s.set_size(n).map_err(|_| FsError::Invalid)?;
        }
        Ok(self.attr(ns, ino))
    }

    /// `fallocate` on a file in incoming/ (`mode` as in fallocate(2)): space reservations
    /// and holes punched ahead of the writer are taken (see
    /// [`IngestSession::allocate`]); other modes (collapse, insert, zero range) are not
    /// supported.
    pub fn fallocate(&self, s: &IngestSession, offset: u64, len: u64, mode: i32) -> Result<()> {
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let punch = mode & libc::FALLOC_FL_PUNCH_HOLE != 0;
        if mode & !(libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE) != 0 {
            return Err(FsError::Unsupported);
        }
        s.allocate(offset, len, !keep_size, punch)
            .map_err(FsError::Ingest)
    }

    /// `rename` inside one incoming directory (rsync's temporary name to the final one).
    pub fn rename(
        &self,
        ns: &Namespace,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        uid: u32,
    ) -> Result<()> {
        let vault = self.incoming_vault(ns, parent)?;
        self.may_write(uid)?;
        if newparent != parent {
            return Err(FsError::Invalid);
        }
        let (ino, s) = self.session_named(&vault, name).ok_or(FsError::NotFound)?;
        if self.session_named(&vault, newname).is_some() {
            return Err(FsError::Exists);
        }
        if s.is_finished() {
            // Committed or failed already: the file leaves incoming/.
            lock(&self.sessions).remove(&ino);
            return self.finish_ingest(ns, &s);
        }
        ns.invalidate(Inval::Entry {
            parent,
            name: name.to_vec(),
        });
        s.rename(newname);
        if s.was_closed() && !s.awaits_rename() {
            // Written and closed under a temporary name: the final name commits it.
            return self.finish_ingest(ns, &s);
        }
        Ok(())
    }

    /// `unlink` in incoming/: abandons that ingest (nothing is committed).
    pub fn unlink(&self, ns: &Namespace, parent: u64, name: &[u8], uid: u32) -> Result<()> {
        let vault = self.incoming_vault(ns, parent)?;
        self.may_write(uid)?;
        let (ino, s) = self.session_named(&vault, name).ok_or(FsError::NotFound)?;
        if !s.is_finished() {
            s.abort("the file was removed from incoming/ before it was closed");
        }
        lock(&self.sessions).remove(&ino);
        Ok(())
    }

    /// `release` (the last close of a handle) of an ingest that no flush ended. Every
    /// close of the writer sends a flush, and the writer's flush ends the ingest (or, under
    /// a temporary name, marks it closed); the kernel drops the flush of a process killed
    /// by SIGKILL. So data written and no flush of its writer seen means that the writer
    /// died: the ingest is abandoned. A file nobody wrote to ends as an empty one.
    pub fn release(&self, ns: &Namespace, s: &IngestSession) {
        if s.is_finished() || s.was_closed() {
            return;
        }
        if s.size() > 0 {
            let why = format!(
                "the writer (pid {}) went away without closing the file (killed?)",
                s.writer()
            );
            tracing::warn!(
                "ingest of {:?} abandoned: {why}",
                String::from_utf8_lossy(&s.file_name())
            );
            s.abort(&why);
        }
        let _ = self.finish_ingest(ns, s);
    }

    /// `mkdir` at the root creates a vault (the caller looks it up).
    pub fn mkdir(&self, ns: &Namespace, parent: u64, name: &[u8], uid: u32) -> Result<()> {
        if parent != ROOT_INO {
            return Err(FsError::ReadOnly);
        }
        self.may_write(uid)?;
        let name = std::str::from_utf8(name).map_err(|_| FsError::Invalid)?;
        match self.repo.create_vault(name, "") {
            Ok(_) => {}
            Err(RepoError::InvalidVaultName(_)) => return Err(FsError::Invalid),
            Err(RepoError::VaultExists(_)) => return Err(FsError::Exists),
            Err(e) => return Err(e.into()),
        }
        ns.expire_vaults();
        Ok(())
    }

    /// `rmdir` at the root deletes an empty vault; in a vault, deletes a recovery point
    /// when the mount allows deletes.
    pub fn rmdir(&self, ns: &Namespace, parent: u64, name: &[u8], uid: u32) -> Result<()> {
        let dir = ns.inode(parent)?;
        match &dir.body {
            Body::Root(_) => {
                self.may_write(uid)?;
                let name = std::str::from_utf8(name).map_err(|_| FsError::NotFound)?;
                if name.as_bytes() == CONTROL_NAME {
                    return Err(FsError::NotPermitted);
                }
                let _lock = repo_lock::acquire(&self.repo, &format!("rmdir vault {name}"))?;
                match self.repo.delete_vault(name, false) {
                    Ok(()) => {}
                    Err(RepoError::VaultNotFound(_)) => return Err(FsError::NotFound),
                    Err(RepoError::VaultNotEmpty { .. }) => return Err(FsError::NotEmpty),
                    Err(e) => return Err(e.into()),
                }
                ns.expire_vaults();
                ns.invalidate(Inval::Entry {
                    parent: ROOT_INO,
                    name: name.as_bytes().to_vec(),
                });
                Ok(())
            }
            Body::Vault(v) => {
                if !self.allow_delete {
                    return Err(FsError::NotPermitted);
                }
                self.may_write(uid)?;
                let point = std::str::from_utf8(name).map_err(|_| FsError::NotFound)?;
                if point == "latest" {
                    return Err(FsError::NotPermitted);
                }
                let _lock =
                    repo_lock::acquire(&self.repo, &format!("rmdir point {}/{point}", v.name))?;
                self.repo.delete_point(&v.name, point)?;
                tracing::info!("deleted recovery point {}/{point}", v.name);
                ns.expire_points(&v.name.clone());
                ns.invalidate(Inval::Entry {
                    parent,
                    name: name.to_vec(),
                });
                Ok(())
            }
            _ => Err(FsError::ReadOnly),
        }
    }
}

/// The process (thread group) of thread `tid`; `tid` itself when /proc cannot tell.
fn process_of(tid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(tid)
}

/// Why the process `pid` behind a close is ending in failure, when it is: it is exiting
/// (`PF_EXITING` in `/proc/<pid>/stat`) with an exit code that says it was killed by a
/// signal or gave up (a non-zero status). `None` for a live process or a clean exit.
fn failed_exit(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    failed_exit_in(pid, &stat)
}

fn failed_exit_in(pid: u32, stat: &str) -> Option<String> {
    const PF_EXITING: u64 = 0x4;
    // Fields after the command name, which is in parentheses and may hold anything:
    // state is field 3 (index 0 here), flags field 9, exit_code field 52.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let flags: u64 = fields.get(6)?.parse().ok()?;
    let code: i32 = fields.get(49)?.parse().ok()?;
    if flags & PF_EXITING == 0 {
        return None;
    }
    match (code & 0x7f, (code >> 8) & 0xff) {
        (0, 0) => None,
        (0, status) => Some(format!(
            "the writer (pid {pid}) exited with status {status} before it closed the file"
        )),
        (sig, _) => Some(format!(
            "the writer (pid {pid}) was killed by signal {sig} before it closed the file"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::failed_exit_in;

    /// A `/proc/<pid>/stat` line with the given flags and exit code.
    fn stat(comm: &str, flags: u64, code: i32) -> String {
        let mut f: Vec<String> = (3..=52).map(|_| "0".to_string()).collect();
        f[0] = "S".into();
        f[6] = flags.to_string();
        f[49] = code.to_string();
        format!("4242 ({comm}) {}", f.join(" "))
    }

    #[test]
    fn a_writer_that_dies_is_told_from_one_that_exits_cleanly() {
        assert_eq!(failed_exit_in(1, &stat("cp", 0x400000, 0)), None, "alive");
        assert_eq!(failed_exit_in(1, &stat("cp", 0x400004, 0)), None, "exit(0)");
        let killed = failed_exit_in(1, &stat("cp", 0x400004, 9)).unwrap();
        assert!(killed.contains("killed by signal 9"), "{killed}");
        let gave_up = failed_exit_in(1, &stat("a) b", 0x400004, 130 << 8)).unwrap();
        assert!(gave_up.contains("exited with status 130"), "{gave_up}");
        assert_eq!(failed_exit_in(1, "garbage"), None);
    }
}
