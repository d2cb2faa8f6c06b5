//! Prune end to end, through the real binary: space really comes back, every kept point
//! stays readable (restore, cat, a mount started before the prune), a prune beside a
//! running backup waits for it, and kill -9 at random moments never breaks a point.
//!
//! Points are deleted through the library (`Repository::delete_point`): what `forget`
//! does once it has chosen them.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vaultfs::repo::Repository;
use vaultfs::repo::prune::{PruneOptions, prune};

/// Files in the test tree, and their size: 100 × 100 KB = 10 MB.
const FILES: u64 = 100;
const FILE_LEN: usize = 100_000;

/// A repository with small packs (1 MiB) and chunks (64 KiB average), so that a few MB
/// make dozens of packs, and a cheap password derivation.
pub fn small_repo(target: Target) -> TestRepo {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    let t = TestRepo { dir, repo, target };
    t.ok(&[
        "init",
        "--pack-size-mib",
        "1",
        "--chunk-avg-kib",
        "64",
        "--kdf-memory-mib",
        "8",
    ]);
    t.ok(&["vault", "create", "v"]);
    t
}

/// The source tree `src`: FILES files; round `r` rewrites 2% of them (`r` = 0 writes all).
fn write_round(src: &Path, r: u64) {
    write_round_of(src, r, FILES)
}

/// Like [`write_round`] with `files` files (at least 2% of them, and 2, change a round).
fn write_round_of(src: &Path, r: u64, files: u64) {
    fs::create_dir_all(src).unwrap();
    let changed = (files / 50).max(2);
    for i in 0..files {
        if r == 0 || (i * 7 + r * changed) % files < changed {
            fs::write(
                src.join(format!("f{i:03}")),
                random_bytes(r * 1000 + i + 1, FILE_LEN),
            )
            .unwrap();
        }
    }
}

