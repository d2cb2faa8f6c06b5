//! Writing a path of a point to a stream: a file as its bytes, a directory as a tar
//! archive that GNU tar extracts with every attribute (pax format: long and non-UTF-8
//! names, nanosecond mtimes, owners, xattrs as `SCHILY.xattr.*` records, hard links as
//! link members, sparse files in GNU's pax sparse format 1.0 so holes cost nothing).
//!
//! Members are named as `tar -C parent name` names them: starting with the path's last
//! component. Memory stays bounded: one chunk of content at a time, one tree per level.
//! The tar crate writes the headers (checksums, padding); the pax records and the sparse
//! map are written here.

use std::collections::HashMap;
use std::io::{self, Read, Write};

use tar::{EntryType, Header};

use super::format::*;
use super::{RepoError, Repository, Result};

const BLOCK: usize = 512;

/// Writes `node` (named `name` in the archive) and everything under it as a tar stream.
pub fn tar(repo: &Repository, node: &Node, name: &[u8], out: &mut dyn Write) -> Result<DumpStats> {
    let mut w = TarWriter {
        repo,
        out: tar::Builder::new(out),
        links: HashMap::new(),
        stats: DumpStats::default(),
    };
    w.entry(name.to_vec(), node)?;
    w.out.finish().map_err(write_err)?;
    Ok(w.stats)
}

/// Writes `node` (named `name`) and everything under it as a zip stream: directories,
/// files (deflated, with their mode and mtime to the two seconds zip keeps), symlinks;
/// a hard link is stored again under each name, and fifos, devices and sockets, which
/// zip cannot hold, are left out with a warning. Names that are not UTF-8 are stored
/// with U+FFFD in place of what is not.
pub fn zip(repo: &Repository, node: &Node, name: &[u8], out: &mut dyn Write) -> Result<DumpStats> {
    let mut z = zip::ZipWriter::new_stream(out);
    let mut stats = DumpStats::default();
    let mut stack = vec![(name.to_vec(), node.clone())];
    let zerr = |e: zip::result::ZipError| RepoError::io("standard output", io::Error::other(e));
    while let Some((path, n)) = stack.pop() {
        let name = String::from_utf8_lossy(&path).into_owned();
        let mut opts = zip::write::SimpleFileOptions::default()
            .unix_permissions(n.mode & 0o7777)
            .large_file(n.size >= u32::MAX as u64);
        if let Some(t) = zip_time(n.mtime_ns) {
            opts = opts.last_modified_time(t);
        }
        stats.members += 1;
        match n.kind {
            NodeKind::Dir => {
                z.add_directory(format!("{name}/"), opts).map_err(zerr)?;
                if let Some(sub) = &n.subtree {
                    let tree = repo.load_tree(sub)?;
                    for c in tree.nodes.into_iter().rev() {
                        let mut p = path.clone();
                        p.push(b'/');
                        p.extend_from_slice(&c.name);
                        stack.push((p, c));
                    }
                }
            }
            NodeKind::File => {
                let opts = opts.compression_method(zip::CompressionMethod::Deflated);
                z.start_file(name, opts).map_err(zerr)?;
                let mut content = Content::new(repo, &n, false);
                let r = io::copy(&mut content, &mut z);
                if let Some(e) = content.error.take() {
                    return Err(e);
                }
                r.map_err(write_err)?;
                stats.bytes += n.size;
            }
            NodeKind::Symlink => {
                let target =
                    String::from_utf8_lossy(n.target.as_deref().unwrap_or_default()).into_owned();
                z.add_symlink(name, target, opts).map_err(zerr)?;
            }
            _ => {
                stats.members -= 1;
                eprintln!(
                    "warning: {}: a zip cannot hold a {:?}: left out",
                    printable(&path),
                    n.kind
                );
            }
        }
    }
    z.finish().map_err(zerr)?;
    Ok(stats)
}

/// A zip time (local fields; written as UTC), if the time is in zip's range.
fn zip_time(ns: i64) -> Option<zip::DateTime> {
    use chrono::{Datelike, Timelike};
    let t = chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), 0)?;
    zip::DateTime::from_date_and_time(
        u16::try_from(t.year()).ok()?,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    )
    .ok()
}

/// Writes a file node's bytes (holes as zeros).
pub fn file(repo: &Repository, node: &Node, out: &mut dyn Write) -> Result<()> {
    let mut r = Content::new(repo, node, false);
    io::copy(&mut r, out).map_err(|e| r.error.take().unwrap_or_else(|| write_err(e)))?;
    Ok(())
}

