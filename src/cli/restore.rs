//! `vaultfs restore`: a point's trees into a directory (`VAULT POINT TARGET`, with
//! `--path`, `--include`/`--exclude`, `--overwrite`/`--skip-existing`, `--delete`,
//! `--verify`), or one image backup onto a block device or a file (`VAULT POINT --image
//! NAME --to DEV|FILE`, `--zero-holes`). Either runs as a task of kind `restore` that
//! names its point once resolved, so the point shows `restoring` meanwhile.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use clap::Args;

use super::{EXIT_PARTIAL, Global, output, tasks};
use crate::control::tasks::Task;
use crate::repo::Repository;
use crate::repo::format::{printable, printable_path, rfc3339};
use crate::repo::image_restore::{ImageRestoreOptions, ImageRestoreStats, restore_image};
use crate::repo::restore::{Existing, RestoreOptions, RestoreStats, Selection};
use crate::repo::tasks::TaskKind;

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The vault that holds the point.
    pub vault: String,
    /// A point name, or `latest` (not with --at).
    pub point: Option<String>,
    /// The directory to restore into (created if missing); not with --image.
    pub target: Option<PathBuf>,
    /// Instead of POINT: the newest point taken at or before TIME (RFC 3339, a date, a
    /// point name, or a span back from now: 2d); a time covers its last unit (a point
    /// name its second).
    #[arg(long, value_name = "TIME", value_parser = super::points::parse_time)]
    pub at: Option<i64>,
    /// Restore only this path (starting with the backup's name); repeatable.
    #[arg(long, value_name = "PATH")]
    pub path: Vec<OsString>,
    /// Restore only entries matching GLOB (the path inside the point, backup name first:
    /// `*` and `?` within a component, `**` across; no leading `/`: at any depth), the
    /// directories leading to them, and everything under a matching directory;
    /// repeatable.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out entries matching GLOB (as --include matches), a directory with
    /// everything under it; beats --include; repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Replace existing entries, each new one written under a temporary name and
    /// renamed over the old (a failure leaves the old one or the new one, never a torn
    /// file). Without --overwrite or --skip-existing, an existing file is an error
    /// naming it, before anything is written.
    #[arg(long, conflicts_with = "skip_existing")]
    pub overwrite: bool,
    /// With --overwrite: remove what restored directories hold and the backup does not
    /// (files, symlinks, whole directories), as rsync --delete; entries left out by
    /// --include/--exclude are kept.
    #[arg(long, requires = "overwrite")]
    pub delete: bool,
    /// Keep existing entries as they are; restore only what is missing.
    #[arg(long)]
    pub skip_existing: bool,
    /// Read everything back once written and compare it with the backup's chunk ids.
    #[arg(long)]
    pub verify: bool,
    /// Do not restore owners even when running as root.
    #[arg(long)]
    pub no_owners: bool,
    /// Restore this image backup of the point onto --to instead of trees to TARGET.
    #[arg(long, value_name = "NAME", requires = "to",
          conflicts_with_all = ["path", "include", "exclude", "overwrite", "skip_existing"])]
    pub image: Option<OsString>,
    /// With --image: the block device or regular file written (a missing file is
    /// created at the image's size; an existing one must be as large as the image, or
    /// empty).
    #[arg(long, value_name = "DEV|FILE", requires = "image")]
    pub to: Option<PathBuf>,
    /// With --image: write zeros over the image's holes (on a new or empty file they
    /// are left as holes, already zero).
    #[arg(long, requires = "image")]
    pub zero_holes: bool,
    /// Print what was restored as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a restore did.
enum Done {
    Trees(RestoreStats),
    Image(ImageRestoreStats),
}

