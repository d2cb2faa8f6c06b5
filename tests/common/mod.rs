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
        self.mount_with(extra, env, false)
    }

    /// Like [`TestRepo::mount`]; with `ignore_signals`, the daemon starts with SIGINT and
    /// SIGHUP ignored, as a non-interactive shell starts background jobs.
    pub fn mount_with(&self, extra: &[&str], env: &[(&str, &str)], ignore_signals: bool) -> Mount {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mnt = self.path(&format!("mnt-{n}"));
        fs::create_dir_all(&mnt).unwrap();
        self.mount_on(&mnt, n, extra, env, ignore_signals)
    }

    /// Like [`TestRepo::mount`], on the existing directory `mnt`.
    pub fn mount_at(&self, mnt: &Path, extra: &[&str]) -> Mount {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.mount_on(mnt, 1_000_000 + n, extra, &[], false)
    }

    fn mount_on(
        &self,
        mnt: &Path,
        n: u32,
        extra: &[&str],
        env: &[(&str, &str)],
        ignore_signals: bool,
    ) -> Mount {
        let mnt = mnt.to_path_buf();
        let log = self.path(&format!("mount-{n}.log"));
        let mut cmd = self.cmd();
        cmd.env("RUST_LOG", "warn").envs(env.iter().copied());
        if ignore_signals {
            let mut sh = Command::new("sh");
            sh.args(["-c", "trap '' INT HUP; exec \"$0\" \"$@\"", bin()]);
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => sh.env(k, v),
                    None => sh.env_remove(k),
                };
            }
            cmd = sh;
        }
        cmd.arg("mount")
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
            started: std::time::Instant::now(),
        };
        m.wait_mounted();
        m
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// One new recovery point of vault `v` with a tree backup of each path.
    pub fn backup(&self, paths: &[&Path]) {
        let mut args: Vec<&OsStr> = vec![OsStr::new("backup"), OsStr::new("v")];
        args.extend(paths.iter().map(|p| p.as_os_str()));
        self.ok(&args);
    }

    /// Backs up a directory `src` holding one file `f` with `content`.
    pub fn backup_one_file(&self, content: &[u8]) {
        let src = self.path("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), content).unwrap();
        self.backup(&[&src]);
    }

    /// The names of vault `v`'s points, oldest first.
    pub fn point_ids(&self) -> Vec<String> {
        self.points()
            .as_array()
            .expect("a list of points")
            .iter()
            .map(|p| p["id"].as_str().expect("an id").to_string())
            .collect()
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

    /// Holds the writer lock: a backup of vault `v` reading an image from a stdin pipe
    /// that stays open until the caller writes and closes it (or kills the child).
    /// Returns once the lock object exists.
    pub fn hold_lock(&self) -> std::process::Child {
        let holder = self
            .cmd()
            .args(["backup", "v", "--image", "-", "--name", "held"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the holder's lock", || !self.objects("locks").is_empty());
        holder
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

/// The parts of the suite that can be skipped, by `VAULTFS_TEST_SKIP` (comma-separated)
/// and by nothing else: `fuse` (real mounts), `s3` (everything that needs an S3 server),
/// `s3-stall` (the test that stops the local RGW process with SIGSTOP), `tar-tools` (the
/// archives of the tar corpus whose producing tool is missing: bsdtar, busybox, python3).
pub const SKIPPABLE: [&str; 4] = ["fuse", "s3", "s3-stall", "tar-tools"];

/// Whether the user asked to skip `part` (`VAULTFS_TEST_SKIP=fuse,s3`). Panics on a
/// name that is not a part, so that a typo does not turn into a silent skip or a failure
/// nobody understands.
pub fn skip_requested(part: &str) -> bool {
    assert!(SKIPPABLE.contains(&part), "not a skippable part: {part}");
    let list = std::env::var("VAULTFS_TEST_SKIP").unwrap_or_default();
    let mut asked = false;
    for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        assert!(
            SKIPPABLE.contains(&p),
            "VAULTFS_TEST_SKIP={list}: {p:?} is not one of {SKIPPABLE:?}"
        );
        asked |= p == part;
    }
    asked
}

/// Records that the running test is skipped, loudly: a line on the real stderr (not the
/// one the test harness captures), and a line `BINARY<TAB>TEST<TAB>PART: WHY` appended to
/// the file `VAULTFS_TEST_SKIP_LOG` names (scripts/test.sh counts and lists them).
pub fn record_skip(part: &str, why: &str) {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "?".to_string());
    let test = std::thread::current()
        .name()
        .unwrap_or("?")
        .replace(['\t', '\n'], " ");
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {exe} {test}: {why} (VAULTFS_TEST_SKIP contains {part})"
    );
    if let Ok(log) = std::env::var("VAULTFS_TEST_SKIP_LOG")
        && !log.is_empty()
    {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("VAULTFS_TEST_SKIP_LOG={log}: {e}"));
        // One write per line: lines of tests running at once do not mix.
        f.write_all(format!("{exe}\t{test}\t{part}: {why}\n").as_bytes())
            .unwrap_or_else(|e| panic!("VAULTFS_TEST_SKIP_LOG={log}: {e}"));
    }
}

/// The S3 endpoint of the tests (`VAULTFS_TEST_S3_ENDPOINT`), or `None` when the user
/// skips S3 tests (`VAULTFS_TEST_SKIP=s3`; the skip is recorded). Panics when the
/// endpoint is unset or nothing answers there, and S3 is not skipped.
pub fn s3_endpoint() -> Option<String> {
    if skip_requested("s3") {
        record_skip("s3", "needs an S3 server");
        return None;
    }
    let endpoint = std::env::var("VAULTFS_TEST_S3_ENDPOINT")
        .ok()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "VAULTFS_TEST_S3_ENDPOINT is unset: the S3 tests need a server \
                 (bash scripts/s3-rgw.sh start DIR PORT, then \
                 VAULTFS_TEST_S3_ENDPOINT=http://127.0.0.1:PORT), or VAULTFS_TEST_SKIP=s3 \
                 to skip them"
            )
        });
    if let Err(e) = s3_reachable(&endpoint) {
        panic!(
            "VAULTFS_TEST_S3_ENDPOINT={endpoint}: {e}; start the server or set \
             VAULTFS_TEST_SKIP=s3 to skip the S3 tests"
        );
    }
    Some(endpoint)
}

