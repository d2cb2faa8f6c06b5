//! The fuser adapter: the only module that knows fuser. Each method converts the request,
//! asks [`VaultFs`], and converts the typed answer or the error (through the one errno
//! mapping in `errno.rs`). [`session`] sets up and runs the fuser session.

pub mod session;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::access::Caller;
use super::ops::VaultFs;
use super::reply::{Attr, BLKSIZE, FileKind, FsError, XattrReply};

/// The `Filesystem` fuser drives.
#[derive(Debug)]
pub struct FuseFs {
    pub fs: Arc<VaultFs>,
    /// The kernel lists directories without OPENDIR/RELEASEDIR (set at init when it
    /// offers `FUSE_NO_OPENDIR_SUPPORT`; the first OPENDIR then answers ENOSYS).
    pub no_opendir: bool,
    /// The directory of a local repository: `statfs` reports its file system's space.
    /// None for an object store (see [`FuseFs::statfs`]).
    pub space_of: Option<std::path::PathBuf>,
    /// Told when the session ends (fuser calls `destroy` as its loop ends, however).
    pub session_end: Option<crossbeam_channel::Sender<()>>,
    /// Counts and times of the operations, for `--metrics`.
    pub metrics: Option<Arc<crate::metrics::FuseMetrics>>,
}

/// What `statfs` reports for an object store, which has no capacity to tell: 1 PiB, all
/// of it free (a store grows as it is written to), in blocks of [`BLKSIZE`].
const UNBOUNDED_BLOCKS: u64 = (1 << 50) / BLKSIZE as u64;
/// Inodes reported for an object store: as many as blocks, all free.
const UNBOUNDED_FILES: u64 = UNBOUNDED_BLOCKS;

/// Who sent a request (what `access.rs` judges on a mount with `--allow-other`).
fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Dir => FileType::Directory,
        FileKind::File => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: time(a.mtime_ns),
        mtime: time(a.mtime_ns),
        ctime: time(a.ctime_ns),
        crtime: time(a.mtime_ns),
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// One FUSE operation being served: counted and timed when metrics are on.
struct Op {
    name: &'static str,
    timer: Option<crate::metrics::OpTimer>,
    /// `fuse{op, ino}`: every log line of the operation carries them.
    _span: tracing::span::EnteredSpan,
}

impl Op {
    fn failed(&self) {
        if let Some(t) = &self.timer {
            t.failed();
        }
    }
}

impl FuseFs {
    fn op(&self, name: &'static str, ino: u64) -> Op {
        Op {
            name,
            timer: self.metrics.as_ref().map(|m| m.start(name)),
            _span: tracing::debug_span!("fuse", op = name, ino).entered(),
        }
    }
}

fn log_err(op: &str, ino: u64, e: &FsError) {
    match e {
        // Expected answers, not incidents.
        FsError::NotFound | FsError::NoXattr | FsError::ReadOnly | FsError::NoData => {
            tracing::trace!(op, ino, "{e}")
        }
        // Read errors are logged where the chunk and file are known (file::read,
        // namespace::load_tree).
        _ => tracing::debug!(op, ino, "{e}"),
    }
}

macro_rules! try_reply {
    ($reply:expr, $op:expr, $ino:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                $op.failed();
                log_err($op.name, $ino, &e);
                $reply.error(errno(&e));
                return;
            }
        }
    };
}

