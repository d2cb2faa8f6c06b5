//! Named failpoints: the steps of every commit where a test can make the process die,
//! as `kill -9` would, or make the step fail.
//!
//! A failpoint is one line, `failpoint!("name")`, in a function returning
//! [`super::Result`]. It does something only in builds with the `fault-injection`
//! feature (the tests' builds) and only when `VAULTFS_FAILPOINTS` names it; release
//! builds compile [`hit`] to an empty function and read no variable.
//!
//! `VAULTFS_FAILPOINTS` is a list of `name[:action][@n]` separated by `;` or `,`:
//! - `abort` (the default): the process sends itself SIGKILL — no destructor runs, no
//!   buffer is flushed, the writer lock stays behind, exactly as after `kill -9` (not a
//!   power cut: what the kernel accepted stays);
//! - `error`: the step fails with [`RepoError::Internal`] naming the failpoint, and the
//!   command goes on as after a failed store call;
//! - `@n`: only the `n`-th time this process reaches the point (from 1; default 1).
//!
//! The points, in commit order ([`NAMES`] is the same list, for tests):
//!
//! | name | where | durable when it fires |
//! | --- | --- | --- |
//! | `lock.create` | a writer's lock object written, other locks not yet listed | the lock |
//! | `pack.write` | before a pack object is written (backup, ingest, copy) | earlier packs |
//! | `pack.written` | the pack written, its index object not yet | the pack |
//! | `index.written` | the pack's index object written | pack and index |
//! | `manifest.write` | every pack of a backup durable, its manifest not yet written | the point's data |
//! | `manifest.written` | the manifest committed, the lock not yet released | the point |
//! | `attrs.write` | before a point-attribute update (tags, protect, expiry, `deleting`) | nothing new |
//! | `attrs.written` | the update written | the update |
//! | `delete.manifest` | a point marked `deleting`, its manifest not yet deleted | the mark |
//! | `delete.updates` | the manifest deleted, the point's updates not yet | the deletion |
//! | `prune.repack.pack_written` | a repacked pack written, its index not yet | the new pack |
//! | `prune.repack.index_written` | its index written | the new pack and index |
//! | `prune.forward_written` | one forward object written | the forward |
//! | `prune.forwards_deleted` | forwards no reference needs deleted | every forward step |
//! | `prune.indexes_deleted` | index objects of the packs that go deleted, the packs not yet | the deletes |
//! | `prune.packs_deleted` | the packs deleted, the lock not yet released | the prune |
//! | `copy.commit` | a copied point's packs durable, its manifest not yet written | its data |
//! | `copy.committed` | its manifest written, its attributes not yet | the point |
//! | `ingest.close` | the close() of a file in `.vaultfs/incoming`, before the stream ends | what was uploaded |
//! | `lock.release` | before the lock object is deleted (an `error` keeps it, as a failed delete would) | everything |

use super::{RepoError, Result};

/// Every failpoint, with where it is (see the module documentation).
pub const NAMES: &[(&str, &str)] = &[
    (
        "lock.create",
        "a writer's lock written, others not yet listed",
    ),
    ("pack.write", "before a pack is written"),
    ("pack.written", "a pack written, its index not yet"),
    ("index.written", "a pack's index written"),
    (
        "manifest.write",
        "a backup's packs durable, its manifest not yet",
    ),
    ("manifest.written", "a backup's manifest committed"),
    ("attrs.write", "before a point-attribute update"),
    ("attrs.written", "a point-attribute update written"),
    (
        "delete.manifest",
        "a point marked deleting, its manifest not yet deleted",
    ),
    (
        "delete.updates",
        "a point's manifest deleted, its updates not yet",
    ),
    (
        "prune.repack.pack_written",
        "a repacked pack written, its index not yet",
    ),
    (
        "prune.repack.index_written",
        "a repacked pack's index written",
    ),
    ("prune.forward_written", "a forward written"),
    ("prune.forwards_deleted", "unneeded forwards deleted"),
    (
        "prune.indexes_deleted",
        "the going packs' indexes deleted, the packs not yet",
    ),
    ("prune.packs_deleted", "the going packs deleted"),
    (
        "copy.commit",
        "a copied point's packs durable, its manifest not yet",
    ),
    (
        "copy.committed",
        "a copied point's manifest written, its attributes not yet",
    ),
    (
        "ingest.close",
        "the close() of an incoming file, before the stream ends",
    ),
    ("lock.release", "before the lock object is deleted"),
];

