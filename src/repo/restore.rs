//! Restoring a recovery point to a directory.
//!
//! The calling thread walks the trees in pre-order and creates directories, symlinks,
//! special files and empty regular files (hard links are linked to the first member of
//! their group at once, so they share the inode before any content arrives). File
//! contents are written by a pool of workers, each one given the file already open and
//! fetching the file's chunks with one ranged read each, leaving holes as holes (seek,
//! then `set_len`). A file's own metadata (owner, mode, xattrs, mtime) is applied through
//! its open descriptor after its content; a directory gets its own once everything in it
//! was created, so creating entries does not disturb its mtime. Ownership is restored
//! when running as root.
//!
//! Restore never follows a symlink that it finds in the target, at any depth, even one
//! swapped in while it runs. Everything below the target is reached through descriptors
//! of directories it holds open: each directory is opened relative to its parent with
//! `O_NOFOLLOW | O_DIRECTORY` (a symlink there fails the open instead of being entered),
//! and every entry is created, linked, changed or removed relative to its parent's
//! descriptor (`openat(O_CREAT | O_EXCL | O_NOFOLLOW)`, `mkdirat`, `symlinkat`,
//! `linkat`, `unlinkat`, `fchownat`/`utimensat` with `AT_SYMLINK_NOFOLLOW`). A symlink
//! (or a file) where the backup has a directory is removed and replaced by the
//! directory, so a symlink left by an earlier restore (`x -> /etc`) cannot carry files or
//! modes out of the target. Paths in this module are for messages only.
//!
//! What is already in the target ([`Existing`]): by default an entry in the way of a
//! non-directory is an error found by a read-only pass before anything is written;
//! `Skip` leaves such entries alone; `Overwrite` writes each new entry under a temporary
//! name in the same directory and renames it over the old one once it is whole (for a
//! file, after its content, metadata and the optional read-back check; other names of a
//! hard-linked file are linked to it under temporary names and renamed once every file
//! is written), then puts the directory's mtime back. The temporaries a killed restore
//! left (`.vaultfs-restore-` and 16 hex digits) are removed by the next restore from
//! every existing directory it enters, and from the directory it restores into.
//!
//! What is taken from the point: `--path` chooses the roots, [`Selection`] the entries
//! under them (`--include`/`--exclude`, see `select`). With [`RestoreOptions::delete`],
//! each restored directory that already existed loses the entries the backup does not
//! hold (`rsync --delete`), except those the selection leaves out, before its new
//! entries are made; a directory in the way of a non-directory is removed too (see
//! `tidy`). The directory restored into is never cleaned: only what is under a restored
//! directory is.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crossbeam_channel::bounded;
use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};

use super::format::*;
use super::walk::Progress;
use super::{RepoError, Repository, Result};

mod select;
mod status;
mod tidy;
mod write;

pub use select::{Pick, Selection};
pub use status::{mark_restoring, points_being_restored, restoring_among};
pub use tidy::{TEMP_PREFIX, is_temp_name};
pub(crate) use write::apply_meta_fd;
use write::{apply_meta_at, mtime_ns_of, verify_file, write_file};

pub struct RestoreOptions {
    pub workers: usize,
    pub progress: Arc<Progress>,
    /// Restore owners (defaults to "when running as root").
    pub owners: bool,
    /// What happens to an entry of the target where the backup has one.
    pub existing: Existing,
    /// Read each file back once written and compare it with its chunks' ids.
    pub verify: bool,
    /// Which entries are restored (`--include`, `--exclude`; default: all).
    pub selection: Selection,
    /// Remove what restored directories hold and the backup does not (`--delete`).
    pub delete: bool,
}

