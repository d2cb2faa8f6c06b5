//! Tar ingest against a corpus made on this machine: archives written by GNU tar in
//! every `--format` and sparse version, bsdtar, busybox tar, Python's tarfile and cargo,
//! and hand-made damaged and hostile ones (`tests/tar/hand_made.py`). Every valid one,
//! ingested with `backup --tar` and restored, must equal what GNU tar extracts (as root:
//! owners, modes, mtimes, symlinks, hardlinks, xattrs, content; compared with
//! `rsync -aHAXnc`); every invalid one must be refused with a clear message and leave
//! no point.
//!
//! A missing producing tool (bsdtar from libarchive-tools, busybox, python3, cargo) fails
//! the test, unless `VAULTFS_TEST_SKIP` contains `tar-tools`: then its archives are
//! skipped, loudly.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::*;

/// One archive of the corpus.
struct Case {
    tool: &'static str,
    format: String,
    path: PathBuf,
    /// GNU tar exits 2 on it (members it could not extract), yet extracts the rest.
    gnu_fails: bool,
    /// The ingest must warn that it skipped members.
    skips: bool,
    /// Holds a huge sparse file: compared without reading every byte.
    huge: bool,
    /// For an invalid archive: text the refusal must contain.
    refused_with: Option<String>,
}

impl Case {
    fn new(tool: &'static str, format: &str, path: PathBuf) -> Case {
        Case {
            tool,
            format: format.to_string(),
            path,
            gnu_fails: false,
            skips: false,
            huge: false,
            refused_with: None,
        }
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a producing command; it must write `out` (status 0, or 2 when `partial`: a
/// format that cannot hold some member leaves it out and says so).
fn produce(cmd: &mut Command, out: &Path, partial: bool) {
    let o = cmd.output().expect("run a tar producer");
    let code = o.status.code().unwrap_or(-1);
    assert!(
        (code == 0 || (partial && (code == 1 || code == 2))) && out.exists(),
        "{cmd:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A small tree with what archives must carry: odd and long names, symlinks,
/// hardlinks, a sparse file, xattrs, modes, owners, a fifo, a device node, mtimes with
/// nanoseconds. Directories get an old mtime, so that those an archive implies (made
/// at extraction) can be told apart.
fn make_source(root: &Path) {
    fs::create_dir_all(root.join("names")).unwrap();
    for n in [
        &b"new\nline"[..],
        b"caf\xe9",
        "ünï ☃".as_bytes(),
        b" lead",
        b"-dash",
    ] {
        use std::os::unix::ffi::OsStrExt;
        fs::write(root.join("names").join(std::ffi::OsStr::from_bytes(n)), n).unwrap();
    }
    let deep = root.join("d".repeat(60)).join("e".repeat(60));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("f".repeat(90)), b"a path over 100 bytes\n").unwrap();
    fs::write(root.join("n".repeat(150)), b"a 150-byte name\n").unwrap();
    fs::create_dir_all(root.join("links")).unwrap();
    symlink("../names/-dash", root.join("links/relative")).unwrap();
    symlink("/usr/share", root.join("links/absolute")).unwrap();
    symlink("nowhere", root.join("links/dangling")).unwrap();
    fs::create_dir_all(root.join("hard/sub")).unwrap();
    fs::write(root.join("hard/a"), b"shared\n").unwrap();
    fs::hard_link(root.join("hard/a"), root.join("hard/b")).unwrap();
    fs::hard_link(root.join("hard/a"), root.join("hard/sub/c")).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(root.join("sparse.img")).unwrap();
        f.set_len(4 << 20).unwrap();
        f.write_all_at(&random_bytes(1, 8192), 0).unwrap();
        f.write_all_at(b"an island", 2 << 20).unwrap();
        f.write_all_at(&random_bytes(2, 512), (4 << 20) - 512)
            .unwrap();
    }
    fs::write(root.join("random.bin"), random_bytes(3, 300_000)).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("xattrs"), b"has xattrs\n").unwrap();
    xattr::set(root.join("xattrs"), "user.comment", b"hello").unwrap();
    xattr::set(root.join("xattrs"), "user.binary", b"\0\n=\xff").unwrap();
    // POSIX ACLs: named entries (by number and by a name of this host), and a default ACL.
    fs::write(root.join("acl-file"), b"has an ACL\n").unwrap();
    fs::create_dir_all(root.join("acl-dir")).unwrap();
    sh(&format!(
        "cd '{}' && setfacl -m u:1234:rwx,g:5678:r-x,u:nobody:r acl-file && setfacl -d -m u:1234:rwx,g::r-x acl-dir",
        root.display()
    ));
    sh(&format!("mkfifo '{}'", root.join("fifo").display()));
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    sh(&format!(
        "cd '{}' && chmod 4755 setuid && mkdir -m 1777 sticky && mkdir -m 2750 setgid && touch private && chmod 600 private",
        root.display()
    ));
    if rustix::process::geteuid().is_root() {
        sh(&format!(
            "cd '{}' && mknod null-dev c 1 3 && chown 1234:5678 private && chown -h 4321:8765 links/relative",
            root.display()
        ));
    }
    sh(&format!(
        "cd '{}' && find . -exec touch -h -d '2001-02-03 04:05:06.123456789' {{}} +",
        root.display()
    ));
}

/// Directories made at extraction (implied by an archive, not listed in it) carry the
/// time of the run that made them: give the GNU tar copy the ingest's time for those.
fn align_implied_dirs(gnu: &Path, ours: &Path, since: SystemTime) {
    let recent = |p: &Path| {
        fs::symlink_metadata(p)
            .ok()
            .filter(|m| m.is_dir())
            .and_then(|m| m.modified().ok())
            .is_some_and(|t| t >= since)
    };
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let (g, o) = (gnu.join(&rel), ours.join(&rel));
        for e in fs::read_dir(&g).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(rel.join(e.file_name()));
            }
        }
        if recent(&g) && recent(&o) {
            let st = Command::new("touch")
                .arg("-h")
                .arg("-r")
                .arg(&o)
                .arg(&g)
                .status()
                .unwrap();
            assert!(st.success());
        }
    }
}

