//! Restoring a recovery point to a directory.
//!
//! The calling thread walks the trees in pre-order and creates directories, symlinks,
//! special files and empty regular files (hard links are linked to the first member of
//! their group at once, so they share the inode before any content arrives). File
//! contents are written by a pool of workers, each one fetching the file's chunks with
//! one ranged read each and leaving holes as holes (seek, then `set_len`). A file's own
//! metadata (owner, mode, xattrs, mtime) is applied after its content; directories get
//! theirs last, deepest first, so writing into them does not disturb their mtime.
//! Ownership is restored when running as root.
//!
//! Restore never follows a symlink that it finds in the target: it works from the target
//! down, and every directory it enters below the target is one it created or one that
//! `lstat` shows is a real directory; a symlink (or a file) where the backup has a
//! directory is removed and replaced by the directory, so a symlink left by an earlier
//! restore (`x -> /etc`) cannot carry files or modes out of the target. Files, symlinks
//! and special files are created anew (`O_EXCL`, after removing what was there), so the
//! last component is never followed either. (A writer racing the restore inside the
//! target could still swap a directory for a symlink between the check and the use.)

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crossbeam_channel::bounded;
use rustix::fs::{AtFlags, CWD, FileType, Mode, Timestamps};

use super::format::*;
use super::walk::Progress;
use super::{RepoError, Repository, Result};

pub struct RestoreOptions {
    pub workers: usize,
    pub progress: Arc<Progress>,
    /// Restore owners (defaults to "when running as root").
    pub owners: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()) + 1,
            progress: Arc::default(),
            owners: rustix::process::geteuid().is_root(),
        }
    }
}

/// What a restore wrote, counted as a backup counts what it read ([`BackupStats`]):
/// regular files (each hard link once per name), directories, and other entries
/// (symlinks, fifos, devices, sockets); `bytes` is the size of the regular files.
///
/// `failed` names every path whose content could not be produced (a damaged or missing
/// chunk or tree), with why: a file is removed rather than left short or empty (with all
/// its hard links), a directory keeps what could be restored of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    pub bytes: u64,
    pub failed: Vec<(PathBuf, String)>,
}

impl RestoreStats {
    fn add(&mut self, o: RestoreStats) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.other += o.other;
        self.bytes += o.bytes;
        self.failed.extend(o.failed);
    }
}

/// Whether an error is damage to the backup (the content cannot be produced) rather than
/// a failure of the target or of a store that may pass.
fn is_damage(e: &RepoError) -> bool {
    matches!(e, RepoError::Damaged { .. })
}

/// Checks that a name from a tree is a single, safe path component.
fn safe_name(name: &[u8]) -> Result<&OsStr> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(RepoError::damaged(
            "tree",
            format!("unsafe entry name {:?}", String::from_utf8_lossy(name)),
        ));
    }
    Ok(OsStr::from_bytes(name))
}

/// Restores every backup of `manifest` under `target/<backup name>`.
pub fn restore(
    repo: &Arc<Repository>,
    manifest: &Manifest,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    fs::create_dir_all(target).map_err(|e| RepoError::io(target, e))?;
    let mut stats = RestoreStats::default();
    for b in &manifest.backups {
        let root = repo.backup_root(b)?;
        stats.add(restore_node(repo, &root, target, opts)?);
    }
    Ok(stats)
}

/// Restores one node (and everything under it) into the directory `into`.
pub fn restore_node(
    repo: &Arc<Repository>,
    root: &Node,
    into: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    let (tx, rx) = bounded::<(PathBuf, Node)>(1024);
    let mut first_error: Option<RepoError> = None;
    let mut stats = RestoreStats::default();
    let damaged: Mutex<Vec<(PathBuf, Option<u64>, String)>> = Mutex::new(Vec::new());
    let mut links = HashMap::new();
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for _ in 0..opts.workers.max(1) {
            let rx = rx.clone();
            let damaged = &damaged;
            handles.push(scope.spawn(move || -> Result<()> {
                let mut first = None;
                for (path, node) in rx {
                    let r = write_file(repo, &path, &node)
                        .and_then(|()| apply_meta(&path, &node, opts.owners));
                    opts.progress.add(1, node.size);
                    match r {
                        Ok(()) => {}
                        Err(e) if is_damage(&e) => {
                            let group = node.hardlink.map(|(g, _)| g);
                            let mut d = damaged.lock().unwrap_or_else(|p| p.into_inner());
                            d.push((path, group, e.to_string()));
                        }
                        Err(e) => {
                            first.get_or_insert(e);
                        }
                    }
                }
                first.map_or(Ok(()), Err)
            }));
        }
        drop(rx);
        let walked = walk(repo, root, into, opts, &tx, &mut stats, &mut links);
        drop(tx);
        for h in handles {
            if let Err(e) = h.join().expect("restore worker panicked") {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = walked {
            first_error = Some(e);
        }
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    // A file whose content could not be produced goes, with every name it has.
    for (path, group, why) in damaged.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let names = match group.and_then(|g| links.remove(&g)) {
            Some(names) => names,
            None => vec![path],
        };
        for p in names {
            match fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(RepoError::io(&p, e));
                }
                _ => {}
            }
            stats.files -= 1;
            stats.failed.push((p, why.clone()));
        }
    }
    stats.failed.sort();
    Ok(stats)
}

