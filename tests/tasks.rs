//! Tasks end to end, with the real binary: a running CLI backup seen by `vaultfs tasks`
//! from another process and in a mount's `.vaultfs/tasks/`; a killed backup shown as
//! interrupted; `task cancel` and `rm` of the task file stopping a backup before its
//! commit; the filters of `vaultfs tasks`; every long job leaving a task of its kind.

mod common;

use std::fs;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use serde_json::Value;

/// Heartbeat interval of the tasks of these tests (ms): cancel requests are seen and
/// progress written within it.
const INTERVAL_MS: &str = "100";

/// A `backup v --image - --name slow` whose stdin is fed a block at a time by a
/// thread, until [`SlowBackup::finish`] closes it (or the backup stops reading).
struct SlowBackup {
    child: Child,
    stop: Arc<AtomicBool>,
    feeder: Option<std::thread::JoinHandle<()>>,
}

impl SlowBackup {
    fn start(t: &TestRepo) -> SlowBackup {
        let mut child = t
            .cmd()
            .env("VAULTFS_TASK_INTERVAL_MS", INTERVAL_MS)
            .args(["backup", "v", "--image", "-", "--name", "slow"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let block = random_bytes(7, 64 << 10);
        let feeder = std::thread::spawn(move || {
            // Until told to stop, or the backup stops reading (a broken pipe).
            while !s.load(Ordering::Relaxed) {
                if stdin.write_all(&block).is_err() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        SlowBackup {
            child,
            stop,
            feeder: Some(feeder),
        }
    }

    /// Ends the input and waits for the backup: (exit code, stdout, stderr).
    fn finish(self) -> (i32, String, String) {
        self.stop.store(true, Ordering::Relaxed);
        self.exited()
    }

    /// Waits for the backup to exit (by itself, while the input goes on: a cancel),
    /// then reaps it: (exit code, stdout, stderr).
    fn exited(mut self) -> (i32, String, String) {
        let mut out = String::new();
        let mut err = String::new();
        use std::io::Read;
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let st = self.child.wait().unwrap();
        if let Some(f) = self.feeder.take() {
            // It stops at its next write into the closed pipe.
            f.join().unwrap();
        }
        (st.code().unwrap_or(-1), out, err)
    }
}

fn tasks_json(t: &TestRepo, filter: &[&str]) -> Vec<Value> {
    let mut args = vec!["tasks", "--json"];
    args.extend_from_slice(filter);
    let v: Value = serde_json::from_str(&t.ok(&args)).expect("tasks --json");
    v.as_array().expect("an array").clone()
}

/// Waits until the only backup task shows `status`, and returns it.
fn wait_backup_task(t: &TestRepo, status: &str) -> Value {
    let mut found = Value::Null;
    wait_for(&format!("a backup task {status}"), || {
        let tasks = tasks_json(t, &["--kind", "backup"]);
        match tasks.as_slice() {
            [one] if one["status"] == status => {
                found = one.clone();
                true
            }
            _ => false,
        }
    });
    found
}

fn running_with_progress(t: &TestRepo) -> Value {
    let mut found = Value::Null;
    wait_for("a running backup task with progress", || {
        let tasks = tasks_json(t, &["--kind", "backup", "--status", "running"]);
        match tasks.as_slice() {
            [one] if one["progress"]["bytes"].as_u64().unwrap_or(0) > 0 => {
                found = one.clone();
                true
            }
            _ => false,
        }
    });
    found
}

#[test]
fn a_running_backup_is_a_task_seen_by_another_process_and_in_a_mount() {
    let t = TestRepo::new();
    let b = SlowBackup::start(&t);
    let task = running_with_progress(&t);
    let id = task["id"].as_str().unwrap().to_string();
    assert_eq!(task["kind"], "backup");
    assert_eq!(task["vault"], "v");
    assert!(task["point"].is_null(), "{task}");
    assert!(task["start_time"].is_string(), "{task}");
    assert!(task["pid"].as_u64().unwrap() > 0);
    // The table, and `task show`, from yet another process.
    let table = t.ok(&["tasks"]);
    assert!(table.contains(&id) && table.contains("running"), "{table}");
    let shown: Value = serde_json::from_str(&t.ok(&["task", "show", &id, "--json"])).unwrap();
    assert_eq!(shown["id"], id);
    let m = fuse_available().then(|| t.mount(&[], &[]));
    if let Some(m) = &m {
        let file = m.p(&format!(".vaultfs/tasks/{id}.json"));
        wait_for("the task in the mount", || {
            fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|j| j["status"] == "running" && j["kind"] == "backup")
        });
    }
    let (code, _, err) = b.finish();
    assert_eq!(code, 0, "{err}");
    let done = wait_backup_task(&t, "succeeded");
    assert_eq!(done["id"], id);
    assert_eq!(done["point"].as_str(), Some(t.point_ids()[0].as_str()));
    assert!(done["end_time"].is_string());
    if let Some(m) = &m {
        let file = m.p(&format!(".vaultfs/tasks/{id}.json"));
        wait_for("the finished task in the mount", || {
            fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|j| j["status"] == "succeeded" && j["point"] == done["point"])
        });
        // A finished task's file cannot be removed.
        let e = fs::remove_file(&file).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    }
}

#[test]
fn a_killed_backup_shows_failed_interrupted() {
    let t = TestRepo::new();
    let mut b = SlowBackup::start(&t);
    let task = running_with_progress(&t);
    let id = task["id"].as_str().unwrap().to_string();
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    // Same host, process gone: shown at once, without waiting for the heartbeat bound.
    let tasks = tasks_json(&t, &["--kind", "backup"]);
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0]["status"], "failed", "{tasks:?}");
    assert_eq!(tasks[0]["fail_reason"], "interrupted");
    assert!(tasks[0]["point"].is_null());
    // Filtering on the status as shown.
    assert_eq!(tasks_json(&t, &["--status", "failed"]).len(), 1);
    assert!(tasks_json(&t, &["--status", "running"]).is_empty());
    // Nothing to cancel.
    let err = t.fails(&["task", "cancel", &id]);
    assert!(
        err.contains("not running") && err.contains("interrupted"),
        "{err}"
    );
    drop(b);
}

#[test]
fn task_cancel_stops_a_running_backup_before_its_commit() {
    let t = TestRepo::new();
    let b = SlowBackup::start(&t);
    let task = running_with_progress(&t);
    let id = task["id"].as_str().unwrap().to_string();
    let out = t.ok(&["task", "cancel", &id]);
    assert!(out.contains("cancelled task"), "{out}");
    let (code, stdout, err) = b.exited();
    assert_eq!(code, 130, "{err}");
    assert!(
        err.contains("backup cancelled") && err.contains(&id),
        "{err}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    let shown = wait_backup_task(&t, "cancelled");
    assert!(shown["point"].is_null());
    assert!(shown["end_time"].is_string());
    // No point, no error record, no cancel request left behind; check is content.
    assert!(t.point_ids().is_empty());
    assert!(t.objects("errors").is_empty(), "{:?}", t.objects("errors"));
    assert!(
        t.objects("cancels").is_empty(),
        "{:?}",
        t.objects("cancels")
    );
    assert!(t.objects("locks").is_empty());
    t.ok(&["check", "--read-data"]);
    // And the next backup works (and deduplicates against what the cancelled one left).
    t.backup_one_file(b"after");
    assert_eq!(t.point_ids().len(), 1);
}

#[test]
fn rm_of_the_task_file_in_a_mount_cancels_a_running_backup() {
    if !fuse_available() {
        return;
    }
    let t = TestRepo::new();
    let m = t.mount(&[], &[]);
    let b = SlowBackup::start(&t);
    let task = running_with_progress(&t);
    let id = task["id"].as_str().unwrap().to_string();
    let file = m.p(&format!(".vaultfs/tasks/{id}.json"));
    wait_for("the task file in the mount", || file.exists());
    fs::remove_file(&file).unwrap();
    let (code, _, err) = b.exited();
    assert_eq!(code, 130, "{err}");
    wait_backup_task(&t, "cancelled");
    wait_for("the mount to show it cancelled", || {
        fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|j| j["status"] == "cancelled")
    });
    assert!(t.point_ids().is_empty());
    drop(m);
    t.ok(&["check", "--read-data"]);
}

#[test]
fn rm_of_an_ingest_task_file_cancels_the_ingest() {
    if !fuse_available() {
        return;
    }
    let t = TestRepo::new();
    let m = t.mount(&[], &[("VAULTFS_TASK_INTERVAL_MS", INTERVAL_MS)]);
    // A writer that writes a little and then waits with the file open.
    let target = m.p(".vaultfs/incoming/v/slow.img");
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec >'{}'; printf '%s' \"$(head -c 100000 /dev/zero | tr '\\0' x)\"; exec sleep 30",
            target.display()
        ))
        .spawn()
        .unwrap();
    let mut id = String::new();
    wait_for("the ingest task, running", || {
        let tasks = tasks_json(&t, &["--kind", "ingest", "--status", "running"]);
        if let [one] = tasks.as_slice() {
            id = one["id"].as_str().unwrap().to_string();
            true
        } else {
            false
        }
    });
    fs::remove_file(m.p(&format!(".vaultfs/tasks/{id}.json"))).unwrap();
    wait_for("the ingest task cancelled", || {
        tasks_json(&t, &["--kind", "ingest"])
            .first()
            .is_some_and(|j| j["status"] == "cancelled")
    });
    let _ = writer.kill();
    let _ = writer.wait();
    assert!(t.point_ids().is_empty());
    drop(m);
    t.ok(&["check"]);
}

