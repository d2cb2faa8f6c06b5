//! The inode table: the inodes the mount has handed out, by number.
//!
//! Numbers are allocated from a counter and never reused. The table honours FORGET: each
//! inode counts the lookups the kernel was answered with ([`InodeTable::hold`]: LOOKUP,
//! each READDIRPLUS entry, CREATE, MKDIR), FORGET takes them back
//! ([`InodeTable::forget`]), and an entry of a backup whose count reaches zero leaves the
//! table, with its listing and with those of its children the kernel does not hold. So
//! the table follows what the kernel caches: a walk of a million entries followed by
//! `echo 2 > /proc/sys/vm/drop_caches` returns it to its baseline.
//!
//! A number keeps meaning the same file for as long as the kernel holds it, and longer:
//! a directory's listing keeps the numbers of its entries, and an entry dropped from the
//! table is brought back under its old number when the listing is used again
//! ([`InodeTable::insert_at`], by `namespace.rs`). Numbers change only for entries the
//! kernel held none of, and none of their parent either (a cached dentry pins its
//! parent), when the parent's listing itself was dropped.
//!
//! Pinned (never dropped, few): the root, `.vaultfs` and everything generated, vaults,
//! `latest`, points, a backup's top entry, and hardlinked files (their number is shared
//! by every name of the group, in several directories).
//!
//! Identity rules:
//! - a vault, its `latest` link and the control files are found by name in `keys`;
//! - a recovery point by name in its vault's point list (kept across refreshes);
//! - a tree entry by its position in its parent's listing, loaded once;
//! - a hardlinked file by `(backup inode, hardlink group)`, so every name of the group
//!   gets one inode number, as on the source.
//!
//! Lock order: `keys`, then `inodes` (the map), which is only held to insert, remove or
//! clone an `Arc`. Per-inode mutexes (listings) are taken without either held, except
//! that dropping an inode takes its listing's mutex under `inodes` (nobody holds it then:
//! the inode is unreachable).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use crate::repo::format::{Extent, Node};

/// Inode number of the mount's root.
pub const ROOT_INO: u64 = 1;
/// Inode number of `.vaultfs`.
pub const CONTROL_INO: u64 = 2;
/// Name of the control directory.
pub const CONTROL_NAME: &[u8] = b".vaultfs";

/// A directory listing, loaded once: names (sorted as the source sorts them) and inodes.
pub type Listing = Arc<Vec<(Vec<u8>, u64)>>;

/// One inode.
#[derive(Debug)]
pub struct Inode {
    pub ino: u64,
    /// The directory it was first found in (for hardlinks, one of them); used for paths in
    /// log lines and for `..`.
    pub parent: u64,
    pub name: Vec<u8>,
    pub body: Body,
    /// Lookups the kernel holds (see the module documentation).
    lookups: AtomicU64,
    /// When it was last handed to the kernel (a lookup), in [`InodeTable::tick`]s: the
    /// coldest held entries are the ones the table asks the kernel to drop when it
    /// outgrows its budget ([`InodeTable::coldest`]).
    used: AtomicU32,
    /// Whether it leaves the table when the kernel forgets it.
    droppable: bool,
}

/// What an inode is.
#[derive(Debug)]
pub enum Body {
    /// The root: one directory per vault, and `.vaultfs`.
    Root(Mutex<VaultList>),
    Vault(VaultDir),
    /// `<vault>/latest`: a symlink to the newest point, resolved at each readlink.
    Latest {
        vault: u64,
    },
    Point(PointDir),
    /// A file, directory, symlink or special file inside a backup (or a backup's top).
    Node(TreeNode),
    Control(Control),
}

/// The vaults, re-listed after the refresh interval.
#[derive(Debug, Default)]
pub struct VaultList {
    pub names: Vec<(String, u64)>,
    pub refreshed: Option<Instant>,
}

#[derive(Debug)]
pub struct VaultDir {
    pub name: String,
    pub points: Mutex<PointList>,
}

