//! Shared helpers of the integration tests: a repository in a temp dir driven through
//! the real `vaultfs` binary, and a tree full of edge cases.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const PASSWORD: &str = "correct horse battery staple";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_vaultfs")
}

/// Where a [`TestRepo`] keeps its objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The directory `repo` in the test's temp dir.
    Local,
    /// `address` (`s3://bucket/prefix`) on the S3 server at `endpoint`.
    S3 { endpoint: String, address: String },
}

/// A repository in a temporary directory, or on an S3 server (then the temp dir holds
/// the test's other files: sources, restores, mount points).
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    /// The local repository directory (unused, never created, for an S3 target).
    pub repo: PathBuf,
    pub target: Target,
}

impl TestRepo {
    /// Initialises a repository (small packs, so tests see several) and one vault `v`.
    pub fn new() -> Self {
        Self::create(Target::Local, 4)
    }

    /// Like [`TestRepo::new`], on the S3 server of `VAULTFS_TEST_S3_ENDPOINT`, at
    /// `s3://BUCKET/repo` (`init` creates the bucket). Panics when the variable is unset:
    /// callers check [`s3_endpoint`] first.
    pub fn new_s3(bucket: &str) -> Self {
        Self::create(Self::s3_target(bucket), 4)
    }

    /// The target `s3://BUCKET/repo` on the server of `VAULTFS_TEST_S3_ENDPOINT`.
    pub fn s3_target(bucket: &str) -> Target {
        let endpoint = std::env::var("VAULTFS_TEST_S3_ENDPOINT")
            .ok()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .expect("VAULTFS_TEST_S3_ENDPOINT is unset (check s3_endpoint() first)");
        Target::S3 {
            endpoint,
            address: format!("s3://{bucket}/repo"),
        }
    }

    /// A repository on `target` with packs of `pack_size_mib`, and one vault `v`.
    pub fn create(target: Target, pack_size_mib: u32) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        let t = TestRepo { dir, repo, target };
        t.ok(&["init", "--pack-size-mib", &pack_size_mib.to_string()]);
        t.ok(&["vault", "create", "v", "--description", "test vault"]);
        t
    }

    /// The repository address given to `vaultfs --repo`: a path, or `s3://bucket/prefix`.
    pub fn location(&self) -> std::ffi::OsString {
        match &self.target {
            Target::Local => self.repo.clone().into_os_string(),
            Target::S3 { address, .. } => address.into(),
        }
    }

    pub fn is_s3(&self) -> bool {
        matches!(self.target, Target::S3 { .. })
    }

    /// The repository's object store, opened the way the CLI opens it.
    pub fn store(&self) -> vaultfs::backend::Store {
        let opts = match &self.target {
            Target::Local => vaultfs::backend::OpenOptions::default(),
            Target::S3 { endpoint, .. } => vaultfs::backend::OpenOptions {
                s3_endpoint: Some(endpoint.clone()),
                ..Default::default()
            },
        };
        let loc = self.location();
        let loc = loc.to_str().expect("UTF-8 repository address");
        vaultfs::backend::open_with(loc, &opts).unwrap_or_else(|e| panic!("open {loc}: {e}"))
    }

    /// The keys of every object of a kind (`packs`, `index`, `points`), on any target.
    pub fn object_keys(&self, kind: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .store()
            .list(&format!("{kind}/"))
            .expect("list")
            .into_iter()
            .map(|o| o.key)
            .filter(|k| !k.rsplit('/').next().unwrap_or("").starts_with(".tmp-"))
            .collect();
        keys.sort();
        keys
    }

    /// Starts `vaultfs mount` on a new directory of the temp dir, with `extra` arguments
    /// and `env` variables, and waits until the kernel shows the mount.
    pub fn mount(&self, extra: &[&str], env: &[(&str, &str)]) -> Mount {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mnt = self.path(&format!("mnt-{n}"));
        fs::create_dir_all(&mnt).unwrap();
        let log = self.path(&format!("mount-{n}.log"));
        let mut cmd = self.cmd();
        cmd.env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .arg("mount")
            .arg(&mnt)
            .args(["--refresh-secs", "1"])
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("spawn vaultfs mount");
        let mut m = Mount {
            child: Some(child),
            dir: mnt,
            log,
        };
        m.wait_mounted();
        m
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("VAULTFS_REPO", self.location())
            .env("VAULTFS_PASSWORD", PASSWORD)
            .env_remove("RUST_LOG");
        if let Target::S3 { endpoint, .. } = &self.target {
            c.env("VAULTFS_S3_ENDPOINT", endpoint);
        }
        c
    }

    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.cmd().args(args).output().expect("run vaultfs")
    }

    /// Runs a command that must succeed; returns stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "vaultfs {:?} failed ({}):\n{}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail; returns stderr.
    pub fn fails<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "vaultfs {:?} should have failed",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The JSON list of points of vault `v`.
    pub fn points(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["points", "v", "--json"])).expect("points json")
    }

    /// Every object file of a kind (`packs`, `index`, `points`) in the repository.
    pub fn objects(&self, kind: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.repo.join(kind)];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if !e.file_name().to_string_lossy().starts_with(".tmp-") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }
}

