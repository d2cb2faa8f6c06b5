//! Logic tests: a real backup into an in-memory repository, served by `VaultFs` with no
//! kernel.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;

use super::inodes::{Body, ROOT_INO};
use super::namespace::encode_dev;
use super::ops::{FsOptions, VaultFs};
use super::reply::*;
use crate::backend::Store;
use crate::backend::memory::MemoryStore;
use crate::cache::ChunkCache;
use crate::repo::InitOptions;
use crate::repo::Repository;
use crate::repo::backup::{BackupOptions, Source, backup};
use crate::repo::format::Extent;
use crate::repo::format::{ChunkerParams, KdfParams};

fn test_repo(store: Store) -> Arc<Repository> {
    let opts = InitOptions {
        chunker: ChunkerParams {
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
        },
        pack_size: 1 << 20,
        zstd_level: 1,
        kdf: KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
            salt: [7; 16],
        },
    };
    Repository::init(store, b"pw", opts).unwrap()
}

fn make_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), b"hello\n").unwrap();
    std::fs::hard_link(dir.join("a.txt"), dir.join("sub/hard")).unwrap();
    symlink("a.txt", dir.join("rel")).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("big"), &big).unwrap();
    let f = std::fs::File::create(dir.join("sparse")).unwrap();
    f.set_len(1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"data in the middle", 500_000).unwrap();
    let _ = xattr::set(dir.join("a.txt"), "user.color", b"blue");
}

struct Fixture {
    _dir: tempfile::TempDir,
    src: std::path::PathBuf,
    repo: Arc<Repository>,
    fs: VaultFs,
    inval: crossbeam_channel::Receiver<Inval>,
}

fn fixture() -> Fixture {
    fixture_on(Arc::new(MemoryStore::new()))
}

fn fixture_on(store: Store) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tree");
    make_tree(&src);
    let repo = test_repo(store);
    repo.create_vault("v", "").unwrap();
    backup(
        &repo,
        "v",
        Source::Trees(vec![src.clone()]),
        &BackupOptions::default(),
    )
    .unwrap();
    let cache = ChunkCache::new(repo.clone(), 64 << 20, None);
    let fs = VaultFs::new(
        repo.clone(),
        cache,
        FsOptions {
            refresh: Duration::ZERO,
            ..Default::default()
        },
    );
    let (tx, rx) = crossbeam_channel::unbounded();
    fs.set_invalidator(tx);
    Fixture {
        _dir: dir,
        src,
        repo,
        fs,
        inval: rx,
    }
}

/// Follows a path from the root with lookups (following `latest` by readlink).
fn walk(fs: &VaultFs, path: &str) -> Result<Entry> {
    let mut e = fs.getattr(ROOT_INO)?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if e.attr.kind == FileKind::Symlink {
            let target = fs.readlink(e.attr.ino)?;
            let parent = fs.inodes().get(e.attr.ino).unwrap().parent;
            e = fs.lookup(parent, &target)?;
        }
        e = fs.lookup(e.attr.ino, part.as_bytes())?;
    }
    Ok(e)
}

