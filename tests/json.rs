//! The `--json` documents of every command and the main error texts, as snapshots
//! (`tests/snapshots/`, reviewed with `cargo insta review` or `INSTA_UPDATE=always`).
//!
//! A snapshot is the contract of the README's "Scripting" section: a field renamed or
//! removed, a kind or exit status changed, fails here. What changes from run to run
//! (times, ids, the temp dir, host, pid, user, rates) is replaced by a placeholder before
//! comparing, so that the snapshot holds names and the values a script relies on.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::Value;

/// Replaces what differs between runs by placeholders, in every string and in the
/// fields that measure time or name the machine.
struct Normalizer {
    dir: String,
    host: String,
    time: regex::Regex,
    hex: regex::Regex,
}

impl Normalizer {
    fn new(t: &TestRepo) -> Self {
        let host = fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim()
            .to_string();
        Normalizer {
            dir: t.dir.path().to_string_lossy().into_owned(),
            host,
            // RFC 3339 times and the compact forms of point and task names.
            time: regex::Regex::new(
                r"\d{4}-\d{2}-\d{2}T\d{2}:?\d{2}:?\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?(-\d+)?",
            )
            .unwrap(),
            hex: regex::Regex::new(r"\b[0-9a-f]{8,}\b").unwrap(),
        }
    }

    fn text(&self, s: &str) -> String {
        let s = s.replace(&self.dir, "[dir]");
        let s = self.time.replace_all(&s, "[time]");
        let s = self.hex.replace_all(&s, "[hex]");
        let s = regex::Regex::new(r"pid \d+")
            .unwrap()
            .replace_all(&s, "pid [pid]");
        let s = regex::Regex::new(r"(\d+[smhd] ?)+ ago")
            .unwrap()
            .replace_all(&s, "[age] ago");
        // Hostnames only as whole words ("vm" is inside other words).
        let host = regex::Regex::new(&format!(r"\b{}\b", regex::escape(&self.host))).unwrap();
        host.replace_all(&s, "[host]").into_owned()
    }

