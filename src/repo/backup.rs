//! Taking a recovery point: tree backups of directories and image backups of files.
//!
//! The walker (the calling thread) reads directories in name order and records every
//! entry in an arena of directories, in pre-order. Files that changed since the vault's
//! previous point (size, mtime, ctime or inode differ) are sent to a pool of file
//! workers, which chunk, deduplicate, compress, seal and pack them; unchanged files reuse
//! the previous point's extents without being read. When the walk and the workers are
//! done, directories are encoded into tree chunks in reverse pre-order (children before
//! parents), the pack writer is flushed, and only then is the manifest committed.
//! An interrupted backup leaves no point; the packs it did upload are indexed and the next
//! run deduplicates against them.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

use super::format::*;
use super::ingest::{StreamKind, tar_backup_into};
use super::pack::PackWriter;
use super::walk::{
    Chunker, Excludes, Progress, is_cache_dir, node_from_metadata, push_extent, with_compressor,
};
use super::{RepoError, Repository, Result, lock};

/// What to back up.
pub enum Source {
    /// One tree backup per path.
    Trees(Vec<PathBuf>),
    /// One image backup of a file, or of stdin (`path` is `-`), named `name`.
    Image { path: PathBuf, name: Option<String> },
    /// A snapshot arriving as a stream (a pipe, the mount's `incoming/`): a tar archive
    /// becomes a tree backup, anything else an image backup, named `name`.
    /// The name is read when the stream ends, so a file renamed while it is written
    /// (rsync's temporary names) is backed up under its final name.
    Stream {
        reader: Box<dyn StreamRead>,
        name: Arc<Mutex<Vec<u8>>>,
        kind: StreamKind,
    },
    /// A vault's resources: one backup each, named after it; one that fails is recorded
    /// as skipped while the others commit.
    Resources(Vec<Resource>),
}

/// A snapshot stream: bytes, and holes that cost nothing (the gaps a sparse writer seeks
/// over in `incoming/`: one `pwrite` at 1 TiB must not mean 1 TiB of zeros to chunk).
/// `read` returns 0 at the end of a run of data; [`StreamRead::take_hole`] then says how
/// long the hole after it is (0: the stream ended).
pub trait StreamRead: Read + Send {
    /// The length of the hole at the current position, consumed (0 when none).
    fn take_hole(&mut self) -> std::io::Result<u64>;
}

/// A stream with no holes: a file or a pipe.
pub struct PlainStream<R>(pub R);

impl<R: Read> Read for PlainStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read + Send> StreamRead for PlainStream<R> {
    fn take_hole(&mut self) -> std::io::Result<u64> {
        Ok(0)
    }
}

/// A stream whose reads fail once the backup is cancelled.
struct CancelStream {
    inner: Box<dyn StreamRead>,
    cancel: super::cancel::Cancel,
}

impl Read for CancelStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_set() {
            return Err(std::io::Error::other("cancelled"));
        }
        self.inner.read(buf)
    }
}

impl StreamRead for CancelStream {
    fn take_hole(&mut self) -> std::io::Result<u64> {
        self.inner.take_hole()
    }
}

/// A stream's holes as zeros, for readers that need every byte (a tar parser).
struct HolesAsZeros<'a> {
    inner: &'a mut dyn StreamRead,
    zeros: u64,
}

impl Read for HolesAsZeros<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.zeros > 0 {
                let n = (buf.len() as u64).min(self.zeros) as usize;
                buf[..n].fill(0);
                self.zeros -= n as u64;
                return Ok(n);
            }
            match self.inner.read(buf)? {
                0 if buf.is_empty() => return Ok(0),
                0 => match self.inner.take_hole()? {
                    0 => return Ok(0),
                    h => self.zeros = h,
                },
                n => return Ok(n),
            }
        }
    }
}

pub struct BackupOptions {
    pub workers: usize,
    pub progress: Arc<Progress>,
    /// Compare against the previous point and skip unchanged files.
    pub use_parent: bool,
    /// Entries of a tree backup whose absolute path matches are left out (a directory
    /// with everything under it). The paths given to back up are never matched.
    pub excludes: Excludes,
    /// Leave out directories tagged as caches (a `CACHEDIR.TAG` with the signature).
    pub exclude_caches: bool,
    /// Stay on the file system of each path given: a directory on another one (a mount
    /// point) is recorded empty, with the metadata the mount shows, and other entries of
    /// other file systems are left out.
    pub one_file_system: bool,
    /// The new point's description, tags, protection and expiry.
    pub attrs: PointAttrs,
    /// How long to wait for another process's writer (a prune, another backup) to
    /// release the lock; zero fails at once, naming the holder.
    pub lock_wait: std::time::Duration,
    /// Set to stop the backup before its commit (checked before every entry walked,
    /// every file and stream read, and the commit): it then fails with
    /// `RepoError::Cancelled`, records no failure and leaves no point.
    pub cancel: super::cancel::Cancel,
    /// Who starts the backup: recorded in the manifest.
    pub trigger: Trigger,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()) + 1,
            progress: Arc::default(),
            use_parent: true,
            excludes: Excludes::default(),
            exclude_caches: false,
            one_file_system: false,
            attrs: PointAttrs::default(),
            lock_wait: std::time::Duration::ZERO,
            cancel: super::cancel::Cancel::default(),
            trigger: Trigger::Manual,
        }
    }
}