fn read_all(fs: &VaultFs, ino: u64) -> Result<Vec<u8>> {
    let o = fs.open(ino, libc::O_RDONLY)?;
    let mut out = Vec::new();
    loop {
        let chunk = fs.read(ino, o.fh, out.len() as u64, 128 * 1024)?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    fs.release(o.fh);
    Ok(out)
}

/// Waits until `cond` holds, with a bound generous enough for a loaded machine.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let t = std::time::Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "waited 120 s for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until the prefetchers have nothing queued and no load is in flight.
fn wait_settled(fs: &VaultFs) {
    wait_for("the prefetchers to settle", || fs.cache().is_settled());
}

/// The names in a directory, read the way the kernel does: pages of a few entries, each
/// asked from the offset the last one ended at.
fn names(fs: &VaultFs, ino: u64) -> Vec<String> {
    let mut v = Vec::new();
    let mut offset = 0;
    loop {
        let mut page = 0;
        fs.readdir(ino, offset, |_, _, name, next| {
            v.push(String::from_utf8_lossy(name).into_owned());
            offset = next;
            page += 1;
            page == 3
        })
        .unwrap();
        if page < 3 {
            return v;
        }
    }
}

#[test]
fn tree_layout_and_metadata() {
    let f = fixture();
    assert_eq!(names(&f.fs, ROOT_INO), [".", "..", ".vaultfs", "v"]);
    let v = walk(&f.fs, "v").unwrap();
    let vn = names(&f.fs, v.attr.ino);
    assert_eq!(vn.len(), 4, "{vn:?}");
    assert_eq!(vn[3], "latest");
    let point = &vn[2];
    let latest = walk(&f.fs, "v/latest").unwrap();
    assert_eq!(latest.attr.kind, FileKind::Symlink);
    assert_eq!(f.fs.readlink(latest.attr.ino).unwrap(), point.as_bytes());

    let a = walk(&f.fs, "v/latest/tree/a.txt").unwrap();
    let meta = std::fs::metadata(f.src.join("a.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(a.attr.size, 6);
    assert_eq!(a.attr.perm as u32, meta.mode() & 0o7777);
    assert_eq!(
        a.attr.mtime_ns,
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
    );
    assert_eq!(a.attr.nlink, 2);
    assert_eq!(a.ttl, TREE_TTL);
    let hard = walk(&f.fs, &format!("v/{point}/tree/sub/hard")).unwrap();
    assert_eq!(hard.attr.ino, a.attr.ino, "hardlinks share one inode");
    let rel = walk(&f.fs, "v/latest/tree/rel").unwrap();
    assert_eq!(f.fs.readlink(rel.attr.ino).unwrap(), b"a.txt");
    assert!(matches!(
        walk(&f.fs, "v/latest/tree/nope"),
        Err(FsError::NotFound)
    ));
    // Stable numbers: looking up again gives the same inode.
    assert_eq!(
        walk(&f.fs, "v/latest/tree/big").unwrap().attr.ino,
        walk(&f.fs, "v/latest/tree/big").unwrap().attr.ino
    );
}

#[test]
fn reads_holes_and_seeks() {
    let f = fixture();
    let big = walk(&f.fs, "v/latest/tree/big").unwrap();
    assert_eq!(
        read_all(&f.fs, big.attr.ino).unwrap(),
        std::fs::read(f.src.join("big")).unwrap()
    );
    // An unaligned read across chunk boundaries.
    let o = f.fs.open(big.attr.ino, libc::O_RDONLY).unwrap();
    let part = f.fs.read(big.attr.ino, o.fh, 12_345, 100_000).unwrap();
    assert_eq!(
        &part[..],
        &std::fs::read(f.src.join("big")).unwrap()[12_345..112_345]
    );
    assert!(
        f.fs.read(big.attr.ino, o.fh, 10_000_000, 10)
            .unwrap()
            .is_empty()
    );
    // A read within one chunk is served from the cached chunk, without a copy.
    assert!(matches!(
        f.fs.read(big.attr.ino, o.fh, 0, 1).unwrap(),
        ReadData::Shared(..)
    ));

    let sparse = walk(&f.fs, "v/latest/tree/sparse").unwrap();
    assert_eq!(
        read_all(&f.fs, sparse.attr.ino).unwrap(),
        std::fs::read(f.src.join("sparse")).unwrap()
    );
    assert!(
        sparse.attr.blocks * 512 < 200_000,
        "holes are not counted: {}",
        sparse.attr.blocks
    );
    let ino = sparse.attr.ino;
    let data = f.fs.lseek(ino, 0, libc::SEEK_DATA).unwrap();
    assert!(data > 0 && data <= 500_000, "{data}");
    assert_eq!(f.fs.lseek(ino, 0, libc::SEEK_HOLE).unwrap(), 0);
    let hole = f.fs.lseek(ino, data, libc::SEEK_HOLE).unwrap();
    assert!(hole > 500_000 && hole <= 1 << 20, "{hole}");
    assert!(matches!(
        f.fs.lseek(ino, 1 << 20, libc::SEEK_DATA),
        Err(FsError::NoData)
    ));
}

#[test]
fn xattrs_and_read_only() {
    let f = fixture();
    let a = walk(&f.fs, "v/latest/tree/a.txt").unwrap().attr.ino;
    if xattr::get(f.src.join("a.txt"), "user.color")
        .ok()
        .flatten()
        .is_some()
    {
        assert_eq!(
            f.fs.getxattr(a, b"user.color", 0).unwrap(),
            XattrReply::Size(4)
        );
        assert_eq!(
            f.fs.getxattr(a, b"user.color", 100).unwrap(),
            XattrReply::Data(b"blue".to_vec())
        );
        assert!(matches!(
            f.fs.getxattr(a, b"user.color", 2),
            Err(FsError::Range)
        ));
        assert_eq!(
            f.fs.listxattr(a, 100).unwrap(),
            XattrReply::Data(b"user.color\0".to_vec())
        );
    }
    assert!(matches!(
        f.fs.getxattr(a, b"user.none", 100),
        Err(FsError::NoXattr)
    ));
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        let e = f.fs.open(a, flags).unwrap_err();
        assert_eq!(e.errno(), libc::EROFS);
    }
    let dir = walk(&f.fs, "v/latest/tree").unwrap().attr.ino;
    assert!(matches!(
        f.fs.open(dir, libc::O_RDONLY),
        Err(FsError::IsDir)
    ));
}

#[test]
fn damaged_chunk_fails_that_file_only() {
    let f = fixture();
    let a = walk(&f.fs, "v/latest/tree/a.txt").unwrap().attr.ino;
    let big = walk(&f.fs, "v/latest/tree/big").unwrap().attr.ino;
    // Damage the pack holding a.txt's content.
    let inode = f.fs.inodes().get(a).unwrap();
    let Body::Node(t) = &inode.body else { panic!() };
    let Extent::Data(r) = t.node.content[0].clone() else {
        panic!()
    };
    let key = r.pack.key();
    let mut blob = f.repo.store().get(&key).unwrap();
    blob[r.offset as usize + 30] ^= 0x55;
    f.repo.store().put(&key, &blob).unwrap();
    let e = read_all(&f.fs, a).unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    assert!(e.to_string().contains(&r.id.to_hex()), "{e}");
    // Other files still read (unless they share that pack: then they fail alike).
    let big_shares_pack = {
        let bi = f.fs.inodes().get(big).unwrap();
        let Body::Node(bt) = &bi.body else { panic!() };
        bt.node.content.iter().any(|e| matches!(e, Extent::Data(x) if x.pack == r.pack && x.offset <= r.offset + 30 && r.offset + 30 < x.offset + x.stored_len))
    };
    if !big_shares_pack {
        assert_eq!(read_all(&f.fs, big).unwrap().len(), 300_000);
    }
}

#[test]
fn new_points_appear_and_latest_moves() {
    let f = fixture();
    let v = walk(&f.fs, "v").unwrap().attr.ino;
    let before = names(&f.fs, v);
    let latest = walk(&f.fs, "v/latest").unwrap().attr.ino;
    let old_target = f.fs.readlink(latest).unwrap();
    while f.inval.try_recv().is_ok() {}
    std::fs::write(f.src.join("new-file"), b"new").unwrap();
    backup(
        &f.repo,
        "v",
        Source::Trees(vec![f.src.clone()]),
        &BackupOptions::default(),
    )
    .unwrap();
    let after = names(&f.fs, v);
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    let new_target = f.fs.readlink(latest).unwrap();
    assert_ne!(new_target, old_target);
    assert_eq!(walk(&f.fs, "v/latest").unwrap().attr.ino, latest);
    let sent: Vec<Inval> = f.inval.try_iter().collect();
    assert!(
        sent.contains(&Inval::Entry {
            parent: v,
            name: b"latest".to_vec()
        }),
        "{sent:?}"
    );
    assert!(walk(&f.fs, "v/latest/tree/new-file").is_ok());
    // The old point is still there with the same inode.
    let old = walk(
        &f.fs,
        &format!("v/{}", String::from_utf8_lossy(&old_target)),
    )
    .unwrap();
    assert!(
        walk(
            &f.fs,
            &format!("v/{}/tree/new-file", String::from_utf8_lossy(&old_target))
        )
        .is_err()
    );
    assert_eq!(old.attr.kind, FileKind::Dir);
}

#[test]
fn control_files() {
    let f = fixture();
    let ctl = walk(&f.fs, ".vaultfs").unwrap();
    assert_eq!(ctl.attr.kind, FileKind::Dir);
    assert_eq!(
        names(&f.fs, ctl.attr.ino),
        [
            ".",
            "..",
            "vaults",
            "points",
            "incoming",
            "tasks",
            "policies",
            "stats.json",
            "versions",
            "changes",
            "deleted"
        ]
    );
    let vj = walk(&f.fs, ".vaultfs/vaults/v.json").unwrap();
    assert_eq!(vj.ttl, CONTROL_TTL);
    let o = f.fs.open(vj.attr.ino, libc::O_RDONLY).unwrap();
    assert!(o.direct_io && !o.keep_cache);
    let data = f.fs.read(vj.attr.ino, o.fh, 0, 1 << 20).unwrap();
    assert_eq!(data.len() as u64, vj.attr.size);
    let j: serde_json::Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(j["name"], "v");
    assert_eq!(j["point_count"], 1);
    assert!(j["bytes_used"].as_u64().unwrap() > 0);
    let points = f.repo.list_points("v").unwrap();
    let pj = walk(&f.fs, &format!(".vaultfs/points/v/{}.json", points[0])).unwrap();
    let j: serde_json::Value =
        serde_json::from_slice(&read_all(&f.fs, pj.attr.ino).unwrap()).unwrap();
    assert_eq!(j["id"], points[0].as_str());
    assert_eq!(j["status"], "available");
    assert_eq!(j["backups"][0]["kind"], "tree");
    assert_eq!(j["backups"][0]["files"], 4);
    assert!(walk(&f.fs, ".vaultfs/vaults/nope.json").is_err());
}

#[test]
fn device_numbers_use_the_kernel_encoding() {
    // /dev/null is 1:3; /dev/loop-control style numbers with big minors too.
    assert_eq!(encode_dev(libc::makedev(1, 3)), (1 << 8) | 3);
    assert_eq!(
        encode_dev(libc::makedev(8, 300)),
        (300 & 0xff) | (8 << 8) | ((300 & !0xff) << 12)
    );
}

#[test]
fn a_stalled_fetch_holds_up_no_metadata_request() {
    use crate::backend::faulty::{Fault, FaultyStore, Op, Rule};
    let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    let f = fixture_on(faulty.clone());
    let big = walk(&f.fs, "v/latest/tree/big").unwrap().attr.ino;
    let dir = walk(&f.fs, "v/latest/tree").unwrap().attr.ino;
    names(&f.fs, dir);
    walk(&f.fs, "v/latest/tree/sub/hard").unwrap();
    // From now on every chunk read blocks until released.
    let stall = faulty.add_rule(Rule::new(
        Op::GetRange,
        "packs/",
        Fault::Stall {
            timeout: Duration::from_secs(30),
        },
    ));
    std::thread::scope(|s| {
        let reader = s.spawn(|| read_all(&f.fs, big).map(|v| v.len()));
        wait_for("the read to reach the stall", || faulty.hits(stall) > 0);
        // While that read waits: listings, lookups, attributes, links, control files
        // (had any of them waited for the stalled fetch, it would have returned only
        // with the stall's timeout, after the reader).
        assert_eq!(names(&f.fs, ROOT_INO).len(), 4);
        assert!(names(&f.fs, dir).contains(&"a.txt".to_string()));
        walk(&f.fs, "v/latest/tree/sub/hard").unwrap();
        walk(&f.fs, "v/latest/tree/rel").unwrap();
        assert!(
            !read_all(
                &f.fs,
                walk(&f.fs, ".vaultfs/vaults/v.json").unwrap().attr.ino
            )
            .unwrap()
            .is_empty()
        );
        assert!(!reader.is_finished(), "the read is still stalled");
        faulty.clear_rules();
        faulty.release();
        assert_eq!(reader.join().unwrap().unwrap(), 300_000);
    });
}

#[test]
fn sequential_readers_get_readahead_random_readers_do_not() {
    let f = fixture();
    f.fs.cache().start_prefetchers(1, 64);
    let big = walk(&f.fs, "v/latest/tree/big").unwrap().attr.ino;
    let (chunks, distinct_bytes) = {
        let i = f.fs.inodes().get(big).unwrap();
        let Body::Node(t) = &i.body else { panic!() };
        let mut seen = std::collections::HashMap::new();
        for e in &t.node.content {
            if let Extent::Data(r) = e {
                seen.insert(r.id, r.raw_len as u64);
            }
        }
        (t.node.content.len() as u64, seen.values().sum::<u64>())
    };
    assert!(chunks > 4, "{chunks} chunks");
    let stats = &f.fs.cache().stats;
    let loaded_before = stats.loaded_bytes.load(Ordering::Relaxed);
    // Random reads, backwards: no prefetch.
    let o = f.fs.open(big, libc::O_RDONLY).unwrap();
    for off in [0, 200_000, 20_000, 250_000, 5_000, 280_000, 60_000] {
        f.fs.read(big, o.fh, off, 100).unwrap();
    }
    f.fs.release(o.fh);
    assert_eq!(stats.prefetches_queued.load(Ordering::Relaxed), 0);
    // Sequential reads: the next chunks are requested ahead.
    let o = f.fs.open(big, libc::O_RDONLY).unwrap();
    let mut off = 0;
    while off < 300_000 {
        off += f.fs.read(big, o.fh, off, 8192).unwrap().len() as u64;
    }
    assert!(stats.prefetches_queued.load(Ordering::Relaxed) > 0);
    // Whatever was prefetched or read, each chunk was loaded once.
    f.fs.release(o.fh);
    wait_settled(&f.fs);
    assert_eq!(
        stats.loaded_bytes.load(Ordering::Relaxed) - loaded_before,
        distinct_bytes
    );
}

#[test]
fn loading_is_lazy_and_a_read_fetches_only_the_chunks_that_cover_it() {
    use crate::backend::faulty::{FaultyStore, Op};
    let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    let f = fixture_on(faulty.clone());
    let calls = || {
        (
            faulty.calls(Op::List),
            faulty.calls(Op::Get),
            faulty.calls(Op::GetRange),
        )
    };
    let c0 = calls();
    let cache = ChunkCache::new(f.repo.clone(), 64 << 20, None);
    let fs = VaultFs::new(
        f.repo.clone(),
        cache,
        FsOptions {
            refresh: Duration::from_secs(600),
            ..Default::default()
        },
    );
    fs.getattr(ROOT_INO).unwrap();
    assert_eq!(calls(), c0, "mounting reads nothing");
    let step = |before: (u64, u64, u64), lists, gets, ranges| {
        let now = calls();
        assert_eq!(
            (now.0 - before.0, now.1 - before.1, now.2 - before.2),
            (lists, gets, ranges)
        );
        now
    };
    names(&fs, ROOT_INO);
    let c = step(c0, 1, 0, 0); // the vault list
    let v = fs.lookup(ROOT_INO, b"v").unwrap().attr.ino;
    let points = names(&fs, v);
    let c = step(c, 1, 0, 0); // the point list
    let p = fs.lookup(v, points[2].as_bytes()).unwrap().attr.ino;
    let c = step(c, 0, 0, 0);
    names(&fs, p);
    let c = step(c, 0, 1, 1); // the manifest, the backup's root tree
    let tree = fs.lookup(p, b"tree").unwrap().attr.ino;
    names(&fs, tree);
    let c = step(c, 0, 0, 1); // that directory's tree chunk, nothing deeper
    let big = fs.lookup(tree, b"big").unwrap().attr.ino;
    let c = step(c, 0, 0, 0);
    let o = fs.open(big, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(big, o.fh, 150_000, 100).unwrap().len(), 100);
    let c = step(c, 0, 0, 1); // one ranged read: the chunk holding those bytes
    fs.read(big, o.fh, 150_000, 100).unwrap();
    step(c, 0, 0, 0); // then the cache
}

#[test]
fn damaged_tree_fails_that_listing_only() {
    let f = fixture();
    let sub = walk(&f.fs, "v/latest/tree/sub").unwrap().attr.ino;
    let r = {
        let i = f.fs.inodes().get(sub).unwrap();
        let Body::Node(t) = &i.body else { panic!() };
        t.node.subtree.clone().unwrap()
    };
    let mut blob = f.repo.store().get(&r.pack.key()).unwrap();
    blob[r.offset as usize + 30] ^= 0x55;
    f.repo.store().put(&r.pack.key(), &blob).unwrap();
    let e = f.fs.opendir(sub).unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    assert!(matches!(f.fs.lookup(sub, b"hard"), Err(FsError::Repo(_))));
    // The rest of the backup is still served.
    assert!(walk(&f.fs, "v/latest/tree/rel").is_ok());
    let tree = walk(&f.fs, "v/latest/tree").unwrap().attr.ino;
    assert!(names(&f.fs, tree).contains(&"a.txt".to_string()));
}

#[test]
fn a_damaged_backup_leaves_its_siblings_in_the_point() {
    let f = fixture();
    let other = f.src.parent().unwrap().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("x"), b"x").unwrap();
    backup(
        &f.repo,
        "v",
        Source::Trees(vec![f.src.clone(), other]),
        &BackupOptions::default(),
    )
    .unwrap();
    let point = f.repo.list_points("v").unwrap().pop().unwrap();
    let m = f.repo.load_manifest("v", &point).unwrap();
    let root = m
        .backups
        .iter()
        .find(|b| b.name == b"tree")
        .unwrap()
        .root
        .clone();
    let key = root.pack.key();
    let good = f.repo.store().get(&key).unwrap();
    let mut bad = good.clone();
    bad[root.offset as usize + 30] ^= 0x55;
    f.repo.store().put(&key, &bad).unwrap();

    let p = walk(&f.fs, &format!("v/{point}")).unwrap().attr.ino;
    let listed = names(&f.fs, p);
    assert_eq!(listed, [".", "..", "other"]);
    assert!(!f.fs.dir_is_immutable(p), "a partial listing is not cached");
    let e = f.fs.lookup(p, b"tree").unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    let x = walk(&f.fs, &format!("v/{point}/other/x")).unwrap().attr.ino;
    assert_eq!(read_all(&f.fs, x).unwrap(), b"x");
    let other_ino = walk(&f.fs, &format!("v/{point}/other")).unwrap().attr.ino;

    // Repaired: both are there, the good one with the same inode number.
    f.repo.store().put(&key, &good).unwrap();
    assert_eq!(names(&f.fs, p), [".", "..", "tree", "other"]);
    assert!(f.fs.dir_is_immutable(p));
    assert_eq!(
        walk(&f.fs, &format!("v/{point}/other")).unwrap().attr.ino,
        other_ino
    );
}

#[test]
fn background_refresh_keeps_lookups_off_a_stalled_store() {
    use crate::backend::faulty::{Fault, FaultyStore, Op, Rule};
    let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    let f = fixture_on(faulty.clone());
    let cache = ChunkCache::new(f.repo.clone(), 64 << 20, None);
    let fs = VaultFs::new(
        f.repo.clone(),
        cache,
        FsOptions {
            refresh: Duration::ZERO,
            background_refresh: true,
            ..Default::default()
        },
    );
    let vault = walk(&fs, "v").unwrap().attr.ino;
    assert_eq!(names(&fs, vault).len(), 4); // . .. <point> latest
    // A new point, then every listing of the store stalls.
    backup(
        &f.repo,
        "v",
        Source::Trees(vec![f.src.clone()]),
        &BackupOptions::default(),
    )
    .unwrap();
    let stall = faulty.add_rule(Rule::new(
        Op::List,
        "",
        Fault::Stall {
            timeout: Duration::from_secs(30),
        },
    ));
    std::thread::scope(|s| {
        let refresher = s.spawn(|| fs.refresh_lists());
        wait_for("the refresh to reach the stall", || faulty.hits(stall) > 0);
        // Lookups and listings answer from memory while the refresh waits.
        assert_eq!(names(&fs, ROOT_INO).len(), 4);
        assert_eq!(names(&fs, vault).len(), 4);
        walk(&fs, "v/latest/tree/a.txt").unwrap();
        assert!(!refresher.is_finished(), "the refresh is still stalled");
        faulty.clear_rules();
        faulty.release();
        refresher.join().unwrap();
    });
    // The refresh saw the new point.
    assert_eq!(names(&fs, vault).len(), 5);
}

/// A mount's logic with prefetch threads over a backup of `src` in vault `v`.
fn prefetching_fs_of(store: Store, src: std::path::PathBuf) -> VaultFs {
    prefetching_fs_with(store, src, 64 << 20)
}

/// [`prefetching_fs_of`] with a chunk cache of `budget` bytes.
fn prefetching_fs_with(store: Store, src: std::path::PathBuf, budget: u64) -> VaultFs {
    prefetching_fs_opts(store, src, budget, FsOptions::default())
}

/// [`prefetching_fs_with`] with options of the logic layer.
fn prefetching_fs_opts(
    store: Store,
    src: std::path::PathBuf,
    budget: u64,
    opts: FsOptions,
) -> VaultFs {
    let repo = test_repo(store);
    repo.create_vault("v", "").unwrap();
    backup(
        &repo,
        "v",
        Source::Trees(vec![src]),
        &BackupOptions::default(),
    )
    .unwrap();
    let cache = ChunkCache::new(repo.clone(), budget, None);
    cache.start_prefetchers(2, 16);
    VaultFs::new(repo, cache, opts)
}

#[test]
fn readahead_stays_within_what_the_cache_can_keep() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("one");
    std::fs::create_dir_all(&src).unwrap();
    // 2 MiB that neither compresses nor repeats: ~128 chunks of ~16 KiB.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..2 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(src.join("big"), &data).unwrap();
    // A 256 KiB budget: the readahead may ask for 128 KiB at most, not --readahead's 32 MiB.
    let fs = prefetching_fs_with(Arc::new(MemoryStore::new()), src, 256 << 10);
    assert!(fs.readahead().limit() <= 128 << 10);
    let big = walk(&fs, "v/latest/one/big").unwrap().attr.ino;
    assert_eq!(read_all(&fs, big).unwrap(), data);
    let stats = &fs.cache().stats;
    let asked = stats.prefetches_queued.load(Ordering::Relaxed)
        + stats.prefetches_dropped.load(Ordering::Relaxed);
    assert!(asked > 0, "a sequential reader still gets readahead");
}

