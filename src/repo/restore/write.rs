//! Writing one entry's bytes and metadata: a file's content (holes kept as holes), its
//! read-back check, and owner, xattrs, mode and times applied through descriptors, never
//! by a path that could lead out of the target (see the parent module).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, Timestamps};

use super::super::format::*;
use super::super::{RepoError, Repository, Result};

/// Writes a file's content, keeping holes.
pub(super) fn write_file(repo: &Repository, f: &mut File, path: &Path, node: &Node) -> Result<()> {
    let mut pos = 0u64;
    let mut seek_needed = false;
    for e in &node.content {
        match e {
            Extent::Hole(n) => {
                pos += n;
                seek_needed = true;
            }
            Extent::Data(r) => {
                let data = repo.read_chunk(r)?;
                if seek_needed {
                    f.seek(SeekFrom::Start(pos))
                        .map_err(|e| RepoError::io(path, e))?;
                    seek_needed = false;
                }
                f.write_all(&data).map_err(|e| RepoError::io(path, e))?;
                pos += data.len() as u64;
            }
        }
    }
    if seek_needed {
        f.set_len(pos).map_err(|e| RepoError::io(path, e))?;
    }
    Ok(())
}

fn mtime_of(node: &Node) -> Timestamps {
    mtime_ns_of(node.mtime_ns)
}

pub(super) fn mtime_ns_of(ns: i64) -> Timestamps {
    let mtime = rustix::fs::Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    };
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

/// Reads a written file back and compares each piece with the backup: a chunk's bytes
/// hash to its id, a hole reads as zeros.
pub(super) fn verify_file(repo: &Repository, f: &File, path: &Path, node: &Node) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut pos = 0u64;
    let mut buf = Vec::new();
    for e in &node.content {
        let len = e.len();
        let differs = |what: &str| {
            RepoError::io(
                path,
                std::io::Error::other(format!(
                    "read back, it differs from the backup ({what} at offset {pos})"
                )),
            )
        };
        match e {
            Extent::Data(r) => {
                buf.resize(len as usize, 0);
                f.read_exact_at(&mut buf, pos)
                    .map_err(|e| RepoError::io(path, e))?;
                if repo.keys().chunk_id(&buf) != r.id {
                    return Err(differs("data"));
                }
            }
            Extent::Hole(_) => {
                // Only what the file system stored in the hole's range is read.
                let end = pos + len;
                let mut off = match rustix::fs::seek(f, rustix::fs::SeekFrom::Data(pos)) {
                    Ok(d) => d.min(end),
                    Err(_) => end,
                };
                let mut left = end - off;
                while left > 0 {
                    let n = left.min(1 << 20) as usize;
                    buf.resize(n, 0);
                    f.read_exact_at(&mut buf, off)
                        .map_err(|e| RepoError::io(path, e))?;
                    if buf.iter().any(|&b| b != 0) {
                        return Err(differs("a hole"));
                    }
                    left -= n as u64;
                    off += n as u64;
                }
            }
        }
        pos += len;
    }
    Ok(())
}

fn xattr_warning(path: &Path, name: &[u8], e: &std::io::Error) {
    eprintln!(
        "warning: {}: cannot set xattr {}: {e}",
        printable_path(path),
        printable(name)
    );
}

/// Applies owner, xattrs, mode and mtime through an open file or directory, in the order
/// that keeps each one (a chown clears set-id bits, so the mode comes after it).
pub(crate) fn apply_meta_fd(f: &File, path: &Path, node: &Node, owners: bool) -> Result<()> {
    use xattr::FileExt;
    let io = |e: rustix::io::Errno| RepoError::io(path, e.into());
    if owners {
        rustix::fs::fchown(
            f,
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
        )
        .map_err(io)?;
    }
    for (name, value) in &node.xattrs {
        if let Err(e) = f.set_xattr(OsStr::from_bytes(name), value) {
            xattr_warning(path, name, &e);
        }
    }
    rustix::fs::fchmod(f, Mode::from_raw_mode(node.mode)).map_err(io)?;
    rustix::fs::futimens(f, &mtime_of(node)).map_err(io)?;
    Ok(())
}

/// Applies the metadata of a symlink or special file `name` in `parent`, without ever
/// following the entry: owner and times with `AT_SYMLINK_NOFOLLOW`; mode and xattrs of a
/// special file through an `O_PATH | O_NOFOLLOW` descriptor of the very node (checked to
/// be what was just made), addressed as `/proc/self/fd/N`.
pub(super) fn apply_meta_at(
    parent: &File,
    name: &OsStr,
    path: &Path,
    node: &Node,
    owners: bool,
) -> Result<()> {
    let io = |e: rustix::io::Errno| RepoError::io(path, e.into());
    if owners {
        rustix::fs::chownat(
            parent,
            name,
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io)?;
    }
    if node.kind != NodeKind::Symlink {
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io)?;
        let st = rustix::fs::fstat(&fd).map_err(io)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            return Err(RepoError::io(
                path,
                std::io::Error::other("replaced by a symlink while restoring"),
            ));
        }
        let proc_path = format!("/proc/self/fd/{}", rustix::fd::AsRawFd::as_raw_fd(&fd));
        for (xname, value) in &node.xattrs {
            if let Err(e) = xattr::set(&proc_path, OsStr::from_bytes(xname), value) {
                xattr_warning(path, xname, &e);
            }
        }
        rustix::fs::chmodat(
            CWD,
            proc_path.as_str(),
            Mode::from_raw_mode(node.mode),
            AtFlags::empty(),
        )
        .map_err(io)?;
    }
    if node.kind == NodeKind::Symlink {
        // The parent by descriptor, the entry itself not followed (lsetxattr); user.*
        // xattrs are not allowed on symlinks, so failures are not worth a word.
        let at = format!("/proc/self/fd/{}", rustix::fd::AsRawFd::as_raw_fd(parent));
        let at = Path::new(&at).join(name);
        for (xname, value) in &node.xattrs {
            let _ = xattr::set(&at, OsStr::from_bytes(xname), value);
        }
    }
    rustix::fs::utimensat(parent, name, &mtime_of(node), AtFlags::SYMLINK_NOFOLLOW).map_err(io)?;
    Ok(())
}