/// What a restore does with what is already in its target (directories are merged in
/// every mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Existing {
    /// An existing file (or a file where the backup has a directory) is an error that
    /// names it, found before anything is written.
    #[default]
    Refuse,
    /// Existing entries stay as they are; only what is missing is restored.
    Skip,
    /// Existing entries are replaced, each new one written under a temporary name and
    /// renamed over the old: a failure leaves the old entry or the new one, never a torn
    /// file.
    Overwrite,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()) + 1,
            progress: Arc::default(),
            owners: rustix::process::geteuid().is_root(),
            existing: Existing::Refuse,
            verify: false,
            selection: Selection::default(),
            delete: false,
        }
    }
}

/// Where a pre-existing entry is in the way of a restore: `node`, at `point` inside the
/// point, restored to `path`.
fn conflicts_below(
    repo: &Repository,
    sel: &Selection,
    (node, point, under_all): (&Node, &Path, bool),
    path: &Path,
    out: &mut Vec<PathBuf>,
) -> Result<()> {
    if out.len() >= 20 {
        return Ok(());
    }
    let pick = sel.pick(point, node.kind == NodeKind::Dir, under_all);
    if pick == Pick::Skip {
        return Ok(());
    }
    let Ok(m) = fs::symlink_metadata(path) else {
        // Nothing there: nothing below it either.
        return Ok(());
    };
    match (node.kind, m.is_dir()) {
        (NodeKind::Dir, true) => {
            if let Some(sub) = &node.subtree {
                for c in repo.load_tree(sub)?.nodes {
                    let name = safe_name(&c.name)?;
                    let child = (&c, &*point.join(name), pick == Pick::All);
                    conflicts_below(repo, sel, child, &path.join(name), out)?;
                }
            }
        }
        _ => out.push(path.to_path_buf()),
    }
    Ok(())
}

/// With [`Existing::Refuse`]: fails, naming them, when entries of the target are in the
/// way of `roots` restored into `into`.
fn refuse_existing(repo: &Repository, sel: &Selection, roots: &[Root], into: &Path) -> Result<()> {
    let mut found = Vec::new();
    for r in roots {
        let target = into.join(safe_name(&r.node.name)?);
        let root = (&r.node, &*r.point, false);
        conflicts_below(repo, sel, root, &target, &mut found)?;
    }
    if found.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = found.iter().map(|p| printable_path(p)).collect();
    Err(RepoError::BadInput(format!(
        "the target already holds {}{}: nothing was written (--overwrite replaces, --skip-existing keeps them)",
        names.join(", "),
        if found.len() >= 20 { ", ..." } else { "" }
    )))
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
    /// Entries left as they were (`Existing::Skip`).
    pub skipped: u64,
    /// Entries of the target removed by [`RestoreOptions::delete`] (a directory and
    /// each entry under it count one).
    pub deleted: u64,
    /// Temporaries of an interrupted `--overwrite` removed.
    pub temporaries: u64,
}

impl RestoreStats {
    fn add(&mut self, o: RestoreStats) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.other += o.other;
        self.bytes += o.bytes;
        self.failed.extend(o.failed);
        self.skipped += o.skipped;
        self.deleted += o.deleted;
        self.temporaries += o.temporaries;
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

/// One node restored with everything under it, and its path inside the point (the
/// backup's name first), which the selection matches.
struct Root {
    point: PathBuf,
    node: Node,
}

/// Restores every backup of `manifest` under `target/<backup name>` (created if
/// missing).
pub fn restore(
    repo: &Arc<Repository>,
    manifest: &Manifest,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    fs::create_dir_all(target).map_err(|e| RepoError::io(target, e))?;
    let mut roots = Vec::new();
    for b in &manifest.backups {
        let node = repo.backup_root(b)?;
        let point = PathBuf::from(safe_name(&node.name)?);
        roots.push(Root { point, node });
    }
    restore_roots(repo, roots, target, opts)
}

/// Restores each of `paths` (inside the point, starting with a backup's name: `etc/ssh`)
/// with everything under it into `into` (created if missing), as `into/<last
/// component>`.
pub fn restore_paths(
    repo: &Arc<Repository>,
    manifest: &Manifest,
    paths: &[&[u8]],
    into: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    let mut roots = Vec::new();
    for p in paths {
        let node = repo.find_node(manifest, p)?;
        let mut point = PathBuf::new();
        for c in p.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            point.push(safe_name(c)?);
        }
        roots.push(Root { point, node });
    }
    fs::create_dir_all(into).map_err(|e| RepoError::io(into, e))?;
    restore_roots(repo, roots, into, opts)
}

