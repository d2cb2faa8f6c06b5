//! Finding things across time: the versions of one path over a vault's points, what
//! changed between two points, and searches over many points.
//!
//! Everything here reads trees only, never file data, and leans on two facts of the
//! format: a tree chunk is immutable and named by its content, and a directory that did
//! not change between two points has the same tree id in both. So
//! - a lookup of one path follows the path only: one tree per level per point, and a
//!   lookup that reaches a tree already looked up (the same id, the rest of the path the
//!   same) answers from memory ([`History::lookup`]);
//! - a diff skips every pair of subtrees with equal ids without reading them, so two
//!   points of a large, mostly unchanged tree cost their changed directories only;
//! - a search walks each distinct subtree once and reuses its hits for every point that
//!   holds it.
//!
//! Trees are kept in an LRU of [`TREE_CACHE`] entries, shared by all of these.
//!
//! A version is identified by [`content_id`]: a hash of a file's chunk list (and holes),
//! of a symlink's target, of a directory's tree id, so equal content in two points has
//! one id, computed without reading data.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use super::format::*;
use super::points::PointRecord;
use super::{Repository, Result};

/// Lookups in flight at once when a path is looked up in many points.
const LOOKUP_THREADS: usize = 8;

/// Trees kept in memory by one [`History`].
pub const TREE_CACHE: usize = 4096;

/// An id of a node's content, equal for equal content: 32 hex digits.
pub fn content_id(node: &Node) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&[node.kind as u8]);
    match node.kind {
        NodeKind::File => {
            for e in &node.content {
                match e {
                    Extent::Data(r) => {
                        h.update(b"D");
                        h.update(&r.id.0);
                    }
                    Extent::Hole(n) => {
                        h.update(b"H");
                        h.update(&n.to_le_bytes());
                    }
                }
            }
        }
        NodeKind::Symlink => {
            h.update(node.target.as_deref().unwrap_or_default());
        }
        NodeKind::Dir => {
            if let Some(s) = &node.subtree {
                h.update(&s.id.0);
            }
        }
        _ => {
            h.update(&node.rdev.to_le_bytes());
        }
    }
    hex::encode(&h.finalize().as_bytes()[..16])
}

/// Whether two nodes of one kind differ in the metadata a person sees (mode, owner,
/// mtime, xattrs), content aside.
pub fn meta_differs(a: &Node, b: &Node) -> bool {
    a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.mtime_ns != b.mtime_ns
        || a.xattrs != b.xattrs
}

/// Remembered lookups: (tree id, rest of the path) -> the node found there.
type Lookups = HashMap<(ChunkId, Vec<u8>), Option<Node>>;

/// Tree reads for one question, cached.
pub struct History<'r> {
    repo: &'r Repository,
    trees: Mutex<lru::LruCache<ChunkId, Arc<Tree>>>,
    lookups: Mutex<Lookups>,
    /// Trees read from the store (not from the cache).
    pub loads: std::sync::atomic::AtomicU64,
}

