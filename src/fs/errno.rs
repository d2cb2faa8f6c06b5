//! The one place where errors become errno values. Both matches are exhaustive, so a new
//! error variant does not compile until someone decides its errno here.
//!
//! What the read-only tree answers, by operation (the control plane's writable parts,
//! `incoming/` and vault directories, have their own rules in `incoming.rs`):
//!
//! | operation | answer |
//! |---|---|
//! | lookup of a missing name | ENOENT (not cached by the kernel: new points appear) |
//! | open for writing, O_TRUNC, create, mkdir, unlink, rmdir, rename, link, symlink, mknod, setattr, setxattr, removexattr, write, fallocate | EROFS |
//! | read of a file whose chunk is damaged, missing or unreachable | EIO for that read (logged with file and chunk); other files unaffected |
//! | listing of or lookup in a directory whose tree chunk is damaged | EIO (logged with directory and chunk) |
//! | getxattr of an absent name | ENODATA; buffer too small: ERANGE |
//! | lseek SEEK_DATA at/after the last data, or any at/after EOF | ENXIO |
//! | readlink of a non-symlink | EINVAL |
//! | opendir of a file, open of a directory | ENOTDIR, EISDIR |

use crate::backend::BackendError;
use crate::control::ingest::IngestError;
use crate::repo::RepoError;

use super::reply::FsError;

impl FsError {
    /// The errno the kernel gets for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            // Backups are immutable: every write, create, rename, chmod, setxattr... gets
            // "read-only file system", the answer tools expect from a snapshot.
            FsError::ReadOnly => libc::EROFS,
            // getxattr of a name the file does not have.
            FsError::NoXattr => libc::ENODATA,
            // getxattr/listxattr with a buffer too small for the value.
            FsError::Range => libc::ERANGE,
            // lseek(SEEK_DATA/SEEK_HOLE) at or past the end, or no data after the offset.
            FsError::NoData => libc::ENXIO,
            FsError::BadHandle => libc::EBADF,
            FsError::Invalid => libc::EINVAL,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            // Only the mount's owner and root may write into incoming/.
            FsError::Access => libc::EACCES,
            // Deleting a recovery point needs --allow-delete; removing .vaultfs never works.
            FsError::NotPermitted => libc::EPERM,
            // fallocate modes other than reserving space and punching holes.
            FsError::Unsupported => libc::EOPNOTSUPP,
            // A failed ingest: close() reports it (the reason is in the task file).
            FsError::Ingest(e) => match e {
                // The disk or quota of the repository is full: the writer can free space
                // and try again.
                IngestError::Backup(e) if storage_full(e) => libc::ENOSPC,
                // Cancelled (`task cancel`, `rm .vaultfs/tasks/<id>.json`): no point made.
                IngestError::Backup(e) if matches!(**e, RepoError::Cancelled) => libc::ECANCELED,
                // Any other failure of the backup (a malformed archive, a store that
                // failed, a vault deleted meanwhile) and a stopped ingest: close() says
                // "input/output error", the reason is in the task file and the log.
                IngestError::Backup(_) | IngestError::Gap { .. } | IngestError::Stopped(_) => {
                    libc::EIO
                }
            },
            FsError::Repo(e) => repo_errno(e),
        }
    }
}

/// Whether a repository error means its disk or quota is full.
fn storage_full(e: &RepoError) -> bool {
    match e {
        RepoError::Backend(b) => b.is_storage_full(),
        RepoError::Io { source, .. } => matches!(
            source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT)
        ),
        _ => false,
    }
}

/// The errno of a repository error met while serving a request.
pub fn repo_errno(e: &RepoError) -> i32 {
    match e {
        // A damaged or missing chunk or tree: the data cannot be produced. EIO for that read
        // only; everything else keeps being served.
        RepoError::Damaged { .. } => libc::EIO,
        RepoError::Backend(b) => backend_errno(b),
        // Things that vanished under the mount (a vault or point deleted by another host).
        RepoError::VaultNotFound(_)
        | RepoError::PointNotFound { .. }
        | RepoError::NoPoints(_)
        | RepoError::PathNotFound { .. } => libc::ENOENT,
        RepoError::InvalidVaultName(_) => libc::ENOENT,
        // Cannot happen once mounted (the keys are open); if it does, the data is unreadable.
        RepoError::WrongPassword(_)
        | RepoError::NotARepository(_)
        | RepoError::Config { .. }
        | RepoError::AlreadyInitialized(_) => libc::EIO,
        RepoError::VaultExists(_) => libc::EEXIST,
        RepoError::VaultNotEmpty { .. } => libc::ENOTEMPTY,
        RepoError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        RepoError::Locked(_) => libc::EBUSY,
        // Bad input reaches the mount only inside an ingest (see `FsError::Ingest`) or
        // from a request the mount checks itself first.
        RepoError::BadInput(_) => libc::EINVAL,
        RepoError::Internal(_) => libc::EIO,
        RepoError::VaultFull { .. } => libc::ENOSPC,
        RepoError::Protected { .. } => libc::EPERM,
        // A repository of an older format takes no writes until upgraded.
        RepoError::OldFormat { .. } => libc::EROFS,
        // A job stopped by `task cancel` or `rm .vaultfs/tasks/<id>.json`.
        RepoError::Cancelled => libc::ECANCELED,
    }
}

fn backend_errno(e: &BackendError) -> i32 {
    match e {
        // An object the repository refers to is gone or short: the data is lost for us.
        BackendError::NotFound { .. } | BackendError::OutOfRange { .. } => libc::EIO,
        BackendError::AlreadyExists { .. } => libc::EEXIST,
        // Local I/O errors keep their own errno (ENOSPC, EACCES...), others are EIO.
        BackendError::Io { error, .. } => error.raw_os_error().unwrap_or(libc::EIO),
        // A remote store that failed or timed out: EIO (not EAGAIN, which readers such as
        // cp do not retry and report confusingly).
        BackendError::Remote { .. } => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn mapping() {
        assert_eq!(FsError::ReadOnly.errno(), libc::EROFS);
        assert_eq!(FsError::NotFound.errno(), libc::ENOENT);
        let damaged = RepoError::damaged("chunk x", "authentication failed");
        assert_eq!(FsError::Repo(Arc::new(damaged)).errno(), libc::EIO);
        let remote = RepoError::Backend(BackendError::Remote {
            op: "get",
            key: "packs/x".into(),
            message: "timeout".into(),
            transient: true,
        });
        assert_eq!(FsError::Repo(Arc::new(remote)).errno(), libc::EIO);
    }
}
