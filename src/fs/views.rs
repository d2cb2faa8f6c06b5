//! The views across time of `.vaultfs/`, generated from `repo::history`:
//!
//! - `versions/<vault>/<backup>/<path>/`: for a path that is a file (or symlink...) in
//!   some points, its distinct versions, each a readable entry named
//!   `<stem>.<first point>.<ext>` (`report.2026-11-22T225501Z.pdf`) with that version's
//!   metadata; for a path that is a directory in some points, its entries (of every
//!   point) as directories of the same kind, so the view is walked like the tree.
//! - `changes/<vault>/<point>/`: what the point added or modified against the point
//!   before it, readable in place under their paths, and `removed.json` listing the
//!   paths it no longer holds.
//! - `deleted/<vault>/`: the last version of every path that some point holds and the
//!   latest does not, under its path.
//!
//! Entries are real nodes of the points, read like any file of a backup; the directories
//! around them are generated (listed from the views' answers, which are kept for
//! [`VIEW_REUSE`] and then computed again, so new points show up).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::repo::Repository;
use crate::repo::format::{Node, NodeKind, rfc3339};
use crate::repo::history::{self, Change, History};
use crate::repo::points::PointRecord;
use crate::sync::lock;

use super::inodes::{Body, Control, Key, TreeNode};
use super::namespace::Namespace;
use super::reply::{FsError, Result};

/// How long a computed view answers before it is computed again.
pub const VIEW_REUSE: Duration = Duration::from_secs(10);

/// A generated directory of a view: sub-directories and leaves, by name.
#[derive(Debug, Default)]
struct ViewDir {
    dirs: BTreeMap<Vec<u8>, ViewDir>,
    leaves: BTreeMap<Vec<u8>, Node>,
}

impl ViewDir {
    /// Puts `node` at `path` (components), making the directories on the way.
    fn insert(&mut self, path: &[&[u8]], node: Node) {
        match path {
            [] => {}
            [name] => {
                if node.kind == NodeKind::Dir && node.subtree.is_none() {
                    self.dirs.entry(name.to_vec()).or_default();
                } else {
                    self.leaves.insert(name.to_vec(), node);
                }
            }
            [first, rest @ ..] => self
                .dirs
                .entry(first.to_vec())
                .or_default()
                .insert(rest, node),
        }
    }

    fn at(&self, path: &[&[u8]]) -> Option<&ViewDir> {
        match path.split_first() {
            None => Some(self),
            Some((first, rest)) => self.dirs.get(*first)?.at(rest),
        }
    }
}

/// One computed view: a tree of paths, and for `changes/`, the removed paths.
#[derive(Debug)]
struct Computed {
    at: Instant,
    tree: Arc<ViewDir>,
    removed: Arc<Vec<u8>>,
}

/// A vault's point records, and when they were read.
type PointsRead = (Instant, Arc<Vec<PointRecord>>);

/// The views' state: computed answers, by what they answer.
#[derive(Debug, Default)]
pub struct Views {
    computed: Mutex<HashMap<Control, Computed>>,
    points: Mutex<HashMap<String, PointsRead>>,
}

fn split(p: &[u8]) -> Vec<&[u8]> {
    history::split_path(p)
}

fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a.is_empty() {
        return b.to_vec();
    }
    let mut p = a.to_vec();
    p.push(b'/');
    p.extend_from_slice(b);
    p
}

/// `report.pdf` first held by point P: `report.P.pdf`; `Makefile`: `Makefile.P`.
pub fn version_name(name: &[u8], point: &str) -> Vec<u8> {
    let dot = name.iter().rposition(|&b| b == b'.').filter(|&i| i > 0);
    let (stem, ext) = match dot {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, &b""[..]),
    };
    let mut out = stem.to_vec();
    out.push(b'.');
    out.extend_from_slice(point.as_bytes());
    out.extend_from_slice(ext);
    out
}

/// A node as a view shows it: on its own (no hard-link group: one name, one link).
fn standalone(mut n: Node, name: Vec<u8>) -> Node {
    n.name = name;
    n.hardlink = None;
    n
}

impl Views {
    fn points(&self, repo: &Repository, vault: &str) -> Result<Arc<Vec<PointRecord>>> {
        if let Some((at, p)) = lock(&self.points).get(vault)
            && at.elapsed() < VIEW_REUSE
        {
            return Ok(p.clone());
        }
        let p = Arc::new(repo.point_records(vault, false)?);
        lock(&self.points).insert(vault.to_string(), (Instant::now(), p.clone()));
        Ok(p)
    }