/// Whether a TCP connection to the endpoint's host and port opens (checked once a run).
fn s3_reachable(endpoint: &str) -> Result<(), String> {
    static ANSWER: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ANSWER
        .get_or_init(|| {
            use std::net::ToSocketAddrs;
            let (rest, default_port) = match endpoint.split_once("://") {
                Some(("https", r)) => (r, 443),
                Some((_, r)) => (r, 80),
                None => (endpoint, 80),
            };
            let host_port = rest.split('/').next().unwrap_or(rest);
            let addr = if host_port
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                host_port.to_string()
            } else {
                format!("{host_port}:{default_port}")
            };
            let addrs: Vec<_> = addr
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {addr}: {e}"))?
                .collect();
            for a in &addrs {
                if std::net::TcpStream::connect_timeout(a, std::time::Duration::from_secs(5))
                    .is_ok()
                {
                    return Ok(());
                }
            }
            Err(format!("nothing answers at {addr}"))
        })
        .clone()
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

/// The tools the mount tests run, from the packages `scripts/test.sh` installs.
const MOUNT_TOOLS: [&str; 7] = [
    "fusermount3",
    "rsync",
    "cp",
    "diff",
    "sha256sum",
    "setfacl",
    "getfacl",
];

/// Whether real mounts run: `false` when the user skips them (`VAULTFS_TEST_SKIP=fuse`;
/// the skip is recorded), `true` when /dev/fuse and the tools are there. Panics when
/// something is missing and mounts are not skipped.
pub fn fuse_available() -> bool {
    if skip_requested("fuse") {
        record_skip("fuse", "needs real FUSE mounts");
        return false;
    }
    static MISSING: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let missing = MISSING.get_or_init(|| {
        let mut missing = Vec::new();
        if !Path::new("/dev/fuse").exists() {
            missing.push("/dev/fuse".to_string());
        }
        for t in MOUNT_TOOLS {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                missing.push(t.to_string());
            }
        }
        missing
    });
    assert!(
        missing.is_empty(),
        "the mount tests need {}: install fuse3 rsync acl diffutils (scripts/test.sh \
         does), load the fuse module, or set VAULTFS_TEST_SKIP=fuse to skip them",
        missing.join(", ")
    );
    true
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
    /// When the daemon was started.
    pub started: std::time::Instant,
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

    /// The daemon's process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
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

/// A log line without its colour codes (`ESC [ ... m`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
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
