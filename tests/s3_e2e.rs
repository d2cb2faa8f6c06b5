//! The same end-to-end bodies (backup, incremental backup, restore, check, a mount with
//! `cp -a` out of it and a compare, damage) against a local repository and against an S3
//! repository on a real server (Ceph RGW from `scripts/s3-rgw.sh`, reached through
//! `VAULTFS_TEST_S3_ENDPOINT` with the credentials of `AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY`).
//!
//! Without the endpoint the S3 variants fail, unless `VAULTFS_TEST_SKIP=s3` asks to skip
//! them (each skip is recorded, see `tests/common`). Every S3 test works in a bucket of its own, under a prefix.
//! The server-stall test lives in `tests/s3_stall.rs`, a binary of its own, because it
//! stops the server that the tests here use.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A fresh S3 repository with packs of `pack_size_mib`, or `None` when S3 tests are skipped.
fn s3_repo(test: &str, pack_size_mib: u32) -> Option<TestRepo> {
    s3_endpoint()?;
    let target = TestRepo::s3_target(&unique_bucket(test));
    Some(TestRepo::create(target, pack_size_mib))
}

/// `vaultfs backup v SRC --json`, parsed.
fn backup_json(t: &TestRepo, src: &Path) -> serde_json::Value {
    let out = t.ok(&[
        "backup".as_ref(),
        "v".as_ref(),
        src.as_os_str(),
        "--json".as_ref(),
    ]);
    serde_json::from_str(&out).expect("backup --json")
}

fn restore_latest(t: &TestRepo, target: &Path) {
    t.ok(&[
        "restore".as_ref(),
        "v".as_ref(),
        "latest".as_ref(),
        target.as_os_str(),
    ]);
}

fn what(t: &TestRepo) -> &'static str {
    if t.is_s3() { "s3" } else { "local" }
}

// ---- the bodies: the same for every target ----

/// The tricky tree roundtrips exactly and passes `check --read-data`; a second backup
/// after one change reads only that file.
fn tricky_roundtrip_and_incremental(t: &TestRepo) {
    let src = t.path("tricky");
    make_tricky_tree(&src);
    let t0 = Instant::now();
    let first = backup_json(t, &src);
    eprintln!("{}: first backup in {:?}", what(t), t0.elapsed());
    assert_eq!(first["backups"][0]["files_unchanged"], 0, "{first}");
    assert!(first["parent"].is_null(), "{first}");

    let out = t.path("out");
    restore_latest(t, &out);
    let diff = rsync_diff(&src, &out.join("tricky"));
    assert_eq!(diff, "", "restored tree differs:\n{diff}");
    let sparse = out.join("tricky/sparse.img");
    assert_eq!(fs::metadata(&sparse).unwrap().len(), 64 << 20);
    assert!(allocated(&sparse) < 1 << 20, "sparse file was filled in");
    use std::os::unix::fs::MetadataExt;
    let a = fs::metadata(out.join("tricky/hard/a")).unwrap();
    let c = fs::metadata(out.join("tricky/hard/sub/c")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (c.ino(), 3));
    let report = t.ok(&["check", "--read-data"]);
    assert!(report.contains("no errors"), "{report}");

    // Incremental: one file changed, every other one is skipped unread.
    fs::write(src.join("private"), b"a changed secret").unwrap();
    let t0 = Instant::now();
    let second = backup_json(t, &src);
    eprintln!("{}: incremental backup in {:?}", what(t), t0.elapsed());
    let b = &second["backups"][0];
    let files = b["files"].as_u64().unwrap();
    assert!(files > 10, "{b}");
    assert_eq!(b["files"], first["backups"][0]["files"], "{b}");
    // Only the changed file is read. The counter leaves out the changed file and, today,
    // the second and third names of the hardlinked hard/a (not read either).
    assert_eq!(b["bytes_read"], 16, "{b}");
    assert_eq!(b["files_unchanged"], files - 3, "{b}");
    assert!(
        b["bytes_stored"].as_u64().unwrap() < 1 << 20,
        "an incremental backup stored much: {b}"
    );
    assert_eq!(second["parent"], first["id"], "{second}");

    let out2 = t.path("out2");
    restore_latest(t, &out2);
    let diff = rsync_diff(&src, &out2.join("tricky"));
    assert_eq!(diff, "", "restored incremental tree differs:\n{diff}");
    assert_eq!(t.points().as_array().unwrap().len(), 2);
    t.ok(&["check", "--read-data"]);
}

