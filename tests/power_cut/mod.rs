//! The power-cut model: what a repository directory holds after a power cut, rebuilt from
//! the journal of the shim (`shim.c`, loaded into `vaultfs` with `LD_PRELOAD`).
//!
//! The disk before the run is a copy taken while nothing wrote (durable as a whole). The
//! journal lists, in the order their effects happened, every write, truncate, fsync,
//! create, rename, link, unlink, mkdir and rmdir under the repository. Replaying it gives
//! the state the running process saw (volatile) and what a power cut keeps (durable):
//!
//! - a file's data is durable as of its last fsync/fdatasync (a new file's durable data
//!   is empty);
//! - a directory's entries (create, rename, link, unlink, mkdir, rmdir in it) are
//!   durable as of its last fsync; a new directory exists only if its own entry in its
//!   parent is durable;
//! - the file system committed metadata on its own up to a seeded point of the run: every
//!   directory holds at least its entries as of that commit. In two reconstructions of
//!   three the point is the same for every directory (one journal, commits in order:
//!   ext4, XFS; btrfs commits the rest so while an fsync logs one directory); in one of
//!   three each directory has its own (the POSIX minimum, stricter than a journaling
//!   file system);
//! - each file whose data was written after its last fsync independently ends up with
//!   its durable data, all of it written (the writeback happened), or a torn prefix of it
//!   (cut at a 4 KiB page), whatever the metadata kept: delayed allocation writes data
//!   apart from the journal, which is how a rename can survive with the file's data lost
//!   (the classic zero-length file).
//!
//! That is what ext4 (`data=ordered` with delayed allocation, without `auto_da_alloc`'s
//! rescue) or XFS can leave, and in the per-directory case more. A rename between two
//! directories is not modelled (the local store never does one) and fails the replay, as
//! does any call the shim could not follow.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::sync::OnceLock;

const OP_OPEN: u32 = 1;
const OP_WRITE: u32 = 2;
const OP_TRUNC: u32 = 3;
const OP_FSYNC: u32 = 4;
const OP_RENAME: u32 = 5;
const OP_LINK: u32 = 6;
const OP_UNLINK: u32 = 7;
const OP_MKDIR: u32 = 8;
const OP_RMDIR: u32 = 9;
const OP_BAD: u32 = 10;
const OP_FAILED: u32 = 11;

const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const RENAME_EXCHANGE: u32 = 2;
const PAGE: usize = 4096;

/// The shim, compiled once per test process (`cc -shared -fPIC`).
pub fn shim() -> &'static Path {
    static SO: OnceLock<PathBuf> = OnceLock::new();
    SO.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/power_cut/shim.c");
        let so = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("power-cut-shim-{}.so", std::process::id()));
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&so)
            .arg(&src)
            .arg("-ldl")
            .output()
            .expect("run cc (build-essential)");
        assert!(
            out.status.success(),
            "cc {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        so
    })
}

/// Sets up `c` to run under the shim, journaling calls under `root` to `journal` and,
/// with `cut_at`, killing itself on entry to that journaled call.
pub fn journaled(c: &mut Command, root: &Path, journal: &Path, cut_at: Option<u64>) {
    c.env("LD_PRELOAD", shim())
        .env("VAULTFS_POWER_ROOT", root)
        .env("VAULTFS_POWER_JOURNAL", journal);
    match cut_at {
        Some(n) => c.env("VAULTFS_POWER_CUT_AT", n.to_string()),
        None => c.env_remove("VAULTFS_POWER_CUT_AT"),
    };
}

/// One journaled call.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: u64,
    pub op: u32,
    pub flags: u32,
    pub ino: u64,
    pub off: u64,
    pub len: u64,
    pub path: String,
    pub path2: String,
    pub data: Vec<u8>,
}

impl Record {
    /// A call that makes a directory entry (mkdir, rename, link): until the directory's
    /// fsync, a power cut drops it.
    pub fn makes_entry(&self) -> bool {
        matches!(self.op, OP_MKDIR | OP_RENAME | OP_LINK)
    }
}

