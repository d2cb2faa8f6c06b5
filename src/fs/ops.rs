//! The filesystem's logic, with typed replies: what each FUSE operation answers, without
//! fuser types, so that it runs in unit tests with no kernel. `fuse.rs` only converts.
//!
//! Everything is answered from the inode table, and from the chunk cache for tree chunks
//! and file data; the repository's metadata objects (vault list, point list, manifests)
//! are read on first use and, for vaults and points, re-read after the refresh interval.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cache::{Chunk, ChunkCache};
use crate::repo::format::{ChunkRef, Extent, NodeKind, Tree, decode_object, now_ns};
use crate::repo::{RepoError, Repository};

use super::control;
use super::inodes::*;

/// Entry and attribute TTL of backup contents and points: immutable, cached long.
pub const TREE_TTL: Duration = Duration::from_secs(24 * 3600);
/// TTL of things that change when points arrive: the root, vault directories, `latest`.
pub const LIVE_TTL: Duration = Duration::from_secs(1);
/// TTL of the generated control files: none.
pub const CONTROL_TTL: Duration = Duration::ZERO;
/// `st_blksize` reported for every file.
pub const BLKSIZE: u32 = 4096;

/// The type of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// Attributes, as `stat` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    /// 512-byte blocks actually stored: holes do not count.
    pub blocks: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device number in the kernel's encoding (`new_encode_dev`).
    pub rdev: u32,
}

/// A lookup's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

/// An open's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Keep the kernel's page cache across opens (immutable content).
    pub keep_cache: bool,
    /// Bypass the page cache (generated files whose size is not known in advance).
    pub direct_io: bool,
}

/// A getxattr/listxattr answer: the size asked for, or the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

/// Why an operation failed. Mapped to errno in `errno.rs`, exhaustively.
#[derive(Clone, Debug)]
pub enum FsError {
    NotFound,
    NotDir,
    IsDir,
    ReadOnly,
    NoXattr,
    Range,
    NoData,
    BadHandle,
    Invalid,
    /// mkdir of an existing vault.
    Exists,
    /// rmdir of a vault that holds points.
    NotEmpty,
    /// A write into incoming/ by someone other than the mount's owner or root.
    Access,
    /// Deleting a recovery point without --allow-delete.
    NotPermitted,
    /// An operation the file does not support (a fallocate mode).
    Unsupported,
    /// An ingest that failed: its reason is in the task file and the log.
    Ingest(crate::control::ingest::IngestError),
    Repo(Arc<RepoError>),
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsError::Repo(e) => write!(f, "{e}"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl From<RepoError> for FsError {
    fn from(e: RepoError) -> Self {
        FsError::Repo(Arc::new(e))
    }
}

impl From<Arc<RepoError>> for FsError {
    fn from(e: Arc<RepoError>) -> Self {
        FsError::Repo(e)
    }
}

pub type Result<T, E = FsError> = std::result::Result<T, E>;

/// A kernel cache invalidation the logic asks for; sent by the adapter from a thread of
/// its own (never from inside a request on the same directory, which could deadlock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inval {
    Entry { parent: u64, name: Vec<u8> },
    Inode(u64),
}

/// Settings of the logic layer.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// How old a vault's point list may get before a lookup or listing re-reads it.
    pub refresh: Duration,
    /// Owner of the generated directories and files.
    pub uid: u32,
    pub gid: u32,
    /// Readahead bound: at most this many bytes ahead of a sequential reader (and one
    /// chunk per 512 KiB of it: the average chunk size).
    pub readahead_bytes: u64,
    /// Whether `rmdir` of a recovery point deletes it (EPERM otherwise).
    pub allow_delete: bool,
    /// How long finished tasks stay in `.vaultfs/tasks/`.
    pub task_keep: Duration,
    /// Lists once read are refreshed only by [`VaultFs::refresh_lists`] (the mount runs
    /// it on a thread of its own), never inside a lookup.
    pub background_refresh: bool,
    /// Memory the process held before serving (the mount measures its resident size):
    /// counted, with the inode table, against the chunk cache's budget.
    pub base_memory: u64,
    /// How long a tree walk that reads files counts as under way after its last sign.
    pub walk_linger: Duration,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            refresh: Duration::from_secs(2),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            readahead_bytes: super::DEFAULT_READAHEAD,
            allow_delete: false,
            task_keep: Duration::from_secs(3600),
            background_refresh: false,
            base_memory: 0,
            walk_linger: WALK_LINGER,
        }
    }
}

