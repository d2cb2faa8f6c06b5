//! Who may see a vault through a mount with `--allow-other` (without it the kernel lets
//! nobody but the mount's owner in, and nothing here applies).
//!
//! The rule: a vault, and everything under it and every `.vaultfs/` entry that shows its
//! content (`vaults/<v>.json`, `points/<v>/`, `incoming/<v>/`, `versions/<v>/`,
//! `changes/<v>/`, `deleted/<v>/`, the tasks of the vault), is visible to the mount's
//! owner (the user who ran `vaultfs mount`), root, and the vault's members (`vault share
//! --uid/--gid`): a uid member, or a caller whose group or one of whose supplementary
//! groups is a gid member. Others get EACCES on lookup, getattr, open, opendir, readdir,
//! readlink and xattrs, and the vault is left out of every listing they make. File modes
//! inside backups are still the kernel's to enforce (`default_permissions`); writes are
//! the owner's and root's only (`incoming.rs`).
//!
//! Supplementary groups are read from `/proc/<pid>/status` (`Groups:`) of the requesting
//! thread, and only when the vault has gid members and the caller's own ids did not
//! already decide. A request the daemon cannot place in its pid namespace (pid 0: a
//! caller in another pid namespace) is judged by its uid and gid alone.
//!
//! Making the rule hold against the kernel's caches (the dispatcher, `ops.rs`, asks
//! [`Access`] at each request; the adapter turns readdir caching off):
//! - the entry and attributes of a vault directory have no TTL, so every path walk
//!   through a vault asks the daemon, with the walker's credentials;
//! - directories are opened (no `FUSE_NO_OPENDIR_SUPPORT`), so the root's and the
//!   generated directories' listings are made for each caller, never served from the
//!   kernel's cache of another caller's listing;
//! - the vault's top entries carry mode bits that make the kernel refuse by itself where
//!   mode bits can say the rule: no members, `0700`; one gid member and no uid member,
//!   `0750` with that group; otherwise `0755`, and the daemon decides.
//!
//! A process already inside a vault (its working directory, an open descriptor) when it
//! loses access keeps what the kernel cached for it, as with a `chmod` on a local disk.
//! The members are read with the vault's record at first use and then again at every
//! refresh of the mount's lists (`--refresh-secs`); a record that cannot be read denies
//! everyone but the owner and root (with a warning).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::control::tasks::TaskRegistry;
use crate::repo::format::Members;
use crate::repo::{RepoError, Repository};
use crate::sync::lock;

use super::inodes::{Body, Control, Inode};
use super::namespace::Namespace;
use super::reply::Attr;

/// Who sent a request: from the FUSE request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The requesting thread (0 when it is not in the daemon's pid namespace).
    pub pid: u32,
}

/// What an inode shows the content of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// No vault's: the root, `.vaultfs` and its directories of all vaults, policies,
    /// stats, tasks of no vault.
    Common,
    Vault(String),
    /// Could not be placed (its parents left the table): visible to the privileged only.
    Unknown,
}

/// The vault an inode belongs to, or the one a generated entry shows.
pub fn scope_of(ns: &Namespace, tasks: &TaskRegistry, inode: &Inode) -> Scope {
    match &inode.body {
        Body::Root(_) => Scope::Common,
        Body::Vault(v) => Scope::Vault(v.name.clone()),
        Body::Latest { vault } => match ns.inodes.get(*vault).as_deref().map(|i| &i.body) {
            Some(Body::Vault(v)) => Scope::Vault(v.name.clone()),
            _ => Scope::Unknown,
        },
        Body::Point(p) => Scope::Vault(p.vault.clone()),
        // Through the backup's top entry, whose parent is its point or, for the views'
        // entries, the generated directory that shows it.
        Body::Node(t) => {
            let Some(top) = ns.inodes.get(t.backup_ino(inode.ino)) else {
                return Scope::Unknown;
            };
            let Some(parent) = ns.inodes.get(top.parent) else {
                return Scope::Unknown;
            };
            match &parent.body {
                Body::Point(p) => Scope::Vault(p.vault.clone()),
                Body::Control(c) => control_scope(ns, tasks, &parent, c),
                _ => Scope::Unknown,
            }
        }
        Body::Control(c) => control_scope(ns, tasks, inode, c),
    }
}

fn control_scope(ns: &Namespace, tasks: &TaskRegistry, inode: &Inode, c: &Control) -> Scope {
    match c {
        Control::PointsOf(v)
        | Control::VaultJson(v)
        | Control::PointJson(v, _)
        | Control::IncomingVault(v)
        | Control::VersionsOf(v, _)
        | Control::ChangesOf(v)
        | Control::ChangesIn(v, ..)
        | Control::RemovedJson(v, _)
        | Control::DeletedIn(v, _) => Scope::Vault(v.clone()),
        Control::IncomingFile(_) => match ns.inodes.get(inode.parent).as_deref().map(|i| &i.body) {
            Some(Body::Control(Control::IncomingVault(v))) => Scope::Vault(v.clone()),
            _ => Scope::Unknown,
        },
        Control::TaskJson(id) => match tasks.record(id).and_then(|r| r.vault) {
            Some(v) => Scope::Vault(v),
            None => Scope::Common,
        },
        Control::Top
        | Control::Vaults
        | Control::Points
        | Control::Incoming
        | Control::Tasks
        | Control::Stats
        | Control::Policies
        | Control::PolicyJson(_)
        | Control::Versions
        | Control::Changes
        | Control::Deleted => Scope::Common,
    }
}

