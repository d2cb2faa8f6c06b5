//! `vaultfs mount` in the foreground or as a daemon, `vaultfs umount`, and the
//! `mount.fuse.vaultfs` helper that mount(8) runs for `mount -t fuse.vaultfs` and fstab
//! lines.
//!
//! A daemon is this program started again (`/proc/self/exe`, the same arguments, the
//! environment variable [`DAEMON_CHILD`] set) in a process group of its own: the parent
//! reads the password (a prompt still works), hands it over on the child's stdin, and
//! waits on the child's stdout for one line: `ready` once the mount answers a `stat` of
//! its root, or `error: ...`. The parent exits 0 on `ready` and non-zero otherwise; the
//! child then points stdin and stdout at /dev/null and serves until unmounted. Nothing
//! secret is in an argument or the environment of the daemon.

use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use super::{Global, open_store, output, policy, read_password};
use crate::repo::Repository;

/// Set in the environment of a daemon started by `mount --daemon`.
pub const DAEMON_CHILD: &str = "VAULTFS_DAEMON_CHILD";

/// The name mount(8) runs for file systems of type `fuse.vaultfs`.
pub const HELPER_NAME: &str = "mount.fuse.vaultfs";

#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// An empty directory to mount on.
    pub mountpoint: PathBuf,
    /// Memory budget of the mount, e.g. 256M or 1G: decompressed chunks, the inode
    /// table and buffers in flight.
    #[arg(long, default_value = "256M", value_parser = output::parse_size)]
    pub cache_size: u64,
    /// Keep fetched chunks (still encrypted) in this directory across mounts.
    #[arg(long, value_name = "DIR")]
    pub disk_cache: Option<PathBuf>,
    /// Size bound of the disk cache.
    #[arg(long, default_value = "4G", value_parser = output::parse_size)]
    pub disk_cache_size: u64,
    /// Let other users read the mount (the kernel then checks file modes).
    #[arg(long)]
    pub allow_other: bool,
    /// Let `rmdir <vault>/<point>` delete a recovery point (EPERM otherwise, and for
    /// a protected point). The chunks it alone used stay in the packs until `vaultfs
    /// prune`.
    #[arg(long)]
    pub allow_delete: bool,
    /// Mount over a directory that holds files, hiding them while mounted (refused
    /// otherwise, saying so). `-o nonempty` in fstab.
    #[arg(long)]
    pub nonempty: bool,
    /// Re-read the vault and point lists every this many seconds, in the background.
    #[arg(long, default_value_t = 2)]
    pub refresh_secs: u64,
    /// FUSE session threads (requests served in parallel).
    #[arg(long, default_value_t = 8)]
    pub threads: usize,
    /// How far ahead of a sequential reader chunks are loaded, e.g. 32M (0: none).
    #[arg(long, default_value = "32M", value_parser = output::parse_size)]
    pub readahead: u64,
    /// Chunk loads in the background at once; more keeps a distant store busier.
    #[arg(long, default_value_t = crate::fs::DEFAULT_FETCHERS as u16,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub fetchers: u16,
    /// Do not run the scheduler (see `vaultfs serve`) in the mount.
    #[arg(long)]
    pub no_schedule: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464: FUSE
    /// operations and latencies, cache, store calls and bytes, tasks.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Return once the mount answers (exit 0), leaving it served by a daemon in the
    /// background; exit non-zero with the reason when it cannot start.
    #[arg(long)]
    pub daemon: bool,
    /// With --daemon: write the daemon's pid to FILE (removed when it exits).
    #[arg(long, value_name = "FILE", requires = "daemon")]
    pub pid_file: Option<PathBuf>,
    /// With --daemon: print the mount point, repository and daemon pid as JSON once the
    /// mount answers.
    #[arg(long, requires = "daemon")]
    pub json: bool,
    /// With --daemon: append the daemon's log to FILE (otherwise it is discarded;
    /// RUST_LOG sets the level, warn by default).
    #[arg(long, value_name = "FILE", requires = "daemon")]
    pub log_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct UmountArgs {
    /// The mount point of a vaultfs mount.
    pub mountpoint: PathBuf,
    /// Do not wait for backups being written into incoming/: abort them (nothing of
    /// them is committed) and detach the mount even when files are open in it.
    #[arg(long)]
    pub force: bool,
    /// How long to wait for running ingests, then for the daemon to exit, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Print what was done as JSON: mountpoint, forced, daemon_pid.
    #[arg(long)]
    pub json: bool,
}

