//! Real mounts of the built binary: `vaultfs mount` in a temp dir, driven with the tools
//! people use (rsync -aHAX, cp -a, diff -r, sha256sum, ls -lR), with an unmount-on-drop
//! guard. Without /dev/fuse, fusermount3 or the tools the tests fail, unless
//! `VAULTFS_TEST_SKIP=fuse` asks to skip them (each skip is recorded, see `tests/common`).

mod common;

use common::{Target, TestRepo, fuse_available, mounted, random_bytes, s3_endpoint, wait_for};

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A repository with vault `v` (described as "mount tests") and 1 MiB packs, in a temp
/// dir.
fn new_repo() -> TestRepo {
    let r = TestRepo::create(Target::Local, 1);
    r.ok(&["vault", "update", "v", "--description", "mount tests"]);
    r
}

fn sh(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A tree with the edge cases: odd names, hardlinks, symlinks of every kind, a sparse
/// file, xattrs, setuid/setgid/sticky modes, empty file and dir, a fifo, owners and a
/// device node when root.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("dir/deeper/deepest")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("hello.txt"), b"hello, world\n").unwrap();
    fs::write(root.join("dir/deeper/deepest/leaf"), b"leaf\n").unwrap();
    for name in [
        &b"with space"[..],
        b"new\nline",
        b"-leading-dash",
        "caf\u{e9} \u{1f600}".as_bytes(),
        b"bad-utf8-\xff\xfe",
        b"'quote\"",
        &[b'L'; 255],
    ] {
        fs::write(root.join(OsStr::from_bytes(name)), name).unwrap();
    }
    fs::write(root.join("big.bin"), random_bytes(1, 3 << 20)).unwrap();
    // A wide directory: its listing takes many readdir requests, each resumed at the
    // offset the last one ended at.
    fs::create_dir_all(root.join("wide")).unwrap();
    for i in 0..3000 {
        fs::write(
            root.join(format!("wide/entry-{i:05}-of-a-wide-directory")),
            i.to_string(),
        )
        .unwrap();
    }
    // Hardlinks: three names, one in another directory.
    fs::write(root.join("linked"), b"one inode, three names\n").unwrap();
    fs::hard_link(root.join("linked"), root.join("linked-2")).unwrap();
    fs::hard_link(root.join("linked"), root.join("dir/linked-3")).unwrap();
    // Symlinks: relative, absolute, dangling, to a directory.
    symlink("hello.txt", root.join("rel-link")).unwrap();
    symlink("/etc/hostname", root.join("abs-link")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    symlink("dir/deeper", root.join("dir-link")).unwrap();
    // A sparse file: 8 MiB with data in two places.
    let f = fs::File::create(root.join("sparse")).unwrap();
    f.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, &random_bytes(2, 100_000), 3 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"tail", (8 << 20) - 4).unwrap();
    drop(f);
    // Modes.
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(root.join("private"), b"secret\n").unwrap();
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(root.join("sticky")).unwrap();
    fs::set_permissions(root.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir(root.join("setgid-dir")).unwrap();
    fs::set_permissions(root.join("setgid-dir"), fs::Permissions::from_mode(0o2750)).unwrap();
    // Extended attributes (user.* works on tmpfs and ext4 alike).
    for (file, name, value) in [
        ("hello.txt", "user.color", &b"blue"[..]),
        ("dir", "user.empty", b""),
        ("big.bin", "user.binary", &[0u8, 1, 2, 255]),
    ] {
        xattr::set(root.join(file), name, value)
            .unwrap_or_else(|e| panic!("setting {name} on {file}: {e}"));
    }
    // POSIX ACLs: an access ACL on a file, access and default ACLs on a directory.
    sh(Command::new("setfacl")
        .args(["-m", "u:1234:rw,g:5678:r"])
        .arg(root.join("private")));
    sh(Command::new("setfacl")
        .args(["-m", "u:1234:rwx", "-d", "-m", "u:4321:rx"])
        .arg(root.join("setgid-dir")));
    // A fifo.
    sh(Command::new("mkfifo").arg(root.join("fifo")));
    if is_root() {
        sh(Command::new("mknod")
            .arg(root.join("null-dev"))
            .args(["c", "1", "3"]));
        sh(Command::new("chown")
            .arg("1234:5678")
            .arg(root.join("hello.txt")));
        sh(Command::new("chown")
            .args(["-h", "4321:8765"])
            .arg(root.join("rel-link")));
    }
    // Directory times last, so that they are the ones recorded.
    sh(Command::new("touch")
        .args(["-h", "-d", "2001-02-03 04:05:06.123456789"])
        .arg(root.join("dir/deeper"))
        .arg(root.join("rel-link")));
}

/// `getfacl` of one file: its ACL entries, numeric, without the header.
fn getfacl(p: &Path) -> String {
    let o = sh(Command::new("getfacl")
        .args(["--omit-header", "--numeric"])
        .arg(p));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sha256(p: &Path) -> String {
    let o = sh(Command::new("sha256sum").arg(p));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `diff -r` output, less the lines diff prints for fifos and devices (it cannot compare
/// them, on any filesystem; rsync checks those).
fn diff_r(a: &Path, b: &Path) -> String {
    let o = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| {
            !l.contains(" is a fifo while file ")
                && !l.contains(" is a character special file while file ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn backup_tree_matches_the_source_exactly() {
    if !fuse_available() {
        return;
    }
    let r = new_repo();
    let src = r.path("src");
    make_tree(&src);
    r.backup(&[&src]);
    let m = r.mount(&[], &[]);

    let t0 = Instant::now();
    let listing: Vec<String> = fs::read_dir(m.p("v"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    eprintln!(
        "mount-to-first-listing: {:?} (listing itself {:?})",
        m.started.elapsed(),
        t0.elapsed()
    );
    assert_eq!(listing.len(), 2, "{listing:?}");
    let point = r.point_ids().pop().unwrap();
    assert!(listing.contains(&point) && listing.contains(&"latest".to_string()));
    assert_eq!(
        fs::read_link(m.p("v/latest")).unwrap(),
        Path::new(&point),
        "latest points to the newest point"
    );

    // rsync in checksum mode with hardlinks, ACLs and xattrs: no output means identical.
    let backup = m.p("v/latest/src");
    let o = sh(Command::new("rsync")
        .arg("-aHAXnc")
        .arg("--itemize-changes")
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", backup.display())));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "",
        "rsync found differences"
    );

    // Every entry of the wide directory, once.
    let mut wide: Vec<String> = fs::read_dir(backup.join("wide"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    wide.sort();
    wide.dedup();
    assert_eq!(wide.len(), 3000);

    // cp -a out of the mount, then diff -r and rsync against the source.
    let copy = r.path("copy");
    sh(Command::new("cp").arg("-a").arg(&backup).arg(&copy));
    assert_eq!(diff_r(&src, &copy), "");
    assert_eq!(diff_r(&src, &backup), "");
    let o = sh(Command::new("rsync")
        .arg("-aHAXnc")
        .arg("--itemize-changes")
        .arg(format!("{}/", src.display()))
        .arg(format!("{}/", copy.display())));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "", "the copy differs");
    assert_eq!(
        sha256(&src.join("big.bin")),
        sha256(&backup.join("big.bin"))
    );

    // ACLs as getfacl shows them: those of the source, through the mount, in the cp -a
    // copy and in an rsync -aHAX copy.
    let rcopy = r.path("rsync-copy");
    sh(Command::new("rsync")
        .arg("-aHAX")
        .arg(format!("{}/", backup.display()))
        .arg(format!("{}/", rcopy.display())));
    for (f, entry) in [
        ("private", "user:1234:rw-"),
        ("setgid-dir", "default:user:4321:r-x"),
    ] {
        let want = getfacl(&src.join(f));
        assert!(
            want.lines().any(|l| l == entry),
            "the source's {f} has no ACL entry {entry}: {want}"
        );
        assert_eq!(getfacl(&backup.join(f)), want, "{f} through the mount");
        assert_eq!(getfacl(&copy.join(f)), want, "{f} copied by cp -a");
        assert_eq!(getfacl(&rcopy.join(f)), want, "{f} copied by rsync -aHAX");
    }

    // Hardlinks: one inode, the right link count.
    let a = fs::metadata(backup.join("linked")).unwrap();
    let b = fs::metadata(backup.join("linked-2")).unwrap();
    let c = fs::metadata(backup.join("dir/linked-3")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 3));
    assert_eq!(a.ino(), c.ino());
    // Modes, special files.
    assert_eq!(
        fs::metadata(backup.join("setuid")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::metadata(backup.join("sticky")).unwrap().mode() & 0o7777,
        0o1777
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata(backup.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    if is_root() {
        let d = fs::symlink_metadata(backup.join("null-dev")).unwrap();
        assert!(d.file_type().is_char_device());
        assert_eq!(
            d.rdev(),
            fs::symlink_metadata(src.join("null-dev")).unwrap().rdev()
        );
    }
    assert_eq!(
        fs::read_link(backup.join("dangling")).unwrap(),
        Path::new("does/not/exist")
    );

    // Holes: st_blocks reflects them, SEEK_DATA/SEEK_HOLE find them, a copy stays sparse.
    let sparse = fs::metadata(backup.join("sparse")).unwrap();
    assert_eq!(sparse.len(), 8 << 20);
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "blocks {}",
        sparse.blocks()
    );
    let f = fs::File::open(backup.join("sparse")).unwrap();
    let data = rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(0)).unwrap();
    assert!(data <= 3 << 20, "first data at {data}");
    let hole = rustix::fs::seek(&f, rustix::fs::SeekFrom::Hole(3 << 20)).unwrap();
    assert!(
        hole > (3 << 20) + 100_000 - 1 && hole < 8 << 20,
        "hole at {hole}"
    );
    assert!(fs::metadata(copy.join("sparse")).unwrap().blocks() * 512 < 2 << 20);

    // Stable inode numbers across lookups.
    assert_eq!(
        fs::metadata(m.p(&format!("v/{point}/src/hello.txt")))
            .unwrap()
            .ino(),
        fs::metadata(backup.join("hello.txt")).unwrap().ino()
    );
}

#[test]
fn writes_are_refused_with_erofs() {
    if !fuse_available() {
        return;
    }
    let r = new_repo();
    let src = r.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    r.backup(&[&src]);
    let m = r.mount(&[], &[]);
    let b = m.p("v/latest/src");
    let erofs = |e: std::io::Error| assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    erofs(fs::write(b.join("f"), b"x").unwrap_err());
    erofs(
        fs::OpenOptions::new()
            .append(true)
            .open(b.join("f"))
            .unwrap_err(),
    );
    erofs(fs::write(b.join("new"), b"x").unwrap_err());
    erofs(fs::create_dir(b.join("newdir")).unwrap_err());
    erofs(fs::remove_file(b.join("f")).unwrap_err());
    erofs(fs::remove_dir(b.join("d")).unwrap_err());
    erofs(fs::rename(b.join("f"), b.join("g")).unwrap_err());
    erofs(symlink("x", b.join("link")).unwrap_err());
    erofs(fs::hard_link(b.join("f"), b.join("f2")).unwrap_err());
    erofs(fs::set_permissions(b.join("f"), fs::Permissions::from_mode(0o777)).unwrap_err());
    erofs(xattr::set(b.join("f"), "user.x", b"1").unwrap_err());
    erofs(fs::create_dir(m.p("v/newpoint")).unwrap_err());
    assert_eq!(fs::read(b.join("f")).unwrap(), b"data");
}

#[test]
fn damaged_chunk_is_eio_for_that_file_and_new_points_appear() {
    if !fuse_available() {
        return;
    }
    let r = new_repo();
    let src = r.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("good"), random_bytes(3, 500_000)).unwrap();
    r.backup(&[&src]);
    let m = r.mount(&[], &[]);
    let first = r.point_ids().pop().unwrap();
    assert_eq!(fs::read_link(m.p("v/latest")).unwrap(), Path::new(&first));

    // A point made with the CLI while mounted appears within a few seconds.
    let packs_before = pack_files(&r.repo);
    let victim_dir = r.path("victim");
    fs::create_dir_all(&victim_dir).unwrap();
    fs::write(victim_dir.join("victim"), random_bytes(4, 2 << 20)).unwrap();
    fs::write(
        victim_dir.join("other"),
        b"small file, stored after the victim\n",
    )
    .unwrap();
    r.backup(&[&victim_dir]);
    let second = r.point_ids().pop().unwrap();
    assert_ne!(first, second);
    let t = Instant::now();
    wait_for("the new point in the mount", || {
        let names: Vec<String> = fs::read_dir(m.p("v"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.contains(&second) && fs::read_link(m.p("v/latest")).unwrap() == Path::new(&second)
    });
    eprintln!("new point visible after {:?}", t.elapsed());
    assert!(m.p("v/latest/victim/other").exists());
    assert!(m.p(&format!("v/{second}/victim/victim")).exists());

    // Damage the first chunk of the victim file, found where the point says it is (the
    // parallel backup decides which chunk a pack starts with).
    let repo = vaultfs::repo::Repository::open(r.store(), common::PASSWORD.as_bytes()).unwrap();
    let manifest = repo.load_manifest("v", &second).unwrap();
    let node = repo.find_node(&manifest, b"victim/victim").unwrap();
    let vaultfs::repo::format::Extent::Data(c) = &node.content[0] else {
        panic!("the victim starts with a hole");
    };
    let pack = r.repo.join(c.pack.key());
    assert!(
        !packs_before.contains(&pack),
        "the victim's chunk is in a new pack"
    );
    let mut data = fs::read(&pack).unwrap();
    for b in &mut data[c.offset as usize + 40..c.offset as usize + 72] {
        *b ^= 0x5a;
    }
    fs::write(&pack, &data).unwrap();
    let victim = m.p(&format!("v/{second}/victim/victim"));
    let e = fs::read(&victim).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    // Everything else keeps being served.
    assert_eq!(
        fs::read(m.p(&format!("v/{first}/src/good"))).unwrap(),
        random_bytes(3, 500_000)
    );
    assert_eq!(
        fs::read_dir(m.p("v")).unwrap().count(),
        3,
        "two points and latest"
    );
    let e2 = fs::read(&victim).unwrap_err();
    assert_eq!(e2.raw_os_error(), Some(libc::EIO));
    let log = m.log_text();
    let file = format!("file=v/{second}/victim/victim");
    assert!(
        log.lines().map(common::strip_ansi).any(|l| l
            .contains("read failed at offset 0: damaged object chunk ")
            && l.contains(": authentication failed")
            && l.contains(&file)),
        "no log line names the file and the damaged chunk: {log}"
    );
}

fn pack_files(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if !repo.join("packs").exists() {
        return out;
    }
    for d in fs::read_dir(repo.join("packs")).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

/// `src/`: eight 1 MiB files `file-<i>` (`random_bytes(10 + i, 1 << 20)`) and eight small
/// ones in `sub/a/b/`.
fn eight_files(r: &TestRepo) -> PathBuf {
    let src = r.path("src");
    fs::create_dir_all(src.join("sub/a/b")).unwrap();
    for i in 0..8u64 {
        fs::write(src.join(format!("file-{i}")), random_bytes(10 + i, 1 << 20)).unwrap();
        fs::write(src.join(format!("sub/a/b/small-{i}")), format!("{i}\n")).unwrap();
    }
    src
}

#[test]
fn parallel_readers_and_listing() {
    if !fuse_available() {
        return;
    }
    let r = new_repo();
    let src = eight_files(&r);
    r.backup(&[&src]);
    let m = r.mount(&["--cache-size", "4M"], &[]);
    let base = m.p("v/latest/src");
    std::thread::scope(|s| {
        let mut hs = Vec::new();
        for i in 0..8u64 {
            let p = base.join(format!("file-{i}"));
            hs.push(s.spawn(move || {
                for _ in 0..3 {
                    let mut f = fs::File::open(&p).unwrap();
                    let mut v = Vec::new();
                    f.read_to_end(&mut v).unwrap();
                    assert_eq!(v, random_bytes(10 + i, 1 << 20));
                    // A random-access read too.
                    f.seek(SeekFrom::Start(777_777)).unwrap();
                    let mut buf = [0u8; 1000];
                    f.read_exact(&mut buf).unwrap();
                    assert_eq!(&buf[..], &random_bytes(10 + i, 1 << 20)[777_777..778_777]);
                }
            }));
        }
        let base2 = base.clone();
        hs.push(s.spawn(move || {
            for _ in 0..5 {
                let o = sh(Command::new("ls").arg("-lR").arg(&base2));
                assert!(String::from_utf8_lossy(&o.stdout).contains("small-7"));
            }
        }));
        for h in hs {
            h.join().unwrap();
        }
    });
}

/// One backup's objects are slowed down in the store (VAULTFS_FAULTS: every ranged read of
/// its packs waits 3 s); while a reader waits on them, 8 readers of other files and
/// `ls -lR` run to completion: one slow fetch holds up nothing else.
#[test]
fn a_slow_backend_object_holds_up_only_its_own_reader() {
    if !fuse_available() {
        return;
    }
    let r = new_repo();
    r.ok(&["vault", "create", "slow"]);
    let slow_src = r.path("slowsrc");
    fs::create_dir_all(&slow_src).unwrap();
    fs::write(slow_src.join("f"), random_bytes(99, 100_000)).unwrap();
    let before = pack_files(&r.repo);
    r.ok(&["backup", "slow", slow_src.to_str().unwrap()]);
    let slow_packs: Vec<String> = pack_files(&r.repo)
        .into_iter()
        .filter(|p| !before.contains(p))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(!slow_packs.is_empty());
    let src = eight_files(&r);
    r.backup(&[&src]);
    let faults: Vec<String> = slow_packs
        .iter()
        .map(|p| format!("get_range:{p}:delay=3000"))
        .collect();
    let m = r.mount(&[], &[("VAULTFS_FAULTS", &faults.join(";"))]);
    let slow_file = m.p("slow/latest/slowsrc/f");
    let base = m.p("v/latest/src");
    let inflight = || -> u64 {
        let stats: serde_json::Value =
            serde_json::from_slice(&fs::read(m.p(".vaultfs/stats.json")).unwrap()).unwrap();
        stats["inflight_bytes"].as_u64().unwrap()
    };
    assert_eq!(inflight(), 0);
    std::thread::scope(|s| {
        let slow = s.spawn(|| fs::read(&slow_file).unwrap());
        // The slow reader's first fetch (of its tree) is under way: nothing else reads.
        wait_for("the slowed fetch to start", || inflight() > 0);
        let mut hs = Vec::new();
        for i in 0..8u64 {
            let p = base.join(format!("file-{i}"));
            hs.push(s.spawn(move || {
                assert_eq!(fs::read(&p).unwrap(), random_bytes(10 + i, 1 << 20));
            }));
        }
        let base2 = base.clone();
        hs.push(s.spawn(move || {
            let o = sh(Command::new("ls").arg("-lR").arg(&base2));
            assert!(String::from_utf8_lossy(&o.stdout).contains("small-7"));
        }));
        for h in hs {
            h.join().unwrap();
        }
        // Its tree and data chunks take three slowed fetches: still waiting.
        assert!(!slow.is_finished(), "the slowed read finished first");
        assert_eq!(slow.join().unwrap(), random_bytes(99, 100_000));
    });
    let log = m.log_text();
    assert!(log.contains("VAULTFS_FAULTS is set"), "{log}");
}

#[test]
fn control_files_describe_vaults_and_points() {
    if !fuse_available() {
        return;
    }
    let r = new_repo();
    r.backup_one_file(b"content");
    let img = r.path("disk.img");
    let f = fs::File::create(&img).unwrap();
    f.set_len(4 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"boot sector", 0).unwrap();
    drop(f);
    r.ok(&["backup", "v", "--image", img.to_str().unwrap()]);
    let m = r.mount(&[], &[]);
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(m.p(".vaultfs/vaults/v.json")).unwrap()).unwrap();
    assert_eq!(v["name"], "v");
    assert_eq!(v["description"], "mount tests");
    assert_eq!(v["point_count"], 2);
    assert!(v["bytes_used"].as_u64().unwrap() > 0);
    let points = r.point_ids();
    let names: Vec<String> = fs::read_dir(m.p(".vaultfs/points/v"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let p: serde_json::Value = serde_json::from_slice(
        &fs::read(m.p(&format!(".vaultfs/points/v/{}.json", points[1]))).unwrap(),
    )
    .unwrap();
    assert_eq!(p["id"], points[1].as_str());
    assert_eq!(p["status"], "available");
    assert_eq!(p["parent"], points[0].as_str());
    assert_eq!(p["backups"][0]["kind"], "image");
    assert_eq!(p["backups"][0]["size"], 4 << 20);
    assert!(p["time"].as_str().unwrap().ends_with('Z'));
    // The image backup is one file, holes kept.
    let image = m.p(&format!("v/{}/disk.img", points[1]));
    let meta = fs::metadata(&image).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.len(), 4 << 20);
    assert!(meta.blocks() * 512 < 1 << 20);
    assert_eq!(sha256(&image), sha256(&img));
    // stats.json counts what the reads fetched, once each with one ranged read: the
    // point's top trees (loaded for the lookup of disk.img) and the image's data chunk.
    let stats = || -> serde_json::Value {
        serde_json::from_slice(&fs::read(m.p(".vaultfs/stats.json")).unwrap()).unwrap()
    };
    let s1 = stats();
    assert_eq!(s1["chunk_fetches"], 2, "{s1}");
    assert!(s1["chunk_fetch_bytes"].as_u64().unwrap() > 0, "{s1}");
    assert_eq!(s1["bytes_served"], 4 << 20, "{s1}");
    assert_eq!(s1["backend"]["get_range"], 2, "{s1}");
    assert!(s1["cache_bytes"].as_u64().unwrap() <= s1["cache_limit"].as_u64().unwrap());
    assert!(s1["rss_bytes"].as_u64().unwrap() > 0, "{s1}");
    // The daemon re-executed itself with one malloc arena (same pid).
    let environ = fs::read(format!("/proc/{}/environ", m.pid())).unwrap();
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|v| v == b"MALLOC_ARENA_MAX=1"),
        "the daemon runs without MALLOC_ARENA_MAX=1"
    );
    // A re-read is served by the page cache or the chunk cache: no new fetch.
    assert_eq!(sha256(&image), sha256(&img));
    assert_eq!(stats()["chunk_fetches"], s1["chunk_fetches"]);
    // Control files are read-only too.
    let e = fs::write(m.p(".vaultfs/vaults/v.json"), b"{}").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn signals_and_fusermount_exit_cleanly() {
    if !fuse_available() {
        return;
    }
    signals_body(&new_repo());
}

/// Over S3 the store's runtime has threads before the mount starts: they must not take
/// the signals (they would drop an ignored SIGINT, or die of SIGTERM without unmounting).
#[test]
fn signals_exit_cleanly_over_s3() {
    if !fuse_available() {
        return;
    }
    if s3_endpoint().is_none() {
        return;
    }
    let r = TestRepo::create(TestRepo::s3_target(&common::unique_bucket("mount")), 1);
    signals_body(&r);
    // And a read over S3 through the mount is right.
    let m = r.mount(&[], &[]);
    assert_eq!(fs::read(m.p("v/latest/src/f")).unwrap(), b"x");
}

fn signals_body(r: &TestRepo) {
    r.backup_one_file(b"x");
    for how in [
        "SIGINT",
        "SIGINT-ignored",
        "SIGHUP-ignored",
        "SIGTERM",
        "fusermount3",
    ] {
        // One of them with --allow-other (then default_permissions: root reads anyway).
        let extra: &[&str] = if how == "SIGTERM" {
            &["--allow-other"]
        } else {
            &[]
        };
        let mut m = r.mount_with(extra, &[], how.ends_with("-ignored"));
        assert_eq!(fs::read(m.p("v/latest/src/f")).unwrap(), b"x");
        match how {
            "fusermount3" => {
                sh(Command::new("fusermount3").arg("-u").arg(&m.dir));
            }
            sig => {
                let s = if sig.starts_with("SIGINT") {
                    rustix::process::Signal::INT
                } else if sig.starts_with("SIGHUP") {
                    rustix::process::Signal::HUP
                } else {
                    rustix::process::Signal::TERM
                };
                rustix::process::kill_process(rustix::process::Pid::from_raw(m.pid()).unwrap(), s)
                    .unwrap();
            }
        }
        let st = m.wait_exit(Duration::from_secs(10));
        assert!(st.success(), "{how}: exit {st}: {}", m.log_text());
        assert!(!mounted(&m.dir), "{how}: still mounted");
    }
}

#[test]
fn bad_starts_are_clear_errors() {
    if !fuse_available() {
        return;
    }
    let r = new_repo();
    // Each start fails with status 1 and one line that says why.
    let fails_saying = |o: Output, line: String| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{line}: {err}");
        assert!(
            err.lines().any(|l| l == line),
            "no line says {line:?}: {err}"
        );
    };
    // Missing mount point.
    let nope = r.path("nope");
    fails_saying(
        r.run(&["mount", nope.to_str().unwrap()]),
        format!("vaultfs: mount point {} does not exist", nope.display()),
    );
    // Wrong password.
    let mnt = r.path("mnt-pw");
    fs::create_dir_all(&mnt).unwrap();
    fails_saying(
        r.cmd()
            .env("VAULTFS_PASSWORD", "wrong")
            .arg("mount")
            .arg(&mnt)
            .output()
            .unwrap(),
        format!(
            "vaultfs: wrong password for the repository at {}",
            r.repo.display()
        ),
    );
    // Missing repository.
    let no_repo = r.path("no-repo");
    fails_saying(
        r.cmd()
            .env("VAULTFS_REPO", &no_repo)
            .arg("mount")
            .arg(&mnt)
            .output()
            .unwrap(),
        format!(
            "vaultfs: no vaultfs repository at {} (run `vaultfs init` first)",
            no_repo.display()
        ),
    );
    assert!(!mounted(&mnt));
    // Busy mount point: already mounted.
    let m = r.mount(&[], &[]);
    fails_saying(
        r.run(&["mount", m.dir.to_str().unwrap()]),
        format!(
            "vaultfs: mount point {} is busy: something is already mounted there",
            m.dir.display()
        ),
    );
    assert!(mounted(&m.dir));
}

#[test]
fn disk_cache_serves_a_remount_and_survives_damage_to_itself() {
    if !fuse_available() {
        return;
    }
    let r = new_repo();
    let src = r.path("src");
    fs::create_dir_all(&src).unwrap();
    let data = random_bytes(9, 3 << 20);
    fs::write(src.join("f"), &data).unwrap();
    r.backup(&[&src]);
    let dc = r.path("disk-cache");
    let dcs = dc.to_str().unwrap().to_string();
    {
        let m = r.mount(&["--disk-cache", &dcs, "--disk-cache-size", "64M"], &[]);
        assert_eq!(fs::read(m.p("v/latest/src/f")).unwrap(), data);
    }
    let cached: Vec<PathBuf> = walk_files(&dc);
    assert!(!cached.is_empty(), "the disk cache holds chunks");
    // Corrupt every cached file: loads must verify, drop them and fetch again.
    for p in &cached {
        let mut b = fs::read(p).unwrap();
        let n = b.len();
        b[n / 2] ^= 0xff;
        fs::write(p, &b).unwrap();
    }
    // The next mount finds every cached chunk damaged: each fails verification, is
    // dropped and fetched again (and cached again), and the read is still right.
    let m = r.mount(&["--disk-cache", &dcs, "--disk-cache-size", "64M"], &[]);
    assert_eq!(fs::read(m.p("v/latest/src/f")).unwrap(), data);
    assert!(
        m.log_text().contains("failed verification"),
        "{}",
        m.log_text()
    );
    drop(m);
    // The cache is whole again; with the packs gone, a fresh mount reads from it alone.
    let packs = r.repo.join("packs");
    let moved = r.path("packs-away");
    fs::rename(&packs, &moved).unwrap();
    fs::create_dir_all(&packs).unwrap();
    let m = r.mount(&["--disk-cache", &dcs, "--disk-cache-size", "64M"], &[]);
    let res = fs::read(m.p("v/latest/src/f"));
    drop(m);
    fs::remove_dir_all(&packs).unwrap();
    fs::rename(&moved, &packs).unwrap();
    assert_eq!(res.unwrap(), data, "served from the disk cache alone");
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_files(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// `fusermount3 -u` ends the daemon without a warning: nothing is unmounted twice, so
/// no "Failed to umount filesystem: Invalid argument" in its log.
#[test]
fn fusermount_unmount_logs_no_failure() {
    if !fuse_available() {
        return;
    }
    let r = new_repo();
    r.backup_one_file(b"x");
    for how in ["fusermount3", "SIGTERM"] {
        let mut m = r.mount(&[], &[]);
        assert_eq!(fs::read(m.p("v/latest/src/f")).unwrap(), b"x");
        if how == "fusermount3" {
            sh(Command::new("fusermount3").arg("-u").arg(&m.dir));
        } else {
            let pid = rustix::process::Pid::from_raw(m.pid()).unwrap();
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        }
        let st = m.wait_exit(Duration::from_secs(10));
        let log = m.log_text();
        assert!(st.success(), "{how}: exit {st}: {log}");
        assert!(!mounted(&m.dir), "{how}: still mounted");
        for bad in [
            "Failed to umount",
            "Unmount failed",
            "Invalid argument",
            "WARN",
        ] {
            assert!(!log.contains(bad), "{how}: {bad:?} in the log:\n{log}");
        }
    }
}

/// `df` of a mount shows the space of the local repository's file system; `access(W_OK)`
/// says writable where writes work (the root, `incoming/<vault>/`), EROFS elsewhere;
/// `fsync` of a file in `incoming/` succeeds and makes no point: the point is made, whole,
/// at close.
#[test]
fn statfs_access_and_fsync_answer_what_is_true() {
    if !fuse_available() {
        return;
    }
    let r = new_repo();
    r.backup_one_file(b"x");
    let m = r.mount(&[], &[]);

    // statfs: the repository's file system, as df shows it.
    let df = |p: &Path| {
        let out = sh(Command::new("df")
            .args(["--output=size,avail,itotal", "-B1"])
            .arg(p));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse::<u64>().unwrap())
            .collect::<Vec<_>>()
    };
    let mine = df(&m.dir);
    let repo = df(&r.repo);
    assert!(mine[0] > 0 && mine[2] > 0, "{mine:?}");
    assert_eq!(mine[0], repo[0], "size: mount {mine:?} repository {repo:?}");
    assert_eq!(
        mine[2], repo[2],
        "inodes: mount {mine:?} repository {repo:?}"
    );
    let sv = rustix::fs::statvfs(&m.dir).unwrap();
    assert_eq!(sv.f_namemax, 255);

    // access(W_OK), as `test -w` asks it.
    let writable = |p: &Path| {
        Command::new("sh")
            .args(["-c", "test -w \"$0\""])
            .arg(p)
            .status()
            .unwrap()
            .success()
    };
    assert!(writable(&m.dir), "the root (mkdir makes a vault)");
    assert!(writable(&m.p(".vaultfs/incoming/v")));
    for ro in [
        "v",
        "v/latest",
        "v/latest/src",
        "v/latest/src/f",
        ".vaultfs",
        ".vaultfs/incoming",
        ".vaultfs/vaults/v.json",
    ] {
        assert!(!writable(&m.p(ro)), "{ro} says writable");
    }
    let e = rustix::fs::access(m.p("v/latest/src/f"), rustix::fs::Access::WRITE_OK).unwrap_err();
    assert_eq!(e, rustix::io::Errno::ROFS);

    // fsync in incoming/: OK, and no point until close.
    use std::io::Write;
    let before = r.point_ids().len();
    let mut f = fs::File::create(m.p(".vaultfs/incoming/v/img.raw")).unwrap();
    f.write_all(&vec![7u8; 100_000]).unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    assert_eq!(r.point_ids().len(), before, "fsync made a point");
    f.write_all(&vec![8u8; 50_000]).unwrap();
    drop(f);
    assert_eq!(r.point_ids().len(), before + 1);
    let img = fs::read(m.p("v/latest/img.raw")).unwrap_or_else(|_| {
        wait_until_readable(&m.p("v/latest/img.raw"));
        fs::read(m.p("v/latest/img.raw")).unwrap()
    });
    assert_eq!(img.len(), 150_000);
    assert!(img[..100_000].iter().all(|&b| b == 7) && img[100_000..].iter().all(|&b| b == 8));
}

fn wait_until_readable(p: &Path) {
    let t = Instant::now();
    while fs::metadata(p).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The inode table follows what the kernel caches: a walk of 50,000 entries grows it by
/// as many, and `echo 2 > /proc/sys/vm/drop_caches` (the kernel forgets the inodes it
/// does not use) brings it back to its baseline, while an entry the kernel still holds
/// (an open file, and so its directory) keeps its number.
#[test]
fn forgotten_inodes_leave_the_table() {
    if !fuse_available() {
        return;
    }
    let r = TestRepo::new();
    let src = r.path("src");
    for d in 0..50 {
        let dir = src.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            fs::File::create(dir.join(format!("f{f:04}"))).unwrap();
        }
    }
    fs::write(src.join("d00/f0000"), b"held open\n").unwrap();
    r.ok(&[OsStr::new("backup"), OsStr::new("v"), src.as_os_str()]);
    let m = r.mount(&[], &[]);
    let inodes = || -> u64 {
        let s: serde_json::Value =
            serde_json::from_slice(&fs::read(m.p(".vaultfs/stats.json")).unwrap()).unwrap();
        s["inodes"].as_u64().unwrap()
    };
    let top = m.p("v/latest/src");
    assert!(top.is_dir());
    let baseline = inodes();
    let mut seen = 0;
    for d in fs::read_dir(&top).unwrap() {
        let d = d.unwrap();
        assert!(d.metadata().unwrap().is_dir());
        for f in fs::read_dir(d.path()).unwrap() {
            f.unwrap().metadata().unwrap();
            seen += 1;
        }
    }
    assert_eq!(seen, 50_000);
    let grown = inodes();
    assert!(grown >= baseline + 50_000, "{baseline} -> {grown}");
    let held_path = top.join("d00/f0000");
    let held = fs::File::open(&held_path).unwrap();
    let held_ino = held.metadata().unwrap().ino();
    let dir_ino = fs::metadata(top.join("d00")).unwrap().ino();
    fs::write("/proc/sys/vm/drop_caches", "2").expect("writing /proc/sys/vm/drop_caches");
    wait_for("the table to shrink to its baseline", || {
        inodes() <= baseline + 2
    });
    // What the kernel held kept its number; what it forgot comes back under its own.
    assert_eq!(held.metadata().unwrap().ino(), held_ino);
    assert_eq!(fs::metadata(&held_path).unwrap().ino(), held_ino);
    assert_eq!(fs::metadata(top.join("d00")).unwrap().ino(), dir_ino);
    assert_eq!(fs::read(&held_path).unwrap(), b"held open\n");
    assert_eq!(fs::read_dir(top.join("d49")).unwrap().count(), 1000);
    drop(held);
}
