//! The PARSERS family of the reliability campaign (RELIABILITY.md): every decoder of
//! what vaultfs reads from storage or from a snapshot stream, fed arbitrary bytes and
//! mutations of valid encodings (bit flips, byte sets, truncations, deletions,
//! insertions, splices of two encodings, length fields set to huge values).
//!
//! Decoders: the config object, key objects, index objects, tree nodes, manifests,
//! vaults, lock and forward objects, the plaintext of a sealed chunk (flag byte, zstd),
//! whole packs read chunk by chunk, and the tar and image ingest through the entry point
//! the CLI uses (`backup` of a `Source::Stream`). For each: no panic (proptest fails
//! the case and shrinks it), every input decodes or is refused, no single allocation
//! over 1 GiB (the counting allocator of `tests/alloc-count`), and the slowest input and
//! the most bytes allocated for one input are printed (work is counted, wall-clock time
//! is only reported). Decoded values re-encode to what decodes the same, an archive that
//! is accepted leaves a repository that `check` passes, one that is refused leaves no
//! point, and an image reads back byte for byte.
//!
//! Every run first replays the regression inputs of `tests/fuzz-corpus/<decoder>/`. The
//! seed is printed; `VAULTFS_SEED=N` replays a run; `RELIABILITY=ext` runs 100 times as
//! many cases. A failing input is written under the target directory, with the path in
//! the failure message: add it to the corpus with the fix.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestError, TestRng, TestRunner};

use vaultfs::backend::memory::MemoryStore;
use vaultfs::repo::backup::{BackupOptions, PlainStream, Source, backup};
use vaultfs::repo::check::check;
use vaultfs::repo::format::*;
use vaultfs::repo::ingest::StreamKind;
use vaultfs::repo::keys::{decode_key, encode_key};
use vaultfs::repo::pack::decode_payload;
use vaultfs::repo::{InitOptions, Repository};

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

const PASSWORD: &[u8] = b"pw";

/// `RELIABILITY=ext` multiplies every case count by 100.
fn scale() -> u32 {
    if std::env::var("RELIABILITY").is_ok_and(|v| v == "ext") {
        100
    } else {
        1
    }
}

/// The run's seed: `VAULTFS_SEED`, else a random one (printed by every test).
fn run_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| match std::env::var("VAULTFS_SEED") {
        Ok(s) => s.trim().parse().expect("VAULTFS_SEED is a number"),
        Err(_) => {
            let mut b = [0u8; 8];
            getrandom::getrandom(&mut b).unwrap();
            u64::from_le_bytes(b) >> 1
        }
    })
}

/// A cheap repository in memory (8 KiB Argon2id), with vault `v`.
fn memory_repo() -> Arc<Repository> {
    memory_repo_with(ChunkerParams {
        min_size: 256,
        avg_size: 1024,
        max_size: 4096,
    })
}

fn memory_repo_with(chunker: ChunkerParams) -> Arc<Repository> {
    let opts = InitOptions {
        kdf: KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
            salt: [3; 16],
        },
        chunker,
        pack_size: 64 * 1024,
        zstd_level: 1,
    };
    let repo = Repository::init(Arc::new(MemoryStore::new()), PASSWORD, opts).unwrap();
    repo.create_vault("v", "").unwrap();
    repo
}

// ---- mutations ----

