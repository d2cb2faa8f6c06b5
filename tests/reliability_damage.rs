//! The DAMAGE family of the reliability campaign (RELIABILITY.md): random byte flips,
//! truncations and deletions of the objects of a small local repository (packs, index
//! objects, tree chunks, manifests, vault objects, the config, key objects), each on the
//! pristine repository and undone after it.
//!
//! After each damage, through the library: opening with a damaged config or key object
//! is a clear error (never a panic); `check --read-data` reports every damage that
//! changes an object's bytes and every deleted object that something references; reading
//! every file of every point returns the right bytes or an error, never other bytes; and
//! nothing panics. Deleting a manifest is deleting its point (the manifest's creation is
//! the commit), and deleting a key object is removing that password: neither leaves a
//! trace to detect, so they are counted apart (the point is gone from the listing; the
//! password no longer opens).
//!
//! CI size: 1,000 damages; `RELIABILITY=ext`: 100,000. The seed is printed;
//! `VAULTFS_SEED=N` replays a run.

mod common;
#[path = "family/mod.rs"]
mod family;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vaultfs::backend::local::LocalStore;
use vaultfs::repo::backup::{BackupOptions, Source, backup};
use vaultfs::repo::check::check;
use vaultfs::repo::format::*;
use vaultfs::repo::{InitOptions, RepoError, Repository};

const PASSWORD: &[u8] = b"correct horse";
const SECOND: &[u8] = b"second password";

fn seed() -> u64 {
    match std::env::var("VAULTFS_SEED") {
        Ok(s) => s.trim().parse().expect("VAULTFS_SEED is a number"),
        Err(_) => {
            let mut b = [0u8; 8];
            getrandom::getrandom(&mut b).unwrap();
            u64::from_le_bytes(b) >> 1
        }
    }
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
    (0..len).map(|_| r.next() as u8).collect()
}

fn kdf(salt: u8) -> KdfParams {
    KdfParams {
        memory_kib: 8 * 1024,
        iterations: 1,
        parallelism: 1,
        salt: [salt; 16],
    }
}

/// What a point holds: path → content (files only).
type Contents = BTreeMap<Vec<u8>, Vec<u8>>;

/// Walks a backup's tree and returns every file's path and node.
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

/// Builds the pristine repository: three points of a tree with files of many sizes,
/// sharing most of their content, and a second key.
fn pristine(dir: &Path) -> (PathBuf, BTreeMap<String, Contents>) {
    let repo_dir = dir.join("repo");
    let opts = InitOptions {
        kdf: kdf(1),
        chunker: ChunkerParams {
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
        },
        pack_size: 256 * 1024,
        zstd_level: 3,
    };
    let repo = Repository::init(Arc::new(LocalStore::new(&repo_dir)), PASSWORD, opts).unwrap();
    repo.create_vault("v", "damage").unwrap();
    repo.add_key(SECOND, kdf(2)).unwrap();
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub/deep")).unwrap();
    let sizes = [0usize, 1, 100, 4095, 4096, 20_000, 70_000, 300_000];
    for (i, n) in sizes.iter().enumerate() {
        std::fs::write(src.join(format!("f{i}")), noise(i as u64, *n)).unwrap();
    }
    std::fs::write(src.join("sub/text"), b"text that compresses ".repeat(5000)).unwrap();
    std::fs::write(src.join("sub/deep/big"), noise(99, 600_000)).unwrap();
    std::os::unix::fs::symlink("f1", src.join("link")).unwrap();
    let opts = BackupOptions::default();
    backup(&repo, "v", Source::Trees(vec![src.clone()]), &opts).unwrap();
    // Point 2: one file changed in the middle, one added (dedup with point 1).
    let mut big = noise(99, 600_000);
    big[300_000..300_100].fill(7);
    std::fs::write(src.join("sub/deep/big"), big).unwrap();
    std::fs::write(src.join("new"), noise(5, 50_000)).unwrap();
    backup(&repo, "v", Source::Trees(vec![src.clone()]), &opts).unwrap();
    // Point 3: a file removed, another appended to.
    std::fs::remove_file(src.join("f5")).unwrap();
    let mut f6 = noise(6, 70_000);
    f6.extend(noise(66, 10_000));
    std::fs::write(src.join("f6"), f6).unwrap();
    backup(&repo, "v", Source::Trees(vec![src]), &opts).unwrap();
    let r = check(&repo, true).unwrap();
    assert!(r.ok(), "the pristine repository is damaged: {:?}", r.errors);
    let mut expected = BTreeMap::new();
    for p in repo.list_points("v").unwrap() {
        let m = repo.load_manifest("v", &p).unwrap();
        let mut c = Contents::new();
        for b in &m.backups {
            for (path, node) in files(&repo, b).unwrap() {
                let mut data = Vec::new();
                repo.read_file(&node, &mut data).unwrap();
                c.insert(path, data);
            }
        }
        expected.insert(p, c);
    }
    assert_eq!(expected.len(), 3);
    (repo_dir, expected)
}

