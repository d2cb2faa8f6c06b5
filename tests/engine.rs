//! End-to-end tests of the repository engine through the real `vaultfs` binary: real
//! trees in, `rsync -aHAXnc` says identical trees out; damage is named and fails loudly;
//! kill -9 never leaves a repository that `check` rejects.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// Asserts that one line of `stderr` is exactly `line`.
fn says(stderr: &str, line: &str) {
    assert!(
        stderr.lines().any(|l| l == line),
        "no line says {line:?}:\n{stderr}"
    );
}

#[test]
fn tricky_tree_roundtrips_exactly() {
    let t = TestRepo::new();
    let src = t.path("tricky");
    make_tricky_tree(&src);
    t.ok(&["backup".as_ref(), "v".as_ref(), src.as_os_str()]);
    let out = t.path("out");
    t.ok(&[
        "restore".as_ref(),
        "v".as_ref(),
        "latest".as_ref(),
        out.as_os_str(),
    ]);
    let diff = rsync_diff(&src, &out.join("tricky"));
    assert_eq!(diff, "", "restored tree differs:\n{diff}");
    // Holes stayed holes: 64 MiB logical, ~100 KiB of data.
    let restored = out.join("tricky/sparse.img");
    assert_eq!(fs::metadata(&restored).unwrap().len(), 64 << 20);
    assert!(allocated(&restored) < 1 << 20, "sparse file was filled in");
    // Hardlinks share one inode.
    use std::os::unix::fs::MetadataExt;
    let a = fs::metadata(out.join("tricky/hard/a")).unwrap();
    let c = fs::metadata(out.join("tricky/hard/sub/c")).unwrap();
    assert_eq!(a.ino(), c.ino());
    assert_eq!(a.nlink(), 3);
    t.ok(&["check", "--read-data"]);
}