/// One change to an input. Positions are taken modulo the input's length, so that a
/// shrunk case stays meaningful.
#[derive(Clone, Debug)]
enum Mutation {
    Flip {
        at: u32,
        bit: u8,
    },
    Set {
        at: u32,
        value: u8,
    },
    Truncate {
        at: u32,
    },
    Delete {
        at: u32,
        len: u8,
    },
    Insert {
        at: u32,
        bytes: Vec<u8>,
    },
    /// Replaces the tail from `at` with the tail of another seed from `from`.
    Splice {
        at: u32,
        seed: u8,
        from: u32,
    },
    /// Writes a huge length at `at`: a postcard varint or a little-endian integer.
    Huge {
        at: u32,
        which: u8,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<u32>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        2 => (any::<u32>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        1 => any::<u32>().prop_map(|at| Mutation::Truncate { at }),
        1 => (any::<u32>(), 1u8..16).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => (any::<u32>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<u32>(), any::<u8>(), any::<u32>())
            .prop_map(|(at, seed, from)| Mutation::Splice { at, seed, from }),
        3 => (any::<u32>(), 0u8..8).prop_map(|(at, which)| Mutation::Huge { at, which }),
    ]
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn huge(which: u8) -> Vec<u8> {
    match which {
        0 => varint(1 << 60),
        1 => varint(u64::MAX),
        2 => varint(u32::MAX as u64),
        3 => varint(1 << 31),
        4 => u32::MAX.to_le_bytes().to_vec(),
        5 => (1u64 << 60).to_le_bytes().to_vec(),
        6 => b"77777777777".to_vec(), // the largest octal tar size field
        _ => vec![0xff; 12],          // a base-256 tar number
    }
}

fn apply(seeds: &[Vec<u8>], start: usize, muts: &[Mutation]) -> Vec<u8> {
    let mut v = seeds[start % seeds.len()].clone();
    for m in muts {
        let pos = |at: u32, len: usize| if len == 0 { 0 } else { at as usize % len };
        match m {
            Mutation::Flip { at, bit } => {
                if !v.is_empty() {
                    let i = pos(*at, v.len());
                    v[i] ^= 1 << bit;
                }
            }
            Mutation::Set { at, value } => {
                if !v.is_empty() {
                    let i = pos(*at, v.len());
                    v[i] = *value;
                }
            }
            Mutation::Truncate { at } => {
                let i = pos(*at, v.len() + 1);
                v.truncate(i);
            }
            Mutation::Delete { at, len } => {
                let i = pos(*at, v.len() + 1);
                let end = (i + *len as usize).min(v.len());
                v.drain(i..end);
            }
            Mutation::Insert { at, bytes } => {
                let i = pos(*at, v.len() + 1);
                v.splice(i..i, bytes.iter().copied());
            }
            Mutation::Splice { at, seed, from } => {
                let other = &seeds[*seed as usize % seeds.len()];
                let i = pos(*at, v.len() + 1);
                let j = pos(*from, other.len() + 1);
                v.truncate(i);
                v.extend_from_slice(&other[j..]);
            }
            Mutation::Huge { at, which } => {
                let h = huge(*which);
                let i = pos(*at, v.len() + 1);
                let end = (i + h.len()).min(v.len());
                v.splice(i..end, h);
            }
        }
    }
    v
}

/// Inputs: arbitrary bytes (1 in 5) or up to 6 mutations of a seed.
fn inputs(seeds: Arc<Vec<Vec<u8>>>, max_len: usize) -> BoxedStrategy<Vec<u8>> {
    let arbitrary = proptest::collection::vec(any::<u8>(), 0..max_len);
    let mutated = (any::<usize>(), proptest::collection::vec(mutation(), 1..6))
        .prop_map(move |(start, muts)| apply(&seeds, start, &muts));
    prop_oneof![1 => arbitrary, 4 => mutated].boxed()
}

// ---- the runner ----

/// What one decoder made of one input.
enum Outcome {
    Decoded,
    Refused,
}

#[derive(Default)]
struct Figures {
    cases: u64,
    decoded: u64,
    refused: u64,
    slowest: Duration,
    most_bytes: u64,
}

fn corpus_dir(decoder: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(decoder)
}

/// Runs one decoder over the corpus, the seeds and `cases` generated inputs; panics on
/// the first failure, naming where its (shrunk) input was written.
fn fuzz(
    decoder: &str,
    seeds: Vec<Vec<u8>>,
    cases: u32,
    max_len: usize,
    decode: impl Fn(&[u8]) -> Result<Outcome, String>,
) {
    let seed = run_seed();
    let figures = Mutex::new(Figures::default());
    let one = |input: &[u8]| -> Result<(), String> {
        let bytes0 = alloc_count::thread_bytes();
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(input)));
        let took = t.elapsed();
        let bytes = alloc_count::thread_bytes() - bytes0;
        let mut f = figures.lock().unwrap();
        f.cases += 1;
        f.slowest = f.slowest.max(took);
        f.most_bytes = f.most_bytes.max(bytes);
        if alloc_count::over_limit() > 0 {
            return Err(format!(
                "an allocation over 1 GiB ({} bytes) happened",
                alloc_count::largest()
            ));
        }
        match outcome {
            Ok(Ok(Outcome::Decoded)) => f.decoded += 1,
            Ok(Ok(Outcome::Refused)) => f.refused += 1,
            Ok(Err(e)) => return Err(e),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                return Err(format!("panicked: {msg}"));
            }
        }
        Ok(())
    };
    // The corpus, then the seeds as they are.
    let mut corpus = 0;
    if let Ok(dir) = std::fs::read_dir(corpus_dir(decoder)) {
        let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        for p in files {
            let input = std::fs::read(&p).unwrap();
            one(&input).unwrap_or_else(|e| panic!("{decoder}: corpus input {}: {e}", p.display()));
            corpus += 1;
        }
    }
    for (i, s) in seeds.iter().enumerate() {
        one(s).unwrap_or_else(|e| panic!("{decoder}: seed {i}: {e}"));
    }
    let config = PtConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..PtConfig::default()
    };
    let mut key = seed.to_le_bytes().to_vec();
    key.extend_from_slice(decoder.as_bytes());
    let rng_seed = *blake3::hash(&key).as_bytes();
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &rng_seed));
    let result = runner.run(&inputs(Arc::new(seeds), max_len), |input| {
        one(&input).map_err(proptest::test_runner::TestCaseError::fail)
    });
    if let Err(e) = result {
        let (why, input) = match e {
            TestError::Fail(why, input) => (why.to_string(), input),
            TestError::Abort(why) => panic!("{decoder}: aborted: {why} (seed {seed})"),
        };
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let name = format!("{decoder}-{}", &blake3::hash(&input).to_hex()[..16]);
        let path = dir.join(&name);
        std::fs::write(&path, &input).unwrap();
        panic!(
            "{decoder}: {why}\n  seed {seed} (VAULTFS_SEED={seed} replays it); the shrunk input \
             ({} bytes) is {}: once fixed, copy it to tests/fuzz-corpus/{decoder}/{name}",
            input.len(),
            path.display()
        );
    }
    let f = figures.into_inner().unwrap();
    println!(
        "parsers {decoder}: {} cases ({corpus} from the corpus), {} decoded, {} refused, \
         0 panics, 0 allocations over 1 GiB (largest in the process so far {} bytes), \
         most allocated for one input {} bytes, slowest input {:.1} ms; seed {seed}",
        f.cases,
        f.decoded,
        f.refused,
        alloc_count::largest(),
        f.most_bytes,
        f.slowest.as_secs_f64() * 1000.0
    );
}