/// What a dump wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DumpStats {
    pub members: u64,
    pub bytes: u64,
}

fn write_err(e: io::Error) -> RepoError {
    RepoError::io("standard output", e)
}

struct TarWriter<'a, W: Write> {
    repo: &'a Repository,
    out: tar::Builder<W>,
    /// Hard-link group -> the first member's name.
    links: HashMap<u64, Vec<u8>>,
    stats: DumpStats,
}

impl<W: Write> TarWriter<'_, W> {
    fn entry(&mut self, path: Vec<u8>, n: &Node) -> Result<()> {
        self.stats.members += 1;
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut h = Header::new_ustar();
        h.set_mode(n.mode & 0o7777);
        h.set_uid(u64::from(n.uid));
        h.set_gid(u64::from(n.gid));
        h.set_mtime(n.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
        pax.push((b"mtime".to_vec(), pax_time(n.mtime_ns).into_bytes()));
        for (k, v) in &n.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax.push((key, v.clone()));
        }
        let mut member_name = path.clone();
        let mut size = 0u64;
        let mut sparse: Option<Vec<u8>> = None;
        match n.kind {
            NodeKind::Dir => {
                h.set_entry_type(EntryType::Directory);
                member_name.push(b'/');
            }
            NodeKind::Symlink => {
                h.set_entry_type(EntryType::Symlink);
                pax.push((b"linkpath".to_vec(), n.target.clone().unwrap_or_default()));
            }
            NodeKind::File => {
                let first = n.hardlink.and_then(|(g, _)| self.links.get(&g).cloned());
                if let Some(first) = first {
                    h.set_entry_type(EntryType::Link);
                    pax.push((b"linkpath".to_vec(), first));
                } else {
                    if let Some((g, _)) = n.hardlink {
                        self.links.insert(g, path.clone());
                    }
                    h.set_entry_type(EntryType::Regular);
                    size = n.size;
                    if n.content.iter().any(|e| matches!(e, Extent::Hole(_))) {
                        let map = sparse_map(n);
                        size = map.len() as u64 + data_bytes(n);
                        pax.push((b"GNU.sparse.major".to_vec(), b"1".to_vec()));
                        pax.push((b"GNU.sparse.minor".to_vec(), b"0".to_vec()));
                        pax.push((b"GNU.sparse.name".to_vec(), path.clone()));
                        pax.push((
                            b"GNU.sparse.realsize".to_vec(),
                            n.size.to_string().into_bytes(),
                        ));
                        // GNU tar's name for the member that carries a sparse file.
                        let (dir, base) = match path.iter().rposition(|&b| b == b'/') {
                            Some(i) => (&path[..=i], &path[i + 1..]),
                            None => (&b""[..], &path[..]),
                        };
                        member_name = [dir, b"GNUSparseFile.0/", base].concat();
                        sparse = Some(map);
                    }
                }
            }
            NodeKind::Fifo => h.set_entry_type(EntryType::Fifo),
            NodeKind::CharDevice | NodeKind::BlockDevice => {
                h.set_entry_type(if n.kind == NodeKind::CharDevice {
                    EntryType::Char
                } else {
                    EntryType::Block
                });
                let (major, minor) = (libc::major(n.rdev as _), libc::minor(n.rdev as _));
                h.set_device_major(major).map_err(write_err)?;
                h.set_device_minor(minor).map_err(write_err)?;
            }
            // Sockets cannot be archived (GNU tar skips them too).
            NodeKind::Socket => {
                self.stats.members -= 1;
                return Ok(());
            }
        }
        if member_name.len() > 100 || std::str::from_utf8(&member_name).is_err() {
            pax.push((b"path".to_vec(), member_name.clone()));
        }
        set_name(&mut h, &member_name);
        if let Some((_, target)) = pax.iter().find(|(k, _)| k == b"linkpath")
            && target.len() <= 100
            && std::str::from_utf8(target).is_ok()
        {
            let t = target.clone();
            h.as_old_mut().linkname[..t.len()].copy_from_slice(&t);
            pax.retain(|(k, _)| k != b"linkpath");
        }
        h.set_size(size);
        h.set_cksum();
        if !pax.is_empty() {
            let records = pax_records(&pax);
            let mut x = Header::new_ustar();
            x.set_entry_type(EntryType::XHeader);
            let mut xname = b"PaxHeaders/".to_vec();
            xname.extend_from_slice(&path[path.len().saturating_sub(80)..]);
            set_name(&mut x, &xname);
            x.set_mode(0o644);
            x.set_size(records.len() as u64);
            x.set_cksum();
            self.out.append(&x, records.as_slice()).map_err(write_err)?;
        }
        match (n.kind, size) {
            (NodeKind::File, s) if s > 0 => {
                let mut content = Content::new(self.repo, n, sparse.is_some());
                let data = sparse.unwrap_or_default();
                let mut reader = (&data[..]).chain(&mut content);
                let r = self.out.append(&h, &mut reader);
                if let Some(e) = content.error.take() {
                    return Err(e);
                }
                r.map_err(write_err)?;
                self.stats.bytes += n.size;
            }
            _ => self.out.append(&h, io::empty()).map_err(write_err)?,
        }
        if let (NodeKind::Dir, Some(sub)) = (n.kind, &n.subtree) {
            let tree = self.repo.load_tree(sub)?;
            for c in &tree.nodes {
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(&c.name);
                self.entry(p, c)?;
            }
        }
        Ok(())
    }
}

