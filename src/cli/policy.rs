//! `vaultfs policy create|list|show|update|delete|apply|remove`: schedules plus retention
//! rules, applied to vaults; and `vaultfs serve`, the scheduler that runs them.

use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

use super::output;
use super::points::RuleArgs;
use crate::control::json::policy_json;
use crate::control::scheduler::Scheduler;
use crate::repo::Repository;
use crate::repo::format::{Policy, Retention, printable};
use crate::repo::policy::DEFAULT_PRUNE_SCHEDULE;
use crate::repo::schedule::Zone;

/// How many due times `policy show` prints.
const SHOWN_RUNS: usize = 5;

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Create a policy: when backups run (iCalendar RRULEs, e.g.
    /// `FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=2;BYMINUTE=30`) and what the retention
    /// keeps after each (forget's rules).
    #[command(mut_arg("timezone", |a| a
        .long("retention-timezone")
        .help("Time zone of the retention's day/week/... buckets (IANA name; default: the policy's --timezone when it is one, else UTC)")))]
    Create {
        /// 1-64 of `A-Za-z0-9._-`, not starting with `.`.
        name: String,
        /// A recurrence rule: FREQ=WEEKLY|DAILY|HOURLY with INTERVAL, BYDAY, BYHOUR,
        /// BYMINUTE (repeatable, up to 24; runs fire at second 00).
        #[arg(long = "schedule", value_name = "RRULE", required = true)]
        schedules: Vec<String>,
        #[command(flatten)]
        rules: RuleArgs,
        /// Time zone of the rules: an IANA name (Europe/Paris) or an offset (UTC+08:00).
        #[arg(
            long = "timezone",
            id = "policy_timezone",
            value_name = "TZ",
            default_value = "UTC"
        )]
        timezone: String,
        /// When prune runs (one RRULE in the same time zone).
        #[arg(long, value_name = "RRULE", default_value = DEFAULT_PRUNE_SCHEDULE)]
        prune_schedule: String,
        /// Create it disabled: it runs nothing until `policy update --enable`.
        #[arg(long)]
        disabled: bool,
        /// Print the new policy as JSON (as `policy show --json` shows it).
        #[arg(long)]
        json: bool,
    },
    /// List the policies.
    List {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a policy, the vaults it is applied to and its next due times.
    Show {
        /// The policy.
        name: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a policy: given --schedule options replace all its rules; retention flags
    /// set those rules and leave the others.
    #[command(mut_arg("timezone", |a| a
        .long("retention-timezone")
        .help("Time zone of the retention's buckets (IANA name)")))]
    Update {
        /// The policy.
        name: String,
        /// The new rules (repeatable; replace the old ones).
        #[arg(long = "schedule", value_name = "RRULE")]
        schedules: Vec<String>,
        #[command(flatten)]
        rules: RuleArgs,
        /// Drop every retention rule first (the vaults' own retention then applies).
        #[arg(long)]
        no_retention: bool,
        /// Time zone of the rules: an IANA name or an offset (UTC+08:00).
        #[arg(long = "timezone", id = "policy_timezone", value_name = "TZ")]
        timezone: Option<String>,
        /// When prune runs (one RRULE).
        #[arg(long, value_name = "RRULE")]
        prune_schedule: Option<String>,
        /// Let the policy run again.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Stop the policy from running (it stays applied); `--disabled` as at create.
        #[arg(long, visible_alias = "disabled")]
        disable: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a policy (refused while it is applied to a vault).
    Delete {
        /// The policy.
        name: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply a policy to a vault (in place of the one it had: a vault has at most one).
    Apply {
        /// The policy.
        name: String,
        /// The vault that gets it.
        vault: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the policy of a vault.
    Remove {
        /// The vault whose policy goes.
        vault: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The policy's retention timezone by default: the schedule's, when it is an IANA name.
fn default_retention_zone(r: &mut Retention, timezone: &str) {
    if r.timezone.is_none()
        && let Ok(Zone::Named(tz)) = Zone::parse(timezone)
    {
        r.timezone = Some(tz.name().to_string());
    }
}

pub fn run(repo: &Arc<Repository>, cmd: PolicyCmd) -> Result<i32> {
    match cmd {
        PolicyCmd::Create {
            name,
            schedules,
            rules,
            timezone,
            prune_schedule,
            disabled,
            json,
        } => {
            let mut retention = Retention::default();
            rules.apply_to(&mut retention);
            default_retention_zone(&mut retention, &timezone);
            let p = repo.create_policy(Policy {
                name: name.clone(),
                schedules,
                timezone,
                retention,
                prune_schedule,
                enabled: !disabled,
                created_ns: 0,
                updated_ns: 0,
            })?;
            if json {
                output::print_json(&policy_json(repo, &p, SHOWN_RUNS)?);
            } else {
                println!("created policy {name}");
            }
        }
        PolicyCmd::List { json } => {
            let mut rows = Vec::new();
            for name in repo.list_policies()? {
                rows.push(policy_json(repo, &repo.load_policy(&name)?, 1)?);
            }
            if json {
                output::print_json(&Value::Array(rows));
            } else if rows.is_empty() {
                println!("no policies");
            } else {
                for r in &rows {
                    println!(
                        "{}  {}  next {}  vaults: {}",
                        r["name"].as_str().unwrap_or(""),
                        if r["enabled"] == true {
                            "enabled "
                        } else {
                            "disabled"
                        },
                        r["next_runs"][0].as_str().unwrap_or("-"),
                        names(&r["vaults"]),
                    );
                }
            }
        }
        PolicyCmd::Show { name, json } => {
            let j = policy_json(repo, &repo.load_policy(&name)?, SHOWN_RUNS)?;
            if json {
                output::print_json(&j);
            } else {
                print_policy(&j);
            }
        }
        PolicyCmd::Update {
            name,
            schedules,
            rules,
            no_retention,
            timezone,
            prune_schedule,
            enable,
            disable,
            json,
        } => {
            let mut p = repo.load_policy(&name)?;
            if !schedules.is_empty() {
                p.schedules = schedules;
            }
            if no_retention {
                p.retention = Retention::default();
            }
            rules.apply_to(&mut p.retention);
            if let Some(tz) = timezone {
                p.timezone = tz;
            }
            if let Some(rule) = prune_schedule {
                p.prune_schedule = rule;
            }
            if enable {
                p.enabled = true;
            }
            if disable {
                p.enabled = false;
            }
            repo.update_policy(&mut p)?;
            if json {
                output::print_json(&policy_json(repo, &p, SHOWN_RUNS)?);
            } else {
                println!("updated policy {name}");
            }
        }
        PolicyCmd::Delete { name, json } => {
            repo.delete_policy(&name)?;
            if json {
                output::print_json(&json!({ "deleted": name }));
            } else {
                println!("deleted policy {name}");
            }
        }
        PolicyCmd::Apply { name, vault, json } => {
            let old = repo.apply_policy(&name, &vault)?;
            if json {
                output::print_json(&json!({ "vault": vault, "policy": name, "replaced": old }));
            } else {
                match old {
                    Some(o) if o != name => {
                        println!("applied policy {name} to vault {vault} (in place of {o})")
                    }
                    _ => println!("applied policy {name} to vault {vault}"),
                }
            }
        }
        PolicyCmd::Remove { vault, json } => {
            let old = repo.remove_policy(&vault)?;
            if json {
                output::print_json(&json!({ "vault": vault, "removed": old }));
            } else {
                match old {
                    Some(o) => println!("removed policy {o} from vault {vault}"),
                    None => println!("vault {vault} has no policy"),
                }
            }
        }
    }
    Ok(0)
}

fn names(v: &Value) -> String {
    let list: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if list.is_empty() {
        "-".to_string()
    } else {
        list.join(", ")
    }
}

fn print_policy(j: &Value) {
    let text = |k: &str| printable(j[k].as_str().unwrap_or("").as_bytes());
    println!("name:        {}", text("name"));
    let rules: Vec<String> = j["schedules"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| printable(r.as_str().unwrap_or("").as_bytes()))
                .collect()
        })
        .unwrap_or_default();
    println!("schedules:   {}", rules.join("\n             "));
    println!("timezone:    {}", text("timezone"));
    println!(
        "retention:   {}",
        if j["retention_applies"] == true {
            retention_text(&j["retention"])
        } else {
            "none (each vault's own retention applies)".to_string()
        }
    );
    println!("prune:       {}", text("prune_schedule"));
    println!(
        "enabled:     {}",
        if j["enabled"] == true { "yes" } else { "no" }
    );
    println!("vaults:      {}", names(&j["vaults"]));
    let runs: Vec<&str> = j["next_runs"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!(
        "next runs:   {}",
        if runs.is_empty() {
            "-".to_string()
        } else {
            runs.join("\n             ")
        }
    );
    println!("next prune:  {}", j["next_prune"].as_str().unwrap_or("-"));
}

/// The rules that are set, as the flags that set them.
fn retention_text(r: &Value) -> String {
    let mut out = Vec::new();
    for (key, flag) in [
        ("keep_last", "--keep-last"),
        ("keep_hourly", "--keep-hourly"),
        ("keep_daily", "--keep-daily"),
        ("keep_weekly", "--keep-weekly"),
        ("keep_monthly", "--keep-monthly"),
        ("keep_yearly", "--keep-yearly"),
    ] {
        match r[key].as_u64() {
            Some(0) | None => {}
            Some(n) if n == u64::from(u32::MAX) => out.push(format!("{flag} -1")),
            Some(n) => out.push(format!("{flag} {n}")),
        }
    }
    for (key, flag) in [("keep_within", "--keep-within"), ("max_age", "--max-age")] {
        if let Some(s) = r[key].as_str() {
            out.push(format!("{flag} {s}"));
        }
    }
    for t in r["keep_tags"].as_array().into_iter().flatten() {
        out.push(format!(
            "--keep-tag {}",
            printable(t.as_str().unwrap_or("").as_bytes())
        ));
    }
    out.join(" ")
}

/// `vaultfs serve`: the scheduler in the foreground, until SIGINT, SIGTERM or SIGHUP.
/// `signals` are blocked in every thread (see [`exit_signals`]).
pub fn serve(
    repo: Arc<Repository>,
    refresh: std::time::Duration,
    signals: nix::sys::signal::SigSet,
) -> Result<i32> {
    let scheduler = Arc::new(Scheduler::system(repo.clone(), Arc::new(log_line)));
    log_line(&format!("serving the repository at {}", repo.location()));
    let runner = scheduler.clone();
    let thread = std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || runner.run(refresh))?;
    let sig = signals.wait()?;
    log_line(&format!("{sig}: stopping"));
    scheduler.stopper().stop();
    let _ = thread.join();
    log_line("stopped");
    Ok(0)
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread started
/// from now on), to be waited for: call before the repository is opened.
pub fn exit_signals() -> Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals.thread_block()?;
    Ok(signals)
}

/// Starts the scheduler of a mount on a thread of its own; the returned function stops
/// it and waits for its jobs.
pub fn start_mount_scheduler(repo: Arc<Repository>) -> Result<impl FnOnce()> {
    let scheduler = Arc::new(Scheduler::system(repo, Arc::new(log_line)));
    let runner = scheduler.clone();
    let thread = std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || runner.run(SERVE_REFRESH))?;
    Ok(move || {
        scheduler.stopper().stop();
        let _ = thread.join();
    })
}

/// How often a scheduler re-reads the policies and vaults when nothing is due sooner.
pub const SERVE_REFRESH: std::time::Duration = std::time::Duration::from_secs(20);

/// A scheduler log line on stderr, with the time.
pub fn log_line(line: &str) {
    let now = crate::repo::format::rfc3339(crate::repo::format::now_ns());
    eprintln!("{now} vaultfs: {line}");
}

/// The metrics of `vaultfs serve --metrics`: the store's calls, and the repository's
/// tasks by kind and status (listed at most every [`SERVE_REFRESH`]: each task is one
/// object to read).
pub fn serve_metrics(
    repo: Arc<Repository>,
    counts: Arc<crate::backend::counting::CallCounts>,
) -> Arc<crate::metrics::Metrics> {
    let listed: std::sync::Mutex<Option<(std::time::Instant, Value)>> = Default::default();
    crate::metrics::Metrics::new(Box::new(move || {
        let mut cached = crate::sync::lock(&listed);
        let fresh = cached
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < SERVE_REFRESH);
        if !fresh {
            let records: Vec<_> = crate::repo::tasks::list(&repo)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|l| l.record.ok())
                .map(|r| r.effective_here())
                .collect();
            let tasks = crate::metrics::task_counts(
                records.iter().map(|r| (r.kind.as_str(), r.status.as_str())),
            );
            *cached = Some((std::time::Instant::now(), tasks));
        }
        let tasks = cached.as_ref().map(|(_, t)| t.clone()).unwrap_or_default();
        json!({"backend": counts.json(), "tasks": tasks})
    }))
}