/// A vault's points, oldest first, re-listed after the refresh interval. Inode numbers of
/// points survive refreshes (`by_name`).
#[derive(Debug, Default)]
pub struct PointList {
    pub names: Vec<(String, u64)>,
    pub by_name: HashMap<String, u64>,
    pub refreshed: Option<Instant>,
}

impl PointList {
    pub fn latest(&self) -> Option<&str> {
        self.names.last().map(|(n, _)| n.as_str())
    }
}

#[derive(Debug)]
pub struct PointDir {
    pub vault: String,
    pub point: String,
    /// The point's time, from its name.
    pub time_ns: i64,
    /// The backups, loaded with the manifest at first use.
    pub backups: Mutex<Option<Listing>>,
}

#[derive(Debug)]
pub struct TreeNode {
    /// The node as recorded (for a backup's top, renamed to the backup's name).
    pub node: Node,
    /// The inode of the backup's top entry (hardlink groups are unique per backup); 0 on
    /// the top entry itself (see [`TreeNode::backup_ino`]).
    pub backup: u64,
    /// Directory entries, loaded from the subtree chunk at first use.
    pub children: Mutex<Option<Listing>>,
    /// Start offset of each extent, plus the total: `offsets[i]..offsets[i+1]` is extent i.
    offsets: OnceLock<Vec<u64>>,
}

impl TreeNode {
    pub fn new(node: Node, backup: u64) -> TreeNode {
        TreeNode {
            node,
            backup,
            children: Mutex::new(None),
            offsets: OnceLock::new(),
        }
    }

    /// The inode of the backup this node belongs to, given the node's own inode.
    pub fn backup_ino(&self, own: u64) -> u64 {
        if self.backup == 0 { own } else { self.backup }
    }

    /// Running offsets of the content extents (computed once).
    pub fn offsets(&self) -> &[u64] {
        self.offsets.get_or_init(|| {
            let mut v = Vec::with_capacity(self.node.content.len() + 1);
            let mut pos = 0u64;
            v.push(0);
            for e in &self.node.content {
                pos += e.len();
                v.push(pos);
            }
            v
        })
    }

    /// Index of the extent holding byte `pos` (`pos` below the total).
    pub fn extent_at(&self, pos: u64) -> usize {
        let offs = self.offsets();
        offs[1..].partition_point(|&end| end <= pos)
    }

    /// Bytes actually stored (not holes), for `st_blocks`.
    pub fn stored_bytes(&self) -> u64 {
        self.node
            .content
            .iter()
            .map(|e| match e {
                Extent::Data(r) => r.raw_len as u64,
                Extent::Hole(_) => 0,
            })
            .sum()
    }
}

/// Nodes of the control plane (`.vaultfs/...`): generated, never cached by the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Control {
    /// `.vaultfs`
    Top,
    /// `.vaultfs/vaults`
    Vaults,
    /// `.vaultfs/points`
    Points,
    /// `.vaultfs/points/<vault>`
    PointsOf(String),
    /// `.vaultfs/vaults/<vault>.json`
    VaultJson(String),
    /// `.vaultfs/points/<vault>/<point>.json`
    PointJson(String, String),
    /// `.vaultfs/incoming`
    Incoming,
    /// `.vaultfs/incoming/<vault>`
    IncomingVault(String),
    /// A file being ingested in `.vaultfs/incoming/<vault>/`, by session number.
    IncomingFile(u64),
    /// `.vaultfs/tasks`
    Tasks,
    /// `.vaultfs/tasks/<id>.json`
    TaskJson(String),
    /// `.vaultfs/stats.json`
    Stats,
    /// `.vaultfs/policies`
    Policies,
    /// `.vaultfs/policies/<name>.json`
    PolicyJson(String),
    /// `.vaultfs/versions`
    Versions,
    /// `.vaultfs/versions/<vault>/<path>`: a path's versions and entries (`views.rs`);
    /// the empty path is the vault's directory.
    VersionsOf(String, Vec<u8>),
    /// `.vaultfs/changes`
    Changes,
    /// `.vaultfs/changes/<vault>`
    ChangesOf(String),
    /// `.vaultfs/changes/<vault>/<point>/<path>`
    ChangesIn(String, String, Vec<u8>),
    /// `.vaultfs/changes/<vault>/<point>/removed.json`
    RemovedJson(String, String),
    /// `.vaultfs/deleted`
    Deleted,
    /// `.vaultfs/deleted/<vault>/<path>`
    DeletedIn(String, Vec<u8>),
}

