//! The filesystem against a model (RELIABILITY.md, "The filesystem against a model").
//!
//! - `model_random_trees`: random trees (files of 0 B up to 64 MiB, some sparse, dirs,
//!   symlinks, hardlinks, user xattrs, non-UTF-8 and 255-byte names, modes, owners,
//!   nanosecond mtimes) are made on disk from a model, backed up with the real binary,
//!   mounted, and every entry of the mount is compared with the model: stat (type, mode,
//!   owner, size, mtime to the nanosecond, nlink and shared inode numbers of hardlinks),
//!   readdir (the exact set of names), readlink, listxattr/getxattr and the content.
//!   Seeded: the seed is printed, `VAULTFS_SEED` replays it; a failing case is shrunk and
//!   printed, to be kept in [`REGRESSIONS`].
//! - `model_mutations_are_erofs`: every mutating syscall on every file type of a backup
//!   (and on vaults, points and `latest`, except the documented mkdir/rmdir of vaults)
//!   fails with EROFS and changes nothing.
//! - `model_fio_verify_only`: fio-written files (crc32c verify headers) backed up and
//!   verified through the mount by 16 concurrent fio readers in random order (a read job
//!   with `--verify`: see the test for why not `--verify_only`).
//! - `model_reads_interrupted_by_signals`: a reader interrupted by a signal every
//!   millisecond (handler without SA_RESTART) gets data or EINTR, never EIO, and the
//!   right bytes.
//!
//! Sizes: CI by default; `RELIABILITY=ext` runs more cases, bigger files and 1 GiB of fio.

mod common;
#[path = "family/mod.rs"]
mod family;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Mount, TestRepo, fuse_available};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use rustix::fs::{AtFlags, CWD, Mode, Timespec, Timestamps};
use rustix::io::Errno;

fn ext() -> bool {
    std::env::var("RELIABILITY").is_ok_and(|v| v == "ext")
}

/// The seed of a campaign: `VAULTFS_SEED`, or one drawn from the clock; printed.
fn seed(family: &str) -> u64 {
    let s = std::env::var("VAULTFS_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{family}: seed {s} (replay: VAULTFS_SEED={s})");
    s
}

/// Seeds of shrunk failures, replayed by every run (one batch each).
const REGRESSIONS: &[u64] = &[];

// ------------------------------------------------------------------------ the model

#[derive(Debug, Clone)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

#[derive(Debug, Clone)]
enum Node {
    /// Content: `head` bytes of data, a hole of `hole` bytes, then `tail` bytes of data
    /// (the data is [`pattern`] of `salt`, at each byte's offset).
    File {
        head: u64,
        hole: u64,
        tail: u64,
        salt: u64,
        meta: Meta,
    },
    Dir {
        children: BTreeMap<Vec<u8>, Node>,
        meta: Meta,
    },
    Symlink {
        target: Vec<u8>,
        mtime: (i64, u32),
    },
    /// Another name of the `n`-th regular file of the tree (in creation order; none:
    /// the name is left out).
    Hardlink(usize),
}

/// The byte at `off` of a file's data.
fn pattern(salt: u64, off: u64) -> u8 {
    let mut x = salt ^ (off / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x >> ((off % 8) * 8)) as u8
}

fn expected(head: u64, hole: u64, tail: u64, salt: u64, off: u64) -> u8 {
    if off < head || off >= head + hole && off < head + hole + tail {
        pattern(salt, off)
    } else {
        0
    }
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    let short = proptest::collection::vec(1u8..=255, 1..16);
    let long = proptest::collection::vec(1u8..=255, 255..=255);
    prop_oneof![12 => short, 1 => long]
        .prop_map(|v| {
            v.into_iter()
                .map(|b| if b == b'/' { b'_' } else { b })
                .collect()
        })
        .prop_filter("dot names", |n: &Vec<u8>| n != b"." && n != b"..")
}

