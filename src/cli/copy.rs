//! `vaultfs export-record`, `import-record`, `copy` and `init --from`: points moved
//! between repositories, or brought back into one (`repo::export`, `repo::copy`).
//!
//! The other repository (`--from`) is named as `--repo` is (a directory or
//! `s3://bucket/prefix`, with the same S3 options), with its own password:
//! `--from-password-file F` (env VAULTFS_FROM_PASSWORD_FILE), else env
//! VAULTFS_FROM_PASSWORD, else a prompt on a terminal.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use super::{Global, output, tasks};
use crate::backend::Store;
use crate::repo::cancel::CancellingStore;
use crate::repo::copy::{CopyOptions, CopyReport};
use crate::repo::crypto::Keys;
use crate::repo::export::ImportOptions;
use crate::repo::format::printable;
use crate::repo::tasks::TaskKind;
use crate::repo::{InitOptions, Repository};

/// The repository points come from (`copy --from`, `init --from`).
#[derive(Args, Debug, Clone)]
pub struct FromArgs {
    /// The other repository: a directory, or s3://bucket/prefix (the S3 options given
    /// apply to both).
    #[arg(long, value_name = "REPO2")]
    pub from: String,
    /// Read the other repository's password from this file (its first line); else env
    /// VAULTFS_FROM_PASSWORD, else a prompt.
    #[arg(long, value_name = "F", env = "VAULTFS_FROM_PASSWORD_FILE")]
    pub from_password_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The vault that holds the point.
    pub vault: String,
    /// A point name, or `latest`.
    pub point: String,
    /// Write the record to this file instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The record, as `export-record` wrote it (default: stdin).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Import the point into this vault instead of the record's (created when missing,
    /// as the record's own vault is).
    #[arg(long, value_name = "V")]
    pub vault: Option<String>,
    /// Wait this long for another writer (a prune, a backup) to release the lock, e.g.
    /// 30s, 10m; 0 fails at once.
    #[arg(long, default_value = "0", value_name = "DURATION",
          value_parser = super::prune::parse_duration)]
    pub lock_wait: std::time::Duration,
    /// Print what was imported as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    #[command(flatten)]
    pub from: FromArgs,
    /// The vault whose points are copied (created here, with its settings, when missing).
    pub vault: String,
    /// The points to copy (names, or `latest`); none: every point of the vault.
    pub points: Vec<String>,
    /// Wait this long for another writer of this repository (a prune, a backup) to
    /// release its lock; 0 fails at once.
    #[arg(long, default_value = "0", value_name = "DURATION",
          value_parser = super::prune::parse_duration)]
    pub lock_wait: std::time::Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The password of the `--from` repository.
fn from_password(a: &FromArgs) -> Result<Vec<u8>> {
    if let Some(f) = &a.from_password_file {
        let text = std::fs::read(f).map_err(|e| anyhow!("password file {}: {e}", f.display()))?;
        let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
        return Ok(line.strip_suffix(b"\r").unwrap_or(line).to_vec());
    }
    if let Ok(p) = std::env::var("VAULTFS_FROM_PASSWORD") {
        return Ok(p.into_bytes());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "no password for the repository at {}: set VAULTFS_FROM_PASSWORD, use --from-password-file, or run on a terminal",
            a.from
        );
    }
    Ok(rpassword::prompt_password(format!("password of {}: ", a.from))?.into_bytes())
}

/// The store of the `--from` repository, opened with the global S3 options.
fn from_store(g: &Global, a: &FromArgs) -> Result<Store> {
    let other = Global {
        repo: Some(a.from.clone()),
        ..g.clone()
    };
    super::open_store(&other)
}

/// `vaultfs export-record VAULT POINT`.
pub fn export(g: &Global, a: &ExportArgs) -> Result<i32> {
    let repo = super::open_repo(g)?;
    let rec = crate::repo::export::export(&repo, &a.vault, &a.point)?;
    let mut text = serde_json::to_string_pretty(&rec).expect("a record encodes");
    text.push('\n');
    match &a.output {
        Some(path) => write_new(path, text.as_bytes())?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("writing to standard output")?;
        }
    }
    eprintln!(
        "exported the record of {}/{} ({} backup(s))",
        rec.vault,
        rec.point,
        rec.backups.len()
    );
    Ok(0)
}