/// What is damaged: a whole object, or the bytes of one tree chunk inside a pack.
#[derive(Clone, Debug)]
enum Target {
    Object {
        kind: &'static str,
        path: PathBuf,
    },
    Tree {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Flip,
    Truncate,
    Delete,
}

fn targets(repo_dir: &Path) -> Vec<Target> {
    let mut out = Vec::new();
    let mut walk = |kind: &'static str, sub: &str| {
        let mut stack = vec![repo_dir.join(sub)];
        while let Some(d) = stack.pop() {
            if d.is_file() {
                out.push(Target::Object { kind, path: d });
                continue;
            }
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if !e.file_name().to_string_lossy().starts_with(".tmp-") {
                    stack.push(p);
                }
            }
        }
    };
    walk("config", "config");
    walk("key", "keys");
    walk("pack", "packs");
    walk("index", "index");
    walk("manifest", "points");
    walk("vault", "vaults");
    let repo = Repository::open(Arc::new(LocalStore::new(repo_dir)), PASSWORD).unwrap();
    for o in repo.store().list("index/").unwrap() {
        let idx = repo.load_pack_index(&o.key).unwrap();
        for e in idx.entries.iter().filter(|e| e.kind == ChunkKind::Tree) {
            out.push(Target::Tree {
                path: repo_dir.join(idx.pack.key()),
                offset: e.offset as u64,
                len: e.stored_len as u64,
            });
        }
    }
    out
}

#[derive(Default, Debug)]
struct Counts {
    by_kind: BTreeMap<(String, Kind), u64>,
    detected: u64,
    /// Damage that must be detected.
    must_detect: u64,
    /// Deleted manifests (points gone) and key objects (passwords gone).
    untraceable: u64,
    open_errors: BTreeMap<String, u64>,
    files_readable: u64,
    files_failed: u64,
    wrong_bytes: u64,
    panics: u64,
    undetected: Vec<String>,
}

fn error_class(e: &RepoError) -> &'static str {
    match e {
        RepoError::Config { .. } => "config",
        RepoError::Damaged { .. } => "damaged",
        RepoError::WrongPassword(_) => "wrong-password",
        RepoError::NotARepository(_) => "not-a-repository",
        _ => "other",
    }
}

/// Reads every file of every expected point; returns (readable, failed, wrong).
fn read_all(repo: &Repository, expected: &BTreeMap<String, Contents>) -> (u64, u64, Vec<String>) {
    let (mut ok, mut failed, mut wrong) = (0, 0, Vec::new());
    for (point, contents) in expected {
        let got: BTreeMap<Vec<u8>, vaultfs::repo::Result<Vec<u8>>> =
            match repo.load_manifest("v", point) {
                Err(_) => BTreeMap::new(),
                Ok(m) => {
                    let mut got = BTreeMap::new();
                    for b in &m.backups {
                        if let Ok(list) = files(repo, b) {
                            for (path, node) in list {
                                let mut data = Vec::new();
                                let r = repo.read_file(&node, &mut data).map(|()| data);
                                got.insert(path, r);
                            }
                        }
                    }
                    got
                }
            };
        for (path, want) in contents {
            match got.get(path) {
                Some(Ok(data)) if data == want => ok += 1,
                Some(Ok(data)) => wrong.push(format!(
                    "{point}/{}: {} bytes, not the {} stored",
                    String::from_utf8_lossy(path),
                    data.len(),
                    want.len()
                )),
                Some(Err(_)) | None => failed += 1,
            }
        }
        for path in got.keys().filter(|p| !contents.contains_key(*p)) {
            wrong.push(format!(
                "{point}/{}: a file that was never stored",
                String::from_utf8_lossy(path)
            ));
        }
    }
    (ok, failed, wrong)
}

