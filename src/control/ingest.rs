//! Ingest sessions: a snapshot file written into `incoming/<vault>/` becomes one
//! recovery point.
//!
//! The file's bytes are streamed to a backup running on a thread of its own through a
//! bounded channel (backpressure: a writer never gets more than a few MiB ahead of the
//! chunker), so a sequential writer (cp, dd, tar -cf - | ...) needs no local copy. Writes
//! that arrive out of order (several FUSE threads) wait in a bounded reorder buffer of
//! [`REORDER_LIMIT`] bytes. A gap still open when the buffer is full, or at the end, is a
//! hole: that is how `cp` writes a sparse file (seek over holes, or punch them, then
//! `ftruncate` to the full size). Holes go down the stream as their length, so they cost
//! nothing however large (a tar parser gets them as zeros). Rewriting bytes already ingested
//! is an error. The kind is decided at the first
//! write: a name with a tar extension (`.tar`, `.tar.zst`, `.tar.gz`, ...; rsync's
//! temporary `.name.XXXXXX` is seen through) or a ustar header makes a tree backup,
//! anything else an image backup. [`IngestSession::finish`] (the FUSE flush of `close()`)
//! ends the stream and waits for the commit: it returns the point name only when the
//! point is durable. An aborted session (unlink, error) feeds an error into the stream,
//! so the backup fails and nothing is committed.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::tasks::{Task, TaskRegistry};
use crate::repo::Repository;
use crate::repo::backup::{BackupOptions, Source, StreamRead, backup};

/// How long an ingest waits for the writer lock of another process.
const INGEST_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);
use crate::repo::ingest::{StreamKind, classify};

/// Out-of-order data held while waiting for the bytes before it.
pub const REORDER_LIMIT: usize = 64 << 20;
/// Messages in flight between the writer and the backup thread.
const CHANNEL_DEPTH: usize = 64;

/// Why an ingest failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "write at offset {got} leaves a gap after byte {expected} (incoming/ takes sequential writes)"
    )]
    Gap { expected: u64, got: u64 },
    /// The backup the stream fed failed: its typed error (the errno is chosen in
    /// `fs/errno.rs`).
    #[error("{0}")]
    Backup(Arc<crate::repo::RepoError>),
    /// The ingest was stopped: by the writer (an abort, a rewrite, nothing written) or
    /// because its thread ended.
    #[error("{0}")]
    Stopped(String),
}

/// What the writer sends down the stream.
#[derive(Debug)]
enum Piece {
    Data(Vec<u8>),
    /// So many bytes of hole (images only).
    Hole(u64),
    /// The ingest is abandoned: the read fails with this reason.
    Abort(String),
}

/// Reads what the writer sends; an abort fails the read.
struct ChannelReader {
    rx: Receiver<Piece>,
    buf: Vec<u8>,
    pos: usize,
    /// A hole received while data was asked for: `read` says 0 until it is taken.
    hole: u64,
    /// The task's cancel flag: a reader waiting for the writer stops once it is set.
    cancel: crate::repo::cancel::Cancel,
}