/// Archives of the producing tools, and the hand-made ones.
fn corpus(t: &TestRepo, src: &Path, skipped_tools: &mut Vec<String>) -> Vec<Case> {
    let dir = t.path("corpus");
    fs::create_dir_all(&dir).unwrap();
    let out = |name: &str| dir.join(name);
    let mut cases = Vec::new();
    let mut missing = |tool: &str, what: &str| -> bool {
        if have(tool) {
            return false;
        }
        skipped_tools.push(format!("{what} (no `{tool}`)"));
        true
    };

    if !missing("tar", "GNU tar archives") {
        for format in ["v7", "oldgnu", "gnu", "ustar", "posix"] {
            let versions: &[&str] = if format == "posix" {
                &["0.0", "0.1", "1.0"]
            } else {
                &[""]
            };
            for v in versions {
                let label = if v.is_empty() {
                    format.to_string()
                } else {
                    format!("{format} sparse {v}")
                };
                let p = out(&format!("gnu-{format}{v}.tar"));
                let mut cmd = Command::new("tar");
                cmd.arg(format!("--format={format}"));
                if !matches!(format, "v7" | "ustar") {
                    cmd.arg("-S");
                }
                if !v.is_empty() {
                    cmd.arg(format!("--sparse-version={v}"));
                }
                if format == "posix" {
                    cmd.args(["--xattrs", "--xattrs-include=*"]);
                }
                cmd.arg("-cf").arg(&p).arg("-C").arg(src).arg(".");
                produce(&mut cmd, &p, matches!(format, "v7" | "ustar"));
                cases.push(Case::new("gnu-tar", &label, p));
            }
        }
        for (flag, ext) in [("--gzip", "tar.gz"), ("--zstd", "tar.zst")] {
            let p = out(&format!("gnu-posix.{ext}"));
            let mut cmd = Command::new("tar");
            cmd.args(["--format=posix", "-S", flag, "-cf"])
                .arg(&p)
                .arg("-C")
                .arg(src)
                .arg(".");
            produce(&mut cmd, &p, false);
            cases.push(Case::new("gnu-tar", &format!("posix {ext}"), p));
        }
        let p = out("gnu-posix-acls.tar");
        let mut cmd = Command::new("tar");
        cmd.args(["--format=posix", "--acls", "--xattrs", "-cf"])
            .arg(&p)
            .arg("-C")
            .arg(src)
            .arg(".");
        produce(&mut cmd, &p, false);
        cases.push(Case::new("gnu-tar", "posix --acls", p));
        // A level-0 incremental dump: directories are dumpdir (`D`) members.
        let p = out("gnu-incremental.tar");
        let mut cmd = Command::new("tar");
        cmd.arg("--format=gnu")
            .arg(format!("--listed-incremental={}", out("snar").display()))
            .arg("-cf")
            .arg(&p)
            .arg("-C")
            .arg(src)
            .arg(".");
        produce(&mut cmd, &p, false);
        cases.push(Case::new("gnu-tar", "gnu incremental (dumpdir)", p));
    }
    if !missing("bsdtar", "bsdtar archives") {
        for format in ["ustar", "pax", "gnutar", "v7", "paxr"] {
            let p = out(&format!("bsdtar-{format}.tar"));
            let mut cmd = Command::new("bsdtar");
            cmd.arg("--format")
                .arg(format)
                .arg("-cf")
                .arg(&p)
                .arg("-C")
                .arg(src)
                .arg(".");
            produce(&mut cmd, &p, format != "pax");
            cases.push(Case::new("bsdtar", format, p));
        }
    }
    if !missing("busybox", "busybox tar archives") {
        let p = out("busybox.tar");
        let mut cmd = Command::new("busybox");
        cmd.args(["tar", "-cf"]).arg(&p).arg("-C").arg(src).arg(".");
        produce(&mut cmd, &p, false);
        cases.push(Case::new("busybox", "default", p));
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tar");
    if !missing("python3", "Python tarfile and hand-made archives") {
        for format in ["ustar", "gnu", "pax"] {
            let p = out(&format!("python-{format}.tar"));
            let mut cmd = Command::new("python3");
            cmd.arg(here.join("python_tar.py"))
                .arg(format)
                .arg(src)
                .arg(&p);
            produce(&mut cmd, &p, false);
            cases.push(Case::new("python-tarfile", format, p));
        }
        let hm = t.path("hand-made");
        produce(
            Command::new("python3")
                .arg(here.join("hand_made.py"))
                .arg(&hm),
            &hm,
            false,
        );
        let mut names: Vec<PathBuf> = fs::read_dir(&hm)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "tar"))
            .collect();
        names.sort();
        for p in names {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            let expect = fs::read_to_string(p.with_extension("expect")).ok();
            let valid = expect.is_none();
            let mut c = Case::new(
                "hand-made",
                if valid { "valid" } else { "invalid" },
                p.clone(),
            );
            c.gnu_fails = stem.contains("symlinks-in-the-way") || stem.contains("dot-dot");
            c.skips = c.gnu_fails;
            c.huge = stem.contains("56g");
            c.refused_with = expect;
            cases.push(c);
        }
    }
    if !missing("cargo", "crate files") {
        let krate = t.path("tiny-crate");
        fs::create_dir_all(krate.join("src")).unwrap();
        fs::write(
            krate.join("Cargo.toml"),
            "[package]\nname = \"tiny-corpus-crate\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
             description = \"x\"\nlicense = \"MIT\"\n\n[workspace]\n",
        )
        .unwrap();
        fs::write(krate.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
        let target = t.path("tiny-crate-target");
        produce(
            Command::new("cargo")
                .args(["package", "--allow-dirty", "--no-verify", "--offline", "-q"])
                .current_dir(&krate)
                .env("CARGO_TARGET_DIR", &target),
            &target,
            false,
        );
        let p = target.join("package/tiny-corpus-crate-0.1.0.crate");
        assert!(p.exists(), "cargo package made no {}", p.display());
        cases.push(Case::new("cargo", "package", p));
        // A crate from the registry cache, if this machine has one.
        let home = std::env::var("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
        let cached = fs::read_dir(home.join("registry/cache"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| fs::read_dir(d.path()).into_iter().flatten().flatten())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "crate"))
            .min();
        if let Some(c) = cached {
            // Copied under a .crate-free name: `backup --tar` reads any name.
            let p = out("registry.tar.gz");
            fs::copy(&c, &p).unwrap();
            cases.push(Case::new("cargo", "registry .crate", p));
        }
    }
    cases
}