/// `vaultfs restore`.
pub fn run(g: &Global, a: RestoreArgs) -> Result<i32> {
    // With --at (or --image), clap takes the first positional after VAULT as POINT.
    let (point, target) = match (a.point.clone(), a.target.clone(), a.at, a.image.is_some()) {
        (Some(p), Some(t), None, false) => (p, Some(t)),
        (Some(t), None, Some(_), false) => (String::new(), Some(PathBuf::from(t))),
        (None, Some(t), Some(_), false) => (String::new(), Some(t)),
        (Some(p), None, None, true) => (p, None),
        (None, None, Some(_), true) => (String::new(), None),
        (_, _, _, true) => bail!(
            "restore --image needs VAULT POINT --image NAME --to DEV|FILE (or VAULT --at TIME ...), and no TARGET"
        ),
        _ => bail!("restore needs VAULT POINT TARGET, or VAULT --at TIME TARGET"),
    };
    let selection = Selection::new(&a.include, &a.exclude)?;
    let shown = match a.at {
        Some(t) => format!("at {}", rfc3339(t)),
        None => point.clone(),
    };
    let dest = match (&target, &a.to) {
        (Some(t), _) | (None, Some(t)) => t.clone(),
        (None, None) => bail!("restore --image needs --to DEV|FILE"),
    };
    let what = match &a.image {
        Some(i) => format!(
            "{}/{shown}/{} to {}",
            a.vault,
            printable(i.as_bytes()),
            printable_path(&dest)
        ),
        None => format!("{}/{shown} to {}", a.vault, printable_path(&dest)),
    };
    let vault = a.vault.clone();
    let ran = tasks::as_task(
        g,
        TaskKind::Restore,
        Some(&vault),
        what,
        |(p, _): &(String, Done)| Some(p.clone()),
        |repo, task| {
            let point = resolve(repo, &a.vault, &point, a.at)?;
            // From here the point shows `restoring`.
            task.set_point(&point);
            let done = match &a.image {
                Some(name) => Done::Image(image(repo, task, &a, &point, name, &dest)?),
                None => Done::Trees(trees(repo, task, &a, &point, selection, &dest)?),
            };
            // A cancelled restore stops at its next read: what it skipped is not a result.
            task.cancel.check()?;
            Ok((point, done))
        },
    )?;
    let Some((point, done)) = ran else {
        return Ok(tasks::EXIT_CANCELLED);
    };
    match done {
        Done::Trees(stats) => Ok(print_trees(&a, &point, &dest, &stats)),
        Done::Image(stats) => {
            print_image(&a, &point, &dest, &stats);
            Ok(0)
        }
    }
}

/// The point named, or with `at` the newest one taken at or before that time.
fn resolve(repo: &Repository, vault: &str, point: &str, at: Option<i64>) -> Result<String> {
    Ok(match at {
        None => repo.resolve_point(vault, point)?,
        Some(t) => repo
            .point_records(vault, false)?
            .into_iter()
            .rev()
            .find(|p| p.manifest.time_ns <= super::end_of_unit(t))
            .map(|p| p.name().to_string())
            .ok_or_else(|| {
                anyhow!(
                    "vault {vault} has no point taken at or before {}",
                    rfc3339(t)
                )
            })?,
    })
}

fn trees(
    repo: &Arc<Repository>,
    task: &Arc<Task>,
    a: &RestoreArgs,
    point: &str,
    selection: Selection,
    target: &std::path::Path,
) -> Result<RestoreStats> {
    let m = repo.load_manifest(&a.vault, point)?;
    let progress = task.progress.clone();
    let mut opts = RestoreOptions {
        progress: progress.clone(),
        verify: a.verify,
        existing: if a.overwrite {
            Existing::Overwrite
        } else if a.skip_existing {
            Existing::Skip
        } else {
            Existing::Refuse
        },
        delete: a.delete,
        ..Default::default()
    };
    if a.no_owners {
        opts.owners = false;
    }
    let whole = a.path.is_empty() && selection.is_everything();
    opts.selection = selection;
    let total: u64 = m.backups.iter().map(|b| b.stats.bytes).sum();
    let files: u64 = m.backups.iter().map(|b| b.stats.files).sum();
    // Totals are known for a whole point only.
    if whole {
        task.set_totals(Some(total), Some(files));
    }
    let bar = output::ProgressDisplay::start(progress, whole.then_some(total), "restore");
    let r = if a.path.is_empty() {
        crate::repo::restore::restore(repo, &m, target, &opts)
    } else {
        let paths: Vec<&[u8]> = a.path.iter().map(|p| p.as_bytes()).collect();
        crate::repo::restore::restore_paths(repo, &m, &paths, target, &opts)
    };
    bar.finish();
    Ok(r?)
}

