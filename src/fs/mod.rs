//! The FUSE mount: vaults, recovery points and backups as a read-only tree.
//!
//! ```text
//! <mountpoint>/
//! ├── <vault>/
//! │   ├── 2026-11-22T225501Z/      a recovery point (UTC time, sortable, no colons)
//! │   │   ├── etc/                 a tree backup: original files, original metadata
//! │   │   └── disk.img             an image backup: one file, holes stay holes
//! │   └── latest -> 2026-11-22T225501Z
//! └── .vaultfs/
//!     ├── vaults/<vault>.json
//!     └── points/<vault>/<point>.json
//! ```
//!
//! Modules, each one part with its own state:
//!
//! - [`ops`]: [`ops::VaultFs`], which routes each operation to the part that owns it;
//!   typed replies ([`reply`]), no fuser;
//! - [`namespace`]: the inode table ([`inodes`]), the listings of vaults, points and
//!   trees, their background refresh and the kernel invalidations;
//! - [`handles`]: open files; [`file`]: one file of a backup (the data path of a read,
//!   lseek, xattrs);
//! - [`readahead`]: what is loaded before it is asked, with hooks at open, read, listing;
//! - [`incoming`]: ingest sessions in `.vaultfs/incoming/`, vault mkdir/rmdir;
//! - [`control`]: the generated files and directories of `.vaultfs/`;
//! - [`access`]: who may see which vault on a mount with `--allow-other` (asked by
//!   [`ops`] at each request);
//! - [`errno`]: the one errno mapping; [`fuse`]: the only fuser user (the adapter, and
//!   the session in [`fuse::session`]).
//!
//! # Concurrency: several session threads
//!
//! fuser runs [`MountOptions::threads`] session threads (default 8), each with its own
//! `/dev/fuse` descriptor (`clone_fd`), and every request is served synchronously on the
//! thread that read it. A slow chunk fetch blocks one thread; the others keep answering
//! (`ls`, `stat`, reads of other files, which come from memory or from other fetches).
//! We chose threads over replies completed from async tasks because the whole stack below
//! (the chunk cache, the repository, the `ObjectStore` trait) is blocking by design, so
//! threads need no runtime and no `block_on` bridges; the price is that at most `threads`
//! fetches run at once for kernel requests, which is also the natural backpressure. The
//! chunk cache makes concurrent readers of one chunk share one fetch, and a pool of
//! prefetch threads ([`MountOptions::fetchers`], 8; bounded queue, hints dropped when
//! full) reads ahead for sequential readers, for files opened in order (and, during such a
//! walk, for each directory as it is listed), and for the subdirectories of a listed
//! directory. Eight keep a store with per-request latency busy and decompression on
//! every core (BENCHMARKS.md has the figures).
//!
//! # Kernel caching
//!
//! Backups are immutable: files open with `FOPEN_KEEP_CACHE`, entries and attributes inside
//! points have a one-day TTL, and inode numbers are stable for the life of the mount. The
//! root, vault directories and `latest` have a one-second TTL; `.vaultfs` files have none
//! and use direct I/O. When a vault's point list changes (re-read after `--refresh-secs`
//! when the vault is looked up, listed or `latest` is read), `latest` and vanished points
//! are invalidated through the notifier, from a thread of its own.
//!
//! Directories are listed by inode and offset, without handles: the daemon asks for
//! `FUSE_NO_OPENDIR_SUPPORT`, so a walk pays no OPENDIR/RELEASEDIR round trips (on kernels
//! without it, OPENDIR answers handle 0 with `FOPEN_CACHE_DIR` for backup directories).
//! A mount with `--allow-other` does not ask for it: its root and generated listings
//! differ from caller to caller ([`access`]), and only OPENDIR's flags keep the kernel
//! from caching them.
//! Listings use readdirplus, so a walk needs no LOOKUP per entry either.
//!
//! # Exit
//!
//! SIGINT, SIGTERM and SIGHUP are blocked in every thread and taken by one thread with
//! `sigwait` (no handler, no unsafe code); the session runs in fuser's background thread,
//! and [`mount`] waits for a signal (then unmounts) or for the kernel to end the session
//! (`fusermount3 -u`, `umount`: then there is nothing left to unmount, and nothing is
//! tried). Either way `mount` returns `Ok` and the command exits 0.

pub mod access;
pub mod control;
pub mod errno;
pub mod file;
pub mod fuse;
pub mod handles;
pub mod incoming;
pub mod inodes;
pub mod namespace;
pub mod ops;
pub mod readahead;
pub mod reply;
pub mod views;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

use crate::cache::{ChunkCache, disk::DiskCache};
use crate::repo::Repository;

