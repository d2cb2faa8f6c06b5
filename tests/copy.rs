//! Exported point records (`export-record` / `import-record`) and copies between
//! repositories (`copy --from`, `init --from`), through the real binary: restores
//! compared with rsync, objects counted in the stores, a copy killed with SIGKILL and
//! run again, and a copy through a real S3 server (Ceph RGW from `scripts/s3-rgw.sh`,
//! `VAULTFS_TEST_S3_ENDPOINT`; skipped only with `VAULTFS_TEST_SKIP=s3`).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// A local repository with packs of `pack_size_mib` and no vault.
fn empty_repo(pack_size_mib: u32) -> TestRepo {
    let t = TestRepo::create(Target::Local, pack_size_mib);
    t.ok(&["vault", "delete", "v"]);
    t
}

/// `vaultfs ARGS` in `dst`, with `src` as the `--from` repository's password holder.
fn from_cmd<S: AsRef<OsStr>>(dst: &TestRepo, args: &[S]) -> Command {
    let mut c = dst.cmd();
    c.env("VAULTFS_FROM_PASSWORD", PASSWORD).args(args);
    if let Some(e) = s3_env() {
        c.env("VAULTFS_S3_ENDPOINT", e);
    }
    c
}

/// The S3 endpoint when one is configured (the `--from` side may be on it).
fn s3_env() -> Option<String> {
    std::env::var("VAULTFS_TEST_S3_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty())
}

fn run_ok(mut c: Command) -> String {
    let out = c.output().expect("run vaultfs");
    assert!(
        out.status.success(),
        "{c:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_fails(mut c: Command) -> String {
    let out = c.output().expect("run vaultfs");
    assert!(!out.status.success(), "{c:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `vaultfs copy --from SRC v [POINTS] --json` into `dst`, parsed.
fn copy_json(dst: &TestRepo, src: &TestRepo, points: &[&str]) -> serde_json::Value {
    let mut args: Vec<&OsStr> = vec!["copy".as_ref(), "--from".as_ref()];
    let from = src.location();
    args.push(&from);
    args.push("v".as_ref());
    args.extend(points.iter().map(|p| OsStr::new(*p)));
    args.push("--json".as_ref());
    serde_json::from_str(&run_ok(from_cmd(dst, &args))).expect("copy --json")
}

fn restore(t: &TestRepo, point: &str, target: &Path) {
    t.ok(&[
        "restore".as_ref(),
        "v".as_ref(),
        point.as_ref(),
        target.as_os_str(),
    ]);
}

fn import(t: &TestRepo, record: &Path, extra: &[&str]) -> std::process::Output {
    t.cmd()
        .arg("import-record")
        .args(extra)
        .stdin(fs::File::open(record).unwrap())
        .output()
        .unwrap()
}

fn check_read_data(t: &TestRepo) {
    let out = t.ok(&["check", "--read-data", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["ok"], true, "{out}");
}

/// The points of `t`'s vault v as the copy promises to keep them: name, times, host,
/// tags, description, protection, trigger, backups and their sizes.
fn point_facts(t: &TestRepo) -> Vec<serde_json::Value> {
    t.points()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            serde_json::json!({
                "id": p["id"], "time": p["time"], "end_time": p["end_time"],
                "hostname": p["hostname"], "tags": p["tags"], "parent": p["parent"],
                "description": p["description"], "protected": p["protected"],
                "auto_trigger": p["auto_trigger"], "size": p["size"],
                "backups": p["backups"],
            })
        })
        .collect()
}

#[test]
fn export_delete_import_restores_the_point_byte_for_byte() {
    let t = TestRepo::new();
    let src = t.path("tricky");
    make_tricky_tree(&src);
    t.backup(&[&src]);
    let point = t.point_ids().pop().unwrap();
    t.ok(&["point", "update", "v", &point, "--tag", "monthly"]);
    let before = point_facts(&t);

    let text = t.ok(&["export-record", "v", "latest"]);
    let rec: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(rec["format"], "vaultfs-point-record");
    assert_eq!(rec["version"], 1);
    assert_eq!(
        (&rec["vault"], &rec["point"]),
        (&"v".into(), &point.clone().into())
    );
    assert_eq!(rec["backups"][0]["name"], "tricky");
    assert!(rec["backups"][0]["bytes"].as_u64().unwrap() > 9 << 20);
    assert_eq!(rec["repo_id"].as_str().unwrap().len(), 32);
    let file = t.path("record.json");
    fs::write(&file, &text).unwrap();

    t.ok(&["point", "delete", "v", &point]);
    assert!(t.point_ids().is_empty());

    let out = import(&t, &file, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported point v/"));
    assert_eq!(
        point_facts(&t),
        before,
        "the point and its attributes are back"
    );
    let back = t.path("back");
    restore(&t, &point, &back);
    assert_eq!(rsync_diff(&src, &back.join("tricky")), "");
    check_read_data(&t);

    // Once more: the point is there, nothing changes.
    let out = import(&t, &file, &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already there"));
    // Under another vault, created for it, with --json.
    let out = import(&t, &file, &["--vault", "restored", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&j["vault"], &j["vault_created"]),
        (&"restored".into(), &true.into())
    );
    let out = t.ok(&["cat", "restored", &point, "tricky/hard/a"]);
    assert_eq!(out, "shared content\n");
}

#[test]
fn an_import_after_prune_is_refused_naming_the_chunks() {
    let t = TestRepo::new();
    t.backup_one_file(&random_bytes(11, 3 << 20));
    let point = t.point_ids().pop().unwrap();
    let file = t.path("record.json");
    fs::write(&file, t.ok(&["export-record", "v", &point])).unwrap();
    t.ok(&["point", "delete", "v", &point]);
    t.ok(&["prune"]);
    assert!(t.objects("packs").is_empty(), "prune removed every pack");

    let out = import(&t, &file, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot import v/{point}")) && err.contains("nothing was written"),
        "{err}"
    );
    // The missing chunk is named by its full id.
    let named = err
        .split_whitespace()
        .any(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(named, "{err}");
    assert!(t.point_ids().is_empty());
    assert!(t.objects("points").is_empty());
}

#[test]
fn a_record_of_another_repository_is_refused_clearly() {
    let a = TestRepo::new();
    a.backup_one_file(b"from a");
    let file = a.path("record.json");
    fs::write(&file, a.ok(&["export-record", "v", "latest"])).unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    let b = TestRepo::new();
    let out = import(&b, &file, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(rec["repo_id"].as_str().unwrap()) && err.contains("does not hold its keys"),
        "{err}"
    );
    assert!(b.point_ids().is_empty());
    // A record changed by hand does not open either.
    let mut text = fs::read_to_string(&file).unwrap();
    text = text.replace("\"vault\": \"v\"", "\"vault\": \"w\"");
    fs::write(&file, text).unwrap();
    let out = import(&a, &file, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed authentication"));
}

#[test]
fn copy_between_local_repositories_with_other_keys() {
    let src = TestRepo::new();
    let tree = src.path("tricky");
    make_tricky_tree(&tree);
    src.backup(&[&tree]);
    let first = src.point_ids().pop().unwrap();
    let first_tree = src.path("first");
    restore(&src, &first, &first_tree);
    fs::write(tree.join("text.log"), b"changed\n").unwrap();
    src.ok(&["backup", "v", tree.to_str().unwrap(), "--tag", "second"]);
    src.ok(&["point", "update", "v", &first, "--description", "the first"]);
    src.ok(&["vault", "update", "v", "--keep-last", "3"]);

    let dst = empty_repo(1);
    let r = copy_json(&dst, &src, &[]);
    assert_eq!(r["vault_created"], true);
    assert_eq!(r["same_ids"], false);
    assert_eq!(r["points_copied"].as_array().unwrap().len(), 2, "{r}");
    assert!(r["chunks_uploaded"].as_u64().unwrap() > 10, "{r}");
    assert_eq!(point_facts(&dst), point_facts(&src));
    let v: serde_json::Value =
        serde_json::from_str(&dst.ok(&["vault", "show", "v", "--json"])).unwrap();
    assert_eq!(v["description"], "test vault");

    let out = dst.path("latest");
    restore(&dst, "latest", &out);
    assert_eq!(rsync_diff(&tree, &out.join("tricky")), "");
    let out = dst.path("first");
    restore(&dst, &first, &out);
    assert_eq!(
        rsync_diff(&first_tree.join("tricky"), &out.join("tricky")),
        ""
    );
    check_read_data(&dst);

    // A second copy uploads nothing.
    let packs = dst.object_keys("packs");
    let index = dst.object_keys("index");
    let again = copy_json(&dst, &src, &[]);
    assert_eq!(
        again["points_copied"].as_array().unwrap().len(),
        0,
        "{again}"
    );
    assert_eq!(
        again["points_present"].as_array().unwrap().len(),
        2,
        "{again}"
    );
    for k in [
        "chunks_uploaded",
        "trees_uploaded",
        "bytes_uploaded",
        "packs",
    ] {
        assert_eq!(again[k], 0, "{k}: {again}");
    }
    assert_eq!(dst.object_keys("packs"), packs);
    assert_eq!(dst.object_keys("index"), index);
    // The copy ran as a task of the destination.
    let tasks: serde_json::Value =
        serde_json::from_str(&dst.ok(&["tasks", "--kind", "copy", "--json"])).unwrap();
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    assert!(
        tasks.iter().all(|t| t["status"] == "succeeded"),
        "{tasks:?}"
    );

    // A repository that holds the files from its own backup gets the latest point for
    // at most the cost of its trees: no data chunk is uploaded.
    let own = TestRepo::create(Target::Local, 1);
    own.ok(&["vault", "create", "mine"]);
    own.ok(&["backup", "mine", tree.to_str().unwrap()]);
    own.ok(&["vault", "delete", "v"]);
    let r = copy_json(&own, &src, &["latest"]);
    assert_eq!(r["points_copied"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["chunks_uploaded"], 0, "{r}");
    assert!(r["chunks_skipped"].as_u64().unwrap() > 10, "{r}");
    // Its trees may even be the ones that backup wrote (same chunks, same locations).
    let trees = r["trees_uploaded"].as_u64().unwrap() + r["trees_skipped"].as_u64().unwrap();
    assert!(trees > 0, "{r}");
    let out = own.path("latest");
    restore(&own, "latest", &out);
    assert_eq!(rsync_diff(&tree, &out.join("tricky")), "");

    // A vault the source does not have, a wrong source password: clear errors.
    let from = src.location();
    let err = run_fails(from_cmd(
        &own,
        &[
            "copy".as_ref(),
            "--from".as_ref(),
            from.as_os_str(),
            "nosuch".as_ref(),
        ],
    ));
    assert!(
        err.contains("\"nosuch\" does not exist in the source"),
        "{err}"
    );
    let mut c = from_cmd(
        &own,
        &[
            "copy".as_ref(),
            "--from".as_ref(),
            from.as_os_str(),
            "v".as_ref(),
        ],
    );
    c.env("VAULTFS_FROM_PASSWORD", "wrong");
    let err = run_fails(c);
    assert!(err.contains("wrong password"), "{err}");
}

/// `versions v PATH --json` of one path: its content ids, oldest first.
fn content_ids(t: &TestRepo, path: &str) -> Vec<String> {
    let j: serde_json::Value =
        serde_json::from_str(&t.ok(&["versions", "v", path, "--json"])).unwrap();
    j["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["content"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn init_from_shares_chunk_ids_so_copies_keep_content_ids() {
    let src = TestRepo::new();
    let tree = src.path("tricky");
    make_tricky_tree(&tree);
    src.backup(&[&tree]);

    let dir = tempfile::tempdir().unwrap();
    let dst = TestRepo {
        repo: dir.path().join("repo"),
        dir,
        target: Target::Local,
    };
    let from = src.location();
    let init: Vec<&OsStr> = vec![
        "init".as_ref(),
        "--from".as_ref(),
        &from,
        "--pack-size-mib".as_ref(),
        "1".as_ref(),
    ];
    run_ok(from_cmd(&dst, &init));
    // Its own keys: a record of the source does not open here.
    let file = src.path("record.json");
    fs::write(&file, src.ok(&["export-record", "v", "latest"])).unwrap();
    assert!(!import(&dst, &file, &[]).status.success());

    let r = copy_json(&dst, &src, &[]);
    assert_eq!(r["same_ids"], true, "{r}");
    assert_eq!(r["points_copied"].as_array().unwrap().len(), 1);
    for path in [
        "tricky/random.bin",
        "tricky/sparse.img",
        "tricky/hard/a",
        "tricky/links/odd",
        "tricky/empty",
    ] {
        assert_eq!(content_ids(&dst, path), content_ids(&src, path), "{path}");
    }
    let out = dst.path("out");
    restore(&dst, "latest", &out);
    assert_eq!(rsync_diff(&tree, &out.join("tricky")), "");

    // A backup of the same files in the new repository finds every chunk there.
    dst.ok(&["vault", "create", "mine"]);
    let b: serde_json::Value =
        serde_json::from_str(&dst.ok(&["backup", "mine", tree.to_str().unwrap(), "--json"]))
            .unwrap();
    let stats = &b["backups"][0];
    assert!(stats.to_string().contains("chunks_new"), "{stats}");
    let new_chunks = stats["chunks_new"].as_u64().unwrap();
    let trees = stats["dirs"].as_u64().unwrap() + 1;
    assert!(new_chunks <= trees, "only trees are new: {stats}");
    check_read_data(&dst);
}

#[test]
fn a_copy_killed_with_sigkill_leaves_no_point_and_the_rerun_completes() {
    let src = TestRepo::new();
    let image = src.path("disk.img");
    let data = random_bytes(21, 48 << 20);
    fs::write(&image, &data).unwrap();
    src.ok(&["backup", "v", "--image", image.to_str().unwrap()]);
    let dst = empty_repo(1);

    // Pack uploads are slowed down so that the kill lands in the middle.
    let from = src.location();
    let mut c = from_cmd(
        &dst,
        &[
            "copy".as_ref(),
            "--from".as_ref(),
            from.as_os_str(),
            "v".as_ref(),
        ],
    );
    c.env("VAULTFS_FAULTS", "put:packs/:delay=150")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    wait_for("three packs of the copy", || {
        dst.objects("packs").len() >= 3
    });
    let status = child.try_wait().unwrap();
    assert!(
        status.is_none(),
        "the copy ended before the kill: {status:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let left = dst.objects("packs").len();
    assert!(left >= 3);
    assert!(dst.point_ids().is_empty(), "no point from a killed copy");
    check_read_data(&dst);

    let r = copy_json(&dst, &src, &[]);
    assert_eq!(r["points_copied"].as_array().unwrap().len(), 1, "{r}");
    assert!(
        r["chunks_skipped"].as_u64().unwrap() >= 2,
        "the killed copy's packs are reused: {r}"
    );
    check_read_data(&dst);
    let out = dst.path("disk.out");
    let mut f = fs::File::create(&out).unwrap();
    let cat = dst
        .cmd()
        .args(["cat", "v", "latest", "disk.img"])
        .stdout(f.try_clone().unwrap())
        .status()
        .unwrap();
    assert!(cat.success());
    std::io::Write::flush(&mut f).unwrap();
    assert!(
        fs::read(&out).unwrap() == data,
        "the image reads back whole"
    );
    // The killed copy's task shows it.
    let tasks: serde_json::Value =
        serde_json::from_str(&dst.ok(&["tasks", "--kind", "copy", "--json"])).unwrap();
    let statuses: Vec<&str> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "succeeded"]);
}

#[test]
fn copy_local_to_s3_and_back_keeps_the_points() {
    if s3_endpoint().is_none() {
        return;
    }
    let src = TestRepo::new();
    let tree = src.path("tricky");
    make_tricky_tree(&tree);
    src.backup(&[&tree]);
    let image = src.path("disk.img");
    fs::write(&image, random_bytes(5, 6 << 20)).unwrap();
    src.ok(&[
        "backup",
        "v",
        "--image",
        image.to_str().unwrap(),
        "--tag",
        "img",
    ]);

    let s3 = TestRepo::new_s3(&unique_bucket("copy"));
    s3.ok(&["vault", "delete", "v"]);
    let r = copy_json(&s3, &src, &[]);
    assert_eq!(r["points_copied"].as_array().unwrap().len(), 2, "{r}");
    let objects = s3.object_keys("packs");
    let again = copy_json(&s3, &src, &[]);
    assert_eq!(again["chunks_uploaded"], 0, "{again}");
    assert_eq!(again["bytes_uploaded"], 0, "{again}");
    assert_eq!(
        s3.object_keys("packs"),
        objects,
        "the second copy uploaded nothing"
    );

    let back = empty_repo(4);
    let r = copy_json(&back, &s3, &[]);
    assert_eq!(r["points_copied"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(point_facts(&back), point_facts(&src));
    let points = src.point_ids();
    let a = src.path("a");
    let b = back.path("b");
    restore(&src, &points[0], &a);
    restore(&back, &points[0], &b);
    // The first point (the tree) as the source restores it, and as it was backed up.
    assert_eq!(rsync_diff(&a.join("tricky"), &b.join("tricky")), "");
    assert_eq!(rsync_diff(&tree, &b.join("tricky")), "");
    let img = |t: &TestRepo| {
        t.cmd()
            .args(["cat", "v", "latest", "disk.img"])
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(img(&back), fs::read(&image).unwrap());
    check_read_data(&back);
    check_read_data(&s3);
}

#[test]
fn a_cancelled_copy_stops_before_its_commit() {
    let src = TestRepo::new();
    let image = src.path("disk.img");
    fs::write(&image, random_bytes(31, 24 << 20)).unwrap();
    src.ok(&["backup", "v", "--image", image.to_str().unwrap()]);
    let dst = empty_repo(1);
    let from = src.location();
    let mut c = from_cmd(
        &dst,
        &[
            "copy".as_ref(),
            "--from".as_ref(),
            from.as_os_str(),
            "v".as_ref(),
        ],
    );
    c.env("VAULTFS_FAULTS", "put:packs/:delay=300")
        .env("VAULTFS_TASK_INTERVAL_MS", "200")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    wait_for("a pack of the copy", || !dst.objects("packs").is_empty());
    let running: serde_json::Value = serde_json::from_str(
        &dst.ok(&["tasks", "--kind", "copy", "--status", "running", "--json"]),
    )
    .unwrap();
    let id = running[0]["id"]
        .as_str()
        .expect("a running copy task")
        .to_string();
    dst.ok(&["task", "cancel", &id]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("copy cancelled"));
    assert!(out.stdout.is_empty());
    assert!(
        dst.point_ids().is_empty(),
        "a cancelled copy commits no point"
    );
    let task: serde_json::Value =
        serde_json::from_str(&dst.ok(&["task", "show", &id, "--json"])).unwrap();
    assert_eq!(task["status"], "cancelled");
    check_read_data(&dst);
}
