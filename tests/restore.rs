//! Restore modes end to end, with the real binary and real tools: `--include` and
//! `--exclude` (alone, together, with `--path`, anchored), `--delete` (what goes, what an
//! exclude protects, symlinks never followed), the temporaries a killed `--overwrite`
//! leaves removed by the next restore, image restores onto a new file, a file full of
//! junk (with and without `--zero-holes`), a loop device and targets too small, and the
//! `restoring` / `error_restoring` statuses while a restore runs and after one failed.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

/// Every path under `dir`, relative, sorted (`find`).
fn listing(dir: &Path) -> Vec<String> {
    let out = sh(&format!(
        "cd '{}' && find . -mindepth 1 | sort",
        dir.display()
    ));
    out.lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect()
}

fn restore_json(t: &TestRepo, args: &[&str]) -> Value {
    let mut all = vec!["restore"];
    all.extend_from_slice(args);
    all.push("--json");
    serde_json::from_str(&t.ok(&all)).expect("restore --json")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `src/tree` and `src/second`, backed up in one point.
fn selection_source(t: &TestRepo) -> PathBuf {
    let src = t.path("src");
    for (p, body) in [
        ("tree/a.txt", "a"),
        ("tree/b.log", "b"),
        ("tree/sub/c.txt", "c"),
        ("tree/sub/d.log", "d"),
        ("tree/sub/deep/e.txt", "e"),
        ("tree/cache/x.bin", "x"),
        ("tree/other/y.conf", "y"),
        ("second/f.txt", "f"),
    ] {
        let p = src.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }
    t.backup(&[&src.join("tree"), &src.join("second")]);
    src
}

#[test]
fn include_and_exclude_choose_what_is_restored() {
    let t = TestRepo::new();
    let src = selection_source(&t);
    // Excludes: as rsync's --exclude leaves the same tree out.
    let t1 = t.path("t1");
    t.ok(&[
        "restore",
        "v",
        "latest",
        s(&t1),
        "--exclude",
        "*.log",
        "--exclude",
        "cache",
    ]);
    let expected = t.path("expected");
    fs::create_dir_all(&expected).unwrap();
    sh(&format!(
        "rsync -a --exclude='*.log' --exclude=cache '{0}/tree' '{0}/second' '{1}/'",
        src.display(),
        expected.display()
    ));
    sh(&format!(
        "diff -r '{}' '{}'",
        expected.display(),
        t1.display()
    ));
    assert!(!t1.join("tree/cache").exists() && !t1.join("tree/b.log").exists());

    // An include brings a matching directory whole, and the directories leading to it.
    let t2 = t.path("t2");
    t.ok(&["restore", "v", "latest", s(&t2), "--include", "sub"]);
    assert_eq!(
        listing(&t2),
        [
            "tree",
            "tree/sub",
            "tree/sub/c.txt",
            "tree/sub/d.log",
            "tree/sub/deep",
            "tree/sub/deep/e.txt"
        ]
    );
    assert_eq!(fs::read(t2.join("tree/sub/deep/e.txt")).unwrap(), b"e");

    // Includes and excludes together: the exclude wins, in both backups.
    let t3 = t.path("t3");
    t.ok(&[
        "restore",
        "v",
        "latest",
        s(&t3),
        "--include",
        "*.txt",
        "--exclude",
        "deep",
    ]);
    assert_eq!(
        listing(&t3),
        [
            "second",
            "second/f.txt",
            "tree",
            "tree/a.txt",
            "tree/sub",
            "tree/sub/c.txt"
        ]
    );

    // With --path: patterns see the path inside the point.
    let t4 = t.path("t4");
    t.ok(&[
        "restore",
        "v",
        "latest",
        s(&t4),
        "--path",
        "tree/sub",
        "--include",
        "*.txt",
    ]);
    assert_eq!(
        listing(&t4),
        ["sub", "sub/c.txt", "sub/deep", "sub/deep/e.txt"]
    );
    // Anchored at the point's top.
    let t5 = t.path("t5");
    t.ok(&[
        "restore",
        "v",
        "latest",
        s(&t5),
        "--include",
        "/tree/sub/deep",
    ]);
    assert_eq!(
        listing(&t5),
        ["tree", "tree/sub", "tree/sub/deep", "tree/sub/deep/e.txt"]
    );
    let none = t.path("t6");
    t.ok(&["restore", "v", "latest", s(&none), "--include", "/sub"]);
    assert_eq!(listing(&none), Vec::<String>::new());

    // Existing files that are not restored are not in the way: t1 lacks the logs only.
    let j = restore_json(&t, &["v", "latest", s(&t1), "--include", "*.log"]);
    assert_eq!(j["files"], 2, "{j}");
    assert_eq!(fs::read(t1.join("tree/sub/d.log")).unwrap(), b"d");
    // Now they are.
    let err = t.fails(&["restore", "v", "latest", s(&t1), "--include", "*.log"]);
    assert!(
        err.contains("tree/b.log") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!err.contains("a.txt"), "{err}");

    let err = t.fails(&[
        "restore",
        "v",
        "latest",
        s(&t.path("bad")),
        "--include",
        "a[",
    ]);
    assert!(err.contains("include pattern \"a[\""), "{err}");
}

#[test]
fn delete_removes_what_the_backup_does_not_hold_and_spares_what_is_excluded() {
    let t = TestRepo::new();
    let src = t.path("src");
    for (p, body) in [
        ("tree/a.txt", "a"),
        ("tree/keep.txt", "keep"),
        ("tree/sub/c.txt", "c"),
        ("tree/sub/d.log", "d"),
    ] {
        let p = src.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }
    t.backup(&[&src.join("tree")]);
    let target = t.path("target");
    t.ok(&["restore", "v", "latest", s(&target)]);
    let tree = target.join("tree");
    // What the backup does not hold, of every kind; symlinks out of the target.
    let outside = t.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("precious"), b"p").unwrap();
    fs::write(tree.join("extra.txt"), b"x").unwrap();
    fs::create_dir_all(tree.join("sub/extra-dir/g")).unwrap();
    fs::write(tree.join("sub/extra-dir/f"), b"f").unwrap();
    fs::write(tree.join("sub/extra-dir/g/h"), b"h").unwrap();
    symlink(&outside, tree.join("link")).unwrap();
    symlink(&outside, tree.join("sub/extra-dir/g/into-outside")).unwrap();
    fs::write(tree.join("x.log"), b"excluded, so protected").unwrap();
    fs::write(target.join("beside"), b"not under a restored directory").unwrap();
    // A directory where the backup has a file; a changed file.
    fs::remove_file(tree.join("a.txt")).unwrap();
    fs::create_dir_all(tree.join("a.txt/inner")).unwrap();
    fs::write(tree.join("keep.txt"), b"changed").unwrap();

    let err = t.fails(&["restore", "v", "latest", s(&target), "--delete"]);
    assert!(err.contains("--overwrite"), "{err}");
    let j = restore_json(
        &t,
        &[
            "v",
            "latest",
            s(&target),
            "--overwrite",
            "--delete",
            "--exclude",
            "*.log",
        ],
    );
    // extra.txt, link; extra-dir, f, g, h, into-outside; a.txt and inner.
    assert_eq!(j["deleted"], 9, "{j}");
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"p");
    assert_eq!(
        fs::read(tree.join("x.log")).unwrap(),
        b"excluded, so protected"
    );
    assert_eq!(fs::read(tree.join("sub/d.log")).unwrap(), b"d");
    assert!(target.join("beside").exists());
    fs::remove_file(tree.join("x.log")).unwrap();
    sh(&format!(
        "diff -r --no-dereference '{}' '{}'",
        src.join("tree").display(),
        tree.display()
    ));

    // A symlink where the backup has a directory is replaced, never followed.
    let elsewhere = t.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join("c.txt"), b"not the backup's").unwrap();
    fs::write(elsewhere.join("stray"), b"s").unwrap();
    fs::remove_dir_all(tree.join("sub")).unwrap();
    symlink(&elsewhere, tree.join("sub")).unwrap();
    t.ok(&[
        "restore",
        "v",
        "latest",
        s(&target),
        "--overwrite",
        "--delete",
    ]);
    assert!(fs::symlink_metadata(tree.join("sub")).unwrap().is_dir());
    assert_eq!(
        fs::read(elsewhere.join("c.txt")).unwrap(),
        b"not the backup's"
    );
    assert!(elsewhere.join("stray").exists());
    sh(&format!(
        "diff -r --no-dereference '{}' '{}'",
        src.join("tree").display(),
        tree.display()
    ));
}

