//! Property test: random trees in, identical trees out (backup then restore through
//! the library, compared entry by entry against the source as a simple model).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use vaultfs::backend::local::LocalStore;
use vaultfs::repo::backup::{BackupOptions, Source, backup};
use vaultfs::repo::format::{ChunkerParams, KdfParams};
use vaultfs::repo::restore::{RestoreOptions, restore};
use vaultfs::repo::{InitOptions, Repository};

#[derive(Debug, Clone)]
enum Entry {
    File {
        data: Vec<u8>,
        mode: u32,
        sparse_gap: u32,
    },
    Dir(BTreeMap<Vec<u8>, Entry>),
    Symlink(Vec<u8>),
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    // Any bytes but '/' and NUL, 1..20 long, not "." or "..".
    proptest::collection::vec(1u8..=255, 1..20)
        .prop_map(|v| {
            v.into_iter()
                .map(|b| if b == b'/' { b'_' } else { b })
                .collect::<Vec<u8>>()
        })
        .prop_filter("dot names", |n| n != b"." && n != b"..")
}

fn entry() -> impl Strategy<Value = Entry> {
    let file = (
        proptest::collection::vec(any::<u8>(), 0..3000),
        prop_oneof![
            Just(0o644u32),
            Just(0o600),
            Just(0o755),
            Just(0o4755),
            Just(0o1777)
        ],
        prop_oneof![Just(0u32), 1u32..200_000],
    )
        .prop_map(|(data, mode, sparse_gap)| Entry::File {
            data,
            mode,
            sparse_gap,
        });
    let link = proptest::collection::vec(1u8..=255, 1..40).prop_map(Entry::Symlink);
    let leaf = prop_oneof![4 => file, 1 => link];
    leaf.prop_recursive(3, 40, 6, |inner| {
        proptest::collection::btree_map(name(), inner, 0..6).prop_map(Entry::Dir)
    })
}

fn create(path: &Path, e: &Entry) {
    match e {
        Entry::File {
            data,
            mode,
            sparse_gap,
        } => {
            let f = fs::File::create(path).unwrap();
            use std::os::unix::fs::FileExt;
            f.write_all_at(data, *sparse_gap as u64).unwrap();
            f.set_len(*sparse_gap as u64 + data.len() as u64).unwrap();
            fs::set_permissions(path, fs::Permissions::from_mode(*mode)).unwrap();
        }
        Entry::Symlink(t) => {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(t), path).unwrap();
        }
        Entry::Dir(children) => {
            fs::create_dir(path).unwrap();
            for (n, c) in children {
                create(&path.join(std::ffi::OsStr::from_bytes(n)), c);
            }
        }
    }
}

/// Compares two trees: names, kinds, modes, owners, mtimes, contents, link targets.
fn compare(a: &Path, b: &Path) -> Result<(), String> {
    let ma = fs::symlink_metadata(a).map_err(|e| format!("{}: {e}", a.display()))?;
    let mb = fs::symlink_metadata(b).map_err(|e| format!("{}: {e}", b.display()))?;
    let what = a.display();
    if ma.file_type() != mb.file_type() {
        return Err(format!("{what}: kind differs"));
    }
    if !ma.file_type().is_symlink() && ma.mode() != mb.mode() {
        return Err(format!("{what}: mode {:o} vs {:o}", ma.mode(), mb.mode()));
    }
    if (ma.uid(), ma.gid()) != (mb.uid(), mb.gid()) {
        return Err(format!("{what}: owner differs"));
    }
    if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
        return Err(format!("{what}: mtime differs"));
    }
    if ma.is_file() && fs::read(a).unwrap() != fs::read(b).unwrap() {
        return Err(format!("{what}: content differs"));
    }
    if ma.file_type().is_symlink() && fs::read_link(a).unwrap() != fs::read_link(b).unwrap() {
        return Err(format!("{what}: link target differs"));
    }
    if ma.is_dir() {
        let names = |p: &Path| {
            let mut v: Vec<_> = fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        if na != nb {
            return Err(format!("{what}: entries differ: {na:?} vs {nb:?}"));
        }
        for n in na {
            compare(&a.join(&n), &b.join(&n))?;
        }
    }
    Ok(())
}

fn fast_repo(dir: &Path) -> Arc<Repository> {
    let opts = InitOptions {
        // Small chunks so that random files cross chunk boundaries.
        chunker: ChunkerParams {
            min_size: 64,
            avg_size: 256,
            max_size: 1024,
        },
        pack_size: 64 * 1024,
        zstd_level: 1,
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            salt: [3; 16],
        },
    };
    let repo = Repository::init(Arc::new(LocalStore::new(dir)), b"pw", opts).unwrap();
    repo.create_vault("v", "").unwrap();
    repo
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_roundtrip(children in proptest::collection::btree_map(name(), entry(), 0..8)) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        create(&src, &Entry::Dir(children));
        let repo = fast_repo(&tmp.path().join("repo"));
        let result = backup(&repo, "v", Source::Trees(vec![src.clone()]), &BackupOptions::default()).unwrap();
        prop_assert!(result.skipped.is_empty(), "{:?}", result.skipped);
        let out = tmp.path().join("out");
        restore(&repo, &result.manifest, &out, &RestoreOptions::default()).unwrap();
        if let Err(e) = compare(&src, &out.join("src")) {
            prop_assert!(false, "{}", e);
        }
        // A second backup of the unchanged tree reads nothing and stores no new data.
        let again = backup(&repo, "v", Source::Trees(vec![src.clone()]), &BackupOptions::default()).unwrap();
        prop_assert_eq!(again.manifest.backups[0].stats.bytes_read, 0);
        prop_assert_eq!(&again.manifest.backups[0].root, &result.manifest.backups[0].root);
        let report = vaultfs::repo::check::check(&repo, true).unwrap();
        prop_assert!(report.ok(), "{:?}", report.errors);
    }
}
