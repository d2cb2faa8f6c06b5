//! The typed answers of the filesystem's operations, and the error they fail with: what
//! [`super::ops::VaultFs`] returns and [`super::fuse`] converts. No fuser types here, so the
//! logic runs in unit tests without a kernel.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::Chunk;
use crate::control::ingest::IngestError;
use crate::repo::RepoError;

/// Entry and attribute TTL of backup contents and points: immutable, cached long.
pub const TREE_TTL: Duration = Duration::from_secs(24 * 3600);
/// TTL of things that change when points arrive: the root, vault directories, `latest`.
pub const LIVE_TTL: Duration = Duration::from_secs(1);
/// TTL of the generated control files: none.
pub const CONTROL_TTL: Duration = Duration::ZERO;
/// `st_blksize` reported for every file.
pub const BLKSIZE: u32 = 4096;

/// The type of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// Attributes, as `stat` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    /// 512-byte blocks actually stored: holes do not count.
    pub blocks: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky.
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device number in the kernel's encoding (`new_encode_dev`).
    pub rdev: u32,
}

impl Attr {
    /// A directory owned by `uid:gid`, read-only.
    pub fn dir(ino: u64, mtime_ns: i64, uid: u32, gid: u32) -> Attr {
        Attr {
            ino,
            size: 0,
            blocks: 0,
            mtime_ns,
            ctime_ns: mtime_ns,
            kind: FileKind::Dir,
            perm: 0o555,
            nlink: 2,
            uid,
            gid,
            rdev: 0,
        }
    }

    /// The same owner and times, as a regular file of `size` bytes with mode `perm`.
    pub fn as_file(mut self, size: u64, perm: u16) -> Attr {
        self.kind = FileKind::File;
        self.perm = perm;
        self.nlink = 1;
        self.size = size;
        self.blocks = size.div_ceil(512);
        self
    }
}

/// A lookup's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

/// An open's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Keep the kernel's page cache across opens (immutable content).
    pub keep_cache: bool,
    /// Bypass the page cache (generated files whose size is not known in advance).
    pub direct_io: bool,
}

/// A getxattr/listxattr answer: the size asked for, or the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
}

/// The bytes of one read: a range of a cached chunk (or of a control file's content) when
/// the read lies within it, so that nothing is copied before the reply; a buffer of its
/// own when the read spans chunks or holes.
#[derive(Debug)]
pub enum ReadData {
    Owned(Vec<u8>),
    Shared(Chunk, std::ops::Range<usize>),
}

impl std::ops::Deref for ReadData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ReadData::Owned(v) => v,
            ReadData::Shared(c, r) => &c[r.clone()],
        }
    }
}

/// A kernel cache invalidation the logic asks for; sent by the adapter from a thread of
/// its own (never from inside a request on the same directory, which could deadlock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inval {
    Entry { parent: u64, name: Vec<u8> },
    Inode(u64),
}

/// Why an operation failed. Mapped to errno in `errno.rs`, exhaustively; its `Display` is
/// what log lines print.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("read-only: backups cannot be changed")]
    ReadOnly,
    #[error("no such extended attribute")]
    NoXattr,
    #[error("the buffer is too small for the value")]
    Range,
    #[error("no data at or after that offset")]
    NoData,
    #[error("no such open file")]
    BadHandle,
    #[error("invalid argument")]
    Invalid,
    /// mkdir of an existing vault.
    #[error("it exists already")]
    Exists,
    /// rmdir of a vault that holds points.
    #[error("the directory is not empty")]
    NotEmpty,
    /// A write into incoming/ by someone other than the mount's owner or root.
    #[error("only the mount's owner and root may write here")]
    Access,
    /// Deleting a recovery point without --allow-delete.
    #[error("not permitted (deleting recovery points needs --allow-delete)")]
    NotPermitted,
    /// An operation the file does not support (a fallocate mode).
    #[error("operation not supported")]
    Unsupported,
    /// An ingest that failed: its reason is in the task file and the log.
    #[error("ingest failed: {0}")]
    Ingest(IngestError),
    #[error("{0}")]
    Repo(Arc<RepoError>),
}

impl From<RepoError> for FsError {
    fn from(e: RepoError) -> Self {
        FsError::Repo(Arc::new(e))
    }
}

impl From<Arc<RepoError>> for FsError {
    fn from(e: Arc<RepoError>) -> Self {
        FsError::Repo(e)
    }
}

pub type Result<T, E = FsError> = std::result::Result<T, E>;