/// A killed `--overwrite` leaves its temporary beside the old file; the next restore
/// into the target removes it (and only names of that exact pattern).
#[test]
fn the_next_restore_removes_the_temporaries_of_a_killed_overwrite() {
    let t = TestRepo::new();
    let src = t.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), random_bytes(11, 24 << 20)).unwrap();
    fs::write(src.join("small"), b"small").unwrap();
    t.backup(&[&src]);
    let target = t.path("target");
    fs::create_dir_all(target.join("src")).unwrap();
    let old = random_bytes(12, 1 << 20);
    fs::write(target.join("src/big"), &old).unwrap();
    let mut child = Killed(
        t.cmd()
            .args(["restore", "v", "latest", s(&target), "--overwrite"])
            .env("VAULTFS_FAULTS", "get_range:packs/:delay=300")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let find_tmp = || {
        sh(&format!(
            "find '{}' -regextype posix-extended -regex '.*/\\.vaultfs-restore-[0-9a-f]{{16}}' -size +0",
            target.display()
        ))
    };
    wait_for("a temporary being written", || {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the restore ended before it was killed"
        );
        !find_tmp().is_empty()
    });
    drop(child);
    assert_eq!(fs::read(target.join("src/big")).unwrap(), old);
    let left = find_tmp();
    assert_eq!(left.lines().count(), 1, "{left}");
    // Names that only look alike stay.
    let decoy = target.join("src/.vaultfs-restore-mine");
    fs::write(&decoy, b"mine").unwrap();
    let j = restore_json(&t, &["v", "latest", s(&target), "--skip-existing"]);
    assert_eq!(j["temporaries_removed"], 1, "{j}");
    assert_eq!(find_tmp(), "");
    assert_eq!(fs::read(&decoy).unwrap(), b"mine");
    // --skip-existing kept the old file; an overwrite makes it the backup's.
    assert_eq!(fs::read(target.join("src/big")).unwrap(), old);
    fs::remove_file(&decoy).unwrap();
    t.ok(&[
        "restore",
        "v",
        "latest",
        s(&target),
        "--overwrite",
        "--verify",
    ]);
    sh(&format!(
        "cmp '{}' '{}'",
        src.join("big").display(),
        target.join("src/big").display()
    ));
}