fn backup(t: &TestRepo, src: &Path) -> String {
    let out = t.ok(&[
        "backup".as_ref(),
        "v".as_ref(),
        src.as_os_str(),
        "--json".as_ref(),
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    j["id"].as_str().expect("point id").to_string()
}

fn open(t: &TestRepo) -> Arc<Repository> {
    Repository::open(t.store(), PASSWORD.as_bytes()).expect("open")
}

/// Bytes of pack objects.
fn pack_bytes(t: &TestRepo) -> u64 {
    t.store()
        .list("packs/")
        .unwrap()
        .iter()
        .map(|o| o.size)
        .sum()
}

fn prune_json(t: &TestRepo, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["prune", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&t.ok(&args)).expect("prune json")
}

/// Restores `point` and compares it with the tree it was taken of.
fn assert_restores(t: &TestRepo, point: &str, expected: &Path) {
    let out = t.path(&format!("restore-{point}-{}", rand_suffix()));
    t.ok(&[
        "restore".as_ref(),
        "v".as_ref(),
        point.as_ref(),
        out.as_os_str(),
    ]);
    let diff = rsync_diff(expected, &out.join("src"));
    assert_eq!(diff, "", "point {point} restores differently:\n{diff}");
    fs::remove_dir_all(&out).unwrap();
}

fn rand_suffix() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// `check --read-data` must pass; returns its notes.
fn check(t: &TestRepo) -> Vec<String> {
    let out = t.run(&["check", "--read-data", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        out.status.success() && j["ok"] == true,
        "check failed: {j}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    j["notes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Copies the source tree as it is now (what a point taken now must restore to).
fn snapshot(t: &TestRepo, src: &Path, name: &str) -> PathBuf {
    let dst = t.path(name).join("src");
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    sh(&format!("cp -a {} {}", src.display(), dst.display()));
    dst
}

/// A fresh repository holding the given trees as consecutive points: its pack bytes.
fn fresh_size(trees: &[PathBuf]) -> u64 {
    let fresh = small_repo(Target::Local);
    for tree in trees {
        backup(&fresh, tree);
    }
    pack_bytes(&fresh)
}

#[test]
fn forget_and_prune_shrink_to_a_fresh_repository_of_the_kept_points() {
    let t = small_repo(Target::Local);
    let src = t.path("src");
    let mut points = Vec::new();
    let mut states = Vec::new();
    for r in 0..10 {
        write_round(&src, r);
        points.push(backup(&t, &src));
        states.push(snapshot(&t, &src, &format!("state-{r}")));
    }
    let before = pack_bytes(&t);
    let repo = open(&t);
    for p in &points[..7] {
        repo.delete_point("v", p).unwrap();
    }
    let dry = prune_json(&t, &["--dry-run"]);
    assert_eq!(pack_bytes(&t), before, "a dry run changed packs");
    assert!(dry["packs_repacked"].as_u64().unwrap() + dry["packs_deleted"].as_u64().unwrap() > 0);
    let rep = prune_json(&t, &[]);
    assert_eq!(rep["points"], 3);
    assert_eq!(rep["bytes_before"].as_u64().unwrap(), before);
    let after = pack_bytes(&t);
    assert_eq!(rep["bytes_after"].as_u64().unwrap(), after);
    let fresh = fresh_size(&states[7..]);
    eprintln!("before {before}, after {after}, fresh {fresh}, report {rep}");
    assert!(after < before, "nothing was freed");
    // Every kept pack has at most 10% unused bytes.
    assert!(
        after as f64 <= fresh as f64 * 1.10,
        "after prune {after} bytes, a fresh repository of the kept points {fresh}"
    );
    // With --max-unused 0 everything unused goes.
    prune_json(&t, &["--max-unused", "0"]);
    let tight = pack_bytes(&t);
    eprintln!("after --max-unused 0: {tight}");
    assert!(
        tight as f64 <= fresh as f64 * 1.03,
        "after prune --max-unused 0 {tight} bytes, fresh {fresh}"
    );
    // Prune deletes no point.
    assert_eq!(t.points().as_array().unwrap().len(), 3);
    for (p, s) in points[7..].iter().zip(&states[7..]) {
        assert_restores(&t, p, s);
    }
    check(&t);
    // Nothing left to do.
    let again = prune_json(&t, &["--max-unused", "0"]);
    assert_eq!(again["packs_deleted"], 0, "{again}");
    assert_eq!(again["packs_repacked"], 0, "{again}");
}

#[test]
fn repacked_chunks_are_read_through_forwards_and_chains_then_forwards_go() {
    let t = small_repo(Target::Local);
    let src = t.path("src");
    let mut points = Vec::new();
    let mut states = Vec::new();
    for r in 0..6 {
        write_round(&src, r);
        points.push(backup(&t, &src));
        states.push(snapshot(&t, &src, &format!("state-{r}")));
    }
    let repo = open(&t);
    let forwards = || t.object_keys("forward");

    // The first point goes: its packs are repacked, the others keep naming them.
    repo.delete_point("v", &points[0]).unwrap();
    let rep = prune_json(&t, &["--max-unused", "0"]);
    assert!(rep["packs_repacked"].as_u64().unwrap() > 0, "{rep}");
    assert!(rep["forwards_written"].as_u64().unwrap() > 0, "{rep}");
    assert!(!forwards().is_empty());
    // Point 1 references chunks by their old locations: cat and restore follow forwards.
    let cat = t.run(&["cat", "v", &points[1], "src/f050"]);
    assert!(cat.status.success());
    assert_eq!(cat.stdout, fs::read(states[1].join("f050")).unwrap());
    for (p, s) in points[1..].iter().zip(&states[1..]) {
        assert_restores(&t, p, s);
    }
    check(&t);

    // More go: packs written by the first prune are repacked again, and the forwards of
    // the first prune are rewritten to the chunks' new homes.
    for p in &points[1..4] {
        repo.delete_point("v", p).unwrap();
    }
    let rep = prune_json(&t, &["--max-unused", "0"]);
    assert!(rep["packs_repacked"].as_u64().unwrap() > 0, "{rep}");
    for (p, s) in points[4..].iter().zip(&states[4..]) {
        assert_restores(&t, p, s);
    }
    check(&t);

    // A new point read afresh deduplicates against the current index, so it names current
    // packs only; once the older points go, no forward is needed any more. (A point that
    // reuses its parent's extents for unchanged files names the parent's locations, old
    // packs included: their forwards stay as long as such points do.)
    write_round(&src, 6);
    let out = t.ok(&[
        "backup".as_ref(),
        "v".as_ref(),
        src.as_os_str(),
        "--json".as_ref(),
        "--no-parent".as_ref(),
    ]);
    let newest = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let newest_state = snapshot(&t, &src, "state-6");
    for p in &points[4..] {
        repo.delete_point("v", p).unwrap();
    }
    let old_forwards = forwards();
    let rep = prune_json(&t, &["--max-unused", "0"]);
    assert!(rep["forwards_removed"].as_u64().unwrap() > 0, "{rep}");
    // What is left are the forwards this prune wrote for the packs it repacked under the
    // newest point; none of the older ones.
    let left = forwards();
    assert!(left.iter().all(|f| !old_forwards.contains(f)), "{left:?}");
    assert_eq!(left.len() as u64, rep["forwards_written"].as_u64().unwrap());
    assert_restores(&t, &newest, &newest_state);
    check(&t);
}

#[test]
fn a_mount_started_before_prune_reads_every_kept_file_after_it() {
    if !fuse_available() {
        return;
    }
    let t = small_repo(Target::Local);
    let src = t.path("src");
    let mut points = Vec::new();
    let mut states = Vec::new();
    for r in 0..5 {
        write_round(&src, r);
        points.push(backup(&t, &src));
        states.push(snapshot(&t, &src, &format!("state-{r}")));
    }
    // A small cache, so that reads after the prune go to the store.
    let m = t.mount(&["--cache-size", "8M", "--readahead", "0"], &[]);
    let file = |p: &str, i: u64| m.p(&format!("v/{p}/src/f{i:03}"));
    // Read some files before, so the mount holds trees and chunks of old locations.
    for (p, s) in points.iter().zip(&states) {
        assert_eq!(sha256(&file(p, 0)), sha256(&s.join("f000")));
    }
    let repo = open(&t);
    for p in &points[..3] {
        repo.delete_point("v", p).unwrap();
    }
    let rep = prune_json(&t, &["--max-unused", "0"]);
    assert!(rep["packs_repacked"].as_u64().unwrap() > 0, "{rep}");
    for (p, s) in points[3..].iter().zip(&states[3..]) {
        for i in 0..FILES {
            assert_eq!(
                sha256(&file(p, i)),
                sha256(&s.join(format!("f{i:03}"))),
                "{p}/src/f{i:03} after prune"
            );
        }
    }
    let diff = rsync_diff(&states[4], &m.p(&format!("v/{}/src", points[4])));
    assert_eq!(diff, "", "mount differs after prune:\n{diff}");
    drop(m);
    check(&t);
}

#[test]
fn prune_waits_for_a_running_backup_and_both_end_well() {
    let t = small_repo(Target::Local);
    let src = t.path("src");
    let mut points = Vec::new();
    for r in 0..3 {
        write_round(&src, r);
        points.push(backup(&t, &src));
    }
    open(&t).delete_point("v", &points[0]).unwrap();
    // A backup of new data, slowed: every pack upload takes 400 ms.
    let big = t.path("big/src");
    fs::create_dir_all(&big).unwrap();
    for i in 0..8 {
        fs::write(big.join(format!("g{i}")), random_bytes(777 + i, 1 << 20)).unwrap();
    }
    let mut slow = t.cmd();
    slow.env("VAULTFS_FAULTS", "put:packs/:delay=400")
        .args(["backup", "v", "--json"])
        .arg(&big)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = slow.spawn().unwrap();
    wait_for("the backup's lock", || !t.object_keys("locks").is_empty());
    let started = Instant::now();
    let prune_out = t.run(&["prune", "--json", "--max-unused", "0", "--lock-wait", "10m"]);
    let waited = started.elapsed();
    let backup_out = child.wait_with_output().unwrap();
    assert!(
        backup_out.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&backup_out.stderr)
    );
    assert!(
        prune_out.status.success(),
        "prune failed: {}",
        String::from_utf8_lossy(&prune_out.stderr)
    );
    let rep: serde_json::Value = serde_json::from_slice(&prune_out.stdout).unwrap();
    // The prune saw the new point: it ran after the backup's commit, not beside it.
    assert_eq!(rep["points"], 3, "{rep}");
    eprintln!("prune waited {waited:?}: {rep}");
    let j: serde_json::Value = serde_json::from_slice(&backup_out.stdout).unwrap();
    let name = j["id"].as_str().unwrap();
    assert_restores(&t, name, &big);
    check(&t);
    // With --lock-wait 0, a prune beside a writer fails at once, naming it.
    let repo = open(&t);
    let _held = vaultfs::repo::lock::acquire(&repo, "backup v").unwrap();
    let err = t.fails(&["prune", "--lock-wait", "0"]);
    assert!(err.contains("locked by `backup v`"), "{err}");
}

/// Files of the kill test's tree (smaller: every round checks and restores).
const KILL_FILES: u64 = 40;

/// xorshift, for the kill moments.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn kill_9_of_prune_at_random_moments_never_loses_a_kept_point() {
    let seed = std::env::var("VAULTFS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill -9 moments from seed {seed} (VAULTFS_TEST_SEED={seed} repeats them)");
    let mut rng = Rng(seed);
    let t = small_repo(Target::Local);
    let src = t.path("src");
    let repo = open(&t);
    // (point, the tree it restores to)
    let mut kept: Vec<(String, PathBuf)> = Vec::new();
    for r in 0..4 {
        write_round_of(&src, r, KILL_FILES);
        kept.push((backup(&t, &src), snapshot(&t, &src, &format!("state-{r}"))));
    }
    // Slow every store call a little, so that a kill lands anywhere in the prune.
    let faults =
        "write:packs/:delay=40;write:forward/:delay=30;delete::delay=25;get:packs/:delay=15";
    // Kill moments are uniform over the duration of the last prune that ran to its end
    // (work left by a killed one adds to the next, which only lengthens it); the first
    // span is measured on one round's work.
    let (p, dir) = kept.remove(0);
    repo.delete_point("v", &p).unwrap();
    fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    let started = Instant::now();
    let st = t
        .cmd()
        .env("VAULTFS_FAULTS", faults)
        .args(["prune", "--max-unused", "0"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let mut span = started.elapsed();
    // Every other prune runs to its end, so that kills also land in the late steps of a
    // prune that has one round's work, not only in the marking of a growing backlog.
    let mut kills = 0;
    let mut round = 0u64;
    while kills < 20 {
        assert!(
            round < 80,
            "only {kills} kills landed inside a prune in {round} rounds"
        );
        let to_the_end = round % 2 == 1;
        write_round_of(&src, 4 + round, KILL_FILES);
        kept.push((
            backup(&t, &src),
            snapshot(&t, &src, &format!("state-{}", 4 + round)),
        ));
        while kept.len() > 3 {
            let (p, dir) = kept.remove(0);
            repo.delete_point("v", &p).unwrap();
            fs::remove_dir_all(dir.parent().unwrap()).unwrap();
        }
        let delay = Duration::from_millis(rng.next() % span.as_millis().max(1) as u64);
        let started = Instant::now();
        let mut child = t
            .cmd()
            .env("VAULTFS_FAULTS", faults)
            .args(["prune", "--max-unused", "0", "--lock-wait", "1m"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut exited = None;
        while to_the_end || started.elapsed() < delay {
            if let Some(st) = child.try_wait().unwrap() {
                exited = Some(st);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        match exited {
            Some(st) => {
                assert!(st.success(), "round {round}: prune failed");
                span = started.elapsed();
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
        let notes = check(&t);
        let count = |what: &str| notes.iter().filter(|n| n.contains(what)).count();
        eprintln!(
            "round {round}: {}; then {} unindexed packs, {} forwards beside their pack",
            match exited {
                Some(_) if to_the_end => "ran to its end".to_string(),
                Some(_) => format!("had ended before the kill at {delay:?}"),
                None => format!("killed after {delay:?} of {span:?}"),
            },
            count("not indexed"),
            count("beside its forward")
        );
        if !to_the_end {
            for (p, s) in &kept {
                assert_restores(&t, p, s);
            }
        }
        round += 1;
    }
    // The final prune finishes the work: the size of a fresh repository of the kept points.
    prune_json(&t, &["--max-unused", "0"]);
    check(&t);
    for (p, s) in &kept {
        assert_restores(&t, p, s);
    }
    let trees: Vec<PathBuf> = kept.iter().map(|(_, s)| s.clone()).collect();
    let (after, fresh) = (pack_bytes(&t), fresh_size(&trees));
    eprintln!("after the final prune {after} bytes, fresh {fresh}");
    assert!(
        after as f64 <= fresh as f64 * 1.03,
        "after {after}, fresh {fresh}"
    );
}

#[test]
fn prune_through_the_library_reports_and_deletes_in_batches() {
    let t = small_repo(Target::Local);
    let src = t.path("src");
    let mut points = Vec::new();
    for r in 0..4 {
        write_round(&src, r);
        points.push(backup(&t, &src));
    }
    let counting = Arc::new(vaultfs::backend::counting::CountingStore::new(t.store()));
    let counts = counting.counts();
    let repo = Repository::open(counting, PASSWORD.as_bytes()).unwrap();
    for p in &points[..3] {
        repo.delete_point("v", p).unwrap();
    }
    let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let deletes_before = l(&counts.delete);
    let rep = prune(
        &repo,
        &PruneOptions {
            max_unused_percent: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert!(rep.packs_repacked + rep.packs_deleted > 0, "{rep:?}");
    // Index objects and packs go in batches, not one call each (the lock's delete is one).
    assert!(l(&counts.delete_many) >= 2, "{:?}", counts.json());
    assert!(
        l(&counts.delete_many_keys) >= 2 * (rep.packs_repacked + rep.packs_deleted) as u64,
        "{:?}",
        counts.json()
    );
    assert_eq!(
        l(&counts.delete) - deletes_before,
        1,
        "only the lock: {:?}",
        counts.json()
    );
    // Prune never deletes a point.
    assert_eq!(repo.list_points("v").unwrap(), vec![points[3].clone()]);
    // A failed listing fails the prune; it never means "nothing there".
    let faulty = Arc::new(vaultfs::backend::faulty::FaultyStore::new(t.store()));
    faulty.add_rule(vaultfs::backend::faulty::Rule::new(
        vaultfs::backend::faulty::Op::List,
        "index/",
        vaultfs::backend::faulty::Fault::Error { transient: false },
    ));
    let repo = Repository::open(faulty, PASSWORD.as_bytes()).unwrap();
    let size = pack_bytes(&t);
    let err = prune(&repo, &PruneOptions::default()).unwrap_err();
    assert!(err.to_string().contains("index/"), "{err}");
    assert_eq!(pack_bytes(&t), size);
}

#[test]
fn s3_forget_prune_restore_and_check_with_batched_deletes() {
    if s3_endpoint().is_none() {
        return;
    }
    let t = small_repo(TestRepo::s3_target(&unique_bucket("prune")));
    let src = t.path("src");
    let mut points = Vec::new();
    let mut states = Vec::new();
    for r in 0..6 {
        write_round(&src, r);
        points.push(backup(&t, &src));
        states.push(snapshot(&t, &src, &format!("state-{r}")));
    }
    let before = pack_bytes(&t);
    let counting = Arc::new(vaultfs::backend::counting::CountingStore::new(t.store()));
    let counts = counting.counts();
    let repo = Repository::open(counting, PASSWORD.as_bytes()).unwrap();
    for p in &points[..4] {
        repo.delete_point("v", p).unwrap();
    }
    let deletes_before = counts.delete.load(std::sync::atomic::Ordering::Relaxed);
    let rep = prune(
        &repo,
        &PruneOptions {
            max_unused_percent: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(rep.errors.is_empty(), "{rep:?}");
    assert!(rep.packs_repacked + rep.packs_deleted > 0, "{rep:?}");
    let l = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    // Packs, index objects and forwards went by DeleteObjects; one plain delete: the lock.
    assert!(l(&counts.delete_many) >= 2, "{:?}", counts.json());
    assert!(
        l(&counts.delete_many_keys) >= 2 * (rep.packs_repacked + rep.packs_deleted) as u64,
        "{:?}",
        counts.json()
    );
    assert_eq!(l(&counts.delete) - deletes_before, 1, "{:?}", counts.json());
    let after = pack_bytes(&t);
    assert_eq!(rep.bytes_after, after);
    let fresh = fresh_size(&states[4..]);
    eprintln!("s3: before {before}, after {after}, fresh {fresh}: {rep:?}");
    assert!(
        after as f64 <= fresh as f64 * 1.03,
        "after {after}, fresh {fresh}"
    );
    for (p, s) in points[4..].iter().zip(&states[4..]) {
        assert_restores(&t, p, s);
    }
    check(&t);
    // Every key listed as deleted is gone from the bucket.
    let packs: std::collections::HashSet<String> = t.object_keys("packs").into_iter().collect();
    let indexes = t.object_keys("index");
    assert_eq!(
        packs.len(),
        indexes.len(),
        "a pack without index or the reverse"
    );
    // A store whose listing fails makes prune fail, not find "nothing there".
    let faulty = Arc::new(vaultfs::backend::faulty::FaultyStore::new(t.store()));
    faulty.add_rule(vaultfs::backend::faulty::Rule::new(
        vaultfs::backend::faulty::Op::List,
        "packs/",
        vaultfs::backend::faulty::Fault::Error { transient: true },
    ));
    let repo = Repository::open(faulty, PASSWORD.as_bytes()).unwrap();
    let err = prune(&repo, &PruneOptions::default()).unwrap_err();
    assert!(err.to_string().contains("packs/"), "{err}");
    assert_eq!(pack_bytes(&t), after);
}

#[test]
fn vault_usage_counts_distinct_chunks_and_what_other_vaults_share_and_survives_prune() {
    let t = small_repo(Target::Local);
    t.ok(&["vault", "create", "w"]);
    let src = t.path("src");
    write_round(&src, 0);
    let p0 = backup(&t, &src);
    backup(&t, &src); // the same data again: counted once
    let solo = t.path("solo/src");
    fs::create_dir_all(&solo).unwrap();
    fs::write(solo.join("only-w"), random_bytes(4242, 300_000)).unwrap();
    fs::write(solo.join("f000"), fs::read(src.join("f000")).unwrap()).unwrap();
    t.ok(&["backup".as_ref(), "w".as_ref(), solo.as_os_str()]);
    let repo = open(&t);
    let names = vec!["v".to_string(), "w".to_string(), "empty".to_string()];
    let u = vaultfs::repo::usage::usage(&repo, &names).unwrap();
    let get = |n: &str| u.iter().find(|x| x.vault == n).unwrap().clone();
    let (v, w, e) = (get("v"), get("w"), get("empty"));
    assert_eq!((v.points, w.points, e.points), (2, 1, 0));
    assert_eq!((e.bytes, e.chunks), (0, 0));
    // v: every chunk of the 10 MB tree once, plus its trees; stored sizes near the data.
    let data = FILES * FILE_LEN as u64;
    assert!(v.bytes >= data && v.bytes < data + data / 20, "{v:?}");
    // What w shares with v is f000's chunks: about 100 KB.
    assert!(w.shared_bytes >= FILE_LEN as u64, "{w:?}");
    assert!(w.shared_bytes < 2 * FILE_LEN as u64, "{w:?}");
    assert_eq!(v.shared_bytes, w.shared_bytes, "{v:?} {w:?}");
    assert!(w.bytes >= w.shared_bytes + 300_000, "{w:?}");
    // Prune moves chunks, never changes what a vault references.
    repo.delete_point("v", &p0).unwrap();
    prune_json(&t, &["--max-unused", "0"]);
    let after = vaultfs::repo::usage::usage(&repo, &names).unwrap();
    assert_eq!(after[1].bytes, v.bytes);
    assert_eq!(after[2], w);
}

/// A disk that fills during a backup: the backup fails and leaves its packs; prune frees
/// them, so that the next backup that fits succeeds, and check passes. The repository
/// lives on a 24 MiB tmpfs (root only; skipped where tmpfs cannot be mounted).
#[test]
fn a_full_disk_is_recovered_from_by_prune() {
    let t = TestRepo::new();
    let small = t.path("small");
    fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    let repo = small.join("repo");
    let run = |args: &[&str]| {
        t.cmd()
            .env("VAULTFS_REPO", &repo)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["init", "--pack-size-mib", "1"]).status.success());
    assert!(run(&["vault", "create", "v"]).status.success());
    let big = t.path("big");
    fs::create_dir_all(&big).unwrap();
    for i in 0..4u64 {
        fs::write(big.join(format!("f{i}")), random_bytes(100 + i, 8 << 20)).unwrap();
    }
    let out = run(&["backup", "v", big.to_str().unwrap()]);
    assert!(!out.status.success(), "a 32 MiB backup fits in 24 MiB?");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    let used = || -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=used"])
            .arg(&small)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let full = used();
    assert!(full > 16 << 20, "{full}");

    let p = run(&["prune", "--json"]);
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let freed = used();
    assert!(freed < 2 << 20, "prune left {freed} bytes of {full}");

    let ok = t.path("ok");
    fs::create_dir_all(&ok).unwrap();
    fs::write(ok.join("f"), random_bytes(7, 4 << 20)).unwrap();
    let out = run(&["backup", "v", ok.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = run(&["check", "--read-data"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let cat = run(&["cat", "v", "latest", "ok/f"]);
    assert_eq!(cat.stdout, random_bytes(7, 4 << 20));
}

/// Temporary files that a killed writer left (older than ten minutes) are removed by
/// prune and counted in its report; a fresh one (a writer may be at work) stays.
#[test]
fn prune_removes_stale_temporary_files() {
    let t = TestRepo::new();
    let src = t.path("src");
    write_round(&src, 1);
    backup(&t, &src);
    let stale = t.repo.join("index/.tmp-stale-upload");
    let fresh = t.repo.join("index/.tmp-fresh-upload");
    fs::write(&stale, b"half an object").unwrap();
    fs::write(&fresh, b"being written").unwrap();
    sh(&format!("touch -d '2 hours ago' '{}'", stale.display()));
    let report = prune_json(&t, &[]);
    assert_eq!(report["stale_uploads_removed"], 1, "{report}");
    assert!(!stale.exists());
    assert!(fresh.exists());
    check(&t);
}
