//! Backups from a stream: a snapshot file arriving through a pipe or the mount's
//! `incoming/` directory.
//!
//! A tar archive (plain, zstd or gzip, recognised by its first bytes) is read by
//! [`super::tar`], which yields the members GNU tar 1.34 would extract, and expanded
//! into a tree backup carrying the metadata of its headers: modes, owners, mtimes (with
//! nanoseconds from pax headers), symlinks, hardlinks, device nodes, fifos, xattrs
//! (`SCHILY.xattr.*` pax records), sparse members (their holes recorded as
//! [`Extent::Hole`], never read or stored). The tree is built with GNU tar's extraction
//! rules (`TreeBuilder`), and a member whose name, symlink target or xattrs could not
//! be restored is refused here, so that no point is made that restore then fails on.
//! Any other stream is an image backup. The stream is read once, front to back, and
//! chunked as it arrives: nothing but the tree's metadata is held in memory. A malformed
//! or truncated archive is an error and the point is not committed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;

use super::backup::Skipped;
use super::format::*;
use super::pack::PackWriter;
use super::tar::{Member, MemberKind, TarReader, malformed};
use super::walk::{Chunker, Progress, with_compressor};
use super::{RepoError, Result};

/// What a snapshot stream holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// A tar archive, possibly compressed: becomes a tree backup.
    Tar,
    /// Anything else: becomes an image backup.
    Image,
}

const TAR_SUFFIXES: [&str; 6] = [".tar.zst", ".tar.gz", ".tzst", ".tgz", ".tar.zstd", ".tar"];

/// Classifies a snapshot file by its name: tar archives lose their archive extension
/// (`etc.tar.zst` becomes backup `etc`); anything else keeps its name as an image.
pub fn classify(file_name: &[u8]) -> (Vec<u8>, StreamKind) {
    for s in TAR_SUFFIXES {
        if file_name.len() > s.len() && file_name.ends_with(s.as_bytes()) {
            return (
                file_name[..file_name.len() - s.len()].to_vec(),
                StreamKind::Tar,
            );
        }
    }
    (file_name.to_vec(), StreamKind::Image)
}

/// Opens the decompressor that the first bytes of `reader` call for.
fn decompressed<'r>(reader: Box<dyn Read + Send + 'r>) -> Result<Box<dyn Read + Send + 'r>> {
    let mut buf = BufReader::with_capacity(1 << 20, reader);
    let head = buf.fill_buf().map_err(|e| RepoError::io("<archive>", e))?;
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d = zstd::stream::read::Decoder::with_buffer(buf).map_err(malformed)?;
        Ok(Box::new(d))
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(buf)))
    } else {
        Ok(Box::new(buf))
    }
}

/// Longest member path that can be restored (Linux `PATH_MAX` less its NUL).
const MAX_PATH: usize = 4095;
/// Longest path component (Linux `NAME_MAX`).
const MAX_NAME: usize = 255;
/// Longest xattr value Linux stores.
const MAX_XATTR_VALUE: usize = 64 << 10;
/// Symlinks followed while resolving one member path (Linux's limit).
const MAX_SYMLINK_HOPS: u32 = 40;