#[test]
fn unchanged_files_are_not_read_again_and_changes_are_seen() {
    let t = TestRepo::new();
    let src = t.path("data");
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..50 {
        fs::write(src.join(format!("d/f{i}")), random_bytes(i, 20_000)).unwrap();
    }
    fs::write(src.join("big"), random_bytes(99, 3 << 20)).unwrap();
    t.ok(&["backup".as_ref(), "v".as_ref(), src.as_os_str()]);
    // Change one file, add one, delete one.
    fs::write(src.join("d/f7"), b"changed").unwrap();
    fs::write(src.join("d/new"), b"new file").unwrap();
    fs::remove_file(src.join("d/f8")).unwrap();
    let out = t.ok(&[
        "backup".as_ref(),
        "v".as_ref(),
        src.as_os_str(),
        "--json".as_ref(),
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let b = &j["backups"][0];
    assert_eq!(b["files"], 51);
    assert_eq!(b["files_unchanged"], 49, "{b}");
    assert_eq!(b["bytes_read"], 7 + 8);
    assert!(j["parent"].is_string());
    let restored = t.path("out");
    t.ok(&[
        "restore".as_ref(),
        "v".as_ref(),
        "latest".as_ref(),
        restored.as_os_str(),
    ]);
    assert_eq!(rsync_diff(&src, &restored.join("data")), "");
    // The first point is still intact.
    let points = t.points();
    let first = points[0]["id"].as_str().unwrap();
    let old = t.path("old");
    t.ok(&[
        "restore".as_ref(),
        "v".as_ref(),
        first.as_ref(),
        old.as_os_str(),
    ]);
    assert_eq!(
        fs::read(old.join("data/d/f8")).unwrap(),
        random_bytes(8, 20_000)
    );
}

#[test]
fn image_backups_keep_holes_and_roundtrip_bit_for_bit() {
    let t = TestRepo::new();
    let img = t.path("disk.img");
    let f = fs::File::create(&img).unwrap();
    f.set_len(256 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&random_bytes(5, 2 << 20), 1 << 20).unwrap();
    f.write_all_at(&random_bytes(6, 1 << 20), 200 << 20)
        .unwrap();
    drop(f);
    let out = t.ok(&[
        "backup".as_ref(),
        "v".as_ref(),
        "--image".as_ref(),
        img.as_os_str(),
        "--json".as_ref(),
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["backups"][0]["kind"], "image");
    assert_eq!(j["backups"][0]["size"], 256u64 << 20);
    let stored = j["backups"][0]["bytes_stored"].as_u64().unwrap();
    assert!(stored < 4 << 20, "holes were stored: {stored} bytes");
    let cat = t.run(&["cat", "v", "latest", "disk.img"]);
    assert!(cat.status.success());
    assert!(cat.stdout == fs::read(&img).unwrap(), "image differs");

    // From stdin, with zero runs turned into holes.
    let mut child = t
        .cmd()
        .args(["backup", "v", "--image", "-", "--name", "piped.raw"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut data = vec![0u8; 32 << 20];
    data[..1 << 20].copy_from_slice(&random_bytes(9, 1 << 20));
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &data).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let cat = t.run(&["cat", "v", "latest", "piped.raw"]);
    assert!(cat.stdout == data, "piped image differs");
    let restored = t.path("r");
    t.ok(&[
        "restore".as_ref(),
        "v".as_ref(),
        "latest".as_ref(),
        restored.as_os_str(),
    ]);
    assert!(allocated(&restored.join("piped.raw")) < 8 << 20);
}

#[test]
fn wrong_password_and_missing_repository_are_clear_errors() {
    let t = TestRepo::new();
    let out = t
        .cmd()
        .env("VAULTFS_PASSWORD", "nope")
        .args(["points", "v"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "wrong_password (README, Scripting)"
    );
    says(
        &String::from_utf8_lossy(&out.stderr),
        &format!(
            "vaultfs: wrong password for the repository at {}",
            t.repo.display()
        ),
    );
    let nothing = t.path("nothing-here");
    let out = t
        .cmd()
        .env("VAULTFS_REPO", &nothing)
        .args(["points", "v"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "not_a_repository (README, Scripting)"
    );
    says(
        &String::from_utf8_lossy(&out.stderr),
        &format!(
            "vaultfs: no vaultfs repository at {} (run `vaultfs init` first)",
            nothing.display()
        ),
    );
    let err = t.fails(&["init"]);
    says(
        &err,
        &format!(
            "vaultfs: a repository already exists at {}",
            t.repo.display()
        ),
    );
    // A repository with its own Argon2id cost opens with the right password only.
    let other = t.path("kdf-repo");
    let with = |pw: &str, args: &[&str]| {
        t.cmd()
            .env("VAULTFS_REPO", &other)
            .env("VAULTFS_PASSWORD", pw)
            .args(args)
            .output()
            .unwrap()
    };
    let out = with(
        "pw",
        &["init", "--kdf-memory-mib", "8", "--kdf-passes", "2"],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(with("pw", &["vault", "list"]).status.success());
    let out = with("wrong", &["vault", "list"]);
    says(
        &String::from_utf8_lossy(&out.stderr),
        &format!(
            "vaultfs: wrong password for the repository at {}",
            other.display()
        ),
    );
    // The Argon2id cost is range-checked: on a path where no repository exists yet, an
    // out-of-range value is refused as a usage error (exit 2) and creates nothing.
    for (option, value, range) in [
        ("--kdf-passes", "0", "1..=64"),
        ("--kdf-passes", "65", "1..=64"),
        ("--kdf-memory-mib", "7", "8..=4096"),
    ] {
        let fresh = t.path(&format!("fresh{option}{value}"));
        let out = t
            .cmd()
            .env("VAULTFS_REPO", &fresh)
            .args(["init", option, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "init {option} {value}: {err}");
        let name = option
            .trim_start_matches("--")
            .replace('-', "_")
            .to_uppercase();
        assert_eq!(
            err.lines().next().unwrap_or(""),
            format!(
                "error: invalid value '{value}' for '{option} <{name}>': {value} is not in {range}"
            ),
            "init {option} {value}"
        );
        assert!(
            !fresh.exists(),
            "init {option} {value} created {}",
            fresh.display()
        );
    }
}

#[test]
fn vault_lifecycle() {
    let t = TestRepo::new();
    let err = t.fails(&["vault", "create", "bad/name"]);
    assert!(err.contains("invalid vault name"), "{err}");
    let err = t.fails(&["vault", "create", "v"]);
    assert!(err.contains("already exists"), "{err}");
    t.ok(&["vault", "update", "v", "--description", "new words"]);
    let j: serde_json::Value =
        serde_json::from_str(&t.ok(&["vault", "show", "v", "--json"])).unwrap();
    assert_eq!(j["description"], "new words");
    assert_eq!(j["point_count"], 0);
    let src = t.path("s");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    t.ok(&["backup".as_ref(), "v".as_ref(), src.as_os_str()]);
    let err = t.fails(&["vault", "delete", "v"]);
    assert!(err.contains("holds 1 recovery point"), "{err}");
    t.ok(&["vault", "delete", "v", "--force"]);
    let j: serde_json::Value = serde_json::from_str(&t.ok(&["vault", "list", "--json"])).unwrap();
    assert_eq!(j.as_array().unwrap().len(), 0);
    let err = t.fails(&["points", "v"]);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn ls_and_cat_find_odd_names() {
    let t = TestRepo::new();
    let src = t.path("tree");
    make_tricky_tree(&src);
    t.ok(&["backup".as_ref(), "v".as_ref(), src.as_os_str()]);
    let ls = t.ok(&["ls", "v", "latest", "tree/names"]);
    assert!(ls.contains("with space"), "{ls}");
    let long = t.ok(&["ls", "-l", "v", "latest", "tree/links"]);
    assert!(long.contains("dangling -> nowhere/at/all"), "{long}");
    let all = t.ok(&["ls", "-R", "v", "latest"]);
    // Every path of the tree, the tree itself included, as find prints them, with their
    // control characters escaped (a name with a newline stays on one line).
    let mut listed: Vec<String> = all.lines().map(String::from).collect();
    listed.sort();
    let found = std::process::Command::new("find")
        .arg("tree")
        .arg("-print0")
        .current_dir(t.dir.path())
        .output()
        .unwrap()
        .stdout;
    let mut found: Vec<String> = found
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(&vaultfs::repo::format::printable_bytes(p)).into_owned())
        .collect();
    found.sort();
    assert_eq!(listed, found);
    assert!(
        listed.iter().any(|l| l == "tree/names/new\\x0aline"),
        "{listed:?}"
    );
    let cat = t.run(&["cat", "v", "latest", "tree/text.log"]);
    assert!(cat.stdout == fs::read(src.join("text.log")).unwrap());
    let err = t.fails(&["cat", "v", "latest", "tree/missing"]);
    says(&err, "vaultfs: tree/missing: not found in the backup");
    let mut p = b"tree/names/".to_vec();
    p.extend_from_slice(b"caf\xe9 latin1");
    let cat = t.run(&[
        std::ffi::OsStr::new("cat"),
        "v".as_ref(),
        "latest".as_ref(),
        std::ffi::OsStr::from_bytes(&p),
    ]);
    assert_eq!(cat.stdout, b"caf\xe9 latin1");
}

fn flip_byte(path: &Path, offset_from_end: u64) {
    let mut data = fs::read(path).unwrap();
    let i = data.len() - 1 - offset_from_end as usize;
    data[i] ^= 0x55;
    fs::write(path, data).unwrap();
}

/// A repository with one file per chunk kind we will damage.
fn damaged_setup() -> (TestRepo, std::path::PathBuf) {
    let t = TestRepo::new();
    let src = t.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.bin"), random_bytes(1, 3 << 20)).unwrap();
    fs::write(src.join("sub/b.txt"), b"tiny file").unwrap();
    fs::hard_link(src.join("a.bin"), src.join("sub/a-link.bin")).unwrap();
    t.ok(&["backup".as_ref(), "v".as_ref(), src.as_os_str()]);
    t.ok(&["check", "--read-data"]);
    (t, src)
}

#[test]
fn damage_in_packs_is_named_and_reads_fail_loudly() {
    let (t, _src) = damaged_setup();
    let packs = t.objects("packs");
    assert!(!packs.is_empty());
    // The first bytes of the first pack belong to the first data chunk (a.bin).
    let mut data = fs::read(&packs[0]).unwrap();
    data[100] ^= 1;
    fs::write(&packs[0], data).unwrap();
    t.ok(&["check"]); // structure is intact
    let err = t.fails(&["check", "--read-data"]);
    let pack_name = packs[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.contains(&pack_name),
        "check does not name the pack: {err}"
    );
    let damaged = format!(" in pack {pack_name}: authentication failed");
    let out = t.run(&["cat", "v", "latest", "src/a.bin"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "cat of a damaged chunk: kind damaged"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("vaultfs: damaged object chunk ") && err.trim_end().ends_with(&damaged),
        "{err}"
    );
    // Restore names each file the damage affects (both names of the hard-linked file),
    // removes them rather than leaving them short, and restores everything else.
    let r = t.path("r");
    let out = t.run(&[
        "restore".as_ref(),
        "v".as_ref(),
        "latest".as_ref(),
        r.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for name in ["src/a.bin", "src/sub/a-link.bin"] {
        let path = r.join(name);
        assert!(
            err.lines().any(|l| l.starts_with(&format!(
                "error: {}: not restored: damaged object chunk ",
                path.display()
            )) && l.contains(&damaged)),
            "{name}: {err}"
        );
        assert!(!path.exists(), "{name} is left behind");
    }
    assert_eq!(err.lines().count(), 2, "{err}");
    assert_eq!(fs::read(r.join("src/sub/b.txt")).unwrap(), b"tiny file");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 path(s) could not be restored"), "{text}");
}

#[test]
fn damage_in_index_manifest_and_trees_is_named() {
    // Index object.
    let (t, _) = damaged_setup();
    let idx = t.objects("index");
    flip_byte(&idx[0], 3);
    let err = t.fails(&["check"]);
    let name = idx[0].file_name().unwrap().to_string_lossy().into_owned();
    says(
        &err,
        &format!("error: damaged object index/{name}: authentication failed"),
    );

    // Manifest.
    let (t, _) = damaged_setup();
    let pts = t.objects("points");
    flip_byte(&pts[0], 5);
    let point = pts[0].file_name().unwrap().to_string_lossy().into_owned();
    let damaged = format!("damaged object points/v/{point}: authentication failed");
    let err = t.fails(&["check"]);
    says(&err, &format!("error: {damaged}"));
    let err = t.fails(&["ls", "v", "latest"]);
    says(&err, &format!("vaultfs: {damaged}"));

    // A tree chunk: trees are written last, at the end of the last pack.
    // The last chunk written is the backup's top tree (children first): check names
    // the chunk, its pack and the directory it lists.
    let (t, _) = damaged_setup();
    let packs = t.objects("packs");
    let pack = packs.last().unwrap();
    flip_byte(pack, 20);
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    let point = t.points()[0]["id"].as_str().unwrap().to_string();
    let err = t.fails(&["check"]);
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: damaged object chunk ")
                && l.ends_with(&format!(
                    " in pack {pack_name}: authentication failed (in v/{point}/src)"
                ))),
        "{err}"
    );
    let err = t.fails(&["ls", "-R", "v", "latest"]);
    assert!(
        err.lines()
            .any(|l| l.starts_with("vaultfs: damaged object chunk ")
                && l.ends_with(&format!(" in pack {pack_name}: authentication failed"))),
        "{err}"
    );

    // A missing pack.
    let (t, _) = damaged_setup();
    let packs = t.objects("packs");
    assert!(!packs.is_empty());
    for p in &packs {
        fs::remove_file(p).unwrap();
    }
    let err = t.fails(&["check"]);
    for p in &packs {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let key = format!("packs/{}/{name}", &name[..2]);
        says(
            &err,
            &format!("error: index object index/{name} refers to missing pack {key}"),
        );
    }
}

/// Starts `backup v SRC --no-parent` in the background, output discarded, with `env`.
fn spawn_full_backup(t: &TestRepo, src: &Path, env: &[(&str, &str)]) -> std::process::Child {
    t.cmd()
        .envs(env.iter().copied())
        .args([
            "backup".as_ref(),
            "v".as_ref(),
            src.as_os_str(),
            "--no-parent".as_ref(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `n` files of 1 MiB of incompressible bytes, seeds `seed..seed + n`, in a new `dir`.
fn mib_files(t: &TestRepo, dir: &str, n: u64, seed: u64) -> std::path::PathBuf {
    let src = t.path(dir);
    fs::create_dir_all(&src).unwrap();
    for i in 0..n {
        fs::write(src.join(format!("f{i}")), random_bytes(seed + i, 1 << 20)).unwrap();
    }
    src
}

#[test]
fn kill_9_during_backup_never_breaks_the_repository() {
    let t = TestRepo::new();
    let src = mib_files(&t, "src", 24, 100);
    // How long does a full backup take here?
    let probe = TestRepo::new();
    let start = Instant::now();
    probe.ok(&[
        "backup".as_ref(),
        "v".as_ref(),
        src.as_os_str(),
        "--no-parent".as_ref(),
    ]);
    let full = start.elapsed();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut committed_before = 0;
    for round in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % (full.as_micros() as u64).max(1));
        let mut child = spawn_full_backup(&t, &src, &[]);
        // A sleep on purpose: these rounds kill the backup at random moments, wherever
        // it is (the run below is the one killed at a moment it waits for).
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let out = t.run(&["check", "--read-data"]);
        assert!(
            out.status.success(),
            "round {round} (killed after {delay:?}, {status}): check failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let n = t.points().as_array().unwrap().len();
        assert!(n >= committed_before);
        committed_before = n;
    }

    // One more run, killed for sure in the middle of its uploads: on data the repository
    // has never seen (the rounds above may have stored all of `src`), each pack's upload
    // slowed down by 500 ms, killed once two packs and their index objects are durable,
    // while the other four wait for their turn.
    let fresh = mib_files(&t, "fresh", 24, 500);
    let packs_before = t.objects("packs").len();
    let index_before = t.objects("index");
    let points_before = t.points().as_array().unwrap().len();
    let mut child = spawn_full_backup(&t, &fresh, &[("VAULTFS_FAULTS", "write:packs/:delay=500")]);
    let mut early_exit = None;
    wait_for("two new index objects", || {
        early_exit = child.try_wait().unwrap();
        early_exit.is_some() || t.objects("index").len() >= index_before.len() + 2
    });
    assert_eq!(
        early_exit, None,
        "the backup ended before it could be killed"
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    let new_packs = t.objects("packs").len() - packs_before;
    let new_index = t.objects("index").len() - index_before.len();
    // The bytes of the packs the killed run indexed (an index object has its pack's name).
    let indexed_new: u64 = t
        .objects("index")
        .iter()
        .filter(|i| !index_before.contains(i))
        .filter_map(|i| {
            let name = i.file_name()?.to_string_lossy().into_owned();
            let pack = t.repo.join("packs").join(&name[..2]).join(&name);
            Some(fs::metadata(pack).ok()?.len())
        })
        .sum::<u64>();
    assert!(
        (2..6).contains(&new_index) && new_packs >= new_index,
        "killed after {new_packs} new packs and {new_index} new index objects"
    );
    assert_eq!(
        t.points().as_array().unwrap().len(),
        points_before,
        "the killed backup committed its point"
    );
    t.ok(&["check", "--read-data"]);
    // The next backup succeeds and reuses what the killed run uploaded and indexed: it
    // stores only the rest (give or take the trees and the packs' headers).
    let out = t.ok(&[
        "backup".as_ref(),
        "v".as_ref(),
        fresh.as_os_str(),
        "--no-parent".as_ref(),
        "--json".as_ref(),
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let stored = j["backups"][0]["bytes_stored"].as_u64().unwrap();
    assert!(
        stored + indexed_new <= 25 << 20,
        "the {new_index} packs indexed by the killed run ({indexed_new} bytes) were not \
         reused: {stored} bytes stored"
    );
    let restored = t.path("r");
    t.ok(&[
        "restore".as_ref(),
        "v".as_ref(),
        "latest".as_ref(),
        restored.as_os_str(),
    ]);
    assert_eq!(rsync_diff(&fresh, &restored.join("fresh")), "");
    t.ok(&["check", "--read-data"]);
}

#[test]
fn a_second_writer_is_refused_while_the_lock_is_held_and_stale_locks_are_cleared() {
    let t = TestRepo::new();
    let src = t.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    // A fifo in the source blocks nothing (it is recorded, not read), so hold the lock
    // with a backup reading from a stdin pipe that we keep open.
    let mut holder = t.hold_lock();
    let err = t.fails(&["backup".as_ref(), "v".as_ref(), src.as_os_str()]);
    assert!(
        err.contains(&format!("is locked by `backup v` (pid {} on ", holder.id())),
        "{err}"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    // The holder died without releasing: its lock is stale and is removed with a warning.
    let out = t.run(&["backup".as_ref(), "v".as_ref(), src.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("stale lock"));
    assert!(t.objects("locks").is_empty());
}

#[test]
fn tar_archives_become_tree_backups_with_their_metadata() {
    let t = TestRepo::new();
    let src = t.path("tricky");
    make_tricky_tree(&src);
    let tarball = t.path("tricky.tar");
    // GNU tar, pax format so that xattrs and nanosecond times are carried; -S keeps holes.
    sh(&format!(
        "cd '{}' && tar --format=posix --xattrs --xattrs-include='*' -S -cf '{}' .",
        src.display(),
        tarball.display()
    ));
    sh(&format!(
        "zstd -q -f '{}' -o '{}.zst'",
        tarball.display(),
        tarball.display()
    ));
    for (file, name) in [
        (tarball.clone(), "tricky"),
        (t.path("tricky.tar.zst"), "tricky"),
    ] {
        let out = t.ok(&[
            "backup".as_ref(),
            "v".as_ref(),
            "--tar".as_ref(),
            file.as_os_str(),
            "--json".as_ref(),
        ]);
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["backups"][0]["kind"], "tree");
        assert_eq!(j["backups"][0]["name"], name);
        let out_dir = t.path(&format!("out-{}", j["id"].as_str().unwrap()));
        t.ok(&[
            "restore".as_ref(),
            "v".as_ref(),
            "latest".as_ref(),
            out_dir.as_os_str(),
        ]);
        let diff = rsync_diff(&src, &out_dir.join(name));
        assert_eq!(
            diff, "",
            "tar backup differs from the tree it was made from:\n{diff}"
        );
    }
    // A truncated archive is refused and leaves no point.
    let before = t.points().as_array().unwrap().len();
    let data = fs::read(&tarball).unwrap();
    let cut = t.path("cut.tar");
    fs::write(&cut, &data[..data.len() / 2 + 100]).unwrap();
    let err = t.fails(&[
        "backup".as_ref(),
        "v".as_ref(),
        "--tar".as_ref(),
        cut.as_os_str(),
    ]);
    assert!(
        err.lines()
            .any(|l| l.starts_with("vaultfs: truncated archive: the data of ")),
        "{err}"
    );
    assert_eq!(t.points().as_array().unwrap().len(), before);
    t.ok(&["check", "--read-data"]);
}