#[test]
fn tar_corpus_equals_gnu_tar_extraction() {
    let skip_ok = skip_requested("tar-tools");
    for tool in ["tar", "rsync", "setfacl"] {
        assert!(have(tool), "the tar corpus needs `{tool}`");
    }
    let t = TestRepo::new();
    let src = t.path("src");
    make_source(&src);
    let mut skipped_tools = Vec::new();
    let cases = corpus(&t, &src, &mut skipped_tools);
    if !skipped_tools.is_empty() {
        assert!(
            skip_ok,
            "tools missing (apt-get install -y libarchive-tools busybox python3; or set \
             VAULTFS_TEST_SKIP=tar-tools): {skipped_tools:?}"
        );
        record_skip(
            "tar-tools",
            &format!("archives of missing tools: {}", skipped_tools.join(", ")),
        );
    }
    let mut failures = Vec::new();
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (n, case) in cases.iter().enumerate() {
        *counts
            .entry((case.tool.to_string(), case.format.clone()))
            .or_default() += 1;
        let label = format!("{} {} ({})", case.tool, case.format, case.path.display());
        if let Err(e) = check(&t, n, case) {
            eprintln!("FAILED {label}: {e}");
            failures.push(format!("{label}: {e}"));
        }
    }
    let valid = cases.iter().filter(|c| c.refused_with.is_none()).count();
    let mut summary = format!(
        "tar corpus: {} archives ({valid} valid, {} invalid)\n",
        cases.len(),
        cases.len() - valid
    );
    for ((tool, format), n) in &counts {
        summary += &format!("  {tool:<15} {format:<28} {n}\n");
    }
    let _ = std::io::stderr().write_all(summary.as_bytes());
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    t.ok(&["check", "--read-data"]);
}

