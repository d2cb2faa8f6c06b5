//! The namespace: which names exist and what they are. It owns the inode table and the
//! listings of the tree the mount shows (the vaults, a vault's points and `latest`, a
//! point's backups, the entries of a directory inside a backup), the background refresh
//! of the vault and point lists, and the kernel invalidations sent when they change.
//! Generated directories (`.vaultfs/...`, and the views of later issues) plug in through
//! [`Namespace::control_ino`] and answer their own listings (`control.rs`).
//!
//! Invariants:
//! - Lookups and listings answer from memory once a list was read: with
//!   `background_refresh` the vault and point lists are re-read only by
//!   [`Namespace::refresh_lists`] (a thread of its own), so a stalled store delays new
//!   points, never a lookup. Without it, a list older than `refresh` is re-read by the
//!   request that needs it.
//! - A list is read without holding its lock and installed under it; a failed re-read
//!   keeps the previous list.
//! - A backup's directory is listed from its tree chunk once, so its offsets and inode
//!   numbers never change; a point's backups likewise, except that a listing with a
//!   damaged backup is not kept (the next listing retries it).
//! - Identity rules for inode numbers are in `inodes.rs`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cache::ChunkCache;
use crate::repo::format::{ChunkRef, NodeKind, Tree, decode_object, now_ns};
use crate::repo::{RepoError, Repository};
use crate::sync::lock;

use super::inodes::{
    Body, CONTROL_INO, CONTROL_NAME, Control, Inode, InodeTable, Key, Listing, PointDir, PointList,
    ROOT_INO, TreeNode, VaultDir, VaultList,
};
use super::reply::{Attr, Entry, FileKind, FsError, Inval, LIVE_TTL, Result, TREE_TTL};

/// Backups of a point whose top tree could not be read, with the error.
pub type BrokenBackups = Vec<(Vec<u8>, FsError)>;

/// See the module documentation.
pub struct Namespace {
    repo: Arc<Repository>,
    cache: Arc<ChunkCache>,
    pub inodes: InodeTable,
    /// How old a list may get before a request re-reads it (without `background_refresh`).
    refresh: Duration,
    background_refresh: bool,
    /// Owner of the directories the mount generates.
    pub uid: u32,
    pub gid: u32,
    /// The mount's start: the time of the root and of vault directories.
    pub started_ns: i64,
    inval: Mutex<Option<crossbeam_channel::Sender<Inval>>>,
    /// What the inode table may hold (0: no bound): beyond it, the coldest entries the
    /// kernel holds are invalidated, so that the kernel forgets them (see [`Namespace::trim`]).
    inode_budget: u64,
    /// Wakes the trimming thread ([`Namespace::wait_for_trim`]).
    trim_tx: crossbeam_channel::Sender<()>,
    trim_rx: crossbeam_channel::Receiver<()>,
    /// Entries invalidated by trims, for `stats.json`.
    pub trimmed: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("inodes", &self.inodes.len())
            .finish()
    }
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