#[test]
fn opening_files_in_order_prefetches_their_neighbours_in_grouped_reads() {
    use crate::backend::faulty::{FaultyStore, Op};
    let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("many");
    std::fs::create_dir_all(&src).unwrap();
    let content = |i: u32| -> Vec<u8> { (0..3000u32).map(|j| (i * 31 + j * 7) as u8).collect() };
    for i in 0..100u32 {
        std::fs::write(src.join(format!("f{i:03}")), content(i)).unwrap();
    }
    let fs = prefetching_fs_of(faulty.clone(), src);
    let d = walk(&fs, "v/latest/many").unwrap().attr.ino;
    assert_eq!(names(&fs, d).len(), 102);
    // A lone open fetches only its own file.
    let before = faulty.calls(Op::GetRange);
    let lone = walk(&fs, "v/latest/many/f050").unwrap().attr.ino;
    assert_eq!(read_all(&fs, lone).unwrap(), content(50));
    assert_eq!(faulty.calls(Op::GetRange) - before, 1);
    // Reading every file in order: far fewer reads of the store than files.
    let before = faulty.calls(Op::GetRange);
    for i in 0..100u32 {
        let ino = walk(&fs, &format!("v/latest/many/f{i:03}"))
            .unwrap()
            .attr
            .ino;
        assert_eq!(read_all(&fs, ino).unwrap(), content(i), "f{i:03}");
    }
    wait_settled(&fs);
    // f000 and f001 alone (the walk starts at the second open), then the next 64 files
    // (f050 cached) in one read, and the last 34 in another when the walk is half-way.
    let reads = faulty.calls(Op::GetRange) - before;
    assert_eq!(reads, 4, "ranged reads for 99 files");
}

