//! Reading the source side of a backup: file metadata into [`Node`]s, and file content
//! into chunks.
//!
//! Content is cut with FastCDC over a per-worker buffer of [`READ_BUF`] bytes; the cut
//! points of one buffer are found sequentially (fast), and the chunks of that buffer are
//! then hashed, compressed and sealed in parallel on the rayon pool, so one large file
//! keeps both cores busy while many small files are spread over the file workers.
//! Sparse files are read region by region (SEEK_DATA/SEEK_HOLE), and any chunk that is
//! all zeros becomes a hole: neither is stored or ever fetched.

use std::cell::RefCell;
use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use super::format::{ChunkKind, ChunkerParams, Extent, Node, NodeKind};
use super::pack::PackWriter;
use super::{RepoError, Result};

/// Size of the read buffer of one file worker.
pub const READ_BUF: usize = 8 * 1024 * 1024;

/// Counters a progress display can poll.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub total_files: AtomicU64,
    pub total_bytes: AtomicU64,
}

impl Progress {
    pub fn add(&self, files: u64, bytes: u64) {
        self.files.fetch_add(files, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Exclude patterns, with restic's meaning: globs over the absolute path (`*` and `?`
/// stay within one component, `**` spans any number, `[...]` is a class); a pattern not
/// starting with `/` matches at any depth (`*.log`, `node_modules`, `home/*/.cache`), so
/// it is matched as `**/PATTERN`; a trailing `/` is ignored. A directory that matches is
/// left out with everything under it.
#[derive(Clone, Debug, Default)]
pub struct Excludes {
    set: globset::GlobSet,
    patterns: Vec<String>,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes> {
        let mut b = globset::GlobSetBuilder::new();
        let mut kept = Vec::new();
        for p in patterns {
            let trimmed = p.trim();
            let trimmed = match trimmed.trim_end_matches('/') {
                "" => trimmed,
                t => t,
            };
            if trimmed.is_empty() {
                continue;
            }
            let full = if trimmed.starts_with('/') {
                trimmed.to_string()
            } else {
                format!("**/{trimmed}")
            };
            let glob = globset::GlobBuilder::new(&full)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| RepoError::BadInput(format!("exclude pattern {p:?}: {e}")))?;
            b.add(glob);
            kept.push(p.clone());
        }
        let set = b
            .build()
            .map_err(|e| RepoError::BadInput(format!("exclude patterns: {e}")))?;
        Ok(Excludes {
            set,
            patterns: kept,
        })
    }

    /// Reads patterns from a file: one a line; blank lines and lines starting with `#`
    /// are ignored, as is the whitespace around a pattern.
    pub fn read_file(path: &Path) -> Result<Vec<String>> {
        let text = std::fs::read(path).map_err(|e| RepoError::io(path, e))?;
        Ok(String::from_utf8_lossy(&text)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect())
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether an absolute path is excluded.
    pub fn is_match(&self, path: &Path) -> bool {
        self.set.is_match(path)
    }
}

/// The first bytes of a `CACHEDIR.TAG` file (https://bford.info/cachedir/).
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Whether a directory is tagged as a cache: it holds a `CACHEDIR.TAG` regular file
/// that starts with the signature (a tag without it is an ordinary file).
pub fn is_cache_dir(dir: &Path) -> bool {
    let tag = dir.join("CACHEDIR.TAG");
    match std::fs::symlink_metadata(&tag) {
        Ok(m) if m.is_file() => {}
        _ => return false,
    }
    let Ok(f) = File::open(&tag) else {
        return false;
    };
    let mut head = Vec::with_capacity(CACHEDIR_SIGNATURE.len());
    let _ = f
        .take(CACHEDIR_SIGNATURE.len() as u64)
        .read_to_end(&mut head);
    head == CACHEDIR_SIGNATURE
}

/// Builds a node (without content or subtree) from `lstat` data. When `prev` (the same
/// name in the previous point) has the same kind, inode, ctime and mtime, its xattrs and
/// symlink target are reused without asking the filesystem: changing either changes the
/// ctime.
pub fn node_from_metadata(
    name: &[u8],
    path: &Path,
    meta: &Metadata,
    prev: Option<&Node>,
) -> Result<Node> {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        NodeKind::File
    } else if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else {
        NodeKind::Socket
    };
    let ctime_ns = meta.ctime() * 1_000_000_000 + meta.ctime_nsec();
    let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
    let same = prev.filter(|p| {
        p.kind == kind && p.inode == meta.ino() && p.ctime_ns == ctime_ns && p.mtime_ns == mtime_ns
    });
    let target = if let Some(p) = same.filter(|p| p.target.is_some()) {
        p.target.clone()
    } else if kind == NodeKind::Symlink {
        Some(
            std::fs::read_link(path)
                .map_err(|e| RepoError::io(path, e))?
                .as_os_str()
                .as_bytes()
                .to_vec(),
        )
    } else {
        None
    };
    let size = match kind {
        NodeKind::File => meta.len(),
        NodeKind::Symlink => target.as_ref().map_or(0, |t| t.len() as u64),
        _ => 0,
    };
    Ok(Node {
        name: name.to_vec(),
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_ns,
        ctime_ns,
        inode: meta.ino(),
        size,
        rdev: if matches!(kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
            meta.rdev()
        } else {
            0
        },
        xattrs: match same {
            Some(p) => p.xattrs.clone(),
            None => read_xattrs(path),
        },
        target,
        hardlink: None,
        content: Vec::new(),
        subtree: None,
    })
}

/// Reads the extended attributes of a path without following symlinks. Filesystems
/// without xattr support yield none.
pub fn read_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(names) = xattr::list(path) else {
        return Vec::new();
    };
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = names
        .filter_map(|n| {
            let v = xattr::get(path, &n).ok().flatten()?;
            Some((n.as_bytes().to_vec(), v))
        })
        .collect();
    out.sort();
    out
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's zstd compressor at `level`.
pub fn with_compressor<T>(
    level: i32,
    f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> T,
) -> T {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            let comp = zstd::bulk::Compressor::new(level).expect("zstd compressor");
            *c = Some((level, comp));
        }
        f(&mut c.as_mut().expect("just set").1)
    })
}

