//! Keys through the CLI: several passwords open one repository, a password changes
//! without touching data, the last key and the key in use are not removed, a damaged key
//! object is named while the other keys still open, and a format-3 repository takes a
//! second key once upgraded.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{PASSWORD, TestRepo};
use serde_json::Value;

/// A file holding `pw` on its first line (and a second line that must be ignored).
fn pw_file(t: &TestRepo, name: &str, pw: &str) -> PathBuf {
    let p = t.path(name);
    std::fs::write(&p, format!("{pw}\nnot part of it\n")).unwrap();
    p
}

/// `vaultfs ARGS` with password `pw`.
fn as_pw(t: &TestRepo, pw: &str, args: &[&str]) -> Output {
    t.cmd()
        .env("VAULTFS_PASSWORD", pw)
        .args(args)
        .output()
        .unwrap()
}

fn ok_as(t: &TestRepo, pw: &str, args: &[&str]) -> String {
    let out = as_pw(t, pw, args);
    assert!(
        out.status.success(),
        "vaultfs {args:?} with {pw:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn err_as(t: &TestRepo, pw: &str, args: &[&str]) -> String {
    let out = as_pw(t, pw, args);
    assert!(
        !out.status.success(),
        "vaultfs {args:?} with {pw:?} succeeded"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn keys(t: &TestRepo, pw: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&ok_as(t, pw, &["key", "list", "--json"])).unwrap();
    v.as_array().unwrap().clone()
}

fn current(keys: &[Value]) -> String {
    let cur: Vec<&Value> = keys.iter().filter(|k| k["current"] == true).collect();
    assert_eq!(cur.len(), 1, "{keys:?}");
    cur[0]["id"].as_str().unwrap().to_string()
}

fn reads(t: &TestRepo, pw: &str) -> bool {
    let out = as_pw(t, pw, &["cat", "v", "latest", "src/f"]);
    out.status.success() && out.stdout == b"the data\n"
}

#[test]
fn passwords_are_added_changed_and_removed() {
    let t = TestRepo::new();
    t.backup_one_file(b"the data\n");
    let one = keys(&t, PASSWORD);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["id"], "config");
    assert_eq!(one[0]["current"], true);
    assert_eq!(one[0]["kdf"]["algorithm"], "argon2id");

    // A second password: both open the repository, each its own copy.
    let f2 = pw_file(&t, "pw2", "second password");
    let added: Value = serde_json::from_str(&t.ok(&[
        "key",
        "add",
        "--new-password-file",
        f2.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let second = added["id"].as_str().unwrap().to_string();
    assert_eq!(second.len(), 32, "{added}");
    assert!(reads(&t, PASSWORD));
    assert!(reads(&t, "second password"));
    // The file's first line only.
    assert!(!reads(&t, "not part of it"));
    let two = keys(&t, "second password");
    assert_eq!(two.len(), 2);
    assert_eq!(current(&two), second);
    assert_eq!(current(&keys(&t, PASSWORD)), "config");
    let mine = two.iter().find(|k| k["id"] == second.as_str()).unwrap();
    assert!(
        mine["host"].as_str().is_some_and(|h| !h.is_empty()),
        "{mine}"
    );
    assert!(
        mine["user"].as_str().is_some_and(|u| !u.is_empty()),
        "{mine}"
    );
    assert_eq!(mine["damaged"], Value::Null);
    let text = ok_as(&t, "second password", &["key", "list"]);
    assert!(text.contains(&format!("* {second}")), "{text}");

    // A wrong password opens nothing.
    let err = err_as(&t, "neither of them", &["points", "v"]);
    assert!(err.contains("wrong password"), "{err}");

    // passwd of the second key: the old password is refused, the new one works, the
    // first is untouched; the data was not rewritten.
    let packs_before = t.object_keys("packs");
    let f3 = pw_file(&t, "pw3", "third password");
    let changed: Value = serde_json::from_str(&ok_as(
        &t,
        "second password",
        &[
            "key",
            "passwd",
            "--new-password-file",
            f3.to_str().unwrap(),
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(changed["replaced"], second.as_str());
    let third = changed["id"].as_str().unwrap().to_string();
    assert_ne!(third, second);
    assert!(!reads(&t, "second password"));
    let err = err_as(&t, "second password", &["points", "v"]);
    assert!(err.contains("wrong password"), "{err}");
    assert!(reads(&t, "third password"));
    assert!(reads(&t, PASSWORD));
    assert_eq!(t.object_keys("packs"), packs_before);

    // The key in use is not removed; with another key's password it is.
    let err = err_as(&t, PASSWORD, &["key", "remove", "config"]);
    assert!(err.contains("opened the repository with it"), "{err}");
    let removed: Value = serde_json::from_str(&ok_as(
        &t,
        "third password",
        &["key", "remove", "config", "--json"],
    ))
    .unwrap();
    assert_eq!(removed["removed"], "config");
    assert!(!reads(&t, PASSWORD));
    assert!(reads(&t, "third password"));

    // The last key stays.
    let only = keys(&t, "third password");
    assert_eq!(only.len(), 1);
    let err = err_as(&t, "third password", &["key", "remove", &third[..8]]);
    assert!(err.contains("last key"), "{err}");
    assert!(reads(&t, "third password"));
    let err = err_as(&t, "third password", &["key", "remove", "0000"]);
    assert!(err.contains("no key"), "{err}");

    // Changing the password of the key that lived in the config works alike.
    let t2 = TestRepo::new();
    t2.backup_one_file(b"the data\n");
    let f = pw_file(&t2, "pw", "replacement");
    ok_as(
        &t2,
        PASSWORD,
        &["key", "passwd", "--new-password-file", f.to_str().unwrap()],
    );
    assert!(!reads(&t2, PASSWORD));
    assert!(reads(&t2, "replacement"));
    assert_eq!(keys(&t2, "replacement").len(), 1);
    let check = ok_as(&t2, "replacement", &["check", "--read-data"]);
    assert!(check.contains("no errors"), "{check}");
}

#[test]
fn a_damaged_key_object_is_named_and_the_others_still_open() {
    let t = TestRepo::new();
    t.backup_one_file(b"the data\n");
    let f = pw_file(&t, "pw2", "second password");
    let out = t.ok(&["key", "add", "--new-password-file", f.to_str().unwrap()]);
    let id = out.trim().strip_prefix("added key ").unwrap().to_string();
    let object = t.repo.join("keys").join(&id);
    let good = std::fs::read(&object).unwrap();

    for damaged in [good[..good.len() / 2].to_vec(), b"garbage".to_vec()] {
        std::fs::write(&object, &damaged).unwrap();
        let err = err_as(&t, "second password", &["points", "v"]);
        assert!(err.contains("wrong password"), "{err}");
        assert!(
            err.contains(&format!("keys/{id}")),
            "the damaged key is named: {err}"
        );
        assert!(reads(&t, PASSWORD));
        let listed = keys(&t, PASSWORD);
        let bad = listed.iter().find(|k| k["id"] == id.as_str()).unwrap();
        assert!(bad["damaged"].as_str().is_some(), "{bad}");
    }
    // A damaged key does not count: the config's key is then the last one.
    let err = err_as(&t, PASSWORD, &["key", "remove", "config"]);
    assert!(err.contains("last key"), "{err}");
    // It can be removed, and a good copy put back opens again.
    ok_as(&t, PASSWORD, &["key", "remove", &id]);
    assert_eq!(keys(&t, PASSWORD).len(), 1);
    std::fs::write(&object, &good).unwrap();
    assert!(reads(&t, "second password"));

    // When the only copy is damaged, the error says so rather than "wrong password".
    ok_as(&t, "second password", &["key", "remove", "config"]);
    std::fs::write(&object, b"garbage").unwrap();
    let err = err_as(&t, "second password", &["points", "v"]);
    assert!(err.contains("no usable key"), "{err}");
    assert!(err.contains(&id), "{err}");
}

/// The format-3 fixture (`tests/fixtures/repo-v3`, written by the last build of format 3:
/// a vault with retention and a policy, one point) reads as it is, takes no key until
/// `vaultfs upgrade`, and then opens with a second password.
#[test]
fn format_v3_fixture_upgrades_and_takes_a_second_key() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v3");
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("repo");
    common::sh(&format!(
        "cp -a '{}' '{}'",
        fixture.display(),
        copy.display()
    ));
    let run = |pw: &str, args: &[&str]| {
        Command::new(common::bin())
            .env("VAULTFS_REPO", &copy)
            .env("VAULTFS_PASSWORD", pw)
            .args(args)
            .output()
            .unwrap()
    };
    let pw = "fixture-password";
    let hello = run(pw, &["cat", "fixture", "latest", "docs/hello.txt"]);
    assert_eq!(hello.stdout, b"hello from format version 3\n");
    let f = tmp.path().join("pw2");
    std::fs::write(&f, "second\n").unwrap();
    let f = f.to_str().unwrap();
    let refused = run(pw, &["key", "add", "--new-password-file", f]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("has format version 3") && err.contains("run `vaultfs upgrade` first"),
        "{err}"
    );
    let up = run(pw, &["upgrade", "--json"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let up: Value = serde_json::from_slice(&up.stdout).unwrap();
    assert_eq!((up["from"].as_u64(), up["to"].as_u64()), (Some(3), Some(5)));
    assert!(
        run(pw, &["key", "add", "--new-password-file", f])
            .status
            .success()
    );
    let hello = run("second", &["cat", "fixture", "latest", "docs/hello.txt"]);
    assert_eq!(hello.stdout, b"hello from format version 3\n");
    // The format-3 vault record reads with its policy and retention, and no members.
    let vault: Value =
        serde_json::from_slice(&run("second", &["vault", "show", "fixture", "--json"]).stdout)
            .unwrap();
    assert_eq!(vault["description"], "written by format 3");
    assert_eq!(vault["policy"], "nightly");
    assert_eq!(vault["retention"]["keep_last"], 3, "{vault}");
    assert_eq!(vault["members"]["uids"], serde_json::json!([]));
    let shared = run(
        "second",
        &["vault", "share", "fixture", "--gid", "100", "--json"],
    );
    assert!(
        shared.status.success(),
        "{}",
        String::from_utf8_lossy(&shared.stderr)
    );
    let vault: Value = serde_json::from_slice(&shared.stdout).unwrap();
    assert_eq!(vault["members"]["gids"], serde_json::json!([100]));
    assert_eq!(vault["policy"], "nightly");
    let check = run("second", &["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