/// Decoded values must survive a second round: encode, decode, equal.
fn roundtrip<T: PartialEq + std::fmt::Debug>(
    value: &T,
    encode: impl Fn(&T) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> Result<T, String>,
) -> Result<Outcome, String> {
    let again = decode(&encode(value)).map_err(|e| format!("re-encoding does not decode: {e}"))?;
    if &again != value {
        return Err(format!(
            "re-encoding changed the value: {value:?} vs {again:?}"
        ));
    }
    Ok(Outcome::Decoded)
}

// ---- seeds: the objects of a real repository ----

struct Sample {
    repo: Arc<Repository>,
    /// Plaintexts of objects by kind.
    index: Vec<Vec<u8>>,
    trees: Vec<Vec<u8>>,
    manifests: Vec<Vec<u8>>,
    vaults: Vec<Vec<u8>>,
    payloads: Vec<(u32, Vec<u8>)>,
}

fn plain(repo: &Repository, key: &str) -> Vec<u8> {
    repo.keys()
        .open(&repo.store().get(key).unwrap(), key.as_bytes())
        .unwrap()
}

/// A repository with two points of a small tree with every kind of entry.
fn sample() -> &'static Sample {
    static S: std::sync::OnceLock<Sample> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let repo = memory_repo();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::write(src.join("empty"), b"").unwrap();
        std::fs::write(src.join("small"), b"hello").unwrap();
        std::fs::write(src.join("sub/text"), b"some text ".repeat(900)).unwrap();
        let noise: Vec<u8> = (0..9000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(src.join("sub/deeper/noise"), &noise).unwrap();
        std::os::unix::fs::symlink("sub/text", src.join("link")).unwrap();
        std::fs::hard_link(src.join("small"), src.join("hard")).unwrap();
        let f = std::fs::File::create(src.join("sparse")).unwrap();
        f.set_len(1 << 20).unwrap();
        let opts = BackupOptions::default();
        backup(&repo, "v", Source::Trees(vec![src.clone()]), &opts).unwrap();
        std::fs::write(src.join("small"), b"changed").unwrap();
        backup(&repo, "v", Source::Trees(vec![src]), &opts).unwrap();
        let keys = |p: &str| -> Vec<String> {
            repo.store()
                .list(p)
                .unwrap()
                .into_iter()
                .map(|o| o.key)
                .collect()
        };
        let index: Vec<Vec<u8>> = keys("index/").iter().map(|k| plain(&repo, k)).collect();
        let manifests = keys("points/").iter().map(|k| plain(&repo, k)).collect();
        let vaults = keys("vaults/").iter().map(|k| plain(&repo, k)).collect();
        let mut trees = Vec::new();
        let mut payloads = Vec::new();
        for k in keys("index/") {
            let idx = repo.load_pack_index(&k).unwrap();
            for e in idx.entries {
                let r = ChunkRef {
                    id: e.id,
                    pack: idx.pack,
                    offset: e.offset,
                    stored_len: e.stored_len,
                    raw_len: e.raw_len,
                    frames: None,
                };
                let sealed = repo.read_sealed(&r).unwrap();
                payloads.push((e.raw_len, repo.keys().open(&sealed, &e.id.0).unwrap()));
                if e.kind == ChunkKind::Tree {
                    trees.push(repo.read_chunk(&r).unwrap());
                }
            }
        }
        assert!(!index.is_empty() && trees.len() >= 3 && payloads.len() > 5);
        Sample {
            repo,
            index,
            trees,
            manifests,
            vaults,
            payloads,
        }
    })
}

