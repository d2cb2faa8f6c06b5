//! Policies: a schedule (iCalendar rules, see [`super::schedule`]) plus retention rules,
//! applied to vaults (at most one per vault), and the scheduler's state of each job.
//!
//! Objects (format 3): `policies/<name>` holds a [`Policy`]; a vault names its policy in
//! its own record (`Vault::policy`), so a vault never has two and a policy's vaults are
//! found by reading the vaults. `schedule/backup/<vault>/<host>` and
//! `schedule/prune/<policy>/<host>` hold the [`ScheduleState`] of a host's scheduler:
//! the due time it last ran, so that a run missed while no scheduler ran is made once.
//!
//! Retention: after a scheduled backup, and for `forget VAULT` given no rules, a vault
//! keeps what its policy's rules keep when the policy has any rule, else what the
//! vault's own retention keeps (see [`Repository::effective_retention`]).

use super::format::{Policy, Retention, ScheduleState, Vault, now_ns};
use super::retention::KeepRules;
use super::schedule::{Schedule, Zone};
use super::{RepoError, Repository, Result, validate_vault_name};
use crate::backend::BackendError;

/// When prune runs unless a policy says otherwise: Sundays at 03:00.
pub const DEFAULT_PRUNE_SCHEDULE: &str = "FREQ=WEEKLY;BYDAY=SU;BYHOUR=3;BYMINUTE=0";

/// The keep rules of a retention (`forget`'s, with the newest point always kept).
pub fn keep_rules(r: &Retention) -> KeepRules {
    KeepRules::of(r, false)
}

/// Whether a retention has any rule (else it keeps everything).
pub fn has_rules(r: &Retention) -> bool {
    keep_rules(r).keeps_something() || r.max_age.is_some()
}

/// The backup schedule of a policy.
pub fn backup_schedule(p: &Policy) -> Result<Schedule> {
    Schedule::new(&p.schedules, &p.timezone, p.created_ns)
        .map_err(|e| RepoError::BadInput(format!("policy {:?}: {e}", p.name)))
}

/// The prune schedule of a policy.
pub fn prune_schedule(p: &Policy) -> Result<Schedule> {
    Schedule::new(
        std::slice::from_ref(&p.prune_schedule),
        &p.timezone,
        p.created_ns,
    )
    .map_err(|e| RepoError::BadInput(format!("policy {:?}: prune schedule: {e}", p.name)))
}

/// Checks a policy's name, rules and time zones.
pub fn validate(p: &Policy) -> Result<()> {
    validate_vault_name(&p.name).map_err(|_| {
        RepoError::BadInput(format!(
            "invalid policy name {:?}: use 1-64 bytes of letters, digits, '.', '_' or '-', not starting with '.'",
            p.name
        ))
    })?;
    // At most MAX_RULES rules: the schedule checks it.
    backup_schedule(p)?;
    prune_schedule(p)?;
    if let Some(tz) = &p.retention.timezone {
        tz.parse::<chrono_tz::Tz>()
            .map_err(|_| RepoError::BadInput(format!("unknown retention time zone {tz:?}")))?;
    }
    Zone::parse(&p.timezone).map_err(RepoError::BadInput)?;
    Ok(())
}