/// Default of [`MountOptions::readahead`] (the CLI's `--readahead`).
pub const DEFAULT_READAHEAD: u64 = 32 << 20;
/// Default of [`MountOptions::fetchers`] (the CLI's `--fetchers`).
pub const DEFAULT_FETCHERS: usize = 8;

/// Settings of `vaultfs mount`.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Bytes of decompressed chunks kept in memory.
    pub cache_size: u64,
    /// The optional disk tier, and its size.
    pub disk_cache: Option<PathBuf>,
    pub disk_cache_size: u64,
    /// Let other users in (then with `default_permissions`: the kernel checks modes).
    pub allow_other: bool,
    /// Let `rmdir <vault>/<point>` delete a recovery point (EPERM otherwise).
    pub allow_delete: bool,
    /// Mount over a directory that holds entries (hiding them while mounted).
    pub nonempty: bool,
    /// How old a vault's point list may get before it is re-read.
    pub refresh: Duration,
    /// Session threads.
    pub threads: usize,
    /// How far ahead of a sequential reader chunks are loaded (0: no readahead).
    pub readahead: u64,
    /// Background loads in flight at once (prefetch threads): what keeps a store with
    /// latency busy (S3), and decompression on every core.
    pub fetchers: usize,
    /// The directory of a local repository, whose file system's space `statfs` (`df`)
    /// reports; None for an object store.
    pub local_dir: Option<PathBuf>,
    /// Call counts of the store, shown in `.vaultfs/stats.json` (see
    /// [`crate::backend::counting::CountingStore`]).
    pub backend_counts: Option<Arc<crate::backend::counting::CallCounts>>,
    /// Told once the session serves requests (`mount --daemon` waits for it).
    pub ready: Option<crossbeam_channel::Sender<()>>,
    /// Serve Prometheus metrics on this address (`--metrics`).
    pub metrics: Option<std::net::SocketAddr>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            cache_size: 256 << 20,
            disk_cache: None,
            disk_cache_size: 4 << 30,
            allow_other: false,
            allow_delete: false,
            nonempty: false,
            refresh: Duration::from_secs(2),
            threads: 8,
            readahead: DEFAULT_READAHEAD,
            fetchers: DEFAULT_FETCHERS,
            local_dir: None,
            backend_counts: None,
            ready: None,
            metrics: None,
        }
    }
}

/// Why a mount could not start. Each message says its cause (no `source()`).
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount point {0} does not exist")]
    NoMountpoint(PathBuf),
    #[error("mount point {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("mount point {0} is busy: something is already mounted there")]
    Busy(PathBuf),
    #[error(
        "mount point {0} is not empty: mounting would hide its files (use an empty \
         directory, or --nonempty / -o nonempty to mount over them)"
    )]
    NotEmpty(PathBuf),
    #[error("disk cache {path}: {error}")]
    DiskCache {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("mounting at {path}: {error} (is /dev/fuse available and fusermount3 installed?)")]
    Mount {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("serving metrics on {addr}: {error}")]
    Metrics {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("the FUSE session at {path} ended with an error: {error}")]
    Session {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// Whether `path` is a mount point now (from /proc/self/mountinfo).
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(unescape_mountinfo)
            .is_some_and(|p| p == want)
    })
}

fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let octal = (b[i] == b'\\' && i + 3 < b.len())
            .then(|| u8::from_str_radix(&s[i + 1..i + 4], 8).ok())
            .flatten();
        if let Some(v) = octal {
            out.push(v as char);
            i += 4;
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Checks the mount point before anything else happens: it exists, is a directory,
/// nothing is mounted there, and (unless `nonempty`) it holds no entries the mount
/// would hide.
pub fn check_mountpoint(mountpoint: &Path, nonempty: bool) -> Result<PathBuf, MountError> {
    let meta = std::fs::metadata(mountpoint)
        .map_err(|_| MountError::NoMountpoint(mountpoint.to_path_buf()))?;
    if !meta.is_dir() {
        return Err(MountError::NotADirectory(mountpoint.to_path_buf()));
    }
    let canon = mountpoint
        .canonicalize()
        .map_err(|_| MountError::NoMountpoint(mountpoint.to_path_buf()))?;
    if is_mount_point(&canon) {
        return Err(MountError::Busy(canon));
    }
    if !nonempty && std::fs::read_dir(&canon).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(MountError::NotEmpty(canon));
    }
    Ok(canon)
}