/// The records of one process's journal, in the order of their sequence numbers.
pub fn read_journal(path: &Path) -> Vec<Record> {
    let bytes = fs::read(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut p = 0;
    let u64_at = |p: usize| u64::from_le_bytes(bytes[p..p + 8].try_into().unwrap());
    let u32_at = |p: usize| u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap());
    while p + 48 <= bytes.len() {
        let (seq, op, flags, ino, off, len) = (
            u64_at(p),
            u32_at(p + 8),
            u32_at(p + 12),
            u64_at(p + 16),
            u64_at(p + 24),
            u64_at(p + 32),
        );
        let (l1, l2) = (u32_at(p + 40) as usize, u32_at(p + 44) as usize);
        p += 48;
        let text = |a: usize, n: usize| String::from_utf8_lossy(&bytes[a..a + n]).into_owned();
        let path = text(p, l1);
        let path2 = text(p + l1, l2);
        p += l1 + l2;
        let data = if op == OP_WRITE {
            let d = bytes[p..p + len as usize].to_vec();
            p += len as usize;
            d
        } else {
            Vec::new()
        };
        out.push(Record {
            seq,
            op,
            flags,
            ino,
            off,
            len,
            path,
            path2,
            data,
        });
    }
    assert_eq!(p, bytes.len(), "{}: a truncated record", path.display());
    out.sort_by_key(|r| r.seq);
    out
}

/// The inodes of a directory tree before a run: inode number → (relative path, is dir).
pub type Scan = HashMap<u64, (PathBuf, bool)>;

pub fn scan(root: &Path) -> Scan {
    let mut out = Scan::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let m = fs::symlink_metadata(&abs).unwrap();
        out.insert(m.ino(), (rel.clone(), m.is_dir()));
        if m.is_dir() {
            for e in fs::read_dir(&abs).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
    }
    out
}

#[derive(Clone, Debug)]
enum Content {
    /// As in the copy taken before the run.
    Before(PathBuf),
    Bytes(Rc<Vec<u8>>),
}

impl Content {
    fn same(&self, other: &Content) -> bool {
        match (self, other) {
            (Content::Before(a), Content::Before(b)) => a == b,
            (Content::Bytes(a), Content::Bytes(b)) => Rc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Content::Before(p) => fs::read(p).unwrap(),
            Content::Bytes(b) => b.to_vec(),
        }
    }

    fn make_mut(&mut self) -> &mut Vec<u8> {
        if let Content::Before(p) = self {
            *self = Content::Bytes(Rc::new(fs::read(&*p).unwrap()));
        }
        match self {
            Content::Bytes(b) => Rc::make_mut(b),
            Content::Before(_) => unreachable!(),
        }
    }
}

enum Node {
    File {
        volatile: Content,
        durable: Content,
    },
    Dir {
        volatile: BTreeMap<String, usize>,
        durable: BTreeMap<String, usize>,
        /// The call before which the file system commits this directory's entries.
        commit_at: usize,
    },
}

/// What a reconstruction dropped or tore.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Journaled calls replayed.
    pub calls: usize,
    /// Directories whose entries lost something (creates, renames, unlinks...).
    pub dirs_rolled_back: usize,
    /// Files whose unsynced data was dropped (left at their last fsync).
    pub data_dropped: usize,
    /// Files whose unsynced data was torn (a prefix kept).
    pub data_torn: usize,
    /// The metadata commit point chosen for every directory (a call index, `calls`:
    /// all), or `None`: one for each directory.
    pub commit: Option<usize>,
    /// Files visible under their final names (not `.tmp-*`) whose data is not all that
    /// was written to them: zero-length or torn objects.
    pub torn_visible: Vec<String>,
}

impl Outcome {
    pub fn dropped_anything(&self) -> bool {
        self.dirs_rolled_back + self.data_dropped + self.data_torn > 0
    }
}

struct Model {
    nodes: Vec<Node>,
    inodes: HashMap<u64, usize>,
    /// Journaled calls in all.
    calls: usize,
    /// The one commit point of every directory, or `None`: each has its own.
    commit: Option<usize>,
}