#[test]
fn every_long_job_leaves_a_task_of_its_kind_and_the_filters_select_them() {
    let t = TestRepo::new();
    let src = t.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"one").unwrap();
    t.backup(&[&src]);
    fs::write(src.join("f"), b"two").unwrap();
    t.backup(&[&src]);
    let target = t.path("restored");
    t.ok(&[
        "restore".as_ref(),
        "v".as_ref(),
        "latest".as_ref(),
        target.as_os_str(),
    ]);
    t.ok(&["forget", "v", "--keep-last", "1"]);
    t.ok(&["prune"]);
    t.ok(&["check"]);
    let all = tasks_json(&t, &[]);
    let kinds: Vec<&str> = all.iter().map(|j| j["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["backup", "backup", "restore", "forget", "prune", "check"],
        "{all:?}"
    );
    assert!(all.iter().all(|j| j["status"] == "succeeded"), "{all:?}");
    // The backups name their points; the restore says what it restored where.
    let points = t.point_ids();
    assert_eq!(all[1]["point"].as_str(), Some(points[0].as_str()));
    assert!(
        all[0]["name"].as_str().unwrap().contains("src"),
        "{}",
        all[0]
    );
    assert!(
        all[2]["name"].as_str().unwrap().contains("restored"),
        "{}",
        all[2]
    );
    assert_eq!(all[2]["progress"]["percent"], 100.0);
    // Filters.
    assert_eq!(tasks_json(&t, &["--kind", "restore"]).len(), 1);
    assert_eq!(tasks_json(&t, &["--kind", "backup"]).len(), 2);
    assert_eq!(tasks_json(&t, &["--vault", "v"]).len(), 4);
    assert_eq!(tasks_json(&t, &["--vault", "other"]).len(), 0);
    assert!(all[4]["vault"].is_null() && all[5]["vault"].is_null());
    assert_eq!(tasks_json(&t, &["--status", "succeeded"]).len(), 6);
    assert_eq!(tasks_json(&t, &["--status", "cancelled"]).len(), 0);
    assert_eq!(tasks_json(&t, &["--since", "1h"]).len(), 6);
    assert_eq!(tasks_json(&t, &["--since", "2200-01-01"]).len(), 0);
    let since = all[3]["created"].as_str().unwrap();
    assert_eq!(tasks_json(&t, &["--since", since]).len(), 3);
    let err = t.fails(&["tasks", "--kind", "nap"]);
    assert!(err.contains("unknown task kind"), "{err}");
    let err = t.fails(&["tasks", "--status", "asleep"]);
    assert!(err.contains("unknown task status"), "{err}");
    let err = t.fails(&["task", "show", "no-such-task"]);
    assert!(err.contains("no task"), "{err}");
    // A failing job leaves a failed task with its reason.
    t.fails(&["restore", "v", "2000-01-01T000000Z", "/nonexistent-target"]);
    let failed = tasks_json(&t, &["--status", "failed"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["kind"], "restore");
    assert!(
        failed[0]["fail_reason"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{failed:?}"
    );
    // An image file's size is the task's total.
    let img = t.path("disk.img");
    fs::write(&img, random_bytes(3, 300_000)).unwrap();
    t.ok(&[
        "backup".as_ref(),
        "v".as_ref(),
        "--image".as_ref(),
        img.as_os_str(),
    ]);
    let last = tasks_json(&t, &["--kind", "backup"]).pop().unwrap();
    assert_eq!(last["progress"]["total_bytes"], 300_000, "{last}");
    assert_eq!(last["progress"]["bytes"], 300_000, "{last}");
    assert!(
        last["name"].as_str().unwrap().contains("disk.img"),
        "{last}"
    );
}

#[test]
fn a_damaged_task_record_is_reported_and_the_others_listed() {
    let t = TestRepo::new();
    t.backup_one_file(b"x");
    fs::create_dir_all(t.repo.join("tasks")).unwrap();
    fs::write(
        t.repo.join("tasks/2026-01-01T000000.000Z-backup-00000000"),
        b"not sealed",
    )
    .unwrap();
    let out = t.run(&["tasks", "--json"]);
    assert!(out.status.success());
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("damaged") && err.contains("2026-01-01T000000.000Z"),
        "{err}"
    );
    // Jobs go on.
    t.backup_one_file(b"y");
    t.ok(&["check"]);
}

#[test]
fn a_task_record_that_cannot_be_written_warns_once_and_the_job_goes_on() {
    let t = TestRepo::new();
    let src = t.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    let out = t
        .cmd()
        .env("VAULTFS_FAULTS", "put:tasks/:error")
        .env("VAULTFS_TASK_INTERVAL_MS", INTERVAL_MS)
        .arg("backup")
        .arg("v")
        .arg(&src)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches("could not write the record of task").count(),
        1,
        "{err}"
    );
    assert_eq!(t.point_ids().len(), 1);
    assert!(tasks_json(&t, &[]).is_empty());
}

#[test]
fn a_repository_of_an_older_format_records_no_tasks() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1");
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("repo");
    sh(&format!(
        "cp -a '{}' '{}'",
        fixture.display(),
        copy.display()
    ));
    let run = |args: &[&str]| {
        let out = Command::new(bin())
            .env("VAULTFS_REPO", &copy)
            .env("VAULTFS_PASSWORD", "fixture-password")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let target = tmp.path().join("restored");
    run(&["check"]);
    run(&["restore", "fixture", "latest", target.to_str().unwrap()]);
    assert!(!copy.join("tasks").exists());
    assert_eq!(run(&["tasks", "--json"]).trim(), "[]");
}