/// `vaultfs mount`.
pub fn mount(g: &Global, a: MountArgs) -> Result<i32> {
    let child = std::env::var_os(DAEMON_CHILD).is_some();
    if a.daemon && !child {
        return start_daemon(g, &a);
    }
    if !child {
        return serve(g, &a, None);
    }
    // The daemon: its own session (no terminal's signals), the password on stdin.
    let _ = rustix::process::setsid();
    let mut pw = Vec::new();
    std::io::stdin()
        .read_to_end(&mut pw)
        .context("reading the password from the parent")?;
    let r = serve(g, &a, Some(pw));
    if let Err(e) = &r {
        // Unseen when the mount was up already: stdout is /dev/null by then.
        println!("error: {}", super::errors::relay(e));
    }
    r
}

/// Mounts and serves until unmounted; `daemon_password` is given in a daemon.
fn serve(g: &Global, a: &MountArgs, daemon_password: Option<Vec<u8>>) -> Result<i32> {
    crate::fs::check_mountpoint(&a.mountpoint, a.nonempty)?;
    let daemon = daemon_password.is_some();
    let pw = match daemon_password {
        Some(pw) => pw,
        None => read_password(g, false)?,
    };
    let signals = crate::fs::block_exit_signals();
    let store = crate::backend::counting::CountingStore::new(open_store(g)?);
    let backend_counts = Some(store.counts());
    let repo = Repository::open(Arc::new(store), &pw)?;
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<()>(1);
    let opts = crate::fs::MountOptions {
        cache_size: a.cache_size,
        disk_cache: a.disk_cache.clone(),
        disk_cache_size: a.disk_cache_size,
        allow_other: a.allow_other,
        allow_delete: a.allow_delete,
        nonempty: a.nonempty,
        refresh: Duration::from_secs(a.refresh_secs),
        threads: a.threads,
        readahead: a.readahead,
        fetchers: usize::from(a.fetchers),
        local_dir: g
            .repo
            .as_deref()
            .filter(|a| !a.starts_with("s3://"))
            .map(PathBuf::from),
        backend_counts,
        ready: daemon.then_some(ready_tx),
        metrics: a.metrics,
    };
    let pid_file = a.pid_file.clone();
    if daemon {
        let mnt = a.mountpoint.clone();
        let pid_file = pid_file.clone();
        std::thread::Builder::new()
            .name("ready".into())
            .spawn(move || {
                if ready_rx.recv().is_ok() {
                    tell_parent_ready(&mnt, pid_file.as_deref());
                }
            })
            .context("starting a thread")?;
    }
    let scheduler = if a.no_schedule {
        None
    } else {
        // A repository of its own: its store traffic is not the mount's
        // (`.vaultfs/stats.json`).
        let own = Repository::open(open_store(g)?, &pw)?;
        Some(policy::start_mount_scheduler(own)?)
    };
    let mounted = crate::fs::mount(repo, &a.mountpoint, &opts, signals);
    if let Some(stop) = scheduler {
        stop();
    }
    if let Some(f) = &pid_file {
        let _ = std::fs::remove_file(f);
    }
    mounted?;
    Ok(0)
}

/// In the daemon, once the session runs: checks that the mount answers, writes the pid
/// file, says `ready` to the parent and lets go of the pipes.
fn tell_parent_ready(mnt: &Path, pid_file: Option<&Path>) {
    let answer = std::fs::metadata(mnt)
        .map_err(|e| format!("the new mount at {} does not answer: {e}", mnt.display()))
        .and_then(|_| match pid_file {
            Some(f) => std::fs::write(f, format!("{}\n", std::process::id()))
                .map_err(|e| format!("writing the pid file {}: {e}", f.display())),
            None => Ok(()),
        });
    let mut out = std::io::stdout().lock();
    let _ = match &answer {
        Ok(()) => writeln!(out, "ready {}", std::process::id()),
        Err(why) => writeln!(out, "error: [io] {why}"),
    };
    let _ = out.flush();
    drop(out);
    if answer.is_err() {
        // The parent reports the failure; the mount must not stay behind it.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGTERM);
        return;
    }
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stdin(&null);
    }
}

