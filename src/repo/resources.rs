//! Resources: what a vault protects on a host (a tree, an image file, the output of a
//! command), so that `vaultfs backup VAULT` with no paths knows what to take. Each is one
//! object `resources/<vault>/<name>`, written create-only by `resource add` and deleted by
//! `resource remove`; a resource names its host, and only that host backs it up.

use super::format::*;
use super::{RepoError, Repository, Result, lock};
use crate::backend::BackendError;

/// Checks a resource name: it becomes a backup's name, so one path component.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(RepoError::BadInput(format!(
            "invalid resource name {:?}: one path component, no control characters",
            name
        )))
    }
}

impl Repository {
    /// Adds a resource of this host to `vault`.
    pub fn add_resource(&self, vault: &str, name: &str, kind: ResourceKind) -> Result<Resource> {
        self.load_vault(vault)?;
        check_name(name)?;
        self.require_current_format("adding a resource")?;
        let r = Resource {
            name: name.to_string(),
            vault: vault.to_string(),
            hostname: lock::hostname(),
            kind,
            created_ns: now_ns(),
        };
        match self.write_record(&format!("resources/{vault}/{name}"), &r, true) {
            Err(RepoError::Backend(BackendError::AlreadyExists { .. })) => {
                Err(RepoError::BadInput(format!(
                    "vault {vault:?} already has a resource {name:?} (remove it first)"
                )))
            }
            other => other.map(|()| r),
        }
    }

    /// The resources of `vault` (of every vault with `None`), of every host, by name.
    pub fn list_resources(&self, vault: Option<&str>) -> Result<Vec<Resource>> {
        let vaults = match vault {
            Some(v) => {
                self.load_vault(v)?;
                vec![v.to_string()]
            }
            None => self.list_vaults()?,
        };
        let mut out = Vec::new();
        for v in vaults {
            let prefix = format!("resources/{v}/");
            let mut keys: Vec<String> = self
                .store()
                .list(&prefix)?
                .into_iter()
                .map(|o| o.key)
                .collect();
            keys.sort();
            for k in keys {
                out.push(self.read_record::<Resource, Resource>(&k)?);
            }
        }
        Ok(out)
    }

    /// Removes a resource (the points that hold its backups stay).
    pub fn remove_resource(&self, vault: &str, name: &str) -> Result<()> {
        self.load_vault(vault)?;
        check_name(name)?;
        let key = format!("resources/{vault}/{name}");
        match self.store().head(&key)? {
            None => Err(RepoError::BadInput(format!(
                "vault {vault:?} has no resource {name:?}"
            ))),
            Some(_) => Ok(self.store().delete(&key)?),
        }
    }

    /// The resources of `vault` that this host backs up.
    pub fn resources_of_this_host(&self, vault: &str) -> Result<Vec<Resource>> {
        let host = lock::hostname();
        Ok(self
            .list_resources(Some(vault))?
            .into_iter()
            .filter(|r| r.hostname == host)
            .collect())
    }
}

/// Backs up the resources of `vault` that this host has into one recovery point, one
/// backup per resource (what `backup VAULT` with no paths does, and the scheduler). A
/// resource that fails is recorded in the point as skipped; none at all is an error.
pub fn backup_resources(
    repo: &std::sync::Arc<Repository>,
    vault: &str,
    opts: &super::backup::BackupOptions,
) -> Result<super::backup::BackupResult> {
    let resources = repo.resources_of_this_host(vault)?;
    super::backup::backup(
        repo,
        vault,
        super::backup::Source::Resources(resources),
        opts,
    )
}