fn image(
    repo: &Arc<Repository>,
    task: &Arc<Task>,
    a: &RestoreArgs,
    point: &str,
    name: &OsString,
    to: &std::path::Path,
) -> Result<ImageRestoreStats> {
    let m = repo.load_manifest(&a.vault, point)?;
    let entry = crate::repo::image_restore::find_image(&m, name.as_bytes())?;
    task.set_totals(Some(entry.stats.bytes), Some(1));
    let mut opts = ImageRestoreOptions {
        progress: task.progress.clone(),
        zero_holes: a.zero_holes,
        verify: a.verify,
        ..Default::default()
    };
    if a.no_owners {
        opts.owners = false;
    }
    let bar =
        output::ProgressDisplay::start(opts.progress.clone(), Some(entry.stats.bytes), "restore");
    let r = restore_image(repo, &m, name.as_bytes(), to, &opts);
    bar.finish();
    Ok(r?)
}

fn print_trees(a: &RestoreArgs, point: &str, target: &std::path::Path, s: &RestoreStats) -> i32 {
    for (p, why) in &s.failed {
        eprintln!("error: {}: not restored: {why}", printable_path(p));
    }
    if a.json {
        output::print_json(&serde_json::json!({
            "vault": a.vault,
            "point": point,
            "target": target.to_string_lossy(),
            "files": s.files,
            "dirs": s.dirs,
            "other": s.other,
            "size": s.bytes,
            "kept": s.skipped,
            "deleted": s.deleted,
            "temporaries_removed": s.temporaries,
            "verified": a.verify,
            "failed": s.failed.iter().map(|(p, why)| serde_json::json!({
                "path": p.to_string_lossy(),
                "error": why,
            })).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "restored {}/{point} to {}: {}",
            a.vault,
            printable_path(target),
            output::counts(s.files, s.dirs, s.other, s.bytes)
        );
        if s.skipped > 0 {
            println!("{} existing entries kept as they were", s.skipped);
        }
        if s.deleted > 0 {
            let what = if s.deleted == 1 { "entry" } else { "entries" };
            println!("{} {what} the backup does not hold deleted", s.deleted);
        }
        if s.temporaries > 0 {
            println!(
                "{} temporary file(s) of an interrupted restore removed",
                s.temporaries
            );
        }
        if !s.failed.is_empty() {
            println!(
                "{} path(s) could not be restored (listed above; damaged files were removed, not left short)",
                s.failed.len()
            );
        }
    }
    if s.failed.is_empty() { 0 } else { EXIT_PARTIAL }
}

fn print_image(a: &RestoreArgs, point: &str, to: &std::path::Path, s: &ImageRestoreStats) {
    let name = a
        .image
        .as_ref()
        .map(|n| printable(n.as_bytes()))
        .unwrap_or_default();
    let holes = if s.zeroed_bytes > 0 {
        "zeroed"
    } else if s.fresh {
        "left as holes"
    } else {
        "skipped"
    };
    if a.json {
        output::print_json(&serde_json::json!({
            "vault": a.vault,
            "point": point,
            "image": name,
            "to": to.to_string_lossy(),
            "target_kind": s.target_kind.as_str(),
            "target_size": s.target_size,
            "size": s.size,
            "data_bytes": s.data_bytes,
            "hole_bytes": s.hole_bytes,
            "zeroed_bytes": s.zeroed_bytes,
            "holes": holes,
            "verified": a.verify,
        }));
    } else {
        println!(
            "restored image {}/{point}/{name} to {}: {} ({} of data written, {} of holes {holes})",
            a.vault,
            printable_path(to),
            output::human(s.size),
            output::human(s.data_bytes),
            output::human(s.hole_bytes),
        );
        if s.hole_bytes > 0 && !s.fresh && s.zeroed_bytes == 0 {
            println!(
                "the target keeps its old bytes where the image has holes (--zero-holes writes zeros there)"
            );
        }
    }
}
