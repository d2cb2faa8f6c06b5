//! The commands on recovery point records and retention: `points`, `point show|update|
//! delete`, `forget`, `upgrade`, and the flags they share with `backup` and `vault`.

use std::sync::Arc;

use anyhow::{Result, anyhow};
use chrono_tz::Tz;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::output;
use crate::control::json::record_json;
use crate::repo::format::*;
use crate::repo::points::{AttrChange, PointRecord, normalize_tags};
use crate::repo::retention::{ALL, Decision, KeepRules, Span};
use crate::repo::{Repository, lock};

/// Nanoseconds in a day.
const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// Reads a time: RFC 3339 (`2026-11-22T22:55:01Z`, any offset), a date (`2026-11-22`,
/// UTC midnight), a point name (`2026-11-22T225501Z`), or a span back from now (`7d`,
/// `2w`, `1y6m`, `12h`).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let ns = |t: chrono::DateTime<chrono::Utc>| t.timestamp_nanos_opt();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return ns(t.to_utc()).ok_or_else(|| format!("{s}: out of range"));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H%M%SZ") {
        return ns(t.and_utc()).ok_or_else(|| format!("{s}: out of range"));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return ns(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
            .ok_or_else(|| format!("{s}: out of range"));
    }
    match Span::parse(s) {
        Ok(span) => Ok(span.before(now_ns(), Tz::UTC)),
        Err(_) => Err(format!(
            "invalid time {s:?}: use RFC 3339 (2026-11-22T22:55:01Z), a date (2026-11-22), a point name, or a span back from now (7d, 2w, 6m, 12h)"
        )),
    }
}

fn parse_span(s: &str) -> Result<Span, String> {
    Span::parse(s)
}

fn parse_tz(s: &str) -> Result<Tz, String> {
    s.parse::<Tz>().map_err(|_| {
        format!("unknown time zone {s:?}: use an IANA name such as Europe/Berlin or UTC")
    })
}

/// `key=value`.
pub fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("invalid tag {s:?}: use KEY=VALUE")),
    }
}

/// A bucket count: a number, or -1 for every bucket.
fn parse_count(s: &str) -> Result<u32, String> {
    match s.parse::<i64>() {
        Ok(-1) => Ok(ALL),
        Ok(n) if (0..i64::from(u32::MAX)).contains(&n) => Ok(n as u32),
        _ => Err(format!("invalid count {s:?}: a number, or -1 for all")),
    }
}

/// The keep rules, as `forget` takes them and `vault create|update` stores them.
#[derive(Args, Debug, Clone, Default)]
pub struct RuleArgs {
    /// Keep the N newest points.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_last: Option<u32>,
    /// Keep the newest point of each of the last N hours that have one (-1: all).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_hourly: Option<u32>,
    /// Keep the newest point of each of the last N days that have one (-1: all).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_daily: Option<u32>,
    /// Keep the newest point of each of the last N ISO weeks that have one (-1: all).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_weekly: Option<u32>,
    /// Keep the newest point of each of the last N months that have one (-1: all).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_monthly: Option<u32>,
    /// Keep the newest point of each of the last N years that have one (-1: all).
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub keep_yearly: Option<u32>,
    /// Keep every point within DURATION of the newest one (e.g. 10d, 2w, 1y6m).
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    pub keep_within: Option<Span>,
    /// Keep every point carrying tag T (repeatable).
    #[arg(long, value_name = "T")]
    pub keep_tag: Vec<String>,
    /// Remove points older than DURATION, whatever the keep rules (the newest point
    /// stays unless --allow-empty).
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    pub max_age: Option<Span>,
    /// Time zone of the hour/day/week/month/year buckets (IANA name; default UTC).
    #[arg(long, value_name = "TZ", value_parser = parse_tz)]
    pub timezone: Option<Tz>,
}

impl RuleArgs {
    fn any(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.keep_within.is_some()
            || !self.keep_tag.is_empty()
            || self.max_age.is_some()
    }