/// Deterministic pseudo-random bytes (xorshift), incompressible.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Builds a tree with the edge cases a backup must keep: odd names, every kind of
/// symlink, hardlinks, a 64 MiB sparse file, xattrs, setuid/setgid/sticky modes, a fifo,
/// a device node (as root), owners, nanosecond mtimes, empty files and directories,
/// and files that cross chunk boundaries.
pub fn make_tricky_tree(root: &Path) {
    fs::create_dir_all(root.join("names")).unwrap();
    let names: Vec<&[u8]> = vec![
        b"caf\xe9 latin1",
        b"new\nline",
        b"with space",
        b" leading space",
        b"-dash",
        b"\xff\xfe\x01ctl",
        "ünïcödé ☃".as_bytes(),
    ];
    for n in &names {
        fs::write(root.join("names").join(OsStr::from_bytes(n)), n).unwrap();
    }
    let long = "L".repeat(255);
    fs::write(root.join("names").join(&long), b"255-byte name").unwrap();

    fs::create_dir_all(root.join("links")).unwrap();
    symlink("../names/with space", root.join("links/relative")).unwrap();
    symlink("/usr/share", root.join("links/absolute")).unwrap();
    symlink("nowhere/at/all", root.join("links/dangling")).unwrap();
    symlink(OsStr::from_bytes(b"odd\xe9target"), root.join("links/odd")).unwrap();

    fs::create_dir_all(root.join("hard/sub")).unwrap();
    fs::write(root.join("hard/a"), b"shared content\n").unwrap();
    fs::hard_link(root.join("hard/a"), root.join("hard/b")).unwrap();
    fs::hard_link(root.join("hard/a"), root.join("hard/sub/c")).unwrap();

    // 64 MiB sparse file with three islands of data.
    let f = fs::File::create(root.join("sparse.img")).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&random_bytes(1, 100_000), 0).unwrap();
    f.write_all_at(b"island in the middle", 20 << 20).unwrap();
    f.write_all_at(&random_bytes(2, 4096), (64 << 20) - 4096)
        .unwrap();
    drop(f);

    // Files across chunk boundaries: incompressible and compressible.
    fs::write(root.join("random.bin"), random_bytes(3, 9 << 20)).unwrap();
    let mut text = fs::File::create(root.join("text.log")).unwrap();
    for i in 0..200_000 {
        writeln!(text, "line {i} of a compressible log file").unwrap();
    }
    drop(text);

    fs::write(root.join("empty"), b"").unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();

    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    set_mode(&root.join("setuid"), 0o4755);
    fs::create_dir_all(root.join("sticky")).unwrap();
    set_mode(&root.join("sticky"), 0o1777);
    fs::create_dir_all(root.join("setgid")).unwrap();
    set_mode(&root.join("setgid"), 0o2750);
    fs::write(root.join("private"), b"secret").unwrap();
    set_mode(&root.join("private"), 0o600);

    fs::write(root.join("xattrs"), b"has xattrs").unwrap();
    xattr::set(root.join("xattrs"), "user.comment", b"hello").unwrap();
    xattr::set(root.join("xattrs"), "user.binary", &[0, 1, 2, 255]).unwrap();
    xattr::set(root.join("empty-dir"), "user.dir", b"on a dir").unwrap();

    sh(&format!("mkfifo '{}'", root.join("fifo").display()));
    let root_user = rustix::process::geteuid().is_root();
    if root_user {
        sh(&format!(
            "mknod '{}' c 1 3",
            root.join("null-dev").display()
        ));
        sh(&format!(
            "chown 1234:5678 '{}'",
            root.join("private").display()
        ));
        sh(&format!(
            "chown -h 4321:8765 '{}'",
            root.join("links/relative").display()
        ));
    }
    sh(&format!(
        "touch -h -d '2001-02-03 04:05:06.123456789' '{}' '{}' '{}'",
        root.join("text.log").display(),
        root.join("links/dangling").display(),
        root.join("names").display()
    ));
}