/// Puts a name (cut to 100 bytes; the full one goes in a pax record) in a header.
fn set_name(h: &mut Header, name: &[u8]) {
    let field = &mut h.as_old_mut().name;
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name[..n]);
}

/// `sec.nsec` as pax wants it.
fn pax_time(ns: i64) -> String {
    let (s, f) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
    format!("{s}.{f:09}")
}

/// Pax records: `LEN key=value\n`, LEN counting itself.
fn pax_records(recs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in recs {
        let body = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len.to_string().len() + body != len {
            len = len.to_string().len() + body;
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// The data segments of a file: (offset, length) of each run of data.
fn segments(n: &Node) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut pos = 0u64;
    for e in &n.content {
        let len = e.len();
        if let Extent::Data(_) = e {
            match out.last_mut() {
                Some((off, l)) if *off + *l == pos => *l += len,
                _ => out.push((pos, len)),
            }
        }
        pos += len;
    }
    // GNU tar ends a map with the file's end (an empty segment when it ends in a hole).
    if out.last().is_none_or(|(o, l)| o + l < n.size) {
        out.push((n.size, 0));
    }
    out
}

fn data_bytes(n: &Node) -> u64 {
    segments(n).iter().map(|(_, l)| l).sum()
}

/// The sparse 1.0 map: count, then offset and length per line, padded to a block.
fn sparse_map(n: &Node) -> Vec<u8> {
    let segs = segments(n);
    let mut m = format!("{}\n", segs.len());
    for (o, l) in segs {
        m += &format!("{o}\n{l}\n");
    }
    let mut m = m.into_bytes();
    m.resize(m.len().div_ceil(BLOCK) * BLOCK, 0);
    m
}

/// A file's content as a reader: chunk by chunk; holes as zeros, or skipped (sparse).
struct Content<'a> {
    repo: &'a Repository,
    extents: std::slice::Iter<'a, Extent>,
    skip_holes: bool,
    buf: Vec<u8>,
    pos: usize,
    zeros: u64,
    /// A repository error, kept to be reported as itself rather than as an I/O error.
    error: Option<RepoError>,
}

impl<'a> Content<'a> {
    fn new(repo: &'a Repository, n: &'a Node, skip_holes: bool) -> Self {
        Content {
            repo,
            extents: n.content.iter(),
            skip_holes,
            buf: Vec::new(),
            pos: 0,
            zeros: 0,
            error: None,
        }
    }
}

impl Read for Content<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.zeros > 0 {
                let n = (self.zeros.min(out.len() as u64)) as usize;
                out[..n].fill(0);
                self.zeros -= n as u64;
                return Ok(n);
            }
            if self.pos < self.buf.len() {
                let n = (self.buf.len() - self.pos).min(out.len());
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match self.extents.next() {
                None => return Ok(0),
                Some(Extent::Hole(n)) => {
                    if !self.skip_holes {
                        self.zeros = *n;
                    }
                }
                Some(Extent::Data(r)) => match self.repo.read_chunk(r) {
                    Ok(d) => {
                        self.buf = d;
                        self.pos = 0;
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        self.error = Some(e);
                        return Err(io::Error::other(msg));
                    }
                },
            }
        }
    }
}