#[test]
fn a_walk_that_reads_files_gets_each_directory_prefetched_as_it_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("top");
    let content = |i: u32, f: u32| format!("dir {i} file {f} ").repeat(50 + f as usize);
    for i in 0..21u32 {
        let sub = src.join(format!("d{i:02}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..3u32 {
            std::fs::write(sub.join(format!("f{f}")), content(i, f)).unwrap();
        }
    }
    // A walk that lasts however slow the machine (its end is simulated below).
    let fs = prefetching_fs_opts(
        Arc::new(MemoryStore::new()),
        src,
        64 << 20,
        FsOptions {
            walk_linger: Duration::from_secs(3600),
            ..Default::default()
        },
    );
    // Prefetches asked for: queued, or dropped on a full queue (a busy machine).
    let queued = || {
        let s = &fs.cache().stats;
        s.prefetches_queued.load(Ordering::Relaxed) + s.prefetches_dropped.load(Ordering::Relaxed)
    };
    let top = walk(&fs, "v/latest/top").unwrap().attr.ino;
    let dirs: Vec<u64> = (0..21u32)
        .map(|i| {
            fs.lookup(top, format!("d{i:02}").as_bytes())
                .unwrap()
                .attr
                .ino
        })
        .collect();
    // Listing alone (`find`, `ls -R`) loads no file content.
    let before = queued();
    for d in &dirs {
        assert_eq!(names(&fs, *d).len(), 5);
    }
    assert_eq!(queued(), before);
    // A walk that reads files in order: from its second directory on, listing a
    // directory has its three files queued at once (or earlier), and the next four
    // directories' files too (their trees are loaded).
    let start = queued();
    for (i, d) in dirs[..15].iter().enumerate() {
        names(&fs, *d);
        if i > 0 {
            let ahead = i as u64 + 4;
            // d00's second open started the walk and queued d00/f2.
            assert!(
                queued() - start > 3 * ahead,
                "d{i:02}: {}",
                queued() - start
            );
        }
        for f in 0..3u32 {
            let ino = fs.lookup(*d, format!("f{f}").as_bytes()).unwrap().attr.ino;
            assert_eq!(
                read_all(&fs, ino).unwrap(),
                content(i as u32, f).as_bytes(),
                "d{i:02}/f{f}"
            );
        }
    }
    // Once the walk has stopped for longer than the linger, listing loads nothing again
    // (d20 was beyond the walk's reach).
    fs.readahead().end_walk();
    let before = queued();
    names(&fs, dirs[20]);
    assert_eq!(queued(), before);
}

