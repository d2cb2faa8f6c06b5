//! The BACKEND FAULTS family of the reliability campaign (RELIABILITY.md, "Backend
//! faults"): failures of the store, injected at two levels.
//!
//! - `library_fault_matrix`: a local repository through the fault injector
//!   (`backend::faulty::FaultyStore`) drawing a random fault from the seed on a share of
//!   every call (errors, stalls, lost replies, objects not found or not yet visible after
//!   their write, short reads, bit flips, listings broken off or missing the newest keys):
//!   tree and image backups, reads of every file of every point, restores, forgets and
//!   prunes. After each, without faults: a backup that succeeded committed one point that
//!   reads back byte for byte; one that failed left no point; `check --read-data` passes
//!   (leftovers are notes); every read returned the right bytes or an error.
//! - `http_fault_matrix` (needs `VAULTFS_TEST_S3_ENDPOINT`): the same, on the RGW, with a
//!   fault-injecting HTTP proxy (`tests/common/fault_proxy.rs`) between the S3 client and
//!   the server: 503 SlowDown, 500, RequestTimeout, resets before the headers and in the
//!   body, short bodies, bit flips, stalls, an `<Error>` in the 200 of
//!   CompleteMultipartUpload, a 404 on the GET after a PUT, failed listing pages and
//!   listings missing the newest keys; backups big enough for multipart uploads.
//! - `fuse_reads_under_a_stalled_backend` (S3 and FUSE): a mount of the repository on the
//!   RGW, every request stalled by the proxy: every read returns data or EIO within 30 s,
//!   no reader is left in D state, the mount unmounts within 10 s; reads succeed again once
//!   the stall is lifted.
//!
//! Each test prints its seed (`VAULTFS_SEED=N` replays it) and a summary line
//! `faults: <family> cases N, faults injected N, silent corruptions 0, failures 0`.
//! CI size by default, `RELIABILITY=ext` for the extended size.

mod common;

#[path = "family/mod.rs"]
mod family;
#[path = "common/fault_proxy.rs"]
mod fault_proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vaultfs::backend::ObjectStore;
use vaultfs::backend::faulty::{Fault, FaultyStore, Op, RandomFaults, Rule};
use vaultfs::backend::local::LocalStore;
use vaultfs::repo::backup::{BackupOptions, Source, backup};
use vaultfs::repo::check::check;
use vaultfs::repo::format::*;
use vaultfs::repo::prune::{PruneOptions, prune};
use vaultfs::repo::restore::{RestoreOptions, restore};
use vaultfs::repo::{InitOptions, Repository};

const PASSWORD: &[u8] = b"correct horse";

fn seed(family: &str) -> u64 {
    let s = match std::env::var("VAULTFS_SEED") {
        Ok(s) => s.trim().parse().expect("VAULTFS_SEED is a number"),
        Err(_) => {
            let mut b = [0u8; 8];
            getrandom::getrandom(&mut b).unwrap();
            u64::from_le_bytes(b) >> 1
        }
    };
    println!("faults: {family}: seed {s} (VAULTFS_SEED={s} replays it)");
    s
}