/// Splits a member path into components that can be restored. A leading `/` is dropped
/// (as GNU tar does); `..`, NUL bytes, components longer than `NAME_MAX` and paths
/// longer than `PATH_MAX` are refused: such a point could never be restored.
fn components(path: &[u8]) -> Result<Vec<Vec<u8>>> {
    let shown = || String::from_utf8_lossy(&path[..path.len().min(200)]).into_owned();
    if path.len() > MAX_PATH {
        return Err(malformed(format!(
            "member path {:?}... is {} bytes long, more than a path may be ({MAX_PATH})",
            shown(),
            path.len()
        )));
    }
    if path.contains(&0) {
        return Err(malformed(format!(
            "member path {:?} contains a NUL byte",
            String::from_utf8_lossy(path)
        )));
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(malformed(format!("unsafe member path {:?}", shown())));
            }
            c if c.len() > MAX_NAME => {
                return Err(malformed(format!(
                    "member path {:?} has a component of {} bytes, more than a name may be \
                     ({MAX_NAME})",
                    shown(),
                    c.len()
                )));
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Whether a path has a `..` component.
fn has_dotdot(path: &[u8]) -> bool {
    path.split(|&b| b == b'/').any(|c| c == b"..")
}

/// What follows the last `..` component of a path (all of it when there is none).
fn after_last_dotdot(path: &[u8]) -> &[u8] {
    let mut start = 0;
    let mut at = 0;
    for c in path.split(|&b| b == b'/') {
        at += c.len() + 1;
        if c == b".." {
            start = at.min(path.len());
        }
    }
    &path[start..]
}

/// Checks what else of a member must be restorable: its symlink target and xattrs.
fn check_restorable(m: &Member) -> Result<()> {
    let bad = |why: String| malformed(format!("{}: {why}", m.quoted()));
    if m.kind == MemberKind::Symlink {
        if m.link.is_empty() {
            return Err(bad("a symlink with an empty target".into()));
        }
        if m.link.contains(&0) || m.link.len() > MAX_PATH {
            return Err(bad(format!(
                "a symlink target of {} bytes{} cannot be restored",
                m.link.len(),
                if m.link.contains(&0) {
                    " holding NUL"
                } else {
                    ""
                }
            )));
        }
    }
    for (name, value) in &m.xattrs {
        if name.is_empty() || name.len() > MAX_NAME || name.contains(&0) || !name.contains(&b'.') {
            return Err(bad(format!(
                "xattr name {:?} cannot be restored",
                String::from_utf8_lossy(name)
            )));
        }
        if value.len() > MAX_XATTR_VALUE {
            return Err(bad(format!(
                "xattr {} has a value of {} bytes (more than {MAX_XATTR_VALUE})",
                String::from_utf8_lossy(name),
                value.len()
            )));
        }
    }
    if m.uid > u32::MAX as u64 || m.gid > u32::MAX as u64 {
        return Err(bad(format!("owner {}:{} is out of range", m.uid, m.gid)));
    }
    if m.devmajor > u32::MAX as u64 || m.devminor > u32::MAX as u64 {
        return Err(bad("device number out of range".into()));
    }
    Ok(())
}

/// One name of the tree being built.
struct Entry {
    node: Node,
    children: BTreeMap<Vec<u8>, usize>,
    /// Hard link group: entries sharing one file.
    group: Option<u64>,
}

/// The tree an archive extracts to, built member by member with GNU tar's rules:
/// missing parents are created; a parent that is a symlink is followed when its target
/// is relative, free of `..` and an existing directory (GNU tar creates other symlinks as
/// placeholder files, so members under them fail); a later member replaces an earlier
/// one of the same name, except that a non-empty directory stays.
struct TreeBuilder {
    entries: Vec<Entry>,
    groups: u64,
    now: i64,
}

impl TreeBuilder {
    fn new(now: i64) -> Self {
        let mut root = Node::empty(Vec::new(), NodeKind::Dir);
        root.mtime_ns = now;
        TreeBuilder {
            entries: vec![Entry {
                node: root,
                children: BTreeMap::new(),
                group: None,
            }],
            groups: 0,
            now,
        }
    }

    fn add(&mut self, node: Node) -> usize {
        self.entries.push(Entry {
            node,
            children: BTreeMap::new(),
            group: None,
        });
        self.entries.len() - 1
    }

    /// The directory `parts` names. Missing directories are created unless `create` is
    /// false (or they lie inside a symlink's target). `Err` says why the path does not
    /// lead to a directory.
    fn dir(&mut self, parts: &[Vec<u8>], create: bool) -> std::result::Result<usize, String> {
        let mut todo: VecDeque<(Vec<u8>, bool)> =
            parts.iter().map(|p| (p.clone(), create)).collect();
        let mut dir = 0usize;
        let mut hops = 0;
        while let Some((c, create)) = todo.pop_front() {
            let Some(&i) = self.entries[dir].children.get(&c) else {
                if !create {
                    return Err(format!("{:?} does not exist", String::from_utf8_lossy(&c)));
                }
                let mut d = Node::empty(c.clone(), NodeKind::Dir);
                d.mtime_ns = self.now;
                let i = self.add(d);
                self.entries[dir].children.insert(c, i);
                dir = i;
                continue;
            };
            let node = &self.entries[i].node;
            match node.kind {
                NodeKind::Dir => dir = i,
                NodeKind::Symlink => {
                    let t = node.target.clone().unwrap_or_default();
                    let shown = format!(
                        "{:?} is a symlink to {:?}",
                        String::from_utf8_lossy(&c),
                        String::from_utf8_lossy(&t)
                    );
                    let comps: Vec<&[u8]> = t.split(|&b| b == b'/').collect();
                    if t.starts_with(b"/") || comps.contains(&&b".."[..]) {
                        return Err(format!("{shown}, outside the archive's tree"));
                    }
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(format!("{shown}: too many levels of symbolic links"));
                    }
                    for p in comps.into_iter().rev() {
                        if !p.is_empty() && p != b"." {
                            todo.push_front((p.to_vec(), false));
                        }
                    }
                }
                _ => {
                    return Err(format!(
                        "{:?} is not a directory",
                        String::from_utf8_lossy(&c)
                    ));
                }
            }
        }
        Ok(dir)
    }

    /// Puts `node` at `leaf` in directory `dir`; `Err` says why it could not be.
    fn put(&mut self, dir: usize, node: Node) -> std::result::Result<usize, String> {
        let leaf = node.name.clone();
        if let Some(&old) = self.entries[dir].children.get(&leaf) {
            let e = &mut self.entries[old];
            if e.node.kind == NodeKind::Dir {
                if node.kind == NodeKind::Dir {
                    e.node = node;
                    return Ok(old);
                }
                if !e.children.is_empty() {
                    return Err("it would replace a directory that is not empty".into());
                }
            }
        }
        let i = self.add(node);
        self.entries[dir].children.insert(leaf, i);
        Ok(i)
    }

    /// Encodes the directories, deepest first, and returns the root node.
    fn finish(mut self, writer: &PackWriter, stats: &mut BackupStats) -> Result<Node> {
        // Hard link groups: count the names still in the tree.
        let mut order = Vec::new();
        let mut stack = vec![0usize];
        while let Some(i) = stack.pop() {
            order.push(i);
            stack.extend(self.entries[i].children.values().copied());
        }
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for &i in &order {
            if let Some(g) = self.entries[i].group {
                *counts.entry(g).or_default() += 1;
            }
        }
        for &i in &order {
            let e = &mut self.entries[i];
            e.node.hardlink = e
                .group
                .map(|g| (g, counts[&g]))
                .filter(|&(_, n)| n > 1 && e.node.kind == NodeKind::File);
        }
        // `order` lists parents before children: encode it backwards.
        let level = writer.repo().config().zstd_level;
        for &i in order.iter().rev() {
            if self.entries[i].node.kind != NodeKind::Dir {
                continue;
            }
            let children: Vec<usize> = self.entries[i].children.values().copied().collect();
            let mut tree = Tree::default();
            for c in children {
                let placeholder = Node::empty(Vec::new(), NodeKind::File);
                tree.nodes
                    .push(std::mem::replace(&mut self.entries[c].node, placeholder));
            }
            stats.dirs += 1;
            let data = encode_object(&tree);
            let r = with_compressor(level, |c| writer.store_chunk(ChunkKind::Tree, &data, c))?;
            self.entries[i].node.subtree = Some(r);
        }
        Ok(self.entries.swap_remove(0).node)
    }
}

/// Reads a tar stream into a tree backup; returns its root directory node (to be named
/// and stored by the caller). Members GNU tar could not extract either (under a symlink
/// that leaves the tree, under a file) are left out with a warning.
pub fn tar_backup(
    writer: &PackWriter,
    reader: Box<dyn Read + Send + '_>,
    progress: &Progress,
) -> Result<(Node, BackupStats)> {
    let mut skipped = Vec::new();
    tar_backup_into(writer, reader, progress, &mut skipped)
}

/// [`tar_backup`], listing the members left out in `skipped`.
pub fn tar_backup_into(
    writer: &PackWriter,
    reader: Box<dyn Read + Send + '_>,
    progress: &Progress,
    skipped: &mut Vec<Skipped>,
) -> Result<(Node, BackupStats)> {
    let mut tar = TarReader::new(decompressed(reader)?);
    let mut chunker = Chunker::new(writer);
    let mut stats = BackupStats::default();
    let now = now_ns();
    let mut tree = TreeBuilder::new(now);
    let mut skip = |path: &[u8], why: String| {
        let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(path));
        tracing::warn!("skipped {}: {why}", printable_path(&path));
        skipped.push(Skipped { path, error: why });
    };
    while let Some(m) = tar.next_member()? {
        // GNU tar skips such a member with an error and extracts the rest.
        if has_dotdot(&m.path) {
            skip(
                &m.path,
                "member name contains '..' (GNU tar skips it too)".into(),
            );
            continue;
        }
        let parts = components(&m.path)?;
        check_restorable(&m)?;
        let Some((leaf, parents)) = parts.split_last() else {
            // The archive's root ("./").
            if m.kind != MemberKind::Dir {
                return Err(malformed(format!(
                    "{}: the archive's root is not a directory",
                    m.quoted()
                )));
            }
            let root = &mut tree.entries[0].node;
            root.mode = m.mode;
            root.uid = m.uid as u32;
            root.gid = m.gid as u32;
            root.mtime_ns = m.mtime_ns;
            root.xattrs = m.xattrs;
            continue;
        };
        let kind = match m.kind {
            MemberKind::File | MemberKind::HardLink => NodeKind::File,
            MemberKind::Dir => NodeKind::Dir,
            MemberKind::Symlink => NodeKind::Symlink,
            MemberKind::CharDevice => NodeKind::CharDevice,
            MemberKind::BlockDevice => NodeKind::BlockDevice,
            MemberKind::Fifo => NodeKind::Fifo,
        };
        // The parent directory, as GNU tar would reach it (data is still read, to keep
        // the stream in step, but not stored).
        let dir = match tree.dir(parents, true) {
            Ok(d) => Some(d),
            Err(why) => {
                skip(&m.path, why);
                None
            }
        };
        let Some(dir) = dir else { continue };
        if m.kind == MemberKind::HardLink {
            // GNU tar drops what comes before the last `..` of a hard link's target.
            let target = components(after_last_dotdot(&m.link))?;
            let shown = || {
                format!(
                    "hard link {} to {:?}",
                    m.quoted(),
                    String::from_utf8_lossy(&m.link)
                )
            };
            let found = match target.split_last() {
                None => None,
                Some((tleaf, tparents)) => tree
                    .dir(tparents, false)
                    .ok()
                    .and_then(|d| tree.entries[d].children.get(tleaf).copied()),
            };
            let Some(first) = found else {
                return Err(malformed(format!(
                    "{}, which is not earlier in the archive",
                    shown()
                )));
            };
            if tree.entries[first].node.kind == NodeKind::Dir {
                return Err(malformed(format!("{}, a directory", shown())));
            }
            let mut node = tree.entries[first].node.clone();
            node.name = leaf.clone();
            if node.kind == NodeKind::File {
                stats.files += 1;
                stats.bytes += node.size;
            } else {
                stats.other += 1;
            }
            let group = match tree.entries[first].group {
                Some(g) => g,
                None => {
                    tree.groups += 1;
                    tree.entries[first].group = Some(tree.groups);
                    tree.groups
                }
            };
            match tree.put(dir, node) {
                Ok(i) => tree.entries[i].group = Some(group),
                Err(why) => skip(&m.path, why),
            }
            continue;
        }
        let mut node = Node::empty(leaf.clone(), kind);
        node.mode = m.mode;
        node.uid = m.uid as u32;
        node.gid = m.gid as u32;
        node.mtime_ns = m.mtime_ns;
        node.ctime_ns = now;
        match kind {
            NodeKind::File => {
                let mut extents = Vec::new();
                let read = read_content(&mut tar, &mut chunker, &m, &mut extents, progress)?;
                node.size = extents.iter().map(Extent::len).sum();
                node.content = extents;
                stats.files += 1;
                stats.bytes += node.size;
                stats.bytes_read += read;
                progress.add(1, 0);
            }
            NodeKind::Symlink => {
                node.size = m.link.len() as u64;
                node.target = Some(m.link.clone());
                stats.other += 1;
            }
            NodeKind::CharDevice | NodeKind::BlockDevice => {
                node.rdev = rustix::fs::makedev(m.devmajor as u32, m.devminor as u32);
                stats.other += 1;
            }
            NodeKind::Dir => {}
            _ => stats.other += 1,
        }
        node.xattrs = m.xattrs;
        if let Err(why) = tree.put(dir, node) {
            skip(&m.path, why);
        }
    }
    let root = tree.finish(writer, &mut stats)?;
    Ok((root, stats))
}

