//! A repository written by format version 1, committed to the source tree: every later
//! vaultfs must still open it, list it, read it and check it.

mod common;

use std::path::Path;
use std::process::Command;

fn vaultfs(args: &[&str]) -> std::process::Output {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1");
    // Work on a copy: nothing may write into the fixture (not even a lock).
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("repo");
    common::sh(&format!("cp -a '{}' '{}'", repo.display(), copy.display()));
    Command::new(common::bin())
        .env("VAULTFS_REPO", &copy)
        .env("VAULTFS_PASSWORD", "fixture-password")
        .args(args)
        .output()
        .unwrap()
}

fn sha256(data: &[u8]) -> String {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), data).unwrap();
    common::sh(&format!("sha256sum '{}'", tmp.path().display()))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn format_v1_fixture_still_reads() {
    let out = vaultfs(&["points", "fixture", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let points: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(points[0]["id"], "2026-11-23T070000Z");
    assert_eq!(points[0]["backups"][0]["name"], "docs");
    let gpl = vaultfs(&["cat", "fixture", "latest", "docs/gpl.txt"]);
    assert!(gpl.status.success());
    assert_eq!(
        sha256(&gpl.stdout),
        "3972dc9744f6499f0f9b2dbf76696f2ae7ad8af9b23dde66d6af86c9dfb36986"
    );
    let hello = vaultfs(&["cat", "fixture", "latest", "docs/hello.txt"]);
    assert_eq!(hello.stdout, b"hello from format version 1\n");
    let ls = vaultfs(&["ls", "-l", "fixture", "latest", "docs"]);
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.contains("docs/link -> hello.txt"), "{ls}");
    assert!(ls.contains("2020-01-02T03:04:05"), "{ls}");
    let check = vaultfs(&["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let wrong = Command::new(common::bin())
        .env(
            "VAULTFS_REPO",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1"),
        )
        .env("VAULTFS_PASSWORD", "not it")
        .args(["points", "fixture"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong password"));
}

/// A format-1 repository takes no writes until `vaultfs upgrade`, with a message saying
/// so; once upgraded it takes backups and point changes, and still reads its old points.
#[test]
fn format_v1_fixture_upgrades_to_the_current_format() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1");
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("repo");
    common::sh(&format!("cp -a '{}' '{}'", repo.display(), copy.display()));
    let run = |args: &[&str]| {
        Command::new(common::bin())
            .env("VAULTFS_REPO", &copy)
            .env("VAULTFS_PASSWORD", "fixture-password")
            .args(args)
            .output()
            .unwrap()
    };
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("new.txt"), b"written by format 2\n").unwrap();
    let src = src.to_str().unwrap();

    let refused = run(&["backup", "fixture", src]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("has format version 1") && err.contains("run `vaultfs upgrade` first"),
        "{err}"
    );
    let err = String::from_utf8_lossy(
        &run(&["point", "update", "fixture", "latest", "--protect"]).stderr,
    )
    .into_owned();
    assert!(err.contains("run `vaultfs upgrade` first"), "{err}");
    // Nothing was written by the refused commands.
    assert!(!copy.join("errors").exists() && !copy.join("attrs").exists());

    let up = run(&["upgrade", "--json"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let up: serde_json::Value = serde_json::from_slice(&up.stdout).unwrap();
    assert_eq!((up["from"].as_u64(), up["to"].as_u64()), (Some(1), Some(5)));
    let again = run(&["upgrade"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already has format 5"));

    assert!(
        run(&["backup", "fixture", src, "--tag", "after"])
            .status
            .success()
    );
    assert!(
        run(&[
            "point",
            "update",
            "fixture",
            "2026-11-23T070000Z",
            "--protect"
        ])
        .status
        .success()
    );
    let points: serde_json::Value =
        serde_json::from_slice(&run(&["points", "fixture", "--json"]).stdout).unwrap();
    assert_eq!(points[0]["id"], "2026-11-23T070000Z");
    assert_eq!(points[0]["protected"], true);
    assert_eq!(
        points.as_array().unwrap().last().unwrap()["tags"][0],
        "after"
    );
    let hello = run(&["cat", "fixture", "2026-11-23T070000Z", "docs/hello.txt"]);
    assert_eq!(hello.stdout, b"hello from format version 1\n");
    let new = run(&["cat", "fixture", "latest", "src/new.txt"]);
    assert_eq!(new.stdout, b"written by format 2\n");
    let check = run(&["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// A command on a copy of the format-2 fixture (`tests/fixtures/repo-v2`, written by the
/// last build of format 2: a vault with retention and a label, a protected, tagged point,
/// a resource record).
fn v2_copy() -> (tempfile::TempDir, impl Fn(&[&str]) -> std::process::Output) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v2");
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("repo");
    common::sh(&format!("cp -a '{}' '{}'", repo.display(), copy.display()));
    let run = move |args: &[&str]| {
        Command::new(common::bin())
            .env("VAULTFS_REPO", &copy)
            .env("VAULTFS_PASSWORD", "fixture-password")
            .args(args)
            .output()
            .unwrap()
    };
    (tmp, run)
}

#[test]
fn format_v2_fixture_still_reads() {
    let (_tmp, run) = v2_copy();
    let out = run(&["points", "fixture", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let points: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(points[0]["id"], "2026-12-02T033106Z");
    assert_eq!(points[0]["tags"][0], "v2");
    assert_eq!(points[0]["protected"], true);
    assert_eq!(points[0]["description"], "first point");
    let hello = run(&["cat", "fixture", "latest", "docs/hello.txt"]);
    assert_eq!(hello.stdout, b"hello from format version 2\n");
    let random = run(&["cat", "fixture", "latest", "docs/random.bin"]);
    assert_eq!(
        sha256(&random.stdout),
        "8157323b7342cb1848a0276577fc5729fc569e06cb1c739317ae45008dd9a69a"
    );
    let ls = String::from_utf8_lossy(&run(&["ls", "-l", "fixture", "latest", "docs"]).stdout)
        .into_owned();
    assert!(ls.contains("docs/link -> hello.txt"), "{ls}");
    let vault: serde_json::Value =
        serde_json::from_slice(&run(&["vault", "show", "fixture", "--json"]).stdout).unwrap();
    assert_eq!(vault["description"], "written by format 2");
    assert_eq!(vault["retention"]["keep_last"], 5, "{vault}");
    let resources =
        String::from_utf8_lossy(&run(&["resource", "list", "fixture"]).stdout).into_owned();
    assert!(
        resources.contains("/nonexistent-fixture-path"),
        "{resources}"
    );
    let check = run(&["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// A format-2 repository is read as it is and refuses writes until `vaultfs upgrade`;
/// once upgraded it takes a backup (and a policy), reads its format-2 records (the
/// vault's retention, the point's attributes) and passes `check --read-data`.
#[test]
fn format_v2_fixture_upgrades_to_format_3() {
    let (tmp, run) = v2_copy();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("new.txt"), b"written by format 3\n").unwrap();
    let src = src.to_str().unwrap();
    for args in [
        vec!["backup", "fixture", src],
        vec![
            "policy",
            "create",
            "nightly",
            "--schedule",
            "FREQ=DAILY;BYHOUR=2",
        ],
    ] {
        let out = run(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("has format version 2") && err.contains("run `vaultfs upgrade` first"),
            "{err}"
        );
    }
    let before: serde_json::Value =
        serde_json::from_slice(&run(&["points", "fixture", "--json"]).stdout).unwrap();
    assert_eq!(before[0]["auto_trigger"], false);
    assert_eq!(before[0]["policy"], serde_json::Value::Null);

    let up = run(&["upgrade", "--json"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let up: serde_json::Value = serde_json::from_slice(&up.stdout).unwrap();
    assert_eq!((up["from"].as_u64(), up["to"].as_u64()), (Some(2), Some(5)));

    let backup = run(&["backup", "fixture", src, "--tag", "after"]);
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let policy = run(&[
        "policy",
        "create",
        "nightly",
        "--schedule",
        "FREQ=DAILY;BYHOUR=2",
    ]);
    assert!(
        policy.status.success(),
        "{}",
        String::from_utf8_lossy(&policy.stderr)
    );
    assert!(
        run(&["policy", "apply", "nightly", "fixture"])
            .status
            .success()
    );
    let vault: serde_json::Value =
        serde_json::from_slice(&run(&["vault", "show", "fixture", "--json"]).stdout).unwrap();
    assert_eq!(vault["retention"]["keep_last"], 5, "{vault}");
    assert_eq!(vault["tags"]["env"], "test");
    assert_eq!(vault["policy"], "nightly");
    let points: serde_json::Value =
        serde_json::from_slice(&run(&["points", "fixture", "--json"]).stdout).unwrap();
    assert_eq!(points[0]["id"], "2026-12-02T033106Z");
    assert_eq!(points[0]["protected"], true);
    assert_eq!(points[1]["tags"][0], "after");
    assert_eq!(points[1]["auto_trigger"], false);
    let hello = run(&["cat", "fixture", "2026-12-02T033106Z", "docs/hello.txt"]);
    assert_eq!(hello.stdout, b"hello from format version 2\n");
    let new = run(&["cat", "fixture", "latest", "src/new.txt"]);
    assert_eq!(new.stdout, b"written by format 3\n");
    let check = run(&["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