impl Control {
    pub fn is_dir(&self) -> bool {
        matches!(
            self,
            Control::Top
                | Control::Vaults
                | Control::Points
                | Control::PointsOf(_)
                | Control::Incoming
                | Control::IncomingVault(_)
                | Control::Tasks
                | Control::Policies
                | Control::Versions
                | Control::VersionsOf(..)
                | Control::Changes
                | Control::ChangesOf(_)
                | Control::ChangesIn(..)
                | Control::Deleted
                | Control::DeletedIn(..)
        )
    }
}

/// Keys of inodes found by name rather than by position.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Vault(String),
    Latest(String),
    Control(Control),
    Hardlink {
        backup: u64,
        group: u64,
    },
    /// An entry of a view across time (`views.rs`): one node shown in a generated
    /// directory, known by its content.
    ViewLeaf {
        dir: u64,
        name: Vec<u8>,
        content: String,
    },
    /// A backup's top entry in a point (so that a retried listing keeps its number).
    Backup {
        point: u64,
        name: Vec<u8>,
    },
}

/// See the module documentation.
#[derive(Debug)]
pub struct InodeTable {
    inodes: RwLock<HashMap<u64, Arc<Inode>>>,
    next: AtomicU64,
    keys: Mutex<HashMap<Key, u64>>,
    /// An estimate of the memory the table holds ([`own_bytes`] and [`entry_bytes`] per
    /// inode), possibly shared with the chunk cache's budget (see
    /// [`InodeTable::counting_into`]).
    bytes: Arc<AtomicU64>,
    /// The clock of `Inode::used`.
    epoch: Instant,
}

/// What one heap allocation costs beyond its bytes (glibc: a 16-byte header, rounding).
const ALLOC_OVERHEAD: usize = 24;

/// An estimate of the memory of an inode's entry in its parent's listing (kept when the
/// inode leaves the table).
fn entry_bytes(name: &[u8]) -> u64 {
    (std::mem::size_of::<(Vec<u8>, u64)>() + name.len() + ALLOC_OVERHEAD) as u64
}

