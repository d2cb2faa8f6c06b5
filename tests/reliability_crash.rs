//! Crash consistency: the `vaultfs` binary killed at every named failpoint of a commit
//! (`src/repo/failpoint.rs`) and at seeded random moments, on the local backend and on
//! S3 (RGW). After each crash: `check --read-data` passes, every visible point restores
//! byte for byte (so the interrupted one is complete or invisible), and the next run of
//! the same command succeeds with no manual step (the dead writer's lock is stale and
//! removed by the next writer).
//!
//! Seeded: `VAULTFS_SEED=N` replays a run's kill moments; `RELIABILITY=ext` runs 10x the
//! random kills. Each test prints its seed and a summary line.

mod common;
#[path = "family/mod.rs"]
mod family;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn seed() -> u64 {
    let s = std::env::var("VAULTFS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("seed {s} (VAULTFS_SEED={s} replays it)");
    s
}

fn ext() -> u64 {
    if std::env::var("RELIABILITY").is_ok_and(|v| v == "ext") {
        10
    } else {
        1
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A source directory `name` with `files` files of `size` bytes (seeds from `seed`).
fn source(t: &TestRepo, name: &str, files: &[(&str, u64)], size: usize) -> PathBuf {
    let d = t.path(name);
    fs::create_dir_all(&d).unwrap();
    for (f, s) in files {
        fs::write(d.join(f), random_bytes(*s, size)).unwrap();
    }
    d
}

fn diff(a: &Path, b: &Path) -> Result<(), String> {
    let out = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Checks `t` and restores every point of vault `v`, comparing each backup with its
/// source (`sources`: backup name → path). Returns the points.
fn verify(t: &TestRepo, sources: &BTreeMap<String, PathBuf>, what: &str) -> Vec<String> {
    let out = t.run(&["check", "--read-data"]);
    assert!(
        out.status.success(),
        "{what}: check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let points = t.point_ids();
    for (i, p) in points.iter().enumerate() {
        let target = t.path(&format!("restore-{}", unique()));
        t.ok(&[
            "restore".as_ref(),
            "v".as_ref(),
            p.as_ref(),
            target.as_os_str(),
        ]);
        let mut n = 0;
        for e in fs::read_dir(&target).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let src = sources
                .get(&name)
                .unwrap_or_else(|| panic!("{what}: point {i} {p} holds an unknown backup {name}"));
            if let Err(d) = diff(src, &e.path()) {
                panic!("{what}: point {p}, backup {name} differs from its source:\n{d}");
            }
            n += 1;
        }
        assert!(n > 0, "{what}: point {p} restored nothing");
        fs::remove_dir_all(&target).unwrap();
    }
    points
}

/// Like [`verify`], with a plain `check` and restoring only the points not in `seen`.
fn verify_new(
    t: &TestRepo,
    sources: &BTreeMap<String, PathBuf>,
    seen: &[String],
    what: &str,
) -> Vec<String> {
    t.ok(&["check"]);
    let points = t.point_ids();
    for p in points.iter().filter(|p| !seen.contains(p)) {
        let target = t.path(&format!("restore-{}", unique()));
        t.ok(&[
            "restore".as_ref(),
            "v".as_ref(),
            p.as_ref(),
            target.as_os_str(),
        ]);
        for e in fs::read_dir(&target).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let src = sources
                .get(&name)
                .unwrap_or_else(|| panic!("{what}: point {p} holds an unknown backup {name}"));
            if let Err(d) = diff(src, &e.path()) {
                panic!("{what}: point {p}, backup {name} differs from its source:\n{d}");
            }
        }
        fs::remove_dir_all(&target).unwrap();
    }
    points
}

fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    Backup,
    Update,
    Forget,
    Prune,
    Copy,
    Ingest,
}

/// Every failpoint with the commands that reach it.
const CASES: &[(&str, Scenario)] = &[
    ("lock.create", Scenario::Backup),
    ("pack.write", Scenario::Backup),
    ("pack.written", Scenario::Backup),
    ("index.written", Scenario::Backup),
    ("manifest.write", Scenario::Backup),
    ("manifest.written", Scenario::Backup),
    ("lock.release", Scenario::Backup),
    ("attrs.write", Scenario::Update),
    ("attrs.written", Scenario::Update),
    ("lock.create", Scenario::Forget),
    ("attrs.written", Scenario::Forget),
    ("delete.manifest", Scenario::Forget),
    ("delete.updates", Scenario::Forget),
    ("prune.repack.pack_written", Scenario::Prune),
    ("prune.repack.index_written", Scenario::Prune),
    ("prune.forward_written", Scenario::Prune),
    ("prune.forwards_deleted", Scenario::Prune),
    ("prune.indexes_deleted", Scenario::Prune),
    ("prune.packs_deleted", Scenario::Prune),
    ("lock.release", Scenario::Prune),
    ("pack.written", Scenario::Copy),
    ("copy.commit", Scenario::Copy),
    ("copy.committed", Scenario::Copy),
    ("ingest.close", Scenario::Ingest),
    ("pack.written", Scenario::Ingest),
    ("manifest.write", Scenario::Ingest),
    ("manifest.written", Scenario::Ingest),
];

/// Two committed points: `src-0` (files a, b) and `src-1` (a, c): forgetting the first
/// leaves its pack half used, so prune repacks and writes forwards.
fn two_points(target: Target) -> (TestRepo, BTreeMap<String, PathBuf>) {
    let t = TestRepo::create(target, 4);
    let mut sources = BTreeMap::new();
    let s0 = source(&t, "src-0", &[("a", 1), ("b", 2)], 300_000);
    let s1 = source(&t, "src-1", &[("a", 1), ("c", 3)], 300_000);
    t.backup(&[&s0]);
    t.backup(&[&s1]);
    sources.insert("src-0".into(), s0);
    sources.insert("src-1".into(), s1);
    (t, sources)
}

/// The command of a scenario, against `t` (and for copy, from `from`).
fn command(s: Scenario, t: &TestRepo, from: Option<&TestRepo>, srcdir: &Path) -> Command {
    let mut c = t.cmd();
    match s {
        Scenario::Backup => {
            c.arg("backup").arg("v").arg(srcdir);
        }
        Scenario::Update => {
            let p = t.point_ids()[0].clone();
            c.args(["point", "update", "v", &p, "--tag", "kept"]);
        }
        Scenario::Forget => {
            c.args(["forget", "v", "--keep-last", "1"]);
        }
        Scenario::Prune => {
            c.args(["prune", "--max-unused", "0"]);
        }
        Scenario::Copy => {
            let from = from.expect("copy source");
            c.env("VAULTFS_FROM_PASSWORD", PASSWORD)
                .arg("copy")
                .arg("--from")
                .arg(from.location())
                .arg("v");
        }
        Scenario::Ingest => unreachable!("through a mount"),
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// One crash case: `failpoint:action` in `scenario` on `target`. Returns a summary.
fn crash_case(target: &Target, fp: &str, action: &str, scenario: Scenario) {
    let what = format!("{fp}:{action} in {scenario:?} on {target:?}");
    let (src_repo, mut sources) = two_points(target.clone());
    let spec = format!("{fp}:{action}");
    // The repository the command writes to, and what it holds before.
    let (t, from) = match scenario {
        Scenario::Copy => {
            let dst_target = match target {
                Target::Local => Target::Local,
                Target::S3 { .. } => TestRepo::s3_target(&unique_bucket("crash-copy")),
            };
            let dst = TestRepo::create(dst_target, 4);
            (dst, Some(src_repo))
        }
        _ => (src_repo, None),
    };
    if scenario == Scenario::Prune {
        t.ok(&["forget", "v", "--keep-last", "1"]);
    }
    let new_src = match scenario {
        Scenario::Backup => Some(source(
            &t,
            "src-2",
            &[("a", 1), ("d", 4), ("e", 5)],
            2_000_000,
        )),
        _ => None,
    };
    if let Some(s) = &new_src {
        sources.insert("src-2".into(), s.clone());
    }
    let (status, stderr) = if scenario == Scenario::Ingest {
        ingest_crash(&t, &spec, &mut sources)
    } else {
        let srcdir = new_src.clone().unwrap_or_default();
        let out = command(scenario, &t, from.as_ref(), &srcdir)
            .env("VAULTFS_FAILPOINTS", &spec)
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mark = format!("failpoint {fp}");
    if action == "abort" {
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "{what}: the failpoint was not reached ({status}):\n{stderr}"
        );
    } else {
        assert_eq!(status.signal(), None, "{what}: {status}\n{stderr}");
        // `lock.release:error` only warns: the command did its work.
        assert!(
            !status.success() || fp == "lock.release",
            "{what}: the injected error did not fail the command:\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&mark) || scenario == Scenario::Ingest || fp == "lock.release",
        "{what}: {stderr}"
    );
    let before = verify(&t, &sources, &format!("{what}, after the crash"));
    // The next run of the same command, with no manual step.
    if scenario == Scenario::Ingest {
        let m = t.mount(&[], &[]);
        fs::write(
            m.p(".vaultfs/incoming/v/next.img"),
            random_bytes(77, 500_000),
        )
        .unwrap();
        drop(m);
        let f = t.path("next.img");
        fs::write(&f, random_bytes(77, 500_000)).unwrap();
        sources.insert("next.img".into(), f);
    } else {
        let srcdir = new_src.unwrap_or_default();
        let out = command(scenario, &t, from.as_ref(), &srcdir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: the next run failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after = verify_new(
        &t,
        &sources,
        &before,
        &format!("{what}, after the next run"),
    );
    match scenario {
        Scenario::Backup | Scenario::Ingest => assert!(after.len() > before.len(), "{what}"),
        Scenario::Copy => assert_eq!(after.len(), 2, "{what}: {after:?}"),
        Scenario::Forget | Scenario::Prune => assert_eq!(after.len(), 1, "{what}: {after:?}"),
        Scenario::Update => {
            let pts = t.points();
            assert!(pts.to_string().contains("kept"), "{what}: {pts}");
        }
    }
    let locks = t.object_keys("locks");
    assert!(
        locks.is_empty(),
        "{what}: locks left after the next run: {locks:?}"
    );
}

/// Writes an image into `.vaultfs/incoming/v/` of a mount that has `spec` set; the
/// daemon dies (or fails the close). Returns the daemon's status.
fn ingest_crash(
    t: &TestRepo,
    spec: &str,
    sources: &mut BTreeMap<String, PathBuf>,
) -> (std::process::ExitStatus, String) {
    let mut m = t.mount(&[], &[("VAULTFS_FAILPOINTS", spec)]);
    let data = random_bytes(55, 1_500_000);
    let _ = fs::write(m.p(".vaultfs/incoming/v/crash.img"), &data);
    let f = t.path("crash.img");
    fs::write(&f, &data).unwrap();
    sources.insert("crash.img".into(), f);
    let status = if spec.ends_with(":abort") {
        m.wait_exit(Duration::from_secs(60))
    } else {
        let _ = Command::new("fusermount3").arg("-u").arg(&m.dir).status();
        m.wait_exit(Duration::from_secs(60))
    };
    let log = m.log_text();
    drop(m);
    (status, log)
}

fn run_every_failpoint(target: Target, actions: &[&str]) {
    // Every failpoint is reached by some case.
    for (name, _) in vaultfs::repo::failpoint::NAMES {
        assert!(
            CASES.iter().any(|(n, _)| n == name),
            "failpoint {name} has no crash case"
        );
    }
    let fuse = fuse_available();
    let started = Instant::now();
    let mut n = 0;
    let seed = seed();
    let mut rng = Rng(seed);
    for action in actions {
        for (fp, scenario) in CASES {
            if *scenario == Scenario::Ingest && (!fuse || *action == "error") {
                continue;
            }
            // Injected errors: a seeded quarter of the cases in CI, all of them in ext.
            if *action == "error" && ext() == 1 && !rng.next().is_multiple_of(4) {
                continue;
            }
            crash_case(&target, fp, action, *scenario);
            n += 1;
        }
    }
    let on = if matches!(target, Target::Local) {
        "local"
    } else {
        "s3"
    };
    eprintln!(
        "crash-consistency failpoints on {on}: {n} cases, {n} crashes or injected errors, 0 failures, {:.0?}",
        started.elapsed()
    );
    family::report(
        &format!("crash failpoints ({on})"),
        seed,
        n,
        n,
        0,
        started.elapsed().as_secs_f64(),
    );
}

#[test]
fn a_crash_at_every_failpoint_leaves_a_checked_repository_local() {
    run_every_failpoint(Target::Local, &["abort", "error"]);
}

#[test]
fn a_crash_at_every_failpoint_leaves_a_checked_repository_s3() {
    let Some(_) = s3_endpoint() else { return };
    run_every_failpoint(TestRepo::s3_target(&unique_bucket("crash-fp")), &["abort"]);
}

/// Kills `c` after `delay` unless it ends first; returns whether the kill landed.
fn kill_after(mut c: Command, delay: Duration) -> bool {
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < delay {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "the run failed before its kill: {st}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    true
}

fn time_of(mut c: Command) -> Duration {
    let start = Instant::now();
    let st = c.stdout(Stdio::null()).status().unwrap();
    assert!(st.success());
    start.elapsed()
}

/// `rounds` random kills of backup, then of prune, on `target`: check after every kill,
/// and every fourth round a run to its end that must succeed.
fn random_kills(target: Target, backups: u64, prunes: u64, ingests: u64) {
    let seed = seed();
    let mut rng = Rng(seed);
    let started = Instant::now();
    let t = TestRepo::create(target, 4);
    let mut sources = BTreeMap::new();
    let src = t.path("data");
    let mut kills = 0;
    let mut round = 0u64;
    let write_round = |r: u64| {
        fs::create_dir_all(&src).unwrap();
        fs::write(
            src.join(format!("f{}", r % 6)),
            random_bytes(1000 + r, 700_000),
        )
        .unwrap();
    };
    write_round(0);
    let backup_cmd = || {
        let mut c = t.cmd();
        c.arg("backup").arg("v").arg(&src);
        c
    };
    let span = time_of(backup_cmd());
    // The point just made restores to a snapshot of the source.
    let snap = |t: &TestRepo| -> PathBuf {
        let d = t.path(&format!("snap-{}", unique()));
        fs::create_dir_all(&d).unwrap();
        sh(&format!("cp -a {} {}", src.display(), d.display()));
        d.join("data")
    };
    let _ = &mut sources;
    while kills < backups {
        round += 1;
        assert!(
            round < backups * 4,
            "only {kills} backup kills landed in {round} rounds"
        );
        write_round(round);
        let delay = Duration::from_micros(rng.next() % (span.as_micros() as u64 * 5 / 4).max(1));
        if kill_after(backup_cmd(), delay) {
            kills += 1;
        }
        t.ok(&["check"]);
        if round.is_multiple_of(4) {
            // The next run succeeds and its point restores byte for byte.
            t.ok(&[OsStr::new("backup"), OsStr::new("v"), src.as_os_str()]);
            let want = snap(&t);
            let out = t.path(&format!("out-{round}"));
            t.ok(&[
                OsStr::new("restore"),
                OsStr::new("v"),
                OsStr::new("latest"),
                out.as_os_str(),
            ]);
            diff(&want, &out.join("data")).unwrap();
            fs::remove_dir_all(&out).unwrap();
        }
    }
    t.ok(&["check", "--read-data"]);
    let backup_kills = kills;

    // Prune: a point forgotten before each, so every prune has work.
    let prune_cmd = || {
        let mut c = t.cmd();
        c.args(["prune", "--max-unused", "0", "--lock-wait", "1m"]);
        c
    };
    let mut span = time_of(prune_cmd());
    let mut pk = 0;
    let mut pr = 0;
    while pk < prunes {
        pr += 1;
        assert!(
            pr < prunes * 4,
            "only {pk} prune kills landed in {pr} rounds"
        );
        write_round(round + pr);
        t.ok(&[OsStr::new("backup"), OsStr::new("v"), src.as_os_str()]);
        t.ok(&["forget", "v", "--keep-last", "2"]);
        let delay = Duration::from_micros(rng.next() % (span.as_micros() as u64 * 5 / 4).max(1));
        if kill_after(prune_cmd(), delay) {
            pk += 1;
        }
        t.ok(&["check"]);
        if pr % 4 == 0 {
            span = time_of(prune_cmd());
        }
    }
    // One point of `data` left, the one of the tree as it is now.
    t.ok(&["forget", "v", "--keep-last", "1"]);
    t.ok(&["prune", "--max-unused", "0"]);
    let want = snap(&t);
    sources.insert("data".to_string(), want);
    verify(&t, &sources, "after the prune kills");

    // Ingest through a mount: the daemon killed while it stores a file.
    let mut ik = 0;
    if ingests > 0 && fuse_available() {
        for i in 0..ingests {
            let m = t.mount(&[], &[]);
            let pid = m.pid();
            let data = random_bytes(5000 + i, 3_000_000);
            let path = m.p(&format!(".vaultfs/incoming/v/i{i}.img"));
            let delay = Duration::from_micros(rng.next() % 400_000);
            let writer = std::thread::spawn(move || {
                let _ = fs::write(path, data);
            });
            std::thread::sleep(delay);
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            let mut m = m;
            let _ = m.wait_exit(Duration::from_secs(30));
            drop(m);
            writer.join().unwrap();
            ik += 1;
            t.ok(&["check"]);
            // What an ingest committed is complete.
            let f = t.path(&format!("i{i}.img"));
            fs::write(&f, random_bytes(5000 + i, 3_000_000)).unwrap();
            sources.insert(format!("i{i}.img"), f);
        }
        let m = t.mount(&[], &[]);
        fs::write(m.p(".vaultfs/incoming/v/last.img"), b"the next ingest").unwrap();
        drop(m);
        let f = t.path("last.img");
        fs::write(&f, b"the next ingest").unwrap();
        sources.insert("last.img".into(), f);
        verify(&t, &sources, "after the ingest kills");
    }
    let on = if t.is_s3() { "s3" } else { "local" };
    eprintln!(
        "crash-consistency random kills on {on}: {backup_kills} backups, {pk} prunes, {ik} ingests killed ({} kills), 0 repositories failing check, {:.0?}",
        backup_kills + pk + ik,
        started.elapsed()
    );
    family::report(
        &format!("crash random kill -9 ({on})"),
        seed,
        round + pk + ik,
        backup_kills + pk + ik,
        0,
        started.elapsed().as_secs_f64(),
    );
}

#[test]
fn random_kill_9_of_backup_prune_and_ingest_local() {
    let x = ext();
    random_kills(Target::Local, 130 * x, 60 * x, 10 * x);
}

#[test]
fn random_kill_9_of_backup_and_prune_s3() {
    let Some(_) = s3_endpoint() else { return };
    let x = ext();
    random_kills(
        TestRepo::s3_target(&unique_bucket("crash-kill")),
        25 * x,
        15 * x,
        0,
    );
}