/// The next scheduled backup of a vault after `t_ns` (none without an enabled policy).
pub fn next_backup(repo: &Repository, v: &Vault, t_ns: i64) -> Result<Option<i64>> {
    let Some(name) = &v.policy else {
        return Ok(None);
    };
    match repo.load_policy(name) {
        Ok(p) if p.enabled => Ok(backup_schedule(&p)?.next_after(t_ns)),
        Ok(_) | Err(RepoError::BadInput(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn policy_key(name: &str) -> String {
    format!("policies/{name}")
}

/// The key of a host's scheduler state for the backups of a vault.
pub fn backup_state_key(vault: &str, host: &str) -> String {
    format!("schedule/backup/{vault}/{host}")
}

/// The key of a host's scheduler state for the prunes of a policy.
pub fn prune_state_key(policy: &str, host: &str) -> String {
    format!("schedule/prune/{policy}/{host}")
}

fn not_found(name: &str) -> RepoError {
    RepoError::BadInput(format!("policy {name:?} does not exist"))
}

impl Repository {
    /// The names of the policies, sorted.
    pub fn list_policies(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .store()
            .list("policies/")?
            .into_iter()
            .filter_map(|o| o.key.strip_prefix("policies/").map(str::to_string))
            .filter(|n| !n.contains('/'))
            .collect();
        names.sort();
        Ok(names)
    }

    pub fn load_policy(&self, name: &str) -> Result<Policy> {
        validate_vault_name(name).map_err(|_| not_found(name))?;
        match self.read_record::<Policy, Policy>(&policy_key(name)) {
            Err(RepoError::Backend(e)) if e.is_not_found() => Err(not_found(name)),
            r => r,
        }
    }

    /// Creates a policy (create-only); `created_ns` and `updated_ns` are set to now.
    pub fn create_policy(&self, mut p: Policy) -> Result<Policy> {
        self.require_current_format("creating a policy")?;
        p.created_ns = now_ns();
        p.updated_ns = p.created_ns;
        validate(&p)?;
        match self.write_record(&policy_key(&p.name), &p, true) {
            Err(RepoError::Backend(BackendError::AlreadyExists { .. })) => Err(
                RepoError::BadInput(format!("policy {:?} already exists", p.name)),
            ),
            r => r.map(|()| p),
        }
    }

    /// Rewrites an existing policy (`updated_ns` set to now).
    pub fn update_policy(&self, p: &mut Policy) -> Result<()> {
        self.load_policy(&p.name)?;
        self.require_current_format("changing a policy")?;
        p.updated_ns = now_ns();
        validate(p)?;
        self.write_record(&policy_key(&p.name), p, false)
    }

    /// The vaults a policy is applied to.
    pub fn vaults_with_policy(&self, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for v in self.list_vaults()? {
            if self.load_vault(&v)?.policy.as_deref() == Some(name) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Deletes a policy, refused while it is applied to a vault.
    pub fn delete_policy(&self, name: &str) -> Result<()> {
        self.load_policy(name)?;
        self.require_current_format("deleting a policy")?;
        let vaults = self.vaults_with_policy(name)?;
        if !vaults.is_empty() {
            return Err(RepoError::BadInput(format!(
                "policy {name:?} is applied to vault(s) {}: remove it first with `vaultfs policy remove VAULT`",
                vaults.join(", ")
            )));
        }
        self.store().delete(&policy_key(name))?;
        Ok(())
    }

    /// Applies a policy to a vault, in place of the one it had; returns that one.
    pub fn apply_policy(&self, name: &str, vault: &str) -> Result<Option<String>> {
        self.load_policy(name)?;
        let mut v = self.load_vault(vault)?;
        let old = v.policy.replace(name.to_string());
        if old.as_deref() != Some(name) {
            v.policy_applied_ns = Some(now_ns());
        }
        self.update_vault(&v)?;
        Ok(old)
    }

    /// Removes a vault's policy; returns the one it had.
    pub fn remove_policy(&self, vault: &str) -> Result<Option<String>> {
        let mut v = self.load_vault(vault)?;
        let old = v.policy.take();
        if old.is_some() {
            v.policy_applied_ns = None;
            self.update_vault(&v)?;
        }
        Ok(old)
    }

    /// What `forget` applies to a vault given no rules, and the scheduler after each
    /// backup: its policy's retention when that has a rule, else the vault's own.
    pub fn effective_retention(&self, v: &Vault) -> Result<Retention> {
        if let Some(name) = &v.policy {
            match self.load_policy(name) {
                Ok(p) if has_rules(&p.retention) => return Ok(p.retention),
                Ok(_) => {}
                // A vault naming a policy that is gone keeps its own rules.
                Err(RepoError::BadInput(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(v.retention.clone())
    }

    /// A host's scheduler state of one job (`None`: it never ran there).
    pub fn schedule_state(&self, key: &str) -> Result<Option<ScheduleState>> {
        match self.read_record::<ScheduleState, ScheduleState>(key) {
            Ok(s) => Ok(Some(s)),
            Err(RepoError::Backend(e)) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write_schedule_state(&self, key: &str, state: &ScheduleState) -> Result<()> {
        self.write_record(key, state, false)
    }

    /// Deletes the scheduler states of a vault (all hosts), when the vault goes.
    pub fn delete_schedule_states(&self, vault: &str) -> Result<()> {
        for o in self.store().list(&format!("schedule/backup/{vault}/"))? {
            self.store().delete(&o.key)?;
        }
        Ok(())
    }
}