/// The entries that stand for a whole vault, whose mode bits say who may enter (see
/// the module documentation): its directory, and its directories and file in
/// `.vaultfs/`.
pub fn vault_top(inode: &Inode) -> Option<&str> {
    match &inode.body {
        Body::Vault(v) => Some(&v.name),
        Body::Control(
            Control::PointsOf(v)
            | Control::VaultJson(v)
            | Control::IncomingVault(v)
            | Control::ChangesOf(v),
        ) => Some(v),
        Body::Control(Control::VersionsOf(v, p) | Control::DeletedIn(v, p)) if p.is_empty() => {
            Some(v)
        }
        _ => None,
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Access {
    /// Whether other users may reach the mount at all (`--allow-other`).
    enabled: bool,
    /// The mount's owner.
    owner: u32,
    /// Each vault's members as last read, by vault name.
    members: Mutex<HashMap<String, Arc<Members>>>,
}

impl Access {
    pub fn new(enabled: bool, owner: u32) -> Access {
        Access {
            enabled,
            owner,
            members: Mutex::new(HashMap::new()),
        }
    }

    /// Whether requests are judged at all (the mount lets other users in).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `who` sees everything: root, the mount's owner, or anyone at all on a
    /// mount that lets nobody else in.
    pub fn privileged(&self, who: &Caller) -> bool {
        !self.enabled || who.uid == 0 || who.uid == self.owner
    }

    /// A vault's members: as last read, or read now (None when the record cannot be).
    fn members(&self, repo: &Repository, vault: &str) -> Option<Arc<Members>> {
        if let Some(m) = lock(&self.members).get(vault) {
            return Some(m.clone());
        }
        match repo.load_vault(vault) {
            Ok(v) => {
                let m = Arc::new(v.members);
                lock(&self.members).insert(vault.to_string(), m.clone());
                Some(m)
            }
            Err(e) => {
                tracing::warn!(
                    vault,
                    "reading the vault's members failed, only the mount's owner and root may see it: {e}"
                );
                None
            }
        }
    }

    /// Reads the members of every vault read so far again (the mount's background
    /// refresh): a share or unshare made elsewhere applies from then on. A vault that is
    /// gone is forgotten; one whose record fails keeps what was read before.
    pub fn refresh(&self, repo: &Repository) {
        if !self.enabled {
            return;
        }
        let names: Vec<String> = lock(&self.members).keys().cloned().collect();
        for name in names {
            match repo.load_vault(&name) {
                Ok(v) => {
                    lock(&self.members).insert(name, Arc::new(v.members));
                }
                Err(RepoError::VaultNotFound(_)) => {
                    lock(&self.members).remove(&name);
                }
                Err(e) => tracing::warn!(vault = name, "re-reading the vault's members: {e}"),
            }
        }
    }

    /// Whether `who` may see what belongs to `scope`.
    pub fn allows(&self, repo: &Repository, scope: &Scope, who: &Caller) -> bool {
        if self.privileged(who) {
            return true;
        }
        match scope {
            Scope::Common => true,
            Scope::Unknown => false,
            Scope::Vault(v) => self
                .members(repo, v)
                .is_some_and(|m| is_member(&m, who, supplementary_groups)),
        }
    }

    /// The mode bits of a vault's top entry (see the module documentation).
    pub fn shape(&self, repo: &Repository, vault: &str, attr: &mut Attr) {
        match self.members(repo, vault) {
            Some(m) if m.uids.is_empty() && m.gids.len() == 1 => {
                attr.perm &= 0o750;
                attr.gid = m.gids[0];
            }
            Some(m) if !m.is_empty() => {}
            _ => attr.perm &= 0o700,
        }
    }
}

/// Whether `who` is one of `m`: by uid, by gid, or by a supplementary group (`groups` of
/// the requesting pid, asked only when that can change the answer).
pub fn is_member(m: &Members, who: &Caller, groups: impl FnOnce(u32) -> Vec<u32>) -> bool {
    m.uids.contains(&who.uid)
        || m.gids.contains(&who.gid)
        || (!m.gids.is_empty() && groups(who.pid).iter().any(|g| m.gids.contains(g)))
}

/// The supplementary groups of thread `pid`, from `/proc/<pid>/status` (none when it
/// cannot be read, or for pid 0).
pub fn supplementary_groups(pid: u32) -> Vec<u32> {
    if pid == 0 {
        return Vec::new();
    }
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_by_uid_gid_and_supplementary_groups() {
        let m = Members {
            uids: vec![1000],
            gids: vec![100],
        };
        let who = |uid, gid| Caller { uid, gid, pid: 7 };
        let none = |_| Vec::new();
        assert!(is_member(&m, &who(1000, 5), none));
        assert!(is_member(&m, &who(2000, 100), none));
        assert!(!is_member(&m, &who(2000, 5), none));
        assert!(is_member(&m, &who(2000, 5), |pid| {
            assert_eq!(pid, 7);
            vec![4, 100]
        }));
        let uids_only = Members {
            uids: vec![1000],
            gids: vec![],
        };
        // No gid member: the groups are not even read.
        assert!(!is_member(&uids_only, &who(2000, 5), |_| unreachable!()));
    }

    #[test]
    fn groups_of_this_process() {
        let me = std::process::id();
        let status = std::fs::read_to_string(format!("/proc/{me}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
        let want: Vec<u32> = line[7..]
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(supplementary_groups(me), want);
        assert!(supplementary_groups(0).is_empty());
    }
}