    /// Sets the given rules in a vault's retention, leaving the others as they are.
    pub fn apply_to(&self, r: &mut Retention) {
        let set = |field: &mut u32, v: Option<u32>| {
            if let Some(v) = v {
                *field = v;
            }
        };
        set(&mut r.last, self.keep_last);
        set(&mut r.hourly, self.keep_hourly);
        set(&mut r.daily, self.keep_daily);
        set(&mut r.weekly, self.keep_weekly);
        set(&mut r.monthly, self.keep_monthly);
        set(&mut r.yearly, self.keep_yearly);
        if self.keep_within.is_some() {
            r.within = self.keep_within;
        }
        if !self.keep_tag.is_empty() {
            r.tags = self.keep_tag.clone();
        }
        if self.max_age.is_some() {
            r.max_age = self.max_age;
        }
        if let Some(tz) = self.timezone {
            r.timezone = Some(tz.name().to_string());
        }
    }
}

/// The point filters of `points`.
#[derive(Args, Debug, Clone, Default)]
pub struct PointFilter {
    /// Only points carrying tag T (repeatable: all of them).
    #[arg(long, value_name = "T")]
    pub tag: Vec<String>,
    /// Only points taken at or after TIME (RFC 3339, a date, or a span back: 7d).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<i64>,
    /// Only points taken at or before TIME.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<i64>,
    /// Only points taken on host H.
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// Only points of status S: available, restoring (being restored now, on any host),
    /// creating (backups running now, on any host: not yet points), error (the records
    /// of failed backups, not listed otherwise) or all. Without it: available and
    /// restoring.
    #[arg(long, value_name = "S",
          value_parser = ["available", "restoring", "creating", "error", "all"])]
    pub status: Option<String>,
}

impl PointFilter {
    fn matches(&self, r: &PointRecord) -> bool {
        let m = &r.manifest;
        self.tag.iter().all(|t| r.attrs.tags.contains(t))
            && self.since.is_none_or(|t| m.time_ns >= t)
            && self.until.is_none_or(|t| m.time_ns <= t)
            && self.host.as_ref().is_none_or(|h| &m.hostname == h)
            && match self.status.as_deref() {
                None => matches!(r.status, PointStatus::Available | PointStatus::Restoring),
                Some("available") => r.status == PointStatus::Available,
                Some("restoring") => r.status == PointStatus::Restoring,
                Some("error") => r.status == PointStatus::Error,
                _ => true,
            }
    }
}

/// `vaultfs points VAULT [filters]`.
pub fn points(repo: &Repository, vault: &str, filter: &PointFilter, json: bool) -> Result<i32> {
    let errors = matches!(filter.status.as_deref(), Some("error" | "all"));
    let restoring = being_restored(repo, vault);
    let recs: Vec<PointRecord> = repo
        .point_records(vault, errors)?
        .into_iter()
        .map(|mut r| {
            crate::repo::restore::mark_restoring(&mut r, &restoring);
            r
        })
        .filter(|r| filter.matches(r))
        .collect();
    let creating = if matches!(filter.status.as_deref(), Some("creating" | "all")) {
        running_backups(repo, vault, filter)?
    } else {
        Vec::new()
    };
    if json {
        let mut rows: Vec<Value> = recs.iter().map(record_json).collect();
        rows.extend(creating.iter().map(|(_, info)| {
            json!({
                "id": null,
                "vault": vault,
                "status": "creating",
                "time": rfc3339(info.time_ns),
                "hostname": info.hostname,
                "pid": info.pid,
                "command": info.command,
            })
        }));
        output::print_json(&Value::Array(rows));
    } else {
        print_records(&recs);
        for (_, info) in &creating {
            println!(
                "{:<24} {:<10} since {} on {} (pid {})",
                "-",
                "creating",
                rfc3339(info.time_ns),
                info.hostname,
                info.pid
            );
        }
    }
    Ok(0)
}

/// The points of `vault` that restores are restoring now (see `repo::restore`); a task
/// listing that fails costs the `restoring` status only, with a warning.
fn being_restored(repo: &Repository, vault: &str) -> std::collections::BTreeSet<String> {
    crate::repo::restore::points_being_restored(repo, vault).unwrap_or_else(|e| {
        eprintln!("warning: could not read the restore tasks: {e}");
        Default::default()
    })
}

/// The backups of `vault` running now, on this host or another: their writer locks
/// (a point exists only once committed; until then it is this, never a half point).
fn running_backups(
    repo: &Repository,
    vault: &str,
    filter: &PointFilter,
) -> Result<Vec<(String, LockInfo)>> {
    let command = format!("backup {vault}");
    Ok(lock::list(repo)?
        .into_iter()
        .filter(|(_, info)| info.command == command)
        .filter(|(_, info)| filter.host.as_ref().is_none_or(|h| &info.hostname == h))
        .collect())
}

