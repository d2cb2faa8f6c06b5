//! Backups from a stream: a snapshot file arriving through a pipe or the mount's
//! `incoming/` directory.
//!
//! A tar archive (ustar, pax or GNU; plain, zstd or gzip, recognised by its first bytes)
//! is expanded into a tree backup carrying the metadata of its headers: modes, owners,
//! mtimes (with nanoseconds from pax headers), symlinks, hardlinks, device nodes, fifos,
//! xattrs (`SCHILY.xattr.*` pax records), long names, GNU sparse members. Any other
//! stream is an image backup. The stream is read once, front to back, and chunked as it
//! arrives: nothing but the tree's metadata is held in memory. A malformed archive is an
//! error and the point is not committed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

use super::format::*;
use super::pack::PackWriter;
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

fn malformed(e: impl std::fmt::Display) -> RepoError {
    RepoError::Invalid(format!("malformed archive: {e}"))
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

/// Splits an archive path into safe components; `..` anywhere is refused.
fn components(path: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(malformed(format!(
                    "unsafe member path {:?}",
                    String::from_utf8_lossy(path)
                )));
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Reads a tar stream into a tree backup; returns its root directory node (to be named
/// and stored by the caller).
pub fn tar_backup(
    writer: &PackWriter,
    reader: Box<dyn Read + Send + '_>,
    progress: &Progress,
) -> Result<(Node, BackupStats)> {
    let mut archive = tar::Archive::new(decompressed(reader)?);
    let mut chunker = Chunker::new(writer);
    let mut stats = BackupStats::default();
    // Every member by its full path (components joined with '/'; "" is the root).
    let mut nodes: HashMap<Vec<u8>, Node> = HashMap::new();
    let mut groups: HashMap<Vec<u8>, u64> = HashMap::new();
    let now = now_ns();
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        let pax = PaxInfo::read(&mut entry)?;
        let raw_path = match &pax.sparse_name {
            Some(n) => n.clone(),
            None => entry.path_bytes().into_owned(),
        };
        let parts = components(&raw_path)?;
        let path = parts.join(&b'/');
        let header = entry.header().clone();
        let et = header.entry_type();
        let leaf = parts.last().cloned().unwrap_or_default();
        let kind = match et {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                NodeKind::File
            }
            tar::EntryType::Directory => NodeKind::Dir,
            tar::EntryType::Symlink => NodeKind::Symlink,
            tar::EntryType::Char => NodeKind::CharDevice,
            tar::EntryType::Block => NodeKind::BlockDevice,
            tar::EntryType::Fifo => NodeKind::Fifo,
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| malformed("hard link without a target"))?;
                let target = components(&target)?.join(&b'/');
                let Some(first) = nodes.get(&target).cloned() else {
                    return Err(malformed(format!(
                        "hard link {:?} to {:?}, which is not earlier in the archive",
                        String::from_utf8_lossy(&path),
                        String::from_utf8_lossy(&target)
                    )));
                };
                let next = groups.len() as u64;
                let g = *groups.entry(target.clone()).or_insert(next);
                groups.insert(path.clone(), g);
                let mut node = first;
                node.name = leaf;
                stats.files += 1;
                stats.bytes += node.size;
                nodes.insert(path, node);
                continue;
            }
            _ => continue, // pax/GNU meta entries are merged by the tar crate
        };
        let mut node = Node::empty(leaf, kind);
        node.mode = header.mode().map_err(malformed)? & 0o7777;
        node.uid = header.uid().map_err(malformed)? as u32;
        node.gid = header.gid().map_err(malformed)? as u32;
        node.mtime_ns = header.mtime().map_err(malformed)? as i64 * 1_000_000_000;
        node.ctime_ns = now;
        node.xattrs = pax.xattrs;
        if let Some(ns) = pax.mtime_ns {
            node.mtime_ns = ns;
        }
        match kind {
            NodeKind::File => {
                let mut extents = Vec::new();
                let read = match pax.sparse {
                    Some(sparse) => {
                        read_pax_sparse(&mut chunker, &mut entry, sparse, &mut extents, progress)?
                    }
                    None => chunker.chunk_stream(&mut entry, &mut extents, progress)?,
                };
                node.size = extents.iter().map(Extent::len).sum();
                node.content = extents;
                stats.files += 1;
                stats.bytes += node.size;
                stats.bytes_read += read;
                progress.add(1, 0);
            }
            NodeKind::Symlink => {
                let t = entry
                    .link_name_bytes()
                    .ok_or_else(|| malformed("symlink without a target"))?;
                node.size = t.len() as u64;
                node.target = Some(t.into_owned());
                stats.other += 1;
            }
            NodeKind::CharDevice | NodeKind::BlockDevice => {
                let major = header.device_major().map_err(malformed)?.unwrap_or(0);
                let minor = header.device_minor().map_err(malformed)?.unwrap_or(0);
                node.rdev = rustix::fs::makedev(major, minor);
                stats.other += 1;
            }
            NodeKind::Dir => {}
            _ => stats.other += 1,
        }
        nodes.insert(path, node);
    }
    // Hard link groups: count members, mark each.
    let mut counts: HashMap<u64, u32> = HashMap::new();
    for g in groups.values() {
        *counts.entry(*g).or_default() += 1;
    }
    for (path, g) in &groups {
        if let Some(n) = nodes.get_mut(path) {
            n.hardlink = Some((*g, counts[g]));
        }
    }
    // Directories the archive implies but does not list.
    let paths: Vec<Vec<u8>> = nodes.keys().cloned().collect();
    for p in paths {
        let mut cur = p.as_slice();
        while let Some(i) = cur.iter().rposition(|&b| b == b'/') {
            cur = &cur[..i];
            if nodes.contains_key(cur) {
                break;
            }
            let leaf = cur
                .rsplit(|&b| b == b'/')
                .next()
                .unwrap_or_default()
                .to_vec();
            let mut d = Node::empty(leaf, NodeKind::Dir);
            d.mtime_ns = now;
            nodes.insert(cur.to_vec(), d);
        }
    }
    let root = nodes.entry(Vec::new()).or_insert_with(|| {
        let mut d = Node::empty(Vec::new(), NodeKind::Dir);
        d.mtime_ns = now;
        d
    });
    if root.kind != NodeKind::Dir {
        return Err(malformed("the archive's root is not a directory"));
    }
    // Encode directories deepest first.
    let mut children: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
    for p in nodes.keys().filter(|p| !p.is_empty()) {
        let parent = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => p[..i].to_vec(),
            None => Vec::new(),
        };
        children.entry(parent).or_default().push(p.clone());
    }
    let mut dirs: Vec<Vec<u8>> = nodes
        .iter()
        .filter(|(_, n)| n.kind == NodeKind::Dir)
        .map(|(p, _)| p.clone())
        .collect();
    let depth = |p: &[u8]| {
        if p.is_empty() {
            0
        } else {
            1 + p.iter().filter(|&&b| b == b'/').count()
        }
    };
    dirs.sort_by_key(|p| std::cmp::Reverse(depth(p)));
    let level = writer.repo().config().zstd_level;
    for d in dirs {
        let mut tree = Tree::default();
        for c in children.remove(&d).unwrap_or_default() {
            if let Some(n) = nodes.remove(&c) {
                tree.nodes.push(n);
            }
        }
        tree.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        stats.dirs += 1;
        let data = encode_object(&tree);
        let r = with_compressor(level, |c| writer.store_chunk(ChunkKind::Tree, &data, c))?;
        nodes.get_mut(&d).expect("directory node").subtree = Some(r);
    }
    let root = nodes.remove(&Vec::new()).expect("root node");
    Ok((root, stats))
}