/// Small files of a directory prefetched at once by the readahead across files.
const READAHEAD_FILES: usize = 64;
/// How long a tree walk that reads files counts as under way after its last sign, by
/// default ([`FsOptions::walk_linger`]).
pub const WALK_LINGER: Duration = Duration::from_secs(1);

/// The bytes of one read: a range of a cached chunk (or of a control file's content) when
/// the read lies within it, so that nothing is copied before the reply; a buffer of its
/// own when the read spans chunks or holes.
#[derive(Debug)]
pub enum ReadData {
    Owned(Vec<u8>),
    Shared(Chunk, std::ops::Range<usize>),
}

impl std::ops::Deref for ReadData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadData::Owned(v) => v,
            ReadData::Shared(c, r) => &c[r.clone()],
        }
    }
}

/// The chunk bound of a readahead of `bytes`: one chunk per 512 KiB (the average chunk
/// size), so that the byte bound is what usually stops the window.
fn readahead_chunks(bytes: u64) -> usize {
    (bytes / (512 << 10)) as usize
}

/// Backups of a point whose top tree could not be read, with the error.
type BrokenBackups = Vec<(Vec<u8>, FsError)>;

/// State of an open file.
#[derive(Debug)]
pub(super) struct FileState {
    pub(super) ino: u64,
    /// The ingest session of a file created in incoming/.
    pub(super) ingest: Option<Arc<crate::control::ingest::IngestSession>>,
    /// Generated content of a control file, fixed at open.
    pub(super) data: Option<Arc<Vec<u8>>>,
    /// Start and end of the last read, and how many reads in a row continued it.
    pub(super) last_start: AtomicU64,
    pub(super) last_end: AtomicU64,
    pub(super) streak: AtomicU64,
}

/// See the module documentation.
pub struct VaultFs {
    pub(super) repo: Arc<Repository>,
    cache: Arc<ChunkCache>,
    pub inodes: InodeTable,
    pub(super) opts: FsOptions,
    pub(super) files: Mutex<HashMap<u64, Arc<FileState>>>,
    pub(super) next_fh: AtomicU64,
    /// Tasks of this daemon (`.vaultfs/tasks`).
    pub tasks: crate::control::tasks::TaskRegistry,
    /// Files being ingested in incoming/, by inode.
    pub(super) sessions: Mutex<HashMap<u64, Arc<crate::control::ingest::IngestSession>>>,
    inval: Mutex<Option<crossbeam_channel::Sender<Inval>>>,
    started_ns: i64,
    /// Until when (ms since `epoch`) a tree walk that reads files (`cp -a`, `tar`,
    /// `rsync`) counts as under way: see [`VaultFs::sibling_readahead`].
    walk_until_ms: AtomicU64,
    epoch: Instant,
    /// Reads of backup files served, and their bytes.
    reads: AtomicU64,
    bytes_served: AtomicU64,
    /// The store's call counts, when the store was wrapped to count them.
    backend_counts: Mutex<Option<Arc<crate::backend::counting::CallCounts>>>,
}

impl std::fmt::Debug for VaultFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultFs")
            .field("repo", &self.repo)
            .field("inodes", &self.inodes.len())
            .finish()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The kernel's device number encoding (`new_encode_dev`) of a userspace `dev_t`.
