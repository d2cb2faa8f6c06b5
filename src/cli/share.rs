//! `vaultfs vault share|unshare VAULT --uid N|--gid N`: who besides the mount's owner and
//! root may read a vault through a mount with `--allow-other` (the rule is enforced by
//! the mount, `fs::access`).

use anyhow::{Result, anyhow};
use clap::Args;
use serde_json::Value;

use super::output;
use crate::repo::Repository;
use crate::repo::format::Members;

#[derive(Args, Debug)]
pub struct ShareArgs {
    /// The vault.
    pub vault: String,
    /// A local user, by id (or by name, looked up on this host); repeatable.
    #[arg(long, value_name = "N", value_parser = parse_uid, required_unless_present = "gid")]
    pub uid: Vec<u32>,
    /// A local group, by id (or by name, looked up on this host): its members, by their
    /// group or a supplementary one; repeatable.
    #[arg(long, value_name = "N", value_parser = parse_gid)]
    pub gid: Vec<u32>,
    /// Print the vault as JSON once changed (as `vault show --json` shows it).
    #[arg(long)]
    pub json: bool,
}

fn parse_uid(s: &str) -> Result<u32, String> {
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    match nix::unistd::User::from_name(s) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        _ => Err(format!(
            "{s:?} is neither a user id nor a user of this host"
        )),
    }
}

fn parse_gid(s: &str) -> Result<u32, String> {
    if let Ok(n) = s.parse() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(s) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => Err(format!(
            "{s:?} is neither a group id nor a group of this host"
        )),
    }
}

/// `uid 1000 (alice), gid 100 (users)`; `-` for none.
pub fn members_text(m: &Members) -> String {
    let user = |u: u32| {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u))
            .ok()
            .flatten()
            .map_or(format!("uid {u}"), |x| format!("uid {u} ({})", x.name))
    };
    let group = |g: u32| {
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(g))
            .ok()
            .flatten()
            .map_or(format!("gid {g}"), |x| format!("gid {g} ({})", x.name))
    };
    let all: Vec<String> = m
        .uids
        .iter()
        .map(|&u| user(u))
        .chain(m.gids.iter().map(|&g| group(g)))
        .collect();
    if all.is_empty() {
        "-".into()
    } else {
        all.join(", ")
    }
}

/// The members as the vault's JSON shows them (`{"uids": [...], "gids": [...]}`).
pub fn members_of_json(j: &Value) -> Members {
    let ids = |k: &str| {
        j[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect()
    };
    Members {
        uids: ids("uids"),
        gids: ids("gids"),
    }
}

/// `vault share` (`add`) or `vault unshare`.
pub fn run(repo: &Repository, args: ShareArgs, add: bool) -> Result<i32> {
    let mut v = repo.load_vault(&args.vault)?;
    repo.require_current_format(if add {
        "sharing a vault"
    } else {
        "unsharing a vault"
    })?;
    let change = |list: &mut Vec<u32>, ids: &[u32], kind: &str| {
        for &id in ids {
            if add {
                list.push(id);
            } else if list.contains(&id) {
                list.retain(|&x| x != id);
            } else {
                eprintln!("note: {kind} {id} was not a member of vault {}", args.vault);
            }
        }
        list.sort_unstable();
        list.dedup();
    };
    change(&mut v.members.uids, &args.uid, "uid");
    change(&mut v.members.gids, &args.gid, "gid");
    repo.update_vault(&v)?;
    if args.json {
        let j =
            crate::control::json::vault_json(repo, &args.vault, false).map_err(|e| anyhow!(e))?;
        output::print_json(&j);
    } else if v.members.is_empty() {
        println!(
            "vault {} is shared with nobody: through a mount with --allow-other, only its owner and root see it",
            args.vault
        );
    } else {
        println!(
            "vault {} is shared with {}",
            args.vault,
            members_text(&v.members)
        );
    }
    Ok(0)
}
