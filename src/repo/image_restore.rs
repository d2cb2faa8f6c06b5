//! Restoring an image backup onto a block device or a regular file
//! (`vaultfs restore VAULT POINT --image NAME --to DEV|FILE`).
//!
//! The target:
//! - a block device (a symlink to one, as `/dev/disk/by-id/...` are, is followed): opened
//!   with `O_EXCL`, so a device the system uses (a mounted file system, an active swap
//!   or RAID member) is refused by the kernel (EBUSY). Its size is where `lseek(SEEK_END)`
//!   lands, what `BLKGETSIZE64` tells (no ioctl: the crate forbids `unsafe`). It must
//!   hold at least the image; bytes past the image are not touched.
//! - an existing regular file, treated as a disk: at least the image's size, written in
//!   place, its length kept; an empty one is a fresh target like a new file.
//! - a missing regular file: created under a temporary name beside it
//!   (`.vaultfs-restore-<16 hex digits>`, as tree restores name theirs), its length set
//!   to the image's at once, so it is sparse where the image has holes; once written,
//!   given the image's mode, owner and mtime and fsynced, it is renamed to its name
//!   (never over a file that appeared meanwhile) and the directory fsynced. A failure
//!   removes the temporary; a kill leaves it, never a short file under the name.
//! - anything else (a directory, a character device, a fifo) is refused.
//!
//! Every check happens before the first write: a target that is too small is refused
//! with both sizes, and nothing is written.
//!
//! Only the image's data extents are written. Its holes are skipped: on a fresh target
//! they read as zeros already; on an existing one they keep what was there unless
//! `zero_holes`, which zeroes them: on a regular file by punching a hole
//! (`fallocate(PUNCH_HOLE | KEEP_SIZE)`, which stays sparse), on a device with
//! `fallocate(ZERO_RANGE | KEEP_SIZE)` (the kernel's `BLKZEROOUT`, offloaded where the
//! device can) over the page-aligned part and zeros written around it; where the file
//! system or device cannot, zeros are written. Chunks are fetched and written by
//! several workers at once (each `pwrite`s at its own offset), the target is fsynced at
//! the end, and `verify` then reads every data extent back against its chunk id (and
//! holes, where they were made zero, against zeros).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rustix::fs::FallocateFlags;

use super::format::*;
use super::walk::Progress;
use super::{RepoError, Repository, Result};
use crate::sync::lock;

/// How an image is restored.
pub struct ImageRestoreOptions {
    pub workers: usize,
    /// Bytes written (and holes passed) so far; files: 1 once done.
    pub progress: Arc<Progress>,
    /// Write zeros over the image's holes on a target that is not fresh.
    pub zero_holes: bool,
    /// Read the target back against the image once written.
    pub verify: bool,
    /// Restore the image file's owner on a new target (defaults to "when root").
    pub owners: bool,
}

impl Default for ImageRestoreOptions {
    fn default() -> Self {
        ImageRestoreOptions {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()) + 1,
            progress: Arc::default(),
            zero_holes: false,
            verify: false,
            owners: rustix::process::geteuid().is_root(),
        }
    }
}

/// What the target was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    BlockDevice,
    /// An existing regular file.
    File,
    /// A regular file created by the restore.
    NewFile,
}

impl TargetKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetKind::BlockDevice => "block_device",
            TargetKind::File => "file",
            TargetKind::NewFile => "new_file",
        }
    }
}

/// What an image restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRestoreStats {
    pub target_kind: TargetKind,
    /// The target's size before the restore (0 for a new file).
    pub target_size: u64,
    /// The image's size.
    pub size: u64,
    /// Bytes of data written.
    pub data_bytes: u64,
    /// Bytes of holes in the image.
    pub hole_bytes: u64,
    /// Of those, bytes made zero on the target (`zero_holes` on a target that was not
    /// fresh); the others were skipped.
    pub zeroed_bytes: u64,
    /// Whether the target was fresh (new or empty): its holes read as zeros untouched.
    pub fresh: bool,
}