/// Longest an ingest of the corpus may take (a few MB each, on a loaded 2-core machine).
const INGEST_LIMIT: Duration = Duration::from_secs(30);

/// Whether an archive holds `SCHILY.acl.*` records (plain archives only: the compressed
/// cases are made without ACLs).
fn carries_acls(archive: &Path) -> bool {
    let data = fs::read(archive).unwrap();
    data.windows(11).any(|w| w == b"SCHILY.acl.")
}

fn check(t: &TestRepo, n: usize, case: &Case) -> Result<(), String> {
    let name = format!("c{n}");
    let points = t.points().as_array().unwrap().len();
    let started = Instant::now();
    // Killed after INGEST_LIMIT: holes must cost nothing, so no archive here is slow.
    let mut child = t
        .cmd()
        .arg("backup")
        .arg("v")
        .arg("--tar")
        .arg(&case.path)
        .arg("--name")
        .arg(&name)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run vaultfs");
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > INGEST_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the ingest took over {INGEST_LIMIT:?}; killed"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stderr.contains("panicked") {
        return Err(format!("the ingest panicked: {stderr}"));
    }
    if let Some(expect) = &case.refused_with {
        if out.status.success() {
            return Err("an invalid archive was accepted".into());
        }
        if !stderr.contains(expect.trim()) || !stderr.contains("archive") {
            return Err(format!("refused, but not with {expect:?}: {stderr}"));
        }
        if t.points().as_array().unwrap().len() != points {
            return Err("a refused archive left a point".into());
        }
        return Ok(());
    }
    // Exit 3: the point was made, and some members were left out (listed).
    let want_code = if case.skips { 3 } else { 0 };
    if out.status.code() != Some(want_code) {
        return Err(format!(
            "exit {} (expected {want_code}): {stderr}",
            out.status
        ));
    }
    if case.skips != stderr.contains("skipped") {
        return Err(format!(
            "skip warnings expected: {}; stderr: {stderr}",
            case.skips
        ));
    }
    let since = SystemTime::now() - took - Duration::from_secs(2);
    let gnu = t.path(&format!("gnu-{n}"));
    fs::create_dir_all(&gnu).unwrap();
    let x = Command::new("tar")
        // ACL records are restored as ACLs; without them GNU tar restores the raw
        // `system.posix_acl_*` xattrs of `--xattrs` archives, and so do we (with
        // `--acls` it would drop those).
        .args(carries_acls(&case.path).then_some("--acls"))
        .args([
            "--numeric-owner",
            "--same-owner",
            "--same-permissions",
            // Directory times as the headers say, even when members of a directory
            // come after other members (Python's and bsdtar's order).
            "--delay-directory-restore",
            "--xattrs",
            "--xattrs-include=*",
            "-xf",
        ])
        .arg(&case.path)
        .arg("-C")
        .arg(&gnu)
        .output()
        .unwrap();
    let code = x.status.code().unwrap_or(-1);
    if code != 0 && !(case.gnu_fails && code == 2) {
        return Err(format!(
            "GNU tar failed ({}): {}",
            x.status,
            String::from_utf8_lossy(&x.stderr)
        ));
    }
    let restored = t.path(&format!("restored-{n}"));
    let r = t.run(&[
        "restore".as_ref(),
        "v".as_ref(),
        "latest".as_ref(),
        restored.as_os_str(),
    ]);
    if !r.status.success() {
        return Err(format!(
            "accepted, but restore fails: {}",
            String::from_utf8_lossy(&r.stderr)
        ));
    }
    let ours = restored.join(&name);
    align_implied_dirs(&gnu, &ours, since);
    let diff = if case.huge {
        huge_diff(&gnu, &ours)
    } else {
        rsync_diff(&gnu, &ours)
    };
    if !diff.is_empty() {
        return Err(format!("differs from GNU tar's extraction:\n{diff}"));
    }
    Ok(())
}