impl Model {
    /// The tree of `before` (a copy of the directory `scan` was taken of) as durable.
    fn new(
        before: &Path,
        scan: &Scan,
        calls: usize,
        commit: Option<usize>,
        rng: &mut dyn FnMut() -> u64,
    ) -> Self {
        let mut by_path: BTreeMap<PathBuf, (u64, bool)> = BTreeMap::new();
        for (ino, (rel, dir)) in scan {
            by_path.insert(rel.clone(), (*ino, *dir));
        }
        let mut m = Model {
            nodes: Vec::new(),
            inodes: HashMap::new(),
            calls,
            commit,
        };
        let mut ids: HashMap<PathBuf, usize> = HashMap::new();
        // BTreeMap order: a parent comes before its children.
        for (rel, (ino, dir)) in &by_path {
            let node = if *dir {
                m.new_dir(0, rng)
            } else {
                let c = Content::Before(before.join(rel));
                Node::File {
                    volatile: c.clone(),
                    durable: c,
                }
            };
            let id = m.nodes.len();
            m.nodes.push(node);
            m.inodes.insert(*ino, id);
            ids.insert(rel.clone(), id);
            if let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) {
                let pid = ids[parent];
                let name = name.to_string_lossy().into_owned();
                if let Node::Dir {
                    volatile, durable, ..
                } = &mut m.nodes[pid]
                {
                    volatile.insert(name.clone(), id);
                    durable.insert(name, id);
                }
            }
        }
        assert_eq!(ids.get(Path::new("")), Some(&0), "the root is node 0");
        m
    }

    /// An empty directory made before call `at`.
    fn new_dir(&self, at: usize, rng: &mut dyn FnMut() -> u64) -> Node {
        Node::Dir {
            volatile: BTreeMap::new(),
            durable: BTreeMap::new(),
            commit_at: self
                .commit
                .unwrap_or_else(|| at + (rng() % (self.calls - at + 1) as u64) as usize),
        }
    }

    /// The directory node and the last name of `rel`, in the volatile tree.
    fn parent_of(&self, rel: &str) -> (usize, String) {
        let mut parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        let name = parts.pop().unwrap_or_else(|| panic!("no name in {rel:?}"));
        let mut at = 0;
        for p in parts {
            at = self
                .entries(at)
                .get(p)
                .copied()
                .unwrap_or_else(|| panic!("{rel}: {p} is not in the model"));
        }
        (at, name.to_string())
    }

    fn entries(&self, dir: usize) -> &BTreeMap<String, usize> {
        match &self.nodes[dir] {
            Node::Dir { volatile, .. } => volatile,
            Node::File { .. } => panic!("node {dir} is not a directory"),
        }
    }

    fn entries_mut(&mut self, dir: usize) -> &mut BTreeMap<String, usize> {
        match &mut self.nodes[dir] {
            Node::Dir { volatile, .. } => volatile,
            Node::File { .. } => panic!("node {dir} is not a directory"),
        }
    }

    fn node_of(&self, ino: u64, r: &Record) -> usize {
        *self
            .inodes
            .get(&ino)
            .unwrap_or_else(|| panic!("inode {ino} is not known to the model: {r:?}"))
    }

    fn file_mut(&mut self, id: usize) -> &mut Content {
        match &mut self.nodes[id] {
            Node::File { volatile, .. } => volatile,
            Node::Dir { .. } => panic!("node {id} is a directory"),
        }
    }

    /// Applies call number `at`.
    fn apply(&mut self, at: usize, r: &Record, rng: &mut dyn FnMut() -> u64) {
        match r.op {
            OP_OPEN => {
                let (dir, name) = self.parent_of(&r.path);
                let id = match self.entries(dir).get(&name) {
                    Some(id) => *id,
                    None => {
                        assert!(r.flags & O_CREAT != 0, "open of a missing file: {r:?}");
                        let id = self.nodes.len();
                        let empty = Content::Bytes(Rc::new(Vec::new()));
                        self.nodes.push(Node::File {
                            volatile: empty.clone(),
                            durable: empty,
                        });
                        self.entries_mut(dir).insert(name, id);
                        id
                    }
                };
                self.inodes.insert(r.ino, id);
                if r.flags & O_TRUNC != 0 {
                    *self.file_mut(id) = Content::Bytes(Rc::new(Vec::new()));
                }
            }
            OP_WRITE => {
                let id = self.node_of(r.ino, r);
                let data = self.file_mut(id).make_mut();
                let end = r.off as usize + r.data.len();
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[r.off as usize..end].copy_from_slice(&r.data);
            }
            OP_TRUNC => {
                let id = self.node_of(r.ino, r);
                self.file_mut(id).make_mut().resize(r.len as usize, 0);
            }
            OP_FSYNC => {
                let id = self.node_of(r.ino, r);
                match &mut self.nodes[id] {
                    Node::File { volatile, durable } => *durable = volatile.clone(),
                    Node::Dir {
                        volatile, durable, ..
                    } => *durable = volatile.clone(),
                }
            }
            OP_RENAME | OP_LINK => {
                let (from_dir, from) = self.parent_of(&r.path);
                let (to_dir, to) = self.parent_of(&r.path2);
                assert!(
                    r.op == OP_LINK || from_dir == to_dir,
                    "a rename between directories is not modelled: {r:?}"
                );
                assert!(
                    r.op == OP_LINK || r.flags & RENAME_EXCHANGE == 0,
                    "RENAME_EXCHANGE is not modelled: {r:?}"
                );
                let id = *self
                    .entries(from_dir)
                    .get(&from)
                    .unwrap_or_else(|| panic!("{}: not in the model", r.path));
                if r.op == OP_RENAME {
                    self.entries_mut(from_dir).remove(&from);
                }
                self.entries_mut(to_dir).insert(to, id);
            }
            OP_UNLINK | OP_RMDIR => {
                let (dir, name) = self.parent_of(&r.path);
                assert!(
                    self.entries_mut(dir).remove(&name).is_some(),
                    "{}: not in the model",
                    r.path
                );
            }
            OP_MKDIR => {
                let (dir, name) = self.parent_of(&r.path);
                let id = self.nodes.len();
                let node = self.new_dir(at, rng);
                self.nodes.push(node);
                self.entries_mut(dir).insert(name, id);
                self.inodes.insert(r.ino, id);
            }
            OP_FAILED => {}
            OP_BAD => panic!("the shim could not follow a call: {}", r.path),
            op => panic!("unknown journal op {op}: {r:?}"),
        }
    }

    /// The file system commits the entries of the directories due before call `at`.
    fn commit(&mut self, at: usize) {
        for n in &mut self.nodes {
            if let Node::Dir {
                volatile,
                durable,
                commit_at,
            } = n
                && *commit_at == at
            {
                *durable = volatile.clone();
            }
        }
    }
}