/// The type of an inode.
pub fn kind_of(inode: &Inode) -> FileKind {
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

impl Namespace {
    pub fn new(
        repo: Arc<Repository>,
        cache: Arc<ChunkCache>,
        refresh: Duration,
        background_refresh: bool,
        uid: u32,
        gid: u32,
        inode_budget: u64,
    ) -> Namespace {
        let inodes = InodeTable::counting_into(cache.external_counter());
        let (trim_tx, trim_rx) = crossbeam_channel::bounded(1);
        Namespace {
            inode_budget,
            trim_tx,
            trim_rx,
            trimmed: Default::default(),
            repo,
            cache,
            inodes,
            refresh,
            background_refresh,
            uid,
            gid,
            started_ns: now_ns(),
            inval: Mutex::new(None),
        }
    }

    /// Where cache invalidations go (the adapter's notifier thread).
    pub fn set_invalidator(&self, tx: crossbeam_channel::Sender<Inval>) {
        *lock(&self.inval) = Some(tx);
    }

    /// Asks the kernel to drop what it cached of a generated directory (its listing: a
    /// directory listed without OPENDIR is cached by the kernel like any other), when
    /// that directory was ever shown.
    pub fn invalidate_generated(&self, c: Control) {
        if let Some(ino) = self.inodes.find(&Key::Control(c)) {
            self.invalidate(Inval::Inode(ino));
        }
    }

    /// Called when the kernel was handed an entry: past three quarters of the inode
    /// budget (the walk goes on while the kernel forgets), wakes the trimming thread.
    fn note_growth(&self) {
        if self.inode_budget > 0 && self.inodes.bytes() > self.inode_budget / 4 * 3 {
            let _ = self.trim_tx.try_send(());
        }
    }

    /// What the trimming thread waits on: a message when the table outgrew its budget.
    pub fn trim_signal(&self) -> crossbeam_channel::Receiver<()> {
        self.trim_rx.clone()
    }

    /// Keeps the inode table under its budget: past three quarters of it, asks the kernel
    /// to drop the entries of the coldest inodes it holds (down to half), so that it
    /// sends their FORGETs and they leave the table ([`InodeTable::forget`]); entries with
    /// files open stay until they close. The kernel's dentries are a cache: a later lookup
    /// brings an entry back under its old number. Runs on a thread of its own (an
    /// invalidation waits for the kernel, which may wait for a request in flight).
    /// Returns how many entries were invalidated.
    pub fn trim(&self) -> usize {
        let bytes = self.inodes.bytes();
        if self.inode_budget == 0 || bytes <= self.inode_budget / 4 * 3 {
            return 0;
        }
        let Some(tx) = lock(&self.inval).clone() else {
            return 0;
        };
        let cold = self.inodes.coldest(bytes - self.inode_budget / 2);
        let n = cold.len();
        for (parent, name) in cold {
            if tx.send(Inval::Entry { parent, name }).is_err() {
                break;
            }
        }
        self.trimmed
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!("inode table at {bytes} bytes: {n} cold entries invalidated");
        n
    }

    /// Asks the kernel to drop a cached entry or inode (dropped when the queue is full:
    /// the TTLs bound what the kernel keeps).
    pub fn invalidate(&self, i: Inval) {
        if let Some(tx) = lock(&self.inval).as_ref() {
            let _ = tx.try_send(i);
        }
    }

    /// The repository served.
    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    pub fn inode(&self, ino: u64) -> Result<Arc<Inode>> {
        self.inodes.get(ino).ok_or(FsError::NotFound)
    }

    /// A read-only directory of the mount's owner.
    pub fn dir_attr(&self, ino: u64, mtime_ns: i64) -> Attr {
        Attr::dir(ino, mtime_ns, self.uid, self.gid)
    }

    /// Attributes of an inode of the tree (not of a control file: see `control.rs`).
    pub fn attr_of(&self, inode: &Inode) -> Result<Entry> {
        let ino = inode.ino;
        Ok(match &inode.body {
            Body::Root(_) | Body::Vault(_) => Entry {
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
            Body::Node(t) => {
                let n = &t.node;
                Entry {
                    attr: Attr {
                        ino,
                        size: n.size,
                        blocks: t.stored_bytes().div_ceil(512),
                        mtime_ns: n.mtime_ns,
                        ctime_ns: n.ctime_ns,
                        kind: kind_of(inode),
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
            Body::Control(_) => return Err(FsError::Invalid),
        })
    }

    /// Whether a list must be (re-)read before it answers: when it never was, or, without
    /// the background refresher, when it is older than the refresh interval.
    fn must_refresh(&self, refreshed: Option<Instant>) -> bool {
        match refreshed {
            None => true,
            Some(t) => !self.background_refresh && t.elapsed() >= self.refresh,
        }
    }

    fn root_list(&self) -> Result<Arc<Inode>> {
        self.inode(ROOT_INO)
    }

    /// The vaults, by name, with their inodes. Read on first use; then re-read after the
    /// refresh interval, by the caller or (with `background_refresh`) by
    /// [`Namespace::refresh_lists`].
    pub fn vaults(&self) -> Result<Vec<(String, u64)>> {
        let root = self.root_list()?;
        let Body::Root(list) = &root.body else {
            return Err(FsError::Invalid);
        };
        let refreshed = lock(list).refreshed;
        if self.must_refresh(refreshed) {
            let listed = self.repo.list_vaults();
            self.apply_vaults(list, listed)?;
        }
        Ok(lock(list).names.clone())
    }

    /// Installs a fresh listing of the vaults (read without holding the list's lock, so a
    /// slow store holds up no lookup of a list already known).
    fn apply_vaults(
        &self,
        root: &Mutex<VaultList>,
        listed: crate::repo::Result<Vec<String>>,
    ) -> Result<()> {
        let mut list = lock(root);
        let names = match listed {
            Ok(names) => names,
            Err(e) if list.refreshed.is_some() => {
                tracing::warn!("listing vaults failed, keeping the previous list: {e}");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let old: Vec<String> = list.names.iter().map(|(n, _)| n.clone()).collect();
        list.names = names
            .into_iter()
            .map(|name| {
                let ino = self.inodes.get_or_alloc(Key::Vault(name.clone()), || {
                    (
                        ROOT_INO,
                        name.clone().into_bytes(),
                        Body::Vault(VaultDir {
                            name: name.clone(),
                            points: Mutex::new(PointList::default()),
                        }),
                    )
                });
                (name, ino)
            })
            .collect();
        self.invalidate_gone(ROOT_INO, &old, &list.names);
        if old.len() != list.names.len() || !old.iter().eq(list.names.iter().map(|(n, _)| n)) {
            self.invalidate(Inval::Inode(ROOT_INO));
            for c in [Control::Vaults, Control::Points, Control::Incoming] {
                self.invalidate_generated(c);
            }
        }
        list.refreshed = Some(Instant::now());
        Ok(())
    }

    /// The points of vault `name` (oldest first) from the cached lists, or NotFound.
    pub fn points_of(&self, vault: &str) -> Result<Vec<(String, u64)>> {
        let ino = self
            .vaults()?
            .into_iter()
            .find(|(n, _)| n == vault)
            .map(|(_, i)| i)
            .ok_or(FsError::NotFound)?;
        let inode = self.inode(ino)?;
        let Body::Vault(v) = &inode.body else {
            return Err(FsError::Invalid);
        };
        self.points(ino, v)
    }

    /// A vault's points (oldest first); refreshed like [`Namespace::vaults`]. When the
    /// list changes, the kernel's entries for `latest` and vanished points are invalidated.
    pub fn points(&self, vault_ino: u64, v: &VaultDir) -> Result<Vec<(String, u64)>> {
        let refreshed = lock(&v.points).refreshed;
        if self.must_refresh(refreshed) {
            let listed = self.repo.list_points(&v.name);
            self.apply_points(vault_ino, v, listed)?;
        }
        Ok(lock(&v.points).names.clone())
    }

    fn apply_points(
        &self,
        vault_ino: u64,
        v: &VaultDir,
        listed: crate::repo::Result<Vec<String>>,
    ) -> Result<()> {
        let mut list = lock(&v.points);
        let names = match listed {
            Ok(names) => names,
            Err(e) if list.refreshed.is_some() => {
                tracing::warn!(vault = %v.name, "listing points failed, keeping the previous list: {e}");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let old_latest = list.latest().map(str::to_string);
        let old: Vec<String> = list.names.iter().map(|(n, _)| n.clone()).collect();
        let mut fresh = Vec::with_capacity(names.len());
        for name in names {
            let ino = match list.by_name.get(&name) {
                Some(&ino) => ino,
                None => {
                    let ino = self.inodes.alloc(
                        vault_ino,
                        name.clone().into_bytes(),
                        Body::Point(PointDir {
                            vault: v.name.clone(),
                            point: name.clone(),
                            time_ns: point_time(&name).unwrap_or(self.started_ns),
                            backups: Mutex::new(None),
                        }),
                    );
                    list.by_name.insert(name.clone(), ino);
                    ino
                }
            };
            fresh.push((name, ino));
        }
        list.names = fresh;
        self.invalidate_gone(vault_ino, &old, &list.names);
        if !old.iter().eq(list.names.iter().map(|(n, _)| n)) {
            self.invalidate_generated(Control::PointsOf(v.name.clone()));
        }
        if list.latest().map(str::to_string) != old_latest {
            let latest = self.latest_ino(vault_ino, &v.name);
            self.invalidate(Inval::Entry {
                parent: vault_ino,
                name: b"latest".to_vec(),
            });
            self.invalidate(Inval::Inode(latest));
            self.invalidate(Inval::Inode(vault_ino));
        }
        list.refreshed = Some(Instant::now());
        Ok(())
    }

    /// Drops the kernel's entries of names in `old` that `now` no longer has.
    fn invalidate_gone(&self, parent: u64, old: &[String], now: &[(String, u64)]) {
        for gone in old.iter().filter(|o| !now.iter().any(|(n, _)| n == *o)) {
            self.invalidate(Inval::Entry {
                parent,
                name: gone.clone().into_bytes(),
            });
        }
    }

    /// Re-reads the vault list and every point list read so far, outside their locks:
    /// the background refresher calls this every refresh interval, so that lookups answer
    /// from memory even while the store is slow or unreachable.
    pub fn refresh_lists(&self) {
        let Ok(root) = self.root_list() else { return };
        let Body::Root(vaults) = &root.body else {
            return;
        };
        if lock(vaults).refreshed.is_none() {
            return;
        }
        if let Err(e) = self.apply_vaults(vaults, self.repo.list_vaults()) {
            tracing::warn!("refreshing the vault list: {e}");
        }
        let known: Vec<u64> = lock(vaults).names.iter().map(|(_, i)| *i).collect();
        for ino in known {
            let Some(inode) = self.inodes.get(ino) else {
                continue;
            };
            let Body::Vault(v) = &inode.body else {
                continue;
            };
            if lock(&v.points).refreshed.is_none() {
                continue;
            }
            let listed = self.repo.list_points(&v.name);
            if let Err(e) = self.apply_points(ino, v, listed) {
                tracing::warn!(vault = %v.name, "refreshing points: {e}");
            }
        }
    }

    /// Makes the vault list be re-read at its next use (a vault was made or deleted).
    pub fn expire_vaults(&self) {
        if let Ok(root) = self.root_list()
            && let Body::Root(list) = &root.body
        {
            lock(list).refreshed = None;
        }
        self.invalidate(Inval::Inode(ROOT_INO));
    }

    /// Makes a vault's point list be re-read at its next use (a point was just made or
    /// deleted).
    pub fn expire_points(&self, vault: &str) {
        let Some(ino) = self.inodes.find(&Key::Vault(vault.to_string())) else {
            return;
        };
        if let Ok(inode) = self.inode(ino)
            && let Body::Vault(v) = &inode.body
        {
            lock(&v.points).refreshed = None;
        }
        self.invalidate(Inval::Inode(ino));
        self.invalidate(Inval::Entry {
            parent: ino,
            name: b"latest".to_vec(),
        });
    }

    pub fn latest_ino(&self, vault_ino: u64, vault: &str) -> u64 {
        self.inodes
            .get_or_alloc(Key::Latest(vault.to_string()), || {
                (
                    vault_ino,
                    b"latest".to_vec(),
                    Body::Latest { vault: vault_ino },
                )
            })
    }

    /// The name of a vault's newest point (what `latest` points to).
    pub fn latest_target(&self, vault_ino: u64) -> Result<String> {
        let inode = self.inode(vault_ino)?;
        let Body::Vault(v) = &inode.body else {
            return Err(FsError::Invalid);
        };
        let points = self.points(vault_ino, v)?;
        points
            .last()
            .map(|(n, _)| n.clone())
            .ok_or(FsError::NotFound)
    }

    /// Loads a tree chunk through the cache; a failure is logged once here, with the
    /// directory (`ino`) it lists and the chunk.
    fn load_tree(&self, ino: u64, r: &ChunkRef) -> Result<Tree> {
        let tree = self.cache.get(r).map_err(FsError::from).and_then(|data| {
            decode_object(&data).map_err(|e| RepoError::damaged(format!("tree {}", r.id), e).into())
        });
        if let Err(e) = &tree {
            tracing::error!(
                dir = %self.inodes.path(ino),
                ino,
                chunk = %r.id,
                pack = %r.pack.to_hex(),
                "listing failed: {e}"
            );
        }
        tree
    }

    /// The backups of a point: its manifest and each backup's top tree, loaded once.
    pub fn backups(&self, ino: u64, p: &PointDir) -> Result<Listing> {
        self.load_backups(ino, p).map(|(l, _)| l)
    }

    /// The backups of a point, and the names of those whose top tree could not be read
    /// with the error. A damaged backup is left out of the listing (logged by
    /// `load_tree`) while its siblings are served; such a listing is not kept, so the
    /// next one retries, and the backups that did load keep their inode numbers.
    pub fn load_backups(&self, ino: u64, p: &PointDir) -> Result<(Listing, BrokenBackups)> {
        let mut g = lock(&p.backups);
        if let Some(l) = g.as_ref() {
            return Ok((l.clone(), Vec::new()));
        }
        let m = self.repo.load_manifest(&p.vault, &p.point)?;
        let mut out = Vec::with_capacity(m.backups.len());
        let mut broken = Vec::new();
        for b in &m.backups {
            let key = Key::Backup {
                point: ino,
                name: b.name.clone(),
            };
            if let Some(child) = self.inodes.find(&key) {
                out.push((b.name.clone(), child));
                continue;
            }
            let top = self.load_tree(ino, &b.root).and_then(|tree| {
                tree.nodes.into_iter().next().ok_or_else(|| {
                    FsError::from(RepoError::damaged(
                        format!("tree {}", b.root.id),
                        "empty backup root",
                    ))
                })
            });
            match top {
                Ok(mut node) => {
                    node.name = b.name.clone();
                    let child = self.inodes.get_or_alloc(key, || {
                        (ino, b.name.clone(), Body::Node(TreeNode::new(node, 0)))
                    });
                    out.push((b.name.clone(), child));
                }
                Err(e) => broken.push((b.name.clone(), e)),
            }
        }
        if !m.backups.is_empty() && out.is_empty() {
            return Err(broken.swap_remove(0).1);
        }
        let l = Arc::new(out);
        if broken.is_empty() {
            *g = Some(l.clone());
        }
        Ok((l, broken))
    }

    /// The entries of a directory inside a backup, loaded from its tree chunk once.
    pub fn tree_children(&self, ino: u64, t: &TreeNode) -> Result<Listing> {
        if t.node.kind != NodeKind::Dir {
            return Err(FsError::NotDir);
        }
        let mut g = lock(&t.children);
        if let Some(l) = g.as_ref() {
            return Ok(l.clone());
        }
        let nodes = match &t.node.subtree {
            Some(r) => self.load_tree(ino, r)?.nodes,
            None => Vec::new(),
        };
        let backup = t.backup_ino(ino);
        let mut out = Vec::with_capacity(nodes.len());
        for n in nodes {
            let name = n.name.clone();
            let child = match (n.kind, n.hardlink) {
                (NodeKind::File, Some((group, _))) => self
                    .inodes
                    .get_or_alloc(Key::Hardlink { backup, group }, || {
                        (ino, name.clone(), Body::Node(TreeNode::new(n, backup)))
                    }),
                _ => self
                    .inodes
                    .alloc(ino, name.clone(), Body::Node(TreeNode::new(n, backup))),
            };
            out.push((name, child));
        }
        let l = Arc::new(out);
        *g = Some(l.clone());
        Ok(l)
    }

    /// Brings back the entries of a backup directory's listing that left the table (the
    /// kernel forgot them), under the numbers the listing kept: the directory's tree chunk
    /// is decoded again (from the cache, or fetched).
    pub fn revive(&self, ino: u64, t: &TreeNode) -> Result<()> {
        let Some(listing) = lock(&t.children).clone() else {
            return Ok(());
        };
        let nodes = match &t.node.subtree {
            Some(r) => self.load_tree(ino, r)?.nodes,
            None => Vec::new(),
        };
        let backup = t.backup_ino(ino);
        for (n, (name, child)) in nodes.into_iter().zip(listing.iter()) {
            if self.inodes.get(*child).is_none() {
                let body = Body::Node(TreeNode::new(n, backup));
                self.inodes.insert_at(*child, ino, name.clone(), body);
            }
        }
        Ok(())
    }

    /// The inode `ino` listed in directory `dir`, brought back if the kernel had
    /// forgotten it; with one more lookup held when `hold` (see `inodes.rs`).
    pub fn child(&self, dir: &Inode, ino: u64, hold: bool) -> Result<Arc<Inode>> {
        let get = || {
            if hold {
                self.note_growth();
                self.inodes.hold(ino)
            } else {
                self.inodes.get(ino)
            }
        };
        if let Some(i) = get() {
            return Ok(i);
        }
        if let Body::Node(t) = &dir.body {
            self.revive(dir.ino, t)?;
        }
        get().ok_or(FsError::NotFound)
    }

    /// The inode of a generated file or directory, allocated at first sight.
    pub fn control_ino(&self, parent: u64, name: &[u8], c: Control) -> u64 {
        self.inodes.get_or_alloc(Key::Control(c.clone()), || {
            (parent, name.to_vec(), Body::Control(c))
        })
    }

    /// Children of a directory of the tree (without `.` and `..`; not of `.vaultfs`).
    pub fn children(&self, inode: &Inode) -> Result<Listing> {
        let ino = inode.ino;
        Ok(match &inode.body {
            Body::Root(_) => {
                let mut v = vec![(CONTROL_NAME.to_vec(), CONTROL_INO)];
                v.extend(self.vaults()?.into_iter().map(|(n, i)| (n.into_bytes(), i)));
                Arc::new(v)
            }
            Body::Vault(vd) => {
                let points = self.points(ino, vd)?;
                let has_latest = !points.is_empty();
                let mut v: Vec<(Vec<u8>, u64)> = points
                    .into_iter()
                    .map(|(n, i)| (n.into_bytes(), i))
                    .collect();
                if has_latest {
                    v.push((b"latest".to_vec(), self.latest_ino(ino, &vd.name)));
                }
                Arc::new(v)
            }
            Body::Point(p) => self.backups(ino, p)?,
            Body::Node(t) => self.tree_children(ino, t)?,
            Body::Latest { .. } => return Err(FsError::NotDir),
            Body::Control(_) => return Err(FsError::Invalid),
        })
    }

    /// The directory of a backup entry, the directory's listing (when it was listed), and
    /// the entry's position in it.
    pub fn place_in_parent(&self, inode: &Inode) -> Option<(Arc<Inode>, Listing, usize)> {
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
}