/// Applies one damage; returns the original bytes to put back.
fn damage(target: &Target, kind: Kind, rng: &mut Rng) -> (PathBuf, Vec<u8>) {
    let (path, range) = match target {
        Target::Object { path, .. } => {
            let len = std::fs::metadata(path).unwrap().len();
            (path.clone(), (0, len))
        }
        Target::Tree { path, offset, len } => (path.clone(), (*offset, *len)),
    };
    let original = std::fs::read(&path).unwrap();
    let mut data = original.clone();
    match kind {
        Kind::Flip => {
            let at = (range.0 + rng.below(range.1)) as usize;
            data[at] ^= 1 + rng.below(255) as u8;
            std::fs::write(&path, &data).unwrap();
        }
        Kind::Truncate => {
            let at = (range.0 + rng.below(range.1)) as usize;
            data.truncate(at);
            std::fs::write(&path, &data).unwrap();
        }
        Kind::Delete => std::fs::remove_file(&path).unwrap(),
    }
    (path, original)
}

#[test]
fn random_damage_is_detected_and_never_read_as_data() {
    let seed = seed();
    let n: u64 = if std::env::var("RELIABILITY").is_ok_and(|v| v == "ext") {
        100_000
    } else {
        1_000
    };
    println!("damage: seed {seed} (VAULTFS_SEED={seed} replays it), {n} damages");
    let dir = tempfile::tempdir().unwrap();
    let (repo_dir, expected) = pristine(dir.path());
    let targets = targets(&repo_dir);
    let mut rng = Rng(seed);
    let mut c = Counts::default();
    let started = std::time::Instant::now();
    for i in 0..n {
        let target = &targets[rng.below(targets.len() as u64) as usize];
        let kind = match (target, rng.below(10)) {
            (Target::Tree { .. }, _) => Kind::Flip,
            (_, 0..=5) => Kind::Flip,
            (_, 6..=7) => Kind::Truncate,
            _ => Kind::Delete,
        };
        let what = match target {
            Target::Object { kind, .. } => kind.to_string(),
            Target::Tree { .. } => "tree".to_string(),
        };
        *c.by_kind.entry((what.clone(), kind)).or_default() += 1;
        let (path, original) = damage(target, kind, &mut rng);
        let label = format!("damage {i}: {kind:?} of {what} {}", path.display());
        let untraceable = kind == Kind::Delete && (what == "manifest" || what == "key");
        if untraceable {
            c.untraceable += 1;
        } else {
            c.must_detect += 1;
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let store = Arc::new(LocalStore::new(&repo_dir));
            // The second password is tried only where it can tell something (three
            // Argon2id runs otherwise spent on every damage).
            let second = if what == "key" || what == "config" {
                Repository::open(store.clone(), SECOND).map(|_| ())
            } else {
                Ok(())
            };
            let repo = match Repository::open(store, PASSWORD) {
                Ok(r) => r,
                Err(e) => {
                    // The config (or, for the second password, a key) is damaged: a
                    // clear error is the detection.
                    return (Some(error_class(&e).to_string()), true, (0, 0, Vec::new()));
                }
            };
            let report = check(&repo, true);
            let detected = match &report {
                Ok(r) => !r.ok(),
                Err(_) => true,
            };
            // A damaged or deleted key object must not open with its password.
            let detected = if what == "key" {
                (detected || untraceable) && second.is_err()
            } else {
                detected
            };
            (None, detected, read_all(&repo, &expected))
        }));
        match outcome {
            Err(_) => {
                c.panics += 1;
                c.undetected.push(format!("{label}: PANIC"));
            }
            Ok((open_error, detected, (ok, failed, wrong))) => {
                if let Some(e) = open_error {
                    *c.open_errors.entry(e).or_default() += 1;
                }
                if detected && !untraceable {
                    c.detected += 1;
                } else if !untraceable {
                    c.undetected.push(format!("{label}: check passed"));
                } else if what == "key" && !detected {
                    c.undetected
                        .push(format!("{label}: the password still opens"));
                }
                c.files_readable += ok;
                c.files_failed += failed;
                c.wrong_bytes += wrong.len() as u64;
                for w in wrong {
                    c.undetected.push(format!("{label}: WRONG BYTES {w}"));
                }
            }
        }
        std::fs::write(&path, &original).unwrap();
        if (i + 1) % 100 == 0 {
            println!(
                "damage: {} done in {:.1} s, {} problems so far",
                i + 1,
                started.elapsed().as_secs_f64(),
                c.undetected.len()
            );
        }
    }
    let kinds: Vec<String> = c
        .by_kind
        .iter()
        .map(|((w, k), n)| format!("{w} {k:?} {n}"))
        .collect();
    println!("damage: by kind: {}", kinds.join(", "));
    println!(
        "damage: {n} damages in {:.1} s: {} of {} detectable ones detected, {} untraceable \
         deletions (manifests, keys); opening failed clearly {:?}; files read back right {}, \
         failed {}, wrong bytes {}, panics {}; seed {seed}",
        started.elapsed().as_secs_f64(),
        c.detected,
        c.must_detect,
        c.untraceable,
        c.open_errors,
        c.files_readable,
        c.files_failed,
        c.wrong_bytes,
        c.panics
    );
    assert!(
        c.undetected.is_empty(),
        "seed {seed}: {} problems:\n{}",
        c.undetected.len(),
        c.undetected.join("\n")
    );
    assert!(c.files_failed > 0 && c.files_readable > 0);
    family::report(
        "damage",
        seed,
        n,
        n,
        c.undetected.len() as u64 + c.wrong_bytes + c.panics,
        started.elapsed().as_secs_f64(),
    );
}