fn is_zero(data: &[u8]) -> bool {
    let (body, tail) = data.as_chunks::<16>();
    body.iter().all(|w| *w == [0u8; 16]) && tail.iter().all(|&b| b == 0)
}

/// Appends an extent, merging adjacent holes.
pub(crate) fn push_extent(out: &mut Vec<Extent>, e: Extent) {
    if let (Extent::Hole(n), Some(Extent::Hole(prev))) = (&e, out.last_mut()) {
        *prev += n;
        return;
    }
    if !e.is_empty() {
        out.push(e);
    }
}

/// Cuts a stream into chunks and stores them. Reusable across files.
pub struct Chunker<'w> {
    writer: &'w PackWriter,
    params: ChunkerParams,
    level: i32,
    buf: Vec<u8>,
}

impl<'w> Chunker<'w> {
    pub fn new(writer: &'w PackWriter) -> Self {
        let cfg = writer.repo().config();
        Chunker {
            writer,
            params: cfg.chunker,
            level: cfg.zstd_level,
            buf: Vec::new(),
        }
    }

    fn store(&self, data: &[u8]) -> Result<Extent> {
        if is_zero(data) {
            return Ok(Extent::Hole(data.len() as u64));
        }
        with_compressor(self.level, |c| {
            self.writer.store_chunk(ChunkKind::Data, data, c)
        })
        .map(Extent::Data)
    }