fn ext() -> bool {
    std::env::var("RELIABILITY").is_ok_and(|v| v == "ext")
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&r.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// What a point holds: path (starting with the backup's name) → content, files only.
type Contents = BTreeMap<Vec<u8>, Vec<u8>>;

/// Every file of a backup, with its node.
fn files(repo: &Repository, b: &BackupEntry) -> vaultfs::repo::Result<Vec<(Vec<u8>, Node)>> {
    let mut out = Vec::new();
    let root = repo.backup_root(b)?;
    let mut stack = vec![(b.name.clone(), root)];
    while let Some((path, node)) = stack.pop() {
        match node.kind {
            NodeKind::File => out.push((path, node)),
            NodeKind::Dir => {
                if let Some(sub) = node.subtree {
                    for n in repo.load_tree(&sub)?.nodes {
                        let mut p = path.clone();
                        p.push(b'/');
                        p.extend_from_slice(&n.name);
                        stack.push((p, n));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The files under `dir` (regular files only), keyed `prefix/relative path`.
fn tree_contents(dir: &Path, prefix: &[u8]) -> Contents {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Contents::new();
    let mut stack = vec![(dir.to_path_buf(), prefix.to_vec())];
    while let Some((d, p)) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let mut path = p.clone();
            path.push(b'/');
            path.extend_from_slice(e.file_name().as_bytes());
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push((e.path(), path));
            } else if t.is_file() {
                out.insert(path, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

/// Reads every file of `point` through `repo`: how many came back right, how many failed
/// with an error, and a line for each that came back wrong (other bytes, a file that was
/// never stored, a stored file missing from a tree that was read).
fn read_point(repo: &Repository, point: &str, want: &Contents) -> (u64, u64, Vec<String>) {
    let (ok, errors, wrong) = read_point_errors(repo, point, want);
    (ok, errors.len() as u64, wrong)
}

/// [`read_point`], with the error of each read that failed.
fn read_point_errors(
    repo: &Repository,
    point: &str,
    want: &Contents,
) -> (u64, Vec<String>, Vec<String>) {
    let (mut ok, mut failed, mut wrong) = (0, Vec::new(), Vec::new());
    let m = match repo.load_manifest("v", point) {
        Ok(m) => m,
        Err(e) => return (0, vec![format!("{point}: {e}"); want.len()], wrong),
    };
    let mut seen = BTreeSet::new();
    let mut unreadable: Vec<&[u8]> = Vec::new();
    for b in &m.backups {
        let list = match files(repo, b) {
            Ok(l) => l,
            Err(e) => {
                unreadable.push(&b.name);
                failed.push(format!("{point}/{}: {e}", String::from_utf8_lossy(&b.name)));
                continue;
            }
        };
        for (path, node) in list {
            seen.insert(path.clone());
            let mut data = Vec::new();
            match (repo.read_file(&node, &mut data), want.get(&path)) {
                (Err(e), _) => {
                    failed.push(format!("{point}/{}: {e}", String::from_utf8_lossy(&path)))
                }
                (Ok(()), Some(w)) if *w == data => ok += 1,
                (Ok(()), Some(w)) => wrong.push(format!(
                    "{point}/{}: {} bytes read, not the {} stored",
                    String::from_utf8_lossy(&path),
                    data.len(),
                    w.len()
                )),
                (Ok(()), None) => wrong.push(format!(
                    "{point}/{}: a file that was never stored",
                    String::from_utf8_lossy(&path)
                )),
            }
        }
    }
    for path in want.keys().filter(|p| !seen.contains(*p)) {
        let top = path.split(|&c| c == b'/').next().unwrap_or(path);
        if !unreadable.contains(&top) {
            wrong.push(format!(
                "{point}/{}: stored, but missing from the tree read",
                String::from_utf8_lossy(path)
            ));
        }
    }
    (ok, failed, wrong)
}

/// Reads every chunk of every file of `point` through `repo`, one by one (a failed chunk
/// does not stop the others): how many came back right, how many failed with an error,
/// and a line for each that came back with other bytes than the file holds there.
fn read_chunks(repo: &Repository, point: &str, want: &Contents) -> (u64, u64, Vec<String>) {
    let (mut ok, mut failed, mut wrong) = (0, 0, Vec::new());
    let Ok(m) = repo.load_manifest("v", point) else {
        return (0, 1, wrong);
    };
    for b in &m.backups {
        let Ok(list) = files(repo, b) else {
            failed += 1;
            continue;
        };
        for (path, node) in list {
            let Some(w) = want.get(&path) else {
                continue; // read_point reports files that were never stored
            };
            let mut at = 0usize;
            for e in &node.content {
                match e {
                    Extent::Hole(n) => at += *n as usize,
                    Extent::Data(r) => {
                        let end = at + r.raw_len as usize;
                        match repo.read_chunk(r) {
                            Err(_) => failed += 1,
                            Ok(d) if w.get(at..end) == Some(d.as_slice()) => ok += 1,
                            Ok(d) => wrong.push(format!(
                                "{point}/{} bytes {at}..{end}: a chunk of {} bytes that is not \
                                 the file's",
                                String::from_utf8_lossy(&path),
                                d.len()
                            )),
                        }
                        at = end;
                    }
                }
            }
        }
    }
    (ok, failed, wrong)
}

/// Tallies of a fault matrix.
#[derive(Default)]
struct Tally {
    cases: u64,
    by_op: BTreeMap<&'static str, (u64, u64)>,
    files_right: u64,
    files_failed: u64,
    chunks_right: u64,
    chunks_failed: u64,
    corruptions: Vec<String>,
    failures: Vec<String>,
    leftover_locks: u64,
    notes: u64,
    /// Backups that failed because the answer to their commit was lost, after it landed.
    lost_commits: u64,
}

impl Tally {
    fn fail(&mut self, what: String) {
        eprintln!("FAILURE {what}");
        self.failures.push(what);
    }

    fn corrupt(&mut self, what: String) {
        eprintln!("SILENT CORRUPTION {what}");
        self.corruptions.push(what);
    }

    fn outcome(&mut self, op: &'static str, ok: bool) {
        let e = self.by_op.entry(op).or_default();
        if ok { e.0 += 1 } else { e.1 += 1 }
    }

    fn summary(&self, family: &str, faults: u64, kinds: &BTreeMap<&'static str, u64>) -> String {
        let ops: Vec<String> = self
            .by_op
            .iter()
            .map(|(op, (ok, err))| format!("{op} {ok} ok / {err} failed"))
            .collect();
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("faults: {family}: operations: {}", ops.join(", "));
        println!("faults: {family}: injected by kind: {}", kinds.join(", "));
        println!(
            "faults: {family}: file reads right {}, failed with an error {}; chunk reads right \
             {}, failed with an error {}; locks left by a \
             failed release {}; check notes {}; backups failed after their commit landed \
             (its answer lost) {}",
            self.files_right,
            self.files_failed,
            self.chunks_right,
            self.chunks_failed,
            self.leftover_locks,
            self.notes,
            self.lost_commits
        );
        format!(
            "faults: {family} cases {}, faults injected {faults}, silent corruptions {}, \
             failures {}",
            self.cases,
            self.corruptions.len(),
            self.failures.len()
        )
    }

    fn assert_clean(&self, seed: u64) {
        let mut all = self.corruptions.clone();
        all.extend(self.failures.iter().cloned());
        assert!(
            all.is_empty(),
            "seed {seed} (VAULTFS_SEED={seed} replays it): {} problems:\n{}",
            all.len(),
            all.join("\n")
        );
    }
}

/// The faults the library-level matrix draws from.
fn library_menu() -> Vec<Rule> {
    let stall = Fault::Stall {
        timeout: Duration::from_millis(5),
    };
    vec![
        Rule::new(Op::Any, "", Fault::Error { transient: true }),
        Rule::new(Op::Any, "", Fault::Error { transient: false }),
        Rule::new(Op::Any, "", stall),
        Rule::new(Op::Any, "", Fault::LostReply),
        Rule::new(Op::Read, "", Fault::NotFound),
        Rule::new(Op::Read, "", Fault::ShortRead { missing: 64 }),
        Rule::new(Op::Read, "", Fault::BitFlip { bit: 0 }),
        Rule::new(Op::Read, "", Fault::BitFlip { bit: 0 }),
        Rule::new(Op::Any, "", Fault::NotYetVisible { within: 16 }),
        Rule::new(Op::List, "", Fault::PartialListing { after: 64 }),
        Rule::new(Op::List, "", Fault::StaleListing { newest: 8 }),
    ]
}

/// Where the faults of a matrix come from: the store wrapper or the HTTP proxy.
trait Injector {
    /// Faults drawn from `seed` from now on; `prune` for the calls of a prune (which are
    /// spared listings of `points/` missing the newest points, see `library_fault_matrix`).
    fn on(&self, seed: u64, per_mille: u32, prune: bool);
    fn off(&self);
    fn total(&self) -> u64;
    fn kinds(&self) -> BTreeMap<&'static str, u64>;
}

/// The library level: a [`FaultyStore`] drawing from a menu of rules.
struct StoreFaults {
    store: Arc<FaultyStore>,
    menu: Vec<Rule>,
    prune_menu: Vec<Rule>,
}

impl Injector for StoreFaults {
    fn on(&self, seed: u64, per_mille: u32, prune: bool) {
        self.store.set_random(Some(RandomFaults {
            seed,
            per_mille,
            menu: if prune {
                self.prune_menu.clone()
            } else {
                self.menu.clone()
            },
        }));
    }
    fn off(&self) {
        self.store.set_random(None);
    }
    fn total(&self) -> u64 {
        self.store.injected_total()
    }
    fn kinds(&self) -> BTreeMap<&'static str, u64> {
        self.store.injected()
    }
}

/// The HTTP level: the proxy in front of the RGW.
struct ProxyFaults {
    proxy: Arc<fault_proxy::FaultProxy>,
    stall: Duration,
}

impl Injector for ProxyFaults {
    fn on(&self, seed: u64, per_mille: u32, prune: bool) {
        self.proxy.set_plan(Some(fault_proxy::Plan {
            seed,
            per_mille,
            stall: self.stall,
            spare_listings: if prune {
                vec!["points".to_string()]
            } else {
                Vec::new()
            },
        }));
    }
    fn off(&self) {
        self.proxy.set_plan(None);
    }
    fn total(&self) -> u64 {
        self.proxy.injected_total()
    }
    fn kinds(&self) -> BTreeMap<&'static str, u64> {
        self.proxy.injected()
    }
}

/// One matrix over a repository: `repo` goes through the faults, `clean` opens the same
/// objects without faults (to judge what the operations left).
struct Matrix {
    faults: Box<dyn Injector>,
    repo: Arc<Repository>,
    clean: Arc<Repository>,
    dir: PathBuf,
    src: PathBuf,
    /// Every committed point and what it holds.
    expected: BTreeMap<String, Contents>,
    tally: Tally,
    rng: Rng,
    seed: u64,
    /// Every how many tree backups a big new file (`big`, of this many bytes) is written,
    /// so that packs are big enough for multipart uploads: (every, bytes).
    big_files: Option<(u64, usize)>,
    tree_backups: u64,
    /// The fault rates (in thousandths of calls) a case draws from.
    ladder: Vec<u32>,
    /// How many times a read case reads every chunk.
    chunk_rounds: u32,
}

fn mix_case(x: u64) -> u64 {
    Rng(x).next()
}

impl Matrix {
    fn faults_on(&self, case: u64) {
        self.faults
            .on(self.case_seed(case), self.per_mille(case), false);
    }

    /// The chance of a fault on a call in this case, drawn from the ladder: low rates let
    /// long operations (backups) through often enough, high ones inject many faults.
    fn per_mille(&self, case: u64) -> u32 {
        self.ladder[(mix_case(self.case_seed(case)) % self.ladder.len() as u64) as usize]
    }

    fn case_seed(&self, case: u64) -> u64 {
        self.seed ^ case.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn faults_off(&self) {
        self.faults.off();
    }

    /// Changes the source tree a little (seeded): files rewritten, appended to, added,
    /// removed; the image file rewritten in part.
    fn mutate_source(&mut self) {
        let n = 1 + self.rng.below(3);
        for _ in 0..n {
            let i = self.rng.below(24);
            let p = self.src.join(format!("d{}/f{i}", i % 4));
            match self.rng.below(4) {
                0 => {
                    let _ = std::fs::remove_file(&p);
                }
                1 if p.exists() => {
                    let mut d = std::fs::read(&p).unwrap();
                    d.extend(noise(self.rng.next(), self.rng.below(30_000) as usize));
                    std::fs::write(&p, d).unwrap();
                }
                _ => {
                    let len = [0, 1, 4096, 20_000, 70_000, 200_000][self.rng.below(6) as usize];
                    std::fs::write(&p, noise(self.rng.next(), len)).unwrap();
                }
            }
        }
        if let Some((every, bytes)) = self.big_files {
            self.tree_backups += 1;
            if self.tree_backups % every == 1 {
                std::fs::write(self.src.join("big"), noise(self.rng.next(), bytes)).unwrap();
            }
        }
        let img = self.dir.join("disk.img");
        let mut d = std::fs::read(&img).unwrap();
        let at = self.rng.below(d.len() as u64 - 10_000) as usize;
        d[at..at + 10_000].copy_from_slice(&noise(self.rng.next(), 10_000));
        std::fs::write(&img, d).unwrap();
    }

    /// Removes locks left by releases that failed (the process holding them is this one,
    /// so no writer would ever take them for stale).
    fn clear_locks(&mut self) {
        let n = vaultfs::repo::lock::remove(&self.clean, true).expect("remove leftover locks");
        self.tally.leftover_locks += n as u64;
    }

    /// `check --read-data` without faults must pass, and every point must be one that
    /// was committed (with what it held); the points that were committed must be there,
    /// except those in `may_be_gone`.
    fn judge(&mut self, label: &str, may_be_gone: &[String]) {
        self.clear_locks();
        match check(&self.clean, true) {
            Ok(r) if r.ok() => self.tally.notes += r.notes.len() as u64,
            Ok(r) => self
                .tally
                .failures
                .push(format!("{label}: check --read-data failed: {:?}", r.errors)),
            Err(e) => self
                .tally
                .failures
                .push(format!("{label}: check could not run: {e}")),
        }
        let now: BTreeSet<String> = self
            .clean
            .list_points("v")
            .expect("list points")
            .into_iter()
            .collect();
        for p in &now {
            if !self.expected.contains_key(p) {
                self.tally
                    .fail(format!("{label}: point {p} was never committed"));
            }
        }
        let gone: Vec<String> = self
            .expected
            .keys()
            .filter(|p| !now.contains(*p))
            .cloned()
            .collect();
        for p in gone {
            if !may_be_gone.contains(&p) {
                self.tally
                    .fail(format!("{label}: committed point {p} is gone"));
            }
            self.expected.remove(&p);
        }
    }

    /// Takes a new point of the tree or the image; judges the outcome.
    fn backup_case(&mut self, case: u64, image: bool) {
        self.mutate_source();
        let before: BTreeSet<String> = self.clean.list_points("v").unwrap().into_iter().collect();
        let (source, want) = if image {
            let img = self.dir.join("disk.img");
            let want: Contents = [(b"disk.img".to_vec(), std::fs::read(&img).unwrap())].into();
            (
                Source::Image {
                    path: img,
                    name: Some("disk.img".to_string()),
                },
                want,
            )
        } else {
            (
                Source::Trees(vec![self.src.clone()]),
                tree_contents(&self.src, b"src"),
            )
        };
        let opts = BackupOptions {
            workers: 2,
            ..Default::default()
        };
        self.faults_on(case);
        let result = backup(&self.repo, "v", source, &opts);
        self.faults_off();
        let op = if image { "image backup" } else { "tree backup" };
        self.tally.outcome(op, result.is_ok());
        let label = format!("case {case}: {op} ({})", outcome_text(&result));
        if std::env::var_os("VAULTFS_FAULTS_VERBOSE").is_some() {
            eprintln!("{label}");
        }
        let now: BTreeSet<String> = self.clean.list_points("v").unwrap().into_iter().collect();
        let new: Vec<&String> = now.difference(&before).collect();
        match (&result, new.as_slice()) {
            (Ok(r), [p]) if **p == r.manifest.name => {
                let p = (*p).clone();
                let (ok, failed, wrong) = read_point_errors(&self.clean, &p, &want);
                if !failed.is_empty() || !wrong.is_empty() || ok != want.len() as u64 {
                    self.tally.fail(format!(
                        "{label}: the committed point {p} reads back {ok} of {} files right, \
                         failed: {failed:?}, wrong: {wrong:?}",
                        want.len()
                    ));
                }
                self.expected.insert(p, want);
            }
            (Ok(_), new) => self.tally.fail(format!(
                "{label}: succeeded, but the new points are {new:?}"
            )),
            (Err(_), []) => {}
            // The create-only write of the manifest reached the store and its answer was
            // lost: the point is committed although the backup says it failed. It must
            // be whole. (The S3 store reads such an object back and answers right.)
            (Err(e), [p]) if e.to_string().contains(&format!("put new points/v/{p}")) => {
                let p = (*p).clone();
                self.tally.lost_commits += 1;
                let (ok, failed, wrong) = read_point_errors(&self.clean, &p, &want);
                if !failed.is_empty() || !wrong.is_empty() || ok != want.len() as u64 {
                    self.tally.fail(format!(
                        "{label}: the point {p} whose commit's answer was lost reads back \
                         {ok} of {} files right, failed: {failed:?}, wrong: {wrong:?}",
                        want.len()
                    ));
                }
                self.expected.insert(p, want);
            }
            (Err(_), new) => self
                .tally
                .failures
                .push(format!("{label}: failed, but left the points {new:?}")),
        }
        self.judge(&label, &[]);
    }

    /// Reads every file of every point through the faults, then every chunk of them one
    /// by one (at the rates of the upper half of the ladder: reads fail file by file and
    /// chunk by chunk, so they take many faults).
    fn read_case(&mut self, case: u64) {
        let top = &self.ladder[self.ladder.len() / 2..];
        let rate = top[(mix_case(self.case_seed(case)) % top.len() as u64) as usize];
        self.faults.on(self.case_seed(case), rate, false);
        let expected = std::mem::take(&mut self.expected);
        let mut all_ok = true;
        for (p, want) in &expected {
            let (ok, failed, wrong) = read_point(&self.repo, p, want);
            all_ok &= failed == 0;
            self.tally.files_right += ok;
            self.tally.files_failed += failed;
            for w in wrong {
                self.tally.corrupt(format!("case {case}: read: {w}"));
            }
            // Rounds, as a mount's readers come back to the same chunks (each call draws
            // afresh).
            for _ in 0..self.chunk_rounds {
                let (ok, failed, wrong) = read_chunks(&self.repo, p, want);
                self.tally.chunks_right += ok;
                self.tally.chunks_failed += failed;
                for w in wrong {
                    self.tally.corrupt(format!("case {case}: chunk read: {w}"));
                }
            }
        }
        self.expected = expected;
        self.faults_off();
        self.tally.outcome("read every file", all_ok);
    }

    /// Restores a point through the faults; what a successful restore wrote must be the
    /// point's files, byte for byte.
    fn restore_case(&mut self, case: u64) {
        let Some(point) = self.pick_point() else {
            return;
        };
        let target = self.dir.join(format!("restore-{case}"));
        self.faults_on(case);
        let result = self.repo.load_manifest("v", &point).and_then(|m| {
            let opts = RestoreOptions {
                workers: 2,
                owners: false,
                ..Default::default()
            };
            restore(&self.repo, &m, &target, &opts)
        });
        self.faults_off();
        // A file whose content could not be produced is named in `failed` and left out
        // (never left short): an error, not a corruption.
        let failed: BTreeSet<Vec<u8>> = match &result {
            Ok(stats) => stats
                .failed
                .iter()
                .map(|(p, _)| {
                    use std::os::unix::ffi::OsStrExt;
                    let p = p.strip_prefix(&target).unwrap_or(p);
                    p.as_os_str().as_bytes().to_vec()
                })
                .collect(),
            Err(_) => BTreeSet::new(),
        };
        self.tally
            .outcome("restore", result.is_ok() && failed.is_empty());
        if let Ok(stats) = &result {
            let want = &self.expected[&point];
            let got: Contents = tree_contents(&target, b"")
                .into_iter()
                .map(|(k, v)| (k[1..].to_vec(), v))
                .collect();
            let mut differ = Vec::new();
            for (k, v) in want {
                let listed = failed.iter().any(|f| k.starts_with(f));
                match got.get(k) {
                    Some(g) if g == v => self.tally.files_right += 1,
                    None if listed => self.tally.files_failed += 1,
                    Some(g) => differ.push(format!(
                        "{}: {} bytes, not the {} stored{}",
                        String::from_utf8_lossy(k),
                        g.len(),
                        v.len(),
                        if listed { " (named as failed)" } else { "" }
                    )),
                    None => differ.push(format!(
                        "{}: missing, not named as failed",
                        String::from_utf8_lossy(k)
                    )),
                }
            }
            for k in got.keys().filter(|k| !want.contains_key(*k)) {
                differ.push(format!("{}: never stored", String::from_utf8_lossy(k)));
            }
            if !differ.is_empty() {
                self.tally.corrupt(format!(
                    "case {case}: restore of {point} succeeded ({} failed: {:?}) with other \
                     files: {differ:?}",
                    stats.failed.len(),
                    stats.failed
                ));
            }
        }
        let _ = std::fs::remove_dir_all(&target);
    }

    fn pick_point(&mut self) -> Option<String> {
        let points: Vec<&String> = self.expected.keys().collect();
        if points.is_empty() {
            return None;
        }
        Some(points[self.rng.below(points.len() as u64) as usize].clone())
    }

    /// Forgets the oldest points but three, then prunes (repacking anything with unused
    /// bytes), both through the faults.
    fn prune_case(&mut self, case: u64) {
        let mut forgot = Vec::new();
        let points = self.clean.list_points("v").unwrap();
        for oldest in points.iter().take(points.len().saturating_sub(3)) {
            self.faults_on(case);
            let r = self.repo.delete_point("v", oldest);
            self.faults_off();
            self.tally.outcome("forget", r.is_ok());
            forgot.push(oldest.clone());
        }
        let opts = PruneOptions {
            max_unused_percent: 0.0,
            lock_wait: Duration::ZERO,
            ..Default::default()
        };
        self.faults
            .on(self.case_seed(case) ^ 1, self.per_mille(case), true);
        let r = prune(&self.repo, &opts);
        self.faults_off();
        self.tally.outcome("prune", r.is_ok());
        let label = format!(
            "case {case}: prune ({})",
            match &r {
                Ok(_) => "ok".to_string(),
                Err(e) => e.to_string(),
            }
        );
        self.judge(&label, &forgot);
        // What prune left must still read back, point by point.
        let expected = std::mem::take(&mut self.expected);
        for (p, want) in &expected {
            let (ok, failed, wrong) = read_point_errors(&self.clean, p, want);
            if !failed.is_empty() || !wrong.is_empty() || ok != want.len() as u64 {
                self.tally.fail(format!(
                    "{label}: point {p} reads back {ok} of {} files right after the prune, \
                     failed: {failed:?}, wrong: {wrong:?}",
                    want.len()
                ));
            }
        }
        self.expected = expected;
    }
}

fn outcome_text<T>(r: &vaultfs::repo::Result<T>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn library_fault_matrix() {
    let family = "library";
    let seed = seed(family);
    let cases: u64 = if ext() { 4_500 } else { 450 };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(LocalStore::new(dir.path().join("repo")));
    let faulty = Arc::new(FaultyStore::new(inner.clone()));
    let opts = small_repo_options(1);
    let repo = Repository::init(faulty.clone(), PASSWORD, opts).unwrap();
    repo.create_vault("v", "faults").unwrap();
    let clean = repo.over_store(inner);
    let src = dir.path().join("src");
    let mut rng = Rng(seed);
    for i in 0..24u64 {
        std::fs::create_dir_all(src.join(format!("d{}", i % 4))).unwrap();
        let len = [0, 100, 4096, 30_000, 90_000][rng.below(5) as usize];
        std::fs::write(src.join(format!("d{}/f{i}", i % 4)), noise(rng.next(), len)).unwrap();
    }
    std::fs::write(dir.path().join("disk.img"), noise(rng.next(), 600_000)).unwrap();
    let menu = library_menu();
    // A prune that lists `points/` without the newest points would take their data for
    // unused: the store contract rules such listings out (RELIABILITY.md). Its other
    // listings may miss their newest keys.
    let prune_menu = menu
        .iter()
        .filter(|&r| !matches!(r.fault, Fault::StaleListing { .. }))
        .cloned()
        .chain(
            ["packs/", "index/", "forward/", "locks/"]
                .map(|p| Rule::new(Op::List, p, Fault::StaleListing { newest: 8 })),
        )
        .collect();
    let faults = StoreFaults {
        store: faulty,
        menu,
        prune_menu,
    };
    let mut m = Matrix {
        faults: Box::new(faults),
        repo,
        clean,
        dir: dir.path().to_path_buf(),
        src,
        expected: BTreeMap::new(),
        tally: Tally::default(),
        rng,
        seed,
        big_files: None,
        tree_backups: 0,
        ladder: vec![3, 10, 30, 100, 300, 500],
        chunk_rounds: 4,
    };
    let faults = run_matrix(&mut m, family, cases, started);
    assert!(
        faults >= cases / 450 * 10_000,
        "only {faults} faults injected in {cases} cases"
    );
    assert!(
        m.tally.files_failed > 0,
        "no read failed: were faults injected?"
    );
}

/// Runs `cases` seeded cases of a matrix, prints the summary and asserts.
fn run_matrix(m: &mut Matrix, family: &str, cases: u64, started: Instant) -> u64 {
    let seed = m.seed;
    for case in 0..cases {
        match m.rng.below(20) {
            0..=4 => m.backup_case(case, false),
            5..=7 => m.backup_case(case, true),
            8..=13 => m.read_case(case),
            14..=16 => m.restore_case(case),
            _ => m.prune_case(case),
        }
        m.tally.cases += 1;
        if (case + 1) % 100 == 0 {
            println!(
                "faults: {family}: {} cases in {:.0} s, {} faults injected, {} problems",
                case + 1,
                started.elapsed().as_secs_f64(),
                m.faults.total(),
                m.tally.corruptions.len() + m.tally.failures.len()
            );
        }
    }
    let faults = m.faults.total();
    let line = m.tally.summary(family, faults, &m.faults.kinds());
    println!(
        "{line} ({:.0} s, seed {seed})",
        started.elapsed().as_secs_f64()
    );
    m.tally.assert_clean(seed);
    assert!(m.tally.files_right > 0, "no file was read right");
    family::report(
        &format!("faults {family}"),
        seed,
        m.tally.cases,
        faults,
        0,
        started.elapsed().as_secs_f64(),
    );
    faults
}

/// The S3 settings of the matrix's client: short deadlines, so that a stall costs little,
/// and multipart uploads from 6 MiB (parts of 5 MiB).
fn s3_options(endpoint: &str) -> vaultfs::backend::s3::S3Options {
    vaultfs::backend::s3::S3Options {
        endpoint: Some(endpoint.to_string()),
        path_style: Some(true),
        attempt_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(20),
        multipart_threshold: 6 << 20,
        part_size: 5 << 20,
        ..Default::default()
    }
}

/// Deletes every object of a bucket (unless the test failed: then they stay for a look).
struct EmptyOnDrop(vaultfs::backend::Store, String);

impl Drop for EmptyOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: the repository {} is left in place", self.1);
            return;
        }
        if let Ok(objects) = self.0.list("") {
            let keys: Vec<String> = objects.into_iter().map(|o| o.key).collect();
            let _ = self.0.delete_many(&keys);
        }
    }
}

#[test]
fn http_fault_matrix() {
    let Some(endpoint) = common::s3_endpoint() else {
        return;
    };
    let family = "http";
    let seed = seed(family);
    let cases: u64 = if ext() { 300 } else { 6 };
    let started = Instant::now();
    let proxy = Arc::new(fault_proxy::FaultProxy::start(&endpoint));
    let bucket = common::unique_bucket("faults");
    let address = format!("s3://{bucket}/repo");
    use vaultfs::backend::s3::S3Store;
    let direct: vaultfs::backend::Store =
        Arc::new(S3Store::create_bucket_if_missing(&address, s3_options(&endpoint)).unwrap());
    let _empty = EmptyOnDrop(direct.clone(), address.clone());
    let through: vaultfs::backend::Store =
        Arc::new(S3Store::open(&address, s3_options(&proxy.endpoint())).unwrap());
    let opts = InitOptions {
        kdf: KdfParams {
            memory_kib: 8 * 1024,
            iterations: 1,
            parallelism: 1,
            salt: [2; 16],
        },
        chunker: ChunkerParams {
            min_size: 64 << 10,
            avg_size: 256 << 10,
            max_size: 1 << 20,
        },
        pack_size: 12 << 20,
        zstd_level: 3,
    };
    let clean = Repository::init(direct, PASSWORD, opts).unwrap();
    clean.create_vault("v", "faults").unwrap();
    let repo = clean.over_store(through);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let mut rng = Rng(seed);
    for i in 0..12u64 {
        std::fs::create_dir_all(src.join(format!("d{}", i % 4))).unwrap();
        let len = [0, 100, 4096, 300_000, 900_000][rng.below(5) as usize];
        std::fs::write(src.join(format!("d{}/f{i}", i % 4)), noise(rng.next(), len)).unwrap();
    }
    std::fs::write(dir.path().join("disk.img"), noise(rng.next(), 3 << 20)).unwrap();
    let faults = ProxyFaults {
        proxy: proxy.clone(),
        stall: Duration::from_millis(2500),
    };
    let mut m = Matrix {
        faults: Box::new(faults),
        repo,
        clean,
        dir: dir.path().to_path_buf(),
        src,
        expected: BTreeMap::new(),
        tally: Tally::default(),
        rng,
        seed,
        // A new 13 MiB file every third tree backup: a 12 MiB pack, uploaded in 3 parts.
        big_files: Some((3, 13 << 20)),
        tree_backups: 0,
        ladder: vec![20, 60, 150],
        chunk_rounds: 1,
    };
    // The first backup without faults, so that every kind of case has a point to work on.
    let opts = BackupOptions {
        workers: 2,
        ..Default::default()
    };
    let first = backup(&m.repo, "v", Source::Trees(vec![m.src.clone()]), &opts)
        .unwrap_or_else(|e| panic!("a backup through the proxy without faults: {e}"));
    m.expected
        .insert(first.manifest.name, tree_contents(&m.src, b"src"));
    let mount_reads = if common::fuse_available() {
        Some(mount_reads_through(&m, &address, &proxy, seed))
    } else {
        None
    };
    let faults = run_matrix(&mut m, family, cases, started);
    let requests: Vec<String> = proxy
        .requests()
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "faults: {family}: requests through the proxy: {}",
        requests.join(", ")
    );
    if let Some((right, eio)) = mount_reads {
        println!("faults: {family}: reads through a mount: {right} right, {eio} EIO");
    }
    // Each kind of fault on each kind of call: `every_http_fault_on_every_s3_call`.
    assert!(faults > 0);
}

/// Mounts the repository through the proxy (with faults) and reads every file of every
/// point with `std::fs::read`: each read gives the stored bytes or EIO. Returns (right,
/// EIO).
fn mount_reads_through(
    m: &Matrix,
    address: &str,
    proxy: &fault_proxy::FaultProxy,
    seed: u64,
) -> (u64, u64) {
    let mnt = m.dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let log = m.dir.join("mount.log");
    let child = std::process::Command::new(common::bin())
        .arg("mount")
        .arg(&mnt)
        .env("VAULTFS_REPO", address)
        .env("VAULTFS_PASSWORD", std::str::from_utf8(PASSWORD).unwrap())
        .env("VAULTFS_S3_ENDPOINT", proxy.endpoint())
        .env("VAULTFS_S3_TIMEOUT", "2")
        .env("VAULTFS_S3_OPERATION_TIMEOUT", "20")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn vaultfs mount");
    let mount = common::Mount {
        child: Some(child),
        dir: mnt.clone(),
        log,
        started: Instant::now(),
    };
    common::wait_for("the mount", || common::mounted(&mnt));
    proxy.set_plan(Some(fault_proxy::Plan {
        seed: seed ^ 0x006d_6f75_6e74,
        per_mille: 30,
        stall: Duration::from_millis(2500),
        spare_listings: Vec::new(),
    }));
    let (mut right, mut eio) = (0, 0);
    let mut wrong = Vec::new();
    for _round in 0..2 {
        for (point, want) in &m.expected {
            for (path, data) in want {
                let p = mnt
                    .join("v")
                    .join(point)
                    .join(String::from_utf8_lossy(path).as_ref());
                match std::fs::read(&p) {
                    Ok(d) if d == *data => right += 1,
                    Ok(d) => wrong.push(format!(
                        "{}: {} bytes, not the stored",
                        p.display(),
                        d.len()
                    )),
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => eio += 1,
                    Err(e) => wrong.push(format!("{}: {e}", p.display())),
                }
            }
        }
    }
    proxy.set_plan(None);
    drop(mount);
    assert!(
        wrong.is_empty(),
        "seed {seed}: reads through the mount: {wrong:?}"
    );
    (right, eio)
}

/// The mount's S3 settings under a stall: 2 attempts of 2 s within 6 s (as
/// `tests/s3_stall.rs`).
const STALL_ENV: [(&str, &str); 3] = [
    ("VAULTFS_S3_TIMEOUT", "2"),
    ("VAULTFS_S3_MAX_ATTEMPTS", "2"),
    ("VAULTFS_S3_OPERATION_TIMEOUT", "6"),
];

/// The longest a read may take under a stall before it must have returned.
const READ_DEADLINE: Duration = Duration::from_secs(30);
/// The longest an unmount may take under a stall.
const UMOUNT_DEADLINE: Duration = Duration::from_secs(10);

/// The state letter of a process (`R`, `S`, `D`, ...) from /proc/PID/stat; `None` once it
/// is gone.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) STATE ...": the comm may hold spaces and parentheses.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.chars().next())
}

/// What became of a reader process started during a stall.
struct Reader {
    file: String,
    took: Duration,
    /// Exited successfully (then its output was compared), or with an error message.
    outcome: Result<(), String>,
    /// The longest run of samples in which it was in D state.
    longest_d: Duration,
}

/// Starts `sha256sum` on each file (a real reader process per file), samples their states
/// every 50 ms, and waits for each at most `READ_DEADLINE`; a reader still running then
/// is killed and reported.
fn run_readers(files: &[(String, PathBuf)], want: &BTreeMap<String, String>) -> Vec<Reader> {
    let t0 = Instant::now();
    let mut children: Vec<(String, std::process::Child)> = files
        .iter()
        .map(|(name, p)| {
            let c = std::process::Command::new("sha256sum")
                .arg(p)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn sha256sum");
            (name.clone(), c)
        })
        .collect();
    let mut done: Vec<Option<Reader>> = (0..children.len()).map(|_| None).collect();
    let mut d_since: Vec<Option<Instant>> = vec![None; children.len()];
    let mut longest_d = vec![Duration::ZERO; children.len()];
    while done.iter().any(Option::is_none) {
        for (i, (name, c)) in children.iter_mut().enumerate() {
            if done[i].is_some() {
                continue;
            }
            match proc_state(c.id()) {
                Some('D') => {
                    let since = *d_since[i].get_or_insert_with(Instant::now);
                    longest_d[i] = longest_d[i].max(since.elapsed());
                }
                _ => d_since[i] = None,
            }
            if let Some(st) = c.try_wait().unwrap() {
                let mut out = String::new();
                let mut err = String::new();
                use std::io::Read;
                c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
                c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                let sum = out.split_whitespace().next().unwrap_or("").to_string();
                let outcome = if !st.success() {
                    Err(err.trim().to_string())
                } else if want.get(name) == Some(&sum) {
                    Ok(())
                } else {
                    Err(format!("WRONG BYTES: sha256 {sum}"))
                };
                done[i] = Some(Reader {
                    file: name.clone(),
                    took: t0.elapsed(),
                    outcome,
                    longest_d: longest_d[i],
                });
            } else if t0.elapsed() > READ_DEADLINE {
                let state = proc_state(c.id());
                let _ = c.kill();
                let _ = c.wait();
                done[i] = Some(Reader {
                    file: name.clone(),
                    took: t0.elapsed(),
                    outcome: Err(format!(
                        "HUNG: still running after {READ_DEADLINE:?}, in state {state:?}"
                    )),
                    longest_d: longest_d[i],
                });
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done.into_iter().map(Option::unwrap).collect()
}

#[test]
fn fuse_reads_under_a_stalled_backend() {
    let Some(endpoint) = common::s3_endpoint() else {
        return;
    };
    if !common::fuse_available() {
        return;
    }
    let family = "fuse-stall";
    let seed = seed(family);
    let rounds: u64 = if ext() { 10 } else { 2 };
    let started = Instant::now();
    let proxy = fault_proxy::FaultProxy::start(&endpoint);
    let target = common::Target::S3 {
        endpoint: proxy.endpoint(),
        address: format!("s3://{}/repo", common::unique_bucket("faults-stall")),
    };
    let t = common::TestRepo::create(target, 1);
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let n = 8u64;
    let mut sums = BTreeMap::new();
    for i in 0..n {
        let p = src.join(format!("f{i}"));
        std::fs::write(&p, common::random_bytes(seed ^ i, 1 << 20)).unwrap();
        sums.insert(format!("f{i}"), common::sha256(&p));
    }
    t.backup(&[&src]);
    let point = t.point_ids()[0].clone();
    let files = |m: &common::Mount| -> Vec<(String, PathBuf)> {
        (0..n)
            .map(|i| (format!("f{i}"), m.p(&format!("v/{point}/src/f{i}"))))
            .collect()
    };
    let (mut reads, mut eio, mut right) = (0u64, 0u64, 0u64);
    let mut slowest = Duration::ZERO;
    let mut longest_d = Duration::ZERO;
    let mut problems = Vec::new();
    let mut rng = Rng(seed);
    for round in 0..rounds {
        // A mount that has read one file (so its tree is loaded), then every request held.
        let mut m = t.mount(&[], &STALL_ENV);
        let warm = rng.below(n);
        let warm_path = m.p(&format!("v/{point}/src/f{warm}"));
        assert_eq!(common::sha256(&warm_path), sums[&format!("f{warm}")]);
        let open = std::fs::File::open(m.p(&format!("v/{point}/src/f{}", (warm + 1) % n))).unwrap();
        proxy.stall_everything();
        let readers = run_readers(&files(&m), &sums);
        // A read through a handle opened before the stall, from this process.
        let t0 = Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        use std::os::unix::fs::FileExt;
        let held = open.read_at(&mut buf, 0);
        let took = t0.elapsed();
        slowest = slowest.max(took);
        reads += 1;
        match held {
            Err(e) if e.raw_os_error() == Some(libc::EIO) && took < READ_DEADLINE => eio += 1,
            other => problems.push(format!(
                "round {round}: read of a handle opened before the stall: {other:?} in {took:?}"
            )),
        }
        drop(open);
        for r in &readers {
            reads += 1;
            slowest = slowest.max(r.took);
            longest_d = longest_d.max(r.longest_d);
            match &r.outcome {
                Ok(()) => right += 1,
                Err(e) if e.contains("Input/output error") => eio += 1,
                Err(e) => problems.push(format!("round {round}: {}: {e}", r.file)),
            }
            if r.took > READ_DEADLINE {
                problems.push(format!("round {round}: {} took {:?}", r.file, r.took));
            }
        }
        assert!(common::mounted(&m.dir), "the mount is gone under the stall");
        if round % 2 == 0 {
            // The stall lifted: the same mount serves every file again, once it has
            // forgotten the failures (it remembers a store failure for 2 s; a sleep, as
            // the 2 s must really pass).
            proxy.lift_stall();
            std::thread::sleep(Duration::from_millis(2500));
            for (name, p) in files(&m) {
                let sum = common::sha256(&p);
                if sum != sums[&name] {
                    problems.push(format!("round {round}: {name} after the stall: {sum}"));
                }
            }
            drop(m);
        } else {
            // Unmounted while the stall goes on.
            let t0 = Instant::now();
            let out = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(&m.dir)
                .output()
                .unwrap();
            let st = m.wait_exit(UMOUNT_DEADLINE);
            let took = t0.elapsed();
            println!("faults: {family}: round {round}: unmounted under the stall in {took:?}");
            if !out.status.success() || !st.success() || took > UMOUNT_DEADLINE {
                problems.push(format!(
                    "round {round}: fusermount3 -u under the stall: {} ({}), the daemon exited \
                     {st}, in {took:?}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            proxy.lift_stall();
        }
        common::wait_for("the held requests to go on", || proxy.held() == 0);
    }
    // Whole afterwards.
    let r = t.run(&["check", "--read-data"]);
    if !r.status.success() {
        problems.push(format!(
            "check --read-data after the stalls: {}",
            String::from_utf8_lossy(&r.stderr)
        ));
    }
    println!(
        "faults: {family}: {reads} reads under a stall: {eio} EIO, {right} right, slowest \
         {slowest:?}, longest in D state {longest_d:?}"
    );
    println!(
        "faults: {family} cases {rounds}, faults injected {}, silent corruptions {}, \
         failures {} ({:.0} s, seed {seed})",
        proxy.held_total(),
        problems.iter().filter(|p| p.contains("WRONG")).count(),
        problems.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(problems.is_empty(), "seed {seed}: {problems:#?}");
    assert!(eio > 0, "no read failed under the stall");
    family::report(
        &format!("faults {family}"),
        seed,
        rounds,
        proxy.held_total(),
        0,
        started.elapsed().as_secs_f64(),
    );
}

/// A small local repository behind a [`FaultyStore`] with two points of `src` (the second
/// without `src/b`), the first forgotten: a prune then repacks. Returns the temp dir, the
/// fault injector, the repository through it and one without faults, and the source.
fn forgotten_point_repo(
    salt: u8,
) -> (
    tempfile::TempDir,
    Arc<FaultyStore>,
    Arc<Repository>,
    Arc<Repository>,
    PathBuf,
) {
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(LocalStore::new(dir.path().join("repo")));
    let faulty = Arc::new(FaultyStore::new(inner.clone()));
    let repo = Repository::init(faulty.clone(), PASSWORD, small_repo_options(salt)).unwrap();
    repo.create_vault("v", "prune under faults").unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(1, 200_000)).unwrap();
    std::fs::write(src.join("b"), noise(2, 200_000)).unwrap();
    let opts = BackupOptions::default();
    backup(&repo, "v", Source::Trees(vec![src.clone()]), &opts).unwrap();
    std::fs::remove_file(src.join("b")).unwrap();
    backup(&repo, "v", Source::Trees(vec![src.clone()]), &opts).unwrap();
    let first = repo.list_points("v").unwrap()[0].clone();
    repo.delete_point("v", &first).unwrap();
    let clean = repo.over_store(inner);
    (dir, faulty, repo, clean, src)
}

/// Prune that repacks every pack with a chunk no point uses, without waiting for a lock.
fn prune_all() -> PruneOptions {
    PruneOptions {
        dry_run: false,
        max_unused_percent: 0.0,
        lock_wait: Duration::ZERO,
        progress: None,
    }
}

/// A store that flips bits in ranged reads while a prune repacks: the copies must be
/// verified before they replace the originals (a flipped copy with the original pack
/// deleted is data lost). The prune fails, or succeeds with copies that authenticate;
/// every point reads back right afterwards and `check --read-data` passes.
#[test]
fn bit_flips_while_repacking_never_replace_good_chunks() {
    let (_dir, faulty, repo, clean, src) = forgotten_point_repo(4);
    let prune_opts = prune_all();
    // The flips start once the mark walk has read the trees (as many ranged reads as a
    // dry run makes), so that they hit the repack's reads.
    let before = faulty.calls(Op::GetRange);
    let dry = PruneOptions {
        dry_run: true,
        ..prune_opts.clone()
    };
    assert!(prune(&repo, &dry).unwrap().packs_repacked > 0);
    let walk = (faulty.calls(Op::GetRange) - before) as u32;
    faulty.add_rule(Rule::new(Op::GetRange, "packs/", Fault::BitFlip { bit: 77 }).after(walk));
    let r = prune(&repo, &prune_opts);
    faulty.clear_rules();
    vaultfs::repo::lock::remove(&clean, true).unwrap();
    let point = clean.list_points("v").unwrap()[0].clone();
    let want = tree_contents(&src, b"src");
    let report = check(&clean, true).unwrap();
    let (ok, failed, wrong) = read_point_errors(&clean, &point, &want);
    assert_eq!(
        (ok, failed.len(), wrong.len()),
        (1, 0, 0),
        "after a prune that returned {r:?}: {failed:?} {wrong:?}; check found {:?}",
        report.errors
    );
    assert!(report.ok(), "{:?}", report.errors);
    assert!(r.is_err(), "a prune reading flipped bits succeeded");
    prune(&repo, &prune_opts).unwrap();
    let (ok, failed, wrong) = read_point_errors(&clean, &point, &want);
    assert_eq!(
        (ok, failed.len(), wrong.len()),
        (1, 0, 0),
        "{failed:?} {wrong:?}"
    );
}

/// Settings of a small local repository for the tests: a cheap key derivation (salt
/// `salt`), 16 KiB chunks, 256 KiB packs.
fn small_repo_options(salt: u8) -> InitOptions {
    InitOptions {
        kdf: KdfParams {
            memory_kib: 8 * 1024,
            iterations: 1,
            parallelism: 1,
            salt: [salt; 16],
        },
        chunker: ChunkerParams {
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
        },
        pack_size: 256 * 1024,
        zstd_level: 3,
    }
}

/// A store that returns short ranged reads: prune's repack used to cut chunks out of the
/// short span and panic (slicing past its end); it must fail with an error that says the
/// store answered short, change nothing, and a prune afterwards must succeed.
#[test]
fn short_reads_fail_a_prune_cleanly() {
    let (_dir, faulty, repo, clean, src) = forgotten_point_repo(3);
    let prune_opts = prune_all();
    faulty.add_rule(Rule::new(
        Op::GetRange,
        "packs/",
        Fault::ShortRead { missing: 100 },
    ));
    let e = prune(&repo, &prune_opts).expect_err("a prune on short reads");
    assert!(e.to_string().contains("bytes for"), "{e}");
    faulty.clear_rules();
    vaultfs::repo::lock::remove(&clean, true).unwrap();
    let r = check(&clean, true).unwrap();
    assert!(r.ok(), "{:?}", r.errors);
    prune(&repo, &prune_opts).unwrap();
    let m = repo
        .load_manifest("v", &repo.list_points("v").unwrap()[0])
        .unwrap();
    let want = tree_contents(&src, b"src");
    let (ok, failed, wrong) = read_point(&repo, &m.name, &want);
    assert_eq!((ok, failed, wrong.len()), (1, 0, 0), "{wrong:?}");
}

/// Every fault of the proxy on every kind of request it applies to, one at a time, on the
/// S3 store's calls (put, multipart put, ranged get, head, list, delete, delete many):
/// each call returns the right answer or an error, a write leaves the object whole or
/// absent (never other bytes) and no unfinished multipart upload, a listing is complete
/// or an error. The one thing a client cannot tell is a server that says an object it
/// has is missing (a 404 after a PUT on a HEAD, a listing without the newest keys): such
/// answers are counted apart, and the repository level (`http_fault_matrix`) shows they
/// cost an error or a deduplication, never bytes.
#[test]
fn every_http_fault_on_every_s3_call() {
    use fault_proxy::{HttpFault, ReqKind};
    use vaultfs::backend::s3::S3Store;
    let Some(endpoint) = common::s3_endpoint() else {
        return;
    };
    let family = "http-calls";
    let started = Instant::now();
    let proxy = fault_proxy::FaultProxy::start(&endpoint);
    let bucket = common::unique_bucket("faults-calls");
    let address = format!("s3://{bucket}/calls");
    let direct =
        Arc::new(S3Store::create_bucket_if_missing(&address, s3_options(&endpoint)).unwrap());
    let _empty = EmptyOnDrop(direct.clone(), address.clone());
    let through = S3Store::open(&address, s3_options(&proxy.endpoint())).unwrap();
    let mut tally = Tally::default();
    // Answers the store cannot tell from the truth, and multipart uploads left behind.
    let (mut told_missing, mut orphans) = (0u64, 0u64);
    let kinds = [
        ReqKind::Get,
        ReqKind::Head,
        ReqKind::Put,
        ReqKind::CreateMultipart,
        ReqKind::UploadPart,
        ReqKind::CompleteMultipart,
        ReqKind::Delete,
        ReqKind::DeleteMany,
        ReqKind::List,
    ];
    let mut n = 0u64;
    for kind in kinds {
        let mut faults: Vec<HttpFault> = kind.menu().to_vec();
        faults.dedup();
        faults.sort();
        faults.dedup();
        for fault in faults {
            n += 1;
            let label = format!("{} with {}", kind.name(), fault.name());
            let key = format!("o/{n}");
            let small = noise(n, 300_000);
            let big = noise(n, 7 << 20);
            // Written through the proxy (so that it counts as just PUT) without faults.
            through.put(&key, &small).unwrap();
            through.put(&format!("o/{n}-b"), &small[..1000]).unwrap();
            proxy.force(kind, fault);
            let ok = match kind {
                ReqKind::Get => match through.get_range(&key, 1000, 200_000) {
                    Ok(d) if d == small[1000..201_000] => true,
                    // S3 has no checksum of a range to check: the repository's chunk
                    // authentication is what catches a flip (see the matrices).
                    Ok(d) if fault == HttpFault::BitFlip && d.len() == 200_000 => {
                        told_missing += 1;
                        true
                    }
                    Ok(d) => {
                        tally.corrupt(format!("{label}: {} other bytes", d.len()));
                        true
                    }
                    Err(_) => false,
                },
                ReqKind::Head => match through.head(&key) {
                    Ok(Some(len)) if len == small.len() as u64 => true,
                    Ok(None) if fault == HttpFault::NotFoundAfterPut => {
                        told_missing += 1;
                        true
                    }
                    Ok(other) => {
                        tally.corrupt(format!("{label}: {other:?}"));
                        true
                    }
                    Err(_) => false,
                },
                ReqKind::Put
                | ReqKind::CreateMultipart
                | ReqKind::UploadPart
                | ReqKind::CompleteMultipart => {
                    let data = if kind == ReqKind::Put { &small } else { &big };
                    let key = format!("{key}-new");
                    let r = through.put(&key, data);
                    match direct.get(&key) {
                        Ok(d) if d == *data => {}
                        Err(e) if e.is_not_found() && r.is_err() => {}
                        Ok(d) => tally.corrupt(format!(
                            "{label}: the put returned {r:?}, the object has {} other bytes",
                            d.len()
                        )),
                        Err(e) => tally.fail(format!(
                            "{label}: the put returned {r:?}, the object reads {e}"
                        )),
                    }
                    // A CreateMultipartUpload whose answer is lost leaves an upload the
                    // client never heard of (its retry starts another): a leftover that
                    // prune (after 10 min) and check (after a day) abort. Anything else
                    // must leave none.
                    let left = direct.unfinished_uploads().unwrap();
                    if !left.is_empty() {
                        if kind == ReqKind::CreateMultipart
                            && fault == HttpFault::ResetBeforeHeaders
                        {
                            orphans += left.len() as u64;
                        } else {
                            tally.fail(format!("{label}: unfinished uploads left: {left:?}"));
                        }
                        // Started over a second ago (the server's times are in seconds).
                        std::thread::sleep(Duration::from_millis(1100));
                        let n = direct.abort_stale_uploads(Duration::ZERO).unwrap();
                        assert_eq!(n, left.len(), "{label}: the leftovers are aborted");
                    }
                    r.is_ok()
                }
                ReqKind::Delete => {
                    let r = through.delete(&key);
                    if r.is_ok() && direct.head(&key).unwrap().is_some() {
                        tally.fail(format!("{label}: deleted, yet the object is there"));
                    }
                    r.is_ok()
                }
                ReqKind::DeleteMany => {
                    let keys = vec![key.clone(), format!("{key}-b")];
                    match through.delete_many(&keys) {
                        Ok(failed) => {
                            for k in &keys {
                                let refused = failed.iter().any(|(f, _)| f == k);
                                if !refused && direct.head(k).unwrap().is_some() {
                                    tally.fail(format!("{label}: {k} reported deleted, is there"));
                                }
                            }
                            failed.is_empty()
                        }
                        Err(_) => false,
                    }
                }
                _ => {
                    let want: Vec<String> = direct
                        .list("o/")
                        .unwrap()
                        .into_iter()
                        .map(|o| o.key)
                        .collect();
                    match through.list("o/") {
                        Ok(got) => {
                            let got: Vec<String> = got.into_iter().map(|o| o.key).collect();
                            if got != want {
                                let missing: Vec<&String> =
                                    want.iter().filter(|k| !got.contains(k)).collect();
                                if fault == HttpFault::MissingNewest
                                    && got.iter().all(|k| want.contains(k))
                                {
                                    told_missing += 1;
                                } else {
                                    tally
                                        .corrupt(format!("{label}: a listing without {missing:?}"));
                                }
                            }
                            true
                        }
                        Err(_) => false,
                    }
                }
            };
            tally.outcome(kind.name(), ok);
            tally.cases += 1;
            println!(
                "faults: {family}: {label}: {}",
                if ok { "right" } else { "error" }
            );
        }
    }
    let faults = proxy.injected_total();
    let line = tally.summary(family, faults, &proxy.injected());
    println!(
        "faults: {family}: answers a client cannot tell from the truth (a HEAD's 404, a \
         listing without the newest keys, a flipped range): {told_missing}; multipart \
         uploads left by a lost CreateMultipartUpload answer (aborted as stale): {orphans}"
    );
    println!("{line} ({:.0} s)", started.elapsed().as_secs_f64());
    tally.assert_clean(0);
    assert!(
        faults >= tally.cases - 4,
        "{faults} faults in {} cases",
        tally.cases
    );
    family::report(
        &format!("faults {family}"),
        0,
        tally.cases,
        faults,
        0,
        started.elapsed().as_secs_f64(),
    );
}