/// A file that could not be read; it is left out of the point.
#[derive(Debug)]
pub struct Skipped {
    pub path: PathBuf,
    /// Why, without the path (`Permission denied (os error 13)`).
    pub error: String,
}

/// What went wrong with a path already named beside it: an I/O error's cause alone.
fn cause(e: &RepoError) -> String {
    match e {
        RepoError::Io { source, .. } => source.to_string(),
        e => e.to_string(),
    }
}

/// The outcome of a backup.
pub struct BackupResult {
    pub manifest: Manifest,
    pub skipped: Vec<Skipped>,
    pub packs: u64,
}

/// Takes one recovery point in `vault`.
pub fn backup(
    repo: &Arc<Repository>,
    vault: &str,
    source: Source,
    opts: &BackupOptions,
) -> Result<BackupResult> {
    repo.load_vault(vault)?;
    repo.require_current_format("a backup")?;
    let _lock = lock::acquire_shared_wait(repo, &format!("backup {vault}"), opts.lock_wait)?;
    let start = now_ns();
    take_point(repo, vault, source, opts, start).map_err(|e| {
        if opts.cancel.is_set() {
            return RepoError::Cancelled;
        }
        record_failure(repo, vault, start, opts, &e);
        e
    })
}

/// Leaves the record of a backup that failed once started: `errors/<vault>/<name>`, a
/// manifest of status `error` with the reason and no data. Best effort: a store that
/// fails here is only logged, the backup's own error is what the caller reports.
fn record_failure(repo: &Repository, vault: &str, start: i64, opts: &BackupOptions, e: &RepoError) {
    let mut record = Manifest {
        vault: vault.to_string(),
        name: String::new(),
        time_ns: start,
        end_ns: now_ns(),
        hostname: lock::hostname(),
        status: PointStatus::Error,
        parent: None,
        backups: Vec::new(),
        attrs: opts.attrs.clone(),
        skipped: Vec::new(),
        fail_reason: Some(e.to_string()),
        skipped_resources: Vec::new(),
        trigger: opts.trigger.clone(),
    };
    if let Err(w) = repo.commit_record("errors", &mut record) {
        tracing::warn!("could not record the failed backup of vault {vault}: {w}");
    }
}