    fn value(&self, v: &Value) -> Value {
        const MEASURED: &[&str] = &[
            "pid",
            "daemon_pid",
            "rate",
            "eta_seconds",
            "elapsed_seconds",
            "duration_seconds",
            "seconds",
            "user",
            "uid",
            "created_by",
            // Sizes of sealed objects: their encodings hold times and lengths of varying width.
            "bytes_stored",
            "bytes_stored_new",
            "bytes_used",
            "stored_bytes",
            "bytes_read",
        ];
        match v {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.value(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| {
                        // Sizes of sealed objects: their encodings hold times, nonces and
                        // lengths of varying width, so they differ by a few bytes a run.
                        const SEALED: &[&str] = &[
                            "stored",
                            "used",
                            "referenced",
                            "read",
                            "reclaim",
                            "freed",
                            "pack",
                            "before",
                            "after",
                            "saved",
                            "delet",
                            "kept",
                        ];
                        let sealed = x.is_number() && SEALED.iter().any(|w| k.contains(w));
                        let x = if (MEASURED.contains(&k.as_str()) || sealed) && !x.is_null() {
                            Value::String("[measured]".into())
                        } else {
                            self.value(x)
                        };
                        (k.clone(), x)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}):\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs a command that must succeed and returns its normalized JSON.
fn ok_json(t: &TestRepo, n: &Normalizer, args: &[&str]) -> Value {
    let out = t.run(args);
    assert!(
        out.status.success(),
        "vaultfs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    n.value(&json_of(&out))
}

/// A small tree with fixed contents and times, so that sizes and counts are the same on
/// every run.
fn make_source(root: &Path) {
    fs::create_dir_all(root.join("sub")).unwrap();
    fs::write(root.join("a.txt"), b"hello\n").unwrap();
    fs::write(root.join("sub/b.bin"), random_bytes(7, 100_000)).unwrap();
    symlink("a.txt", root.join("link")).unwrap();
    sh(&format!(
        "touch -h -d '2026-01-02 03:04:05Z' {0}/a.txt {0}/sub/b.bin {0}/link {0}/sub {0}",
        root.display()
    ));
}

#[test]
fn every_json_output_keeps_its_fields() {
    let t = TestRepo::new();
    let n = Normalizer::new(&t);
    let src = t.path("src");
    make_source(&src);
    let src_s = src.to_str().unwrap();

    let snap = |name: &str, args: &[&str]| {
        let v = ok_json(&t, &n, args);
        insta::assert_json_snapshot!(name, v);
        v
    };

    snap(
        "vault_create",
        &["vault", "create", "w", "--quota", "1G", "--json"],
    );
    snap(
        "vault_update",
        &[
            "vault",
            "update",
            "v",
            "--tag",
            "team=ops",
            "--keep-last",
            "3",
            "--json",
        ],
    );
    let first = snap(
        "backup",
        &["backup", "v", src_s, "--tag", "first", "--json"],
    );
    assert_eq!(first["backups"][0]["files"], 2, "{first}");
    fs::write(src.join("a.txt"), b"hello again\n").unwrap();
    sh(&format!("touch -d '2026-01-03 03:04:05Z' {src_s}/a.txt"));
    snap("backup_second", &["backup", "v", src_s, "--json"]);
    let points = t.points();
    let p1 = points[0]["id"].as_str().unwrap().to_string();
    let p2 = points[1]["id"].as_str().unwrap().to_string();

    snap("vault_show", &["vault", "show", "v", "--json"]);
    snap("vault_list", &["vault", "list", "--json"]);
    snap("points", &["points", "v", "--json"]);
    snap("point_show", &["point", "show", "v", "latest", "--json"]);
    snap(
        "point_update",
        &[
            "point",
            "update",
            "v",
            &p1,
            "--description",
            "before",
            "--protect",
            "--json",
        ],
    );
    snap("ls", &["ls", "v", "latest", "src", "-R", "--json"]);
    snap("versions", &["versions", "v", "src/a.txt", "--json"]);
    snap("diff", &["diff", "v", &p1, &p2, "--json"]);
    snap("diff_stat", &["diff", "v", &p1, &p2, "--stat", "--json"]);
    snap("find", &["find", "v", "*.txt", "--json"]);
    snap("check", &["check", "--json"]);
    snap("check_read_data", &["check", "--read-data", "--json"]);
    let target = t.path("restored");
    snap(
        "restore",
        &["restore", "v", "latest", target.to_str().unwrap(), "--json"],
    );
    snap(
        "forget_dry_run",
        &["forget", "v", "--keep-last", "1", "--dry-run", "--json"],
    );
    snap("prune_dry_run", &["prune", "--dry-run", "--json"]);
    snap("key_list", &["key", "list", "--json"]);
    snap(
        "policy_create",
        &[
            "policy",
            "create",
            "nightly",
            "--schedule",
            "FREQ=DAILY;BYHOUR=2;BYMINUTE=0",
            "--keep-daily",
            "7",
            "--json",
        ],
    );
    snap(
        "policy_apply",
        &["policy", "apply", "nightly", "v", "--json"],
    );
    snap("policy_list", &["policy", "list", "--json"]);
    snap(
        "resource_add",
        &["resource", "add", "v", "docs", src_s, "--json"],
    );
    snap("resource_list", &["resource", "list", "--json"]);
    snap(
        "resource_remove",
        &["resource", "remove", "v", "docs", "--json"],
    );
    snap(
        "vault_share",
        &["vault", "share", "v", "--uid", "0", "--json"],
    );
    snap("unlock", &["unlock", "--json"]);
    snap("upgrade", &["upgrade", "--json"]);
    snap("vault_delete", &["vault", "delete", "w", "--json"]);

    // Tasks: the backups, restore and check above, each with its fields.
    let tasks = ok_json(&t, &n, &["tasks", "--kind", "restore", "--json"]);
    insta::assert_json_snapshot!("tasks_restore", tasks);
    let raw = t.ok(&["tasks", "--kind", "restore", "--json"]);
    let id = serde_json::from_str::<Value>(&raw).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    snap("task_show", &["task", "show", &id, "--json"]);

    // Records: exported, then imported again (a no-op: the point is there).
    let record = t.path("record.json");
    t.ok(&[
        "export-record",
        "v",
        &p2,
        "--output",
        record.to_str().unwrap(),
    ]);
    snap(
        "import_record",
        &["import-record", record.to_str().unwrap(), "--json"],
    );

    // A new repository's settings.
    let other = t.path("other");
    let out = t
        .cmd()
        .env("VAULTFS_REPO", &other)
        .args(["init", "--kdf-memory-mib", "8", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    insta::assert_json_snapshot!("init", n.value(&json_of(&out)));
}

/// Runs a command that must fail with `--json`: its status, its JSON error, its stderr.
fn failure(t: &TestRepo, n: &Normalizer, args: &[&str]) -> (i32, Value, String) {
    failure_of(n, t.cmd().args(args).output().unwrap(), args)
}

fn failure_of(n: &Normalizer, out: Output, args: &[&str]) -> (i32, Value, String) {
    assert!(!out.status.success(), "vaultfs {args:?} should have failed");
    let v = n.value(&json_of(&out));
    let code = out.status.code().expect("an exit status");
    assert_eq!(v["error"]["exit_code"], code, "{v}");
    (
        code,
        v,
        n.text(String::from_utf8_lossy(&out.stderr).trim_end()),
    )
}

#[test]
fn errors_have_a_kind_a_status_and_a_message_that_says_what_to_do() {
    let t = TestRepo::new();
    let n = Normalizer::new(&t);
    let src = t.path("src");
    make_source(&src);
    t.ok(&["backup", "v", src.to_str().unwrap(), "--protect"]);
    let mut all = Vec::new();
    let mut expect = |name: &str, r: (i32, Value, String), kind: &str, status: i32| {
        assert_eq!(r.1["error"]["kind"], kind, "{name}: {}", r.1);
        assert_eq!(r.0, status, "{name}");
        all.push(serde_json::json!({"case": name, "status": r.0, "json": r.1, "stderr": r.2}));
    };

    expect(
        "no_such_vault",
        failure(&t, &n, &["points", "nope", "--json"]),
        "not_found",
        4,
    );
    expect(
        "no_such_point",
        failure(
            &t,
            &n,
            &["point", "show", "v", "1999-01-01T000000Z", "--json"],
        ),
        "not_found",
        4,
    );
    expect(
        "no_such_path",
        failure(&t, &n, &["ls", "v", "latest", "src/nothing", "--json"]),
        "not_found",
        4,
    );
    expect(
        "usage",
        failure(&t, &n, &["points", "v", "--json", "--bogus"]),
        "usage",
        2,
    );
    expect(
        "vault_exists",
        failure(&t, &n, &["vault", "create", "v", "--json"]),
        "exists",
        9,
    );
    expect(
        "bad_vault_name",
        failure(&t, &n, &["vault", "create", ".hidden", "--json"]),
        "bad_input",
        2,
    );
    expect(
        "vault_not_empty",
        failure(&t, &n, &["vault", "delete", "v", "--json"]),
        "not_empty",
        9,
    );
    expect(
        "protected",
        failure(&t, &n, &["point", "delete", "v", "latest", "--json"]),
        "protected",
        9,
    );
    let out = t
        .cmd()
        .env("VAULTFS_PASSWORD", "not the password")
        .args(["vault", "list", "--json"])
        .output()
        .unwrap();
    expect(
        "wrong_password",
        failure_of(&n, out, &["vault", "list"]),
        "wrong_password",
        6,
    );
    let out = t
        .cmd()
        .env("VAULTFS_REPO", t.path("nothing-here"))
        .args(["vault", "list", "--json"])
        .output()
        .unwrap();
    expect(
        "not_a_repository",
        failure_of(&n, out, &["vault", "list"]),
        "not_a_repository",
        7,
    );
    // An S3 endpoint nobody listens on: named in the message.
    let out = t
        .cmd()
        .env("VAULTFS_REPO", "s3://nobucket/repo")
        .env("VAULTFS_S3_ENDPOINT", "http://127.0.0.1:9")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .args(["vault", "list", "--json"])
        .output()
        .unwrap();
    let r = failure_of(&n, out, &["vault", "list"]);
    assert!(
        r.2.contains("127.0.0.1:9"),
        "the endpoint is not named: {}",
        r.2
    );
    expect("unreachable_s3", r, "store", 8);

    // A writer holds the lock: the message names it, its age and how to go on.
    let mut holder = t.hold_lock();
    let r = failure(&t, &n, &["prune", "--lock-wait", "0", "--json"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(
        r.2.contains("ago") && r.2.contains("vaultfs unlock"),
        "{}",
        r.2
    );
    expect("locked", r, "locked", 5);

    // A mount point that is busy: something is mounted there already.
    expect(
        "mountpoint_busy",
        failure(&t, &n, &["mount", "/proc", "--daemon", "--json"]),
        "busy",
        9,
    );
    let full = t.path("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("keep"), b"x").unwrap();
    expect(
        "mountpoint_not_empty",
        failure(
            &t,
            &n,
            &["mount", full.to_str().unwrap(), "--daemon", "--json"],
        ),
        "not_empty",
        9,
    );
    expect(
        "mountpoint_missing",
        failure(&t, &n, &["mount", "/nonexistent-dir", "--daemon", "--json"]),
        "not_found",
        4,
    );

    insta::assert_json_snapshot!("errors", all);
}

/// The password never shows: not in output (text or JSON), logs at debug level, task
/// records, the mount daemon's command line or environment, nor its stats.
#[test]
fn secrets_never_show_in_output_logs_tasks_or_processes() {
    let t = TestRepo::new();
    let src = t.path("src");
    make_source(&src);
    let mut seen = Vec::<u8>::new();
    let mut run = |envs: &[(&str, &str)], args: &[&str]| {
        let out = t
            .cmd()
            .env("RUST_LOG", "debug")
            .envs(envs.iter().copied())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        seen.extend_from_slice(&out.stdout);
        seen.extend_from_slice(&out.stderr);
    };
    let pw_file = t.path("pw");
    fs::write(&pw_file, format!("{PASSWORD}\n")).unwrap();
    let by_file = [("VAULTFS_PASSWORD_FILE", pw_file.to_str().unwrap())];
    let by_cmd = format!("cat {}", pw_file.display());
    let by_cmd = [("VAULTFS_PASSWORD_COMMAND", by_cmd.as_str())];
    run(&[], &["backup", "v", src.to_str().unwrap(), "--json"]);
    run(
        &by_file,
        &["--log-format", "json", "backup", "v", src.to_str().unwrap()],
    );
    run(&by_cmd, &["points", "v", "--json"]);
    run(&[], &["tasks", "--json"]);
    run(&[], &["check", "--json"]);
    run(&[], &["key", "list", "--json"]);
    let target = t.path("restored");
    run(
        &[],
        &["restore", "v", "latest", target.to_str().unwrap(), "--json"],
    );

    if fuse_available() {
        let mnt = t.path("mnt");
        fs::create_dir(&mnt).unwrap();
        let log = t.path("daemon.log");
        let pid_file = t.path("daemon.pid");
        run(
            &[],
            &[
                "mount",
                mnt.to_str().unwrap(),
                "--daemon",
                "--no-schedule",
                "--log-file",
                log.to_str().unwrap(),
                "--pid-file",
                pid_file.to_str().unwrap(),
            ],
        );
        let pid = fs::read_to_string(&pid_file).unwrap().trim().to_string();
        seen.extend(fs::read(format!("/proc/{pid}/cmdline")).unwrap());
        seen.extend(fs::read(format!("/proc/{pid}/environ")).unwrap());
        seen.extend(fs::read(mnt.join(".vaultfs/stats.json")).unwrap());
        for e in fs::read_dir(mnt.join(".vaultfs/tasks")).unwrap() {
            seen.extend(fs::read(e.unwrap().path()).unwrap());
        }
        let out = t.run(&["umount", mnt.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        seen.extend(fs::read(&log).unwrap());
    }
    assert!(seen.len() > 1000, "too little was looked at");
    let text = String::from_utf8_lossy(&seen);
    assert!(!text.contains(PASSWORD), "the password shows somewhere");
}