/// A mount of the repository: rsync finds no difference, `cp -a` out of it gives the same
/// tree, a large file has the same SHA-256, and `fusermount3 -u` ends the daemon cleanly.
fn mount_cp_a_matches(t: &TestRepo) {
    let src = t.path("tree");
    make_tricky_tree(&src);
    fs::write(src.join("large.bin"), random_bytes(7, 48 << 20)).unwrap();
    backup_json(t, &src);
    let point = t.points()[0]["id"].as_str().unwrap().to_string();

    let mut m = t.mount(&[], &[]);
    let backup = m.p(&format!("v/{point}/tree"));
    let t0 = Instant::now();
    let diff = rsync_diff(&src, &backup);
    eprintln!("{}: rsync -c over the mount in {:?}", what(t), t0.elapsed());
    assert_eq!(diff, "", "the mount differs from the source:\n{diff}");

    let copy = t.path("copy");
    let o = Command::new("cp")
        .arg("-a")
        .arg(&backup)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cp -a failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let diff = rsync_diff(&src, &copy);
    assert_eq!(diff, "", "the copy differs from the source:\n{diff}");
    let want = sha256(&src.join("large.bin"));
    assert_eq!(sha256(&backup.join("large.bin")), want);
    assert_eq!(sha256(&copy.join("large.bin")), want);
    assert_eq!(
        fs::read_link(m.p("v/latest")).unwrap(),
        Path::new(&point),
        "latest"
    );

    let o = Command::new("fusermount3")
        .arg("-u")
        .arg(&m.dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fusermount3 -u: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let st = m.wait_exit(Duration::from_secs(15));
    assert!(st.success(), "mount exited with {st}: {}", m.log_text());
}

/// Flipped bytes in one pack object: structure checks pass, `check --read-data` fails
/// naming the pack, and a restore fails saying what is damaged.
fn damaged_pack_is_named(t: &TestRepo) {
    let src = t.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.bin"), random_bytes(1, 3 << 20)).unwrap();
    fs::write(src.join("sub/b.txt"), b"tiny file").unwrap();
    backup_json(t, &src);
    t.ok(&["check", "--read-data"]);

    // The largest pack starts with data chunks (trees are written last).
    let store = t.store();
    let packs = store.list("packs/").unwrap();
    let victim = packs
        .iter()
        .max_by_key(|o| o.size)
        .expect("a pack")
        .key
        .clone();
    let mut data = store.get(&victim).unwrap();
    for b in &mut data[100..132] {
        *b ^= 0x5a;
    }
    store.put(&victim, &data).unwrap();
    assert_eq!(store.get(&victim).unwrap(), data, "the damage was written");

    t.ok(&["check"]); // the structure is intact
    let err = t.fails(&["check", "--read-data"]);
    let pack_name = victim.rsplit('/').next().unwrap();
    assert!(
        err.contains(pack_name),
        "check does not name the pack {pack_name}: {err}"
    );
    let err = t.fails(&[
        "restore".as_ref(),
        "v".as_ref(),
        "latest".as_ref(),
        t.path("r").as_os_str(),
    ]);
    assert!(err.contains("damaged"), "{err}");
}

/// `vaultfs ARGS` as if run on another machine: in a UTS namespace of its own whose
/// hostname is `host`, so that its locks and points carry that name.
fn on_host(t: &TestRepo, host: &str, args: &[&str]) -> Command {
    let mut c = t.cmd();
    let prog = c.get_program().to_owned();
    let mut u = Command::new("unshare");
    u.args([
        "-u",
        "sh",
        "-c",
        &format!("hostname {host} && exec \"$0\" \"$@\""),
    ])
    .arg(prog)
    .args(args);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => u.env(k, v),
            None => u.env_remove(k),
        };
    }
    c = u;
    c
}