#[test]
fn listing_a_directory_loads_its_subdirectories_trees_ahead_in_grouped_reads() {
    use crate::backend::faulty::{FaultyStore, Op};
    let faulty = Arc::new(FaultyStore::new(Arc::new(MemoryStore::new())));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("top");
    for i in 0..40u32 {
        let sub = src.join(format!("d{i:02}"));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("f"), format!("file {i}")).unwrap();
    }
    let fs = prefetching_fs_of(faulty.clone(), src);
    let top = walk(&fs, "v/latest/top").unwrap().attr.ino;
    // A lookup loads the directory's own tree, nothing ahead.
    let before = faulty.calls(Op::GetRange);
    let d00 = fs.lookup(top, b"d00").unwrap().attr.ino;
    assert_eq!(
        fs.cache().stats.prefetches_queued.load(Ordering::Relaxed),
        0
    );
    assert_eq!(faulty.calls(Op::GetRange) - before, 1);
    let before = faulty.calls(Op::GetRange);
    // Listing `top` loads the 40 subdirectories' trees in the background, grouped.
    assert_eq!(names(&fs, top).len(), 42);
    let queued = fs.cache().stats.prefetches_queued.load(Ordering::Relaxed);
    assert_eq!(queued, 40);
    wait_settled(&fs);
    let reads = faulty.calls(Op::GetRange) - before;
    assert_eq!(reads, 1, "ranged reads for 40 trees");
    // The 40 new inodes count against the cache's budget: ~600 bytes each.
    let limit = fs.cache().tier_limit();
    assert!(
        (64 << 20) - limit >= 40 * 400 && (64 << 20) - limit < 200 * 1000,
        "{limit}"
    );
    // Walking them then reads no tree from the store.
    for i in 0..40u32 {
        let d = fs
            .lookup(top, format!("d{i:02}").as_bytes())
            .unwrap()
            .attr
            .ino;
        assert_eq!(names(&fs, d), [".", "..", "f"]);
    }
    assert_eq!(
        faulty.calls(Op::GetRange) - before,
        reads,
        "the trees came from the cache"
    );
    // And what was loaded ahead is what was backed up.
    assert_eq!(d00, fs.lookup(top, b"d00").unwrap().attr.ino);
    for i in 0..40u32 {
        let f = walk(&fs, &format!("v/latest/top/d{i:02}/f"))
            .unwrap()
            .attr
            .ino;
        assert_eq!(read_all(&fs, f).unwrap(), format!("file {i}").as_bytes());
    }
}