fn expiry(r: &PointRecord) -> String {
    match r.attrs.expires_ns {
        Some(t) => rfc3339(t)[..10].to_string(),
        None => "-".to_string(),
    }
}

fn print_records(recs: &[PointRecord]) {
    println!(
        "{:<24} {:<10} {:>8} {:>10} {:>10} {:<4} {:<10} {:<16} BACKUPS",
        "POINT", "STATUS", "FILES", "SIZE", "ADDED", "PROT", "EXPIRES", "TAGS"
    );
    for r in recs {
        let m = &r.manifest;
        let files: u64 = m.backups.iter().map(|b| b.stats.files).sum();
        let size: u64 = m.backups.iter().map(|b| b.stats.bytes).sum();
        let added: u64 = m.backups.iter().map(|b| b.stats.bytes_stored_new).sum();
        let backups: Vec<String> = m
            .backups
            .iter()
            .map(|b| format!("{} ({})", printable(&b.name), b.kind.as_str()))
            .collect();
        let detail = match &m.fail_reason {
            Some(reason) => format!("failed: {reason}"),
            None => backups.join(", "),
        };
        println!(
            "{:<24} {:<10} {:>8} {:>10} {:>10} {:<4} {:<10} {:<16} {}",
            m.name,
            r.status.as_str(),
            files,
            output::human(size),
            output::human(added),
            if r.attrs.protected { "yes" } else { "-" },
            expiry(r),
            if r.attrs.tags.is_empty() {
                "-".to_string()
            } else {
                r.attrs.tags.join(",")
            },
            detail
        );
    }
}