/// Two hosts on one repository: two mounts on this host see a point made on host A
/// within their refresh interval; a writer on host A holds the lock against writers
/// here, and after host A dies its lock stays (another host's process cannot be checked)
/// until `vaultfs unlock --all`.
fn two_hosts_share_a_repository(t: &TestRepo) {
    let src = t.path("tree");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("here"), b"from this host\n").unwrap();
    backup_json(t, &src);
    let m1 = t.mount(&[], &[]);
    let m2 = t.mount(&[], &[]);
    let count = |m: &Mount| fs::read_dir(m.p("v")).unwrap().count();
    assert_eq!((count(&m1), count(&m2)), (2, 2)); // one point and latest

    // Host A takes a point.
    let other = t.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("there"), random_bytes(3, 300_000)).unwrap();
    let o = on_host(
        t,
        "host-a",
        &["backup", "v", other.to_str().unwrap(), "--json"],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let points = t.points();
    assert_eq!(points.as_array().unwrap().len(), 2);
    let new = points[1]["id"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    for m in [&m1, &m2] {
        let file = m.p(&format!("v/{new}/other/there"));
        wait_for(&format!("host A's point in {}", m.dir.display()), || {
            file.exists()
        });
        assert_eq!(fs::read(&file).unwrap(), random_bytes(3, 300_000));
        assert_eq!(fs::read_link(m.p("v/latest")).unwrap(), Path::new(&new));
    }
    eprintln!(
        "{}: host A's point seen by both mounts after {:?}",
        what(t),
        t0.elapsed()
    );

    // Host A's writer holds the lock while it waits for its input.
    let mut writer = on_host(
        t,
        "host-a",
        &["backup", "v", "--image", "-", "--name", "img"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_for("host A's lock", || !t.object_keys("locks").is_empty());
    let err = t.fails(&["backup", "v", src.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "is locked by `backup v` (pid {} on host-a, since ",
            writer.id()
        )),
        "{err}"
    );
    // Host A dies: its lock cannot be judged from here and stays.
    writer.kill().unwrap();
    writer.wait().unwrap();
    let err = t.fails(&["backup", "v", src.to_str().unwrap()]);
    assert!(err.contains("vaultfs unlock"), "{err}");
    t.ok(&["unlock"]); // only this host's stale locks: none
    assert_eq!(t.object_keys("locks").len(), 1);
    t.ok(&["unlock", "--all"]);
    backup_json(t, &src);
    assert_eq!(
        t.points().as_array().unwrap().len(),
        3,
        "no point of the dead writer"
    );
    drop(m1);
    drop(m2);
}

// ---- the tests: each body against a local repository and against S3 ----

#[test]
fn local_tricky_roundtrip_and_incremental() {
    tricky_roundtrip_and_incremental(&TestRepo::new());
}

#[test]
fn s3_tricky_roundtrip_and_incremental() {
    if let Some(t) = s3_repo("roundtrip", 4) {
        tricky_roundtrip_and_incremental(&t);
    }
}

#[test]
fn local_mount_cp_a_matches() {
    if fuse_available() {
        // 16 MiB packs: over the S3 multipart threshold, so the S3 variant uses both paths.
        mount_cp_a_matches(&TestRepo::create(Target::Local, 16));
    }
}

#[test]
fn s3_mount_cp_a_matches() {
    if s3_endpoint().is_none() || !fuse_available() {
        return;
    }
    mount_cp_a_matches(&s3_repo("mount", 16).unwrap());
}

#[test]
fn local_damaged_pack_is_named() {
    damaged_pack_is_named(&TestRepo::new());
}

#[test]
fn s3_damaged_pack_is_named() {
    if let Some(t) = s3_repo("damage", 4) {
        damaged_pack_is_named(&t);
    }
}

#[test]
fn local_two_hosts_share_a_repository() {
    if fuse_available() {
        two_hosts_share_a_repository(&TestRepo::new());
    }
}

#[test]
fn s3_two_hosts_share_a_repository() {
    if s3_endpoint().is_none() || !fuse_available() {
        return;
    }
    two_hosts_share_a_repository(&s3_repo("hosts", 4).unwrap());
}

// ---- S3 only ----

/// Runs `cmd`, which must fail within `within`; returns its stderr.
fn fails_within(cmd: &mut Command, within: Duration) -> String {
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > within {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} still running after {within:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{cmd:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn s3_wrong_credentials_and_endpoints_are_named() {
    let Some(endpoint) = s3_endpoint() else {
        return;
    };
    let t = s3_repo("creds", 4).unwrap();
    let limit = Duration::from_secs(60);

    // A wrong secret, a wrong key id: the message names the endpoint and the credentials.
    for (var, value) in [
        ("AWS_SECRET_ACCESS_KEY", "not-the-secret"),
        ("AWS_ACCESS_KEY_ID", "nobody-has-this-key"),
    ] {
        let err = fails_within(t.cmd().env(var, value).args(["points", "v"]), limit);
        assert!(
            err.contains(&endpoint) && err.contains("credentials"),
            "{var}: the error does not name {endpoint} and the credentials: {err}"
        );
    }
    // The same with the endpoint given by --s3-endpoint rather than the environment.
    let err = fails_within(
        t.cmd()
            .env_remove("VAULTFS_S3_ENDPOINT")
            .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
            .args(["--s3-endpoint", &endpoint, "points", "v"]),
        limit,
    );
    assert!(err.contains(&endpoint), "{err}");
    // init (which creates the bucket) with a wrong secret.
    let bucket = unique_bucket("creds-init");
    let err = fails_within(
        t.cmd()
            .env("VAULTFS_REPO", format!("s3://{bucket}/x"))
            .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
            .args(["init"]),
        limit,
    );
    assert!(err.contains(&endpoint), "{err}");
    // A mount with a wrong secret fails before mounting, naming the endpoint.
    let mnt = t.path("mnt-creds");
    fs::create_dir_all(&mnt).unwrap();
    let err = fails_within(
        t.cmd()
            .env("AWS_SECRET_ACCESS_KEY", "not-the-secret")
            .arg("mount")
            .arg(&mnt),
        limit,
    );
    assert!(err.contains(&endpoint), "{err}");
    assert!(!mounted(&mnt));
    // A bucket that does not exist.
    let err = fails_within(
        t.cmd()
            .env(
                "VAULTFS_REPO",
                format!("s3://{}/x", unique_bucket("absent")),
            )
            .args(["points", "v"]),
        limit,
    );
    assert!(
        err.contains("does not exist") && err.contains(&endpoint),
        "{err}"
    );
    // An endpoint where nothing listens: named, and quick with one attempt.
    let dead = "http://127.0.0.1:9";
    let t0 = Instant::now();
    let err = fails_within(
        t.cmd()
            .env("VAULTFS_S3_ENDPOINT", dead)
            .env("VAULTFS_S3_MAX_ATTEMPTS", "1")
            .args(["points", "v"]),
        limit,
    );
    assert!(err.contains(dead), "{err}");
    eprintln!("dead endpoint reported in {:?}", t0.elapsed());
    // And the right credentials still work.
    t.ok(&["points", "v"]);
}

/// Rough figures, not a test: backup throughput and cold `cat` of a 200 MiB file through
/// the mount, local against S3, for the same tree. Run with
/// `cargo test --test s3_e2e throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput_local_vs_s3() {
    if s3_endpoint().is_none() || !fuse_available() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("bench");
    fs::create_dir_all(src.join("small")).unwrap();
    fs::write(src.join("big.bin"), random_bytes(11, 200 << 20)).unwrap();
    for i in 0..2000u64 {
        fs::write(
            src.join(format!("small/f{i}")),
            random_bytes(1000 + i, 10_000),
        )
        .unwrap();
    }
    let total: u64 = (200 << 20) + 2000 * 10_000;
    let mib = |bytes: u64, d: Duration| bytes as f64 / (1 << 20) as f64 / d.as_secs_f64();
    for target in [Target::Local, TestRepo::s3_target(&unique_bucket("bench"))] {
        // The default pack size, as users get it.
        let t = TestRepo::create(target, 32);
        let t0 = Instant::now();
        backup_json(&t, &src);
        let b = t0.elapsed();
        let m = t.mount(&[], &[]);
        let file = m.p("v/latest/bench/big.bin");
        let t0 = Instant::now();
        let o = Command::new("cat")
            .arg(&file)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        let c = t0.elapsed();
        assert!(o.success());
        let t0 = Instant::now();
        Command::new("cat")
            .arg(&file)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        let warm = t0.elapsed();
        eprintln!(
            "FIGURES {}: backup {:.1} MiB in {b:.2?} = {:.0} MiB/s; cold cat of 200 MiB \
             through the mount {c:.2?} = {:.0} MiB/s; second cat {warm:.2?}",
            what(&t),
            total as f64 / (1 << 20) as f64,
            mib(total, b),
            mib(200 << 20, c)
        );
    }
}
