//! Chunk statistics of a repository's latest points, used to choose chunk sizes:
//! chunk count, index size, and the read amplification of a random 4 KiB read (the
//! stored bytes of the chunk that covers a random byte, weighted by size, over 4 KiB).
//!
//! usage: VAULTFS_REPO=DIR VAULTFS_PASSWORD=pw cargo run --release --example chunk_stats

use std::collections::HashSet;

use vaultfs::repo::Repository;
use vaultfs::repo::format::{Extent, NodeKind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = vaultfs::backend::open(&std::env::var("VAULTFS_REPO")?)?;
    let repo = Repository::open(store, std::env::var("VAULTFS_PASSWORD")?.as_bytes())?;
    let index_bytes: u64 = repo.store().list("index/")?.iter().map(|o| o.size).sum();
    let (index, _) = repo.load_index()?;
    let (mut weighted, mut logical, mut big_weighted, mut big_logical) = (0f64, 0f64, 0f64, 0f64);
    let mut seen = HashSet::new();
    for vault in repo.list_vaults()? {
        let Some(point) = repo.list_points(&vault)?.pop() else {
            continue;
        };
        let m = repo.load_manifest(&vault, &point)?;
        let mut stack: Vec<_> = m.backups.iter().map(|b| b.root.clone()).collect();
        while let Some(r) = stack.pop() {
            if !seen.insert(r.id) {
                continue;
            }
            for n in repo.load_tree(&r)?.nodes {
                if let Some(s) = n.subtree {
                    stack.push(s);
                }
                if n.kind != NodeKind::File {
                    continue;
                }
                for e in &n.content {
                    if let Extent::Data(c) = e {
                        let w = c.raw_len as f64 * c.stored_len as f64;
                        weighted += w;
                        logical += c.raw_len as f64;
                        if n.size >= 8 << 20 {
                            big_weighted += w;
                            big_logical += c.raw_len as f64;
                        }
                    }
                }
            }
        }
    }
    println!(
        "chunks {} index_bytes {} amp_4k_all {:.1} amp_4k_big_files {:.1}",
        index.len(),
        index_bytes,
        weighted / logical.max(1.0) / 4096.0,
        big_weighted / big_logical.max(1.0) / 4096.0
    );
    Ok(())
}