fn take_point(
    repo: &Arc<Repository>,
    vault: &str,
    source: Source,
    opts: &BackupOptions,
    start: i64,
) -> Result<BackupResult> {
    let parent_name = if opts.use_parent {
        repo.list_points(vault)?.pop()
    } else {
        None
    };
    let parent = match &parent_name {
        Some(p) => Some(repo.load_manifest(vault, p)?),
        None => None,
    };
    let (known, damaged) = repo.load_index()?;
    for d in damaged {
        tracing::warn!("ignoring a damaged index object (its chunks will be stored again): {d}");
    }
    let writer = PackWriter::new(repo.clone(), known);
    let mut skipped = Vec::new();
    let mut backups = Vec::new();
    let mut skipped_resources = Vec::new();
    match source {
        Source::Trees(paths) => {
            let mut names = std::collections::HashSet::new();
            for path in &paths {
                let name = backup_name(path)?;
                if !names.insert(name.clone()) {
                    return Err(RepoError::BadInput(format!(
                        "two paths share the backup name {:?}; back them up in separate points",
                        String::from_utf8_lossy(&name)
                    )));
                }
                let parent_root = match parent.as_ref().and_then(|m| {
                    m.backups
                        .iter()
                        .find(|b| b.name == name && b.kind == BackupKind::Tree)
                }) {
                    Some(b) => repo.backup_root(b).ok(),
                    None => None,
                };
                let before = writer_counts(&writer);
                let (root, mut stats) =
                    TreeBackup::new(&writer, opts, &mut skipped).run(path, &name, parent_root)?;
                let after = writer_counts(&writer);
                stats.chunks_new = after.0 - before.0;
                stats.bytes_stored_new = after.1 - before.1;
                backups.push(BackupEntry {
                    name,
                    kind: BackupKind::Tree,
                    source: absolute(path).as_os_str().as_bytes().to_vec(),
                    root,
                    stats,
                });
            }
        }
        Source::Image { path, name } => {
            backups.push(image_backup(&writer, &path, name, opts)?);
        }
        Source::Resources(resources) => {
            for r in &resources {
                opts.cancel.check()?;
                let parent_root = parent.as_ref().and_then(|m| {
                    m.backups
                        .iter()
                        .find(|b| b.name == r.name.as_bytes() && b.kind == BackupKind::Tree)
                        .and_then(|b| repo.backup_root(b).ok())
                });
                match resource_backup(&writer, r, opts, parent_root, &mut skipped) {
                    Ok(b) => backups.push(b),
                    Err(e) => {
                        tracing::warn!("resource {} of vault {vault} skipped: {e}", r.name);
                        skipped_resources.push(SkippedResource {
                            name: r.name.clone(),
                            error: e.to_string(),
                        });
                    }
                }
            }
            if backups.is_empty() {
                let why: Vec<String> = skipped_resources
                    .iter()
                    .map(|s| format!("{}: {}", s.name, s.error))
                    .collect();
                return Err(RepoError::BadInput(if why.is_empty() {
                    format!(
                        "vault {vault:?} has no resources on this host: add some with `vaultfs resource add`, or give paths"
                    )
                } else {
                    format!(
                        "no resource of vault {vault:?} could be backed up ({})",
                        why.join("; ")
                    )
                }));
            }
        }
        Source::Stream { reader, name, kind } => {
            let mut reader: Box<dyn StreamRead> = Box::new(CancelStream {
                inner: reader,
                cancel: opts.cancel.clone(),
            });
            let before = writer_counts(&writer);
            let mut zeros = HolesAsZeros {
                inner: &mut *reader,
                zeros: 0,
            };
            let (mut root, mut stats, kind) = match kind {
                StreamKind::Tar => {
                    let (root, stats) = tar_backup_into(
                        &writer,
                        Box::new(&mut zeros),
                        &opts.progress,
                        &mut skipped,
                    )?;
                    (root, stats, BackupKind::Tree)
                }
                StreamKind::Image => {
                    let (root, stats) = image_from_stream(&writer, &mut *reader, &opts.progress)?;
                    (root, stats, BackupKind::Image)
                }
            };
            // A tar ends at its end-of-archive blocks, usually before its writer stops
            // (the zero padding of the last record, a compressor's trailer): the stream
            // is read to its end, so that the name is read only once the writer is done
            // with the file and no write after the archive's end is refused.
            loop {
                std::io::copy(&mut *reader, &mut std::io::sink())
                    .map_err(|e| RepoError::io("-", e))?;
                if reader.take_hole().map_err(|e| RepoError::io("-", e))? == 0 {
                    break;
                }
            }
            let name = name.lock().unwrap().clone();
            check_backup_name(&name)?;
            root.name = name.clone();
            let root = store_root(&writer, root)?;
            let after = writer_counts(&writer);
            stats.chunks_new = after.0 - before.0;
            stats.bytes_stored_new = after.1 - before.1;
            backups.push(BackupEntry {
                name,
                kind,
                source: b"-".to_vec(),
                root,
                stats,
            });
        }
    }
    opts.cancel.check()?;
    let packs = writer.finish()?.packs;
    let added: u64 = backups.iter().map(|b| b.stats.bytes_stored_new).sum();
    check_quota(repo, vault, added)?;
    let mut manifest = Manifest {
        vault: vault.to_string(),
        name: String::new(),
        time_ns: start,
        end_ns: now_ns(),
        hostname: lock::hostname(),
        status: PointStatus::Available,
        parent: parent_name,
        backups,
        attrs: opts.attrs.clone(),
        skipped: skipped
            .iter()
            .map(|s| SkippedPath {
                path: s.path.as_os_str().as_bytes().to_vec(),
                error: s.error.clone(),
            })
            .collect(),
        fail_reason: None,
        skipped_resources,
        trigger: opts.trigger.clone(),
    };
    opts.cancel.check()?;
    crate::failpoint!("manifest.write");
    repo.commit_manifest(&mut manifest)?;
    crate::failpoint!("manifest.written");
    Ok(BackupResult {
        manifest,
        skipped,
        packs,
    })
}