fn cases(n: u32) -> u32 {
    n * scale()
}

// ---- metadata objects ----

#[test]
fn config_objects() {
    let s = sample();
    let raw = s.repo.store().get("config").unwrap();
    let file = decode_config(&raw).unwrap();
    let v1 = encode_config(&file.config, 1);
    fuzz(
        "config",
        vec![raw, v1],
        cases(3000),
        512,
        |data| match decode_config(data) {
            Ok(f) => {
                check_config(&f.config).map_err(|e| format!("accepted unusable settings: {e}"))?;
                roundtrip(
                    &f.config,
                    |c| encode_config(c, 1),
                    |b| {
                        decode_config(b)
                            .map(|f| f.config)
                            .map_err(|e| e.to_string())
                    },
                )
            }
            Err(_) => Ok(Outcome::Refused),
        },
    );
}

#[test]
fn key_objects() {
    let s = sample();
    let repo = memory_repo();
    let id = repo
        .add_key(
            b"second",
            KdfParams {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1,
                salt: [4; 16],
            },
        )
        .unwrap();
    let good = repo.store().get(&format!("keys/{id}")).unwrap();
    let file = decode_key(&id, &good).unwrap().file;
    let other = encode_key(s.repo.keys(), "00ff", &file);
    fuzz(
        "key",
        vec![good, other],
        cases(3000),
        512,
        |data| match decode_key(&id, data) {
            Ok(k) => {
                vaultfs::repo::crypto::check_kdf(&k.file.kdf)
                    .map_err(|e| format!("accepted Argon2id parameters out of bounds: {e}"))?;
                Ok(Outcome::Decoded)
            }
            Err(_) => Ok(Outcome::Refused),
        },
    );
}

