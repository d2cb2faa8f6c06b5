//! `vaultfs resource add|list|remove`: what `vaultfs backup VAULT` takes when given no
//! paths.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Subcommand;
use serde_json::{Value, json};

use super::output;
use crate::repo::format::*;
use crate::repo::{Repository, lock};

#[derive(Subcommand, Debug)]
pub enum ResourceCmd {
    /// Add a resource of this host to a vault: a tree (PATH), an image (--image) or the
    /// output of a command (--command, with --tar a tar stream).
    Add {
        /// The vault that protects it.
        vault: String,
        /// Its name: the name of its backup in every point.
        name: String,
        /// A directory (or file) to back up as a tree.
        #[arg(conflicts_with_all = ["image", "command"], required_unless_present_any = ["image", "command"])]
        path: Option<PathBuf>,
        /// Leave out what matches GLOB (repeatable; as `backup --exclude`).
        #[arg(long, value_name = "GLOB", requires = "path")]
        exclude: Vec<String>,
        /// A volume or disk image file (holes stay holes).
        #[arg(long, value_name = "FILE", conflicts_with = "command")]
        image: Option<PathBuf>,
        /// A command whose standard output is backed up (run with `sh -c`); a non-zero
        /// exit fails the resource.
        #[arg(long, value_name = "CMD")]
        command: Option<String>,
        /// The command writes a tar archive: expand it into a tree.
        #[arg(long, requires = "command")]
        tar: bool,
        /// Print the resource as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List resources (of one vault, or all), of every host.
    List {
        /// Only this vault's.
        vault: Option<String>,
        /// Print them as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Remove a resource from a vault (its backups in existing points stay).
    Remove {
        /// The vault that protects it.
        vault: String,
        /// The resource's name.
        name: String,
        /// Print the removed resource's vault and name as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn absolute(p: &std::path::Path) -> Result<Vec<u8>> {
    match std::path::absolute(p) {
        Ok(a) => Ok(a.as_os_str().as_bytes().to_vec()),
        Err(e) => bail!("{}: {e}", p.display()),
    }
}

/// A resource as `resource list --json` shows it.
pub fn resource_json(r: &Resource) -> Value {
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (kind, detail) = match &r.kind {
        ResourceKind::Tree { path, excludes } => {
            ("tree", json!({"path": lossy(path), "excludes": excludes}))
        }
        ResourceKind::Image { path } => ("image", json!({"path": lossy(path)})),
        ResourceKind::Command { command, tar } => {
            ("command", json!({"command": command, "tar": tar}))
        }
    };
    let mut j = json!({
        "vault": r.vault,
        "name": r.name,
        "host": r.hostname,
        "kind": kind,
        "created": rfc3339(r.created_ns),
    });
    if let (Some(o), Some(d)) = (j.as_object_mut(), detail.as_object()) {
        o.extend(d.clone());
    }
    j
}

fn describe(r: &Resource) -> String {
    match &r.kind {
        ResourceKind::Tree { path, excludes } if excludes.is_empty() => {
            format!("tree {}", printable(path))
        }
        ResourceKind::Tree { path, excludes } => {
            format!(
                "tree {} (excluding {})",
                printable(path),
                excludes.join(", ")
            )
        }
        ResourceKind::Image { path } => format!("image {}", printable(path)),
        ResourceKind::Command { command, tar: true } => format!("tar from `{command}`"),
        ResourceKind::Command { command, .. } => format!("image from `{command}`"),
    }
}

pub fn run(repo: &Arc<Repository>, cmd: ResourceCmd) -> Result<i32> {
    match cmd {
        ResourceCmd::Add {
            vault,
            name,
            path,
            exclude,
            image,
            command,
            tar,
            json,
        } => {
            let kind = match (path, image, command) {
                (Some(p), _, _) => {
                    crate::repo::walk::Excludes::new(&exclude)?;
                    ResourceKind::Tree {
                        path: absolute(&p)?,
                        excludes: exclude,
                    }
                }
                (_, Some(i), _) => ResourceKind::Image {
                    path: absolute(&i)?,
                },
                (_, _, Some(c)) => ResourceKind::Command { command: c, tar },
                _ => bail!("give a PATH, --image FILE or --command CMD"),
            };
            let _lock = lock::acquire(repo, &format!("resource add {vault}"))?;
            let r = repo.add_resource(&vault, &name, kind)?;
            if json {
                output::print_json(&resource_json(&r));
            } else {
                println!("added resource {}/{}: {}", r.vault, r.name, describe(&r));
            }
        }
        ResourceCmd::List { vault, json } => {
            let all = repo.list_resources(vault.as_deref())?;
            if json {
                output::print_json(&Value::Array(all.iter().map(resource_json).collect()));
            } else {
                println!("{:<16} {:<20} {:<16} WHAT", "VAULT", "NAME", "HOST");
                for r in &all {
                    println!(
                        "{:<16} {:<20} {:<16} {}",
                        r.vault,
                        r.name,
                        r.hostname,
                        describe(r)
                    );
                }
            }
        }
        ResourceCmd::Remove { vault, name, json } => {
            let _lock = lock::acquire(repo, &format!("resource remove {vault}"))?;
            repo.remove_resource(&vault, &name)?;
            if json {
                output::print_json(
                    &serde_json::json!({"vault": vault, "name": name, "removed": true}),
                );
            } else {
                println!("removed resource {vault}/{name}");
            }
        }
    }
    Ok(0)
}