impl<'r> History<'r> {
    pub fn new(repo: &'r Repository) -> Self {
        History {
            repo,
            trees: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(TREE_CACHE).expect("non-zero"),
            )),
            lookups: Mutex::new(HashMap::new()),
            loads: Default::default(),
        }
    }

    pub fn repo(&self) -> &'r Repository {
        self.repo
    }

    /// A tree, from the cache or the store.
    pub fn tree(&self, r: &ChunkRef) -> Result<Arc<Tree>> {
        if let Some(t) = crate::sync::lock(&self.trees).get(&r.id) {
            return Ok(t.clone());
        }
        let t = Arc::new(self.repo.load_tree(r)?);
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::sync::lock(&self.trees).put(r.id, t.clone());
        Ok(t)
    }

    /// The top nodes of a point: one per backup, named after it.
    pub fn roots(&self, m: &Manifest) -> Result<Vec<Node>> {
        let mut out = Vec::with_capacity(m.backups.len());
        for b in &m.backups {
            let t = self.tree(&b.root)?;
            let mut n =
                t.nodes.first().cloned().ok_or_else(|| {
                    super::RepoError::damaged("tree", "a backup root tree is empty")
                })?;
            n.name = b.name.clone();
            out.push(n);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The node at `path` (components separated by `/`, the first the backup's name) in
    /// a point, or `None` when the point does not hold it.
    pub fn lookup(&self, m: &Manifest, path: &[u8]) -> Result<Option<Node>> {
        let mut parts = split_path(path);
        let Some(first) = parts.first().copied() else {
            return Ok(None);
        };
        parts.remove(0);
        let Some(root) = self.roots(m)?.into_iter().find(|n| n.name == first) else {
            return Ok(None);
        };
        self.lookup_below(root, &parts)
    }

    fn lookup_below(&self, node: Node, parts: &[&[u8]]) -> Result<Option<Node>> {
        let Some((next, rest)) = parts.split_first() else {
            return Ok(Some(node));
        };
        let Some(sub) = node.subtree.filter(|_| node.kind == NodeKind::Dir) else {
            return Ok(None);
        };
        let key = (sub.id, parts.join(&b'/'));
        if let Some(hit) = crate::sync::lock(&self.lookups).get(&key) {
            return Ok(hit.clone());
        }
        let tree = self.tree(&sub)?;
        let found = match tree.nodes.binary_search_by(|n| n.name.as_slice().cmp(next)) {
            Ok(i) => self.lookup_below(tree.nodes[i].clone(), rest)?,
            Err(_) => None,
        };
        crate::sync::lock(&self.lookups).insert(key, found.clone());
        Ok(found)
    }
}

/// The non-empty components of a path.
pub fn split_path(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .collect()
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    if prefix.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(prefix.len() + 1 + name.len());
    p.extend_from_slice(prefix);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

// ---- versions ----

/// One distinct content of a path across points.
#[derive(Clone, Debug)]
pub struct Version {
    /// [`content_id`] of the node.
    pub id: String,
    /// The node as the first point holding this content has it (metadata included).
    pub node: Node,
    /// The points holding it, oldest first.
    pub points: Vec<String>,
    /// Time of the first of them.
    pub first_time_ns: i64,
}

/// The versions of one path in a vault.
#[derive(Clone, Debug, Default)]
pub struct Versions {
    /// Ordered by their first point.
    pub versions: Vec<Version>,
    /// Points that do not hold the path, oldest first.
    pub absent: Vec<String>,
}

impl History<'_> {
    /// The distinct versions of `path` over `points` (oldest first).
    pub fn versions(&self, points: &[PointRecord], path: &[u8]) -> Result<Versions> {
        let mut out = Versions::default();
        let mut index: HashMap<String, usize> = HashMap::new();
        // The lookups wait on the store, not on the processor: several at once.
        let found: Vec<Result<Option<Node>>> = match rayon::ThreadPoolBuilder::new()
            .num_threads(LOOKUP_THREADS.min(points.len().max(1)))
            .build()
        {
            Ok(pool) => pool.install(|| {
                use rayon::prelude::*;
                points
                    .par_iter()
                    .map(|p| self.lookup(&p.manifest, path))
                    .collect()
            }),
            Err(_) => points
                .iter()
                .map(|p| self.lookup(&p.manifest, path))
                .collect(),
        };
        for (p, found) in points.iter().zip(found) {
            match found? {
                None => out.absent.push(p.name().to_string()),
                Some(node) => {
                    let id = content_id(&node);
                    match index.get(&id) {
                        Some(&i) => out.versions[i].points.push(p.name().to_string()),
                        None => {
                            index.insert(id.clone(), out.versions.len());
                            out.versions.push(Version {
                                id,
                                node,
                                points: vec![p.name().to_string()],
                                first_time_ns: p.manifest.time_ns,
                            });
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

// ---- diff ----

/// What happened to a path between two points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Change {
    /// `+`
    Added,
    /// `-`
    Removed,
    /// `M`: the content (or the kind) changed.
    Modified,
    /// `m`: only metadata (mode, owner, mtime, xattrs) changed.
    Meta,
}

impl Change {
    pub fn symbol(&self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::Meta => 'm',
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Modified => "modified",
            Change::Meta => "metadata",
        }
    }
}

/// One line of a diff.
#[derive(Clone, Debug)]
pub struct DiffEntry {
    pub change: Change,
    pub path: Vec<u8>,
    /// The node in the older point (none when added).
    pub old: Option<Node>,
    /// The node in the newer point (none when removed).
    pub new: Option<Node>,
}

impl History<'_> {
    /// Calls `out` for every difference between points `a` and `b` (below `path` when
    /// given), in path order; equal subtrees are skipped unread.
    pub fn diff(
        &self,
        a: &Manifest,
        b: &Manifest,
        path: Option<&[u8]>,
        out: &mut dyn FnMut(DiffEntry),
    ) -> Result<()> {
        match path.map(split_path).filter(|p| !p.is_empty()) {
            None => {
                let (ra, rb) = (self.roots(a)?, self.roots(b)?);
                self.diff_lists(b"", &ra, &rb, out)
            }
            Some(parts) => {
                let p = parts.join(&b'/');
                let na = self.lookup(a, &p)?;
                let nb = self.lookup(b, &p)?;
                let prefix = parts[..parts.len() - 1].join(&b'/');
                self.diff_nodes(&prefix, na.as_ref(), nb.as_ref(), out)
            }
        }
    }

    fn diff_lists(
        &self,
        prefix: &[u8],
        a: &[Node],
        b: &[Node],
        out: &mut dyn FnMut(DiffEntry),
    ) -> Result<()> {
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let ord = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match ord {
                std::cmp::Ordering::Less => {
                    self.diff_nodes(prefix, Some(&a[i]), None, out)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    self.diff_nodes(prefix, None, Some(&b[j]), out)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    self.diff_nodes(prefix, Some(&a[i]), Some(&b[j]), out)?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    fn diff_nodes(
        &self,
        prefix: &[u8],
        a: Option<&Node>,
        b: Option<&Node>,
        out: &mut dyn FnMut(DiffEntry),
    ) -> Result<()> {
        match (a, b) {
            (None, None) => Ok(()),
            (None, Some(n)) => self.whole(prefix, n, Change::Added, out),
            (Some(o), None) => self.whole(prefix, o, Change::Removed, out),
            (Some(o), Some(n)) if o.kind != n.kind => {
                self.whole(prefix, o, Change::Removed, out)?;
                self.whole(prefix, n, Change::Added, out)
            }
            (Some(o), Some(n)) => {
                let path = join(prefix, &n.name);
                if n.kind == NodeKind::Dir {
                    if meta_differs(o, n) {
                        out(entry(Change::Meta, path.clone(), Some(o), Some(n)));
                    }
                    let (sa, sb) = (
                        o.subtree.as_ref().map(|s| s.id),
                        n.subtree.as_ref().map(|s| s.id),
                    );
                    if sa == sb {
                        return Ok(());
                    }
                    let ca = self.children(o)?;
                    let cb = self.children(n)?;
                    return self.diff_lists(&path, &ca, &cb, out);
                }
                if content_id(o) != content_id(n) {
                    out(entry(Change::Modified, path, Some(o), Some(n)));
                } else if meta_differs(o, n) {
                    out(entry(Change::Meta, path, Some(o), Some(n)));
                }
                Ok(())
            }
        }
    }

    /// The entries of a directory node (none for an empty one).
    pub fn children(&self, dir: &Node) -> Result<Arc<Vec<Node>>> {
        match (&dir.subtree, dir.kind) {
            (Some(s), NodeKind::Dir) => {
                let t = self.tree(s)?;
                Ok(Arc::new(t.nodes.clone()))
            }
            _ => Ok(Arc::new(Vec::new())),
        }
    }

    /// Reports a node and everything below it as added or removed.
    fn whole(
        &self,
        prefix: &[u8],
        n: &Node,
        change: Change,
        out: &mut dyn FnMut(DiffEntry),
    ) -> Result<()> {
        let path = join(prefix, &n.name);
        let (old, new) = match change {
            Change::Removed => (Some(n), None),
            _ => (None, Some(n)),
        };
        out(entry(change, path.clone(), old, new));
        if n.kind == NodeKind::Dir {
            for c in self.children(n)?.iter() {
                self.whole(&path, c, change, out)?;
            }
        }
        Ok(())
    }
}

fn entry(change: Change, path: Vec<u8>, old: Option<&Node>, new: Option<&Node>) -> DiffEntry {
    DiffEntry {
        change,
        path,
        old: old.map(slim),
        new: new.map(slim),
    }
}

/// A node without its chunk list (what a report needs, not the extents).
fn slim(n: &Node) -> Node {
    let mut n = n.clone();
    if n.kind == NodeKind::File {
        n.content = Vec::new();
    }
    n
}

// ---- search ----

/// What a search looks for.
#[derive(Default)]
pub struct Query {
    /// Names (last components) to match; none: every entry.
    pub names: Vec<NameMatcher>,
    /// Only entries whose mtime is after this.
    pub newer_than_ns: Option<i64>,
    /// Only files larger than this many bytes.
    pub larger_than: Option<u64>,
}

/// A name pattern: a glob (`*`, `?`, `[...]` within a name) or a regular expression.
pub enum NameMatcher {
    Glob(globset::GlobMatcher),
    Regex(regex::bytes::Regex),
}

impl NameMatcher {
    pub fn glob(pattern: &str) -> std::result::Result<NameMatcher, String> {
        globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map(|g| NameMatcher::Glob(g.compile_matcher()))
            .map_err(|e| format!("bad pattern {pattern:?}: {e}"))
    }

    pub fn regex(pattern: &str) -> std::result::Result<NameMatcher, String> {
        regex::bytes::Regex::new(pattern)
            .map(NameMatcher::Regex)
            .map_err(|e| format!("bad regular expression {pattern:?}: {e}"))
    }

    fn matches(&self, name: &[u8]) -> bool {
        match self {
            NameMatcher::Glob(g) => {
                use std::os::unix::ffi::OsStrExt;
                g.is_match(std::path::Path::new(std::ffi::OsStr::from_bytes(name)))
            }
            NameMatcher::Regex(r) => r.is_match(name),
        }
    }
}

impl Query {
    /// Whether a node is a hit (its name, mtime and size).
    pub fn matches(&self, n: &Node) -> bool {
        (self.names.is_empty() || self.names.iter().any(|m| m.matches(&n.name)))
            && self.newer_than_ns.is_none_or(|t| n.mtime_ns > t)
            && self
                .larger_than
                .is_none_or(|s| n.kind == NodeKind::File && n.size > s)
    }
}

/// A search hit: a path relative to where the search started, and its node (slim).
pub type Hit = (Vec<u8>, Node);

/// Searches, remembering the hits of each subtree for the points that share it.
pub struct Search<'h, 'r> {
    history: &'h History<'r>,
    query: Query,
    memo: HashMap<ChunkId, Arc<Vec<Hit>>>,
}

impl<'h, 'r> Search<'h, 'r> {
    pub fn new(history: &'h History<'r>, query: Query) -> Self {
        Search {
            history,
            query,
            memo: HashMap::new(),
        }
    }

    /// The hits of a point (below `prefix` when given), paths starting with the backup's
    /// name.
    pub fn point(&mut self, m: &Manifest, prefix: Option<&[u8]>) -> Result<Vec<Hit>> {
        let mut out = Vec::new();
        match prefix.map(split_path).filter(|p| !p.is_empty()) {
            None => {
                for root in self.history.roots(m)? {
                    self.node(b"", &root, &mut out)?;
                }
            }
            Some(parts) => {
                let p = parts.join(&b'/');
                if let Some(n) = self.history.lookup(m, &p)? {
                    let parent = parts[..parts.len() - 1].join(&b'/');
                    self.node(&parent, &n, &mut out)?;
                }
            }
        }
        Ok(out)
    }

    fn node(&mut self, prefix: &[u8], n: &Node, out: &mut Vec<Hit>) -> Result<()> {
        let path = join(prefix, &n.name);
        if self.query.matches(n) {
            out.push((path.clone(), slim(n)));
        }
        if let (NodeKind::Dir, Some(sub)) = (n.kind, &n.subtree) {
            for (rel, hit) in self.subtree(sub)?.iter() {
                out.push((join(&path, rel), hit.clone()));
            }
        }
        Ok(())
    }

    /// The hits below one tree, paths relative to it; each tree id searched once.
    fn subtree(&mut self, sub: &ChunkRef) -> Result<Arc<Vec<Hit>>> {
        if let Some(h) = self.memo.get(&sub.id) {
            return Ok(h.clone());
        }
        let tree = self.history.tree(sub)?;
        let mut hits = Vec::new();
        for c in &tree.nodes {
            self.node(b"", c, &mut hits)?;
        }
        let hits = Arc::new(hits);
        self.memo.insert(sub.id, hits.clone());
        Ok(hits)
    }
}

/// Paths that points hold and the newest of `points` does not, each with the last
/// point holding it and its node there; in path order. `points` is oldest first.
pub fn deleted(
    history: &History<'_>,
    points: &[PointRecord],
    mut keep: impl FnMut(&[u8], &Node) -> bool,
) -> Result<Vec<(Vec<u8>, String, Node)>> {
    let Some((latest, older)) = points.split_last() else {
        return Ok(Vec::new());
    };
    let mut found: std::collections::BTreeMap<Vec<u8>, (String, Node)> = Default::default();
    // Newest first: the first point seen holding a path is the last one that does.
    for p in older.iter().rev() {
        let mut gone = Vec::new();
        history.diff(&p.manifest, &latest.manifest, None, &mut |e| {
            // A change of kind comes as removed and added: the old kind is gone.
            if let (Change::Removed, Some(old)) = (e.change, e.old) {
                gone.push((e.path, old));
            }
        })?;
        for (path, node) in gone {
            if !found.contains_key(&path) && keep(&path, &node) {
                found.insert(path, (p.name().to_string(), node));
            }
        }
    }
    Ok(found.into_iter().map(|(p, (pt, n))| (p, pt, n)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, chunk: u8) -> Node {
        let mut n = Node::empty(name.as_bytes().to_vec(), NodeKind::File);
        n.content = vec![Extent::Data(ChunkRef {
            id: ChunkId([chunk; 32]),
            pack: PackId([0; 16]),
            offset: 0,
            stored_len: 0,
            raw_len: 1,
            frames: None,
        })];
        n.size = 1;
        n
    }

    #[test]
    fn content_ids_follow_content_not_metadata() {
        let a = file("a", 1);
        let mut b = file("b", 1);
        b.mtime_ns = 5;
        b.mode = 0o600;
        assert_eq!(content_id(&a), content_id(&b));
        assert!(meta_differs(&a, &b));
        assert_ne!(content_id(&a), content_id(&file("a", 2)));
        let mut hole = file("a", 1);
        hole.content.push(Extent::Hole(10));
        assert_ne!(content_id(&a), content_id(&hole));
        let mut link = Node::empty(b"l".to_vec(), NodeKind::Symlink);
        link.target = Some(b"x".to_vec());
        let mut link2 = link.clone();
        link2.target = Some(b"y".to_vec());
        assert_ne!(content_id(&link), content_id(&link2));
        assert_eq!(content_id(&a).len(), 32);
    }

    #[test]
    fn globs_match_names_within_one_component() {
        let q = Query {
            names: vec![NameMatcher::glob("*.pdf").unwrap()],
            ..Default::default()
        };
        assert!(q.matches(&file("report.pdf", 1)));
        assert!(!q.matches(&file("report.pdf.bak", 1)));
        let e = NameMatcher::regex("(").err().unwrap();
        assert!(e.contains("bad regular expression"), "{e}");
        let q = Query {
            names: vec![NameMatcher::regex("(?-u)^caf\\xE9$").unwrap()],
            larger_than: Some(0),
            ..Default::default()
        };
        let mut n = file("x", 1);
        n.name = b"caf\xe9".to_vec();
        assert!(q.matches(&n));
        n.size = 0;
        assert!(!q.matches(&n), "not larger than 0 bytes");
    }
}