/// A decoder of an encrypted metadata object's plaintext (`decode_object`).
fn object<T>(decoder: &str, seeds: Vec<Vec<u8>>, n: u32)
where
    T: serde::Serialize + for<'a> serde::Deserialize<'a> + PartialEq + std::fmt::Debug,
{
    fuzz(decoder, seeds, cases(n), 1024, |data| {
        match decode_object::<T>(data) {
            Ok(v) => roundtrip(&v, encode_object, decode_object::<T>),
            Err(_) => Ok(Outcome::Refused),
        }
    });
}

/// A decoder of a record's plaintext (`decode_record`, every version).
fn record<Old, T>(decoder: &str, seeds: Vec<Vec<u8>>, n: u32)
where
    Old: for<'a> serde::Deserialize<'a> + Into<T>,
    T: Record + serde::Serialize + PartialEq + std::fmt::Debug,
{
    fuzz(decoder, seeds, cases(n), 1024, |data| {
        match decode_record::<Old, T>(data) {
            Ok(v) => roundtrip(&v, encode_record, decode_record::<Old, T>),
            Err(_) => Ok(Outcome::Refused),
        }
    });
}

#[test]
fn index_objects() {
    object::<PackIndex>("index", sample().index.clone(), 3000);
}

#[test]
fn tree_nodes() {
    object::<Tree>("tree", sample().trees.clone(), 4000);
}

#[test]
fn manifests() {
    let mut seeds = sample().manifests.clone();
    // A format-1 manifest: version byte 1, the old layout.
    let m = decode_record::<ManifestV1, Manifest>(&seeds[0]).unwrap();
    let old = ManifestV1 {
        vault: m.vault,
        name: m.name,
        time_ns: m.time_ns,
        end_ns: m.end_ns,
        hostname: m.hostname,
        status: m.status,
        parent: m.parent,
        backups: m.backups,
    };
    seeds.push(encode_object(&old));
    record::<ManifestV1, Manifest>("manifest", seeds, 3000);
}

#[test]
fn vaults() {
    let mut seeds = sample().vaults.clone();
    let v = decode_record::<VaultV1, Vault>(&seeds[0]).unwrap();
    let mut shared = v;
    shared.tags = vec![("k".into(), "v".into())];
    shared.members.uids = vec![1000, 1001];
    shared.quota = Some(1 << 40);
    seeds.push(encode_record(&shared));
    record::<VaultV1, Vault>("vault", seeds, 3000);
}

#[test]
fn lock_and_forward_objects() {
    let lock = LockInfo {
        hostname: "host".into(),
        pid: 4242,
        time_ns: now_ns(),
        command: "backup v".into(),
    };
    object::<LockInfo>("lock", vec![encode_object(&lock)], 2000);
    let s = sample();
    let idx = decode_object::<PackIndex>(&s.index[0]).unwrap();
    let moved = idx
        .entries
        .iter()
        .map(|e| ChunkRef {
            id: e.id,
            pack: PackId([9; 16]),
            offset: e.offset,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
            frames: None,
        })
        .collect();
    let fwd = Forward {
        pack: idx.pack,
        moved,
    };
    object::<Forward>("forward", vec![encode_object(&fwd)], 2000);
}

// ---- packs ----

