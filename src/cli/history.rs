//! `versions`, `diff` and `find`: questions across the points of a vault (see
//! `repo::history` for how they avoid reading whole trees).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::{Value, json};

use super::output;
use super::points::parse_time;
use crate::repo::Repository;
use crate::repo::format::{Node, NodeKind, printable_bytes, rfc3339};
use crate::repo::history::{self, Change, History, NameMatcher, Query, Search};
use crate::repo::points::PointRecord;

#[derive(Args, Debug)]
pub struct VersionsArgs {
    /// The vault to look through.
    pub vault: String,
    /// A path starting with the backup's name, e.g. etc/passwd.
    pub path: OsString,
    /// Print the versions as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The vault of both points.
    pub vault: String,
    /// The older point (a name or `latest`).
    pub point_a: String,
    /// The newer point (a name or `latest`).
    pub point_b: String,
    /// Only below this path (starting with the backup's name).
    pub path: Option<OsString>,
    /// Print the changes as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print only counts: added, removed, modified, metadata-only, and bytes.
    #[arg(long)]
    pub stat: bool,
}

#[derive(Args, Debug)]
pub struct FindArgs {
    /// The vault to search (not with --all), then name patterns (globs on the last
    /// component: `*.pdf`, `report-202?-*`; any may match; none: every entry).
    #[arg(value_name = "VAULT|PATTERN", required_unless_present = "all")]
    pub words: Vec<String>,
    /// Search every vault: every word is a pattern.
    #[arg(long)]
    pub all: bool,
    /// Patterns are regular expressions (on the name's bytes).
    #[arg(long)]
    pub regex: bool,
    /// Only below this path (starting with the backup's name).
    #[arg(long, value_name = "P")]
    pub path_prefix: Option<OsString>,
    /// Only points taken at or after T (RFC 3339, a date, a point name or a span: 7d).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub since: Option<i64>,
    /// Only points taken at or before T.
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub until: Option<i64>,
    /// Only entries modified after T.
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub newer_than: Option<i64>,
    /// Only files larger than N bytes (e.g. 10M).
    #[arg(long, value_name = "N", value_parser = output::parse_size)]
    pub larger_than: Option<u64>,
    /// List paths that some point holds and the latest does not, with the last point
    /// holding them.
    #[arg(long)]
    pub deleted: bool,
    /// Print the hits as JSON.
    #[arg(long)]
    pub json: bool,
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn kind(n: &Node) -> String {
    format!("{:?}", n.kind).to_lowercase()
}

fn node_json(n: &Node) -> Value {
    json!({
        "type": kind(n),
        "size": n.size,
        "mode": format!("{:o}", n.mode),
        "uid": n.uid,
        "gid": n.gid,
        "mtime": rfc3339(n.mtime_ns),
        "target": n.target.as_deref().map(lossy),
        "content": history::content_id(n),
    })
}

fn write_line(out: &mut impl Write, head: &str, path: &[u8], tail: &str) {
    let mut line = head.as_bytes().to_vec();
    line.extend_from_slice(&printable_bytes(path));
    line.extend_from_slice(tail.as_bytes());
    line.push(b'\n');
    let _ = out.write_all(&line);
}

pub fn versions(repo: &Repository, a: &VersionsArgs) -> Result<i32> {
    let points = repo.point_records(&a.vault, false)?;
    let path = a.path.as_bytes();
    let h = History::new(repo);
    let v = h.versions(&points, path)?;
    if v.versions.is_empty() {
        bail!(
            "{}: in no point of vault {}",
            String::from_utf8_lossy(&printable_bytes(path)),
            a.vault
        );
    }
    if a.json {
        output::print_json(&json!({
            "vault": a.vault,
            "path": lossy(path),
            "versions": v.versions.iter().map(|x| {
                let mut j = node_json(&x.node);
                j["first_point"] = json!(x.points.first());
                j["last_point"] = json!(x.points.last());
                j["points"] = json!(x.points);
                j
            }).collect::<Vec<_>>(),
            "absent": v.absent,
        }));
        return Ok(0);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for x in &v.versions {
        let first = x.points.first().map_or("", String::as_str);
        let last = x.points.last().map_or("", String::as_str);
        let _ = writeln!(
            out,
            "{first} .. {last}  {} point(s)  {:>10}  {}  {}  {}",
            x.points.len(),
            output::human(x.node.size),
            rfc3339(x.node.mtime_ns),
            kind(&x.node),
            x.id
        );
    }
    if !v.absent.is_empty() {
        let _ = writeln!(out, "absent from: {}", v.absent.join(", "));
    }
    Ok(0)
}

pub fn diff(repo: &Repository, a: &DiffArgs) -> Result<i32> {
    let pa = repo.point_record(&a.vault, &a.point_a)?;
    let pb = repo.point_record(&a.vault, &a.point_b)?;
    let h = History::new(repo);
    let path = a.path.as_ref().map(|p| p.as_bytes());
    let mut counts: BTreeMap<Change, u64> = BTreeMap::new();
    let (mut added_bytes, mut removed_bytes) = (0u64, 0u64);
    let mut rows = Vec::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    h.diff(&pa.manifest, &pb.manifest, path, &mut |e| {
        *counts.entry(e.change).or_default() += 1;
        let file_size = |n: &Option<Node>| {
            n.as_ref()
                .filter(|n| n.kind == NodeKind::File)
                .map_or(0, |n| n.size)
        };
        match e.change {
            Change::Added => added_bytes += file_size(&e.new),
            Change::Removed => removed_bytes += file_size(&e.old),
            Change::Modified => {
                added_bytes += file_size(&e.new);
                removed_bytes += file_size(&e.old);
            }
            Change::Meta => {}
        }
        if a.stat {
            return;
        }
        if a.json {
            rows.push(json!({
                "change": e.change.as_str(),
                "path": lossy(&e.path),
                "old": e.old.as_ref().map(node_json),
                "new": e.new.as_ref().map(node_json),
            }));
        } else {
            let dir = e
                .new
                .as_ref()
                .or(e.old.as_ref())
                .is_some_and(|n| n.kind == NodeKind::Dir);
            write_line(
                &mut out,
                &format!("{}    ", e.change.symbol()),
                &e.path,
                if dir { "/" } else { "" },
            );
        }
    })?;
    let n = |c| counts.get(&c).copied().unwrap_or(0);
    if a.json {
        let mut j = json!({
            "vault": a.vault,
            "point_a": pa.name(),
            "point_b": pb.name(),
            "stat": {
                "added": n(Change::Added),
                "removed": n(Change::Removed),
                "modified": n(Change::Modified),
                "metadata": n(Change::Meta),
                "added_bytes": added_bytes,
                "removed_bytes": removed_bytes,
            },
        });
        if !a.stat {
            j["changes"] = Value::Array(rows);
        }
        drop(out);
        output::print_json(&j);
    } else if a.stat {
        let _ = writeln!(
            out,
            "{} added, {} removed, {} modified, {} metadata only; {} added, {} removed",
            n(Change::Added),
            n(Change::Removed),
            n(Change::Modified),
            n(Change::Meta),
            output::human(added_bytes),
            output::human(removed_bytes)
        );
    }
    Ok(0)
}

/// One line of `find`: a path with one content over a run of consecutive points.
struct Run {
    path: Vec<u8>,
    node: Node,
    vault: String,
    first: String,
    last: String,
    count: usize,
    /// Index of the last point of the run in its vault's list.
    last_index: usize,
}

pub fn find(repo: &Repository, a: &FindArgs) -> Result<i32> {
    let (vault, patterns) = match (a.all, a.words.split_first()) {
        (false, Some((v, rest))) => (Some(v.clone()), rest),
        (false, None) => bail!("name a vault, or search all with --all"),
        (true, _) => (None, &a.words[..]),
    };
    let mut names = Vec::new();
    for p in patterns {
        names.push(
            if a.regex {
                NameMatcher::regex(p)
            } else {
                NameMatcher::glob(p)
            }
            .map_err(anyhow::Error::msg)?,
        );
    }
    let vaults = match vault {
        Some(v) => vec![v],
        None => repo.list_vaults()?,
    };
    let in_range = |p: &PointRecord| {
        a.since.is_none_or(|t| p.manifest.time_ns >= t)
            && a.until.is_none_or(|t| p.manifest.time_ns <= t)
    };
    let prefix = a.path_prefix.as_ref().map(|p| p.as_bytes());
    let h = History::new(repo);
    if a.deleted {
        return deleted(repo, &h, a, &vaults, names, prefix);
    }
    let query = Query {
        names,
        newer_than_ns: a.newer_than,
        larger_than: a.larger_than,
    };
    let mut search = Search::new(&h, query);
    let mut runs: Vec<Run> = Vec::new();
    for vault in &vaults {
        let points: Vec<PointRecord> = repo
            .point_records(vault, false)?
            .into_iter()
            .filter(|p| in_range(p))
            .collect();
        // (path, content, mtime, mode) -> the open run of it.
        let mut open: std::collections::HashMap<(Vec<u8>, String, i64, u32), usize> =
            Default::default();
        for (i, p) in points.iter().enumerate() {
            for (path, node) in search.point(&p.manifest, prefix)? {
                let key = (path, history::content_id(&node), node.mtime_ns, node.mode);
                match open.get(&key).copied() {
                    Some(r) if runs[r].last_index + 1 == i => {
                        runs[r].last = p.name().to_string();
                        runs[r].count += 1;
                        runs[r].last_index = i;
                    }
                    _ => {
                        open.insert(key.clone(), runs.len());
                        runs.push(Run {
                            path: key.0,
                            node,
                            vault: vault.clone(),
                            first: p.name().to_string(),
                            last: p.name().to_string(),
                            count: 1,
                            last_index: i,
                        });
                    }
                }
            }
        }
    }
    runs.sort_by(|x, y| (&x.vault, &x.path, &x.first).cmp(&(&y.vault, &y.path, &y.first)));
    if a.json {
        output::print_json(&Value::Array(
            runs.iter()
                .map(|r| {
                    let mut j = node_json(&r.node);
                    j["vault"] = json!(r.vault);
                    j["path"] = json!(lossy(&r.path));
                    j["first_point"] = json!(r.first);
                    j["last_point"] = json!(r.last);
                    j["points"] = json!(r.count);
                    j
                })
                .collect(),
        ));
        return Ok(0);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for r in &runs {
        let points = if r.count == 1 {
            r.first.clone()
        } else {
            format!("{} .. {} ({} points)", r.first, r.last, r.count)
        };
        let vault = if vaults.len() > 1 {
            format!("{}/", r.vault)
        } else {
            String::new()
        };
        write_line(
            &mut out,
            &format!("{vault}{points}  "),
            &r.path,
            &format!(
                "  {}  {}",
                output::human(r.node.size),
                rfc3339(r.node.mtime_ns)
            ),
        );
    }
    Ok(0)
}

fn deleted(
    repo: &Repository,
    h: &History<'_>,
    a: &FindArgs,
    vaults: &[String],
    names: Vec<NameMatcher>,
    prefix: Option<&[u8]>,
) -> Result<i32> {
    let query = Query {
        names,
        newer_than_ns: a.newer_than,
        larger_than: a.larger_than,
    };
    let under = |p: &[u8]| {
        prefix.is_none_or(|pre| {
            let pre = history::split_path(pre).join(&b'/');
            p == pre.as_slice() || (p.starts_with(&pre) && p.get(pre.len()) == Some(&b'/'))
        })
    };
    let mut rows = Vec::new();
    for vault in vaults {
        let points: Vec<PointRecord> = repo
            .point_records(vault, false)?
            .into_iter()
            .filter(|p| a.until.is_none_or(|t| p.manifest.time_ns <= t))
            .collect();
        let gone = history::deleted(h, &points, |path, node| under(path) && query.matches(node))?;
        for (path, point, node) in gone {
            if a.since.is_some_and(|t| {
                points
                    .iter()
                    .find(|p| p.name() == point)
                    .is_some_and(|p| p.manifest.time_ns < t)
            }) {
                continue;
            }
            rows.push((vault.clone(), path, point, node));
        }
    }
    if a.json {
        output::print_json(&Value::Array(
            rows.iter()
                .map(|(v, path, point, node)| {
                    let mut j = node_json(node);
                    j["vault"] = json!(v);
                    j["path"] = json!(lossy(path));
                    j["last_point"] = json!(point);
                    j
                })
                .collect(),
        ));
    } else {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        for (v, path, point, node) in &rows {
            let vault = if vaults.len() > 1 {
                format!("{v}/")
            } else {
                String::new()
            };
            write_line(
                &mut out,
                &format!("{vault}{point}  "),
                path,
                &format!(
                    "  {}  {}  (deleted after this point)",
                    output::human(node.size),
                    rfc3339(node.mtime_ns)
                ),
            );
        }
    }
    Ok(0)
}