/// `mount --daemon` in the parent: starts the daemon and waits for its word.
fn start_daemon(g: &Global, a: &MountArgs) -> Result<i32> {
    let mnt = crate::fs::check_mountpoint(&a.mountpoint, a.nonempty)?;
    let pw = read_password(g, false)?;
    let stderr = match &a.log_file {
        Some(f) => std::process::Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .with_context(|| format!("opening the log file {}", f.display()))?,
        ),
        None => std::process::Stdio::null(),
    };
    let mut child = std::process::Command::new("/proc/self/exe")
        .arg0("vaultfs")
        .args(super::effective_args().iter().skip(1))
        .env(DAEMON_CHILD, "1")
        // The password goes through the pipe: the daemon's environment, readable in
        // /proc for as long as it runs, does not keep it.
        .env_remove("VAULTFS_PASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .context("starting the mount daemon")?;
    {
        let mut stdin = child.stdin.take().expect("piped");
        // A daemon that died at once closed its end: its own word below says why.
        let _ = stdin.write_all(&pw);
    }
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading the daemon's answer")?;
        if let Some(pid) = line.strip_prefix("ready ") {
            eprintln!(
                "vaultfs: mounted {} at {} (daemon pid {pid})",
                g.repo.as_deref().unwrap_or_default(),
                mnt.display()
            );
            if a.json {
                super::output::print_json(&serde_json::json!({
                    "mountpoint": mnt,
                    "repository": g.repo,
                    "pid": pid.trim().parse::<u32>().ok(),
                }));
            }
            return Ok(0);
        }
        if let Some(why) = line.strip_prefix("error: ") {
            let _ = child.wait();
            return Err(super::errors::Relayed::parse(why).into());
        }
    }
    let status = child.wait().context("waiting for the mount daemon")?;
    let log = match &a.log_file {
        Some(f) => format!("; its log is {}", f.display()),
        None => "; run it with --log-file FILE, or without --daemon, to see why".into(),
    };
    bail!("the mount daemon ended ({status}) before the mount answered{log}")
}

/// A mount that cannot be unmounted because files under it are open (kind `busy`).
fn busy(mnt: &Path) -> anyhow::Error {
    anyhow::Error::new(super::errors::Relayed {
        kind: "busy",
        message: format!(
            "{} is busy: files or directories under it are open (see `fuser -vm {0}`); \
             close them and try again, or use --force to detach it",
            mnt.display()
        ),
    })
}