/// The plaintext of a sealed chunk: input `raw_len (u32 LE) || payload`.
#[test]
fn chunk_payloads() {
    let seeds = sample()
        .payloads
        .iter()
        .map(|(n, p)| {
            let mut v = n.to_le_bytes().to_vec();
            v.extend_from_slice(p);
            v
        })
        .collect();
    fuzz("payload", seeds, cases(3000), 4096, |data| {
        if data.len() < 4 {
            return Ok(Outcome::Refused);
        }
        let raw_len = u32::from_le_bytes(data[..4].try_into().unwrap());
        match decode_payload(&data[4..], raw_len) {
            Ok(d) if d.len() == raw_len as usize => Ok(Outcome::Decoded),
            Ok(d) => Err(format!(
                "{} bytes decoded for a length of {raw_len}",
                d.len()
            )),
            Err(_) => Ok(Outcome::Refused),
        }
    });
}

/// A whole pack, damaged, read chunk by chunk as readers do (ranged reads at the
/// locations the index gives, then open, decompress, compare lengths): each chunk
/// reads back exactly as it was, or fails. Never other bytes.
#[test]
fn packs_read_chunk_by_chunk() {
    let s = sample();
    let repo = &s.repo;
    let mut packs = Vec::new();
    for plain in &s.index {
        let idx = decode_object::<PackIndex>(plain).unwrap();
        let data = repo.store().get(&idx.pack.key()).unwrap();
        let chunks: Vec<(ChunkRef, Vec<u8>)> = idx
            .entries
            .iter()
            .map(|e| {
                let r = ChunkRef {
                    id: e.id,
                    pack: idx.pack,
                    offset: e.offset,
                    stored_len: e.stored_len,
                    raw_len: e.raw_len,
                    frames: None,
                };
                let data = repo.read_chunk(&r).unwrap();
                (r, data)
            })
            .collect();
        packs.push((idx.pack, data, chunks));
    }
    // Damaged packs go to a repository of their own, with the same keys.
    let store: vaultfs::backend::Store = Arc::new(MemoryStore::new());
    store
        .put("config", &repo.store().get("config").unwrap())
        .unwrap();
    let target = Repository::open(store, PASSWORD).unwrap();
    let seeds: Vec<Vec<u8>> = packs.iter().map(|p| p.1.clone()).collect();
    let which = Mutex::new(0usize);
    fuzz("pack", seeds.clone(), cases(600), 4096, |data| {
        // The pack whose seed this input was most likely made from: same length first.
        let mut w = which.lock().unwrap();
        *w = (*w + 1) % packs.len();
        let (id, _, chunks) = packs
            .iter()
            .find(|p| p.1.len() == data.len())
            .unwrap_or(&packs[*w]);
        target.store().put(&id.key(), data).unwrap();
        let mut any_ok = false;
        for (r, want) in chunks {
            match target.read_chunk(r) {
                Ok(got) if &got == want => any_ok = true,
                Ok(got) => {
                    return Err(format!(
                        "chunk {} read back as {} other bytes",
                        r.id,
                        got.len()
                    ));
                }
                Err(_) => {}
            }
        }
        Ok(if any_ok {
            Outcome::Decoded
        } else {
            Outcome::Refused
        })
    });
}

// ---- tar and image ingest ----

/// Backs `data` up as a stream of `kind`, as `vaultfs backup --tar -` / `--image -` do.
fn ingest(repo: &Arc<Repository>, data: &[u8], kind: StreamKind) -> vaultfs::repo::Result<()> {
    let opts = BackupOptions {
        workers: 1,
        ..BackupOptions::default()
    };
    let source = Source::Stream {
        reader: Box::new(PlainStream(Cursor::new(data.to_vec()))),
        name: Arc::new(Mutex::new(b"in".to_vec())),
        kind,
    };
    backup(repo, "v", source, &opts).map(|_| ())
}