    /// Reads `reader` to its end and appends its chunks to `out`. Returns bytes read.
    pub fn chunk_stream(
        &mut self,
        reader: &mut dyn Read,
        out: &mut Vec<Extent>,
        progress: &Progress,
    ) -> Result<u64> {
        if self.buf.is_empty() {
            self.buf = vec![0u8; READ_BUF];
        }
        let p = self.params;
        let mut filled = 0usize;
        let mut total = 0u64;
        let mut eof = false;
        loop {
            while !eof && filled < self.buf.len() {
                match reader.read(&mut self.buf[filled..]) {
                    Ok(0) => eof = true,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(RepoError::io("<source>", e)),
                }
            }
            if filled == 0 {
                return Ok(total);
            }
            let mut cuts: Vec<(usize, usize)> = fastcdc::v2020::FastCDC::new(
                &self.buf[..filled],
                p.min_size,
                p.avg_size,
                p.max_size,
            )
            .map(|c| (c.offset, c.length))
            .collect();
            if !eof && cuts.len() > 1 {
                cuts.pop(); // may have been cut short by the end of the buffer
            }
            let consumed = cuts.last().map_or(0, |&(o, l)| o + l);
            let buf = &self.buf;
            let extents: Vec<Extent> = if cuts.len() == 1 {
                vec![self.store(&buf[cuts[0].0..consumed])?]
            } else {
                cuts.par_iter()
                    .map(|&(o, l)| self.store(&buf[o..o + l]))
                    .collect::<Result<_>>()?
            };
            for e in extents {
                push_extent(out, e);
            }
            total += consumed as u64;
            progress.add(0, consumed as u64);
            self.buf.copy_within(consumed..filled, 0);
            filled -= consumed;
            if eof && filled == 0 {
                return Ok(total);
            }
        }
    }

    /// Chunks a regular file, skipping the holes of a sparse file. Returns the extents
    /// and the bytes read; the extents cover exactly the bytes read, which is not always
    /// the size `stat` gave: a file is read to its end (files of /proc say 0 bytes, those
    /// of /sys 4096), a sparse file up to the size it had when opened, or less if it
    /// shrank meanwhile.
    pub fn chunk_file(
        &mut self,
        file: &mut File,
        progress: &Progress,
    ) -> Result<(Vec<Extent>, u64)> {
        let meta = file.metadata().map_err(|e| RepoError::io("<source>", e))?;
        let size = meta.len();
        let mut out = Vec::new();
        let mut read = 0u64;
        let sparse = meta.blocks() * 512 < size;
        if !sparse {
            read += self.chunk_stream(file, &mut out, progress)?;
            return Ok((out, read));
        }
        let mut pos = 0u64;
        while pos < size {
            let data = match rustix::fs::seek(&*file, rustix::fs::SeekFrom::Data(pos)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => size,
                // A file that cannot seek for data (a pseudo-file with few blocks): read
                // it as a stream, to its end.
                Err(_) if pos == 0 => {
                    read += self.chunk_stream(file, &mut out, progress)?;
                    return Ok((out, read));
                }
                Err(e) => return Err(RepoError::io("<source>", e.into())),
            };
            if data > pos {
                push_extent(&mut out, Extent::Hole(data.min(size) - pos));
            }
            if data >= size {
                break;
            }
            let hole = match rustix::fs::seek(&*file, rustix::fs::SeekFrom::Hole(data)) {
                Ok(h) => h.min(size),
                Err(_) => size,
            };
            rustix::fs::seek(&*file, rustix::fs::SeekFrom::Start(data))
                .map_err(|e| RepoError::io("<source>", e.into()))?;
            let mut region = (&*file).take(hole - data);
            let n = self.chunk_stream(&mut region, &mut out, progress)?;
            read += n;
            pos = data + n;
            if n < hole - data {
                break; // the file shrank while we read it
            }
        }
        Ok((out, read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 100]));
        let mut v = vec![0u8; 100];
        v[99] = 1;
        assert!(!is_zero(&v));
        v[99] = 0;
        v[3] = 1;
        assert!(!is_zero(&v));
    }

    #[test]
    fn holes_merge() {
        let mut v = Vec::new();
        push_extent(&mut v, Extent::Hole(5));
        push_extent(&mut v, Extent::Hole(7));
        push_extent(&mut v, Extent::Hole(0));
        assert_eq!(v, vec![Extent::Hole(12)]);
    }
}