/// Fails with "vault full" when the vault's points would reference more than its quota
/// once a point adding `added` stored bytes is committed (what it deduplicated against
/// other vaults' chunks is not counted: the check never refuses a point that fits), and
/// warns past the vault's warning threshold.
fn check_quota(repo: &Repository, vault: &str, added: u64) -> Result<()> {
    let v = repo.load_vault(vault)?;
    let Some(quota) = v.quota else {
        return Ok(());
    };
    let now = super::usage::usage(repo, &[vault.to_string()])?
        .into_iter()
        .find(|u| u.vault == vault)
        .map_or(0, |u| u.bytes);
    let would_be = now + added;
    if would_be > quota {
        return Err(RepoError::VaultFull {
            vault: vault.to_string(),
            quota,
            would_be,
        });
    }
    if over_warning(&v, would_be) {
        tracing::warn!(
            "vault {vault} is past its warning threshold: {would_be} of {quota} bytes ({}%)",
            would_be * 100 / quota.max(1)
        );
    }
    Ok(())
}

/// Whether `bytes` is past the vault's warning threshold of its quota.
pub fn over_warning(v: &Vault, bytes: u64) -> bool {
    match (v.quota, v.warn_at) {
        (Some(q), Some(p)) => bytes as u128 * 100 > q as u128 * p as u128,
        _ => false,
    }
}

/// One resource's backup, named after it.
fn resource_backup(
    writer: &PackWriter,
    r: &Resource,
    opts: &BackupOptions,
    parent_root: Option<Node>,
    skipped: &mut Vec<Skipped>,
) -> Result<BackupEntry> {
    let name = r.name.as_bytes().to_vec();
    check_backup_name(&name)?;
    match &r.kind {
        ResourceKind::Tree { path, excludes } => {
            let path = PathBuf::from(OsString::from_vec(path.clone()));
            let own = BackupOptions {
                workers: opts.workers,
                progress: opts.progress.clone(),
                use_parent: opts.use_parent,
                excludes: Excludes::new(excludes)?,
                exclude_caches: opts.exclude_caches,
                one_file_system: opts.one_file_system,
                attrs: opts.attrs.clone(),
                lock_wait: opts.lock_wait,
                cancel: opts.cancel.clone(),
                trigger: opts.trigger.clone(),
            };
            let before = writer_counts(writer);
            let (root, mut stats) =
                TreeBackup::new(writer, &own, skipped).run(&path, &name, parent_root)?;
            let after = writer_counts(writer);
            stats.chunks_new = after.0 - before.0;
            stats.bytes_stored_new = after.1 - before.1;
            Ok(BackupEntry {
                name,
                kind: BackupKind::Tree,
                source: absolute(&path).as_os_str().as_bytes().to_vec(),
                root,
                stats,
            })
        }
        ResourceKind::Image { path } => {
            let path = PathBuf::from(OsString::from_vec(path.clone()));
            image_backup(writer, &path, Some(r.name.clone()), opts)
        }
        ResourceKind::Command { command, tar } => {
            command_backup(writer, &r.name, command, *tar, opts, skipped)
        }
    }
}

/// A backup of what `sh -c command` writes to its standard output; a command that
/// exits non-zero (or cannot start) fails it.
fn command_backup(
    writer: &PackWriter,
    name: &str,
    command: &str,
    tar: bool,
    opts: &BackupOptions,
    skipped: &mut Vec<Skipped>,
) -> Result<BackupEntry> {
    let shown = || format!("command `{command}`");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| RepoError::io(shown(), e))?;
    let mut out = super::cancel::CancelRead {
        inner: child.stdout.take().expect("piped"),
        cancel: opts.cancel.clone(),
    };
    let before = writer_counts(writer);
    let read = if tar {
        tar_backup_into(writer, Box::new(&mut out), &opts.progress, skipped)
            .map(|(root, stats)| (root, stats, BackupKind::Tree))
    } else {
        image_from_stream(writer, &mut PlainStream(&mut out), &opts.progress)
            .map(|(root, stats)| (root, stats, BackupKind::Image))
    };
    // What a tar leaves after its end (padding) is read, so that the command is not
    // stopped by a closed pipe; then its exit status decides.
    let drained = std::io::copy(&mut out, &mut std::io::sink());
    drop(out);
    let status = child.wait().map_err(|e| RepoError::io(shown(), e))?;
    if !status.success() {
        return Err(RepoError::BadInput(format!("{} failed: {status}", shown())));
    }
    let (mut root, mut stats, kind) = read?;
    drained.map_err(|e| RepoError::io(shown(), e))?;
    root.name = name.as_bytes().to_vec();
    let root = store_root(writer, root)?;
    let after = writer_counts(writer);
    stats.chunks_new = after.0 - before.0;
    stats.bytes_stored_new = after.1 - before.1;
    Ok(BackupEntry {
        name: name.as_bytes().to_vec(),
        kind,
        source: command.as_bytes().to_vec(),
        root,
        stats,
    })
}