/// Restores several nodes of the top of a point (each with everything under it) into
/// the existing directory `into`.
pub fn restore_nodes(
    repo: &Arc<Repository>,
    nodes: &[Node],
    into: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    let mut roots = Vec::new();
    for n in nodes {
        let point = PathBuf::from(safe_name(&n.name)?);
        roots.push(Root {
            point,
            node: n.clone(),
        });
    }
    restore_roots(repo, roots, into, opts)
}

/// Restores `roots` into the existing directory `into` (the one path this module
/// resolves the usual way: it is the caller's): the selection's directories are found,
/// then with [`Existing::Refuse`] what is in the way of any root, before anything is
/// written.
fn restore_roots(
    repo: &Arc<Repository>,
    roots: Vec<Root>,
    into: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    let mut sel = opts.selection.clone();
    let pairs: Vec<(PathBuf, Node)> = roots
        .iter()
        .map(|r| (r.point.clone(), r.node.clone()))
        .collect();
    sel.prepare(repo, &pairs)?;
    drop(pairs);
    if opts.existing == Existing::Refuse {
        refuse_existing(repo, &sel, &roots, into)?;
    }
    let mut stats = RestoreStats::default();
    let top = open_dir(CWD, into.as_os_str(), false).map_err(|e| RepoError::io(into, e))?;
    stats.temporaries += tidy::remove_temporaries(&top).map_err(|e| RepoError::io(into, e))?;
    drop(top);
    for r in &roots {
        stats.add(restore_root(repo, &sel, r, into, opts)?);
    }
    Ok(stats)
}

