//! [`VaultFs`]: the filesystem's operations, with typed replies and no fuser types, so
//! that they run in unit tests with no kernel (`fuse.rs` only converts). Each operation
//! is routed to the part that owns what it touches:
//!
//! | part | owns |
//! |---|---|
//! | [`Namespace`] (`namespace.rs`) | the inode table, the listings of vaults, points and trees, refresh and kernel invalidations |
//! | [`Handles`] (`handles.rs`) | open files |
//! | [`Readahead`] (`readahead.rs`) | what is loaded before it is asked (hooks at open, read and listing) |
//! | [`Incoming`] (`incoming.rs`) | ingest sessions in `.vaultfs/incoming/`, vault mkdir/rmdir, point rmdir |
//! | [`ControlFiles`] (`control.rs`) | the generated files and directories of `.vaultfs/` |
//! | [`Access`] (`access.rs`) | who may see which vault, on a mount with `--allow-other`: the `*_for` operations and [`VaultFs::permit`] take the caller |
//!
//! A file of a backup is answered from its node by [`super::file`] (the data path of a
//! read, lseek, xattrs).

use std::sync::Arc;
use std::time::Duration;

use crate::cache::ChunkCache;
use crate::control::tasks::TaskRegistry;
use crate::repo::Repository;
use crate::repo::format::{NodeKind, now_ns};

use super::access::{Access, Caller, Scope, scope_of, vault_top};
use super::control::{ControlFiles, Sources};
use super::file;
use super::handles::{Handles, Open};
use super::incoming::Incoming;
use super::inodes::{Body, Control, Inode, InodeTable, ROOT_INO};
use super::namespace::{Namespace, kind_of};
use super::readahead::{Readahead, Stream, WALK_LINGER};
use super::reply::{
    CONTROL_TTL, Entry, FileKind, FsError, Inval, Opened, ReadData, Result, XattrReply,
};

/// Settings of the logic layer.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// How old a vault's point list may get before a lookup or listing re-reads it.
    pub refresh: Duration,
    /// Owner of the generated directories and files.
    pub uid: u32,
    pub gid: u32,
    /// Readahead bound: at most this many bytes ahead of a sequential reader.
    pub readahead_bytes: u64,
    /// Whether `rmdir` of a recovery point deletes it (EPERM otherwise).
    pub allow_delete: bool,
    /// How long the daemon keeps its own finished tasks in memory (the repository keeps
    /// their records for its retention, see `repo::tasks`; in a repository of an older
    /// format, which records no tasks, this is how long they stay in `.vaultfs/tasks/`).
    pub task_keep: Duration,
    /// Lists once read are refreshed only by [`VaultFs::refresh_lists`] (the mount runs
    /// it on a thread of its own), never inside a lookup.
    pub background_refresh: bool,
    /// Memory the process held before serving (the mount measures its resident size):
    /// counted, with the inode table, against the chunk cache's budget.
    pub base_memory: u64,
    /// How long a tree walk that reads files counts as under way after its last sign.
    pub walk_linger: Duration,
    /// Judge each request by who sent it (`access.rs`): the mount lets other users in.
    pub access_control: bool,
    /// What the inode table may hold before the coldest entries the kernel caches are
    /// invalidated (0: no bound; see [`Namespace::trim`]).
    pub inode_budget: u64,
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
            access_control: false,
            inode_budget: 0,
        }
    }
}

/// See the module documentation.
pub struct VaultFs {
    repo: Arc<Repository>,
    cache: Arc<ChunkCache>,
    ns: Namespace,
    handles: Handles,
    readahead: Readahead,
    incoming: Incoming,
    control: ControlFiles,
    /// Who may see which vault (`access.rs`).
    access: Access,
    /// Tasks of this daemon (`.vaultfs/tasks`).
    pub tasks: TaskRegistry,
}

impl std::fmt::Debug for VaultFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultFs")
            .field("repo", &self.repo)
            .field("ns", &self.ns)
            .finish()
    }
}