fn writer_counts(w: &PackWriter) -> (u64, u64) {
    let s = w.counts();
    (s.chunks_new, s.bytes_new)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The name of a backup: the basename of its path (`root` for `/`).
fn backup_name(path: &Path) -> Result<Vec<u8>> {
    let abs = absolute(path);
    let norm: PathBuf = abs.components().collect();
    let name = match norm.file_name() {
        Some(n) => n.as_bytes().to_vec(),
        None => b"root".to_vec(),
    };
    if name == b"." || name == b".." {
        return Err(RepoError::BadInput(format!(
            "cannot name a backup after {}",
            path.display()
        )));
    }
    Ok(name)
}

/// A directory being assembled: its nodes, and where it hangs in its parent.
struct DirRec {
    nodes: Vec<Node>,
    /// (parent dir index, node index in the parent); none for the root.
    parent: Option<(usize, usize)>,
    /// Node indexes that were left out (unreadable).
    skip: Vec<usize>,
}

struct FileJob {
    dir: usize,
    node: usize,
    path: PathBuf,
}

struct FileDone {
    dir: usize,
    node: usize,
    path: PathBuf,
    result: Result<(Vec<Extent>, u64)>,
}

struct TreeBackup<'a> {
    writer: &'a PackWriter,
    opts: &'a BackupOptions,
    skipped: &'a mut Vec<Skipped>,
    dirs: Vec<DirRec>,
    stats: BackupStats,
    /// (dev, ino) of multiply-linked files -> (group, dir, node) of the first occurrence.
    links: HashMap<(u64, u64), (u64, usize, usize)>,
    /// Later occurrences of hardlinks: (dir, node, group).
    link_copies: Vec<(usize, usize, u64)>,
}

impl<'a> TreeBackup<'a> {
    fn new(writer: &'a PackWriter, opts: &'a BackupOptions, skipped: &'a mut Vec<Skipped>) -> Self {
        TreeBackup {
            writer,
            opts,
            skipped,
            dirs: Vec::new(),
            stats: BackupStats::default(),
            links: HashMap::new(),
            link_copies: Vec::new(),
        }
    }

