//! `vaultfs prune`: its arguments, and the report (which `forget --prune` prints too).

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::output;
use crate::repo::prune::{PruneOptions, PruneReport, prune};

#[derive(Args, Debug, Clone)]
pub struct PruneArgs {
    /// Report what would be deleted and repacked; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Repack a pack when more than this percentage of its bytes is unused (0-100).
    #[arg(long, default_value_t = 10.0, value_name = "PERCENT",
          value_parser = parse_percent)]
    pub max_unused: f64,
    /// Wait this long for running backups to release the lock (e.g. 30s, 10m, 1h;
    /// 0 fails at once).
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = parse_duration)]
    pub lock_wait: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl PruneArgs {
    pub fn options(&self) -> PruneOptions {
        PruneOptions {
            dry_run: self.dry_run,
            max_unused_percent: self.max_unused,
            lock_wait: self.lock_wait,
            progress: None,
        }
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s} is not between 0 and 100"))
    }
}

/// `0`, `90` (seconds), `90s`, `10m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 10m, 1h)"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?} is not a duration (e.g. 30s, 10m, 1h)")),
    };
    Ok(Duration::from_secs(n * secs))
}

/// Runs `vaultfs prune`, counting into `progress` (the task's) and drawing a bar of the
/// bytes repacked; exit status 1 when some objects could not be deleted.
pub fn run(
    repo: &std::sync::Arc<crate::repo::Repository>,
    args: &PruneArgs,
    progress: std::sync::Arc<crate::repo::walk::Progress>,
) -> Result<i32> {
    let bar = output::ProgressDisplay::start_counting(progress.clone(), None, "prune", "packs");
    let report = prune(
        repo,
        &PruneOptions {
            progress: Some(progress),
            ..args.options()
        },
    );
    bar.finish();
    let report = report?;
    print_report(&report, args.json);
    Ok(if report.errors.is_empty() { 0 } else { 1 })
}

/// Prints a prune's report: JSON (the fields of [`PruneReport`]), or a few lines.
pub fn print_report(r: &PruneReport, json: bool) {
    if json {
        output::print_json(&serde_json::to_value(r).expect("JSON encodes"));
        return;
    }
    for e in &r.errors {
        eprintln!("error: {e}");
    }
    let would = if r.dry_run { "would " } else { "" };
    println!(
        "{} points reference {} of {} in {} packs",
        r.points,
        output::human(r.bytes_before - r.unused_bytes_before.min(r.bytes_before)),
        output::human(r.bytes_before),
        r.packs_before
    );
    println!(
        "{would}delete {} packs, {would}repack {} ({} chunks, {}), {would}write {} forward \
         objects{}",
        r.packs_deleted,
        r.packs_repacked,
        r.chunks_moved,
        output::human(r.bytes_moved),
        r.forwards_written,
        if r.dry_run {
            String::new()
        } else {
            format!(", removed {} stale ones", r.forwards_removed)
        }
    );
    println!(
        "repository {}: {} -> {} ({} packs) in {:.1}s",
        if r.dry_run { "would go" } else { "went" },
        output::human(r.bytes_before),
        output::human(r.bytes_after),
        r.packs_after,
        r.seconds
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_percentages() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("h").is_err());
        assert_eq!(parse_percent("10").unwrap(), 10.0);
        assert_eq!(parse_percent("2.5%").unwrap(), 2.5);
        assert!(parse_percent("101").is_err());
    }
}