/// Writes a file, durably, refusing to replace one that exists.
fn write_new(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// `vaultfs import-record [--vault V] [FILE] < record.json`.
pub fn import(g: &Global, a: &ImportArgs) -> Result<i32> {
    let text = match &a.file {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))?
        }
        _ => {
            if std::io::stdin().is_terminal() {
                bail!(
                    "import-record reads the record from stdin: `vaultfs import-record < record.json`"
                );
            }
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading standard input")?;
            buf
        }
    };
    let repo = super::open_repo(g)?;
    let opts = ImportOptions {
        vault: a.vault.clone(),
        lock_wait: a.lock_wait,
    };
    let r = crate::repo::export::import(&repo, &text, &opts)?;
    if a.json {
        output::print_json(&serde_json::to_value(&r).expect("a report encodes"));
    } else if r.already_present {
        println!(
            "point {}/{} is already there: nothing to do",
            r.vault, r.point
        );
    } else {
        if r.vault_created {
            println!("created vault {}", r.vault);
        }
        println!(
            "imported point {}/{} ({} trees, {} data chunks, all present)",
            r.vault, r.point, r.trees, r.chunks
        );
    }
    Ok(0)
}

/// `vaultfs copy --from REPO2 VAULT [POINT...]`, as a task of this repository.
pub fn copy(g: &Global, a: &CopyArgs) -> Result<i32> {
    let store = from_store(g, &a.from)?;
    let pw = from_password(&a.from)?;
    let description = format!(
        "copy {} from {}{}",
        a.vault,
        a.from.from,
        if a.points.is_empty() {
            String::new()
        } else {
            format!(" ({})", a.points.join(" "))
        }
    );
    let ran = tasks::as_task(
        g,
        TaskKind::Copy,
        Some(&a.vault),
        description,
        |_| None,
        |dst, task| {
            let src = Repository::open(CancellingStore::wrap(store, task.cancel.clone()), &pw)
                .map_err(|e| anyhow!("the repository to copy from: {e}"))?;
            let total: u64 = match a.points.is_empty() {
                true => src
                    .point_records(&a.vault, false)
                    .map(|rs| rs.iter().map(point_bytes).sum())
                    .unwrap_or(0),
                false => a
                    .points
                    .iter()
                    .filter_map(|p| src.point_record(&a.vault, p).ok())
                    .map(|r| point_bytes(&r))
                    .sum(),
            };
            task.set_totals(Some(total), None);
            let opts = CopyOptions {
                lock_wait: a.lock_wait,
                cancel: task.cancel.clone(),
                progress: task.progress.clone(),
            };
            let bar = output::ProgressDisplay::start(task.progress.clone(), Some(total), "copy");
            let r = crate::repo::copy::copy(&src, dst, &a.vault, &a.points, &opts);
            bar.finish();
            let r = r?;
            task.set_name(&format!(
                "{}: {} point(s) copied, {} present; {} chunks uploaded, {} skipped",
                task_name(&a.vault, &a.from.from),
                r.points_copied.len(),
                r.points_present.len(),
                r.chunks_uploaded,
                r.chunks_skipped
            ));
            Ok((src.location(), dst.location(), r))
        },
    )?;
    let Some((from, to, r)) = ran else {
        return Ok(tasks::EXIT_CANCELLED);
    };
    print_report(&from, &to, &r, a.json);
    Ok(0)
}

fn task_name(vault: &str, from: &str) -> String {
    format!("copy {vault} from {from}")
}

fn point_bytes(r: &crate::repo::points::PointRecord) -> u64 {
    r.manifest.backups.iter().map(|b| b.stats.bytes).sum()
}

fn print_report(from: &str, to: &str, r: &CopyReport, json: bool) {
    if json {
        let mut v = serde_json::to_value(r).expect("a report encodes");
        v["from"] = from.into();
        v["to"] = to.into();
        output::print_json(&v);
        return;
    }
    if r.vault_created {
        println!("created vault {} (with the settings of {from})", r.vault);
    }
    for p in &r.points_copied {
        println!("copied   {}/{}", r.vault, printable(p.as_bytes()));
    }
    for p in &r.points_present {
        println!("present  {}/{}", r.vault, printable(p.as_bytes()));
    }
    println!(
        "{} point(s) copied, {} already present; {} chunks uploaded, {} skipped (already here); {} trees written; {} uploaded in {} pack(s){}",
        r.points_copied.len(),
        r.points_present.len(),
        r.chunks_uploaded,
        r.chunks_skipped,
        r.trees_uploaded,
        output::human(r.bytes_uploaded),
        r.packs,
        if r.same_ids {
            " (chunk ids shared with the source)"
        } else {
            ""
        }
    );
}

/// `vaultfs init --from REPO2`: the new repository takes the other's chunker
/// parameters and id key (a new encryption key, its own password), so that copies keep
/// chunk ids and content ids.
pub fn init_from(
    g: &Global,
    store: Store,
    password: &[u8],
    mut opts: InitOptions,
    from: &FromArgs,
) -> Result<Arc<Repository>> {
    let other = Repository::open(from_store(g, from)?, &from_password(from)?)
        .map_err(|e| anyhow!("the repository to share chunk ids with: {e}"))?;
    opts.chunker = other.config().chunker;
    let keys = Keys::sharing_ids_of(other.keys());
    Ok(Repository::init_with_keys(store, password, opts, keys)?)
}