fn erofs() -> Errno {
    errno(&FsError::ReadOnly)
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Lookups in one directory may run in parallel (several session threads).
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // `ls -l` and `find` get attributes with the listing instead of one lookup each;
        // the kernel switches between readdir and readdirplus by itself (AUTO).
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // Symlink targets are immutable, except `latest`, whose cached target is dropped
        // with an inode invalidation when a new point arrives. Without this, every path
        // walk through `latest` costs a READLINK round trip.
        let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        // Directories are listed by inode and offset, so OPENDIR and RELEASEDIR are two
        // round trips per directory for nothing: a cold `find` takes a third less time
        // without them.
        // Not when listings differ from caller to caller (`--allow-other`, see
        // `access.rs`): the kernel would cache one caller's listing for all of them.
        self.no_opendir = !self.fs.listings_per_caller()
            && config
                .add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
                .is_ok();
        // Let the kernel keep many reads in flight, so that session threads stay busy.
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Some(tx) = self.session_end.take() {
            let _ = tx.send(());
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _op = self.op("lookup", parent.0);
        let e = try_reply!(
            reply,
            _op,
            parent.0,
            self.fs.lookup_for(&caller(req), parent.0, name.as_bytes())
        );
        reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _op = self.op("getattr", ino.0);
        try_reply!(reply, _op, ino.0, self.fs.permit(ino.0, &caller(req)));
        let e = try_reply!(reply, _op, ino.0, self.fs.getattr(ino.0));
        reply.attr(&e.ttl, &file_attr(&e.attr));
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        let _op = self.op("readlink", ino.0);
        try_reply!(reply, _op, ino.0, self.fs.permit(ino.0, &caller(req)));
        let t = try_reply!(reply, _op, ino.0, self.fs.readlink(ino.0));
        reply.data(&t);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _op = self.op("open", ino.0);
        try_reply!(reply, _op, ino.0, self.fs.permit(ino.0, &caller(req)));
        let o = try_reply!(reply, _op, ino.0, self.fs.open(ino.0, flags.0));
        let mut f = FopenFlags::empty();
        if o.keep_cache {
            f |= FopenFlags::FOPEN_KEEP_CACHE;
        }
        if o.direct_io {
            f |= FopenFlags::FOPEN_DIRECT_IO;
        }
        reply.opened(FileHandle(o.fh), f);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _op = self.op("read", ino.0);
        let data = try_reply!(reply, _op, ino.0, self.fs.read(ino.0, fh.0, offset, size));
        reply.data(&data);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _op = self.op("release", _ino.0);
        self.fs.release(fh.0);
        reply.ok();
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _op = self.op("flush", ino.0);
        // For a file in incoming/ this waits for the commit: close() gets the outcome.
        match self.fs.flush(fh.0, req.pid()) {
            Ok(()) => reply.ok(),
            Err(e) => {
                _op.failed();
                tracing::warn!(ino = ino.0, "{e}");
                reply.error(errno(&e));
            }
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _op = self.op("opendir", ino.0);
        if self.no_opendir {
            reply.error(Errno::ENOSYS);
            return;
        }
        try_reply!(reply, _op, ino.0, self.fs.permit(ino.0, &caller(req)));
        try_reply!(reply, _op, ino.0, self.fs.opendir(ino.0));
        let flags = if self.fs.dir_is_immutable(ino.0) {
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        reply.opened(FileHandle(0), flags);
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _op = self.op("readdir", ino.0);
        let who = caller(req);
        let listed = self
            .fs
            .readdir_for(&who, ino.0, offset, |child, kind, name, next| {
                reply.add(
                    INodeNo(child),
                    next,
                    file_type(kind),
                    OsStr::from_bytes(name),
                )
            });
        try_reply!(reply, _op, ino.0, listed);
        reply.ok();
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _op = self.op("readdirplus", ino.0);
        let who = caller(req);
        let listed = self
            .fs
            .readdirplus_for(&who, ino.0, offset, |child, name, a, next| {
                reply.add(
                    INodeNo(child),
                    next,
                    OsStr::from_bytes(name),
                    &a.ttl,
                    &file_attr(&a.attr),
                    Generation(0),
                )
            });
        try_reply!(reply, _op, ino.0, listed);
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _op = self.op("releasedir", _ino.0);
        reply.ok();
    }

    /// `df` of the mount: for a local repository, the space of the file system that holds
    /// it (what backups through `incoming/` can still use); for an object store, which
    /// has no capacity to report, 1 PiB free ([`UNBOUNDED_BLOCKS`]). Names are up to 255
    /// bytes either way.
    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _op = self.op("statfs", _ino.0);
        const NAME_MAX: u32 = 255;
        match self.space_of.as_deref().map(rustix::fs::statvfs) {
            Some(Ok(s)) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                NAME_MAX,
                s.f_frsize as u32,
            ),
            other => {
                if let Some(Err(e)) = other {
                    tracing::debug!("statfs of the repository directory failed: {e}");
                }
                let bs = BLKSIZE;
                reply.statfs(
                    UNBOUNDED_BLOCKS,
                    UNBOUNDED_BLOCKS,
                    UNBOUNDED_BLOCKS,
                    UNBOUNDED_FILES,
                    UNBOUNDED_FILES,
                    bs,
                    NAME_MAX,
                    bs,
                )
            }
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _op = self.op("getxattr", ino.0);
        try_reply!(reply, _op, ino.0, self.fs.permit(ino.0, &caller(req)));
        match try_reply!(
            reply,
            _op,
            ino.0,
            self.fs.getxattr(ino.0, name.as_bytes(), size)
        ) {
            XattrReply::Size(n) => reply.size(n),
            XattrReply::Data(d) => reply.data(&d),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _op = self.op("listxattr", ino.0);
        try_reply!(reply, _op, ino.0, self.fs.permit(ino.0, &caller(req)));
        match try_reply!(reply, _op, ino.0, self.fs.listxattr(ino.0, size)) {
            XattrReply::Size(n) => reply.size(n),
            XattrReply::Data(d) => reply.data(&d),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let _op = self.op("lseek", ino.0);
        let o = try_reply!(reply, _op, ino.0, self.fs.lseek(ino.0, offset, whence));
        reply.offset(o);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let _op = self.op("access", ino.0);
        // Called only without default_permissions (the owner's private mount): reading is
        // allowed, writing where a write works (see `writable`), EROFS elsewhere.
        let _ = try_reply!(reply, _op, ino.0, self.fs.getattr(ino.0));
        if mask.contains(fuser::AccessFlags::W_OK)
            && !try_reply!(reply, _op, ino.0, self.fs.writable(ino.0))
        {
            reply.error(erofs());
        } else {
            reply.ok();
        }
    }

    // ---- everything that would modify a backup: EROFS (incoming/ and vaults aside) ----

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _op = self.op("setattr", ino.0);
        let e = try_reply!(reply, _op, ino.0, self.fs.setattr_incoming(ino.0, size));
        reply.attr(&e.ttl, &file_attr(&e.attr));
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let _op = self.op("mknod", _parent.0);
        reply.error(erofs());
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let _op = self.op("mkdir", parent.0);
        let e = try_reply!(
            reply,
            _op,
            parent.0,
            self.fs.mkdir(parent.0, name.as_bytes(), req.uid())
        );
        reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0));
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _op = self.op("unlink", parent.0);
        try_reply!(
            reply,
            _op,
            parent.0,
            self.fs.unlink(parent.0, name.as_bytes(), req.uid())
        );
        reply.ok();
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _op = self.op("rmdir", parent.0);
        try_reply!(
            reply,
            _op,
            parent.0,
            self.fs.rmdir(parent.0, name.as_bytes(), req.uid())
        );
        reply.ok();
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        let _op = self.op("symlink", _parent.0);
        reply.error(erofs());
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _op = self.op("rename", parent.0);
        try_reply!(
            reply,
            _op,
            parent.0,
            self.fs.rename(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                req.uid()
            )
        );
        reply.ok();
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _op = self.op("link", _ino.0);
        reply.error(erofs());
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _op = self.op("write", ino.0);
        let n = try_reply!(
            reply,
            _op,
            ino.0,
            self.fs.write(fh.0, offset, data, req.pid())
        );
        reply.written(n);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _op = self.op("setxattr", _ino.0);
        reply.error(erofs());
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        let _op = self.op("removexattr", _ino.0);
        reply.error(erofs());
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let _op = self.op("create", parent.0);
        let (e, opened) = try_reply!(
            reply,
            _op,
            parent.0,
            self.fs.create(parent.0, name.as_bytes(), req.uid())
        );
        reply.created(
            &e.ttl,
            &file_attr(&e.attr),
            Generation(0),
            FileHandle(opened.fh),
            FopenFlags::empty(),
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _op = self.op("fallocate", ino.0);
        try_reply!(
            reply,
            _op,
            ino.0,
            self.fs.fallocate(fh.0, offset, length, mode)
        );
        reply.ok();
    }

    /// fsync succeeds and makes nothing durable. A file in `incoming/` becomes durable as
    /// a whole, when it is closed (its `flush` waits for the point's commit and answers
    /// its outcome); before that there is no partial point to sync, and failing would
    /// break writers that sync before closing (`dd conv=fsync`, `rsync --fsync`).
    /// Everything else is read-only, with nothing to sync.
    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _op = self.op("fsync", _ino.0);
        reply.ok();
    }
}