fn walk(
    repo: &Repository,
    root: &Node,
    into: &Path,
    opts: &RestoreOptions,
    files: &crossbeam_channel::Sender<(PathBuf, Node)>,
    stats: &mut RestoreStats,
    names: &mut HashMap<u64, Vec<PathBuf>>,
) -> Result<()> {
    let mut links: HashMap<u64, PathBuf> = HashMap::new();
    // Directories whose metadata is applied at the end, deepest last in this list.
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    let mut stack: Vec<(PathBuf, Node)> = vec![(into.join(safe_name(&root.name)?), root.clone())];
    while let Some((path, mut node)) = stack.pop() {
        match node.kind {
            NodeKind::Dir => stats.dirs += 1,
            NodeKind::File => {
                stats.files += 1;
                stats.bytes += node.size;
            }
            _ => stats.other += 1,
        }
        match node.kind {
            NodeKind::Dir => {
                make_dir(&path)?;
                if let Some(sub) = node.subtree.take() {
                    let tree = match repo.load_tree(&sub) {
                        Ok(t) => t,
                        Err(e) if is_damage(&e) => {
                            // What the directory held is unknown: say so, restore the rest.
                            stats.failed.push((path.clone(), e.to_string()));
                            dirs.push((path, node));
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    for child in tree.nodes.into_iter().rev() {
                        let p = path.join(safe_name(&child.name)?);
                        stack.push((p, child));
                    }
                }
                dirs.push((path, node));
            }
            NodeKind::File => {
                if let Some((group, _)) = node.hardlink {
                    names.entry(group).or_default().push(path.clone());
                    if let Some(first) = links.get(&group) {
                        remove_existing(&path)?;
                        fs::hard_link(first, &path).map_err(|e| RepoError::io(&path, e))?;
                        opts.progress.add(1, 0);
                        continue;
                    }
                    links.insert(group, path.clone());
                }
                remove_existing(&path)?;
                File::create_new(&path).map_err(|e| RepoError::io(&path, e))?;
                files
                    .send((path, node))
                    .map_err(|_| RepoError::Internal("restore workers stopped".into()))?;
            }
            NodeKind::Symlink => {
                remove_existing(&path)?;
                let target = node.target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path)
                    .map_err(|e| RepoError::io(&path, e))?;
                apply_meta(&path, &node, opts.owners)?;
                opts.progress.add(1, 0);
            }
            NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice | NodeKind::Socket => {
                remove_existing(&path)?;
                let ft = match node.kind {
                    NodeKind::Fifo => FileType::Fifo,
                    NodeKind::CharDevice => FileType::CharacterDevice,
                    NodeKind::BlockDevice => FileType::BlockDevice,
                    _ => FileType::Socket,
                };
                match rustix::fs::mknodat(CWD, &path, ft, Mode::from_raw_mode(0o600), node.rdev) {
                    Ok(()) => apply_meta(&path, &node, opts.owners)?,
                    Err(e) => {
                        // Device nodes need privileges; say so and go on.
                        eprintln!(
                            "warning: {}: cannot create {:?}: {e}",
                            path.display(),
                            node.kind
                        );
                    }
                }
                opts.progress.add(1, 0);
            }
        }
    }
    for (path, node) in dirs.iter().rev() {
        apply_meta(path, node, opts.owners)?;
    }
    Ok(())
}

/// A real directory at `path`: one already there (never through a symlink), or a new one
/// in place of a symlink, file or special file that was there.
fn make_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => fs::remove_file(path).map_err(|e| RepoError::io(path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(RepoError::io(path, e)),
    }
    fs::create_dir(path).map_err(|e| RepoError::io(path, e))
}

fn remove_existing(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(RepoError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a directory is in the way",
            ),
        )),
        Ok(_) => fs::remove_file(path).map_err(|e| RepoError::io(path, e)),
        Err(_) => Ok(()),
    }
}

/// Writes a file's content, keeping holes.
fn write_file(repo: &Repository, path: &Path, node: &Node) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| RepoError::io(path, e))?;
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

/// Applies owner, mode, xattrs and mtime, in the order that keeps each one.
fn apply_meta(path: &Path, node: &Node, owners: bool) -> Result<()> {
    let is_link = node.kind == NodeKind::Symlink;
    if owners {
        rustix::fs::chownat(
            CWD,
            path,
            Some(rustix::fs::Uid::from_raw(node.uid)),
            Some(rustix::fs::Gid::from_raw(node.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| RepoError::io(path, e.into()))?;
    }
    for (name, value) in &node.xattrs {
        if let Err(e) = xattr::set(path, OsStr::from_bytes(name), value) {
            // user.* xattrs are not allowed on symlinks; other failures are worth a word.
            if !is_link {
                eprintln!(
                    "warning: {}: cannot set xattr {}: {e}",
                    path.display(),
                    String::from_utf8_lossy(name)
                );
            }
        }
    }
    if !is_link {
        rustix::fs::chmodat(CWD, path, Mode::from_raw_mode(node.mode), AtFlags::empty())
            .map_err(|e| RepoError::io(path, e.into()))?;
    }
    let mtime = rustix::fs::Timespec {
        tv_sec: node.mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: node.mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    let times = Timestamps {
        last_access: mtime,
        last_modification: mtime,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| RepoError::io(path, e.into()))?;
    Ok(())
}
