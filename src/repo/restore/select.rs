//! Which entries of a point a restore takes: `--include GLOB` and `--exclude GLOB`.
//!
//! Patterns are the backup's ([`Excludes`], restic's syntax: `*` and `?` within one
//! component, `**` across, `[...]` a class, a pattern not starting with `/` matching at
//! any depth), matched against `/` followed by the entry's path inside the point, which
//! starts with the backup's name as `--path` takes it: `/etc/ssh/sshd_config`.
//!
//! - An excluded entry is left out with everything under it, whatever the includes say.
//! - With includes, an entry is taken when it matches one, or when a directory above it
//!   did (a matching directory brings everything under it, but what is excluded); a
//!   directory that does not match is restored only when something under it is taken
//!   (it leads there), and then holds only what is taken.
//! - What is not taken is also protected from `--delete` (rsync's rule: excluded means
//!   protected).
//!
//! Directories that lead to an included entry are found before the restore writes
//! anything ([`Selection::prepare`]), by reading the trees of the directories that do
//! not match, down to the matches; the restore's walk then only asks [`Selection::pick`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::super::format::{Node, NodeKind};
use super::super::walk::Excludes;
use super::super::{RepoError, Repository, Result};
use super::{is_damage, safe_name};

/// Whether the restore takes an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Not restored (nor deleted by `--delete`), nor anything under it.
    Skip,
    /// Restored, and everything under it that is not excluded.
    All,
    /// A directory restored for the included entries under it, holding only those.
    Part,
}

/// The `--include` and `--exclude` patterns of a restore, and the directories that lead
/// to included entries (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    include: Option<Excludes>,
    exclude: Excludes,
    /// Paths inside the point (no leading `/`) of the directories that lead to an
    /// included entry without matching themselves.
    wanted: HashSet<PathBuf>,
}

impl Selection {
    /// A selection of these patterns (none: everything).
    pub fn new(include: &[String], exclude: &[String]) -> Result<Selection> {
        let include = match include.iter().any(|p| !p.trim().is_empty()) {
            false => None,
            // The matcher's messages speak of exclude patterns.
            true => Some(Excludes::new(include).map_err(|e| match e {
                RepoError::BadInput(m) => {
                    RepoError::BadInput(m.replacen("exclude pattern", "include pattern", 1))
                }
                e => e,
            })?),
        };
        Ok(Selection {
            include,
            exclude: Excludes::new(exclude)?,
            wanted: HashSet::new(),
        })
    }

    /// Whether every entry is taken.
    pub fn is_everything(&self) -> bool {
        self.include.is_none() && self.exclude.is_empty()
    }

    /// Whether the entry at `path` inside the point is taken; `under_all` says a
    /// directory above it was taken whole ([`Pick::All`]).
    pub fn pick(&self, path: &Path, is_dir: bool, under_all: bool) -> Pick {
        let abs = Path::new("/").join(path);
        if self.exclude.is_match(&abs) {
            return Pick::Skip;
        }
        match &self.include {
            None => Pick::All,
            Some(_) if under_all => Pick::All,
            Some(inc) if inc.is_match(&abs) => Pick::All,
            Some(_) if is_dir && self.wanted.contains(path) => Pick::Part,
            Some(_) => Pick::Skip,
        }
    }

    /// Finds the directories that lead to included entries under `roots` (each the path
    /// inside the point of a node, and the node), reading the trees of directories that
    /// neither match nor are excluded. A directory whose tree is damaged counts as
    /// leading somewhere: the restore then reports it, as it does without patterns.
    pub fn prepare(&mut self, repo: &Repository, roots: &[(PathBuf, Node)]) -> Result<()> {
        if self.include.is_none() {
            return Ok(());
        }
        for (path, node) in roots {
            self.mark(repo, node, path)?;
        }
        Ok(())
    }

    /// Whether `node` at `path` is taken or leads to something taken (recorded).
    fn mark(&mut self, repo: &Repository, node: &Node, path: &Path) -> Result<bool> {
        match self.pick(path, node.kind == NodeKind::Dir, false) {
            Pick::Skip => {}
            Pick::All | Pick::Part => return Ok(true),
        }
        let abs = Path::new("/").join(path);
        if self.exclude.is_match(&abs) || node.kind != NodeKind::Dir {
            return Ok(false);
        }
        let Some(sub) = &node.subtree else {
            return Ok(false);
        };
        let children = match repo.load_tree(sub) {
            Ok(t) => t.nodes,
            Err(e) if is_damage(&e) => {
                self.wanted.insert(path.to_path_buf());
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        let mut leads = false;
        for c in &children {
            let child = path.join(safe_name(&c.name)?);
            leads |= self.mark(repo, c, &child)?;
        }
        if leads {
            self.wanted.insert(path.to_path_buf());
        }
        Ok(leads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(inc: &[&str], exc: &[&str]) -> Selection {
        let v = |s: &[&str]| s.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        Selection::new(&v(inc), &v(exc)).unwrap()
    }

    #[test]
    fn excludes_win_and_includes_bring_what_is_under_them() {
        let p = Path::new;
        let s = sel(&[], &["*.log", "/etc/cache"]);
        assert_eq!(s.pick(p("etc/a.log"), false, true), Pick::Skip);
        assert_eq!(s.pick(p("etc/sub/b.log"), false, true), Pick::Skip);
        assert_eq!(s.pick(p("etc/cache"), true, true), Pick::Skip);
        assert_eq!(s.pick(p("home/etc/cache"), true, true), Pick::All);
        assert_eq!(s.pick(p("etc/a.conf"), false, false), Pick::All);
        let mut s = sel(&["ssh", "*.conf"], &["secret.conf"]);
        s.wanted.insert(PathBuf::from("etc"));
        assert_eq!(s.pick(p("etc"), true, false), Pick::Part);
        assert_eq!(s.pick(p("etc/ssh"), true, false), Pick::All);
        assert_eq!(s.pick(p("etc/ssh/moduli"), false, true), Pick::All);
        assert_eq!(s.pick(p("etc/ssh/secret.conf"), false, true), Pick::Skip);
        assert_eq!(s.pick(p("etc/passwd"), false, false), Pick::Skip);
        assert_eq!(s.pick(p("etc/x.conf"), false, false), Pick::All);
        assert_eq!(s.pick(p("usr"), true, false), Pick::Skip);
        assert!(!s.is_everything() && sel(&[], &[]).is_everything());
    }

    #[test]
    fn a_bad_pattern_is_named_as_what_it_is() {
        let e = Selection::new(&["a[".to_string()], &[]).unwrap_err();
        assert!(e.to_string().contains("include pattern \"a[\""), "{e}");
        let e = Selection::new(&[], &["b[".to_string()]).unwrap_err();
        assert!(e.to_string().contains("exclude pattern \"b[\""), "{e}");
    }
}