/// For trees holding sparse files of tens of GiB: metadata compared by rsync without
/// checksums, the first 64 KiB of each file compared, holes checked to be holes.
fn huge_diff(gnu: &Path, ours: &Path) -> String {
    let o = Command::new("rsync")
        .args(["-aHAXn", "--itemize-changes", "--delete"])
        .arg(format!("{}/", gnu.display()))
        .arg(format!("{}/", ours.display()))
        .output()
        .unwrap();
    let mut diff = String::from_utf8_lossy(&o.stdout).into_owned();
    for e in fs::read_dir(gnu).unwrap().flatten() {
        let (g, r) = (e.path(), ours.join(e.file_name()));
        if !e.file_type().unwrap().is_file() {
            continue;
        }
        let head = |p: &Path| {
            use std::io::Read;
            let mut v = Vec::new();
            fs::File::open(p)
                .and_then(|f| f.take(65536).read_to_end(&mut v))
                .map(|_| v)
                .unwrap_or_default()
        };
        if head(&g) != head(&r) {
            diff += &format!("{}: first bytes differ\n", r.display());
        }
        let m = fs::metadata(&r).unwrap();
        if m.blocks() * 512 > 1 << 20 {
            diff += &format!("{}: holes were written as data\n", r.display());
        }
    }
    diff
}

/// `vaultfs dump` of a directory is a tar that GNU tar extracts to the source, with
/// every attribute (odd and long names, symlinks, hard links, a sparse file whose holes
/// stay holes, xattrs, ACLs, modes, owners, a fifo, a device, ns times), and that
/// `backup --tar` reads back to the same tree; `dump` of a file writes its bytes.
#[test]
fn dump_is_a_tar_that_gnu_tar_extracts_to_the_source() {
    let t = TestRepo::new();
    let src = t.path("src");
    let tree = src.join("tree");
    make_source(&tree);
    // The backup's own top directory keeps its time (make_source sets the entries').
    t.ok(&["backup", "v", tree.to_str().unwrap()]);
    let archive = t.path("dump.tar");
    let out = t
        .cmd()
        .args(["dump", "v", "latest", "tree"])
        .stdout(fs::File::create(&archive).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let x = t.path("x");
    fs::create_dir_all(&x).unwrap();
    let o = Command::new("tar")
        .args([
            "--numeric-owner",
            "--same-owner",
            "--same-permissions",
            "--delay-directory-restore",
            "--xattrs",
            "--xattrs-include=*",
            "-xf",
        ])
        .arg(&archive)
        .arg("-C")
        .arg(&x)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "GNU tar: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(rsync_diff(&tree, &x.join("tree")), "");
    // Holes stayed holes: 4 MiB apparent, a few blocks of data.
    assert!(allocated(&x.join("tree/sparse.img")) < 1 << 20);
    // Our own reader takes it back to the same tree.
    t.ok(&[
        "backup",
        "v",
        "--tar",
        archive.to_str().unwrap(),
        "--name",
        "again",
    ]);
    let r = t.path("restored");
    t.ok(&["restore", "v", "latest", r.to_str().unwrap()]);
    assert_eq!(rsync_diff(&tree, &r.join("again/tree")), "");
    // A zip of the same tree: unzip lists it, and its files hold the bytes.
    let zip = t.path("dump.zip");
    let out = t
        .cmd()
        .args(["dump", "v", "latest", "again/tree", "--format", "zip"])
        .stdout(fs::File::create(&zip).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = sh(&format!("unzip -l '{}'", zip.display()));
    assert!(listing.contains("tree/random.bin"), "{listing}");
    assert!(listing.contains("tree/hard/sub/c"), "{listing}");
    let z = t.path("z");
    sh(&format!(
        "unzip -q '{}' -d '{}'",
        zip.display(),
        z.display()
    ));
    assert_eq!(
        fs::read(z.join("tree/random.bin")).unwrap(),
        fs::read(tree.join("random.bin")).unwrap()
    );
    assert_eq!(fs::read(z.join("tree/hard/sub/c")).unwrap(), b"shared\n");
    // A file: its bytes.
    let out = t.run(&["dump", "v", "latest", "again/tree/random.bin"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, fs::read(tree.join("random.bin")).unwrap());
}