impl ChannelReader {
    /// The next piece (None: the writer is done), waiting for the writer in steps so
    /// that a cancelled task stops even while the writer is idle.
    fn next(&self) -> std::io::Result<Option<Piece>> {
        loop {
            match self.rx.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(p) => return Ok(Some(p)),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if self.cancel.is_set() => {
                    return Err(std::io::Error::other("cancelled"));
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.hole > 0 {
                return Ok(0);
            }
            match self.next()? {
                Some(Piece::Data(v)) => {
                    self.buf = v;
                    self.pos = 0;
                }
                Some(Piece::Hole(n)) => self.hole = n,
                Some(Piece::Abort(msg)) => return Err(std::io::Error::other(msg)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl StreamRead for ChannelReader {
    fn take_hole(&mut self) -> std::io::Result<u64> {
        if self.pos < self.buf.len() {
            return Ok(0);
        }
        // The hole `read` stopped at, and any that follow it at once. With no hole,
        // `read` saw the end: the channel says so once drained (wait until then).
        let mut hole = std::mem::take(&mut self.hole);
        loop {
            let next = if hole > 0 {
                match self.rx.try_recv() {
                    Ok(p) => Some(p),
                    // Data may follow later: `read` waits for it.
                    Err(crossbeam_channel::TryRecvError::Empty) => return Ok(hole),
                    Err(crossbeam_channel::TryRecvError::Disconnected) => None,
                }
            } else {
                self.next()?
            };
            match next {
                Some(Piece::Hole(n)) => hole += n,
                Some(Piece::Data(v)) => {
                    self.buf = v;
                    self.pos = 0;
                    return Ok(hole);
                }
                Some(Piece::Abort(msg)) => return Err(std::io::Error::other(msg)),
                None => return Ok(hole),
            }
        }
    }
}

#[derive(Debug)]
struct Inner {
    next: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    tx: Option<Sender<Piece>>,
    /// Size set with truncate/ftruncate; the end is padded with zeros up to it.
    target_size: u64,
    handle: Option<JoinHandle<Result<String, IngestError>>>,
    kind: Option<StreamKind>,
    outcome: Option<Result<String, IngestError>>,
}

/// One file being ingested.
#[derive(Debug)]
pub struct IngestSession {
    repo: Arc<Repository>,
    vault: String,
    pub task: Arc<Task>,
    file_name: Mutex<Vec<u8>>,
    backup_name: Arc<Mutex<Vec<u8>>>,
    written: AtomicU64,
    /// The process (thread group) that wrote last: only its close() ends the ingest;
    /// and the thread that wrote last, whose process is known.
    writer_pid: std::sync::atomic::AtomicU32,
    writer_tid: std::sync::atomic::AtomicU32,
    /// The writer closed the file while it had a temporary name: the rename to its final
    /// name commits it.
    closed: std::sync::atomic::AtomicBool,
    inner: Mutex<Inner>,
    finished_at: Mutex<Option<std::time::Instant>>,
}

/// rsync writes `.name.XXXXXX` and renames it: see through that for classification.
pub fn strip_rsync_temp(name: &[u8]) -> &[u8] {
    if let Some(rest) = name.strip_prefix(b".")
        && let Some(dot) = rest.iter().rposition(|&b| b == b'.')
        && rest.len() - dot - 1 == 6
        && rest[dot + 1..].iter().all(u8::is_ascii_alphanumeric)
        && dot > 0
    {
        return &rest[..dot];
    }
    name
}

fn is_ustar(first: &[u8]) -> bool {
    first.len() >= 262 && &first[257..262] == b"ustar"
}

impl IngestSession {
    pub fn new(
        repo: Arc<Repository>,
        vault: &str,
        file_name: &[u8],
        tasks: &TaskRegistry,
    ) -> Arc<Self> {
        let task = tasks.create(
            super::tasks::TaskKind::Ingest,
            vault,
            &String::from_utf8_lossy(file_name),
        );
        Arc::new(IngestSession {
            repo,
            vault: vault.to_string(),
            task,
            file_name: Mutex::new(file_name.to_vec()),
            backup_name: Arc::new(Mutex::new(file_name.to_vec())),
            written: AtomicU64::new(0),
            writer_pid: std::sync::atomic::AtomicU32::new(0),
            writer_tid: std::sync::atomic::AtomicU32::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
            finished_at: Mutex::new(None),
            inner: Mutex::new(Inner {
                next: 0,
                pending: BTreeMap::new(),
                pending_bytes: 0,
                tx: None,
                target_size: 0,
                handle: None,
                kind: None,
                outcome: None,
            }),
        })
    }

    pub fn vault(&self) -> &str {
        &self.vault
    }

    /// Records the thread `tid` that writes, and its process (`pid_of`, asked only when
    /// the thread is not the one that wrote last).
    pub fn note_writer(&self, tid: u32, pid_of: impl FnOnce(u32) -> u32) {
        if self.writer_tid.swap(tid, Ordering::Relaxed) != tid {
            self.writer_pid.store(pid_of(tid), Ordering::Relaxed);
        }
    }

    /// The process that wrote last (0: nobody wrote).
    pub fn writer(&self) -> u32 {
        self.writer_pid.load(Ordering::Relaxed)
    }

    /// Whether a close by process `pid` ends the ingest: the process that wrote last,
    /// once something was written. Closes by other processes (a child that inherited the
    /// descriptor and exec'd, a shell that handed it to a command) do not.
    pub fn ends_on_close_by(&self, pid: u32) -> bool {
        self.size() > 0 && self.writer_pid.load(Ordering::Relaxed) == pid
    }

    /// Whether the file has a temporary name (rsync's `.name.XXXXXX`): it is committed only
    /// once renamed to its final name, and abandoned when removed.
    pub fn awaits_rename(&self) -> bool {
        let name = self.file_name();
        strip_rsync_temp(&name) != name.as_slice()
    }

    /// The writer closed the file (under a temporary name: see [`Self::awaits_rename`]).
    pub fn note_closed(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Whether the writer closed the file.
    pub fn was_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Bytes accepted so far (the file's size as `stat` shows it).
    pub fn size(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    pub fn file_name(&self) -> Vec<u8> {
        self.file_name.lock().unwrap().clone()
    }

    /// The file was renamed (rsync's temporary name to the final one).
    pub fn rename(&self, new_name: &[u8]) {
        *self.file_name.lock().unwrap() = new_name.to_vec();
        self.task.set_name(&String::from_utf8_lossy(new_name));
    }

    fn start(&self, inner: &mut Inner, first: &[u8]) {
        let name = self.file_name();
        let base = strip_rsync_temp(&name);
        let kind = match classify(base).1 {
            StreamKind::Tar => StreamKind::Tar,
            StreamKind::Image if is_ustar(first) => StreamKind::Tar,
            StreamKind::Image => StreamKind::Image,
        };
        inner.kind = Some(kind);
        let (tx, rx) = bounded::<Piece>(CHANNEL_DEPTH);
        inner.tx = Some(tx);
        let repo = self.repo.clone();
        let vault = self.vault.clone();
        let task = self.task.clone();
        let name_cell = self.backup_name.clone();
        task.start();
        let handle = std::thread::Builder::new()
            .name("ingest".into())
            .spawn(move || {
                let _span =
                    tracing::info_span!("task", id = %task.id, kind = "ingest", vault = %vault)
                        .entered();
                let reader = ChannelReader {
                    rx,
                    buf: Vec::new(),
                    pos: 0,
                    hole: 0,
                    cancel: task.cancel.clone(),
                };
                let opts = BackupOptions {
                    progress: task.progress.clone(),
                    // A writer that copies into incoming/ during a prune (or another
                    // host's backup) waits, as a slow disk would make it.
                    lock_wait: INGEST_LOCK_WAIT,
                    cancel: task.cancel.clone(),
                    ..Default::default()
                };
                let source = Source::Stream {
                    reader: Box::new(reader),
                    name: name_cell,
                    kind,
                };
                match backup(&repo, &vault, source, &opts) {
                    Ok(r) => {
                        task.succeed(&r.manifest.name);
                        tracing::info!(
                            "ingest {}: committed {}/{}",
                            task.id,
                            vault,
                            r.manifest.name
                        );
                        Ok(r.manifest.name)
                    }
                    Err(crate::repo::RepoError::Cancelled) => {
                        task.cancelled();
                        tracing::warn!("ingest {} into {vault} cancelled", task.id);
                        Err(IngestError::Backup(Arc::new(
                            crate::repo::RepoError::Cancelled,
                        )))
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        task.fail(&reason);
                        tracing::warn!("ingest {} into {vault} failed: {reason}", task.id);
                        Err(IngestError::Backup(Arc::new(e)))
                    }
                }
            })
            .expect("spawn an ingest thread");
        inner.handle = Some(handle);
    }

    /// Ends the stream with an outcome; `abort` feeds an error first.
    fn conclude(&self, inner: &mut Inner, abort: Option<String>) -> Result<String, IngestError> {
        if let Some(o) = &inner.outcome {
            return o.clone();
        }
        if let Some(tx) = inner.tx.take()
            && let Some(msg) = &abort
        {
            let _ = tx.send(Piece::Abort(msg.clone()));
        }
        let outcome = match inner.handle.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(IngestError::Stopped("the ingest thread panicked".into()))),
            None => {
                let reason = abort.unwrap_or_else(|| {
                    "nothing was written to the file before it was closed: no recovery point made"
                        .into()
                });
                self.task.fail(&reason);
                Err(IngestError::Stopped(reason))
            }
        };
        inner.outcome = Some(outcome.clone());
        *self.finished_at.lock().unwrap() = Some(std::time::Instant::now());
        outcome
    }

    /// Sends bytes at the expected offset, then whatever pending data follows them.
    fn push(&self, inner: &mut Inner, data: Vec<u8>) -> Result<(), IngestError> {
        if inner.tx.is_none() && inner.handle.is_none() {
            self.start(inner, &data);
        }
        let mut chunks = vec![data];
        let mut next = inner.next + chunks[0].len() as u64;
        while let Some(d) = inner.pending.remove(&next) {
            inner.pending_bytes -= d.len();
            next += d.len() as u64;
            chunks.push(d);
        }
        for c in chunks {
            self.send(inner, Piece::Data(c))?;
        }
        inner.next = next;
        self.written.fetch_max(next, Ordering::Relaxed);
        Ok(())
    }

    /// Sends a piece down the stream; when the backup stopped early, its error is the
    /// answer.
    fn send(&self, inner: &mut Inner, piece: Piece) -> Result<(), IngestError> {
        let sent = inner.tx.as_ref().is_some_and(|tx| tx.send(piece).is_ok());
        if sent {
            return Ok(());
        }
        Err(self
            .conclude(inner, None)
            .err()
            .unwrap_or_else(|| IngestError::Stopped("the ingest ended early".into())))
    }

    /// A hole from the expected offset up to `upto`, sent as its length (it costs nothing
    /// however large); then whatever pending data follows it.
    fn push_hole(&self, inner: &mut Inner, upto: u64) -> Result<(), IngestError> {
        if inner.next >= upto {
            return Ok(());
        }
        if inner.tx.is_none() && inner.handle.is_none() {
            // A file that starts with a hole: not a tar, unless its name says so.
            self.start(inner, &[]);
        }
        self.send(inner, Piece::Hole(upto - inner.next))?;
        inner.next = upto;
        self.written.fetch_max(upto, Ordering::Relaxed);
        // The data that waited for the hole to close.
        match inner.pending.remove(&upto) {
            Some(d) => {
                inner.pending_bytes -= d.len();
                self.push(inner, d)
            }
            None => Ok(()),
        }
    }

    /// Accepts `data` at `offset`. Returns the bytes taken.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<usize, IngestError> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(o) = &inner.outcome {
            return Err(o
                .clone()
                .err()
                .unwrap_or_else(|| IngestError::Stopped("already committed".into())));
        }
        if offset < inner.next
            || inner
                .pending
                .range(offset..offset + data.len() as u64)
                .next()
                .is_some()
        {
            return Err(IngestError::Stopped(format!(
                "rewrite at offset {offset} of bytes already written (incoming/ takes each byte once)"
            )));
        }
        if offset > inner.next {
            inner.pending_bytes += data.len();
            inner.pending.insert(offset, data.to_vec());
            self.written
                .fetch_max(offset + data.len() as u64, Ordering::Relaxed);
            // Too much waiting: the gap before the first pending write is a hole.
            while inner.pending_bytes > REORDER_LIMIT {
                let first = *inner.pending.keys().next().expect("pending");
                self.push_hole(&mut inner, first)?;
            }
            return Ok(data.len());
        }
        self.push(&mut inner, data.to_vec())?;
        Ok(data.len())
    }

    /// truncate/ftruncate: the file ends at `size` (zeros up to it). Shrinking below
    /// what was written is refused.
    pub fn set_size(&self, size: u64) -> Result<(), IngestError> {
        let mut inner = self.inner.lock().unwrap();
        if size < self.size() {
            return Err(IngestError::Stopped(format!(
                "truncate to {size} below the {} bytes already written",
                self.size()
            )));
        }
        inner.target_size = size;
        self.written.fetch_max(size, Ordering::Relaxed);
        Ok(())
    }

    /// fallocate: reserving space (`extend`: the file grows to `offset + len` when that is
    /// beyond its size, like ftruncate) or punching a hole (`punch`) into bytes not yet
    /// written, which are a hole already: `cp --sparse=always` punches ahead of what it
    /// writes. A hole punched into bytes already written is refused.
    pub fn allocate(
        &self,
        offset: u64,
        len: u64,
        extend: bool,
        punch: bool,
    ) -> Result<(), IngestError> {
        let end = offset.saturating_add(len);
        if punch {
            let inner = self.inner.lock().unwrap();
            let overlaps = offset < inner.next
                || inner
                    .pending
                    .range(..end)
                    .next_back()
                    .is_some_and(|(at, d)| at + d.len() as u64 > offset);
            if overlaps {
                return Err(IngestError::Stopped(format!(
                    "a hole punched at offset {offset} into bytes already written (incoming/ takes each byte once)"
                )));
            }
            return Ok(());
        }
        if extend && end > self.size() {
            return self.set_size(end);
        }
        Ok(())
    }

    /// Ends the stream and waits for the point: `Ok(point name)` once it is durable.
    /// Repeated calls return the same outcome.
    pub fn finish(&self) -> Result<String, IngestError> {
        let mut inner = self.inner.lock().unwrap();
        if inner.outcome.is_none()
            && let Err(e) = crate::repo::failpoint::hit("ingest.close")
        {
            return self.conclude(&mut inner, Some(e.to_string()));
        }
        if inner.outcome.is_none() {
            // Holes: gaps before pending writes, and up to the truncated size.
            let mut r = Ok(());
            while r.is_ok() && !inner.pending.is_empty() {
                let first = *inner.pending.keys().next().expect("pending");
                r = self.push_hole(&mut inner, first);
            }
            let target = inner.target_size;
            if r.is_ok() {
                r = self.push_hole(&mut inner, target);
            }
            if let Err(e) = r {
                return self.conclude(&mut inner, Some(e.to_string()));
            }
        }
        let name = self.file_name();
        let base = strip_rsync_temp(&name).to_vec();
        *self.backup_name.lock().unwrap() = match inner.kind {
            Some(StreamKind::Tar) => classify(&base).0,
            _ => base,
        };
        self.conclude(&mut inner, None)
    }

    /// Abandons the ingest: nothing is committed.
    pub fn abort(&self, why: &str) {
        let mut inner = self.inner.lock().unwrap();
        let _ = self.conclude(&mut inner, Some(why.to_string()));
    }

    /// Whether the outcome is known.
    pub fn is_finished(&self) -> bool {
        self.inner.lock().unwrap().outcome.is_some()
    }

    /// How long ago the outcome became known.
    pub fn finished_for(&self) -> Option<std::time::Duration> {
        self.finished_at.lock().unwrap().map(|t| t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::repo::format::Extent;
    use std::time::Duration;

    fn repo() -> Arc<Repository> {
        let r = crate::repo::memory_repo();
        r.create_vault("v", "").unwrap();
        r
    }

    #[test]
    fn rsync_temp_names() {
        assert_eq!(strip_rsync_temp(b".etc.tar.zst.Ab12Cd"), b"etc.tar.zst");
        assert_eq!(strip_rsync_temp(b"etc.tar"), b"etc.tar");
        assert_eq!(strip_rsync_temp(b".hidden"), b".hidden");
    }

    #[test]
    fn image_stream_out_of_order_then_commit() {
        let repo = repo();
        let tasks = TaskRegistry::new(Duration::from_secs(60));
        let s = IngestSession::new(repo.clone(), "v", b"disk.img", &tasks);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        s.write(100_000, &data[100_000..200_000]).unwrap();
        s.write(0, &data[..100_000]).unwrap();
        s.write(200_000, &data[200_000..]).unwrap();
        assert_eq!(s.size(), 300_000);
        s.rename(b"final.img");
        let point = s.finish().unwrap();
        assert_eq!(s.finish().unwrap(), point);
        let m = repo.load_manifest("v", &point).unwrap();
        assert_eq!(m.backups[0].name, b"final.img");
        let node = repo.find_node(&m, b"final.img").unwrap();
        let mut out = Vec::new();
        repo.read_file(&node, &mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(tasks.list()[0].json()["status"], "succeeded");
    }

    #[test]
    fn holes_cost_nothing_however_large() {
        let repo = repo();
        let tasks = TaskRegistry::new(Duration::from_secs(60));
        let s = IngestSession::new(repo.clone(), "v", b"huge.img", &tasks);
        // One write at 1 TiB (pwrite past the end), data at the start, a size set beyond.
        s.write(1 << 40, b"the end of a terabyte").unwrap();
        s.write(0, &[7u8; 5000]).unwrap();
        s.set_size((1 << 41) + 1).unwrap();
        let point = s.finish().unwrap();
        let m = repo.load_manifest("v", &point).unwrap();
        let node = repo.find_node(&m, b"huge.img").unwrap();
        assert_eq!(node.size, (1 << 41) + 1);
        let stored: u64 = node
            .content
            .iter()
            .map(|e| match e {
                Extent::Data(r) => r.raw_len as u64,
                Extent::Hole(_) => 0,
            })
            .sum();
        assert_eq!(stored, 5000 + 21);
        match node.content.as_slice() {
            [
                Extent::Data(_),
                Extent::Hole(h),
                Extent::Data(end),
                Extent::Hole(_),
            ] => {
                assert_eq!(*h, (1 << 40) - 5000);
                assert_eq!(*repo.read_chunk(end).unwrap(), *b"the end of a terabyte");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_tar_and_abort_leave_no_point() {
        let repo = repo();
        let tasks = TaskRegistry::new(Duration::from_secs(60));
        let s = IngestSession::new(repo.clone(), "v", b"x.tar", &tasks);
        let mut junk = vec![0u8; 512];
        junk[..5].copy_from_slice(b"hello");
        junk[100..108].copy_from_slice(b"garbage!");
        let _ = s.write(0, &junk);
        let err = s.finish().unwrap_err();
        assert!(err.to_string().contains("archive"), "{err}");
        let s2 = IngestSession::new(repo.clone(), "v", b"y.img", &tasks);
        s2.write(0, &[7u8; 1000]).unwrap();
        s2.abort("unlinked while written");
        assert!(s2.finish().is_err());
        assert!(repo.list_points("v").unwrap().is_empty());
        let failed = tasks
            .list()
            .iter()
            .filter(|t| t.json()["status"] == "failed")
            .count();
        assert_eq!(failed, 2);
    }
}