/// The entries of a directory (not `.` and `..`) as readdirplus hands them to the kernel,
/// which then holds each once.
fn held_entries(fs: &VaultFs, ino: u64) -> Vec<(Vec<u8>, u64)> {
    let mut v = Vec::new();
    fs.readdirplus(ino, 0, |child, name, _, _| {
        if name != b"." && name != b".." {
            v.push((name.to_vec(), child));
        }
        false
    })
    .unwrap();
    v
}

#[test]
fn forgotten_entries_leave_the_table_and_come_back_under_their_numbers() {
    let f = fixture();
    let top = walk(&f.fs, "v/latest/tree").unwrap().attr.ino;
    let baseline = f.fs.inodes().len();
    let entries = held_entries(&f.fs, top);
    let sub = entries.iter().find(|(n, _)| n == b"sub").unwrap().1;
    let inner = held_entries(&f.fs, sub);
    let big = entries.iter().find(|(n, _)| n == b"big").unwrap().1;
    let before = read_all(&f.fs, big).unwrap();
    let grown = f.fs.inodes().len();
    assert_eq!(
        grown,
        baseline + entries.len() + inner.len() - 1,
        "hard is a.txt"
    );
    // The kernel forgets everything it was handed (children before their directory).
    for (_, ino) in inner.iter().chain(&entries) {
        f.fs.forget(*ino, 1);
    }
    // Back to the baseline, but for the hardlinked file (pinned: its number is shared by
    // names in several directories).
    assert_eq!(f.fs.inodes().len(), baseline + 1);
    // Looked up again: the same numbers, the same content.
    for (name, ino) in &entries {
        assert_eq!(f.fs.lookup(top, name).unwrap().attr.ino, *ino);
    }
    assert_eq!(read_all(&f.fs, big).unwrap(), before);
    assert_eq!(held_entries(&f.fs, top), entries);
    // A directory whose listing left with it lists again (its entries were held by
    // nobody, so new numbers are fine, except the pinned hardlink's).
    let again = held_entries(&f.fs, sub);
    assert_eq!(again, inner);
    // An inode still held stays: forgetting one of two lookups keeps it.
    let rel = entries.iter().find(|(n, _)| n == b"rel").unwrap().1;
    f.fs.lookup(top, b"rel").unwrap();
    f.fs.forget(rel, 1);
    assert!(f.fs.inodes().get(rel).is_some());
}

