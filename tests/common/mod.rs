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

/// A repository in a temporary directory.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
}

impl TestRepo {
    /// Initialises a repository (small packs, so tests see several) and one vault `v`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        let t = TestRepo { dir, repo };
        t.ok(&["init", "--pack-size-mib", "4"]);
        t.ok(&["vault", "create", "v", "--description", "test vault"]);
        t
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("VAULTFS_REPO", &self.repo)
            .env("VAULTFS_PASSWORD", PASSWORD)
            .env_remove("RUST_LOG");
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