/// Small archives made by GNU tar in each of its formats, and by the `tar` crate.
fn tar_seeds() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("t");
    std::fs::create_dir_all(src.join("d/e")).unwrap();
    std::fs::write(src.join("a"), b"alpha\n").unwrap();
    std::fs::write(src.join("d/b"), b"bravo ".repeat(300)).unwrap();
    std::fs::write(src.join("d/e/empty"), b"").unwrap();
    let long = "n".repeat(120);
    std::fs::write(src.join(&long), b"long name").unwrap();
    std::os::unix::fs::symlink("d/b", src.join("sym")).unwrap();
    std::fs::hard_link(src.join("a"), src.join("hard")).unwrap();
    let sparse = std::fs::File::create(src.join("sparse")).unwrap();
    sparse.set_len(64 * 1024).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_at(b"data in the middle", 30_000).unwrap();
    let mut seeds = Vec::new();
    for (format, extra) in [
        ("gnu", "--sparse"),
        ("oldgnu", "--sparse"),
        ("pax", "--sparse"),
        ("ustar", ""),
        ("v7", ""),
        ("posix", "--sparse --sparse-version=1.0"),
        ("posix", "--sparse --sparse-version=0.1"),
    ] {
        let out = dir.path().join(format!("{format}.tar"));
        let mut cmd = Command::new("tar");
        cmd.arg("-cf")
            .arg(&out)
            .arg(format!("--format={format}"))
            .args(extra.split_whitespace())
            .arg("-C")
            .arg(&src)
            .arg(".");
        let st = cmd.output().expect("GNU tar (the parser tests need it)");
        // v7 and ustar cannot hold some members: GNU tar says so and exits 2.
        assert!(
            out.exists(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        seeds.push(std::fs::read(&out).unwrap());
    }
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", &src).unwrap();
    seeds.push(b.into_inner().unwrap());
    seeds
}

#[test]
fn tar_ingest() {
    let mut seeds = tar_seeds();
    // Compressed: a mutation there mostly exercises the decompressors.
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &seeds[0]).unwrap();
        e.finish().unwrap()
    };
    seeds.push(gz);
    seeds.push(zstd::encode_all(&seeds[2][..], 1).unwrap());
    fuzz("tar", seeds, cases(1200), 2048, |data| {
        let repo = memory_repo();
        match ingest(&repo, data, StreamKind::Tar) {
            Ok(()) => {
                let r = check(&repo, true).map_err(|e| e.to_string())?;
                if !r.ok() {
                    return Err(format!("an accepted archive left damage: {:?}", r.errors));
                }
                Ok(Outcome::Decoded)
            }
            Err(_) => {
                let points = repo.list_points("v").map_err(|e| e.to_string())?;
                if !points.is_empty() {
                    return Err(format!("a refused archive left points {points:?}"));
                }
                Ok(Outcome::Refused)
            }
        }
    });
}

#[test]
fn image_ingest() {
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let seeds = vec![
        noise,
        vec![0; 9000],
        b"\x28\xb5\x2f\xfd not really zstd".to_vec(),
        b"\x1f\x8b not really gzip".to_vec(),
    ];
    fuzz("image", seeds, cases(300), 8192, |data| {
        let repo = memory_repo();
        ingest(&repo, data, StreamKind::Image).map_err(|e| format!("an image was refused: {e}"))?;
        let point = repo.list_points("v").map_err(|e| e.to_string())?;
        let m = repo
            .load_manifest("v", &point[0])
            .map_err(|e| e.to_string())?;
        let node = repo.backup_root(&m.backups[0]).map_err(|e| e.to_string())?;
        let mut back = Vec::new();
        repo.read_file(&node, &mut back)
            .map_err(|e| e.to_string())?;
        if back != data {
            return Err(format!(
                "{} bytes in, {} other bytes out",
                data.len(),
                back.len()
            ));
        }
        Ok(Outcome::Decoded)
    });
}