#[derive(Subcommand, Debug)]
pub enum PointCmd {
    /// Show one recovery point: its backups, attributes, status, skipped paths.
    Show {
        /// The vault that holds the point.
        vault: String,
        /// A point name, or `latest`.
        point: String,
        /// Print the point as JSON (as `points --json` shows it).
        #[arg(long)]
        json: bool,
    },
    /// Change a point's description, tags, protection or expiry.
    Update {
        /// The vault that holds the point.
        vault: String,
        /// A point name, or `latest`.
        point: String,
        /// The new description.
        #[arg(long)]
        description: Option<String>,
        /// Add tag T (repeatable).
        #[arg(long, value_name = "T")]
        tag: Vec<String>,
        /// Remove tag T (repeatable).
        #[arg(long, value_name = "T")]
        untag: Vec<String>,
        /// Protect the point: no delete, forget or prune removes it.
        #[arg(long, conflicts_with = "unprotect")]
        protect: bool,
        /// Remove the protection.
        #[arg(long)]
        unprotect: bool,
        /// Expire N days from now.
        #[arg(long, value_name = "N", conflicts_with_all = ["expires", "no_expiry"])]
        keep_days: Option<u32>,
        /// Expire at TIME (RFC 3339).
        #[arg(long, value_name = "RFC3339", value_parser = parse_time, conflicts_with = "no_expiry")]
        expires: Option<i64>,
        /// Never expire.
        #[arg(long)]
        no_expiry: bool,
        /// Print the point as JSON once changed.
        #[arg(long)]
        json: bool,
    },
    /// Delete recovery points (refused for protected ones). Their data stays in the
    /// repository until `vaultfs prune`.
    Delete {
        /// The vault that holds the points.
        vault: String,
        /// Point names (or `latest`).
        #[arg(required = true)]
        points: Vec<String>,
        /// Say what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the deleted point names as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The expiry `--keep-days N` asks for: N days from now.
pub fn keep_days(n: u32) -> i64 {
    now_ns().saturating_add(i64::from(n).saturating_mul(DAY_NS))
}

pub fn point_cmd(repo: &Arc<Repository>, cmd: PointCmd) -> Result<i32> {
    match cmd {
        PointCmd::Show { vault, point, json } => {
            let mut r = repo.point_record(&vault, &point)?;
            crate::repo::restore::mark_restoring(&mut r, &being_restored(repo, &vault));
            if json {
                output::print_json(&record_json(&r));
            } else {
                print_record(&r);
            }
        }
        PointCmd::Update {
            vault,
            point,
            description,
            tag,
            untag,
            protect,
            unprotect,
            keep_days: days,
            expires,
            no_expiry,
            json,
        } => {
            let change = AttrChange {
                description,
                add_tags: tag,
                remove_tags: untag,
                protected: match (protect, unprotect) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                expires_ns: match (days, expires, no_expiry) {
                    (Some(n), _, _) => Some(Some(keep_days(n))),
                    (_, Some(t), _) => Some(Some(t)),
                    (_, _, true) => Some(None),
                    _ => None,
                },
            };
            let _lock = lock::acquire(repo, &format!("point update {vault}/{point}"))?;
            let r = repo.update_point(&vault, &point, &change)?;
            if json {
                output::print_json(&record_json(&r));
            } else {
                println!("updated {vault}/{}", r.name());
            }
        }
        PointCmd::Delete {
            vault,
            points,
            dry_run,
            json,
        } => {
            let _lock = lock::acquire(repo, &format!("point delete {vault}"))?;
            let mut names = Vec::new();
            for p in &points {
                names.push(repo.point_record(&vault, p)?.name().to_string());
            }
            let deleted = repo.delete_points(&vault, &names, dry_run)?;
            if json {
                output::print_json(&json!({
                    "vault": vault,
                    "dry_run": dry_run,
                    "deleted": deleted,
                }));
            } else {
                for p in &deleted {
                    if dry_run {
                        println!("would delete {vault}/{p}");
                    } else {
                        println!("deleted {vault}/{p}");
                    }
                }
                if !dry_run {
                    println!("(their data stays until `vaultfs prune`)");
                }
            }
        }
    }
    Ok(0)
}

fn print_record(r: &PointRecord) {
    let m = &r.manifest;
    println!("point:       {}/{}", m.vault, m.name);
    println!("status:      {}", r.status.as_str());
    println!(
        "time:        {} to {}",
        rfc3339(m.time_ns),
        rfc3339(m.end_ns)
    );
    println!("host:        {}", m.hostname);
    println!("description: {}", r.attrs.description);
    println!("tags:        {}", r.attrs.tags.join(", "));
    println!(
        "protected:   {}",
        if r.attrs.protected { "yes" } else { "no" }
    );
    println!(
        "expires:     {}",
        r.attrs.expires_ns.map_or("never".to_string(), rfc3339)
    );
    if let Some(p) = &m.parent {
        println!("parent:      {p}");
    }
    if let Some(reason) = &m.fail_reason {
        println!("failed:      {reason}");
    }
    for b in &m.backups {
        let s = &b.stats;
        println!(
            "backup:      {} ({}): {}",
            printable(&b.name),
            b.kind.as_str(),
            output::counts(s.files, s.dirs, s.other, s.bytes)
        );
    }
    for s in &m.skipped {
        println!("skipped:     {}: {}", printable(&s.path), s.error);
    }
}

/// `vaultfs forget`'s options.
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// The vault to apply the rules to.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub vault: Option<String>,
    /// Every vault of the repository.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub rules: RuleArgs,
    /// Let the rules remove every point of a vault (by default the newest stays).
    #[arg(long)]
    pub allow_empty: bool,
    /// Say what would be removed, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print every point's decision as JSON.
    #[arg(long)]
    pub json: bool,
    /// Prune afterwards, freeing the space of the removed points.
    #[arg(long)]
    pub prune: bool,
    /// With --prune: repack a pack when more than this percentage of it is unused.
    #[arg(
        long,
        default_value_t = 10.0,
        value_name = "PERCENT",
        requires = "prune"
    )]
    pub max_unused: f64,
}

/// One vault's decisions.
struct VaultPlan {
    vault: String,
    points: Vec<(PointRecord, Decision)>,
}