pub fn encode_dev(rdev: u64) -> u32 {
    let major = libc::major(rdev as libc::dev_t) as u32;
    let minor = libc::minor(rdev as libc::dev_t) as u32;
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// A point's time from its name (`2026-11-22T225501Z`, maybe with `-N`).
fn point_time(name: &str) -> Option<i64> {
    let base = name.get(..18)?;
    let t = chrono::NaiveDateTime::parse_from_str(base, "%Y-%m-%dT%H%M%SZ").ok()?;
    t.and_utc().timestamp_nanos_opt()
}

impl VaultFs {
    pub fn new(repo: Arc<Repository>, cache: Arc<ChunkCache>, opts: FsOptions) -> VaultFs {
        let task_keep = opts.task_keep;
        cache.set_overhead(opts.base_memory);
        let inodes = InodeTable::counting_into(cache.external_counter());
        VaultFs {
            repo,
            cache,
            inodes,
            opts,
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            tasks: crate::control::tasks::TaskRegistry::new(task_keep),
            sessions: Mutex::new(HashMap::new()),
            inval: Mutex::new(None),
            started_ns: now_ns(),
            walk_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            reads: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
            backend_counts: Mutex::new(None),
        }
    }

    /// Where cache invalidations go (the adapter's notifier thread).
    pub fn set_invalidator(&self, tx: crossbeam_channel::Sender<Inval>) {
        *lock(&self.inval) = Some(tx);
    }

    /// Shows these call counts of the store in `.vaultfs/stats.json`.
    pub fn set_backend_counts(&self, c: Arc<crate::backend::counting::CallCounts>) {
        *lock(&self.backend_counts) = Some(c);
    }

    pub fn cache(&self) -> &Arc<ChunkCache> {
        &self.cache
    }

    pub(super) fn invalidate(&self, i: Inval) {
        if let Some(tx) = lock(&self.inval).as_ref() {
            let _ = tx.try_send(i);
        }
    }

    pub(super) fn inode(&self, ino: u64) -> Result<Arc<Inode>> {
        self.inodes.get(ino).ok_or(FsError::NotFound)
    }

    // ---- attributes ----

    pub(super) fn dir_attr(&self, ino: u64, mtime_ns: i64) -> Attr {
        Attr {
            ino,
            size: 0,
            blocks: 0,
            mtime_ns,
            ctime_ns: mtime_ns,
            kind: FileKind::Dir,
            perm: 0o555,
            nlink: 2,
            uid: self.opts.uid,
            gid: self.opts.gid,
            rdev: 0,
        }
    }

    fn kind_of(inode: &Inode) -> FileKind {
        match &inode.body {
            Body::Root(_) | Body::Vault(_) | Body::Point(_) => FileKind::Dir,
            Body::Latest { .. } => FileKind::Symlink,
            Body::Control(c) if c.is_dir() => FileKind::Dir,
            Body::Control(_) => FileKind::File,
            Body::Node(t) => match t.node.kind {
                NodeKind::File => FileKind::File,
                NodeKind::Dir => FileKind::Dir,
                NodeKind::Symlink => FileKind::Symlink,
                NodeKind::Fifo => FileKind::Fifo,
                NodeKind::CharDevice => FileKind::CharDevice,
                NodeKind::BlockDevice => FileKind::BlockDevice,
                NodeKind::Socket => FileKind::Socket,
            },
        }
    }

    fn attr_of(&self, inode: &Inode) -> Result<Entry> {
        let ino = inode.ino;
        Ok(match &inode.body {
            Body::Root(_) => Entry {
                attr: self.dir_attr(ino, self.started_ns),
                ttl: LIVE_TTL,
            },
            Body::Vault(_) => Entry {
                attr: self.dir_attr(ino, self.started_ns),
                ttl: LIVE_TTL,
            },
            Body::Point(p) => Entry {
                attr: self.dir_attr(ino, p.time_ns),
                ttl: TREE_TTL,
            },
            Body::Latest { vault } => {
                let target = self.latest_target(*vault)?;
                let mut attr = self.dir_attr(ino, self.started_ns);
                attr.kind = FileKind::Symlink;
                attr.perm = 0o777;
                attr.nlink = 1;
                attr.size = target.len() as u64;
                Entry {
                    attr,
                    ttl: LIVE_TTL,
                }
            }
            // Generated directories change whenever tasks, points or ingests come and go:
            // an mtime of now makes the kernel drop its cached listing at every listing
            // from the start (it compares the mtime it cached the listing with).
            Body::Control(c @ (Control::Incoming | Control::IncomingVault(_))) => {
                let mut attr = self.dir_attr(ino, now_ns());
                if matches!(c, Control::IncomingVault(_)) {
                    attr.perm = 0o755;
                }
                Entry {
                    attr,
                    ttl: CONTROL_TTL,
                }
            }
            Body::Control(c) if c.is_dir() => Entry {
                attr: self.dir_attr(ino, now_ns()),
                ttl: CONTROL_TTL,
            },
            Body::Control(Control::IncomingFile(_)) => {
                let size = lock(&self.sessions).get(&ino).map_or(0, |s| s.size());
                let mut attr = self.dir_attr(ino, now_ns());
                attr.kind = FileKind::File;
                attr.perm = 0o644;
                attr.nlink = 1;
                attr.size = size;
                attr.blocks = size.div_ceil(512);
                Entry {
                    attr,
                    ttl: CONTROL_TTL,
                }
            }
            Body::Control(c) => {
                let data = self.control_data(c)?;
                let mut attr = self.dir_attr(ino, now_ns());
                attr.kind = FileKind::File;
                attr.perm = 0o444;
                attr.nlink = 1;
                attr.size = data.len() as u64;
                attr.blocks = (data.len() as u64).div_ceil(512);
                Entry {
                    attr,
                    ttl: CONTROL_TTL,
                }
            }
            Body::Node(t) => {
                let n = &t.node;
                Entry {
                    attr: Attr {
                        ino,
                        size: n.size,
                        blocks: t.stored_bytes().div_ceil(512),
                        mtime_ns: n.mtime_ns,
                        ctime_ns: n.ctime_ns,
                        kind: Self::kind_of(inode),
                        perm: (n.mode & 0o7777) as u16,
                        nlink: match (n.kind, n.hardlink) {
                            (NodeKind::File, Some((_, nlink))) => nlink.max(1),
                            _ => 1,
                        },
                        uid: n.uid,
                        gid: n.gid,
                        rdev: match n.kind {
                            NodeKind::CharDevice | NodeKind::BlockDevice => encode_dev(n.rdev),
                            _ => 0,
                        },
                    },
                    ttl: TREE_TTL,
                }
            }
        })
    }

    pub fn getattr(&self, ino: u64) -> Result<Entry> {
        let inode = self.inode(ino)?;
        self.attr_of(&inode)
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Entry> {
        let dir = self.inode(parent)?;
        let ino = match &dir.body {
            // Tree directories: binary search in the (sorted) listing.
            Body::Node(t) => {
                let l = self.tree_children(parent, t)?;
                let i = l
                    .binary_search_by(|(n, _)| n.as_slice().cmp(name))
                    .map_err(|_| FsError::NotFound)?;
                l[i].1
            }
            // A damaged backup answers with its error, not ENOENT.
            Body::Point(p) => {
                let (l, broken) = self.load_backups(parent, p)?;
                match l.iter().find(|(n, _)| n == name) {
                    Some((_, i)) => *i,
                    None => match broken.into_iter().find(|(n, _)| n == name) {
                        Some((_, e)) => return Err(e),
                        None => return Err(FsError::NotFound),
                    },
                }
            }
            _ => {
                let children = self.children(&dir)?;
                children
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, i)| *i)
                    .ok_or(FsError::NotFound)?
            }
        };
        self.getattr(ino)
    }

    /// Whether the kernel may cache a directory's listing across opens: points and
    /// directories inside backups never change.
    pub fn dir_is_immutable(&self, ino: u64) -> bool {
        self.inodes.get(ino).is_some_and(|i| match &i.body {
            // Only once every backup loaded: a partial listing is retried.
            Body::Point(p) => lock(&p.backups).is_some(),
            Body::Node(_) => true,
            _ => false,
        })
    }

    /// Checks that a directory can be listed. Only kernels without
    /// `FUSE_NO_OPENDIR_SUPPORT` ask: listings are served by inode and offset
    /// ([`VaultFs::readdir`]), so a walk costs no OPENDIR/RELEASEDIR round trips.
    pub fn opendir(&self, ino: u64) -> Result<()> {
        let inode = self.inode(ino)?;
        if Self::kind_of(&inode) != FileKind::Dir {
            return Err(FsError::NotDir);
        }
        self.children(&inode).map(|_| ())
    }

    /// Lists a directory from `offset` on (0 is `.`, 1 is `..`, then the entries in
    /// order): `add(ino, kind, name, next_offset)` is called for each entry until it
    /// returns true (the reply is full). A backup's directory is listed from its tree
    /// chunk, loaded once, so its offsets never change; the root, vaults and control
    /// directories are re-listed at each call, in a stable order (vaults by name, points by
    /// time), so a point that appears while a listing is read shows at its end.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, FileKind, &[u8], u64) -> bool,
    ) -> Result<()> {
        let inode = self.inode(ino)?;
        if Self::kind_of(&inode) != FileKind::Dir {
            return Err(FsError::NotDir);
        }
        let children: Listing = match &inode.body {
            Body::Node(t) => {
                let l = self.tree_children(ino, t)?;
                if offset == 0 {
                    self.subtree_readahead(&l);
                    if self.walking() {
                        // A walk that reads files lists a directory, then reads its files,
                        // and then goes on to the next directories.
                        self.files_readahead(t, &l, 0);
                        self.next_dirs_readahead(&inode);
                    }
                }
                l
            }
            _ => Arc::new(self.children(&inode)?),
        };
        let parent = if ino == ROOT_INO {
            ROOT_INO
        } else {
            inode.parent
        };
        for i in offset as usize.. {
            let next = i as u64 + 1;
            let full = match i {
                0 => add(ino, FileKind::Dir, b".", next),
                1 => add(parent, FileKind::Dir, b"..", next),
                _ => {
                    let Some((name, child)) = children.get(i - 2) else {
                        break;
                    };
                    let kind = self
                        .inodes
                        .get(*child)
                        .map(|i| Self::kind_of(&i))
                        .unwrap_or(FileKind::File);
                    add(*child, kind, name, next)
                }
            };
            if full {
                break;
            }
        }
        Ok(())
    }

    /// Readahead down the tree: a directory opened for listing is usually walked (`find`,
    /// `ls -R`, `du`, `cp -a`, `rsync`), so the tree chunks of its subdirectories are
    /// loaded in the background, in pack order so that neighbours go out as one read.
    /// Listing the tree chunk of a directory is the one fetch a walk waits for at every
    /// level; with this, the walk finds most of them loaded.
    fn subtree_readahead(&self, children: &[(Vec<u8>, u64)]) {
        let refs: Vec<ChunkRef> = children
            .iter()
            .filter_map(|(_, child)| {
                let c = self.inodes.get(*child)?;
                match &c.body {
                    // A directory listed once keeps its listing: nothing to load.
                    Body::Node(t)
                        if t.node.kind == NodeKind::Dir && lock(&t.children).is_none() =>
                    {
                        t.node.subtree
                    }
                    _ => None,
                }
            })
            .collect();
        // prefetch_run groups them in pack order.
        self.cache.prefetch_run(&refs);
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        match &inode.body {
            Body::Latest { vault } => Ok(self.latest_target(*vault)?.into_bytes()),
            Body::Node(t) if t.node.kind == NodeKind::Symlink => {
                Ok(t.node.target.clone().unwrap_or_default())
            }
            _ => Err(FsError::Invalid),
        }
    }

    // ---- files ----

    fn control_data(&self, c: &Control) -> Result<Vec<u8>> {
        Ok(match c {
            Control::VaultJson(v) => control::vault_file(&self.repo, v)?,
            Control::PointJson(v, p) => control::point_file(&self.repo, v, p)?,
            Control::TaskJson(id) => {
                let task = self.tasks.get(id).ok_or(FsError::NotFound)?;
                let mut out = serde_json::to_vec_pretty(&task.json()).expect("JSON encodes");
                out.push(b'\n');
                out
            }
            Control::Stats => {
                let mut out = serde_json::to_vec_pretty(&self.stats_json()).expect("JSON encodes");
                out.push(b'\n');
                out
            }
            _ => return Err(FsError::IsDir),
        })
    }

    /// `.vaultfs/stats.json`: what the daemon has done and holds, for monitoring and
    /// benchmarks (read amplification = `chunk_fetch_bytes` / bytes asked).
    pub fn stats_json(&self) -> serde_json::Value {
        let mut j = self.cache.stats_json();
        let o = j.as_object_mut().expect("an object");
        o.insert("reads".into(), self.reads.load(Ordering::Relaxed).into());
        o.insert(
            "bytes_served".into(),
            self.bytes_served.load(Ordering::Relaxed).into(),
        );
        o.insert("inodes".into(), self.inodes.len().into());
        o.insert("rss_bytes".into(), rss_bytes().into());
        if let Some(c) = lock(&self.backend_counts).as_ref() {
            o.insert("backend".into(), c.json());
        }
        j
    }

    /// Opens a file. Any write access is refused: backups are read-only.
    pub fn open(&self, ino: u64, flags: i32) -> Result<Opened> {
        let inode = self.inode(ino)?;
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(FsError::ReadOnly);
        }
        let (data, keep_cache, direct_io) = match &inode.body {
            Body::Node(t) if t.node.kind == NodeKind::Dir => return Err(FsError::IsDir),
            Body::Node(_) => {
                self.sibling_readahead(&inode);
                (None, true, false)
            }
            Body::Control(c) if !c.is_dir() => (Some(Arc::new(self.control_data(c)?)), false, true),
            _ => return Err(FsError::IsDir),
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(
            fh,
            Arc::new(FileState {
                ino,
                ingest: None,
                data,
                last_start: AtomicU64::new(u64::MAX),
                last_end: AtomicU64::new(u64::MAX),
                streak: AtomicU64::new(0),
            }),
        );
        Ok(Opened {
            fh,
            keep_cache,
            direct_io,
        })
    }

    pub fn release(&self, fh: u64) {
        let state = lock(&self.files).remove(&fh);
        if let Some(s) = state.and_then(|s| s.ingest.clone()) {
            // close() flushes first; this covers a writer that vanished without one.
            self.release_ingest(&s);
        }
    }

    /// Reads `size` bytes at `offset` (fewer at the end of the file).
    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<ReadData> {
        let state = lock(&self.files).get(&fh).cloned();
        if let Some(data) = state
            .as_ref()
            .filter(|s| s.ino == ino)
            .and_then(|s| s.data.as_ref())
        {
            let start = (offset as usize).min(data.len());
            let end = start.saturating_add(size as usize).min(data.len());
            return Ok(ReadData::Shared(data.clone(), start..end));
        }
        let inode = self.inode(ino)?;
        let Body::Node(t) = &inode.body else {
            return Err(FsError::IsDir);
        };
        if t.node.kind != NodeKind::File {
            return Err(FsError::Invalid);
        }
        let out = self.read_node(&inode, t, offset, size)?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes_served
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        if let Some(s) = state.filter(|s| s.ino == ino) {
            self.readahead(t, &s, offset, offset + out.len() as u64);
        }
        Ok(out)
    }

    fn read_node(&self, inode: &Inode, t: &TreeNode, offset: u64, size: u32) -> Result<ReadData> {
        let total = t.node.size;
        if offset >= total || size == 0 {
            return Ok(ReadData::Owned(Vec::new()));
        }
        let end = offset.saturating_add(size as u64).min(total);
        let offs = t.offsets();
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut i = t.extent_at(offset);
        let mut pos = offset;
        while pos < end && i < t.node.content.len() {
            let (start, stop) = (offs[i], offs[i + 1]);
            let take_end = stop.min(end);
            match &t.node.content[i] {
                Extent::Hole(_) => out.resize(out.len() + (take_end - pos) as usize, 0),
                Extent::Data(r) => {
                    let chunk = self.cache.get(r).inspect_err(|e| {
                        tracing::error!(
                            file = %self.inodes.path(inode.ino),
                            ino = inode.ino,
                            chunk = %r.id,
                            pack = %r.pack.to_hex(),
                            "read failed at offset {pos}: {e}"
                        );
                    })?;
                    let a = (pos - start) as usize;
                    let b = (take_end - start) as usize;
                    let slice = chunk.get(a..b).ok_or_else(|| {
                        FsError::from(RepoError::damaged(
                            format!("chunk {}", r.id),
                            "shorter than its recorded length",
                        ))
                    })?;
                    if pos == offset && take_end == end {
                        // The whole read lies in this chunk: served from the cache's copy.
                        return Ok(ReadData::Shared(chunk, a..b));
                    }
                    out.extend_from_slice(slice);
                }
            }
            pos = take_end;
            i += 1;
        }
        // Content shorter than the recorded size reads as zeros (never happens for a
        // consistent backup; keeps reads total).
        out.resize((end - offset) as usize, 0);
        Ok(ReadData::Owned(out))
    }

    /// Sequential readers get the next chunks prefetched: the window grows with the number
    /// of reads in a row that continued the previous one, bounded in chunks and bytes.
    fn readahead(&self, t: &TreeNode, s: &FileState, offset: u64, end: u64) {
        // Requests of one stream may reach us slightly out of order (the kernel sends
        // its readahead requests asynchronously to several session threads): a read
        // continues the stream when it starts within one request's slack of the last one.
        const SLACK: u64 = 128 << 10;
        let last_start = s.last_start.swap(offset, Ordering::Relaxed);
        let last_end = s.last_end.swap(end, Ordering::Relaxed);
        let sequential = last_end != u64::MAX
            && offset + SLACK >= last_start
            && offset <= last_end.saturating_add(SLACK);
        let streak = if sequential {
            s.streak.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            s.streak.store(0, Ordering::Relaxed);
            0
        };
        if streak == 0 || end >= t.node.size {
            return;
        }
        let want = (streak as usize).min(readahead_chunks(self.opts.readahead_bytes));
        let limit = self.readahead_limit();
        let mut window = Vec::with_capacity(want);
        let mut bytes = 0u64;
        for e in &t.node.content[t.extent_at(end.saturating_sub(1))..] {
            if let Extent::Data(r) = e {
                if window.len() >= want || bytes >= limit {
                    break;
                }
                window.push(*r);
                bytes += r.raw_len as u64;
            }
        }
        // Refill in batches, so that a run of chunks goes out as one grouped read: only
        // when less than half of the window ahead is cached or loading.
        let ahead = window
            .iter()
            .take_while(|r| self.cache.present_or_loading(&r.id))
            .count();
        if ahead * 2 < window.len().max(1) {
            self.cache.prefetch_run(&window[ahead..]);
        }
    }

    /// Readahead across files: when files of one directory are opened one after the other
    /// (`cp -a`, `tar`, `rsync`, `sha256sum *`), the chunks of the next small files are
    /// loaded in the background, grouped into one read per run of neighbours in a pack.
    /// Such opens also mark a tree walk as under way for [`FsOptions::walk_linger`]: meanwhile the
    /// first file opened in a directory, and a directory listed from its start, get the
    /// directory's small files loaded at once, so that a walk through many small
    /// directories does not wait for one fetch per file. Opening a lone file fetches
    /// nothing extra.
    fn sibling_readahead(&self, inode: &Inode) {
        let Some((dir, listing, idx)) = self.place_in_parent(inode) else {
            return;
        };
        let Body::Node(d) = &dir.body else { return };
        let idx = idx as u64;
        let last = d.last_open.swap(idx, Ordering::Relaxed);
        let sequential = if last == u64::MAX {
            self.walking()
        } else {
            idx > last && idx <= last + 8
        };
        if !sequential {
            return;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        self.walk_until_ms.fetch_max(
            now + self.opts.walk_linger.as_millis() as u64,
            Ordering::Relaxed,
        );
        if idx + READAHEAD_FILES as u64 / 2 >= d.ahead_until.load(Ordering::Relaxed) {
            self.files_readahead(d, &listing, idx as usize + 1);
        }
    }

    /// During a walk, the directories listed after `dir` in its parent get their small
    /// files prefetched too, as far as their tree chunks are loaded already (the parent's
    /// listing asked for them): the walk then finds a directory's files loading before it
    /// gets there, instead of waiting for them at every directory.
    fn next_dirs_readahead(&self, dir: &Inode) {
        const DIRS: usize = 4;
        let Some((_, listing, idx)) = self.place_in_parent(dir) else {
            return;
        };
        let mut dirs = 0;
        for (_, child) in &listing[idx + 1..] {
            if dirs >= DIRS {
                break;
            }
            let Some(c) = self.inodes.get(*child) else {
                continue;
            };
            let Body::Node(ct) = &c.body else { continue };
            if ct.node.kind != NodeKind::Dir {
                continue;
            }
            dirs += 1;
            let loaded = lock(&ct.children).is_some()
                || ct.node.subtree.is_none_or(|r| self.cache.contains(&r.id));
            if !loaded {
                continue;
            }
            if let Ok(l) = self.tree_children(*child, ct) {
                self.files_readahead(ct, &l, 0);
            }
        }
    }

    /// The directory of a backup entry, the directory's listing (when it was listed), and
    /// the entry's position in it.
    fn place_in_parent(&self, inode: &Inode) -> Option<(Arc<Inode>, Listing, usize)> {
        let parent = self.inodes.get(inode.parent)?;
        let Body::Node(p) = &parent.body else {
            return None;
        };
        let listing = lock(&p.children).clone()?;
        let idx = listing
            .binary_search_by(|(n, _)| n.as_slice().cmp(&inode.name))
            .ok()?;
        Some((parent, listing, idx))
    }

    /// Bytes one readahead may ask for: `--readahead`, and never more than half of what
    /// the chunk cache may hold now (a window the cache cannot keep would evict its own
    /// chunks before they are read, and fetch them twice).
    fn readahead_limit(&self) -> u64 {
        self.opts.readahead_bytes.min(self.cache.tier_limit() / 2)
    }

    /// Whether a walk that reads files was seen within [`FsOptions::walk_linger`].
    fn walking(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        now < self.walk_until_ms.load(Ordering::Relaxed)
    }

    /// Prefetches the chunks of the small files of directory `d` from position `from` of
    /// its listing on (at most [`READAHEAD_FILES`] files and the readahead's bytes).
    fn files_readahead(&self, d: &TreeNode, listing: &[(Vec<u8>, u64)], from: usize) {
        const SMALL: u64 = 1 << 20;
        // What an earlier call covered is queued already.
        let from = from.max(d.ahead_until.load(Ordering::Relaxed) as usize);
        let limit = self.readahead_limit();
        let mut refs = Vec::new();
        let (mut files, mut bytes) = (0, 0u64);
        let mut next = from;
        while let Some((_, child)) = listing.get(next) {
            if files >= READAHEAD_FILES || bytes >= limit {
                break;
            }
            next += 1;
            let Some(c) = self.inodes.get(*child) else {
                continue;
            };
            let Body::Node(ct) = &c.body else { continue };
            if ct.node.kind != NodeKind::File || ct.node.size > SMALL {
                continue;
            }
            files += 1;
            for e in &ct.node.content {
                if let Extent::Data(r) = e {
                    refs.push(*r);
                    bytes += r.stored_len as u64;
                }
            }
        }
        d.ahead_until.store(next as u64, Ordering::Relaxed);
        self.cache.prefetch_run(&refs);
    }

    /// `lseek` with SEEK_DATA or SEEK_HOLE, answered from the extent list.
    pub fn lseek(&self, ino: u64, offset: i64, whence: i32) -> Result<i64> {
        let inode = self.inode(ino)?;
        let Body::Node(t) = &inode.body else {
            return Err(FsError::Invalid);
        };
        let want_data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return Err(FsError::Invalid),
        };
        let size = t.node.size;
        let off = u64::try_from(offset).map_err(|_| FsError::NoData)?;
        if off >= size {
            return Err(FsError::NoData);
        }
        let offs = t.offsets();
        let first = t.extent_at(off);
        let found = t.node.content[first..]
            .iter()
            .position(|e| matches!(e, Extent::Data(_)) == want_data && !e.is_empty())
            .map(|k| offs[first + k].max(off));
        match (found, want_data) {
            (Some(pos), _) => Ok(pos as i64),
            (None, true) => Err(FsError::NoData),
            // The implicit hole at the end of the file.
            (None, false) => Ok(size as i64),
        }
    }

    // ---- extended attributes ----

    fn xattrs(&self, ino: u64) -> Result<Arc<Inode>> {
        self.inode(ino)
    }

    pub fn getxattr(&self, ino: u64, name: &[u8], size: u32) -> Result<XattrReply> {
        let inode = self.xattrs(ino)?;
        let Body::Node(t) = &inode.body else {
            return Err(FsError::NoXattr);
        };
        let x = &t.node.xattrs;
        let value = x
            .binary_search_by(|(n, _)| n.as_slice().cmp(name))
            .map(|i| &x[i].1)
            .or_else(|_| {
                x.iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v)
                    .ok_or(FsError::NoXattr)
            })?;
        sized(value.clone(), size)
    }

    pub fn listxattr(&self, ino: u64, size: u32) -> Result<XattrReply> {
        let inode = self.xattrs(ino)?;
        let mut out = Vec::new();
        if let Body::Node(t) = &inode.body {
            for (n, _) in &t.node.xattrs {
                out.extend_from_slice(n);
                out.push(0);
            }
        }
        sized(out, size)
    }
}

fn sized(data: Vec<u8>, size: u32) -> Result<XattrReply> {
    if size == 0 {
        Ok(XattrReply::Size(data.len() as u32))
    } else if data.len() > size as usize {
        Err(FsError::Range)
    } else {
        Ok(XattrReply::Data(data))
    }
}

#[path = "listing.rs"]
mod listing;

#[cfg(test)]
#[path = "ops_tests.rs"]
mod tests;

/// This process's resident set size, from /proc (0 where that is not readable).
pub(super) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
