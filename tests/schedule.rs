//! Policies and the scheduler through the real binary: the policy commands, and
//! `vaultfs serve` and the mount running a policy due within the next minute with the
//! real clock.

mod common;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::TestRepo;
use serde_json::Value;

/// A `vaultfs serve` of a test repository, its stderr in a file; killed when dropped.
struct Serve {
    child: Option<Child>,
    log: PathBuf,
}

impl Serve {
    fn start(t: &TestRepo, name: &str) -> Serve {
        let log = t.path(&format!("{name}.log"));
        let child = t
            .cmd()
            .args(["serve", "--refresh-secs", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Serve {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and returns whether it exited 0.
    fn stop(&mut self) -> bool {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        child.wait().unwrap().success()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits up to `secs` for `cond`.
fn wait_long(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "waited {secs} s for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The next `n` whole minutes (UTC) at least 20 s from now, and an hourly rule that
/// fires at those minutes (and at no other minute of the hour).
fn next_minutes(n: i64) -> (String, Vec<chrono::DateTime<chrono::Utc>>) {
    use chrono::{DurationRound, Timelike};
    let soon = chrono::Utc::now() + chrono::Duration::seconds(20);
    let first =
        soon.duration_trunc(chrono::Duration::minutes(1)).unwrap() + chrono::Duration::minutes(1);
    let times: Vec<_> = (0..n)
        .map(|i| first + chrono::Duration::minutes(i))
        .collect();
    let minutes: Vec<String> = times.iter().map(|t| t.minute().to_string()).collect();
    (format!("FREQ=HOURLY;BYMINUTE={}", minutes.join(",")), times)
}

fn scheduled(points: &Value) -> Vec<&Value> {
    points
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["auto_trigger"] == true)
        .collect()
}

/// A repository with a resource `docs` of this host in vault `v`, and two manual points
/// (the older protected).
fn with_resource_and_manual_points() -> (TestRepo, Vec<String>) {
    let t = TestRepo::new();
    let docs = t.path("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("a.txt"), b"scheduled content\n").unwrap();
    t.ok(&["resource", "add", "v", "docs", docs.to_str().unwrap()]);
    t.ok(&["backup", "v", "--protect"]);
    t.ok(&["backup", "v"]);
    let manual = t.point_ids();
    assert_eq!(manual.len(), 2);
    (t, manual)
}

/// The point taken, once the scheduler's retention ran: the protected manual point and
/// the scheduled one stay, the unprotected manual point goes (keep-last 1).
fn assert_scheduled_run(t: &TestRepo, manual: &[String]) {
    let points = t.points();
    let ids: Vec<&str> = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    let auto = scheduled(&points);
    assert_eq!(auto.len(), 1, "{points}");
    assert_eq!(auto[0]["policy"], "every");
    assert_eq!(auto[0]["backups"][0]["name"], "docs");
    assert_eq!(ids, [manual[0].as_str(), auto[0]["id"].as_str().unwrap()]);
    assert_eq!(points[0]["auto_trigger"], false);
    let out = t.ok(&["cat", "v", "latest", "docs/a.txt"]);
    assert_eq!(out, "scheduled content\n");
}

#[test]
fn serve_runs_a_due_policy_and_its_retention_and_a_second_one_idles() {
    let (t, manual) = with_resource_and_manual_points();
    let (rule, times) = next_minutes(1);
    t.ok(&[
        "policy",
        "create",
        "every",
        "--schedule",
        &rule,
        "--keep-last",
        "1",
    ]);
    t.ok(&["policy", "apply", "every", "v"]);
    let shown: Value = serde_json::from_str(&t.ok(&["vault", "show", "v", "--json"])).unwrap();
    assert_eq!(shown["policy"], "every");
    assert_eq!(
        shown["next_run"],
        times[0].format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    );

    let mut serve = Serve::start(&t, "serve");
    wait_long("the first serve to start", 30, || {
        serve.log().contains("next backup at")
    });
    let mut second = Serve::start(&t, "second");
    wait_long("the second serve to idle", 30, || {
        second.log().contains("this one idles")
    });
    assert!(
        second.log().contains("another scheduler (pid"),
        "{}",
        second.log()
    );

    wait_long("the scheduled run and its retention", 150, || {
        serve.log().contains("vault v: run done")
    });
    let log = serve.log();
    assert!(log.contains("vault v: scheduled backup for"), "{log}");
    assert!(
        log.contains(&format!("retention removed {}", manual[1])),
        "{log}"
    );
    assert_scheduled_run(&t, &manual);
    // Both jobs ran as tasks, seen from another process: the backup with its point.
    let tasks: Value = serde_json::from_str(&t.ok(&["tasks", "--vault", "v", "--json"])).unwrap();
    let latest = t.points();
    let point = scheduled(&latest)[0]["id"].as_str().unwrap().to_string();
    let of_kind = |k: &str| -> Vec<Value> {
        tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| {
                x["kind"] == k
                    && x["name"]
                        .as_str()
                        .is_some_and(|d| d.starts_with("scheduled"))
            })
            .cloned()
            .collect()
    };
    let backups = of_kind("backup");
    assert_eq!(backups.len(), 1, "{tasks}");
    assert_eq!(backups[0]["status"], "succeeded", "{tasks}");
    assert_eq!(backups[0]["point"], point.as_str());
    let forgets = of_kind("forget");
    assert_eq!(forgets.len(), 1, "{tasks}");
    assert_eq!(forgets[0]["status"], "succeeded", "{tasks}");
    // The idle one did nothing.
    assert!(
        !second.log().contains("scheduled backup"),
        "{}",
        second.log()
    );

    assert!(serve.stop(), "serve exits 0 on SIGTERM: {}", serve.log());
    assert!(serve.log().contains("stopped"));
    assert!(second.stop(), "{}", second.log());
    let check = t.run(&["check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn a_run_missed_while_no_scheduler_ran_is_made_once_at_start() {
    let (t, manual) = with_resource_and_manual_points();
    let (rule, times) = next_minutes(2);
    t.ok(&[
        "policy",
        "create",
        "every",
        "--schedule",
        &rule,
        "--keep-last",
        "1",
    ]);
    t.ok(&["policy", "apply", "every", "v"]);
    // Both due times pass with no scheduler running.
    let after = times[1] + chrono::Duration::seconds(1);
    wait_long("both due times to pass", 200, || chrono::Utc::now() > after);
    let mut serve = Serve::start(&t, "serve");
    wait_long("the missed run", 120, || {
        serve.log().contains("vault v: run done")
    });
    let log = serve.log();
    assert_eq!(log.matches("scheduled backup for").count(), 1, "{log}");
    assert!(
        log.contains(&format!(
            "scheduled backup for {} (policy every) (1 earlier due time(s) missed: one run for all)",
            times[1].format("%Y-%m-%dT%H:%M:%S%.3fZ")
        )),
        "{log}"
    );
    assert_scheduled_run(&t, &manual);
    assert!(serve.stop());
    // Started again: nothing is due until the next hour.
    let mut again = Serve::start(&t, "again");
    wait_long("the restarted serve", 30, || {
        again.log().contains("next backup at")
    });
    assert!(again.stop());
    assert!(
        !again.log().contains("scheduled backup for"),
        "{}",
        again.log()
    );
    assert_eq!(scheduled(&t.points()).len(), 1);
}

#[test]
fn the_mount_runs_the_scheduler() {
    if !common::fuse_available() {
        common::record_skip("fuse", "no /dev/fuse");
        return;
    }
    let (t, manual) = with_resource_and_manual_points();
    let (rule, _) = next_minutes(1);
    t.ok(&[
        "policy",
        "create",
        "every",
        "--schedule",
        &rule,
        "--keep-last",
        "1",
    ]);
    t.ok(&["policy", "apply", "every", "v"]);
    let m = t.mount(&[], &[]);
    let policy: Value =
        serde_json::from_slice(&std::fs::read(m.p(".vaultfs/policies/every.json")).unwrap())
            .unwrap();
    assert_eq!(policy["schedules"][0], rule.as_str());
    assert_eq!(policy["vaults"][0], "v");
    let names: Vec<String> = std::fs::read_dir(m.p(".vaultfs/policies"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["every.json"]);
    wait_long("the mount's scheduled run", 150, || {
        m.log_text().contains("vault v: run done")
    });
    assert_scheduled_run(&t, &manual);
    // The mount shows the scheduled point as such.
    let latest = t.points().as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = m.p(&format!(".vaultfs/points/v/{latest}.json"));
    wait_long("the point in the mount", 30, || path.exists());
    let j: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        (j["auto_trigger"].as_bool(), j["policy"].as_str()),
        (Some(true), Some("every"))
    );
    let vault: Value =
        serde_json::from_slice(&std::fs::read(m.p(".vaultfs/vaults/v.json")).unwrap()).unwrap();
    assert_eq!(vault["policy"], "every");
    assert!(vault["next_run"].is_string(), "{vault}");
}

#[test]
fn one_scheduler_acts_beside_a_mount_unless_no_schedule() {
    if !common::fuse_available() {
        common::record_skip("fuse", "no /dev/fuse");
        return;
    }
    let t = TestRepo::new();
    let m = t.mount(&[], &[]);
    wait_long("the mount's scheduler", 30, || {
        m.log_text().contains("acting as the scheduler")
    });
    let mut serve = Serve::start(&t, "serve");
    wait_long("serve to idle", 30, || {
        serve.log().contains("this one idles")
    });
    assert!(serve.stop());
    drop(m);
    let m = t.mount(&["--no-schedule"], &[]);
    let mut serve = Serve::start(&t, "serve2");
    wait_long("serve to act", 30, || {
        serve.log().contains("acting as the scheduler")
    });
    assert!(!serve.log().contains("idles"), "{}", serve.log());
    assert!(!m.log_text().contains("scheduler"), "{}", m.log_text());
    assert!(serve.stop());
}

#[test]
fn policy_commands() {
    let t = TestRepo::new();
    t.ok(&["vault", "create", "w"]);
    let created: Value = serde_json::from_str(&t.ok(&[
        "policy",
        "create",
        "nightly",
        "--schedule",
        "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=2;BYMINUTE=30",
        "--schedule",
        "FREQ=WEEKLY;BYDAY=SA;BYHOUR=6",
        "--timezone",
        "Europe/Paris",
        "--keep-daily",
        "7",
        "--keep-last",
        "2",
        "--json",
    ]))
    .unwrap();
    assert_eq!(created["name"], "nightly");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["retention"]["keep_daily"], 7);
    assert_eq!(created["retention"]["timezone"], "Europe/Paris");
    assert_eq!(
        created["prune_schedule"],
        "FREQ=WEEKLY;BYDAY=SU;BYHOUR=3;BYMINUTE=0"
    );
    assert_eq!(created["next_runs"].as_array().unwrap().len(), 5);
    t.ok(&[
        "policy",
        "create",
        "hourly",
        "--schedule",
        "FREQ=HOURLY;INTERVAL=4",
        "--timezone",
        "UTC+08:00",
        "--disabled",
        "--prune-schedule",
        "FREQ=DAILY;BYHOUR=5",
    ]);
    let list: Value = serde_json::from_str(&t.ok(&["policy", "list", "--json"])).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hourly", "nightly"]);
    assert_eq!(list[0]["enabled"], false);
    assert_eq!(list[0]["next_runs"], serde_json::json!([]));
    let text = t.ok(&["policy", "list"]);
    assert!(text.contains("hourly  disabled"), "{text}");

    // show: the next run times, in order, every one a weekday at 02:30 or a Saturday
    // at 06:00 Paris time.
    let shown = t.ok(&["policy", "show", "nightly"]);
    assert!(shown.contains("next runs:"), "{shown}");
    assert!(
        shown.contains("retention:   --keep-last 2 --keep-daily 7"),
        "{shown}"
    );
    let j: Value = serde_json::from_str(&t.ok(&["policy", "show", "nightly", "--json"])).unwrap();
    let runs: Vec<chrono::DateTime<chrono_tz::Tz>> = j["next_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            chrono::DateTime::parse_from_rfc3339(r.as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono_tz::Europe::Paris)
        })
        .collect();
    assert!(runs.windows(2).all(|w| w[0] < w[1]));
    for r in &runs {
        use chrono::{Datelike, Timelike};
        let sat = r.weekday() == chrono::Weekday::Sat;
        assert!(
            (sat && (r.hour(), r.minute()) == (6, 0))
                || (r.weekday().num_days_from_monday() < 5 && (r.hour(), r.minute()) == (2, 30)),
            "{r}"
        );
    }

    // apply, remove; one policy per vault.
    t.ok(&["policy", "apply", "nightly", "v"]);
    t.ok(&["policy", "apply", "nightly", "w"]);
    let out = t.ok(&["policy", "apply", "hourly", "w"]);
    assert_eq!(
        out.trim(),
        "applied policy hourly to vault w (in place of nightly)"
    );
    let vault: Value = serde_json::from_str(&t.ok(&["vault", "show", "w", "--json"])).unwrap();
    assert_eq!(vault["policy"], "hourly");
    assert_eq!(
        vault["next_run"],
        Value::Null,
        "a disabled policy runs nothing"
    );
    let err = t.fails(&["policy", "delete", "nightly"]);
    assert!(
        err.contains("policy \"nightly\" is applied to vault(s) v: remove it first"),
        "{err}"
    );
    let err = t.fails(&["policy", "apply", "nope", "v"]);
    assert!(err.contains("policy \"nope\" does not exist"), "{err}");
    let err = t.fails(&["policy", "apply", "nightly", "nope"]);
    assert!(err.contains("vault \"nope\" does not exist"), "{err}");

    // update: rules replaced, retention flags merged, enable.
    let up: Value = serde_json::from_str(&t.ok(&[
        "policy",
        "update",
        "hourly",
        "--enable",
        "--schedule",
        "FREQ=DAILY;BYHOUR=1",
        "--keep-last",
        "3",
        "--timezone",
        "UTC-05:30",
        "--json",
    ]))
    .unwrap();
    assert_eq!(up["schedules"], serde_json::json!(["FREQ=DAILY;BYHOUR=1"]));
    assert_eq!(up["enabled"], true);
    assert_eq!(up["timezone"], "UTC-05:30");
    assert_eq!(up["retention"]["keep_last"], 3);
    // 01:00 at UTC-05:30 is 06:30 UTC.
    assert!(
        up["next_runs"][0]
            .as_str()
            .unwrap()
            .ends_with("T06:30:00.000Z"),
        "{up}"
    );
    let err = t.fails(&[
        "policy",
        "update",
        "hourly",
        "--schedule",
        "FREQ=DAILY;BYSECOND=5",
    ]);
    assert!(err.contains("BYSECOND is not supported"), "{err}");

    t.ok(&["policy", "remove", "v"]);
    assert_eq!(
        t.ok(&["policy", "remove", "v"]).trim(),
        "vault v has no policy"
    );
    t.ok(&["policy", "delete", "nightly"]);
    let err = t.fails(&["policy", "show", "nightly"]);
    assert!(err.contains("policy \"nightly\" does not exist"), "{err}");
    // The vault's own retention applies when its policy has no rule: forget with no
    // rules uses the policy's rules when it has some.
    t.ok(&["vault", "update", "w", "--keep-last", "5"]);
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"f").unwrap();
    let src = src.to_str().unwrap();
    for _ in 0..4 {
        t.ok(&["backup", "w", src]);
    }
    t.ok(&["forget", "w"]);
    let left: Value = serde_json::from_str(&t.ok(&["points", "w", "--json"])).unwrap();
    assert_eq!(
        left.as_array().unwrap().len(),
        3,
        "the policy's keep-last 3"
    );
    t.ok(&["policy", "update", "hourly", "--no-retention"]);
    t.ok(&["backup", "w", src]);
    t.ok(&["forget", "w"]);
    let left: Value = serde_json::from_str(&t.ok(&["points", "w", "--json"])).unwrap();
    assert_eq!(
        left.as_array().unwrap().len(),
        4,
        "the vault's keep-last 5 keeps all 4"
    );
}

#[test]
fn invalid_policies_are_refused_with_the_wrong_part() {
    let t = TestRepo::new();
    for (args, want) in [
        (
            vec!["--schedule", "FREQ=MONTHLY;BYHOUR=2"],
            "invalid schedule rule \"FREQ=MONTHLY;BYHOUR=2\": FREQ=MONTHLY is not supported: use WEEKLY, DAILY or HOURLY",
        ),
        (
            vec!["--schedule", "FREQ=DAILY;BYHOUR=25"],
            "BYHOUR=25: \"25\" is not a number from 0 to 23",
        ),
        (
            vec!["--schedule", "FREQ=WEEKLY;BYDAY=MO,FUNDAY"],
            "BYDAY=MO,FUNDAY: \"FUNDAY\" is not a day",
        ),
        (
            vec!["--schedule", "FREQ=DAILY;COUNT=5"],
            "COUNT is not supported (a rule may have FREQ, INTERVAL, BYDAY, BYHOUR and BYMINUTE)",
        ),
        (
            vec!["--schedule", "FREQ=DAILY", "--timezone", "Mars/Olympus"],
            "invalid time zone \"Mars/Olympus\"",
        ),
        (
            vec![
                "--schedule",
                "FREQ=DAILY",
                "--prune-schedule",
                "FREQ=YEARLY",
            ],
            "prune schedule: invalid schedule rule \"FREQ=YEARLY\"",
        ),
    ] {
        let mut full = vec!["policy", "create", "bad"];
        full.extend(args);
        let err = t.fails(&full);
        assert!(err.contains(want), "{full:?}: {err}");
    }
    let mut many = vec!["policy".to_string(), "create".into(), "bad".into()];
    for h in 0..25 {
        many.push("--schedule".into());
        many.push(format!("FREQ=DAILY;BYHOUR={}", h % 24));
    }
    let err = t.fails(&many);
    assert!(
        err.contains("25 rules given: a schedule has at most 24"),
        "{err}"
    );
    assert!(t.ok(&["policy", "list"]).contains("no policies"));
    let err = t.fails(&["policy", "create", ".hidden", "--schedule", "FREQ=DAILY"]);
    assert!(err.contains("invalid policy name"), "{err}");
}