/// Compares two trees with rsync (content, names, modes, owners, times, hardlinks,
/// xattrs, ACLs); returns rsync's list of differences (empty when identical).
pub fn rsync_diff(a: &Path, b: &Path) -> String {
    let out = Command::new("rsync")
        .arg("-aHAXnc")
        .arg("--itemize-changes")
        .arg("--delete")
        .arg(format!("{}/", a.display()))
        .arg(format!("{}/", b.display()))
        .output()
        .expect("rsync (apt-get install rsync)");
    assert!(
        out.status.success(),
        "rsync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Allocated bytes of a file (to check that holes stayed holes).
pub fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p).unwrap().blocks() * 512
}

impl Drop for TestRepo {
    /// Deletes the objects of an S3 repository (the server may keep them in memory), unless
    /// the test failed: then they stay for a look, and the address is printed.
    fn drop(&mut self) {
        let Target::S3 { address, .. } = &self.target else {
            return;
        };
        if std::thread::panicking() {
            eprintln!("test failed: the repository {address} is left in place");
            return;
        }
        let Ok(store) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.store()))
        else {
            return;
        };
        if let Ok(objects) = store.list("") {
            for o in objects {
                let _ = store.delete(&o.key);
            }
        }
    }
}

/// The S3 endpoint of the tests (`VAULTFS_TEST_S3_ENDPOINT`), or `None` after a notice
/// when it is unset; under `CI=true` an unset endpoint is a failure.
pub fn s3_endpoint() -> Option<String> {
    match std::env::var("VAULTFS_TEST_S3_ENDPOINT") {
        Ok(e) if !e.trim().is_empty() => Some(e.trim().to_string()),
        _ if std::env::var("CI").as_deref() == Ok("true") => panic!(
            "CI=true and VAULTFS_TEST_S3_ENDPOINT is unset: the S3 tests need a server \
             (bash scripts/s3-rgw.sh start DIR)"
        ),
        _ => {
            static NOTICE: std::sync::Once = std::sync::Once::new();
            NOTICE.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "skipped: S3 end-to-end tests need VAULTFS_TEST_S3_ENDPOINT \
                     (bash scripts/s3-rgw.sh start DIR)"
                );
            });
            None
        }
    }
}

/// A bucket name that no other test or run uses (lowercase, at most 63 characters).
pub fn unique_bucket(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let test: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    format!(
        "vfs-{test}-{}-{:x}",
        std::process::id(),
        nanos % 0xffff_ffff
    )
}

/// Whether real mounts can run here (/dev/fuse, fusermount3, cp, sha256sum, rsync);
/// prints a notice when not, and panics instead under `CI=true`.
pub fn fuse_available() -> bool {
    let dev = Path::new("/dev/fuse").exists();
    let tools = ["fusermount3", "rsync", "cp", "sha256sum"].iter().all(|t| {
        Command::new("which")
            .arg(t)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if dev && tools {
        return true;
    }
    let why =
        format!("mount tests need /dev/fuse ({dev}), fusermount3, rsync, cp, sha256sum ({tools})");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true: {why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// Whether the kernel shows a mount at `dir`.
pub fn mounted(dir: &Path) -> bool {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let want = canon.to_string_lossy().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// A running `vaultfs mount`; unmounts (lazily if need be) and reaps it on drop.
pub struct Mount {
    pub child: Option<std::process::Child>,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Mount {
    fn wait_mounted(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !mounted(&self.dir) {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("vaultfs mount exited with {st}: {}", self.log_text());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not mounted after 30 s: {}",
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// A path inside the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the daemon to exit by itself (after `fusermount3 -u`) and returns its
    /// status; panics after `within`.
    pub fn wait_exit(&mut self, within: std::time::Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "vaultfs mount did not exit within {within:?}: {}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .status();
        }
        if let Some(mut c) = self.child.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while c.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The SHA-256 of a file, by `sha256sum`.
pub fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(p)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum {}", p.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Waits until `cond` holds, polling, with a bound generous enough for a loaded machine
/// (120 s): for conditions that come true in the background (a mount's refresh, a
/// daemon's exit), never a fixed sleep.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(120),
            "waited 120 s for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