    /// The entries of a view's directory.
    pub fn children(
        &self,
        repo: &Repository,
        ns: &Namespace,
        ino: u64,
        c: &Control,
        vaults: Vec<String>,
    ) -> Result<Vec<(Vec<u8>, u64)>> {
        let dir = |name: Vec<u8>, c: Control| {
            let i = ns.control_ino(ino, &name, c);
            (name, i)
        };
        let leaf = |name: Vec<u8>, node: Node| {
            let key = Key::ViewLeaf {
                dir: ino,
                name: name.clone(),
                content: history::content_id(&node),
            };
            let n = name.clone();
            let i = ns.inodes.get_or_alloc(key, move || {
                (
                    ino,
                    n.clone(),
                    Body::Node(TreeNode::new(standalone(node, n), 0)),
                )
            });
            (name, i)
        };
        Ok(match c {
            Control::Versions => vaults
                .into_iter()
                .map(|v| dir(v.clone().into_bytes(), Control::VersionsOf(v, Vec::new())))
                .collect(),
            Control::Changes => vaults
                .into_iter()
                .map(|v| dir(v.clone().into_bytes(), Control::ChangesOf(v)))
                .collect(),
            Control::Deleted => vaults
                .into_iter()
                .map(|v| dir(v.clone().into_bytes(), Control::DeletedIn(v, Vec::new())))
                .collect(),
            Control::ChangesOf(v) => self
                .points(repo, v)?
                .iter()
                .skip(1)
                .map(|p| {
                    let name = p.name().to_string();
                    dir(
                        name.clone().into_bytes(),
                        Control::ChangesIn(v.clone(), name, Vec::new()),
                    )
                })
                .collect(),
            Control::VersionsOf(v, path) => {
                let points = self.points(repo, v)?;
                let h = History::new(repo);
                let mut out = Vec::new();
                let mut names: BTreeMap<Vec<u8>, ()> = BTreeMap::new();
                if path.is_empty() {
                    for p in points.iter() {
                        for b in &p.manifest.backups {
                            names.insert(b.name.clone(), ());
                        }
                    }
                } else {
                    let versions = h.versions(&points, path)?;
                    let base = split(path).last().map(|s| s.to_vec()).unwrap_or_default();
                    let mut seen_trees = std::collections::HashSet::new();
                    for x in versions.versions {
                        if x.node.kind == NodeKind::Dir {
                            if seen_trees.insert(x.id.clone()) {
                                for c in h.children(&x.node)?.iter() {
                                    names.insert(c.name.clone(), ());
                                }
                            }
                        } else {
                            let first = x.points.first().cloned().unwrap_or_default();
                            out.push(leaf(version_name(&base, &first), x.node));
                        }
                    }
                }
                for (name, ()) in names {
                    let sub = join(path, &name);
                    out.push(dir(name, Control::VersionsOf(v.clone(), sub)));
                }
                out.sort_by(|a, b| a.0.cmp(&b.0));
                out.dedup_by(|a, b| a.0 == b.0);
                out
            }
            Control::ChangesIn(v, p, path) => {
                let top = Control::ChangesIn(v.clone(), p.clone(), Vec::new());
                let removed = Control::RemovedJson(v.clone(), p.clone());
                self.generated(repo, ino, &top, path, Some(removed), &dir, &leaf, |sub| {
                    Control::ChangesIn(v.clone(), p.clone(), sub)
                })?
            }
            Control::DeletedIn(v, path) => {
                let top = Control::DeletedIn(v.clone(), Vec::new());
                self.generated(repo, ino, &top, path, None, &dir, &leaf, |sub| {
                    Control::DeletedIn(v.clone(), sub)
                })?
            }
            _ => return Err(FsError::NotDir),
        })
    }

