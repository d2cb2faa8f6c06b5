//! One file of a backup, answered from its node: the data path of a read (extents to
//! chunks, or to the frames of framed chunks, through the chunk cache), SEEK_DATA/SEEK_HOLE, and extended attributes. No
//! state of its own: everything comes from the node, which never changes.

use crate::cache::ChunkCache;
use crate::repo::RepoError;
use crate::repo::format::Extent;

use super::inodes::{Inode, InodeTable, TreeNode};
use super::reply::{FsError, ReadData, Result, XattrReply};

/// Reads `size` bytes at `offset` of file `t` (fewer at its end): for each extent that
/// covers the range, a hole is zeros and a chunk comes from the cache. A read that lies
/// in one chunk is answered from the cached chunk, uncopied. A failed chunk is logged
/// here, once, with the file's path and the chunk.
pub fn read(
    cache: &ChunkCache,
    inodes: &InodeTable,
    inode: &Inode,
    t: &TreeNode,
    offset: u64,
    size: u32,
) -> Result<ReadData> {
    let total = t.node.size;
    if offset >= total || size == 0 {
        return Ok(ReadData::Owned(Vec::new()));
    }
    let end = offset.saturating_add(size as u64).min(total);
    let offs = t.offsets();
    let mut out = Vec::with_capacity((end - offset) as usize);
    let mut i = t.extent_at(offset);
    let mut pos = offset;
    while pos < end && i < t.node.content.len() {
        let (start, stop) = (offs[i], offs[i + 1]);
        let take_end = stop.min(end);
        match &t.node.content[i] {
            Extent::Hole(_) => out.resize(out.len() + (take_end - pos) as usize, 0),
            Extent::Data(r) => {
                let a = pos - start;
                let b = take_end - start;
                // A read from the start of a file is most likely the first of a
                // sequential reader: it gets the whole chunk. Any other reads only the
                // frames it needs, when the chunk is framed and not at hand.
                let piece = match offset {
                    0 => cache.get(r).map(|c| crate::cache::Piece {
                        buf: c,
                        at: a as usize,
                    }),
                    _ => cache.get_range(r, a, b),
                };
                let piece = piece.inspect_err(|e| {
                    tracing::error!(
                        file = %inodes.path(inode.ino),
                        ino = inode.ino,
                        chunk = %r.id,
                        pack = %r.pack.to_hex(),
                        "read failed at offset {pos}: {e}"
                    );
                })?;
                let range = piece.at..piece.at + (b - a) as usize;
                let slice = piece.buf.get(range.clone()).ok_or_else(|| {
                    FsError::from(RepoError::damaged(
                        format!("chunk {}", r.id),
                        "shorter than its recorded length",
                    ))
                })?;
                if pos == offset && take_end == end {
                    // The whole read lies in this chunk: served from the cache's copy.
                    return Ok(ReadData::Shared(piece.buf, range));
                }
                out.extend_from_slice(slice);
            }
        }
        pos = take_end;
        i += 1;
    }
    // Content shorter than the recorded size reads as zeros (never happens for a
    // consistent backup; keeps reads total).
    out.resize((end - offset) as usize, 0);
    Ok(ReadData::Owned(out))
}

/// `lseek` with SEEK_DATA or SEEK_HOLE, answered from the extent list.
pub fn seek(t: &TreeNode, offset: i64, whence: i32) -> Result<i64> {
    let want_data = match whence {
        libc::SEEK_DATA => true,
        libc::SEEK_HOLE => false,
        _ => return Err(FsError::Invalid),
    };
    let size = t.node.size;
    let off = u64::try_from(offset).map_err(|_| FsError::NoData)?;
    if off >= size {
        return Err(FsError::NoData);
    }
    let offs = t.offsets();
    let first = t.extent_at(off);
    let found = t.node.content[first..]
        .iter()
        .position(|e| matches!(e, Extent::Data(_)) == want_data && !e.is_empty())
        .map(|k| offs[first + k].max(off));
    match (found, want_data) {
        (Some(pos), _) => Ok(pos as i64),
        (None, true) => Err(FsError::NoData),
        // The implicit hole at the end of the file.
        (None, false) => Ok(size as i64),
    }
}

/// The attribute that names a node's content: equal for equal content in any point,
/// computed from the chunk list (no data read). Answered when asked by name, never
/// listed, so `cp -a` and `rsync -X` do not copy it.
pub const CONTENT_XATTR: &[u8] = b"user.vaultfs.content";

/// The value of extended attribute `name` (sorted as recorded; a linear search covers
/// backups whose names were not sorted), or of [`CONTENT_XATTR`].
pub fn getxattr(t: &TreeNode, name: &[u8], size: u32) -> Result<XattrReply> {
    let x = &t.node.xattrs;
    let value = x
        .binary_search_by(|(n, _)| n.as_slice().cmp(name))
        .map(|i| x[i].1.clone())
        .or_else(|_| {
            x.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or(FsError::NoXattr)
        })
        .or_else(|e| match name == CONTENT_XATTR {
            true => Ok(crate::repo::history::content_id(&t.node).into_bytes()),
            false => Err(e),
        })?;
    sized(value, size)
}

/// The names of the extended attributes, each ended by a NUL.
pub fn listxattr(t: &TreeNode, size: u32) -> Result<XattrReply> {
    let mut out = Vec::new();
    for (n, _) in &t.node.xattrs {
        out.extend_from_slice(n);
        out.push(0);
    }
    sized(out, size)
}

/// A getxattr/listxattr answer: the size when asked with 0, ERANGE when the buffer is
/// too small.
pub fn sized(data: Vec<u8>, size: u32) -> Result<XattrReply> {
    if size == 0 {
        Ok(XattrReply::Size(data.len() as u32))
    } else if data.len() > size as usize {
        Err(FsError::Range)
    } else {
        Ok(XattrReply::Data(data))
    }
}