    fn run(
        mut self,
        path: &Path,
        name: &[u8],
        parent_root: Option<Node>,
    ) -> Result<(ChunkRef, BackupStats)> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| RepoError::io(path, e))?;
        let root = node_from_metadata(name, path, &meta, parent_root.as_ref())?;
        // The root is node 0 of a pseudo-directory that holds just it.
        self.dirs.push(DirRec {
            nodes: vec![root],
            parent: None,
            skip: Vec::new(),
        });
        let (job_tx, job_rx) = bounded::<FileJob>(4096);
        let (done_tx, done_rx) = unbounded::<FileDone>();
        let repo = self.writer.repo().clone();
        std::thread::scope(|scope| -> Result<()> {
            for _ in 0..self.opts.workers.max(1) {
                let job_rx: Receiver<FileJob> = job_rx.clone();
                let done_tx: Sender<FileDone> = done_tx.clone();
                let writer = self.writer;
                let progress = &self.opts.progress;
                let cancel = &self.opts.cancel;
                scope.spawn(move || file_worker(writer, job_rx, done_tx, progress, cancel));
            }
            drop(done_tx);
            let walked = self.walk(path, meta, parent_root, &repo, &job_tx, &done_rx);
            drop(job_tx);
            for done in done_rx.iter() {
                self.apply(done);
            }
            walked
        })?;
        self.fix_hardlinks();
        let root = self.encode()?;
        Ok((root, self.stats))
    }

    fn walk(
        &mut self,
        path: &Path,
        meta: std::fs::Metadata,
        parent_root: Option<Node>,
        repo: &Repository,
        jobs: &Sender<FileJob>,
        done: &Receiver<FileDone>,
    ) -> Result<()> {
        // Stack of (dir index, node index of the directory, its path, parent tree).
        self.classify(0, 0, path, &meta, parent_root.as_ref(), jobs)?;
        let root_dev = meta.dev();
        // Exclude patterns match absolute paths, whatever path was given.
        let abs_root = absolute(path);
        let mut stack: Vec<(usize, usize, PathBuf, Option<ChunkRef>)> = Vec::new();
        if self.dirs[0].nodes[0].kind == NodeKind::Dir {
            let parent_sub = parent_root
                .filter(|p| p.kind == NodeKind::Dir)
                .and_then(|p| p.subtree.clone());
            stack.push((0, 0, path.to_path_buf(), parent_sub));
        }
        while let Some((pd, pn, dir_path, parent_sub)) = stack.pop() {
            self.opts.cancel.check()?;
            while let Ok(d) = done.try_recv() {
                self.apply(d);
            }
            let parent_tree = match parent_sub {
                Some(r) => repo.load_tree(&r).ok(),
                None => None,
            };
            let mut names: Vec<OsString> = match std::fs::read_dir(&dir_path) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect(),
                Err(e) => {
                    self.skip(pd, pn, &dir_path, e.to_string());
                    continue;
                }
            };
            names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            let d = self.dirs.len();
            self.dirs.push(DirRec {
                nodes: Vec::with_capacity(names.len()),
                parent: Some((pd, pn)),
                skip: Vec::new(),
            });
            self.stats.dirs += 1;
            let mut subdirs = Vec::new();
            for name in names {
                self.opts.cancel.check()?;
                let child = dir_path.join(&name);
                if !self.opts.excludes.is_empty() {
                    let rel = child.strip_prefix(path).unwrap_or(&child);
                    if self.opts.excludes.is_match(&abs_root.join(rel)) {
                        continue;
                    }
                }
                let meta = match std::fs::symlink_metadata(&child) {
                    Ok(m) => m,
                    Err(e) => {
                        self.skipped.push(Skipped {
                            path: child,
                            error: e.to_string(),
                        });
                        continue;
                    }
                };
                let prev = parent_tree.as_ref().and_then(|t| {
                    t.nodes
                        .binary_search_by(|n| n.name.as_slice().cmp(name.as_bytes()))
                        .ok()
                        .map(|i| &t.nodes[i])
                });
                let node = match node_from_metadata(name.as_bytes(), &child, &meta, prev) {
                    Ok(n) => n,
                    Err(e) => {
                        self.skipped.push(Skipped {
                            path: child,
                            error: cause(&e),
                        });
                        continue;
                    }
                };
                let is_dir = node.kind == NodeKind::Dir;
                let other_fs = self.opts.one_file_system && meta.dev() != root_dev;
                if (other_fs && !is_dir)
                    || (is_dir && self.opts.exclude_caches && is_cache_dir(&child))
                {
                    continue;
                }
                let idx = self.dirs[d].nodes.len();
                self.dirs[d].nodes.push(node);
                self.classify(d, idx, &child, &meta, prev, jobs)?;
                if is_dir && other_fs {
                    // A mount point: recorded as an empty directory, not entered.
                    self.dirs.push(DirRec {
                        nodes: Vec::new(),
                        parent: Some((d, idx)),
                        skip: Vec::new(),
                    });
                    self.stats.dirs += 1;
                } else if is_dir {
                    let sub = prev
                        .filter(|p| p.kind == NodeKind::Dir)
                        .and_then(|p| p.subtree.clone());
                    subdirs.push((d, idx, child, sub));
                }
            }
            // Depth-first, in name order: push in reverse.
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }

    /// Counts a node and schedules its content.
    fn classify(
        &mut self,
        d: usize,
        n: usize,
        path: &Path,
        meta: &std::fs::Metadata,
        prev: Option<&Node>,
        jobs: &Sender<FileJob>,
    ) -> Result<()> {
        let kind = self.dirs[d].nodes[n].kind;
        match kind {
            NodeKind::File => {}
            NodeKind::Dir => return Ok(()),
            _ => {
                self.stats.other += 1;
                return Ok(());
            }
        }
        self.stats.files += 1;
        self.stats.bytes += meta.len();
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(&(group, _, _)) = self.links.get(&key) {
                self.link_copies.push((d, n, group));
                return Ok(());
            }
            let group = self.links.len() as u64;
            self.links.insert(key, (group, d, n));
            self.dirs[d].nodes[n].hardlink = Some((group, 1));
        }
        let node = &self.dirs[d].nodes[n];
        if let Some(p) = prev
            && p.kind == NodeKind::File
            && p.size == node.size
            && p.mtime_ns == node.mtime_ns
            && p.ctime_ns == node.ctime_ns
            && p.inode == node.inode
            && p.content.iter().map(Extent::len).sum::<u64>() == p.size
        {
            // The parent's extents; a chunk whose pack a prune removed takes its new home
            // from the index (a location kept from before would cost every later read a
            // detour through a forwarding object). A pack still there keeps its chunks:
            // choosing another copy of the same chunk would make two live copies.
            let content = p
                .content
                .iter()
                .map(|e| match e {
                    Extent::Data(r) if !self.writer.knows_pack(&r.pack) => {
                        Extent::Data(self.writer.lookup(&r.id).unwrap_or_else(|| r.clone()))
                    }
                    other => other.clone(),
                })
                .collect();
            self.dirs[d].nodes[n].content = content;
            self.stats.files_unchanged += 1;
            self.opts.progress.add(1, 0);
            return Ok(());
        }
        // Even an empty-looking file is read: files of /proc say 0 bytes and have more, and
        // those of /sys say 4096 and have fewer; the size recorded is the size read.
        jobs.send(FileJob {
            dir: d,
            node: n,
            path: path.to_path_buf(),
        })
        .map_err(|_| RepoError::Internal("the file workers stopped".into()))
    }

    fn skip(&mut self, d: usize, n: usize, path: &Path, error: String) {
        self.dirs[d].skip.push(n);
        self.skipped.push(Skipped {
            path: path.to_path_buf(),
            error,
        });
    }

    fn apply(&mut self, done: FileDone) {
        match done.result {
            Ok((extents, read)) => {
                let node = &mut self.dirs[done.dir].nodes[done.node];
                let size: u64 = extents.iter().map(Extent::len).sum();
                // `bytes` counted the size lstat gave; the file may have had more or less.
                self.stats.bytes = (self.stats.bytes + size).saturating_sub(node.size);
                node.size = size;
                node.content = extents;
                self.stats.bytes_read += read;
            }
            Err(e) => {
                self.uncount(done.dir, done.node);
                self.skip(done.dir, done.node, &done.path, cause(&e));
            }
        }
    }

    /// Takes a file left out back out of the counts.
    fn uncount(&mut self, d: usize, n: usize) {
        let node = &self.dirs[d].nodes[n];
        if node.kind == NodeKind::File {
            self.stats.files = self.stats.files.saturating_sub(1);
            self.stats.bytes = self.stats.bytes.saturating_sub(node.size);
        }
    }

    fn fix_hardlinks(&mut self) {
        let mut counts: HashMap<u64, u32> = HashMap::new();
        let firsts: HashMap<u64, (usize, usize)> =
            self.links.values().map(|&(g, d, n)| (g, (d, n))).collect();
        for &(_, _, g) in &self.link_copies {
            *counts.entry(g).or_insert(1) += 1;
        }
        for &(d, n, g) in &self.link_copies {
            let (fd, fnode) = firsts[&g];
            let first = self.dirs[fd].nodes[fnode].clone();
            let node = &mut self.dirs[d].nodes[n];
            node.content = first.content;
            node.size = first.size;
            node.hardlink = Some((g, counts[&g]));
        }
        for (&g, &(d, n)) in &firsts {
            let c = counts.get(&g).copied().unwrap_or(1);
            if c > 1 {
                self.dirs[d].nodes[n].hardlink = Some((g, c));
            } else {
                self.dirs[d].nodes[n].hardlink = None;
            }
        }
        // A group whose first member was unreadable leaves its copies without content.
        for (d, n, g) in self.link_copies.clone() {
            let (fd, fnode) = firsts[&g];
            if self.dirs[fd].skip.contains(&fnode) {
                self.uncount(d, n);
                self.dirs[d].skip.push(n);
            }
        }
    }

    /// Encodes every directory into a tree chunk, children first; returns the root ref.
    fn encode(&mut self) -> Result<ChunkRef> {
        let level = self.writer.repo().config().zstd_level;
        for d in (0..self.dirs.len()).rev() {
            let rec = &mut self.dirs[d];
            let skip = std::mem::take(&mut rec.skip);
            let nodes: Vec<Node> = std::mem::take(&mut rec.nodes)
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !skip.contains(i))
                .map(|(_, n)| n)
                .collect();
            let tree = Tree { nodes };
            let data = encode_object(&tree);
            let r = with_compressor(level, |c| {
                self.writer.store_chunk(ChunkKind::Tree, &data, c)
            })?;
            match rec.parent {
                Some((pd, pn)) => self.dirs[pd].nodes[pn].subtree = Some(r),
                None => return Ok(r),
            }
        }
        unreachable!("directory 0 has no parent")
    }
}