fn meta(dir: bool) -> impl Strategy<Value = Meta> {
    let mode = if dir {
        prop_oneof![Just(0o755u32), Just(0o700), Just(0o1777), Just(0o2750)].boxed()
    } else {
        prop_oneof![
            Just(0o644u32),
            Just(0o600),
            Just(0o755),
            Just(0o4755),
            Just(0o2644),
            Just(0o1644),
            Just(0o000)
        ]
        .boxed()
    };
    let xattr_name = proptest::collection::vec(b'a'..=b'z', 1..12).prop_map(|mut n| {
        let mut full = b"user.".to_vec();
        full.append(&mut n);
        full
    });
    (
        mode,
        prop_oneof![Just(0u32), Just(1000), Just(65534)],
        prop_oneof![Just(0u32), Just(100), Just(65534)],
        (0i64..4_102_444_800, 0u32..1_000_000_000),
        proptest::collection::btree_map(
            xattr_name,
            proptest::collection::vec(any::<u8>(), 0..64),
            0..3,
        ),
    )
        .prop_map(|(mode, uid, gid, mtime, xattrs)| Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
}

fn node() -> impl Strategy<Value = Node> {
    let big = if ext() { 64u64 << 20 } else { 4 << 20 };
    let size = prop_oneof![
        3 => Just(0u64),
        20 => 0u64..4096,
        6 => 4096u64..300_000,
        1 => 300_000u64..=big,
    ];
    let hole = prop_oneof![6 => Just(0u64), 1 => 1u64..(8 << 20)];
    let file = (size.clone(), hole, size, any::<u64>(), meta(false)).prop_map(
        |(head, hole, tail, salt, meta)| {
            // Without a hole, one data run.
            let tail = if hole == 0 { 0 } else { tail % 100_000 };
            Node::File {
                head,
                hole,
                tail,
                salt,
                meta,
            }
        },
    );
    let link = (
        proptest::collection::vec(1u8..=255, 1..60),
        (0i64..4_102_444_800, 0u32..1_000_000_000),
    )
        .prop_map(|(target, mtime)| Node::Symlink { target, mtime });
    let hard = (0usize..8).prop_map(Node::Hardlink);
    let leaf = prop_oneof![8 => file, 2 => link, 1 => hard];
    leaf.prop_recursive(3, 48, 6, |inner| {
        (
            proptest::collection::btree_map(name(), inner, 0..6),
            meta(true),
        )
            .prop_map(|(children, meta)| Node::Dir { children, meta })
    })
}

/// A case: the children of the backed-up directory.
fn tree() -> impl Strategy<Value = BTreeMap<Vec<u8>, Node>> {
    proptest::collection::btree_map(name(), node(), 0..8)
}

/// What the mount must show, flattened: relative path → expected entry.
#[derive(Debug)]
enum Want {
    File {
        head: u64,
        hole: u64,
        tail: u64,
        salt: u64,
        meta: Meta,
        /// Index of its hardlink group (the file's own index), names in the group.
        group: usize,
    },
    Dir {
        names: Vec<Vec<u8>>,
        meta: Meta,
    },
    Symlink {
        target: Vec<u8>,
        mtime: (i64, u32),
    },
}

fn p(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = rel.to_vec();
    if !v.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

fn ts(t: (i64, u32)) -> Timestamps {
    let t = Timespec {
        tv_sec: t.0,
        tv_nsec: t.1 as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

struct Built {
    want: BTreeMap<Vec<u8>, Want>,
    /// Relative paths of the regular files, in creation order.
    files: Vec<Vec<u8>>,
    /// Group index → number of names.
    nlink: BTreeMap<usize, u64>,
    xattrs: bool,
}

fn write_file(path: &Path, head: u64, hole: u64, tail: u64, salt: u64) {
    let mut f = fs::File::create(path).unwrap();
    let mut buf = Vec::with_capacity(1 << 20);
    let mut put = |f: &mut fs::File, from: u64, len: u64| {
        let mut off = from;
        while off < from + len {
            let n = (from + len - off).min(1 << 20);
            buf.clear();
            buf.extend((off..off + n).map(|o| pattern(salt, o)));
            f.write_all(&buf).unwrap();
            off += n;
        }
    };
    put(&mut f, 0, head);
    if hole > 0 {
        f.seek(SeekFrom::Start(head + hole)).unwrap();
        put(&mut f, head + hole, tail);
        f.set_len(head + hole + tail).unwrap();
    }
}

fn set_meta(path: &Path, m: &Meta, b: &mut Built) {
    for (k, v) in &m.xattrs {
        match xattr::set(path, OsStr::from_bytes(k), v) {
            Ok(()) => {}
            // A source file system without user xattrs: the case checks none.
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => b.xattrs = false,
            Err(e) => panic!("setxattr {}: {e}", path.display()),
        }
    }
    rustix::fs::chownat(
        CWD,
        path,
        Some(rustix::process::Uid::from_raw(m.uid)),
        Some(rustix::process::Gid::from_raw(m.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(m.mode)).unwrap();
}

/// Makes `children` under `root/rel` and records what the mount must show; the names
/// made (a hardlink to a file not made yet is left out).
fn build(
    root: &Path,
    rel: &[u8],
    children: &BTreeMap<Vec<u8>, Node>,
    b: &mut Built,
) -> Vec<Vec<u8>> {
    let mut names = Vec::new();
    for (name, n) in children {
        let r = join(rel, name);
        let path = p(root, &r);
        match n {
            Node::File {
                head,
                hole,
                tail,
                salt,
                meta,
            } => {
                write_file(&path, *head, *hole, *tail, *salt);
                set_meta(&path, meta, b);
                rustix::fs::utimensat(CWD, &path, &ts(meta.mtime), AtFlags::empty()).unwrap();
                let group = b.files.len();
                b.files.push(r.clone());
                b.nlink.insert(group, 1);
                b.want.insert(
                    r,
                    Want::File {
                        head: *head,
                        hole: *hole,
                        tail: *tail,
                        salt: *salt,
                        meta: meta.clone(),
                        group,
                    },
                );
            }
            Node::Dir { children, meta } => {
                fs::create_dir(&path).unwrap();
                let names = build(root, &r, children, b);
                set_meta(&path, meta, b);
                rustix::fs::utimensat(CWD, &path, &ts(meta.mtime), AtFlags::empty()).unwrap();
                b.want.insert(
                    r,
                    Want::Dir {
                        names,
                        meta: meta.clone(),
                    },
                );
            }
            Node::Symlink { target, mtime } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path).unwrap();
                rustix::fs::utimensat(CWD, &path, &ts(*mtime), AtFlags::SYMLINK_NOFOLLOW).unwrap();
                b.want.insert(
                    r,
                    Want::Symlink {
                        target: target.clone(),
                        mtime: *mtime,
                    },
                );
            }
            Node::Hardlink(i) => {
                let Some(first) = b.files.get(*i).cloned() else {
                    continue;
                };
                fs::hard_link(p(root, &first), &path).unwrap();
                let Some(Want::File {
                    head,
                    hole,
                    tail,
                    salt,
                    meta,
                    group,
                }) = b.want.get(&first)
                else {
                    unreachable!("files lists regular files")
                };
                let w = Want::File {
                    head: *head,
                    hole: *hole,
                    tail: *tail,
                    salt: *salt,
                    meta: meta.clone(),
                    group: *group,
                };
                *b.nlink.entry(*group).or_default() += 1;
                b.want.insert(r, w);
            }
        }
        if b.want.contains_key(&join(rel, name)) {
            names.push(name.clone());
        }
    }
    names
}

/// Makes the case's tree at `root` (which must not exist).
fn make_case(root: &Path, children: &BTreeMap<Vec<u8>, Node>) -> Built {
    fs::create_dir(root).unwrap();
    let mut b = Built {
        want: BTreeMap::new(),
        files: Vec::new(),
        nlink: BTreeMap::new(),
        xattrs: true,
    };
    let names = build(root, b"", children, &mut b);
    b.want.insert(
        Vec::new(),
        Want::Dir {
            names,
            meta: Meta {
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: (1_700_000_000, 123_456_789),
                xattrs: BTreeMap::new(),
            },
        },
    );
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    rustix::fs::utimensat(
        CWD,
        root,
        &ts((1_700_000_000, 123_456_789)),
        AtFlags::empty(),
    )
    .unwrap();
    b
}

fn check_meta(path: &Path, st: &fs::Metadata, m: &Meta, xattrs: bool) -> Result<(), String> {
    let d = path.display();
    if st.mode() & 0o7777 != m.mode {
        return Err(format!(
            "{d}: mode {:o}, want {:o}",
            st.mode() & 0o7777,
            m.mode
        ));
    }
    if (st.uid(), st.gid()) != (m.uid, m.gid) {
        return Err(format!(
            "{d}: owner {}:{}, want {}:{}",
            st.uid(),
            st.gid(),
            m.uid,
            m.gid
        ));
    }
    if (st.mtime(), st.mtime_nsec() as u32) != m.mtime {
        return Err(format!(
            "{d}: mtime {}.{:09}, want {}.{:09}",
            st.mtime(),
            st.mtime_nsec(),
            m.mtime.0,
            m.mtime.1
        ));
    }
    if xattrs {
        let mut got = BTreeMap::new();
        for k in xattr::list(path).map_err(|e| format!("{d}: listxattr: {e}"))? {
            if !k.as_bytes().starts_with(b"user.") {
                continue;
            }
            let v = xattr::get(path, &k)
                .map_err(|e| format!("{d}: getxattr {k:?}: {e}"))?
                .unwrap_or_default();
            got.insert(k.as_bytes().to_vec(), v);
        }
        if got != m.xattrs {
            return Err(format!("{d}: xattrs {got:?}, want {:?}", m.xattrs));
        }
    }
    Ok(())
}

/// Compares the mounted backup at `root` with the model.
fn check_case(root: &Path, b: &Built) -> Result<(), String> {
    let mut inos: BTreeMap<usize, u64> = BTreeMap::new();
    for (rel, w) in &b.want {
        let path = p(root, rel);
        let d = path.display();
        let st = fs::symlink_metadata(&path).map_err(|e| format!("{d}: lstat: {e}"))?;
        match w {
            Want::Dir { names, meta } => {
                if !st.is_dir() {
                    return Err(format!("{d}: not a directory"));
                }
                if !rel.is_empty() {
                    check_meta(&path, &st, meta, b.xattrs)?;
                }
                let mut got: Vec<Vec<u8>> = fs::read_dir(&path)
                    .map_err(|e| format!("{d}: readdir: {e}"))?
                    .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{d}: readdir: {e}"))?;
                got.sort();
                let mut want = names.clone();
                want.sort();
                if got != want {
                    return Err(format!("{d}: readdir {got:?}, want {want:?}"));
                }
            }
            Want::Symlink { target, mtime } => {
                if !st.file_type().is_symlink() {
                    return Err(format!("{d}: not a symlink"));
                }
                let t = fs::read_link(&path).map_err(|e| format!("{d}: readlink: {e}"))?;
                if t.as_os_str().as_bytes() != target.as_slice() {
                    return Err(format!("{d}: readlink {t:?}, want {target:?}"));
                }
                if (st.mtime(), st.mtime_nsec() as u32) != *mtime {
                    return Err(format!(
                        "{d}: symlink mtime {}.{}",
                        st.mtime(),
                        st.mtime_nsec()
                    ));
                }
            }
            Want::File {
                head,
                hole,
                tail,
                salt,
                meta,
                group,
            } => {
                if !st.is_file() {
                    return Err(format!("{d}: not a regular file"));
                }
                check_meta(&path, &st, meta, b.xattrs)?;
                let size = head + hole + tail;
                if st.len() != size {
                    return Err(format!("{d}: size {}, want {size}", st.len()));
                }
                let nlink = b.nlink.get(group).copied().unwrap_or(1);
                if st.nlink() != nlink {
                    return Err(format!("{d}: nlink {}, want {nlink}", st.nlink()));
                }
                if let Some(first) = inos.insert(*group, st.ino())
                    && first != st.ino()
                {
                    return Err(format!(
                        "{d}: hardlink with inode {}, not {first}",
                        st.ino()
                    ));
                }
                let mut f = fs::File::open(&path).map_err(|e| format!("{d}: open: {e}"))?;
                let mut buf = vec![0u8; 1 << 20];
                let mut off = 0u64;
                loop {
                    let n = f
                        .read(&mut buf)
                        .map_err(|e| format!("{d}: read at {off}: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    for (i, &got) in buf[..n].iter().enumerate() {
                        let o = off + i as u64;
                        if got != expected(*head, *hole, *tail, *salt, o) {
                            return Err(format!("{d}: byte {o} differs"));
                        }
                    }
                    off += n as u64;
                }
                if off != size {
                    return Err(format!("{d}: read {off} bytes, want {size}"));
                }
            }
        }
    }
    Ok(())
}

/// Backs up every tree of `cases` in one point (one backup each, `c0`, `c1`, ...),
/// mounts and checks each; the result of each case.
fn run_batch(cases: &[BTreeMap<Vec<u8>, Node>]) -> Vec<Result<(), String>> {
    let r = TestRepo::new();
    let mut built = Vec::new();
    let mut paths = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let root = r.path(&format!("c{i}"));
        built.push(make_case(&root, c));
        paths.push(root);
    }
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    r.backup(&refs);
    let m = r.mount(&[], &[]);
    let out = built
        .iter()
        .enumerate()
        .map(|(i, b)| check_case(&m.p(&format!("v/latest/c{i}")), b))
        .collect();
    drop(m);
    out
}

/// Shrinks the failing case `tree` (one mount per step, at most `steps`); the smallest
/// failing value and its error.
fn shrink(
    mut tree: impl ValueTree<Value = BTreeMap<Vec<u8>, Node>>,
    mut err: String,
    steps: usize,
) -> (BTreeMap<Vec<u8>, Node>, String) {
    let mut smallest = tree.current();
    let mut n = 0;
    if !tree.simplify() {
        return (smallest, err);
    }
    while n < steps {
        n += 1;
        let v = tree.current();
        match run_batch(std::slice::from_ref(&v)).remove(0) {
            Err(e) => {
                smallest = v;
                err = e;
                if !tree.simplify() {
                    break;
                }
            }
            Ok(()) => {
                if !tree.complicate() {
                    break;
                }
            }
        }
    }
    (smallest, err)
}

fn campaign(seed: u64, batches: usize, per_batch: usize) -> usize {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let strategy = tree();
    let mut ran = 0;
    for batch in 0..batches {
        let trees: Vec<_> = (0..per_batch)
            .map(|_| strategy.new_tree(&mut runner).expect("a tree"))
            .collect();
        let values: Vec<_> = trees.iter().map(|t| t.current()).collect();
        let results = run_batch(&values);
        ran += values.len();
        for (tree, res) in trees.into_iter().zip(results) {
            if let Err(e) = res {
                let (small, err) = shrink(tree, e, 40);
                panic!(
                    "seed {seed}, batch {batch}: the mount differs from the model: {err}\n\
                     smallest failing tree (keep the seed in REGRESSIONS): {small:#?}"
                );
            }
        }
    }
    ran
}

#[test]
fn model_random_trees() {
    if !fuse_available() {
        return;
    }
    let started = std::time::Instant::now();
    let s = seed("model_random_trees");
    let (batches, per) = if ext() { (32, 8) } else { (8, 8) };
    let mut ran = campaign(s, batches, per);
    for &r in REGRESSIONS {
        ran += campaign(r, 1, per);
    }
    eprintln!(
        "model_random_trees: {ran} cases, 0 failures, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    family::report(
        "model random trees",
        s,
        ran as u64,
        0,
        0,
        started.elapsed().as_secs_f64(),
    );
    assert!(ran >= 64);
}

// ------------------------------------------------------------------ writes: EROFS

fn erofs<T: std::fmt::Debug>(what: &str, r: rustix::io::Result<T>, fails: &mut Vec<String>) {
    match r {
        Err(Errno::ROFS) => {}
        other => fails.push(format!("{what}: {other:?}, want EROFS")),
    }
}

/// Every mutating call on `path` (of any type) and, for a directory, inside it. Opening
/// a fifo or a device for writing is the fifo's or the device's business, not the file
/// system's (the kernel does not ask it): `special` leaves those opens out.
fn mutations(path: &Path, is_dir: bool, is_link: bool, special: bool, fails: &mut Vec<String>) {
    use rustix::fs::OFlags;
    let d = path.display().to_string();
    let nofollow = if is_link {
        OFlags::NOFOLLOW
    } else {
        OFlags::empty()
    };
    if !is_dir && !is_link && !special {
        for (n, f) in [
            ("O_WRONLY", OFlags::WRONLY),
            ("O_RDWR", OFlags::RDWR),
            ("O_WRONLY|O_TRUNC", OFlags::WRONLY | OFlags::TRUNC),
            ("O_WRONLY|O_APPEND", OFlags::WRONLY | OFlags::APPEND),
            ("O_RDONLY|O_TRUNC", OFlags::RDONLY | OFlags::TRUNC),
        ] {
            erofs(
                &format!("open({d}, {n})"),
                rustix::fs::open(path, f | nofollow, Mode::empty()),
                fails,
            );
        }
        // truncate(2) by path (coreutils `truncate` calls open(O_WRONLY|O_CREAT) first,
        // so the path form is had through the shell's error message).
        let out = Command::new("truncate")
            .args(["-c", "-s", "0"])
            .arg(path)
            .output()
            .unwrap();
        let msg = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !msg.contains("Read-only file system") {
            fails.push(format!("truncate {d}: {msg}"));
        }
        // fallocate(2) needs a descriptor open for writing, which cannot be had: on the
        // read-only descriptor the kernel answers EBADF before the file system is asked.
        if let Ok(fd) = rustix::fs::open(path, OFlags::RDONLY, Mode::empty()) {
            match rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, 4096) {
                Err(Errno::BADF) | Err(Errno::ROFS) => {}
                other => fails.push(format!("fallocate({d}): {other:?}")),
            }
        }
    }
    if is_dir {
        let child = path.join("new");
        erofs(
            &format!("creat({d}/new)"),
            rustix::fs::open(
                &child,
                OFlags::CREATE | OFlags::WRONLY | OFlags::EXCL,
                Mode::from_raw_mode(0o644),
            ),
            fails,
        );
        erofs(
            &format!("mkdir({d}/new)"),
            rustix::fs::mkdir(&child, Mode::from_raw_mode(0o755)),
            fails,
        );
        erofs(
            &format!("symlink({d}/new)"),
            rustix::fs::symlink("x", &child),
            fails,
        );
        erofs(
            &format!("mknod fifo({d}/new)"),
            rustix::fs::mknodat(
                CWD,
                &child,
                rustix::fs::FileType::Fifo,
                Mode::from_raw_mode(0o644),
                0,
            ),
            fails,
        );
    } else {
        erofs(&format!("unlink({d})"), rustix::fs::unlink(path), fails);
        erofs(
            &format!("link({d})"),
            rustix::fs::linkat(
                CWD,
                path,
                CWD,
                path.with_extension("hardlink"),
                AtFlags::empty(),
            ),
            fails,
        );
    }
    if is_dir {
        erofs(&format!("rmdir({d})"), rustix::fs::rmdir(path), fails);
    }
    erofs(
        &format!("rename({d})"),
        rustix::fs::rename(path, path.with_extension("renamed")),
        fails,
    );
    if !is_link {
        erofs(
            &format!("chmod({d})"),
            rustix::fs::chmod(path, Mode::from_raw_mode(0o777)),
            fails,
        );
    }
    erofs(
        &format!("chown({d})"),
        rustix::fs::chownat(
            CWD,
            path,
            Some(rustix::process::Uid::from_raw(4242)),
            None,
            AtFlags::SYMLINK_NOFOLLOW,
        ),
        fails,
    );
    erofs(
        &format!("utimensat({d})"),
        rustix::fs::utimensat(CWD, path, &ts((1, 2)), AtFlags::SYMLINK_NOFOLLOW),
        fails,
    );
    if !is_link {
        // The kernel refuses user.* on special files itself (EPERM): trusted.* (root)
        // reaches the file system.
        let (new, keep) = if special {
            ("trusted.new", "trusted.keep")
        } else {
            ("user.new", "user.keep")
        };
        erofs(
            &format!("setxattr({d})"),
            rustix::fs::setxattr(path, new, b"v", rustix::fs::XattrFlags::empty()),
            fails,
        );
        erofs(
            &format!("removexattr({d})"),
            rustix::fs::removexattr(path, keep),
            fails,
        );
    }
}

#[test]
fn model_mutations_are_erofs() {
    if !fuse_available() {
        return;
    }
    let started = std::time::Instant::now();
    let r = TestRepo::new();
    let src = r.path("src");
    fs::create_dir_all(src.join("dir/sub")).unwrap();
    fs::write(src.join("file"), b"file content").unwrap();
    fs::write(src.join("dir/inner"), b"inner").unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    fs::hard_link(src.join("file"), src.join("hardlink")).unwrap();
    std::os::unix::fs::symlink("file", src.join("symlink")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", src.join("dangling")).unwrap();
    rustix::fs::mknodat(
        CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        CWD,
        src.join("null"),
        rustix::fs::FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let _ = xattr::set(src.join("file"), "user.keep", b"1");
    let _ = xattr::set(src.join("dir"), "user.keep", b"1");
    r.backup(&[&src]);
    let m = r.mount(&[], &[]);
    let b = m.p("v/latest/src");
    let before = listing(&b);
    let mut fails = Vec::new();
    let mut calls = 0;
    for (name, dir, link) in [
        ("file", false, false),
        ("empty", false, false),
        ("hardlink", false, false),
        ("dir", true, false),
        ("dir/sub", true, false),
        ("dir/inner", false, false),
        ("symlink", false, true),
        ("dangling", false, true),
        ("fifo", false, false),
        ("null", false, false),
    ] {
        let special = name == "fifo" || name == "null";
        mutations(&b.join(name), dir, link, special, &mut fails);
        calls += 1;
    }
    // The backup's top directory, the point, the vault and `latest` (mkdir of a vault in
    // the root and rmdir of a vault or, with --allow-delete, of a point are documented
    // operations: not here).
    mutations(&b, true, false, false, &mut fails);
    let point = fs::read_link(m.p("v/latest")).unwrap();
    let point = m.p("v").join(point);
    mutations(&point, true, false, false, &mut fails);
    // rmdir of a point is a documented operation (README): EPERM without --allow-delete.
    let rmdir_point = format!("rmdir({})", point.display());
    fails.retain(|f| !f.starts_with(&rmdir_point));
    assert_eq!(
        rustix::fs::rmdir(&point),
        Err(Errno::PERM),
        "rmdir of a point"
    );
    mutations(&m.p("v/latest"), false, true, false, &mut fails);
    let vault = m.p("v");
    for (what, res) in [
        (
            "creat(v/new)",
            rustix::fs::open(
                vault.join("new"),
                rustix::fs::OFlags::CREATE | rustix::fs::OFlags::WRONLY,
                Mode::from_raw_mode(0o644),
            )
            .map(|_| ()),
        ),
        (
            "mkdir(v/new)",
            rustix::fs::mkdir(vault.join("new"), Mode::from_raw_mode(0o755)),
        ),
        (
            "chmod(v)",
            rustix::fs::chmod(&vault, Mode::from_raw_mode(0o700)),
        ),
        (
            "rename(v)",
            rustix::fs::rename(&vault, m.p("renamed-vault")),
        ),
        (
            "symlink(v/new)",
            rustix::fs::symlink("x", vault.join("new")),
        ),
    ] {
        erofs(what, res, &mut fails);
    }
    calls += 4;
    assert!(
        fails.is_empty(),
        "not refused with EROFS:\n{}",
        fails.join("\n")
    );
    assert_eq!(listing(&b), before, "the backup changed");
    assert_eq!(fs::read(b.join("file")).unwrap(), b"file content");
    eprintln!("model_mutations_are_erofs: {calls} entries, every mutating call refused");
    family::report(
        "model mutations are EROFS",
        0,
        calls as u64,
        0,
        0,
        started.elapsed().as_secs_f64(),
    );
}

/// Names, modes, sizes and mtimes under `dir`, recursively.
fn listing(dir: &Path) -> Vec<(PathBuf, u32, u64, i64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let st = fs::symlink_metadata(e.path()).unwrap();
            out.push((e.path(), st.mode(), st.len(), st.mtime(), st.mtime_nsec()));
            if st.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

// ------------------------------------------------------------------------- fio

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn model_fio_verify_only() {
    if !fuse_available() {
        return;
    }
    assert!(have("fio"), "install fio (scripts/test.sh does)");
    let started = std::time::Instant::now();
    let jobs = 16;
    let per_job_mib = if ext() { 64 } else { 8 };
    let r = TestRepo::new();
    let src = r.path("fio");
    fs::create_dir_all(&src).unwrap();
    // The files are written by a random-write job with crc32c verify headers, and read
    // back through the mount by the same job as a random-read workload with the same
    // verify: fio checks every block's header (its offset, its length, the crc32c of the
    // block). fio's `--verify_only` re-runs a write job with its files opened O_RDWR,
    // which the read-only mount refuses (EROFS), so the verify pass is a read job.
    let job = |dir: &Path, rw: &str, seed: u32| -> Vec<String> {
        vec![
            "--name=model".into(),
            format!("--directory={}", dir.display()),
            format!("--rw={rw}"),
            "--bs=64k".into(),
            format!("--size={per_job_mib}M"),
            format!("--numjobs={jobs}"),
            "--verify=crc32c".into(),
            "--verify_state_save=0".into(),
            format!("--randseed={seed}"),
            "--ioengine=psync".into(),
            "--output-format=json".into(),
        ]
    };
    let w = Command::new("fio")
        .args(job(&src, "randwrite", 1913))
        .arg("--do_verify=0")
        .output()
        .unwrap();
    assert!(
        w.status.success(),
        "fio write: {}",
        String::from_utf8_lossy(&w.stderr)
    );
    r.backup(&[&src]);
    let m = r.mount(&[], &[]);
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
    let on_mount = m.p("v/latest/fio");
    let v = Command::new("fio")
        .args(job(&on_mount, "randread", 2027))
        .arg("--readonly")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&v.stdout);
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(v.status.success(), "fio verify_only failed: {err}\n{out}");
    assert!(
        !err.contains("verify:"),
        "fio reported verify errors: {err}"
    );
    let json: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap_or(0)..])
        .unwrap_or_else(|e| panic!("fio JSON: {e}: {out}"));
    let errors: u64 = json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["error"].as_u64().unwrap_or(1) + j["total_err"].as_u64().unwrap_or(0))
        .sum();
    let read: u64 = json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["read"]["io_bytes"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(errors, 0, "fio verify errors: {out}");
    assert_eq!(
        read,
        (jobs * per_job_mib) << 20,
        "fio read back {read} bytes"
    );
    eprintln!(
        "model_fio_verify_only: {jobs} readers, {} MiB verified, 0 verify errors, {:.1} s",
        read >> 20,
        started.elapsed().as_secs_f64()
    );
    family::report(
        "model fio verify (MiB)",
        0,
        (read >> 20) as u64,
        0,
        0,
        started.elapsed().as_secs_f64(),
    );
}

// ------------------------------------------------------------------ signals

/// The reader: a Python process whose main thread reads the file in 128 KiB preads at
/// random offsets while another thread sends it SIGUSR1 every millisecond (a handler
/// installed with `siginterrupt(True)`: no SA_RESTART). Python retries a read cut by
/// EINTR (PEP 475) after counting it; any other error ends the reader.
const SIGNAL_READER: &str = r#"
import hashlib, os, random, signal, sys, threading, time
path, want, passes = sys.argv[1], sys.argv[2], int(sys.argv[3])
hits = 0
def on_usr1(sig, frame):
    global hits
    hits += 1
signal.signal(signal.SIGUSR1, on_usr1)
signal.siginterrupt(signal.SIGUSR1, True)
main = threading.get_ident()
stop = threading.Event()
def sender():
    while not stop.is_set():
        signal.pthread_kill(main, signal.SIGUSR1)
        time.sleep(0.001)
t = threading.Thread(target=sender)
t.start()
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size
rnd = random.Random(7)
errors = 0
try:
    for p in range(passes):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        blocks = list(range(0, size, 131072))
        rnd.shuffle(blocks)
        parts = {}
        for off in blocks:
            parts[off] = os.pread(fd, 131072, off)
        h = hashlib.sha256()
        for off in sorted(parts):
            h.update(parts[off])
        if h.hexdigest() != want:
            print("MISMATCH pass", p, h.hexdigest(), want)
            errors += 1
except OSError as e:
    print("ERROR", e.errno, e)
    errors += 1
finally:
    stop.set()
    t.join()
print("signals", hits, "errors", errors)
sys.exit(1 if errors else 0)
"#;

#[test]
fn model_reads_interrupted_by_signals() {
    if !fuse_available() {
        return;
    }
    assert!(have("python3"), "python3 is needed");
    let started = std::time::Instant::now();
    let r = TestRepo::new();
    let src = r.path("sig");
    fs::create_dir_all(&src).unwrap();
    let size = if ext() { 256usize << 20 } else { 24 << 20 };
    let data = common::random_bytes(77, size);
    fs::write(src.join("f"), &data).unwrap();
    drop(data);
    let want = common::sha256(&src.join("f"));
    r.backup(&[&src]);
    let passes = if ext() { 8 } else { 3 };
    let mut total = 0u64;
    for round in 0..2 {
        // A fresh mount each round: the first reads are cold (chunks fetched from the
        // repository while the signals come).
        let m: Mount = r.mount(&[], &[]);
        let _ = fs::write("/proc/sys/vm/drop_caches", "3");
        let out = Command::new("python3")
            .args(["-c", SIGNAL_READER])
            .arg(m.p("v/latest/sig/f"))
            .arg(&want)
            .arg(passes.to_string())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "round {round}: a read failed under signals: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hits: u64 = text
            .split_whitespace()
            .skip_while(|w| *w != "signals")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(hits > 0, "no signal was delivered: {text}");
        total += hits;
    }
    eprintln!("model_reads_interrupted_by_signals: {total} signals, no EIO, bytes right");
    family::report(
        "model reads under signals",
        0,
        total,
        total,
        0,
        started.elapsed().as_secs_f64(),
    );
}
