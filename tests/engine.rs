//! End-to-end tests of the repository engine through the real `vaultfs` binary: real
//! trees in, `rsync -aHAXnc` says identical trees out; damage is named and fails loudly;
//! kill -9 never leaves a repository that `check` rejects.

mod common;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

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
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong password"), "{err}");
    let out = t
        .cmd()
        .env("VAULTFS_REPO", t.path("nothing-here"))
        .args(["points", "v"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no vaultfs repository"),
        "{err}"
    );
    let err = t.fails(&["init"]);
    assert!(err.contains("already exists"), "{err}");
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong password"));
    let out = with("pw", &["init", "--kdf-passes", "0"]);
    assert!(!out.status.success());
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
    assert!(all.lines().count() > 20);
    let cat = t.run(&["cat", "v", "latest", "tree/text.log"]);
    assert!(cat.stdout == fs::read(src.join("text.log")).unwrap());
    let err = t.fails(&["cat", "v", "latest", "tree/missing"]);
    assert!(err.contains("not found"), "{err}");
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
    let out = t.run(&["cat", "v", "latest", "src/a.bin"]);
    assert!(!out.status.success(), "cat of a damaged chunk succeeded");
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged"));
    let err = t.fails(&[
        "restore".as_ref(),
        "v".as_ref(),
        "latest".as_ref(),
        t.path("r").as_os_str(),
    ]);
    assert!(err.contains("damaged"), "{err}");
}

#[test]
fn damage_in_index_manifest_and_trees_is_named() {
    // Index object.
    let (t, _) = damaged_setup();
    let idx = t.objects("index");
    flip_byte(&idx[0], 3);
    let err = t.fails(&["check"]);
    assert!(err.contains("index/"), "{err}");

    // Manifest.
    let (t, _) = damaged_setup();
    let pts = t.objects("points");
    flip_byte(&pts[0], 5);
    let err = t.fails(&["check"]);
    assert!(err.contains("points/v/"), "{err}");
    let err = t.fails(&["ls", "v", "latest"]);
    assert!(err.contains("damaged"), "{err}");

    // A tree chunk: trees are written last, at the end of the last pack.
    let (t, _) = damaged_setup();
    let packs = t.objects("packs");
    flip_byte(packs.last().unwrap(), 20);
    let err = t.fails(&["check"]);
    assert!(err.contains("tree") || err.contains("chunk"), "{err}");
    let err = t.fails(&["ls", "-R", "v", "latest"]);
    assert!(err.contains("damaged"), "{err}");

    // A missing pack.
    let (t, _) = damaged_setup();
    for p in t.objects("packs") {
        fs::remove_file(p).unwrap();
    }
    let err = t.fails(&["check"]);
    assert!(err.contains("missing pack"), "{err}");
}

/// Starts `backup v SRC --no-parent` in the background, output discarded.
fn spawn_full_backup(t: &TestRepo, src: &Path) -> std::process::Child {
    t.cmd()
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

fn kill_9(child: &mut std::process::Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .arg("-9")
        .arg(child.id().to_string())
        .status();
    child.wait().unwrap()
}

#[test]
fn kill_9_during_backup_never_breaks_the_repository() {
    let t = TestRepo::new();
    let src = t.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..24 {
        fs::write(src.join(format!("f{i}")), random_bytes(100 + i, 1 << 20)).unwrap();
    }
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
        let mut child = spawn_full_backup(&t, &src);
        std::thread::sleep(delay);
        let status = kill_9(&mut child);
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
    // One more run, killed for sure after it uploaded some packs but before it ended
    // (the random delays above may all fall early on a busy machine).
    let before = t.objects("index").len();
    let mut child = spawn_full_backup(&t, &src);
    let deadline = Instant::now() + Duration::from_secs(120);
    while t.objects("index").len() < before + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    kill_9(&mut child);
    t.ok(&["check", "--read-data"]);
    // The next backup succeeds and reuses what the killed runs uploaded.
    let out = t.ok(&[
        "backup".as_ref(),
        "v".as_ref(),
        src.as_os_str(),
        "--no-parent".as_ref(),
        "--json".as_ref(),
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let stored = j["backups"][0]["bytes_stored"].as_u64().unwrap();
    assert!(
        stored < 24 << 20,
        "nothing was reused: {stored} bytes stored"
    );
    let restored = t.path("r");
    t.ok(&[
        "restore".as_ref(),
        "v".as_ref(),
        "latest".as_ref(),
        restored.as_os_str(),
    ]);
    assert_eq!(rsync_diff(&src, &restored.join("src")), "");
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
    let mut holder = t
        .cmd()
        .args(["backup", "v", "--image", "-", "--name", "held"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while t.objects("locks").is_empty() {
        assert!(Instant::now() < deadline, "the holder never took its lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = t.fails(&["backup".as_ref(), "v".as_ref(), src.as_os_str()]);
    assert!(err.contains("locked by"), "{err}");
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
        err.contains("malformed archive") || err.contains("archive"),
        "{err}"
    );
    assert_eq!(t.points().as_array().unwrap().len(), before);
    t.ok(&["check", "--read-data"]);
}