/// What the pax records of one member say that we use.
#[derive(Default)]
struct PaxInfo {
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    mtime_ns: Option<i64>,
    /// GNU pax sparse formats: the real name of the member.
    sparse_name: Option<Vec<u8>>,
    sparse: Option<PaxSparse>,
}

/// A GNU sparse member in a pax archive: format 1.0 (the map at the start of the data)
/// or 0.1 (the map in `GNU.sparse.map`).
struct PaxSparse {
    real_size: u64,
    map: Option<Vec<(u64, u64)>>,
}

impl PaxInfo {
    fn read<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<PaxInfo> {
        let mut info = PaxInfo::default();
        let Some(exts) = entry.pax_extensions().map_err(malformed)? else {
            return Ok(info);
        };
        let (mut major, mut real_size, mut map) = (None, None, None);
        for ext in exts {
            let ext = ext.map_err(malformed)?;
            let (key, value) = (ext.key_bytes(), ext.value_bytes());
            let text = || std::str::from_utf8(value).unwrap_or("").trim();
            if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                info.xattrs.push((x.to_vec(), value.to_vec()));
            } else if key == b"mtime" {
                info.mtime_ns = parse_pax_time(value);
            } else if key == b"GNU.sparse.name" {
                info.sparse_name = Some(value.to_vec());
            } else if key == b"GNU.sparse.major" {
                major = Some(text().to_string());
            } else if key == b"GNU.sparse.realsize" || key == b"GNU.sparse.size" {
                real_size = text().parse::<u64>().ok();
            } else if key == b"GNU.sparse.map" {
                let nums: Option<Vec<u64>> = text().split(',').map(|n| n.parse().ok()).collect();
                let nums = nums.ok_or_else(|| malformed("bad GNU.sparse.map"))?;
                map = Some(
                    nums.chunks(2)
                        .map(|p| (p[0], *p.get(1).unwrap_or(&0)))
                        .collect(),
                );
            }
        }
        info.xattrs.sort();
        if let Some(real_size) = real_size {
            info.sparse = match (major.as_deref(), map) {
                (Some("1"), _) => Some(PaxSparse {
                    real_size,
                    map: None,
                }),
                (_, Some(map)) => Some(PaxSparse {
                    real_size,
                    map: Some(map),
                }),
                _ => None,
            };
        }
        Ok(info)
    }
}