/// The same damage seen through a real mount: for a seeded sample of damages to packs and
/// tree chunks, every file of every point read with `read(2)` through FUSE is its stored
/// bytes or fails with EIO (never other bytes, never another error), and the daemon
/// survives to unmount cleanly.
#[test]
fn damage_read_through_a_mount_is_eio_never_other_bytes() {
    if !common::fuse_available() {
        return;
    }
    let seed = seed();
    let n: u64 = if std::env::var("RELIABILITY").is_ok_and(|v| v == "ext") {
        1_000
    } else {
        60
    };
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (repo_dir, expected) = pristine(dir.path());
    let data_targets: Vec<Target> = targets(&repo_dir)
        .into_iter()
        .filter(|t| matches!(t, Target::Tree { .. } | Target::Object { kind: "pack", .. }))
        .collect();
    let mut rng = Rng(seed);
    let (mut ok, mut eio, mut problems) = (0u64, 0u64, Vec::new());
    for i in 0..n {
        let target = &data_targets[rng.below(data_targets.len() as u64) as usize];
        let kind = match (target, rng.below(10)) {
            (Target::Tree { .. }, _) | (_, 0..=5) => Kind::Flip,
            (_, 6..=7) => Kind::Truncate,
            _ => Kind::Delete,
        };
        let (path, original) = damage(target, kind, &mut rng);
        let label = format!("mount damage {i}: {kind:?} of {}", path.display());
        let mnt = dir.path().join(format!("mnt-{i}"));
        std::fs::create_dir_all(&mnt).unwrap();
        let log = dir.path().join(format!("mount-{i}.log"));
        let child = std::process::Command::new(common::bin())
            .arg("mount")
            .arg(&mnt)
            .args(["--no-schedule", "--cache-size", "32M"])
            .env("VAULTFS_REPO", &repo_dir)
            .env("VAULTFS_PASSWORD", std::ffi::OsStr::from_bytes(PASSWORD))
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut m = common::Mount {
            child: Some(child),
            dir: mnt.clone(),
            log,
            started: std::time::Instant::now(),
        };
        common::wait_for("the mount", || common::mounted(&mnt));
        for (point, contents) in &expected {
            for (file, want) in contents {
                let p = mnt
                    .join("v")
                    .join(point)
                    .join(std::ffi::OsStr::from_bytes(file.as_slice()));
                match std::fs::read(&p) {
                    Ok(data) if &data == want => ok += 1,
                    Ok(data) => problems.push(format!(
                        "{label}: {} read {} bytes, not the {} stored",
                        p.display(),
                        data.len(),
                        want.len()
                    )),
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => eio += 1,
                    Err(e) => problems.push(format!("{label}: {}: {e}", p.display())),
                }
            }
        }
        let _ = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&mnt)
            .status();
        let st = m.wait_exit(std::time::Duration::from_secs(30));
        if !st.success() {
            problems.push(format!(
                "{label}: the daemon ended with {st}: {}",
                m.log_text()
            ));
        }
        drop(m);
        std::fs::write(&path, &original).unwrap();
    }
    println!(
        "damage through the mount: {n} damages, {ok} files read right, {eio} EIO, {} problems; \
         seed {seed}",
        problems.len()
    );
    assert!(problems.is_empty(), "seed {seed}:\n{}", problems.join("\n"));
    assert!(
        eio > 0 && ok > 0,
        "the sample reached no damaged file ({ok} right, {eio} EIO)"
    );
    family::report(
        "damage through the mount",
        seed,
        n,
        n,
        0,
        started.elapsed().as_secs_f64(),
    );
}