/// A loop device over a backing file; detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn attach(backing: &Path) -> Loop {
        let dev = sh(&format!("losetup -f --show '{}'", backing.display()));
        Loop(PathBuf::from(dev.trim()))
    }

    /// `losetup -r`: a read-only block device over `backing`.
    fn attach_read_only(backing: &Path) -> Loop {
        let dev = sh(&format!("losetup -r -f --show '{}'", backing.display()));
        Loop(PathBuf::from(dev.trim()))
    }
}

/// Unmounts a file system mounted by a test (lazily, also when it fails half-way).
struct Umount(PathBuf);

impl Drop for Umount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A disk image attached from the mount as a read-only block device, as Proxmox Backup
/// Server's `map` does: an ext4 file system made with files in it is backed up with the
/// CLI and through `incoming/`; each copy of `<mnt>/v/<point>/<image>` is attached with
/// `losetup -r`, passes `fsck.ext4 -n`, mounts read-only, and holds the original files.
#[test]
fn an_ext4_image_attaches_from_the_mount_and_holds_the_original_files() {
    if !fuse_available() {
        return;
    }
    let t = TestRepo::new();
    let files = t.path("files");
    fs::create_dir_all(files.join("docs/deep")).unwrap();
    fs::write(files.join("docs/a.bin"), random_bytes(11, 3 * MIB)).unwrap();
    fs::write(files.join("docs/deep/b.txt"), b"hello\n".repeat(1000)).unwrap();
    fs::write(files.join("c.bin"), random_bytes(12, 700_000)).unwrap();
    symlink("docs/a.bin", files.join("link")).unwrap();
    let img = t.path("disk.img");
    sh(&format!(
        "truncate -s 64M '{i}' && mkfs.ext4 -q -F -d '{}' '{i}'",
        files.display(),
        i = img.display()
    ));
    t.ok(&["backup", "v", "--image", s(&img)]);
    let first = t.point_ids()[0].clone();
    let m = t.mount(&[], &[]);
    sh(&format!(
        "cp '{}' '{}'",
        img.display(),
        m.p(".vaultfs/incoming/v/incoming.img").display()
    ));
    wait_for("the ingested point", || t.point_ids().len() == 2);
    let second = t.point_ids()[1].clone();
    wait_for("the new point in the mount", || {
        m.p(&format!("v/{second}/incoming.img")).exists()
    });
    for (point, name) in [(first, "disk.img"), (second, "incoming.img")] {
        let image = m.p(&format!("v/{point}/{name}"));
        let dev = Loop::attach_read_only(&image);
        let fsck = Command::new("fsck.ext4")
            .arg("-n")
            .arg(&dev.0)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "fsck.ext4 -n of {}: {}{}",
            image.display(),
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        let at = t.path(&format!("fs-{name}"));
        fs::create_dir_all(&at).unwrap();
        sh(&format!(
            "mount -o ro '{}' '{}'",
            dev.0.display(),
            at.display()
        ));
        let _u = Umount(at.clone());
        sh(&format!(
            "diff -r --no-dereference -x lost+found '{}' '{}'",
            files.display(),
            at.display()
        ));
        assert_eq!(
            fs::read_link(at.join("link")).unwrap(),
            Path::new("docs/a.bin")
        );
        drop(_u);
        drop(dev);
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

const MIB: usize = 1 << 20;
const IMAGE: usize = 64 * MIB;

/// A 64 MiB sparse image: data at its start, in its middle and at its very end.
fn sparse_image(path: &Path) {
    use std::os::unix::fs::FileExt;
    let f = fs::File::create(path).unwrap();
    f.set_len(IMAGE as u64).unwrap();
    f.write_all_at(&random_bytes(1, MIB), 0).unwrap();
    f.write_all_at(&random_bytes(2, 3 * MIB), 20 * MIB as u64)
        .unwrap();
    f.write_all_at(&random_bytes(3, 100_000), (IMAGE - 100_000) as u64)
        .unwrap();
}

#[test]
fn an_image_restores_onto_a_new_file_a_used_file_and_a_loop_device() {
    let t = TestRepo::new();
    let img = t.path("disk.img");
    sparse_image(&img);
    let want = sha256(&img);
    t.ok(&["backup", "v", "--image", s(&img)]);
    let point = t.point_ids()[0].clone();

    // A new file: the image, its holes left as holes.
    let new = t.path("new.img");
    let j = restore_json(&t, &["v", &point, "--image", "disk.img", "--to", s(&new)]);
    assert_eq!(sha256(&new), want);
    assert_eq!(j["target_kind"], "new_file", "{j}");
    assert_eq!(j["holes"], "left as holes", "{j}");
    assert!(
        allocated(&new) < 16 * MIB as u64,
        "holes were written: {} bytes allocated",
        allocated(&new)
    );
    // Written under a temporary name, renamed once whole: none is left; a relative
    // --to works as well.
    let o = t
        .cmd()
        .current_dir(t.dir.path())
        .args([
            "restore", "v", &point, "--image", "disk.img", "--to", "rel.img",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sha256(&t.path("rel.img")), want);
    let left = sh(&format!(
        "find '{}' -maxdepth 1 -name '.vaultfs-restore-*'",
        t.dir.path().display()
    ));
    assert_eq!(left, "");

    // A file full of junk: without --zero-holes only data is written...
    let used = t.path("used.img");
    fs::write(&used, vec![0xAAu8; IMAGE]).unwrap();
    let out = t.ok(&[
        "restore",
        "v",
        "latest",
        "--image",
        "disk.img",
        "--to",
        s(&used),
    ]);
    assert!(out.contains("--zero-holes"), "{out}");
    let got = fs::read(&used).unwrap();
    let src = fs::read(&img).unwrap();
    assert_eq!(got[..MIB], src[..MIB]);
    assert_eq!(got[20 * MIB..23 * MIB], src[20 * MIB..23 * MIB]);
    assert_eq!(got[IMAGE - 100_000..], src[IMAGE - 100_000..]);
    assert!(got[40 * MIB..41 * MIB].iter().all(|&b| b == 0xAA));
    // ...and with it, the target is the image exactly (read back with --verify).
    let j = restore_json(
        &t,
        &[
            "v",
            "latest",
            "--image",
            "disk.img",
            "--to",
            s(&used),
            "--zero-holes",
            "--verify",
        ],
    );
    assert_eq!(sha256(&used), want);
    assert_eq!(j["holes"], "zeroed", "{j}");
    assert_eq!(j["target_kind"], "file", "{j}");

    // Too small: refused with both sizes, nothing written.
    let small = t.path("small.img");
    fs::write(&small, vec![0x11u8; 32 * MIB]).unwrap();
    let before = sha256(&small);
    let err = t.fails(&[
        "restore",
        "v",
        "latest",
        "--image",
        "disk.img",
        "--to",
        s(&small),
    ]);
    assert!(
        err.contains("33554432 bytes") && err.contains("67108864 bytes"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    assert_eq!(sha256(&small), before);

    // A loop device full of junk, exactly the image's size.
    let backing = t.path("loop-backing");
    fs::write(&backing, vec![0x5Au8; IMAGE]).unwrap();
    let dev = Loop::attach(&backing);
    let j = restore_json(
        &t,
        &[
            "v",
            "--at",
            &point,
            "--image",
            "disk.img",
            "--to",
            s(&dev.0),
            "--zero-holes",
            "--verify",
        ],
    );
    assert_eq!(j["target_kind"], "block_device", "{j}");
    assert_eq!(j["point"], point.as_str(), "{j}");
    assert_eq!(sha256(&dev.0), want);
    // A loop device too small for the image.
    let small_backing = t.path("small-backing");
    fs::write(&small_backing, vec![0x77u8; 16 * MIB]).unwrap();
    let small_dev = Loop::attach(&small_backing);
    let before = sha256(&small_dev.0);
    let err = t.fails(&[
        "restore",
        "v",
        "latest",
        "--image",
        "disk.img",
        "--to",
        s(&small_dev.0),
    ]);
    assert!(
        err.contains("16777216 bytes") && err.contains("too small"),
        "{err}"
    );
    assert_eq!(sha256(&small_dev.0), before);
    drop(small_dev);
    drop(dev);

    // What is not an image, or not there.
    let src_dir = t.path("tree");
    fs::create_dir_all(&src_dir).unwrap();
    fs::write(src_dir.join("f"), b"f").unwrap();
    t.backup(&[&src_dir]);
    let err = t.fails(&[
        "restore",
        "v",
        "latest",
        "--image",
        "tree",
        "--to",
        s(&t.path("x")),
    ]);
    assert!(err.contains("tree backup, not an image"), "{err}");
    let err = t.fails(&[
        "restore",
        "v",
        &point,
        "--image",
        "nope",
        "--to",
        s(&t.path("x")),
    ]);
    assert!(
        err.contains("no image backup nope") && err.contains("disk.img"),
        "{err}"
    );
    let err = t.fails(&["restore", "v", &point, "--image", "disk.img"]);
    assert!(err.contains("--to"), "{err}");
    let err = t.fails(&[
        "restore",
        "v",
        &point,
        "--image",
        "disk.img",
        "--to",
        s(t.dir.path()),
    ]);
    assert!(
        err.contains("neither a block device nor a regular file"),
        "{err}"
    );
    assert!(!t.path("x").exists());
}

/// A child process killed (and reaped) on drop, should the test fail before it does.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A restore blocked on its first chunk read, in the background.
fn stalled_restore(t: &TestRepo, target: &Path) -> Killed {
    let child = t
        .cmd()
        .args(["restore", "v", "latest", s(target)])
        .env("VAULTFS_FAULTS", "get_range:packs/:stall=600000")
        .env("VAULTFS_TASK_INTERVAL_MS", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Killed(child)
}

fn status_of(t: &TestRepo, point: &str) -> String {
    let all = t.points();
    let p = all
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == point)
        .unwrap_or_else(|| panic!("{point} not listed: {all}"));
    p["status"].as_str().unwrap().to_string()
}

fn restore_tasks(t: &TestRepo) -> Vec<Value> {
    let j: Value = serde_json::from_str(&t.ok(&["tasks", "--kind", "restore", "--json"])).unwrap();
    j.as_array().unwrap().clone()
}

#[test]
fn a_point_shows_restoring_while_restored_and_a_failed_restore_error_restoring() {
    let t = TestRepo::new();
    t.backup_one_file(b"some content");
    let point = t.point_ids()[0].clone();
    let mount = fuse_available().then(|| t.mount(&[], &[]));

    let child = stalled_restore(&t, &t.path("target"));
    wait_for("the point to show restoring", || {
        status_of(&t, &point) == "restoring"
    });
    let shown: Value =
        serde_json::from_str(&t.ok(&["point", "show", "v", "latest", "--json"])).unwrap();
    assert_eq!(shown["status"], "restoring", "{shown}");
    let only: Value =
        serde_json::from_str(&t.ok(&["points", "v", "--status", "restoring", "--json"])).unwrap();
    assert_eq!(only.as_array().unwrap().len(), 1, "{only}");
    let text = t.ok(&["points", "v"]);
    assert!(text.contains("restoring"), "{text}");
    let none: Value =
        serde_json::from_str(&t.ok(&["points", "v", "--status", "available", "--json"])).unwrap();
    assert_eq!(none.as_array().unwrap().len(), 0, "{none}");
    let tasks = restore_tasks(&t);
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["status"], "running");
    assert_eq!(tasks[0]["point"], point.as_str());
    if let Some(m) = &mount {
        let file = m.p(&format!(".vaultfs/points/v/{point}.json"));
        wait_for("the mount's point file to say restoring", || {
            let j: Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
            j["status"] == "restoring"
        });
    }

    // Killed: the task failed (interrupted), shown as error_restoring; the point is
    // available again.
    drop(child);
    let tasks = restore_tasks(&t);
    assert_eq!(tasks[0]["status"], "error_restoring", "{tasks:?}");
    assert_eq!(tasks[0]["fail_reason"], "interrupted", "{tasks:?}");
    assert_eq!(status_of(&t, &point), "available");

    // A restore that fails (its store does): failed with the reason, the point stays
    // available, and `task show` and the filters agree.
    let o = t
        .cmd()
        .args(["restore", "v", "latest", s(&t.path("target2"))])
        .env("VAULTFS_FAULTS", "get_range:packs/:error")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let tasks = restore_tasks(&t);
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let failed = &tasks[1];
    assert_eq!(failed["status"], "error_restoring", "{failed}");
    assert_eq!(failed["point"], point.as_str(), "{failed}");
    let reason = failed["fail_reason"].as_str().unwrap();
    assert!(!reason.is_empty() && reason != "interrupted", "{failed}");
    let id = failed["id"].as_str().unwrap();
    let show = t.ok(&["task", "show", id]);
    assert!(
        show.contains("error_restoring") && show.contains(reason),
        "{show}"
    );
    let by_status: Value =
        serde_json::from_str(&t.ok(&["tasks", "--status", "failed", "--json"])).unwrap();
    assert_eq!(by_status.as_array().unwrap().len(), 2, "{by_status}");
    assert_eq!(status_of(&t, &point), "available");
    if let Some(m) = &mount {
        let file = m.p(&format!(".vaultfs/points/v/{point}.json"));
        wait_for("the mount's point file to say available", || {
            let j: Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
            j["status"] == "available"
        });
        let file = m.p(&format!(".vaultfs/tasks/{id}.json"));
        wait_for("the mount's task file to say error_restoring", || {
            fs::read(&file).is_ok_and(|d| {
                serde_json::from_slice::<Value>(&d).unwrap()["status"] == "error_restoring"
            })
        });
    }
}