/// Reads a pax sparse member's data segments into extents with holes between them.
fn read_pax_sparse<R: Read>(
    chunker: &mut Chunker<'_>,
    entry: &mut tar::Entry<'_, R>,
    sparse: PaxSparse,
    out: &mut Vec<Extent>,
    progress: &Progress,
) -> Result<u64> {
    let map = match sparse.map {
        Some(m) => m,
        None => {
            // Format 1.0: decimal numbers, one per line, padded to a 512-byte block.
            let mut consumed = 0u64;
            let mut line = |entry: &mut tar::Entry<'_, R>| -> Result<u64> {
                let mut digits = Vec::new();
                loop {
                    let mut b = [0u8; 1];
                    entry.read_exact(&mut b).map_err(malformed)?;
                    consumed += 1;
                    if b[0] == b'\n' {
                        break;
                    }
                    if digits.len() > 20 {
                        return Err(malformed("bad sparse map"));
                    }
                    digits.push(b[0]);
                }
                std::str::from_utf8(&digits)
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .ok_or_else(|| malformed("bad sparse map"))
            };
            let n = line(entry)?;
            if n > 1 << 24 {
                return Err(malformed("sparse map too large"));
            }
            let mut map = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let off = line(entry)?;
                let len = line(entry)?;
                map.push((off, len));
            }
            let pad = (512 - consumed % 512) % 512;
            std::io::copy(&mut entry.take(pad), &mut std::io::sink()).map_err(malformed)?;
            map
        }
    };
    let mut pos = 0u64;
    let mut read = 0u64;
    for (off, len) in map {
        if off < pos {
            return Err(malformed("overlapping sparse map"));
        }
        super::walk::push_extent(out, Extent::Hole(off - pos));
        let n = chunker.chunk_stream(&mut entry.take(len), out, progress)?;
        if n != len {
            return Err(malformed("sparse member shorter than its map"));
        }
        read += n;
        pos = off + len;
    }
    if sparse.real_size > pos {
        super::walk::push_extent(out, Extent::Hole(sparse.real_size - pos));
    }
    Ok(read)
}

/// Parses a pax time ("1700000000.123456789") into nanoseconds.
fn parse_pax_time(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut ns = 0i64;
    for (i, c) in frac.chars().take(9).enumerate() {
        ns += c.to_digit(10)? as i64 * 10i64.pow(8 - i as u32);
    }
    Some(if secs < 0 {
        secs * 1_000_000_000 - ns
    } else {
        secs * 1_000_000_000 + ns
    })
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
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"12.5"), Some(12_500_000_000));
        assert_eq!(
            parse_pax_time(b"1700000000.123456789"),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(parse_pax_time(b"7"), Some(7_000_000_000));
    }
}