fn file_worker(
    writer: &PackWriter,
    jobs: Receiver<FileJob>,
    done: Sender<FileDone>,
    progress: &Progress,
    cancel: &super::cancel::Cancel,
) {
    let mut chunker = Chunker::new(writer);
    for job in jobs {
        if cancel.is_set() {
            // The backup fails before its commit: drain the queue without reading.
            continue;
        }
        // O_NONBLOCK: a file that would block forever (/proc/kmsg) fails with EAGAIN and
        // is skipped with a warning; regular files of real file systems ignore the flag.
        let open = |flags| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(&job.path)
        };
        let result = open(libc::O_NOATIME | libc::O_NONBLOCK)
            .or_else(|_| open(libc::O_NONBLOCK))
            .map_err(|e| RepoError::io(&job.path, e))
            .and_then(|mut f| chunker.chunk_file(&mut f, progress))
            .map_err(|e| match e {
                // chunk_file does not know the path: name it.
                RepoError::Io { source, .. } => RepoError::io(&job.path, source),
                e => e,
            });
        progress.add(1, 0);
        let _ = done.send(FileDone {
            dir: job.dir,
            node: job.node,
            path: job.path,
            result,
        });
    }
}

fn check_backup_name(name: &[u8]) -> Result<()> {
    if name.contains(&b'/') || name.contains(&0) || name.is_empty() || name == b"." || name == b".."
    {
        return Err(RepoError::BadInput(format!(
            "invalid backup name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// Stores one tree chunk holding just `node`: the root of a backup.
fn store_root(writer: &PackWriter, node: Node) -> Result<ChunkRef> {
    let level = writer.repo().config().zstd_level;
    let data = encode_object(&Tree { nodes: vec![node] });
    with_compressor(level, |c| writer.store_chunk(ChunkKind::Tree, &data, c))
}

/// An image backup of a stream: mode 0644, owned by the caller, mtime now.
/// An image backup of a stream: its runs of data chunked, its holes kept as holes.
fn image_from_stream(
    writer: &PackWriter,
    reader: &mut dyn StreamRead,
    progress: &Progress,
) -> Result<(Node, BackupStats)> {
    let now = now_ns();
    let mut node = Node::empty(Vec::new(), NodeKind::File);
    node.uid = rustix::process::getuid().as_raw();
    node.gid = rustix::process::getgid().as_raw();
    node.mtime_ns = now;
    node.ctime_ns = now;
    let mut chunker = Chunker::new(writer);
    let mut read = 0u64;
    loop {
        read += chunker.chunk_stream(reader, &mut node.content, progress)?;
        match reader.take_hole().map_err(|e| RepoError::io("-", e))? {
            0 => break,
            hole => {
                push_extent(&mut node.content, Extent::Hole(hole));
                node.size += hole;
            }
        }
    }
    node.size += read;
    let stats = BackupStats {
        files: 1,
        bytes: node.size,
        bytes_read: read,
        ..Default::default()
    };
    Ok((node, stats))
}

fn image_backup(
    writer: &PackWriter,
    path: &Path,
    name: Option<String>,
    opts: &BackupOptions,
) -> Result<BackupEntry> {
    let stdin = path.as_os_str() == "-";
    let name: Vec<u8> = match (&name, stdin) {
        (Some(n), _) => n.as_bytes().to_vec(),
        (None, true) => {
            return Err(RepoError::BadInput(
                "an image read from stdin needs --name".into(),
            ));
        }
        (None, false) => backup_name(path)?,
    };
    check_backup_name(&name)?;
    let before = writer_counts(writer);
    let (root, mut stats) = if stdin {
        let stdin = super::cancel::CancelRead {
            inner: std::io::stdin(),
            cancel: opts.cancel.clone(),
        };
        let (mut node, stats) = image_from_stream(writer, &mut PlainStream(stdin), &opts.progress)?;
        node.name = name.clone();
        (store_root(writer, node)?, stats)
    } else {
        let meta = std::fs::metadata(path).map_err(|e| RepoError::io(path, e))?;
        if !meta.is_file() {
            return Err(RepoError::BadInput(format!(
                "{} is not a regular file (read a device with `--image -` from stdin)",
                path.display()
            )));
        }
        let mut node = node_from_metadata(&name, path, &meta, None)?;
        let mut f = File::open(path).map_err(|e| RepoError::io(path, e))?;
        let (extents, read) = Chunker::new(writer).chunk_file(&mut f, &opts.progress)?;
        node.size = extents.iter().map(Extent::len).sum();
        node.content = extents;
        let stats = BackupStats {
            files: 1,
            bytes: node.size,
            bytes_read: read,
            ..Default::default()
        };
        (store_root(writer, node)?, stats)
    };
    let after = writer_counts(writer);
    stats.chunks_new = after.0 - before.0;
    stats.bytes_stored_new = after.1 - before.1;
    Ok(BackupEntry {
        name,
        kind: BackupKind::Image,
        source: if stdin {
            b"-".to_vec()
        } else {
            absolute(path).into_os_string().into_vec()
        },
        root,
        stats,
    })
}