/// SIGINT, SIGTERM and SIGHUP, blocked in the calling thread (and so in every thread it
/// starts afterwards), waiting for [`mount`]'s signal thread.
///
/// Call it before anything starts threads, in particular before opening an S3 store
/// (its runtime's threads would otherwise take the signals, and drop them when the shell
/// started us with SIGINT ignored), and after any password prompt (Ctrl-C must still
/// abort that).
#[derive(Debug)]
pub struct ExitSignals(SigSet);

pub fn block_exit_signals() -> ExitSignals {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    if let Err(e) = signals.thread_block() {
        tracing::warn!("cannot block signals ({e}); Ctrl-C will not unmount cleanly");
    }
    ExitSignals(signals)
}

/// Re-reads the vault and point lists every `every` on a thread of its own (lookups
/// answer from memory, so a slow store delays new points, never a lookup). Ends with the
/// mount (it holds only a weak reference).
fn spawn_refresher(vfs: &Arc<ops::VaultFs>, every: Duration) -> std::io::Result<()> {
    let weak = Arc::downgrade(vfs);
    let every = every.max(Duration::from_millis(100));
    std::thread::Builder::new()
        .name("refresh".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                match weak.upgrade() {
                    Some(vfs) => vfs.refresh_lists(),
                    None => return,
                }
            }
        })
        .map(|_| ())
}

/// Keeps the inode table within its budget ([`namespace::Namespace::trim`]) on a thread
/// of its own, woken when the table outgrows it. Ends with the mount.
fn spawn_trimmer(vfs: &Arc<ops::VaultFs>) -> std::io::Result<()> {
    let weak = Arc::downgrade(vfs);
    let signal = vfs.namespace().trim_signal();
    std::thread::Builder::new()
        .name("inode-trim".into())
        .spawn(move || {
            loop {
                // Waits holding only the weak reference: the mount's end is not delayed.
                let woken = signal.recv_timeout(Duration::from_secs(1)).is_ok();
                let Some(vfs) = weak.upgrade() else { return };
                if woken {
                    vfs.namespace().trim();
                }
            }
        })
        .map(|_| ())
}

/// Mounts the repository and serves it until unmounted or interrupted.
pub fn mount(
    repo: Arc<Repository>,
    mountpoint: &Path,
    opts: &MountOptions,
    signals: ExitSignals,
) -> Result<(), MountError> {
    let mnt = check_mountpoint(mountpoint, opts.nonempty)?;
    let signals = signals.0;

    let disk = match &opts.disk_cache {
        Some(dir) => Some(
            DiskCache::open(dir, &repo.config().repo_id, opts.disk_cache_size).map_err(
                |error| MountError::DiskCache {
                    path: dir.clone(),
                    error,
                },
            )?,
        ),
        None => None,
    };
    let cache = ChunkCache::new(repo.clone(), opts.cache_size, disk);
    cache.measure_rss(control::rss_bytes);
    cache.start_prefetchers(opts.fetchers, opts.fetchers * 8);
    let base_memory = control::rss_bytes();
    let fs_opts = ops::FsOptions {
        readahead_bytes: opts.readahead,
        base_memory,
        refresh: opts.refresh,
        allow_delete: opts.allow_delete,
        background_refresh: true,
        access_control: opts.allow_other,
        // Half of what the process did not hold before serving: the chunks keep at least
        // a quarter of the budget (`cache::budget`), the rest is slack of the allocator.
        inode_budget: (opts.cache_size.saturating_sub(base_memory) / 2).max(4 << 20),
        ..Default::default()
    };
    let vfs = Arc::new(ops::VaultFs::new(repo.clone(), cache, fs_opts));
    if let Some(c) = &opts.backend_counts {
        vfs.set_backend_counts(c.clone());
    }

    spawn_refresher(&vfs, opts.refresh)
        .and_then(|_| spawn_trimmer(&vfs))
        .map_err(|error| MountError::Session {
            path: mnt.clone(),
            error,
        })?;
    let metrics = match opts.metrics {
        Some(addr) => {
            let weak = Arc::downgrade(&vfs);
            let m = crate::metrics::Metrics::new(Box::new(move || {
                weak.upgrade()
                    .map_or(serde_json::Value::Null, |v| v.stats_json())
            }));
            let bound = m
                .serve(addr)
                .map_err(|error| MountError::Metrics { addr, error })?;
            tracing::info!("metrics on http://{bound}/metrics");
            Some(m.fuse.clone())
        }
        None => None,
    };
    fuse::session::serve(vfs.clone(), &repo.location(), &mnt, opts, signals, metrics)?;
    let s = &vfs.cache().stats;
    tracing::info!(
        "unmounted {}: {} chunk fetches, {} cache hits",
        mnt.display(),
        s.fetches.load(std::sync::atomic::Ordering::Relaxed),
        s.hits.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}