impl VaultFs {
    pub fn new(repo: Arc<Repository>, cache: Arc<ChunkCache>, opts: FsOptions) -> VaultFs {
        cache.set_overhead(opts.base_memory);
        VaultFs {
            ns: Namespace::new(
                repo.clone(),
                cache.clone(),
                opts.refresh,
                opts.background_refresh,
                opts.uid,
                opts.gid,
                opts.inode_budget,
            ),
            handles: Handles::default(),
            readahead: Readahead::new(cache.clone(), opts.readahead_bytes, opts.walk_linger),
            incoming: Incoming::new(repo.clone(), opts.uid, opts.allow_delete),
            control: ControlFiles::default(),
            access: Access::new(opts.access_control, opts.uid),
            tasks: TaskRegistry::with_repo(repo.clone(), opts.task_keep, opts.refresh),
            repo,
            cache,
        }
    }

    /// Where cache invalidations go (the adapter's notifier thread).
    pub fn set_invalidator(&self, tx: crossbeam_channel::Sender<Inval>) {
        self.ns.set_invalidator(tx);
    }

    /// Shows these call counts of the store in `.vaultfs/stats.json`.
    pub fn set_backend_counts(&self, c: Arc<crate::backend::counting::CallCounts>) {
        self.control.set_backend_counts(c);
    }

    pub fn cache(&self) -> &Arc<ChunkCache> {
        &self.cache
    }

    pub fn inodes(&self) -> &InodeTable {
        &self.ns.inodes
    }

    pub fn readahead(&self) -> &Readahead {
        &self.readahead
    }

    /// The namespace (the trimming thread waits on it, see [`Namespace::trim`]).
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// See [`Namespace::refresh_lists`].
    pub fn refresh_lists(&self) {
        self.ns.refresh_lists();
        self.access.refresh(&self.repo);
    }

    // ---- who may see what (see access.rs) ----

    /// Whether requests are judged by who sent them: listings then differ from caller to
    /// caller, and must not be cached by the kernel across callers.
    pub fn listings_per_caller(&self) -> bool {
        self.access.enabled()
    }

    fn sees(&self, inode: &Arc<Inode>, who: &Caller) -> bool {
        self.access
            .allows(&self.repo, &scope_of(&self.ns, &self.tasks, inode), who)
    }

    /// EACCES unless `who` may see inode `ino`.
    pub fn permit(&self, ino: u64, who: &Caller) -> Result<()> {
        if self.access.privileged(who) {
            return Ok(());
        }
        if self.sees(&self.ns.inode(ino)?, who) {
            Ok(())
        } else {
            Err(FsError::Access)
        }
    }

    /// [`VaultFs::lookup`] for `who`: EACCES for a directory or an entry it may not see.
    pub fn lookup_for(&self, who: &Caller, parent: u64, name: &[u8]) -> Result<Entry> {
        self.permit(parent, who)?;
        let e = self.lookup(parent, name)?;
        if !self.access.privileged(who)
            && !self
                .ns
                .inodes
                .get(e.attr.ino)
                .is_some_and(|i| self.sees(&i, who))
        {
            // The kernel is not answered with this entry: it holds no lookup of it.
            self.forget(e.attr.ino, 1);
            return Err(FsError::Access);
        }
        Ok(e)
    }

