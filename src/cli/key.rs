//! `vaultfs key list|add|remove|passwd`: the passwords that open a repository (see
//! `repo::keys`). The current password comes as for every command; a new one from
//! `--new-password-file F` (its first line) or a prompt on a terminal, asked twice.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::{Global, output};
use crate::repo::Repository;
use crate::repo::format::{KdfParams, rfc3339};
use crate::repo::keys::{KeyId, KeyInfo};

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// List the keys (passwords) that open the repository: id, when and where each was
    /// added; `*` marks the one this command opened it with.
    List {
        /// Print the keys as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Add a password: one more sealed copy of the master keys, with its own Argon2id
    /// salt. Every existing password keeps working.
    Add {
        /// Read the new password from this file (its first line); without it, a prompt
        /// on a terminal asks for it twice.
        #[arg(long, value_name = "F")]
        new_password_file: Option<PathBuf>,
        /// Memory of the new key's Argon2id derivation, in MiB (default: as the key in
        /// use).
        #[arg(long, value_parser = clap::value_parser!(u32).range(8..=4096))]
        kdf_memory_mib: Option<u32>,
        /// Passes of the new key's Argon2id derivation (default: as the key in use).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        kdf_passes: Option<u32>,
        /// Print the new key as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a key (`config`, an id, or a unique prefix of one). The last key, and the
    /// key this command opened the repository with, are refused.
    Remove {
        /// The key to remove, as `key list` shows it.
        id: String,
        /// Print the removed key's id as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change the password of the key in use: a new key with the new password is
    /// written, then the old one removed (no data is re-encrypted; a kill in between
    /// leaves both passwords working).
    Passwd {
        /// Read the new password from this file (its first line); without it, a prompt
        /// on a terminal asks for it twice.
        #[arg(long, value_name = "F")]
        new_password_file: Option<PathBuf>,
        /// Print the new key's id and the one it replaces as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The new password: the first line of `file`, or asked twice on a terminal. Never empty.
fn new_password(file: Option<&Path>) -> Result<Vec<u8>> {
    let pw = match file {
        Some(f) => {
            let text =
                std::fs::read(f).map_err(|e| anyhow!("new password file {}: {e}", f.display()))?;
            let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
            line.strip_suffix(b"\r").unwrap_or(line).to_vec()
        }
        None if std::io::stdin().is_terminal() => {
            let p = rpassword::prompt_password("new password: ")?;
            if rpassword::prompt_password("again: ")? != p {
                bail!("the passwords do not match");
            }
            p.into_bytes()
        }
        None => bail!("no new password: use --new-password-file F, or run on a terminal"),
    };
    if pw.is_empty() {
        bail!("an empty password is not allowed");
    }
    Ok(pw)
}

fn key_json(k: &KeyInfo, current: &KeyId) -> Value {
    json!({
        "id": k.id.to_string(),
        "current": &k.id == current,
        "created": k.created_ns.map(rfc3339),
        "host": k.hostname,
        "user": k.username,
        "kdf": k.kdf.map(|p| json!({
            "algorithm": "argon2id",
            "memory_kib": p.memory_kib,
            "passes": p.iterations,
            "lanes": p.parallelism,
        })),
        "damaged": k.damaged,
    })
}

pub fn run(g: &Global, cmd: KeyCmd) -> Result<i32> {
    let store = super::open_store(g)?;
    let pw = super::read_password(g, false)?;
    let (repo, current) = Repository::open_with_key(store, &pw)?;
    match cmd {
        KeyCmd::List { json } => list(&repo, &current, json)?,
        KeyCmd::Add {
            new_password_file,
            kdf_memory_mib,
            kdf_passes,
            json,
        } => {
            repo.require_current_format("adding a key")?;
            let new = new_password(new_password_file.as_deref())?;
            let like = repo.kdf_like(&current)?;
            let kdf = KdfParams {
                memory_kib: kdf_memory_mib.map_or(like.memory_kib, |m| m * 1024),
                iterations: kdf_passes.unwrap_or(like.iterations),
                ..like
            };
            let id = repo.add_key(&new, kdf)?;
            if json {
                output::print_json(&json!({ "id": id }));
            } else {
                println!("added key {id}");
            }
        }
        KeyCmd::Remove { id, json } => {
            let target = repo.resolve_key(&id)?;
            repo.remove_key(&target, &current)?;
            if json {
                output::print_json(&json!({ "removed": target.to_string() }));
            } else {
                println!("removed key {target}");
            }
        }
        KeyCmd::Passwd {
            new_password_file,
            json,
        } => {
            repo.require_current_format("changing a password")?;
            let new = new_password(new_password_file.as_deref())?;
            let id = repo.change_password(&current, &new)?;
            if json {
                output::print_json(&json!({ "id": id, "replaced": current.to_string() }));
            } else {
                println!("changed the password: key {id} replaces key {current}");
            }
        }
    }
    Ok(0)
}

fn list(repo: &Arc<Repository>, current: &KeyId, json: bool) -> Result<()> {
    let keys = repo.list_keys()?;
    if json {
        output::print_json(&Value::Array(
            keys.iter().map(|k| key_json(k, current)).collect(),
        ));
        return Ok(());
    }
    println!("  {:<32}  {:<24}  {:<20}  USER", "ID", "CREATED", "HOST");
    for k in &keys {
        let dash = || "-".to_string();
        println!(
            "{} {:<32}  {:<24}  {:<20}  {}{}",
            if &k.id == current { '*' } else { ' ' },
            k.id.to_string(),
            k.created_ns.map_or_else(dash, rfc3339),
            k.hostname.clone().unwrap_or_else(dash),
            k.username.clone().unwrap_or_else(dash),
            k.damaged
                .as_ref()
                .map(|d| format!("  (damaged: {d})"))
                .unwrap_or_default(),
        );
    }
    Ok(())
}