/// Rebuilds into `out` (which must not exist) what a power cut at the end of `journals`
/// (one per process, in the order they ran) leaves of the directory whose copy before
/// the runs is `before` (`scan`: its inodes in the live directory). `rng` makes every
/// choice of the model; `commit` forces the one commit point of every directory.
pub fn reconstruct(
    before: &Path,
    scan: &Scan,
    journals: &[Vec<Record>],
    commit: Option<usize>,
    rng: &mut dyn FnMut() -> u64,
    out: &Path,
) -> Outcome {
    let calls: usize = journals.iter().map(|j| j.len()).sum();
    // One commit point for every directory (a journal), or one each (a third of the
    // reconstructions: the POSIX minimum, stricter than a journaling file system).
    let commit = if commit.is_some() {
        commit
    } else if rng().is_multiple_of(3) {
        None
    } else {
        Some((rng() % (calls as u64 + 1)) as usize)
    };
    let mut m = Model::new(before, scan, calls, commit, rng);
    for (i, r) in journals.iter().flatten().enumerate() {
        m.commit(i);
        m.apply(i, r, rng);
    }
    m.commit(calls);
    let mut o = Outcome {
        calls,
        commit,
        ..Default::default()
    };
    // Each file's data: durable, all written, or torn.
    let mut last: Vec<Option<Content>> = Vec::with_capacity(m.nodes.len());
    for n in &m.nodes {
        last.push(match n {
            Node::Dir {
                volatile, durable, ..
            } => {
                if volatile != durable {
                    o.dirs_rolled_back += 1;
                }
                None
            }
            Node::File { volatile, durable } if volatile.same(durable) => Some(durable.clone()),
            Node::File { volatile, durable } => Some(match rng() % 10 {
                0..=3 => {
                    o.data_dropped += 1;
                    durable.clone()
                }
                4..=6 => volatile.clone(),
                _ => {
                    let mut b = volatile.bytes();
                    let keep = (rng() as usize % b.len().max(1)) / PAGE * PAGE;
                    b.truncate(keep);
                    o.data_torn += 1;
                    Content::Bytes(Rc::new(b))
                }
            }),
        });
    }
    let mut torn = Vec::new();
    write_tree(&m, &last, 0, out, "", &mut torn);
    o.torn_visible = torn;
    o
}

/// Writes directory `dir` (relative path `rel`) as `out`; names in `torn` the files
/// visible there with less than their data.
fn write_tree(
    m: &Model,
    data: &[Option<Content>],
    dir: usize,
    out: &Path,
    rel: &str,
    torn: &mut Vec<String>,
) {
    fs::create_dir(out).unwrap();
    let Node::Dir { durable, .. } = &m.nodes[dir] else {
        unreachable!()
    };
    for (name, id) in durable {
        let p = out.join(name);
        let rel = format!("{rel}{name}");
        match (&m.nodes[*id], &data[*id]) {
            (Node::Dir { .. }, _) => write_tree(m, data, *id, &p, &format!("{rel}/"), torn),
            (Node::File { volatile, .. }, Some(c)) => {
                if !name.starts_with(".tmp-") && !c.same(volatile) {
                    torn.push(rel);
                }
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&p)
                    .unwrap();
                match c {
                    Content::Before(src) => {
                        std::io::copy(&mut fs::File::open(src).unwrap(), &mut f).unwrap();
                    }
                    Content::Bytes(b) => std::io::Write::write_all(&mut f, b).unwrap(),
                };
            }
            (Node::File { .. }, None) => unreachable!(),
        }
    }
}