#[test]
fn an_entry_that_did_not_fit_in_a_readdirplus_page_stays_in_the_table() {
    let f = fixture();
    let top = walk(&f.fs, "v/latest/tree").unwrap().attr.ino;
    let s = &f.fs.cache().stats;
    let loads_before = s.hits.load(Ordering::Relaxed) + s.misses.load(Ordering::Relaxed);
    // Pages of two entries: the third of each page does not fit and is taken back.
    let (mut offset, mut seen) = (0, Vec::new());
    loop {
        let mut page = 0;
        f.fs.readdirplus(top, offset, |child, name, _, next| {
            page += 1;
            if page > 2 {
                return true;
            }
            seen.push((name.to_vec(), child));
            offset = next;
            false
        })
        .unwrap();
        if page <= 2 {
            break;
        }
    }
    // The entries taken back stayed for their next page: the tree was loaded once, not
    // again to bring them back.
    let loads = s.hits.load(Ordering::Relaxed) + s.misses.load(Ordering::Relaxed);
    let again = held_entries(&f.fs, top);
    assert_eq!(again.len(), 5);
    assert_eq!(
        s.hits.load(Ordering::Relaxed) + s.misses.load(Ordering::Relaxed),
        loads
    );
    // One load: the listing's tree chunk.
    assert_eq!(
        s.hits.load(Ordering::Relaxed) + s.misses.load(Ordering::Relaxed),
        loads_before + 1
    );
    let names: Vec<&[u8]> = seen.iter().map(|(n, _)| n.as_slice()).collect();
    assert_eq!(names.len(), 7, "., .. and five entries: {names:?}");
    for (name, ino) in &seen[2..] {
        assert!(f.fs.inodes().get(*ino).is_some(), "{name:?}");
    }
}