/// Reaches failpoint `$name` (a literal of [`NAMES`]): `?`-returns its injected error.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        $crate::repo::failpoint::hit($name)?
    };
}

/// Reaches failpoint `name`: aborts the process, returns an error, or (almost always)
/// does nothing. A no-op in builds without the `fault-injection` feature.
#[inline(always)]
pub fn hit(name: &str) -> Result<()> {
    #[cfg(any(test, feature = "fault-injection"))]
    active::hit(name)?;
    let _ = name;
    Ok(())
}

#[cfg(any(test, feature = "fault-injection"))]
mod active {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::{NAMES, RepoError, Result};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Action {
        Abort,
        Error,
    }

    pub(super) struct Rule {
        pub name: String,
        pub action: Action,
        /// Fires on this hit (1-based).
        pub nth: u32,
        pub hits: AtomicU32,
    }

    /// Parses a `VAULTFS_FAILPOINTS` value.
    pub(super) fn parse(spec: &str) -> std::result::Result<Vec<Rule>, String> {
        let mut rules = Vec::new();
        for item in spec
            .split([';', ','])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (item, nth) = match item.rsplit_once('@') {
                Some((i, n)) => (
                    i,
                    n.parse::<u32>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("{item}: @{n} is not a positive count"))?,
                ),
                None => (item, 1),
            };
            let (name, action) = match item.split_once(':') {
                Some((n, "abort")) => (n, Action::Abort),
                Some((n, "error")) => (n, Action::Error),
                Some((_, a)) => return Err(format!("{item}: unknown action {a:?}")),
                None => (item, Action::Abort),
            };
            if !NAMES.iter().any(|(n, _)| *n == name) {
                return Err(format!("{name} is not a failpoint"));
            }
            rules.push(Rule {
                name: name.to_string(),
                action,
                nth,
                hits: AtomicU32::new(0),
            });
        }
        Ok(rules)
    }

    fn rules() -> &'static [Rule] {
        static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
        RULES.get_or_init(|| match std::env::var("VAULTFS_FAILPOINTS") {
            Ok(spec) if !spec.trim().is_empty() => match parse(&spec) {
                Ok(r) => r,
                Err(e) => {
                    // A typo must not turn a crash test into a run that crashes nowhere.
                    eprintln!("VAULTFS_FAILPOINTS={spec}: {e}");
                    std::process::exit(2);
                }
            },
            _ => Vec::new(),
        })
    }

    pub(super) fn hit(name: &str) -> Result<()> {
        debug_assert!(NAMES.iter().any(|(n, _)| *n == name), "{name}");
        for r in rules().iter().filter(|r| r.name == name) {
            if r.hits.fetch_add(1, Ordering::Relaxed) + 1 != r.nth {
                continue;
            }
            match r.action {
                Action::Abort => {
                    eprintln!("failpoint {name}: killing the process");
                    let _ = rustix::process::kill_process(
                        rustix::process::getpid(),
                        rustix::process::Signal::KILL,
                    );
                    std::process::abort();
                }
                Action::Error => {
                    return Err(RepoError::Internal(format!(
                        "injected failure at failpoint {name}"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::active::{Action, parse};

    #[test]
    fn specs_parse_and_typos_are_refused() {
        let r = parse("pack.written; manifest.write:error@3,lock.release:abort").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].name.as_str(), r[0].action, r[0].nth),
            ("pack.written", Action::Abort, 1)
        );
        assert_eq!(
            (r[1].name.as_str(), r[1].action, r[1].nth),
            ("manifest.write", Action::Error, 3)
        );
        assert_eq!(r[2].action, Action::Abort);
        assert!(parse("pack.writen").is_err());
        assert!(parse("pack.write:explode").is_err());
        assert!(parse("pack.write@0").is_err());
    }

    #[test]
    fn unnamed_points_do_nothing() {
        // The variable is unset in unit tests.
        super::hit("pack.write").unwrap();
    }
}