fn restore_root(
    repo: &Arc<Repository>,
    sel: &Selection,
    root: &Root,
    into: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreStats> {
    raise_open_file_limit();
    let top = open_dir(CWD, into.as_os_str(), false).map_err(|e| RepoError::io(into, e))?;
    let top = Arc::new(top);
    let (tx, rx) = bounded::<Job>(128);
    let mut first_error: Option<RepoError> = None;
    let mut stats = RestoreStats::default();
    let damaged: Mutex<Vec<(PathBuf, Option<u64>, String)>> = Mutex::new(Vec::new());
    let mut w = Walk {
        repo,
        top: top.clone(),
        into,
        opts,
        sel,
        point_base: root
            .point
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        files: Some(tx),
        stats: &mut stats,
        first_of_group: HashMap::new(),
        names: HashMap::new(),
        first_tmp: HashMap::new(),
        deferred: Vec::new(),
    };
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for _ in 0..opts.workers.max(1) {
            let rx = rx.clone();
            let damaged = &damaged;
            handles.push(scope.spawn(move || -> Result<()> {
                let mut first = None;
                for Job {
                    rel,
                    mut file,
                    node,
                    rename,
                } in rx
                {
                    let path = into.join(&rel);
                    let r = write_file(repo, &mut file, &path, &node)
                        .and_then(|()| apply_meta_fd(&file, &path, &node, opts.owners))
                        .and_then(|()| match opts.verify {
                            true => verify_file(repo, &file, &path, &node),
                            false => Ok(()),
                        });
                    drop(file);
                    let r = match (r, &rename) {
                        (Ok(()), Some(t)) => t.finish().map_err(|e| RepoError::io(&path, e)),
                        (Err(e), Some(t)) => {
                            t.abandon();
                            Err(e)
                        }
                        (r, None) => r,
                    };
                    opts.progress.add(1, node.size);
                    match r {
                        Ok(()) => {}
                        Err(e) if is_damage(&e) => {
                            let group = node.hardlink.map(|(g, _)| g);
                            let mut d = damaged.lock().unwrap_or_else(|p| p.into_inner());
                            d.push((rel, group, e.to_string()));
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
        let walked = w.run(&top, &root.node);
        // Closing the channel lets the workers finish.
        w.files = None;
        for h in handles {
            match h.join() {
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Ok(Ok(())) => {}
                Err(_) => {
                    first_error
                        .get_or_insert(RepoError::Internal("a restore worker panicked".into()));
                }
            }
        }
        if let Err(e) = walked {
            first_error = Some(e);
        }
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    let mut names = std::mem::take(&mut w.names);
    let renames = std::mem::take(&mut w.deferred);
    drop(w);
    // Other names of hard-linked files replaced in place: renamed now that their
    // content is whole, their directory's time put back.
    for t in renames {
        let path = into.join(&t.rel);
        t.finish().map_err(|e| RepoError::io(&path, e))?;
    }
    // A file whose content could not be produced goes, with every name it has.
    for (rel, group, why) in damaged.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let rels = match group.and_then(|g| names.remove(&g)) {
            Some(rels) => rels,
            None => vec![rel],
        };
        for rel in rels {
            let path = into.join(&rel);
            match remove_beneath(&top, &rel) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(RepoError::io(&path, e));
                }
                _ => {}
            }
            stats.files -= 1;
            stats.failed.push((path, why.clone()));
        }
    }
    stats.failed.sort();
    Ok(stats)
}

/// A directory being filled: its descriptor, its path below the restore's top, its node
/// (metadata applied when it is done), the children not yet created, and whether it was
/// taken whole by the selection ([`Pick::All`]).
struct Frame {
    dir: Arc<File>,
    rel: PathBuf,
    node: Node,
    children: std::vec::IntoIter<Node>,
    all: bool,
}

/// The state of the walk thread.
struct Walk<'a> {
    repo: &'a Repository,
    /// The directory restored into.
    top: Arc<File>,
    into: &'a Path,
    opts: &'a RestoreOptions,
    /// What is taken (prepared).
    sel: &'a Selection,
    /// The path inside the point of the directory restored into (the root's parent).
    point_base: PathBuf,
    files: Option<crossbeam_channel::Sender<Job>>,
    stats: &'a mut RestoreStats,
    /// Hard-link group -> the first name restored (relative to the top).
    first_of_group: HashMap<u64, PathBuf>,
    /// Hard-link group -> every name restored, to remove them all if the content fails.
    names: HashMap<u64, Vec<PathBuf>>,
    /// Hard-link group -> the temporary name of its first member while it is written
    /// (replacing an existing file).
    first_tmp: HashMap<u64, PathBuf>,
    /// Renames done once every file is written, with the mtime of their directory.
    deferred: Vec<TempName>,
}

/// A file for a worker to write.
struct Job {
    rel: PathBuf,
    file: File,
    node: Node,
    /// Renamed over the old entry once written and verified.
    rename: Option<TempName>,
}

/// A new entry written under a temporary name, to replace `name` in `dir`.
struct TempName {
    dir: Arc<File>,
    /// The directory's own mtime, put back after the rename.
    dir_mtime: Option<i64>,
    tmp: std::ffi::OsString,
    name: std::ffi::OsString,
    rel: PathBuf,
}

impl TempName {
    fn new(dir: &Arc<File>, dir_mtime: Option<i64>, name: &OsStr, rel: &Path) -> TempName {
        let mut r = [0u8; 8];
        let _ = getrandom::getrandom(&mut r);
        TempName {
            dir: dir.clone(),
            dir_mtime,
            tmp: format!("{TEMP_PREFIX}{}", hex::encode(r)).into(),
            name: name.to_os_string(),
            rel: rel.to_path_buf(),
        }
    }

    fn finish(&self) -> std::io::Result<()> {
        rustix::fs::renameat(&*self.dir, &self.tmp, &*self.dir, &self.name)?;
        // The rename changed the directory's mtime, which may already have been set.
        if let Some(m) = self.dir_mtime {
            rustix::fs::futimens(&*self.dir, &mtime_ns_of(m))?;
        }
        Ok(())
    }

    fn abandon(&self) {
        let _ = rustix::fs::unlinkat(&*self.dir, &self.tmp, AtFlags::empty());
    }

    fn tmp_rel(&self) -> PathBuf {
        self.rel.with_file_name(&self.tmp)
    }
}

impl Walk<'_> {
    fn run(&mut self, top: &Arc<File>, root: &Node) -> Result<()> {
        let mut frames: Vec<Frame> = Vec::new();
        self.entry(top, Path::new(""), root.clone(), &mut frames, (None, false))?;
        while let Some(frame) = frames.last_mut() {
            match frame.children.next() {
                Some(child) => {
                    let (dir, rel) = (frame.dir.clone(), frame.rel.clone());
                    let parent = (Some(frame.node.mtime_ns), frame.all);
                    self.entry(&dir, &rel, child, &mut frames, parent)?;
                }
                None => {
                    let f = frames.pop().expect("a frame is there");
                    let path = self.into.join(&f.rel);
                    apply_meta_fd(&f.dir, &path, &f.node, self.opts.owners)?;
                }
            }
        }
        Ok(())
    }

    /// Creates one entry in `parent` (`parent_mtime`: the parent's mtime to put back
    /// after a rename in it; `parent_all`: whether the parent was taken whole); a
    /// directory becomes a new frame.
    fn entry(
        &mut self,
        parent: &Arc<File>,
        parent_rel: &Path,
        mut node: Node,
        frames: &mut Vec<Frame>,
        (parent_mtime, parent_all): (Option<i64>, bool),
    ) -> Result<()> {
        let name = safe_name(&node.name)?;
        let rel = parent_rel.join(name);
        let point = self.point_base.join(&rel);
        let pick = self
            .sel
            .pick(&point, node.kind == NodeKind::Dir, parent_all);
        if pick == Pick::Skip {
            return Ok(());
        }
        let path = self.into.join(&rel);
        let io = |e: std::io::Error| RepoError::io(&path, e);
        let owners = self.opts.owners;
        let mut existing = rustix::fs::statat(&**parent, name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .map(|st| FileType::from_raw_mode(st.st_mode));
        if self.opts.delete
            && existing == Some(FileType::Directory)
            && node.kind != NodeKind::Dir
            && self.opts.existing != Existing::Skip
        {
            // A directory where the backup has something else: it goes whole.
            self.stats.deleted += tidy::remove_tree(parent, name, &path).map_err(io)?;
            existing = None;
        }
        if let Some(ft) = existing
            && self.opts.existing == Existing::Skip
            && !(node.kind == NodeKind::Dir && ft == FileType::Directory)
        {
            // Kept as it is (a directory where the backup has one is merged into).
            self.stats.skipped += 1;
            self.opts.progress.add(1, 0);
            return Ok(());
        }
        // Replacing an existing non-directory: the new entry goes under a temporary name.
        let replace = (existing.is_some_and(|ft| ft != FileType::Directory)
            && self.opts.existing == Existing::Overwrite
            && node.kind != NodeKind::Dir)
            .then(|| TempName::new(parent, parent_mtime, name, &rel));
        let at: &OsStr = replace.as_ref().map_or(name, |t| t.tmp.as_os_str());
        match node.kind {
            NodeKind::Dir => {
                self.stats.dirs += 1;
                let dir = make_dir(parent, name).map_err(io)?;
                let mut known = true;
                let children = match node.subtree.take() {
                    None => Vec::new(),
                    Some(sub) => match self.repo.load_tree(&sub) {
                        Ok(t) => t.nodes,
                        Err(e) if is_damage(&e) => {
                            // What the directory held is unknown: say so, restore the rest.
                            self.stats.failed.push((path.clone(), e.to_string()));
                            known = false;
                            Vec::new()
                        }
                        Err(e) => return Err(e),
                    },
                };
                let all = pick == Pick::All;
                if existing == Some(FileType::Directory) {
                    // Before anything of this restore is made in it.
                    self.tidy(&dir, &path, &point, all, known.then_some(&children))?;
                }
                frames.push(Frame {
                    dir: Arc::new(dir),
                    rel,
                    node,
                    children: children.into_iter(),
                    all,
                });
            }
            NodeKind::File => {
                self.stats.files += 1;
                self.stats.bytes += node.size;
                if let Some((group, _)) = node.hardlink {
                    self.names.entry(group).or_default().push(rel.clone());
                    if let Some(first) = self.first_of_group.get(&group) {
                        if replace.is_none() {
                            remove_existing(parent, name).map_err(io)?;
                        }
                        // The first name may still be under its temporary name.
                        let linked = match self.first_tmp.get(&group) {
                            Some(tmp) => link_beneath(&self.top, tmp, parent, at)
                                .or_else(|_| link_beneath(&self.top, first, parent, at)),
                            None => link_beneath(&self.top, first, parent, at),
                        };
                        linked.map_err(io)?;
                        if let Some(t) = replace {
                            self.deferred.push(t);
                        }
                        self.opts.progress.add(1, 0);
                        return Ok(());
                    }
                    self.first_of_group.insert(group, rel.clone());
                    if let Some(t) = &replace {
                        self.first_tmp.insert(group, t.tmp_rel());
                    }
                }
                if replace.is_none() {
                    remove_existing(parent, name).map_err(io)?;
                }
                let access = if self.opts.verify {
                    OFlags::RDWR
                } else {
                    OFlags::WRONLY
                };
                let fd = rustix::fs::openat(
                    &**parent,
                    at,
                    access | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| io(e.into()))?;
                let job = Job {
                    rel,
                    file: File::from(fd),
                    node,
                    rename: replace,
                };
                self.files
                    .as_ref()
                    .and_then(|tx| tx.send(job).ok())
                    .ok_or_else(|| RepoError::Internal("restore workers stopped".into()))?;
            }
            NodeKind::Symlink => {
                self.stats.other += 1;
                if replace.is_none() {
                    remove_existing(parent, name).map_err(io)?;
                }
                let target = node.target.as_deref().unwrap_or_default();
                rustix::fs::symlinkat(OsStr::from_bytes(target), &**parent, at)
                    .map_err(|e| io(e.into()))?;
                apply_meta_at(parent, at, &path, &node, owners)?;
                if let Some(t) = replace {
                    t.finish().map_err(io)?;
                }
                self.opts.progress.add(1, 0);
            }
            NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice | NodeKind::Socket => {
                self.stats.other += 1;
                if replace.is_none() {
                    remove_existing(parent, name).map_err(io)?;
                }
                let ft = match node.kind {
                    NodeKind::Fifo => FileType::Fifo,
                    NodeKind::CharDevice => FileType::CharacterDevice,
                    NodeKind::BlockDevice => FileType::BlockDevice,
                    _ => FileType::Socket,
                };
                match rustix::fs::mknodat(
                    &**parent,
                    name,
                    ft,
                    Mode::from_raw_mode(0o600),
                    node.rdev,
                ) {
                    Ok(()) => apply_meta_at(parent, name, &path, &node, owners)?,
                    Err(e) => {
                        // Device nodes need privileges; say so and go on.
                        eprintln!(
                            "warning: {}: cannot create {:?}: {e}",
                            printable_path(&path),
                            node.kind
                        );
                    }
                }
                self.opts.progress.add(1, 0);
            }
        }
        Ok(())
    }
}

impl Walk<'_> {
    /// Cleans an existing directory being restored into: the temporaries a killed
    /// restore left, and with [`RestoreOptions::delete`] the entries the backup does not
    /// hold (`children`; None when its tree is damaged: then nothing is deleted) and the
    /// selection does not protect.
    fn tidy(
        &mut self,
        dir: &File,
        path: &Path,
        point: &Path,
        all: bool,
        children: Option<&Vec<Node>>,
    ) -> Result<()> {
        let io = |e: std::io::Error| RepoError::io(path, e);
        self.stats.temporaries += tidy::remove_temporaries(dir).map_err(io)?;
        let Some(children) = children.filter(|_| self.opts.delete) else {
            return Ok(());
        };
        let held: std::collections::HashSet<&[u8]> =
            children.iter().map(|c| c.name.as_slice()).collect();
        for (name, ft) in tidy::entries(dir).map_err(io)? {
            if held.contains(name.as_bytes()) || is_temp_name(name.as_bytes()) {
                continue;
            }
            let ft = match ft {
                Some(ft) => Some(ft),
                None => tidy::type_at(dir, &name).map_err(io)?,
            };
            let is_dir = ft == Some(FileType::Directory);
            if self.sel.pick(&point.join(&name), is_dir, all) == Pick::Skip {
                continue;
            }
            let p = path.join(&name);
            self.stats.deleted +=
                tidy::remove_tree(dir, &name, &p).map_err(|e| RepoError::io(&p, e))?;
        }
        Ok(())
    }
}

/// Links `parent/name` to `first` (a path relative to the top), resolving `first`
/// beneath the top without following any symlink.
fn link_beneath(top: &File, first: &Path, parent: &File, name: &OsStr) -> std::io::Result<()> {
    let (dir, file) = split_last(first)?;
    let src = open_beneath(top, dir)?;
    rustix::fs::linkat(&src, file, parent, name, AtFlags::empty())?;
    Ok(())
}

/// Removes the file at `rel` (relative to `top`), never through a symlink.
fn remove_beneath(top: &File, rel: &Path) -> std::io::Result<()> {
    let (dir, file) = split_last(rel)?;
    let parent = open_beneath(top, dir)?;
    rustix::fs::unlinkat(&parent, file, AtFlags::empty())?;
    Ok(())
}

fn split_last(rel: &Path) -> std::io::Result<(&Path, &OsStr)> {
    match (rel.parent(), rel.file_name()) {
        (Some(dir), Some(file)) => Ok((dir, file)),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a path below the target",
        )),
    }
}

/// Opens the directory `rel` below `base`, one component at a time, refusing symlinks.
fn open_beneath(base: &File, rel: &Path) -> std::io::Result<File> {
    let mut cur = base.try_clone()?;
    for c in rel.components() {
        cur = open_dir(&cur, c.as_os_str(), true)?;
    }
    Ok(cur)
}

/// Opens a directory relative to `dirfd`; with `nofollow`, a symlink fails the open.
fn open_dir<Fd: rustix::fd::AsFd>(
    dirfd: Fd,
    name: &OsStr,
    nofollow: bool,
) -> std::io::Result<File> {
    let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if nofollow {
        flags |= OFlags::NOFOLLOW;
    }
    Ok(File::from(rustix::fs::openat(
        dirfd,
        name,
        flags,
        Mode::empty(),
    )?))
}

/// A real directory `name` in `parent`, held open: one already there (never through a
/// symlink), or a new one in place of a symlink, file or special file that was there.
fn make_dir(parent: &File, name: &OsStr) -> std::io::Result<File> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => {}
        Err(rustix::io::Errno::EXIST) => {
            let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
            if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                rustix::fs::unlinkat(parent, name, AtFlags::empty())?;
                rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))?;
            }
        }
        Err(e) => return Err(e.into()),
    }
    // A symlink swapped in since is refused here (ELOOP), never entered.
    open_dir(parent, name, true)
}

/// Makes room for a new non-directory `name` in `parent`.
fn remove_existing(parent: &File, name: &OsStr) -> std::io::Result<()> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a directory is in the way",
            ))
        }
        Ok(_) => match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Err(_) => Ok(()),
    }
}

/// Lets a deep tree hold a descriptor per level (and the workers theirs): the soft limit
/// of open files goes up to the hard one.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
}