/// `vaultfs umount`.
pub fn umount(a: UmountArgs) -> Result<i32> {
    let mnt = a
        .mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}", a.mountpoint.display()))?;
    let Some(m) = vaultfs_mount_at(&mnt)? else {
        bail!("{} is not a vaultfs mount", mnt.display());
    };
    let timeout = Duration::from_secs(a.timeout);
    let stats = read_stats(&mnt);
    let pid = stats.as_ref().and_then(|s| s["pid"].as_u64());
    if !a.force {
        let start = Instant::now();
        let mut told = false;
        loop {
            let running =
                read_stats(&mnt).map_or(0, |s| s["ingests_running"].as_u64().unwrap_or(0));
            if running == 0 {
                break;
            }
            if start.elapsed() >= timeout {
                bail!(
                    "{running} backup(s) are still being written into {}/.vaultfs/incoming/: \
                     let them finish and try again, or use --force to abort them (nothing of \
                     them is committed)",
                    mnt.display()
                );
            }
            if !told {
                eprintln!("vaultfs: waiting for {running} backup(s) being written into incoming/");
                told = true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let result = if a.force {
        // Abort the FUSE connection first: a stuck request cannot hold the unmount.
        let abort = format!("/sys/fs/fuse/connections/{}/abort", m.minor);
        if !Path::new(&abort).exists() && rustix::process::geteuid().is_root() {
            // The FUSE control file system is not mounted on every system.
            let _ = nix::mount::mount(
                Some("fusectl"),
                "/sys/fs/fuse/connections",
                Some("fusectl"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            );
        }
        if let Err(e) = std::fs::write(&abort, "1") {
            tracing::warn!("aborting the FUSE connection through {abort}: {e}");
        }
        unmount(&mnt, true)
    } else {
        unmount(&mnt, false)
    };
    result?;
    // The daemon ends with its session; wait so that its lock and scheduler are gone.
    if let Some(pid) = pid {
        let start = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            if start.elapsed() >= timeout {
                bail!(
                    "{} is unmounted, but its daemon (pid {pid}) has not exited after {}s",
                    mnt.display(),
                    a.timeout
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!("vaultfs: unmounted {}", mnt.display());
    if a.json {
        super::output::print_json(&serde_json::json!({
            "mountpoint": mnt,
            "forced": a.force,
            "daemon_pid": pid,
        }));
    }
    Ok(0)
}

fn is_zombie(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn read_stats(mnt: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read(mnt.join(".vaultfs/stats.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// A mount of /proc/self/mountinfo.
struct MountEntry {
    /// The minor device number: the FUSE connection's name under /sys/fs/fuse/connections.
    minor: u32,
}

/// The vaultfs mount at `mnt`, from /proc/self/mountinfo (the last one mounted there).
fn vaultfs_mount_at(mnt: &Path) -> Result<Option<MountEntry>> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let want = mnt.to_string_lossy().replace(' ', "\\040");
    let mut found = None;
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if f.len() < 5 || f[4] != want {
            continue;
        }
        // Mounted by fuser without fusermount, the type is `fuse` (the subtype is not
        // passed to the kernel); the source is always `vaultfs:<repository>`.
        let fstype = f.get(sep + 1).copied().unwrap_or_default();
        let source = f.get(sep + 2).copied().unwrap_or_default();
        let ours = fstype == "fuse.vaultfs" || (fstype == "fuse" && source.starts_with("vaultfs:"));
        found = ours.then(|| MountEntry {
            minor: f[2]
                .split_once(':')
                .and_then(|(_, m)| m.parse().ok())
                .unwrap_or(0),
        });
    }
    Ok(found)
}

fn unmount(mnt: &Path, force: bool) -> Result<()> {
    if rustix::process::geteuid().is_root() {
        let flags = if force {
            nix::mount::MntFlags::MNT_DETACH
        } else {
            nix::mount::MntFlags::empty()
        };
        return nix::mount::umount2(mnt, flags).map_err(|e| match e {
            nix::errno::Errno::EBUSY => busy(mnt),
            e => anyhow!("unmounting {}: {e}", mnt.display()),
        });
    }
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u");
    if force {
        cmd.arg("-z");
    }
    let out = cmd
        .arg(mnt)
        .output()
        .context("running fusermount3 (package fuse3)")?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        if why.contains("busy") {
            return Err(busy(mnt));
        }
        bail!("unmounting {}: {}", mnt.display(), why.trim());
    }
    Ok(())
}

/// Options of mount(8) that concern mount(8), fstab or systemd, not vaultfs.
fn ignored_option(o: &str) -> bool {
    const IGNORED: &[&str] = &[
        "rw",
        "ro",
        "defaults",
        "auto",
        "noauto",
        "user",
        "nouser",
        "users",
        "owner",
        "group",
        "nofail",
        "_netdev",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "exec",
        "noexec",
        "atime",
        "noatime",
        "relatime",
        "diratime",
        "nodiratime",
        "async",
        "sync",
    ];
    IGNORED.contains(&o)
        || o.starts_with("x-")
        || o.starts_with("comment=")
        || o.starts_with("fsname=")
        || o.starts_with("subtype=")
}

/// The arguments of `vaultfs` for a run as `mount.fuse.vaultfs SOURCE DIR [-o OPTS]
/// [-f] [-n] [-s] [-v] [-t TYPE]`: `vaultfs --repo SOURCE mount DIR --daemon` with each
/// vaultfs option of `-o` as its flag (`cache_size=2G` as `--cache-size=2G`,
/// `allow_other` as `--allow-other`); `-f` (fake) checks the arguments only.
pub fn helper_args(args: &[OsString]) -> Result<Vec<OsString>, String> {
    let usage = format!("usage: {HELPER_NAME} SOURCE MOUNTPOINT [-o OPTIONS]");
    let mut positional = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-o") => {
                let o = it.next().ok_or(&usage)?;
                let o = o.to_str().ok_or("mount options must be UTF-8")?;
                options.extend(o.split(',').filter(|s| !s.is_empty()).map(String::from));
            }
            Some(s) if s.starts_with("-o") => {
                options.extend(
                    s[2..]
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                );
            }
            Some("-t" | "-N") => {
                it.next();
            }
            Some("-n" | "-s" | "-v" | "-f" | "-i") => {}
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                return Err(format!("{HELPER_NAME}: unknown flag {s}; {usage}"));
            }
            _ => positional.push(a.clone()),
        }
    }
    let [source, dir] = <[OsString; 2]>::try_from(positional).map_err(|_| usage.clone())?;
    let mut out: Vec<OsString> = vec![
        "vaultfs".into(),
        "--repo".into(),
        source,
        "mount".into(),
        dir,
    ];
    out.push("--daemon".into());
    for o in options {
        if ignored_option(&o) {
            continue;
        }
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o.as_str(), None),
        };
        let flag = format!("--{}", k.replace('_', "-"));
        out.push(match v {
            Some(v) => format!("{flag}={v}").into(),
            None => flag.into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    #[test]
    fn mount_options_become_flags() {
        let a = helper_args(&args(&[
            "/sbin/mount.fuse.vaultfs",
            "/srv/repo",
            "/mnt/b",
            "-o",
            "rw,noauto,_netdev,x-systemd.automount,cache_size=2G,allow_other,password_file=/etc/p",
        ]))
        .unwrap();
        assert_eq!(
            a,
            args(&[
                "vaultfs",
                "--repo",
                "/srv/repo",
                "mount",
                "/mnt/b",
                "--daemon",
                "--cache-size=2G",
                "--allow-other",
                "--password-file=/etc/p",
            ])
        );
        assert!(helper_args(&args(&["m", "/srv/repo"])).is_err());
        assert!(helper_args(&args(&["m", "a", "b", "-q"])).is_err());
        let a = helper_args(&args(&["m", "s3://b/p", "/mnt", "-oreadahead=0", "-n"])).unwrap();
        assert_eq!(a.last().unwrap(), "--readahead=0");
    }
}
