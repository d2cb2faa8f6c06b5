//! The inode table: every inode the mount has handed out, by number, for the life of the
//! mount.
//!
//! Inode numbers are allocated densely from 1 (the root) and never reused or dropped, so a
//! number keeps meaning the same file while mounted (`forget` is ignored: backups are
//! immutable, and keeping the entry is what makes numbers stable). The table grows with
//! what has been looked at, not with the repository.
//!
//! Identity rules:
//! - a vault, its `latest` link and the control files are found by name in `keys`;
//! - a recovery point by name in its vault's point list (kept across refreshes);
//! - a tree entry by its position in its parent's listing, loaded once;
//! - a hardlinked file by `(backup inode, hardlink group)`, so every name of the group
//!   gets one inode number, as on the source.
//!
//! Lock order: `keys` before nothing else; `inodes` (the vector) is only held to push or
//! clone an `Arc`. Per-inode mutexes (listings) are taken without either held.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
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
    /// A backup's top entry in a point (so that a retried listing keeps its number).
    Backup {
        point: u64,
        name: Vec<u8>,
    },
}

/// See the module documentation.
#[derive(Debug)]
pub struct InodeTable {
    inodes: RwLock<Vec<Arc<Inode>>>,
    keys: Mutex<HashMap<Key, u64>>,
    /// An estimate of the memory the table holds ([`inode_bytes`] per inode), possibly
    /// shared with the chunk cache's budget (see [`InodeTable::counting_into`]).
    bytes: Arc<AtomicU64>,
}

/// What one heap allocation costs beyond its bytes (glibc: a 16-byte header, rounding).
const ALLOC_OVERHEAD: usize = 24;

/// An estimate of the memory one inode holds: the `Arc`'d inode, its slot, its names
/// (its own and its parent's listing entry) and, for backup entries, the extents,
/// extended attributes and link target of its node (about 600 bytes for an entry of a
/// backup; the table grew by 630 per entry on a /usr tree).
fn inode_bytes(name: &[u8], body: &Body) -> u64 {
    use std::mem::size_of;
    let mut n = size_of::<Inode>() + 16 + size_of::<Arc<Inode>>() + ALLOC_OVERHEAD;
    n += name.len() + ALLOC_OVERHEAD;
    // The entry in the parent's listing.
    n += size_of::<(Vec<u8>, u64)>() + name.len() + ALLOC_OVERHEAD;
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
    /// (the mount passes its chunk cache's [`external_counter`], so that a large walk
    /// shrinks the cache instead of growing the daemon).
    ///
    /// [`external_counter`]: crate::cache::ChunkCache::external_counter
    pub fn counting_into(bytes: Arc<AtomicU64>) -> InodeTable {
        let t = InodeTable {
            inodes: RwLock::new(Vec::new()),
            keys: Mutex::new(HashMap::new()),
            bytes,
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

    /// Adds an inode and returns its number.
    pub fn alloc(&self, parent: u64, name: Vec<u8>, body: Body) -> u64 {
        self.bytes.fetch_add(
            inode_bytes(&name, &body),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut v = self.inodes.write().unwrap_or_else(|e| e.into_inner());
        let ino = v.len() as u64 + 1;
        v.push(Arc::new(Inode {
            ino,
            parent,
            name,
            body,
        }));
        ino
    }

    /// The inode of `key`, if it has one.
    pub fn find(&self, key: &Key) -> Option<u64> {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    /// Allocates with the body `make` returns, unless `key` has an inode already.
    pub fn get_or_alloc(&self, key: Key, make: impl FnOnce() -> (u64, Vec<u8>, Body)) -> u64 {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&ino) = keys.get(&key) {
            return ino;
        }
        let (parent, name, body) = make();
        let ino = self.alloc(parent, name, body);
        keys.insert(key, ino);
        ino
    }

    /// The inode of a key, if it was allocated.
    pub fn find_key(&self, key: &Key) -> Option<u64> {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Inode>> {
        let v = self.inodes.read().unwrap_or_else(|e| e.into_inner());
        ino.checked_sub(1).and_then(|i| v.get(i as usize)).cloned()
    }

    /// How many inodes exist.
    pub fn len(&self) -> usize {
        self.inodes.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The path of an inode below the mount, for log lines (`vault/point/backup/a/b`).
    pub fn path(&self, ino: u64) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let Some(i) = self.get(cur) else { break };
            parts.push(String::from_utf8_lossy(&i.name).into_owned());
            cur = i.parent;
            if parts.len() > 4096 {
                break;
            }
        }
        parts.reverse();
        parts.join("/")
    }
}