pub fn forget(repo: &Arc<Repository>, a: &ForgetArgs) -> Result<i32> {
    let vaults = match &a.vault {
        Some(v) => {
            repo.load_vault(v)?;
            vec![v.clone()]
        }
        None => repo.list_vaults()?,
    };
    let _lock = lock::acquire(repo, "forget")?;
    let mut plans = Vec::new();
    for vault in &vaults {
        let v = repo.load_vault(vault)?;
        // The policy's rules when it has any, else the vault's own.
        let mut retention = repo.effective_retention(&v)?;
        if a.rules.any() {
            retention = Retention::default();
            a.rules.apply_to(&mut retention);
        } else if let Some(tz) = a.rules.timezone {
            retention.timezone = Some(tz.name().to_string());
        }
        let tz = match &retention.timezone {
            Some(name) => parse_tz(name).map_err(|e| anyhow!("vault {vault}: {e}"))?,
            None => Tz::UTC,
        };
        let rules = KeepRules::of(&retention, a.allow_empty);
        if !a.dry_run {
            repo.finish_deletions(vault)?;
        }
        let points = repo.forget_plan(vault, &rules, tz, now_ns())?;
        plans.push(VaultPlan {
            vault: vault.clone(),
            points,
        });
    }
    let mut removed = 0usize;
    for plan in &plans {
        let remove: Vec<String> = plan
            .points
            .iter()
            .filter(|(_, d)| !d.keep)
            .map(|(r, _)| r.name().to_string())
            .collect();
        removed += remove.len();
        if !remove.is_empty() {
            repo.delete_points(&plan.vault, &remove, a.dry_run)?;
        }
    }
    let mut pruned = None;
    if a.prune && !a.dry_run {
        // Prune takes the lock exclusively: this one goes first.
        drop(_lock);
        let opts = crate::repo::prune::PruneOptions {
            dry_run: false,
            max_unused_percent: a.max_unused.clamp(0.0, 100.0),
            lock_wait: std::time::Duration::from_secs(3600),
            progress: None,
        };
        pruned = Some(crate::repo::prune::prune(repo, &opts)?);
    }
    if a.json {
        let rows: Vec<Value> = plans
            .iter()
            .flat_map(|p| {
                p.points.iter().map(|(r, d)| {
                    json!({
                        "vault": p.vault,
                        "point": r.name(),
                        "time": rfc3339(r.manifest.time_ns),
                        "action": if d.keep { "keep" } else { "remove" },
                        "reasons": d.reasons.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                    })
                })
            })
            .collect();
        let kept: usize = plans.iter().map(|p| p.points.len()).sum::<usize>() - removed;
        let mut doc = json!({
            "dry_run": a.dry_run,
            "kept": kept,
            "removed": removed,
            "points": rows,
        });
        if let Some(r) = &pruned {
            doc["prune"] = serde_json::to_value(r).expect("JSON encodes");
        }
        output::print_json(&doc);
    } else {
        for p in &plans {
            let gone = p.points.iter().filter(|(_, d)| !d.keep).count();
            println!(
                "vault {}: keep {}, {} {}",
                p.vault,
                p.points.len() - gone,
                if a.dry_run { "would remove" } else { "remove" },
                gone
            );
            if p.points.is_empty() {
                continue;
            }
            println!("  {:<24} {:<7} REASONS", "POINT", "ACTION");
            for (r, d) in &p.points {
                let reasons: Vec<String> = d.reasons.iter().map(|x| x.to_string()).collect();
                println!(
                    "  {:<24} {:<7} {}",
                    r.name(),
                    if d.keep { "keep" } else { "remove" },
                    reasons.join(", ")
                );
            }
        }
        if let Some(r) = &pruned {
            super::prune::print_report(r, false);
        }
    }
    Ok(match &pruned {
        Some(r) if !r.errors.is_empty() => 1,
        _ => 0,
    })
}

/// `vaultfs upgrade`.
pub fn upgrade(repo: &Arc<Repository>, json: bool) -> Result<i32> {
    let _lock = lock::acquire(repo, "upgrade")?;
    let was = repo.upgrade()?;
    if json {
        output::print_json(&json!({ "from": was, "to": FORMAT_VERSION }));
    } else if was < FORMAT_VERSION {
        println!(
            "upgraded the repository at {} from format {was} to {FORMAT_VERSION}",
            repo.location()
        );
    } else {
        println!(
            "the repository at {} already has format {FORMAT_VERSION}",
            repo.location()
        );
    }
    Ok(0)
}

/// The attributes `backup --tag/--description/--keep-days/--protect` give a new point.
pub fn backup_attrs(
    tags: Vec<String>,
    description: Option<String>,
    keep: Option<u32>,
    protect: bool,
) -> PointAttrs {
    let mut tags = tags;
    normalize_tags(&mut tags);
    PointAttrs {
        description: description.unwrap_or_default(),
        tags,
        protected: protect,
        expires_ns: keep.map(keep_days),
    }
}
