//! Point records and retention through the real binary: attributes given at backup time
//! and changed later, protection, deletion, the records of failed backups, the filters of
//! `points`, and `forget` with explicit rules and with the vault's own retention.

mod common;

use std::fs;

use common::*;
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A repository with a small source directory `src` to back up.
fn setup() -> (TestRepo, String) {
    let t = TestRepo::new();
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), b"first").unwrap();
    let src = src.to_str().unwrap().to_string();
    (t, src)
}

fn names(points: &Value) -> Vec<String> {
    points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn attributes_are_given_at_backup_and_changed_later() {
    let (t, src) = setup();
    let p = json(&t.ok(&[
        "backup",
        "v",
        &src,
        "--tag",
        "nightly",
        "--tag",
        "db",
        "--description",
        "before the upgrade",
        "--protect",
        "--keep-days",
        "30",
        "--json",
    ]));
    assert_eq!(p["tags"], serde_json::json!(["db", "nightly"]));
    assert_eq!(p["description"], "before the upgrade");
    assert_eq!(p["protected"], true);
    assert_eq!(p["status"], "available");
    let expires = chrono::DateTime::parse_from_rfc3339(p["expires"].as_str().unwrap()).unwrap();
    let days = (expires.to_utc() - chrono::Utc::now()).num_hours() as f64 / 24.0;
    assert!((29.9..=30.0).contains(&days), "expires in {days} days");
    let id = p["id"].as_str().unwrap().to_string();

    // What `points --json`, `point show --json` and the backup's output say agree.
    assert_eq!(t.points()[0], p);
    assert_eq!(json(&t.ok(&["point", "show", "v", "latest", "--json"])), p);

    let u = json(&t.ok(&[
        "point",
        "update",
        "v",
        &id,
        "--untag",
        "db",
        "--tag",
        "weekly",
        "--unprotect",
        "--no-expiry",
        "--description",
        "kept for audit",
        "--json",
    ]));
    assert_eq!(u["tags"], serde_json::json!(["nightly", "weekly"]));
    assert_eq!(u["protected"], false);
    assert_eq!(u["expires"], Value::Null);
    assert_eq!(u["description"], "kept for audit");
    assert!(u["updated"].is_string());
    // The change is what every later reader sees; the manifest itself is unchanged.
    assert_eq!(t.points()[0]["tags"], u["tags"]);
    let u = json(&t.ok(&[
        "point",
        "update",
        "v",
        &id,
        "--expires",
        "2030-01-02T03:04:05Z",
        "--json",
    ]));
    assert_eq!(u["expires"], "2030-01-02T03:04:05.000Z");
    let text = t.ok(&["point", "show", "v", &id]);
    assert!(text.contains("tags:        nightly, weekly"), "{text}");
    assert!(
        text.contains("expires:     2030-01-02T03:04:05.000Z"),
        "{text}"
    );
    assert_eq!(t.object_keys("points").len(), 1);
}

#[test]
fn points_filters_select_by_tag_time_host_and_status() {
    let (t, src) = setup();
    t.ok(&["backup", "v", &src, "--tag", "a"]);
    t.ok(&["backup", "v", &src, "--tag", "a", "--tag", "b"]);
    t.ok(&["backup", "v", &src]);
    let all = names(&t.points());
    assert_eq!(all.len(), 3);
    let with = |args: &[&str]| {
        let mut a = vec!["points", "v", "--json"];
        a.extend_from_slice(args);
        names(&json(&t.ok(&a)))
    };
    assert_eq!(with(&["--tag", "a"]), all[..2].to_vec());
    assert_eq!(with(&["--tag", "a", "--tag", "b"]), all[1..2].to_vec());
    assert_eq!(with(&["--since", "2000-01-01"]), all);
    assert!(with(&["--since", "2099-01-01"]).is_empty());
    assert!(with(&["--until", "2000-01-01T00:00:00Z"]).is_empty());
    assert_eq!(with(&["--until", "0d"]), all);
    let host = t.points()[0]["hostname"].as_str().unwrap().to_string();
    assert_eq!(with(&["--host", &host]), all);
    assert!(with(&["--host", "another-host"]).is_empty());
    assert!(with(&["--status", "error"]).is_empty());
    let err = t.fails(&["points", "v", "--since", "last tuesday"]);
    assert!(err.contains("invalid time \"last tuesday\""), "{err}");
    let table = t.ok(&["points", "v"]);
    assert!(table.contains("PROT") && table.contains("EXPIRES") && table.contains("TAGS"));
    assert!(table.lines().nth(2).unwrap().contains(" a,b "), "{table}");
}

#[test]
fn delete_refuses_protected_points_and_names_them() {
    let (t, src) = setup();
    t.ok(&["backup", "v", &src, "--protect"]);
    t.ok(&["backup", "v", &src]);
    t.ok(&["backup", "v", &src]);
    let all = names(&t.points());
    let err = t.fails(&["point", "delete", "v", &all[0], &all[1]]);
    assert!(
        err.contains("refusing to delete protected point(s)"),
        "{err}"
    );
    assert!(err.contains(&all[0]) && !err.contains(&all[1]), "{err}");
    assert_eq!(names(&t.points()), all, "nothing is deleted");

    let dry = json(&t.ok(&["point", "delete", "v", &all[1], "--dry-run", "--json"]));
    assert_eq!(dry["deleted"], serde_json::json!([all[1]]));
    assert_eq!(names(&t.points()), all);

    let out = t.ok(&["point", "delete", "v", &all[1], "latest"]);
    assert!(out.contains(&format!("deleted v/{}", all[1])), "{out}");
    assert_eq!(names(&t.points()), vec![all[0].clone()]);
    // No attribute objects are left behind by a finished delete.
    assert!(t.object_keys("attrs").is_empty());
    let err = t.fails(&["point", "show", "v", &all[1]]);
    assert!(err.contains("does not exist"), "{err}");

    t.ok(&["point", "update", "v", &all[0], "--unprotect"]);
    t.ok(&["point", "delete", "v", &all[0]]);
    assert!(names(&t.points()).is_empty());
}

#[test]
fn a_failed_backup_leaves_an_error_record_not_a_point() {
    let (t, _src) = setup();
    let missing = t.path("missing");
    let err = t.fails(&["backup", "v", missing.to_str().unwrap(), "--tag", "x"]);
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(t.points().as_array().unwrap().is_empty());
    let errors = json(&t.ok(&["points", "v", "--status", "error", "--json"]));
    let rec = &errors[0];
    assert_eq!(rec["status"], "error");
    assert!(
        rec["fail_reason"]
            .as_str()
            .unwrap()
            .contains("No such file or directory"),
        "{rec}"
    );
    assert_eq!(rec["backups"], serde_json::json!([]));
    assert_eq!(rec["tags"], serde_json::json!(["x"]));
    let id = rec["id"].as_str().unwrap();
    assert!(id.ends_with("-error"), "{id}");
    // `latest` is never an error record.
    let err = t.fails(&["point", "show", "v", "latest"]);
    assert!(err.contains("has no recovery points"), "{err}");
    let shown = t.ok(&["point", "show", "v", id]);
    assert!(shown.contains("status:      error"), "{shown}");
    let err = t.fails(&["point", "update", "v", id, "--tag", "y"]);
    assert!(err.contains("record of a failed backup"), "{err}");
    t.ok(&["point", "delete", "v", id]);
    assert!(
        json(&t.ok(&["points", "v", "--status", "all", "--json"]))
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// Paths a backup could not read are kept in the point, not only printed: /proc/kmsg
/// cannot be read without blocking, even by root.
#[test]
fn skipped_paths_are_recorded_in_the_point() {
    if !std::path::Path::new("/proc/kmsg").exists() {
        eprintln!("skipped: no /proc/kmsg");
        return;
    }
    let t = TestRepo::new();
    let out = t.run(&["backup", "v", "/proc/kmsg"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let p = t.points();
    assert_eq!(p[0]["skipped"][0]["path"], "/proc/kmsg");
    assert!(!p[0]["skipped"][0]["error"].as_str().unwrap().is_empty());
    let shown = t.ok(&["point", "show", "v", "latest"]);
    assert!(shown.contains("skipped:     /proc/kmsg: "), "{shown}");
}

#[test]
fn forget_applies_rules_with_reasons_and_dry_run_changes_nothing() {
    let (t, src) = setup();
    for i in 0..5 {
        let mut args = vec!["backup", "v", src.as_str()];
        if i == 0 {
            args.push("--protect");
        }
        if i == 1 {
            args.extend(["--tag", "keep"]);
        }
        t.ok(&args);
    }
    let all = names(&t.points());

    let dry = json(&t.ok(&["forget", "v", "--keep-last", "2", "--dry-run", "--json"]));
    assert_eq!(dry["removed"], 2);
    assert_eq!(dry["kept"], 3);
    assert_eq!(names(&t.points()), all, "--dry-run changes nothing");
    let action = |j: &Value, i: usize| {
        let p = &j["points"][i];
        assert_eq!(p["point"], all[i]);
        (
            p["action"].as_str().unwrap().to_string(),
            p["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(action(&dry, 0), ("keep".into(), vec!["protected".into()]));
    assert_eq!(
        action(&dry, 2),
        ("remove".into(), vec!["no rule keeps it".into()])
    );
    assert_eq!(action(&dry, 4).1, vec!["last".to_string()]);

    let out = json(&t.ok(&[
        "forget",
        "v",
        "--keep-last",
        "2",
        "--keep-tag",
        "keep",
        "--json",
    ]));
    assert_eq!(out["removed"], 1);
    assert_eq!(action(&out, 1), ("keep".into(), vec!["tag keep".into()]));
    let left = names(&t.points());
    assert_eq!(
        left,
        vec![
            all[0].clone(),
            all[1].clone(),
            all[3].clone(),
            all[4].clone()
        ]
    );

    // With no rule given, the vault's own retention applies.
    t.ok(&["vault", "update", "v", "--keep-last", "1"]);
    let shown = json(&t.ok(&["vault", "show", "v", "--json"]));
    assert_eq!(shown["retention"]["keep_last"], 1);
    let table = t.ok(&["forget", "v"]);
    assert!(table.contains("vault v: keep 2, remove 2"), "{table}");
    assert_eq!(names(&t.points()), vec![all[0].clone(), all[4].clone()]);

    // The newest point stays even when no rule keeps it, unless --allow-empty.
    t.ok(&["point", "update", "v", &all[0], "--unprotect"]);
    t.ok(&["vault", "update", "v", "--no-retention", "--max-age", "0d"]);
    let out = json(&t.ok(&["forget", "v", "--json"]));
    assert_eq!(out["removed"], 1);
    assert_eq!(names(&t.points()), vec![all[4].clone()]);
    t.ok(&["forget", "v", "--max-age", "0d", "--allow-empty"]);
    assert!(names(&t.points()).is_empty());
}

#[test]
fn expired_points_go_whatever_the_rules() {
    let (t, src) = setup();
    t.ok(&["backup", "v", &src]);
    t.ok(&["backup", "v", &src, "--keep-days", "0"]);
    t.ok(&["backup", "v", &src]);
    let all = names(&t.points());
    let out = json(&t.ok(&["forget", "v", "--keep-last", "10", "--json"]));
    assert_eq!(out["points"][1]["action"], "remove");
    assert_eq!(out["points"][1]["reasons"], serde_json::json!(["expired"]));
    assert_eq!(names(&t.points()), vec![all[0].clone(), all[2].clone()]);
}

#[test]
fn forget_all_covers_every_vault_and_bad_rules_are_refused() {
    let (t, src) = setup();
    t.ok(&[
        "vault",
        "create",
        "w",
        "--keep-last",
        "1",
        "--tag",
        "env=prod",
    ]);
    for v in ["v", "w"] {
        t.ok(&["backup", v, &src]);
        t.ok(&["backup", v, &src]);
    }
    let out = json(&t.ok(&["forget", "--all", "--keep-last", "1", "--json"]));
    assert_eq!(out["removed"], 2);
    assert_eq!(out["kept"], 2);
    let listed = json(&t.ok(&["vault", "list", "--tag", "env=prod", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "w");
    assert_eq!(listed[0]["tags"]["env"], "prod");
    let err = t.fails(&["forget", "v", "--keep-daily", "many"]);
    assert!(err.contains("invalid count"), "{err}");
    let err = t.fails(&[
        "forget",
        "v",
        "--keep-daily",
        "1",
        "--timezone",
        "Mars/Base",
    ]);
    assert!(err.contains("unknown time zone"), "{err}");
    let err = t.fails(&["forget"]);
    assert!(err.contains("<VAULT>"), "{err}");
}

#[test]
fn a_changed_config_object_fails_authentication() {
    let t = TestRepo::new();
    let config = t.repo.join("config");
    let mut raw = fs::read(&config).unwrap();
    // The last byte before the 32-byte code is the zstd level (zigzag varint: 3 -> 6).
    let at = raw.len() - 33;
    assert_eq!(raw[at], 6);
    raw[at] = 38; // level 19
    fs::write(&config, &raw).unwrap();
    let err = t.fails(&["vault", "list"]);
    assert!(err.contains("failed authentication"), "{err}");
}

/// A vault's quota: a backup that would take it past fails before its commit with "vault
/// full" (and leaves an error record), crossing the warning threshold is logged, and the
/// vault's JSON says how much its points reference.
#[test]
fn a_backup_past_the_quota_fails_before_its_commit() {
    let t = TestRepo::new();
    t.ok(&["vault", "create", "q", "--quota", "1M", "--warn-at", "50"]);
    let a = t.path("a");
    fs::create_dir(&a).unwrap();
    fs::write(a.join("f"), random_bytes(1, 600 << 10)).unwrap();
    let out = t.run(&["backup", "q", a.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("past its warning threshold"), "{err}");
    let v = json(&t.ok(&["vault", "show", "q", "--json"]));
    let referenced = v["bytes_referenced"].as_u64().unwrap();
    assert!(referenced > 600 << 10 && referenced < 700 << 10, "{v}");
    assert_eq!(v["over_warning"], true);
    assert_eq!(v["quota"], 1 << 20);

    let b = t.path("b");
    fs::create_dir(&b).unwrap();
    fs::write(b.join("g"), random_bytes(2, 600 << 10)).unwrap();
    let err = t.fails(&["backup", "q", b.to_str().unwrap()]);
    assert!(err.contains("vault \"q\" is full"), "{err}");
    let points = json(&t.ok(&["points", "q", "--json"]));
    assert_eq!(points.as_array().unwrap().len(), 1);
    let errors = json(&t.ok(&["points", "q", "--status", "error", "--json"]));
    assert!(
        errors[0]["fail_reason"]
            .as_str()
            .unwrap()
            .contains("is full"),
        "{errors}"
    );
    // Raising the quota lets the same backup in.
    t.ok(&["vault", "update", "q", "--quota", "2M"]);
    t.ok(&["backup", "q", b.to_str().unwrap()]);
    t.ok(&["vault", "update", "q", "--no-quota"]);
    assert_eq!(
        json(&t.ok(&["vault", "show", "q", "--json"]))["quota"],
        Value::Null
    );
}

/// `forget --prune` frees what the forgotten points alone held, in one command and one
/// JSON document; kept points still restore and check passes.
#[test]
fn forget_with_prune_frees_the_space_of_removed_points() {
    let (t, src) = setup();
    for i in 0..4u64 {
        fs::write(
            std::path::Path::new(&src).join("big"),
            random_bytes(10 + i, 1 << 20),
        )
        .unwrap();
        t.ok(&["backup", "v", &src]);
    }
    let size = |t: &TestRepo| -> u64 {
        t.objects("packs")
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum()
    };
    let before = size(&t);
    let out = json(&t.ok(&["forget", "v", "--keep-last", "1", "--prune", "--json"]));
    assert_eq!(out["removed"], 3);
    assert!(
        out["prune"]["bytes_after"].as_u64().unwrap() < before / 2,
        "{out}"
    );
    let after = size(&t);
    assert!(after < before / 3, "{before} -> {after}");
    let r = t.path("r");
    t.ok(&["restore", "v", "latest", r.to_str().unwrap()]);
    assert_eq!(
        fs::read(r.join("src/big")).unwrap(),
        random_bytes(13, 1 << 20)
    );
    t.ok(&["check", "--read-data"]);
}

/// A backup given --lock-wait waits for the writer that holds the lock and then runs; by
/// default it fails at once naming the holder.
#[test]
fn a_backup_waits_for_the_lock_when_asked() {
    use std::io::Write;
    use std::process::Stdio;
    let (t, src) = setup();
    let mut holder = t.hold_lock();
    let err = t.fails(&["backup", "v", &src]);
    assert!(err.contains("is locked by `backup v`"), "{err}");
    // The running backup is seen as `creating`, never as a point.
    let creating = json(&t.ok(&["points", "v", "--status", "creating", "--json"]));
    assert_eq!(creating.as_array().unwrap().len(), 1, "{creating}");
    assert_eq!(creating[0]["status"], "creating");
    assert_eq!(creating[0]["pid"], holder.id());
    assert!(t.points().as_array().unwrap().is_empty());
    let waiter = t
        .cmd()
        .args(["backup", "v", &src, "--lock-wait", "10m"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let the waiter meet the lock, then let the holder finish.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut stdin = holder.stdin.take().unwrap();
    stdin.write_all(b"image data").unwrap();
    drop(stdin);
    assert!(holder.wait().unwrap().success());
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let names: Vec<String> = t
        .points()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["backups"][0]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["held".to_string(), "src".to_string()]);
}

/// The mount's vault JSON shows the usage last recorded by `vault show` (it walks no
/// trees itself), says when, and says once it is no longer current; point JSON shows the
/// point's attributes.
#[test]
fn the_mount_shows_recorded_usage_and_point_attributes() {
    if !fuse_available() {
        return;
    }
    let (t, src) = setup();
    t.ok(&["backup", "v", &src, "--tag", "t1", "--protect"]);
    let shown = json(&t.ok(&["vault", "show", "v", "--json"]));
    let m = t.mount(&["--allow-delete"], &[]);
    let vault = || -> Value {
        serde_json::from_slice(&fs::read(m.p(".vaultfs/vaults/v.json")).unwrap()).unwrap()
    };
    let j = vault();
    assert_eq!(j["bytes_referenced"], shown["bytes_referenced"], "{j}");
    assert_eq!(j["usage_current"], true, "{j}");
    assert!(j["usage_as_of"].is_string(), "{j}");
    let id = t.points()[0]["id"].as_str().unwrap().to_string();
    let p: Value =
        serde_json::from_slice(&fs::read(m.p(&format!(".vaultfs/points/v/{id}.json"))).unwrap())
            .unwrap();
    assert_eq!(p["tags"], serde_json::json!(["t1"]));
    assert_eq!(p["protected"], true);
    // A protected point cannot be removed through the mount either.
    let err = fs::remove_dir(m.p(&format!("v/{id}"))).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    t.ok(&["backup", "v", &src]);
    wait_for("the new point in the mount", || {
        fs::read_dir(m.p("v")).unwrap().count() == 3
    });
    wait_for("the usage to be marked stale", || {
        vault()["usage_current"] == false
    });
}

/// A vault's resources: a tree, an image and a command in one point, one backup each named
/// after its resource; a failing resource is recorded as skipped (exit 3) while the others
/// commit; a vault with no resources says how to add some.
#[test]
fn backup_with_no_paths_takes_the_vaults_resources() {
    let (t, src) = setup();
    let err = t.fails(&["backup", "v"]);
    assert!(err.contains("has no resources on this host"), "{err}");
    fs::write(std::path::Path::new(&src).join("skip.log"), b"left out").unwrap();
    let img = t.path("disk.img");
    fs::write(&img, random_bytes(5, 300_000)).unwrap();
    t.ok(&["resource", "add", "v", "files", &src, "--exclude", "*.log"]);
    t.ok(&[
        "resource",
        "add",
        "v",
        "disk",
        "--image",
        img.to_str().unwrap(),
    ]);
    t.ok(&[
        "resource",
        "add",
        "v",
        "dump",
        "--command",
        "printf 'db dump\\n'",
    ]);
    t.ok(&[
        "resource",
        "add",
        "v",
        "etc",
        "--command",
        &format!("tar -C '{src}' -cf - a"),
        "--tar",
    ]);
    let err = t.fails(&["resource", "add", "v", "dump", "--command", "true"]);
    assert!(err.contains("already has a resource"), "{err}");
    let listed = json(&t.ok(&["resource", "list", "v", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");
    let shown = json(&t.ok(&["vault", "show", "v", "--json"]));
    assert_eq!(shown["resources"].as_array().unwrap().len(), 4, "{shown}");
    let kinds: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("disk", "image"),
            ("dump", "command"),
            ("etc", "command"),
            ("files", "tree")
        ]
    );

    t.ok(&["backup", "v"]);
    let p = &t.points()[0];
    let mut names: Vec<&str> = p["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["disk", "dump", "etc", "files"]);
    assert_eq!(t.ok(&["cat", "v", "latest", "dump"]), "db dump\n");
    assert_eq!(t.ok(&["cat", "v", "latest", "etc/a"]), "first");
    assert_eq!(t.ok(&["cat", "v", "latest", "files/a"]), "first");
    let ls = t.ok(&["ls", "v", "latest", "files"]);
    assert!(
        !ls.contains("skip.log"),
        "the resource's excludes apply: {ls}"
    );
    let disk = t.run(&["cat", "v", "latest", "disk"]);
    assert_eq!(disk.stdout, random_bytes(5, 300_000));

    // A failing command fails only its resource.
    t.ok(&[
        "resource",
        "add",
        "v",
        "broken",
        "--command",
        "echo partial; exit 7",
    ]);
    let out = t.run(&["backup", "v"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skipped resource broken: command `echo partial; exit 7` failed"),
        "{err}"
    );
    let p = t.points();
    let last = &p[1];
    assert_eq!(last["backups"].as_array().unwrap().len(), 4);
    assert_eq!(last["skipped_resources"][0]["name"], "broken");
    t.ok(&["resource", "remove", "v", "broken"]);
    assert_eq!(
        json(&t.ok(&["resource", "list", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        4
    );
    t.ok(&["check", "--read-data"]);
}

/// A resource belongs to the host that added it: another host's resources are listed but
/// not backed up here.
#[test]
fn a_resource_of_another_host_is_not_backed_up_here() {
    let (t, src) = setup();
    let c = t.cmd();
    let prog = c.get_program().to_owned();
    let mut u = std::process::Command::new("unshare");
    u.args([
        "-u",
        "sh",
        "-c",
        "hostname other-host && exec \"$0\" \"$@\"",
    ])
    .arg(prog)
    .args(["resource", "add", "v", "theirs", &src]);
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            u.env(k, v);
        }
    }
    let out = u.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed = json(&t.ok(&["resource", "list", "--json"]));
    assert_eq!(listed[0]["host"], "other-host");
    let err = t.fails(&["backup", "v"]);
    assert!(err.contains("has no resources on this host"), "{err}");
}