/// Chunks a file member's data into `out`; the holes of a sparse member are recorded,
/// never read or stored. Returns the bytes read.
fn read_content<R: Read>(
    tar: &mut TarReader<R>,
    chunker: &mut Chunker<'_>,
    m: &Member,
    out: &mut Vec<Extent>,
    progress: &Progress,
) -> Result<u64> {
    let fail = |tar: &mut TarReader<R>, e: RepoError| tar.take_error().unwrap_or(e);
    let Some(sparse) = &m.sparse else {
        return chunker
            .chunk_stream(&mut tar.data(), out, progress)
            .map_err(|e| fail(tar, e));
    };
    let mut pos = 0u64;
    let mut read = 0u64;
    for &(off, len) in &sparse.segments {
        super::walk::push_extent(out, Extent::Hole(off - pos));
        let n = chunker
            .chunk_stream(&mut tar.data().take(len), out, progress)
            .map_err(|e| fail(tar, e))?;
        read += n;
        pos = off + len;
    }
    if sparse.real_size > pos {
        super::walk::push_extent(out, Extent::Hole(sparse.real_size - pos));
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_by_extension() {
        assert_eq!(classify(b"etc.tar.zst"), (b"etc".to_vec(), StreamKind::Tar));
        assert_eq!(classify(b"home.tgz"), (b"home".to_vec(), StreamKind::Tar));
        assert_eq!(classify(b"x.tar"), (b"x".to_vec(), StreamKind::Tar));
        assert_eq!(classify(b".tar"), (b".tar".to_vec(), StreamKind::Image));
        assert_eq!(
            classify(b"disk.img"),
            (b"disk.img".to_vec(), StreamKind::Image)
        );
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert_eq!(
            components(b"./a//b/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert!(components(b"a/../../etc").is_err());
        assert_eq!(after_last_dotdot(b"../kept"), b"kept");
        assert_eq!(after_last_dotdot(b"a/../../b/c"), b"b/c");
        assert_eq!(after_last_dotdot(b"x/.."), b"");
        assert_eq!(after_last_dotdot(b"plain/path"), b"plain/path");
        assert!(has_dotdot(b"a/../b") && has_dotdot(b"..") && !has_dotdot(b"a..b/..c"));
    }
}
