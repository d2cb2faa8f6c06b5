//! Builds a large synthetic repository quickly, for benchmarks of what must not grow with
//! the repository (mount to first listing): one vault `synth` with `--points` recovery
//! points, and `--chunks` distinct small data chunks spread evenly over them (each point
//! holds one tree backup `data/` of a few files made of its share of the chunks).
//!
//! usage: VAULTFS_PASSWORD=pw cargo run --release --example synth-repo -- \
//!            DIR [--points 1000] [--chunks 1000000]
//!
//! The repository is real (same format, same writer as a backup), only the content is
//! made up: 256-byte chunks so that a million of them take seconds, not hours.

use std::collections::HashMap;

use vaultfs::repo::format::{
    BackupEntry, BackupKind, BackupStats, ChunkKind, Extent, Manifest, Node, NodeKind, PointAttrs,
    PointStatus, Tree, encode_object, now_ns,
};
use vaultfs::repo::pack::PackWriter;
use vaultfs::repo::{InitOptions, Repository};

const FILES_PER_POINT: usize = 8;
const CHUNK_LEN: usize = 256;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut dir, mut points, mut chunks) = (None, 1000usize, 1_000_000usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--points" => points = args.next().ok_or("--points N")?.parse()?,
            "--chunks" => chunks = args.next().ok_or("--chunks N")?.parse()?,
            _ if dir.is_none() => dir = Some(a),
            _ => return Err(format!("unexpected argument {a}").into()),
        }
    }
    let dir = dir.ok_or("usage: synth-repo DIR [--points N] [--chunks N]")?;
    let password = std::env::var("VAULTFS_PASSWORD").map_err(|_| "set VAULTFS_PASSWORD")?;
    let points = points.max(1);
    let started = std::time::Instant::now();
    let store = vaultfs::backend::open(&dir)?;
    let repo = Repository::init(store, password.as_bytes(), InitOptions::default())?;
    repo.create_vault("synth", "synthetic: many points, many chunks")?;

    let writer = PackWriter::new(repo.clone(), HashMap::new());
    let level = repo.config().zstd_level;
    let mut zstd = zstd::bulk::Compressor::new(level)?;
    let mut manifests = Vec::with_capacity(points);
    let t0 = now_ns() - points as i64 * 3_600_000_000_000;
    let mut next_chunk = 0usize;
    for p in 0..points {
        let share = chunks / points + usize::from(p < chunks % points);
        let mut files = Vec::with_capacity(FILES_PER_POINT);
        let mut bytes = 0u64;
        for f in 0..FILES_PER_POINT {
            let n = share / FILES_PER_POINT + usize::from(f < share % FILES_PER_POINT);
            let mut node = Node::empty(format!("file-{f:02}").into_bytes(), NodeKind::File);
            for _ in 0..n {
                let mut data = vec![0u8; CHUNK_LEN];
                for (i, b) in data.iter_mut().enumerate() {
                    *b = (next_chunk >> ((i % 8) * 8)) as u8 ^ (i as u8);
                }
                next_chunk += 1;
                let r = writer.store_chunk(ChunkKind::Data, &data, &mut zstd)?;
                node.content.push(Extent::Data(r));
            }
            node.size = (n * CHUNK_LEN) as u64;
            bytes += node.size;
            files.push(node);
        }
        let tree = encode_object(&Tree { nodes: files });
        let mut top = Node::empty(b"data".to_vec(), NodeKind::Dir);
        top.subtree = Some(writer.store_chunk(ChunkKind::Tree, &tree, &mut zstd)?);
        let root = encode_object(&Tree { nodes: vec![top] });
        let root = writer.store_chunk(ChunkKind::Tree, &root, &mut zstd)?;
        let time_ns = t0 + p as i64 * 3_600_000_000_000;
        manifests.push(Manifest {
            vault: "synth".into(),
            name: String::new(),
            time_ns,
            end_ns: time_ns,
            hostname: "synth".into(),
            status: PointStatus::Available,
            parent: None,
            backups: vec![BackupEntry {
                name: b"data".to_vec(),
                kind: BackupKind::Tree,
                source: b"/synth/data".to_vec(),
                root,
                stats: BackupStats {
                    files: FILES_PER_POINT as u64,
                    dirs: 1,
                    bytes,
                    bytes_read: bytes,
                    chunks_new: share as u64,
                    ..Default::default()
                },
            }],
            attrs: PointAttrs::default(),
            skipped: Vec::new(),
            fail_reason: None,
            skipped_resources: Vec::new(),
            trigger: Default::default(),
        });
    }
    let stats = writer.finish()?;
    // Points are committed after their data, as a backup does.
    for mut m in manifests {
        repo.commit_manifest(&mut m)?;
    }
    let packs = repo.store().list("packs/")?.len();
    let index_objects = repo.store().list("index/")?.len();
    println!(
        "{dir}: {points} points, {} chunks in {packs} packs ({index_objects} index objects), \
         {} bytes stored, {:.1} s",
        next_chunk + 2 * points,
        stats.bytes_new,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