/// The image backup `name` of `manifest`, or an error naming the point's images.
pub fn find_image<'a>(manifest: &'a Manifest, name: &[u8]) -> Result<&'a BackupEntry> {
    if let Some(b) = manifest.backups.iter().find(|b| b.name == name) {
        if b.kind == BackupKind::Image {
            return Ok(b);
        }
        return Err(RepoError::BadInput(format!(
            "{} in {}/{} is a tree backup, not an image: restore it to a directory",
            printable(name),
            manifest.vault,
            manifest.name
        )));
    }
    let images: Vec<String> = manifest
        .backups
        .iter()
        .filter(|b| b.kind == BackupKind::Image)
        .map(|b| printable(&b.name))
        .collect();
    Err(RepoError::BadInput(format!(
        "point {}/{} has no image backup {} (its images: {})",
        manifest.vault,
        manifest.name,
        printable(name),
        if images.is_empty() {
            "none".to_string()
        } else {
            images.join(", ")
        }
    )))
}

fn size_text(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{n} bytes ({:.1} MiB)", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{n} bytes")
    }
}

/// The target, open for writing, checked against the image's `size` (see the module
/// documentation).
fn open_target(to: &Path, tmp: &Path, size: u64, verify: bool) -> Result<(File, TargetKind, u64)> {
    let io = |e: std::io::Error| RepoError::io(to, e);
    let mut o = OpenOptions::new();
    o.write(true).read(verify).custom_flags(libc::O_CLOEXEC);
    let (file, kind) = match std::fs::metadata(to) {
        Ok(m) if m.file_type().is_block_device() => {
            // O_EXCL on a block device: refused while the system uses it.
            let f = o.custom_flags(libc::O_EXCL | libc::O_CLOEXEC).open(to);
            let f = f.map_err(|e| match e.raw_os_error() {
                Some(libc::EBUSY) => RepoError::BadInput(format!(
                    "{} is in use (mounted, or held by another program): nothing was written",
                    printable_path(to)
                )),
                _ => io(e),
            })?;
            (f, TargetKind::BlockDevice)
        }
        Ok(m) if m.file_type().is_file() => (o.open(to).map_err(io)?, TargetKind::File),
        Ok(_) => {
            return Err(RepoError::BadInput(format!(
                "{} is neither a block device nor a regular file: an image restores onto one of those",
                printable_path(to)
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Written under a temporary name beside it, renamed once whole.
            let f = o.create_new(true).mode(0o600).open(tmp).map_err(io)?;
            (f, TargetKind::NewFile)
        }
        Err(e) => return Err(io(e)),
    };
    let have = match kind {
        TargetKind::NewFile => 0,
        _ => rustix::fs::seek(&file, rustix::fs::SeekFrom::End(0)).map_err(|e| io(e.into()))?,
    };
    let fresh = kind == TargetKind::NewFile || (kind == TargetKind::File && have == 0);
    if have < size && !fresh {
        return Err(RepoError::BadInput(format!(
            "{} is too small for the image: it holds {}, the image {}; nothing was written",
            printable_path(to),
            size_text(have),
            size_text(size)
        )));
    }
    Ok((file, kind, have))
}

/// Restores the image backup `name` of `manifest` onto `to`.
pub fn restore_image(
    repo: &Arc<Repository>,
    manifest: &Manifest,
    name: &[u8],
    to: &Path,
    opts: &ImageRestoreOptions,
) -> Result<ImageRestoreStats> {
    let entry = find_image(manifest, name)?;
    let node = repo.backup_root(entry)?;
    if node.kind != NodeKind::File {
        return Err(RepoError::damaged(
            format!("tree {}", entry.root.id),
            "an image backup whose root is not a file",
        ));
    }
    let tmp = temporary_beside(to)?;
    let (file, kind, have) = open_target(to, &tmp, node.size, opts.verify)?;
    let r = write_image(repo, &file, kind, have, &node, to, opts);
    if kind != TargetKind::NewFile {
        return r;
    }
    drop(file);
    // A new file appears whole under its name, or not at all.
    let r = r.and_then(|stats| {
        let dir = match tmp.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let d = File::open(dir).map_err(|e| RepoError::io(dir, e))?;
        rustix::fs::renameat_with(
            &d,
            tmp.file_name().unwrap_or_default(),
            &d,
            to.file_name().unwrap_or_default(),
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| RepoError::io(to, e.into()))?;
        d.sync_all().map_err(|e| RepoError::io(dir, e))?;
        Ok(stats)
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// A temporary name in the directory of `to` (the tree restore's pattern).
fn temporary_beside(to: &Path) -> Result<std::path::PathBuf> {
    if to.file_name().is_none() {
        return Err(RepoError::BadInput(format!(
            "{} does not name a file",
            printable_path(to)
        )));
    }
    let mut r = [0u8; 8];
    getrandom::getrandom(&mut r).map_err(|e| RepoError::Internal(format!("random: {e}")))?;
    Ok(to.with_file_name(format!("{}{}", super::restore::TEMP_PREFIX, hex::encode(r))))
}

fn write_image(
    repo: &Repository,
    file: &File,
    kind: TargetKind,
    have: u64,
    node: &Node,
    to: &Path,
    opts: &ImageRestoreOptions,
) -> Result<ImageRestoreStats> {
    let io = |e: std::io::Error| RepoError::io(to, e);
    let fresh = kind == TargetKind::NewFile || (kind == TargetKind::File && have == 0);
    if fresh {
        file.set_len(node.size).map_err(io)?;
    }
    let zero = opts.zero_holes && !fresh;
    // Each extent with its offset.
    let mut pieces = Vec::with_capacity(node.content.len());
    let mut pos = 0u64;
    let (mut data_bytes, mut hole_bytes) = (0u64, 0u64);
    for e in &node.content {
        pieces.push((pos, e));
        match e {
            Extent::Data(_) => data_bytes += e.len(),
            Extent::Hole(_) => hole_bytes += e.len(),
        }
        pos += e.len();
    }
    if pos != node.size {
        return Err(RepoError::damaged(
            "image",
            format!(
                "extents add up to {pos} bytes, the image says {}",
                node.size
            ),
        ));
    }
    let device = kind == TargetKind::BlockDevice;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error: std::sync::Mutex<Option<RepoError>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..opts.workers.max(1) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(off, e)) = pieces.get(i) else {
                        return;
                    };
                    let r = match e {
                        Extent::Data(c) => repo
                            .read_chunk(c)
                            .and_then(|d| file.write_all_at(&d, off).map_err(io)),
                        Extent::Hole(n) if zero => zero_range(file, off, *n, device).map_err(io),
                        Extent::Hole(_) => Ok(()),
                    };
                    if let Err(e) = r {
                        stop.store(true, Ordering::Relaxed);
                        lock(&first_error).get_or_insert(e);
                        return;
                    }
                    opts.progress.add(0, e.len());
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    if kind == TargetKind::NewFile {
        super::restore::apply_meta_fd(file, to, node, opts.owners)?;
    }
    file.sync_all().map_err(io)?;
    if opts.verify {
        verify(repo, file, &pieces, fresh || zero, to)?;
    }
    opts.progress.add(1, 0);
    Ok(ImageRestoreStats {
        target_kind: kind,
        target_size: have,
        size: node.size,
        data_bytes,
        hole_bytes,
        zeroed_bytes: if zero { hole_bytes } else { 0 },
        fresh,
    })
}

/// Page size for aligning device zeroing: a zeroed range never shares a page of the
/// page cache with data written beside it.
const ALIGN: u64 = 4096;

/// Makes `[off, off + len)` of the target read as zeros (see the module documentation).
fn zero_range(f: &File, off: u64, len: u64, device: bool) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let end = off + len;
    if !device {
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        if rustix::fs::fallocate(f, flags, off, len).is_ok() {
            return Ok(());
        }
        return write_zeros(f, off, end);
    }
    let (a, b) = (off.div_ceil(ALIGN) * ALIGN, end / ALIGN * ALIGN);
    if a >= b {
        return write_zeros(f, off, end);
    }
    write_zeros(f, off, a)?;
    let flags = FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE;
    if rustix::fs::fallocate(f, flags, a, b - a).is_err() {
        write_zeros(f, a, b)?;
    }
    write_zeros(f, b, end)
}

fn write_zeros(f: &File, mut off: u64, end: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; (end - off).min(1 << 20) as usize];
    while off < end {
        let n = (end - off).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], off)?;
        off += n as u64;
    }
    Ok(())
}

/// Reads the target back: every data extent hashes to its chunk id; with `holes`, every
/// hole reads as zeros.
fn verify(
    repo: &Repository,
    f: &File,
    pieces: &[(u64, &Extent)],
    holes: bool,
    to: &Path,
) -> Result<()> {
    let io = |e: std::io::Error| RepoError::io(to, e);
    let differs = |what: &str, off: u64| {
        RepoError::io(
            to,
            std::io::Error::other(format!(
                "read back, it differs from the image ({what} at offset {off})"
            )),
        )
    };
    let mut buf = Vec::new();
    for &(off, e) in pieces {
        match e {
            Extent::Data(c) => {
                buf.resize(e.len() as usize, 0);
                f.read_exact_at(&mut buf, off).map_err(io)?;
                if repo.keys().chunk_id(&buf) != c.id {
                    return Err(differs("data", off));
                }
            }
            Extent::Hole(n) if holes => {
                // Only what the target stored in the hole's range is read (a regular
                // file's holes are skipped; a device is data throughout).
                let end = off + n;
                let mut at = match rustix::fs::seek(f, rustix::fs::SeekFrom::Data(off)) {
                    Ok(d) => d.min(end),
                    Err(_) => end,
                };
                while at < end {
                    let len = (end - at).min(1 << 20) as usize;
                    buf.resize(len, 0);
                    f.read_exact_at(&mut buf, at).map_err(io)?;
                    if buf.iter().any(|&b| b != 0) {
                        return Err(differs("a hole", at));
                    }
                    at += len as u64;
                }
            }
            Extent::Hole(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroing_makes_zeros_at_any_alignment() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("t");
        std::fs::write(&p, vec![0xAAu8; 3 * 4096 + 100]).unwrap();
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        // As a file (punched) and as a device would (aligned middle + written edges).
        zero_range(&f, 10, 5000, false).unwrap();
        zero_range(&f, 6000, 6000, true).unwrap();
        drop(f);
        let got = std::fs::read(&p).unwrap();
        for (i, b) in got.iter().enumerate() {
            let zero = (10..5010).contains(&i) || (6000..12000).contains(&i);
            assert_eq!(*b, if zero { 0 } else { 0xAA }, "byte {i}");
        }
    }

    #[test]
    fn a_small_target_is_refused_with_both_sizes_and_an_empty_one_is_fresh() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("tmp");
        let small = tmp.path().join("small");
        std::fs::write(&small, vec![1u8; 1000]).unwrap();
        let e = open_target(&small, &t, 5 << 20, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1000 bytes") && e.contains("5242880 bytes"),
            "{e}"
        );
        assert!(e.contains("nothing was written"), "{e}");
        assert_eq!(std::fs::read(&small).unwrap(), vec![1u8; 1000]);
        let empty = tmp.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(open_target(&empty, &t, 5 << 20, false).unwrap().2, 0);
        let e = open_target(tmp.path(), &t, 1, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("neither a block device nor a regular file"),
            "{e}"
        );
        let (_, kind, _) = open_target(&tmp.path().join("new"), &t, 1, false).unwrap();
        assert_eq!(kind, TargetKind::NewFile);
        assert!(t.exists() && !tmp.path().join("new").exists());
    }
}