    /// [`VaultFs::readdir`] for `who`: refused for a directory it may not see, without
    /// the entries it may not see.
    pub fn readdir_for(
        &self,
        who: &Caller,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, FileKind, &[u8], u64) -> bool,
    ) -> Result<()> {
        self.permit(ino, who)?;
        self.list(ino, offset, false, Some(who), |child, inode, name, next| {
            let kind = inode.map_or(FileKind::File, |i| kind_of(&i));
            add(child, kind, name, next)
        })
    }

    /// [`VaultFs::readdirplus`] for `who`, as [`VaultFs::readdir_for`].
    pub fn readdirplus_for(
        &self,
        who: &Caller,
        ino: u64,
        offset: u64,
        add: impl FnMut(u64, &[u8], &Entry, u64) -> bool,
    ) -> Result<()> {
        self.permit(ino, who)?;
        self.listplus(ino, offset, Some(who), add)
    }

    fn sources(&self) -> Sources<'_> {
        Sources {
            repo: &self.repo,
            ns: &self.ns,
            tasks: &self.tasks,
            cache: &self.cache,
            handles: &self.handles,
            incoming: &self.incoming,
        }
    }

    /// `.vaultfs/stats.json`'s content (also what `--metrics` scrapes read).
    pub fn stats_json(&self) -> serde_json::Value {
        self.control.stats_json(&self.sources())
    }

    // ---- attributes and names ----

    /// Attributes of an inode. A generated file is rendered (or its rendering of the last
    /// second reused) unless `render` is false (see `control.rs`).
    fn attr(&self, inode: &Inode, render: bool) -> Result<Entry> {
        let mut e = self.attr_as_stored(inode, render)?;
        if self.access.enabled()
            && let Some(vault) = vault_top(inode)
        {
            // Every path walk through a vault asks the daemon (see access.rs).
            self.access.shape(&self.repo, vault, &mut e.attr);
            e.ttl = Duration::ZERO;
        }
        Ok(e)
    }

    fn attr_as_stored(&self, inode: &Inode, render: bool) -> Result<Entry> {
        let ino = inode.ino;
        let Body::Control(c) = &inode.body else {
            return self.ns.attr_of(inode);
        };
        // Generated directories change whenever tasks, points or ingests come and go:
        // an mtime of now makes the kernel drop its cached listing at every listing
        // from the start (it compares the mtime it cached the listing with).
        let mut attr = self.ns.dir_attr(ino, now_ns());
        match c {
            Control::IncomingFile(_) => return Ok(self.incoming.attr(&self.ns, ino)),
            Control::IncomingVault(_) => attr.perm = 0o755,
            c if c.is_dir() => {}
            c => {
                let size = if render {
                    self.control.content(&self.sources(), c)?.len() as u64
                } else {
                    self.control.last_size(&self.sources(), c)
                };
                attr = attr.as_file(size, 0o444);
            }
        }
        Ok(Entry {
            attr,
            ttl: CONTROL_TTL,
        })
    }

    pub fn getattr(&self, ino: u64) -> Result<Entry> {
        let inode = self.ns.inode(ino)?;
        self.attr(&inode, true)
    }

    /// Attributes for a listing with attributes (readdirplus): like
    /// [`VaultFs::getattr`], without rendering generated files.
    pub fn listing_attr(&self, ino: u64) -> Result<Entry> {
        let inode = self.ns.inode(ino)?;
        self.attr(&inode, false)
    }

    /// Children of a directory inode (without `.` and `..`).
    fn children(&self, inode: &Inode) -> Result<super::inodes::Listing> {
        match &inode.body {
            Body::Control(c) => self
                .control
                .children(&self.ns, &self.tasks, inode.ino, c, |v| {
                    self.incoming.files(v)
                })
                .map(Arc::new),
            _ => self.ns.children(inode),
        }
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Entry> {
        let dir = self.ns.inode(parent)?;
        let ino = match &dir.body {
            // Tree directories: binary search in the (sorted) listing.
            Body::Node(t) => {
                let l = self.ns.tree_children(parent, t)?;
                let i = l
                    .binary_search_by(|(n, _)| n.as_slice().cmp(name))
                    .map_err(|_| FsError::NotFound)?;
                l[i].1
            }
            // A damaged backup answers with its error, not ENOENT.
            Body::Point(p) => {
                let (l, broken) = self.ns.load_backups(parent, p)?;
                match l.iter().find(|(n, _)| n == name) {
                    Some((_, i)) => *i,
                    None => match broken.into_iter().find(|(n, _)| n == name) {
                        Some((_, e)) => return Err(e),
                        None => return Err(FsError::NotFound),
                    },
                }
            }
            _ => self
                .children(&dir)?
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, i)| *i)
                .ok_or(FsError::NotFound)?,
        };
        // The kernel holds the entry it is answered with (until it forgets it).
        let inode = self.ns.child(&dir, ino, true)?;
        self.attr(&inode, true)
            .inspect_err(|_| self.ns.inodes.unhold(ino))
    }

    /// FORGET: the kernel no longer holds `n` lookups of `ino` (see `inodes.rs`).
    pub fn forget(&self, ino: u64, n: u64) {
        self.ns.inodes.forget(ino, n);
    }

    /// Whether the kernel may cache a directory's listing across opens: points and
    /// directories inside backups never change.
    pub fn dir_is_immutable(&self, ino: u64) -> bool {
        self.ns.inodes.get(ino).is_some_and(|i| match &i.body {
            // Only once every backup loaded: a partial listing is retried.
            Body::Point(p) => crate::sync::lock(&p.backups).is_some(),
            Body::Node(_) => true,
            _ => false,
        })
    }

    /// Whether a write of some kind works in this inode, as `access(W_OK)` answers:
    /// the root (mkdir and rmdir of vaults), `incoming/<vault>/` (new files become
    /// points), a vault directory with `--allow-delete` (rmdir of a point). Everything
    /// else is read-only: backups, points, control files, files being ingested (they
    /// cannot be opened again for writing).
    pub fn writable(&self, ino: u64) -> Result<bool> {
        Ok(match &self.ns.inode(ino)?.body {
            Body::Root(_) | Body::Control(Control::IncomingVault(_)) => true,
            Body::Vault(_) => self.incoming.allow_delete,
            _ => false,
        })
    }

    /// Checks that a directory can be listed. Only kernels without
    /// `FUSE_NO_OPENDIR_SUPPORT` ask: listings are served by inode and offset
    /// ([`VaultFs::readdir`]), so a walk costs no OPENDIR/RELEASEDIR round trips.
    pub fn opendir(&self, ino: u64) -> Result<()> {
        let inode = self.ns.inode(ino)?;
        if kind_of(&inode) != FileKind::Dir {
            return Err(FsError::NotDir);
        }
        self.children(&inode).map(|_| ())
    }

    /// Lists a directory from `offset` on (0 is `.`, 1 is `..`, then the entries in
    /// order): `add(ino, kind, name, next_offset)` is called for each entry until it
    /// returns true (the reply is full). A backup's directory is listed from its tree
    /// chunk, loaded once and shared by every reader, so its offsets never change and a
    /// page costs no copy of the listing; the root, vaults and control directories are
    /// re-listed at each call, in a stable order (vaults by name, points by time), so a
    /// point that appears while a listing is read shows at its end.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(u64, FileKind, &[u8], u64) -> bool,
    ) -> Result<()> {
        self.list(ino, offset, false, None, |child, inode, name, next| {
            let kind = inode.map_or(FileKind::File, |i| kind_of(&i));
            add(child, kind, name, next)
        })
    }

    /// Like [`VaultFs::readdir`], with each entry's attributes (readdirplus): the kernel
    /// holds every entry but `.` and `..` that `add` takes (returns false for). An entry
    /// whose attributes cannot be had (a control file of a vanished point) is left out;
    /// its lookup will report the error.
    pub fn readdirplus(
        &self,
        ino: u64,
        offset: u64,
        add: impl FnMut(u64, &[u8], &Entry, u64) -> bool,
    ) -> Result<()> {
        self.listplus(ino, offset, None, add)
    }

    fn listplus(
        &self,
        ino: u64,
        offset: u64,
        who: Option<&Caller>,
        mut add: impl FnMut(u64, &[u8], &Entry, u64) -> bool,
    ) -> Result<()> {
        self.list(ino, offset, true, who, |child, inode, name, next| {
            let Some(inode) = inode else { return false };
            let Ok(e) = self.attr(&inode, false) else {
                if name != b"." && name != b".." {
                    self.ns.inodes.unhold(child);
                }
                return false;
            };
            let full = add(child, name, &e, next);
            if full && name != b"." && name != b".." {
                self.ns.inodes.unhold(child);
            }
            full
        })
    }

    /// Walks a listing from `offset`: `visit(ino, inode, name, next)` until it returns
    /// true. With `hold`, each entry but `.` and `..` is passed held (see `inodes.rs`).
    /// With `who`, the entries of a directory of all vaults (the root, `.vaultfs/...`)
    /// that `who` may not see are left out (their offsets stay unused).
    fn list(
        &self,
        ino: u64,
        offset: u64,
        hold: bool,
        who: Option<&Caller>,
        mut visit: impl FnMut(u64, Option<Arc<Inode>>, &[u8], u64) -> bool,
    ) -> Result<()> {
        let inode = self.ns.inode(ino)?;
        if kind_of(&inode) != FileKind::Dir {
            return Err(FsError::NotDir);
        }
        let children = self.children(&inode)?;
        // Inside a vault, everything is the vault's: judged once, by the caller.
        let filter = who.filter(|w| {
            !self.access.privileged(w) && scope_of(&self.ns, &self.tasks, &inode) == Scope::Common
        });
        if offset == 0 && matches!(inode.body, Body::Node(_)) {
            self.readahead.on_list(&self.ns, &inode, &children);
        }
        let parent = if ino == ROOT_INO {
            inode.clone()
        } else {
            self.ns
                .inode(inode.parent)
                .unwrap_or_else(|_| inode.clone())
        };
        for i in offset as usize.. {
            let next = i as u64 + 1;
            let full = match i {
                0 => visit(ino, Some(inode.clone()), b".", next),
                1 => visit(parent.ino, Some(parent.clone()), b"..", next),
                _ => {
                    let Some((name, child)) = children.get(i - 2) else {
                        break;
                    };
                    if let Some(w) = filter
                        && !self.ns.inodes.get(*child).is_some_and(|c| self.sees(&c, w))
                    {
                        continue;
                    }
                    let c = self.ns.child(&inode, *child, hold).ok();
                    visit(*child, c, name, next)
                }
            };
            if full {
                break;
            }
        }
        Ok(())
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let inode = self.ns.inode(ino)?;
        match &inode.body {
            Body::Latest { vault } => Ok(self.ns.latest_target(*vault)?.into_bytes()),
            Body::Node(t) if t.node.kind == NodeKind::Symlink => {
                Ok(t.node.target.clone().unwrap_or_default())
            }
            _ => Err(FsError::Invalid),
        }
    }

    // ---- files ----

    /// Opens a file. Any write access is refused: backups are read-only.
    pub fn open(&self, ino: u64, flags: i32) -> Result<Opened> {
        let inode = self.ns.inode(ino)?;
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(FsError::ReadOnly);
        }
        let (open, keep_cache, direct_io) = match &inode.body {
            Body::Node(t) if t.node.kind == NodeKind::Dir => return Err(FsError::IsDir),
            Body::Node(_) => {
                self.readahead.on_open(&self.ns, &inode);
                (Open::Backup(Stream::default()), true, false)
            }
            Body::Control(c) if !c.is_dir() => {
                let data = self.control.content(&self.sources(), c)?;
                (Open::Generated(data), false, true)
            }
            _ => return Err(FsError::IsDir),
        };
        Ok(Opened {
            fh: self.handles.insert(ino, open),
            keep_cache,
            direct_io,
        })
    }

    pub fn release(&self, fh: u64) {
        if let Some(h) = self.handles.remove(fh)
            && let Some(s) = h.ingest()
        {
            // close() flushes first; this covers a writer that vanished without one.
            self.incoming.release(&self.ns, s);
        }
    }

    /// Reads `size` bytes at `offset` (fewer at the end of the file).
    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Result<ReadData> {
        let handle = self.handles.get(fh).filter(|h| h.ino == ino);
        if let Some(Open::Generated(data)) = handle.as_ref().map(|h| &h.open) {
            let start = (offset as usize).min(data.len());
            let end = start.saturating_add(size as usize).min(data.len());
            return Ok(ReadData::Shared(data.clone(), start..end));
        }
        let inode = self.ns.inode(ino)?;
        let Body::Node(t) = &inode.body else {
            return Err(FsError::IsDir);
        };
        if t.node.kind != NodeKind::File {
            return Err(FsError::Invalid);
        }
        let out = file::read(&self.cache, &self.ns.inodes, &inode, t, offset, size)?;
        self.control.count_read(out.len());
        if let Some(Open::Backup(stream)) = handle.as_ref().map(|h| &h.open) {
            self.readahead
                .on_read(t, stream, offset, offset + out.len() as u64);
        }
        Ok(out)
    }

    /// `lseek` with SEEK_DATA or SEEK_HOLE, answered from the extent list.
    pub fn lseek(&self, ino: u64, offset: i64, whence: i32) -> Result<i64> {
        match &self.ns.inode(ino)?.body {
            Body::Node(t) => file::seek(t, offset, whence),
            _ => Err(FsError::Invalid),
        }
    }

    pub fn getxattr(&self, ino: u64, name: &[u8], size: u32) -> Result<XattrReply> {
        match &self.ns.inode(ino)?.body {
            Body::Node(t) => file::getxattr(t, name, size),
            _ => Err(FsError::NoXattr),
        }
    }

    pub fn listxattr(&self, ino: u64, size: u32) -> Result<XattrReply> {
        match &self.ns.inode(ino)?.body {
            Body::Node(t) => file::listxattr(t, size),
            _ => file::sized(Vec::new(), size),
        }
    }

    // ---- the writable corners: incoming/, vaults, points (see incoming.rs) ----

    /// `create` in `incoming/<vault>/`: starts an ingest session.
    pub fn create(&self, parent: u64, name: &[u8], uid: u32) -> Result<(Entry, Opened)> {
        let (ns, handles) = (&self.ns, &self.handles);
        self.incoming
            .create(ns, handles, &self.tasks, parent, name, uid)
    }

    fn ingest_of(&self, fh: u64) -> Result<Arc<crate::control::ingest::IngestSession>> {
        self.handles.ingest(fh).ok_or(FsError::ReadOnly)
    }

    /// `write` to a file in incoming/.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8], pid: u32) -> Result<u32> {
        let s = self.ingest_of(fh)?;
        self.incoming.write(&s, offset, data, pid)
    }

    /// `flush` (every `close()`): for a file in incoming/, the ingest's outcome.
    pub fn flush(&self, fh: u64, pid: u32) -> Result<()> {
        match self.handles.ingest(fh) {
            Some(s) => self.incoming.flush(&self.ns, &s, pid),
            None => Ok(()),
        }
    }

    pub fn setattr_incoming(&self, ino: u64, size: Option<u64>) -> Result<Entry> {
        self.incoming.setattr(&self.ns, ino, size)
    }

    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        let s = self.ingest_of(fh)?;
        self.incoming.fallocate(&s, offset, len, mode)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        uid: u32,
    ) -> Result<()> {
        self.incoming
            .rename(&self.ns, parent, name, newparent, newname, uid)
    }

    pub fn unlink(&self, parent: u64, name: &[u8], uid: u32) -> Result<()> {
        if let Some(id) = self.task_file(parent, name) {
            return self.cancel_task(&id, uid);
        }
        self.incoming.unlink(&self.ns, parent, name, uid)
    }

    /// The task id of `.vaultfs/tasks/<id>.json`, when `parent` is that directory.
    fn task_file(&self, parent: u64, name: &[u8]) -> Option<String> {
        let inode = self.ns.inodes.get(parent)?;
        if !matches!(&inode.body, Body::Control(Control::Tasks)) {
            return None;
        }
        let name = std::str::from_utf8(name).ok()?;
        Some(name.strip_suffix(".json").unwrap_or(name).to_string())
    }

    /// `rm .vaultfs/tasks/<id>.json`: cancels a running task (see `control.rs`). Only
    /// the mount's owner and root may; a finished task's file is not removed (EPERM).
    fn cancel_task(&self, id: &str, uid: u32) -> Result<()> {
        if uid != 0 && uid != rustix::process::getuid().as_raw() {
            return Err(FsError::Access);
        }
        match self.tasks.cancel(id) {
            Ok(true) => {
                tracing::info!("task {id}: cancel requested through the mount");
                Ok(())
            }
            Ok(false) if self.tasks.record(id).is_none() => Err(FsError::NotFound),
            Ok(false) => Err(FsError::NotPermitted),
            Err(e) => Err(e.into()),
        }
    }

    /// `mkdir` at the root creates a vault.
    pub fn mkdir(&self, parent: u64, name: &[u8], uid: u32) -> Result<Entry> {
        self.incoming.mkdir(&self.ns, parent, name, uid)?;
        self.lookup(ROOT_INO, name)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8], uid: u32) -> Result<()> {
        self.incoming.rmdir(&self.ns, parent, name, uid)
    }
}