    /// The entries at `path` of a `changes/<vault>/<point>` or `deleted/<vault>` view.
    #[allow(clippy::too_many_arguments)]
    fn generated(
        &self,
        repo: &Repository,
        _ino: u64,
        top: &Control,
        path: &[u8],
        removed: Option<Control>,
        dir: &dyn Fn(Vec<u8>, Control) -> (Vec<u8>, u64),
        leaf: &dyn Fn(Vec<u8>, Node) -> (Vec<u8>, u64),
        sub: impl Fn(Vec<u8>) -> Control,
    ) -> Result<Vec<(Vec<u8>, u64)>> {
        let (tree, _) = self.computed_of(repo, top)?;
        let parts = split(path);
        let d = tree.at(&parts).ok_or(FsError::NotFound)?;
        let mut out = Vec::new();
        if let Some(r) = removed.filter(|_| parts.is_empty()) {
            out.push(dir(b"removed.json".to_vec(), r));
        }
        for name in d.dirs.keys() {
            out.push(dir(name.clone(), sub(join(path, name))));
        }
        for (name, node) in &d.leaves {
            out.push(leaf(name.clone(), node.clone()));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn computed_of(
        &self,
        repo: &Repository,
        top: &Control,
    ) -> Result<(Arc<ViewDir>, Arc<Vec<u8>>)> {
        if let Some(c) = lock(&self.computed).get(top)
            && c.at.elapsed() < VIEW_REUSE
        {
            return Ok((c.tree.clone(), c.removed.clone()));
        }
        let h = History::new(repo);
        let mut tree = ViewDir::default();
        let mut removed = Vec::new();
        match top {
            Control::ChangesIn(v, point, _) => {
                let points = self.points(repo, v)?;
                let i = points
                    .iter()
                    .position(|p| p.name() == point)
                    .ok_or(FsError::NotFound)?;
                if i > 0 {
                    h.diff(
                        &points[i - 1].manifest,
                        &points[i].manifest,
                        None,
                        &mut |e| {
                            match (e.change, e.new) {
                                (Change::Added | Change::Modified, Some(n)) => {
                                    // The full node (with its chunks) is looked up below.
                                    tree.insert(&split(&e.path), n);
                                }
                                (Change::Removed, _) => {
                                    let old = e.old.as_ref();
                                    removed.push(json!({
                                        "path": String::from_utf8_lossy(&e.path),
                                        "type": old.map(|n| format!("{:?}", n.kind).to_lowercase()),
                                        "size": old.map(|n| n.size),
                                        "mtime": old.map(|n| rfc3339(n.mtime_ns)),
                                    }));
                                }
                                _ => {}
                            }
                        },
                    )?;
                    fill(&h, &points[i].manifest, &mut tree, b"")?;
                }
            }
            Control::DeletedIn(v, _) => {
                let points = self.points(repo, v)?;
                let gone = history::deleted(&h, &points, |_, _| true)?;
                // A deleted directory shows whole, as the last point holding it has it:
                // what lies under it is not listed again.
                let dirs: std::collections::HashSet<&[u8]> = gone
                    .iter()
                    .filter(|(_, _, n)| n.kind == NodeKind::Dir)
                    .map(|(p, _, _)| p.as_slice())
                    .collect();
                let under_deleted_dir = |p: &[u8]| {
                    p.iter()
                        .enumerate()
                        .any(|(i, &b)| b == b'/' && dirs.contains(&p[..i]))
                };
                for (path, point, _) in &gone {
                    if under_deleted_dir(path) {
                        continue;
                    }
                    let m = &points
                        .iter()
                        .find(|p| p.name() == point)
                        .ok_or(FsError::NotFound)?
                        .manifest;
                    if let Some(n) = h.lookup(m, path)? {
                        tree.insert(&split(path), n);
                    }
                }
            }
            _ => return Err(FsError::NotDir),
        }
        let tree = Arc::new(tree);
        let removed = {
            let mut out = serde_json::to_vec_pretty(&Value::Array(removed)).expect("JSON encodes");
            out.push(b'\n');
            Arc::new(out)
        };
        lock(&self.computed).insert(
            top.clone(),
            Computed {
                at: Instant::now(),
                tree: tree.clone(),
                removed: removed.clone(),
            },
        );
        Ok((tree, removed))
    }

    /// `changes/<vault>/<point>/removed.json`.
    pub fn removed_json(&self, repo: &Repository, vault: &str, point: &str) -> Result<Vec<u8>> {
        let top = Control::ChangesIn(vault.to_string(), point.to_string(), Vec::new());
        Ok(self.computed_of(repo, &top)?.1.as_ref().clone())
    }
}

/// Replaces the slim nodes a diff reports with the point's full ones (chunk lists), and
/// keeps an added directory as a generated one holding its added entries (a diff lists
/// every entry of an added directory).
fn fill(
    h: &History<'_>,
    m: &crate::repo::format::Manifest,
    d: &mut ViewDir,
    prefix: &[u8],
) -> Result<()> {
    let names: Vec<Vec<u8>> = d.leaves.keys().cloned().collect();
    for name in names {
        let path = join(prefix, &name);
        let full = h.lookup(m, &path)?;
        match full {
            Some(n) if n.kind == NodeKind::Dir => {
                // An added directory: its entries come as their own lines.
                d.leaves.remove(&name);
                d.dirs.entry(name).or_default();
            }
            Some(n) => {
                d.leaves.insert(name, n);
            }
            None => {
                d.leaves.remove(&name);
            }
        }
    }
    for (name, sub) in d.dirs.iter_mut() {
        fill(h, m, sub, &join(prefix, name))?;
    }
    Ok(())
}