/// Vault sharing without a kernel (`access.rs`): on a mount that lets others in, a vault
/// is seen by the owner, root and its members only: in listings of the root and of
/// `.vaultfs/`, on lookups, and on the entries inside it (backup files, views).
#[test]
fn shared_vaults_are_judged_per_caller() {
    use super::access::Caller;
    use super::inodes::CONTROL_INO;
    let f = fixture();
    f.repo.create_vault("w", "").unwrap();
    backup(
        &f.repo,
        "w",
        Source::Trees(vec![f.src.clone()]),
        &BackupOptions::default(),
    )
    .unwrap();
    let mut w = f.repo.load_vault("w").unwrap();
    w.members.uids = vec![1000];
    f.repo.update_vault(&w).unwrap();
    let cache = ChunkCache::new(f.repo.clone(), 64 << 20, None);
    let fs = VaultFs::new(
        f.repo.clone(),
        cache,
        FsOptions {
            refresh: Duration::ZERO,
            uid: 0,
            gid: 0,
            access_control: true,
            ..Default::default()
        },
    );
    let owner = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
    };
    let member = Caller { uid: 1000, ..owner };
    let other = Caller { uid: 2000, ..owner };
    let list = |who: &Caller, ino: u64| {
        let mut v = Vec::new();
        fs.readdir_for(who, ino, 0, |_, _, name, _| {
            v.push(String::from_utf8_lossy(name).into_owned());
            false
        })
        .map(|()| v)
    };
    assert_eq!(
        list(&owner, ROOT_INO).unwrap(),
        [".", "..", ".vaultfs", "v", "w"]
    );
    assert_eq!(
        list(&member, ROOT_INO).unwrap(),
        [".", "..", ".vaultfs", "w"]
    );
    assert_eq!(list(&other, ROOT_INO).unwrap(), [".", "..", ".vaultfs"]);
    // A vault's entry: no TTL, and mode bits that say who may enter.
    let v = fs.lookup_for(&owner, ROOT_INO, b"v").unwrap();
    assert_eq!((v.attr.perm, v.ttl), (0o500, Duration::ZERO));
    let wv = fs.lookup_for(&member, ROOT_INO, b"w").unwrap();
    assert_eq!(wv.attr.perm, 0o555);
    assert!(matches!(
        fs.lookup_for(&member, ROOT_INO, b"v"),
        Err(FsError::Access)
    ));
    assert!(matches!(
        fs.lookup_for(&other, ROOT_INO, b"w"),
        Err(FsError::Access)
    ));
    assert!(matches!(
        fs.readdir_for(&other, wv.attr.ino, 0, |_, _, _, _| false),
        Err(FsError::Access)
    ));
    // Inside a vault: a file of a backup, reached by the owner, is the vault's.
    let file = walk(&fs, "v/latest/tree/a.txt").unwrap().attr.ino;
    fs.permit(file, &owner).unwrap();
    assert!(matches!(fs.permit(file, &member), Err(FsError::Access)));
    let wfile = walk(&fs, "w/latest/tree/sub/hard").unwrap().attr.ino;
    fs.permit(wfile, &member).unwrap();
    assert!(matches!(fs.permit(wfile, &other), Err(FsError::Access)));
    // `.vaultfs/`: the listings of all vaults leave out the others', and a view's
    // entries are its vault's.
    for dir in [
        "vaults", "points", "incoming", "versions", "changes", "deleted",
    ] {
        let d = fs.lookup_for(&member, CONTROL_INO, dir.as_bytes()).unwrap();
        let names = list(&member, d.attr.ino).unwrap();
        let want = if dir == "vaults" { "w.json" } else { "w" };
        assert_eq!(names, [".", "..", want], "{dir}");
        assert_eq!(list(&other, d.attr.ino).unwrap(), [".", ".."], "{dir}");
    }
    let versions = fs.lookup_for(&owner, CONTROL_INO, b"versions").unwrap();
    let vv = fs.lookup_for(&owner, versions.attr.ino, b"v").unwrap();
    let tree = fs.lookup_for(&owner, vv.attr.ino, b"tree").unwrap();
    let a = fs.lookup_for(&owner, tree.attr.ino, b"a.txt").unwrap();
    let version = list(&owner, a.attr.ino).unwrap().pop().unwrap();
    let leaf = fs
        .lookup_for(&owner, a.attr.ino, version.as_bytes())
        .unwrap();
    assert_eq!(read_all(&fs, leaf.attr.ino).unwrap(), b"hello\n");
    assert!(matches!(
        fs.permit(leaf.attr.ino, &member),
        Err(FsError::Access)
    ));
    // Unshared: the next refresh applies it.
    w.members.uids.clear();
    f.repo.update_vault(&w).unwrap();
    fs.refresh_lists();
    assert!(matches!(fs.permit(wfile, &member), Err(FsError::Access)));
    assert_eq!(list(&member, ROOT_INO).unwrap(), [".", "..", ".vaultfs"]);
}