/// An estimate of the memory one inode holds besides its listing entry: the `Arc`'d
/// inode, its slot in the map, its name and, for backup entries, the extents, extended
/// attributes and link target of its node (with [`entry_bytes`], about 600 bytes for an
/// entry of a backup; the table grew by 630 per entry on a /usr tree).
fn own_bytes(name: &[u8], body: &Body) -> u64 {
    use std::mem::size_of;
    let mut n = size_of::<Inode>() + 24 + size_of::<Arc<Inode>>() + ALLOC_OVERHEAD;
    n += name.len() + ALLOC_OVERHEAD;
    if let Body::Node(t) = body {
        let node = &t.node;
        n += node.name.len() + ALLOC_OVERHEAD;
        if !node.content.is_empty() {
            n += node.content.len() * size_of::<Extent>() + ALLOC_OVERHEAD;
        }
        for (k, v) in &node.xattrs {
            n += k.len() + v.len() + 2 * ALLOC_OVERHEAD + size_of::<(Vec<u8>, Vec<u8>)>();
        }
        if let Some(t) = &node.target {
            n += t.len() + ALLOC_OVERHEAD;
        }
    }
    n as u64
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InodeTable {
    /// A table holding the root and `.vaultfs`.
    pub fn new() -> InodeTable {
        Self::counting_into(Arc::new(AtomicU64::new(0)))
    }

    /// Like [`InodeTable::new`], adding the estimate of each inode's memory to `bytes`
    /// (and taking it back when the inode leaves): the mount passes its chunk cache's
    /// [`external_counter`], so that a large walk shrinks the cache instead of growing
    /// the daemon.
    ///
    /// [`external_counter`]: crate::cache::ChunkCache::external_counter
    pub fn counting_into(bytes: Arc<AtomicU64>) -> InodeTable {
        let t = InodeTable {
            inodes: RwLock::new(HashMap::new()),
            next: AtomicU64::new(ROOT_INO),
            keys: Mutex::new(HashMap::new()),
            bytes,
            epoch: Instant::now(),
        };
        let root = t.alloc(
            ROOT_INO,
            Vec::new(),
            Body::Root(Mutex::new(VaultList::default())),
        );
        assert_eq!(root, ROOT_INO);
        let ctl = t.get_or_alloc(Key::Control(Control::Top), || {
            (ROOT_INO, CONTROL_NAME.to_vec(), Body::Control(Control::Top))
        });
        assert_eq!(ctl, CONTROL_INO);
        t
    }

    fn make(
        &self,
        ino: u64,
        parent: u64,
        name: Vec<u8>,
        body: Body,
        droppable: bool,
    ) -> Arc<Inode> {
        Arc::new(Inode {
            ino,
            parent,
            name,
            body,
            lookups: AtomicU64::new(0),
            used: AtomicU32::new(self.tick()),
            droppable,
        })
    }

    /// The table's clock: tenths of a second since it was made.
    fn tick(&self) -> u32 {
        (self.epoch.elapsed().as_millis() / 100).min(u32::MAX as u128) as u32
    }

    /// The estimate of the memory the table holds.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The entries to ask the kernel to drop so that about `shed` bytes leave the table:
    /// `(parent, name)` of the least recently used droppable inodes the kernel holds,
    /// coldest first. Dropping a directory's entry makes the kernel drop what it holds
    /// below it too, so the estimate (each inode's own bytes) errs on the low side.
    pub fn coldest(&self, shed: u64) -> Vec<(u64, Vec<u8>)> {
        let map = crate::sync::read(&self.inodes);
        let mut held: Vec<(u32, u64)> = map
            .values()
            .filter(|i| i.droppable && i.lookups.load(Ordering::Relaxed) > 0)
            .map(|i| (i.used.load(Ordering::Relaxed), i.ino))
            .collect();
        held.sort_unstable();
        let mut out = Vec::new();
        let mut freed = 0;
        for (_, ino) in held {
            if freed >= shed {
                break;
            }
            let Some(i) = map.get(&ino) else { continue };
            freed += own_bytes(&i.name, &i.body) + entry_bytes(&i.name);
            out.push((i.parent, i.name.clone()));
        }
        out
    }

    fn add(&self, ino: u64, parent: u64, name: Vec<u8>, body: Body, pinned: bool) {
        let droppable = !pinned && matches!(body, Body::Node(_));
        let bytes = own_bytes(&name, &body) + entry_bytes(&name);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let inode = self.make(ino, parent, name, body, droppable);
        crate::sync::write(&self.inodes).insert(ino, inode);
    }

    /// Adds an inode and returns its number. An entry of a backup added so can leave the
    /// table when the kernel forgets it.
    pub fn alloc(&self, parent: u64, name: Vec<u8>, body: Body) -> u64 {
        let ino = self.next.fetch_add(1, Ordering::Relaxed);
        self.add(ino, parent, name, body, false);
        ino
    }

    /// Brings back an entry of a backup under the number its parent's listing kept for
    /// it, unless it is in the table (then nothing changes).
    pub fn insert_at(&self, ino: u64, parent: u64, name: Vec<u8>, body: Body) {
        let mut map = crate::sync::write(&self.inodes);
        if map.contains_key(&ino) {
            return;
        }
        // Its listing entry was counted with the listing, and stayed.
        self.bytes
            .fetch_add(own_bytes(&name, &body), Ordering::Relaxed);
        let droppable = matches!(body, Body::Node(_));
        let inode = self.make(ino, parent, name, body, droppable);
        map.insert(ino, inode);
    }

    /// The inode of `key`, if it has one.
    pub fn find(&self, key: &Key) -> Option<u64> {
        crate::sync::lock(&self.keys).get(key).copied()
    }

    /// Allocates with the body `make` returns, unless `key` has an inode already. Inodes
    /// found by key are pinned.
    pub fn get_or_alloc(&self, key: Key, make: impl FnOnce() -> (u64, Vec<u8>, Body)) -> u64 {
        let mut keys = crate::sync::lock(&self.keys);
        if let Some(&ino) = keys.get(&key) {
            return ino;
        }
        let (parent, name, body) = make();
        let ino = self.next.fetch_add(1, Ordering::Relaxed);
        self.add(ino, parent, name, body, true);
        keys.insert(key, ino);
        ino
    }

    /// The inode of a key, if it was allocated.
    pub fn find_key(&self, key: &Key) -> Option<u64> {
        self.find(key)
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        crate::sync::read(&self.inodes).get(&ino).cloned()
    }

    /// The inode, with one more lookup held by the kernel: what a reply that hands the
    /// kernel an entry calls. None when it is not in the table (the caller brings it back
    /// and retries).
    pub fn hold(&self, ino: u64) -> Option<Arc<Inode>> {
        let map = crate::sync::read(&self.inodes);
        let inode = map.get(&ino)?;
        // Under the map's lock: a concurrent forget sees the count before it removes.
        inode.lookups.fetch_add(1, Ordering::Relaxed);
        inode.used.store(self.tick(), Ordering::Relaxed);
        Some(inode.clone())
    }

    /// Takes back a [`InodeTable::hold`] whose reply did not reach the kernel (a full
    /// readdirplus page, a failed lookup). The inode stays in the table: the next page
    /// starts with it, and it leaves with its directory if the kernel never holds it.
    pub fn unhold(&self, ino: u64) {
        if let Some(inode) = self.get(ino) {
            let _ = inode
                .lookups
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    Some(c.saturating_sub(1))
                });
        }
    }

    /// FORGET: the kernel drops `n` lookups of `ino`. An entry of a backup that it no
    /// longer holds leaves the table, with its listing and with the entries of that
    /// listing the kernel holds none of (recursively). Returns how many inodes left.
    pub fn forget(&self, ino: u64, n: u64) -> usize {
        let Some(inode) = self.get(ino) else { return 0 };
        let before = inode
            .lookups
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_sub(n))
            })
            .unwrap_or(0);
        if before > n || !inode.droppable {
            return 0;
        }
        drop(inode);
        let mut map = crate::sync::write(&self.inodes);
        self.drop_unheld(&mut map, ino)
    }

    /// Removes `ino` if nothing holds it, and then its listing's entries likewise.
    fn drop_unheld(&self, map: &mut HashMap<u64, Arc<Inode>>, ino: u64) -> usize {
        let mut stack = vec![ino];
        let mut dropped = 0;
        while let Some(ino) = stack.pop() {
            let unheld = map
                .get(&ino)
                .is_some_and(|i| i.droppable && i.lookups.load(Ordering::Relaxed) == 0);
            if !unheld {
                continue;
            }
            let Some(inode) = map.remove(&ino) else {
                continue;
            };
            dropped += 1;
            let mut freed = own_bytes(&inode.name, &inode.body);
            if let Body::Node(t) = &inode.body
                && let Some(listing) = crate::sync::lock(&t.children).take()
            {
                for (name, child) in listing.iter() {
                    freed += entry_bytes(name);
                    // A child of this directory only (hardlinks are pinned).
                    if map.get(child).is_some_and(|c| c.parent == ino) {
                        stack.push(*child);
                    }
                }
            }
            // Saturating: an estimate must not wrap (a hardlink's entry in a second
            // directory was never added).
            let _ = self
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(freed))
                });
        }
        dropped
    }

    /// How many inodes the table holds.
    pub fn len(&self) -> usize {
        crate::sync::read(&self.inodes).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The path of an inode below the mount, for log lines (`vault/point/backup/a/b`), its
    /// control characters escaped.
    pub fn path(&self, ino: u64) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let Some(i) = self.get(cur) else { break };
            parts.push(crate::repo::format::printable(&i.name));
            cur = i.parent;
            if parts.len() > 4096 {
                break;
            }
        }
        parts.reverse();
        parts.join("/")
    }
}
