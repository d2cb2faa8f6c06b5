//! The fuser session: its configuration (mount options, session threads, one
//! `/dev/fuse` descriptor per thread), the thread that sends kernel invalidations, and the
//! wait for the end of the mount (a signal, or the kernel ending the session).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fuser::INodeNo;
use nix::sys::signal::{SigSet, Signal};

use super::super::ops::VaultFs;
use super::super::reply::Inval;
use super::super::{MountError, MountOptions, is_mount_point};
use super::FuseFs;

/// The fuser configuration of a mount of `location`.
fn config(location: &str, opts: &MountOptions) -> fuser::Config {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("vaultfs:{location}")),
        fuser::MountOption::Subtype("vaultfs".into()),
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoAtime,
    ];
    if opts.allow_other {
        config.acl = fuser::SessionACL::All;
        config
            .mount_options
            .push(fuser::MountOption::DefaultPermissions);
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    config
}

/// Mounts `vfs` at `mnt` and serves it until `signals` brings a signal (then unmounts) or
/// the kernel ends the session (`fusermount3 -u`, `umount`: then there is nothing left
/// to unmount, and nothing is tried).
pub fn serve(
    vfs: Arc<VaultFs>,
    location: &str,
    mnt: &Path,
    opts: &MountOptions,
    signals: SigSet,
) -> Result<(), MountError> {
    let session_error = |error| MountError::Session {
        path: mnt.to_path_buf(),
        error,
    };
    let (session_end, ended) = crossbeam_channel::bounded::<()>(1);
    let session = fuser::Session::new(
        FuseFs {
            fs: vfs.clone(),
            no_opendir: false,
            space_of: opts.local_dir.clone(),
            session_end: Some(session_end),
        },
        mnt,
        &config(location, opts),
    )
    .map_err(|error| MountError::Mount {
        path: mnt.to_path_buf(),
        error,
    })?;
    vfs.set_invalidator(spawn_invalidator(session.notifier()));

    // The session runs in fuser's background thread; this thread waits for either end:
    // a signal (then it unmounts) or the kernel ending the session (`fusermount3 -u`).
    let (on_signal, signalled) = crossbeam_channel::bounded::<Signal>(1);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = signals.wait() {
                let _ = on_signal.send(sig);
            }
        })
        .map_err(session_error)?;
    let background = session.spawn().map_err(session_error)?;
    if let Some(ready) = &opts.ready {
        let _ = ready.send(());
    }

    eprintln!("vaultfs: mounted {location} at {}", mnt.display());
    let signal = crossbeam_channel::select! {
        recv(signalled) -> sig => sig.ok(),
        recv(ended) -> _ => None,
    };
    match signal {
        Some(sig) => {
            tracing::info!("{sig}: unmounting {}", mnt.display());
            if let Err(e) = background.umount_and_join() {
                if is_mount_point(mnt) {
                    tracing::warn!(
                        "unmounting {} failed ({e}); detaching it lazily",
                        mnt.display()
                    );
                    let _ = nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH);
                    // Files still open on the detached mount are served until closed.
                    let _ = ended.recv();
                } else {
                    return Err(session_error(e));
                }
            }
        }
        // The kernel ended the session: unmounted from outside, nothing left to unmount.
        // fuser 0.18 would still unmount when its handle is dropped (its is_mounted()
        // reads POLLERR the wrong way round, cberner/fuser#703), fail with EINVAL and log
        // "Unmount failed"; and were the directory mounted again meanwhile, it would
        // unmount that. So the handle is asked to unmount only if the mount is still
        // there (the session failed), and otherwise left alone once its thread is done.
        None => {
            while !background.guard.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
            if is_mount_point(mnt) {
                background.umount_and_join().map_err(session_error)?;
            } else {
                std::mem::forget(background);
            }
        }
    }
    Ok(())
}

/// Sends the invalidations the logic asks for, from a thread of its own.
pub fn spawn_invalidator(notifier: fuser::Notifier) -> crossbeam_channel::Sender<Inval> {
    let (tx, rx) = crossbeam_channel::bounded::<Inval>(1024);
    std::thread::Builder::new()
        .name("invalidator".into())
        .spawn(move || {
            while let Ok(i) = rx.recv() {
                let r = match &i {
                    Inval::Entry { parent, name } => {
                        notifier.inval_entry(INodeNo(*parent), OsStr::from_bytes(name))
                    }
                    Inval::Inode(ino) => notifier.inval_inode(INodeNo(*ino), 0, 0),
                };
                if let Err(e) = r {
                    tracing::debug!("invalidation {i:?} failed: {e}");
                }
            }
        })
        .expect("spawning the invalidator thread");
    tx
}
