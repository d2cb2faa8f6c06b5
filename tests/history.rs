//! Finding things across time through the real binary: `versions`, `diff` and `find`
//! (with `--deleted`) over a vault of 22 points, checked against a model computed from
//! the source trees as they were at each backup.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use common::*;
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// What the model knows of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    /// File bytes or symlink target.
    content: Vec<u8>,
    mode: u32,
    mtime_ns: i64,
}

type Snapshot = BTreeMap<String, Entry>;

/// The source tree as a backup of `root` sees it, paths starting with its name and
/// names made lossy as the JSON output makes them.
fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let base = root.parent().unwrap();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = String::from_utf8_lossy(p.strip_prefix(base).unwrap().as_os_str().as_bytes())
            .into_owned();
        let (kind, content) = if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            ("dir", Vec::new())
        } else if m.file_type().is_symlink() {
            (
                "symlink",
                fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec(),
            )
        } else {
            ("file", fs::read(&p).unwrap())
        };
        out.insert(
            rel,
            Entry {
                kind,
                content,
                mode: m.mode() & 0o7777,
                mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            },
        );
    }
    out
}

/// The model's diff: (symbol, path) pairs.
fn model_diff(a: &Snapshot, b: &Snapshot) -> BTreeSet<(char, String)> {
    let mut out = BTreeSet::new();
    // Paths below a path whose kind changed are added/removed with it.
    for (p, ea) in a {
        match b.get(p) {
            None => {
                out.insert(('-', p.clone()));
            }
            Some(eb) if eb.kind != ea.kind => {
                out.insert(('-', p.clone()));
                out.insert(('+', p.clone()));
            }
            Some(eb) => {
                if ea.kind != "dir" && ea.content != eb.content {
                    out.insert(('M', p.clone()));
                } else if ea.mode != eb.mode || ea.mtime_ns != eb.mtime_ns {
                    out.insert(('m', p.clone()));
                }
            }
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            out.insert(('+', p.clone()));
        }
    }
    out
}

fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap();
}

/// Changes of step `i` to the tree under `root`.
fn step(root: &Path, i: usize) {
    let doc = root.join("doc.txt");
    match i {
        0 => {
            write(&doc, b"version A\n");
            fs::create_dir_all(root.join("names")).unwrap();
            for n in [&b"new\nline"[..], b"caf\xe9", &[b'n'; 255][..]] {
                write(&root.join("names").join(OsStr::from_bytes(n)), n);
            }
            symlink("target-one", root.join("link")).unwrap();
            write(&root.join("flip"), b"a file first");
            write(&root.join("h1"), b"linked");
            fs::hard_link(root.join("h1"), root.join("h2")).unwrap();
            write(&root.join("mode.txt"), b"same bytes");
            fs::create_dir_all(root.join("old/deep")).unwrap();
            write(&root.join("old/a.txt"), b"old a");
            write(&root.join("old/deep/b.txt"), b"old b");
        }
        3 => write(&doc, b"version B\n"),
        4 => {
            fs::remove_file(root.join("link")).unwrap();
            symlink("target-two", root.join("link")).unwrap();
        }
        5 => write(
            &root.join("names").join(OsStr::from_bytes(b"new\nline")),
            b"changed",
        ),
        6 => fs::set_permissions(root.join("mode.txt"), fs::Permissions::from_mode(0o600)).unwrap(),
        7 => write(&doc, b"version C, longer than the others\n"),
        8 => {
            fs::remove_file(root.join("flip")).unwrap();
            fs::create_dir(root.join("flip")).unwrap();
            write(&root.join("flip/child.txt"), b"under a directory now");
        }
        9 => {
            sh(&format!(
                "touch -d '2020-01-01 00:00:00' '{}'",
                root.join("mode.txt").display()
            ));
        }
        10 => write(&root.join("h1"), b"linked, changed through one name"),
        11 => fs::remove_dir_all(root.join("old")).unwrap(),
        12 => write(&doc, b"version A\n"),
        14 => {
            fs::remove_dir_all(root.join("flip")).unwrap();
            write(&root.join("flip"), b"a file again");
        }
        15 => fs::remove_file(&doc).unwrap(),
        18 => write(&doc, b"version B\n"),
        _ => {}
    }
    // Every point differs somewhere.
    write(&root.join("counter"), format!("{i}").as_bytes());
}

const STEPS: usize = 22;

struct Fixture {
    t: TestRepo,
    points: Vec<String>,
    snaps: Vec<Snapshot>,
}

fn fixture() -> Fixture {
    let t = TestRepo::new();
    let root = t.path("src").join("tree");
    fs::create_dir_all(&root).unwrap();
    let mut points = Vec::new();
    let mut snaps = Vec::new();
    for i in 0..STEPS {
        step(&root, i);
        snaps.push(snapshot(&root));
        let out = json(&t.ok(&["backup", "v", root.to_str().unwrap(), "--json"]));
        points.push(out["id"].as_str().unwrap().to_string());
    }
    Fixture { t, points, snaps }
}

#[test]
fn versions_diff_and_find_match_a_model_of_the_source() {
    let f = fixture();
    let t = &f.t;

    // versions: one per distinct content, first and last point, the points without it.
    let mut model: Vec<(Vec<u8>, Vec<usize>)> = Vec::new();
    let mut absent = Vec::new();
    for (i, s) in f.snaps.iter().enumerate() {
        match s.get("tree/doc.txt") {
            None => absent.push(f.points[i].clone()),
            Some(e) => match model.iter_mut().find(|(c, _)| *c == e.content) {
                Some((_, pts)) => pts.push(i),
                None => model.push((e.content.clone(), vec![i])),
            },
        }
    }
    assert_eq!(model.len(), 3, "A, B, C");
    let v = json(&t.ok(&["versions", "v", "tree/doc.txt", "--json"]));
    let got = v["versions"].as_array().unwrap();
    assert_eq!(got.len(), model.len(), "{v}");
    for ((content, pts), g) in model.iter().zip(got) {
        let names: Vec<&str> = pts.iter().map(|&i| f.points[i].as_str()).collect();
        assert_eq!(g["points"], serde_json::json!(names), "{g}");
        assert_eq!(g["first_point"], names[0]);
        assert_eq!(g["size"], content.len());
        let first = &f.snaps[pts[0]]["tree/doc.txt"];
        assert_eq!(g["mode"], format!("{:o}", first.mode));
    }
    assert_eq!(v["absent"], serde_json::json!(absent));
    // Equal content, one id; different content, different ids.
    let ids: BTreeSet<&str> = got.iter().map(|g| g["content"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    // A symlink's versions are its targets; a path that is a file, a directory, a file.
    let v = json(&t.ok(&["versions", "v", "tree/link", "--json"]));
    let targets: Vec<&str> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["target-one", "target-two"]);
    let v = json(&t.ok(&["versions", "v", "tree/flip", "--json"]));
    let kinds: Vec<&str> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[..2], ["file", "dir"], "{v}");
    assert_eq!(kinds.last(), Some(&"file"));
    let long = format!("tree/names/{}", "n".repeat(255));
    let v = json(&t.ok(&["versions", "v", &long, "--json"]));
    assert_eq!(v["versions"].as_array().unwrap().len(), 1);
    let o = t.run(&["versions", "v", "tree/never-there"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("in no point"));

    // diff of every consecutive pair equals the model's.
    for i in 1..STEPS {
        let d = json(&t.ok(&["diff", "v", &f.points[i - 1], &f.points[i], "--json"]));
        let got: BTreeSet<(char, String)> = d["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let sym = match c["change"].as_str().unwrap() {
                    "added" => '+',
                    "removed" => '-',
                    "modified" => 'M',
                    _ => 'm',
                };
                (sym, c["path"].as_str().unwrap().to_string())
            })
            .collect();
        assert_eq!(
            got,
            model_diff(&f.snaps[i - 1], &f.snaps[i]),
            "diff {} {}",
            f.points[i - 1],
            f.points[i]
        );
        assert_eq!(
            d["stat"]["added"].as_u64().unwrap()
                + d["stat"]["removed"].as_u64().unwrap()
                + d["stat"]["modified"].as_u64().unwrap()
                + d["stat"]["metadata"].as_u64().unwrap(),
            got.len() as u64
        );
    }
    // The text form, a path filter, and --stat.
    let text = t.ok(&["diff", "v", &f.points[10], &f.points[11]]);
    assert!(text.contains("-    tree/old/deep/b.txt\n"), "{text}");
    assert!(text.contains("-    tree/old/\n"), "{text}");
    let text = t.ok(&["diff", "v", &f.points[0], &f.points[21], "tree/old"]);
    assert_eq!(text.lines().count(), 4, "{text}");
    let text = t.ok(&["diff", "v", &f.points[2], &f.points[3], "--stat"]);
    assert!(text.starts_with("0 added, 0 removed, 2 modified"), "{text}");

    // find: runs of equal hits over consecutive points.
    let mut model_runs: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut open: HashMap<String, (Entry, usize, usize)> = HashMap::new();
    for (i, s) in f.snaps.iter().enumerate() {
        for (p, e) in s.iter().filter(|(p, _)| p.ends_with(".txt")) {
            match open.get_mut(p) {
                Some((prev, _, last)) if *prev == *e && *last + 1 == i => *last = i,
                _ => {
                    if let Some((_, first, last)) = open.remove(p) {
                        model_runs.insert((
                            p.clone(),
                            f.points[first].clone(),
                            f.points[last].clone(),
                        ));
                    }
                    open.insert(p.clone(), (e.clone(), i, i));
                }
            }
        }
    }
    for (p, (_, first, last)) in open {
        model_runs.insert((p, f.points[first].clone(), f.points[last].clone()));
    }
    let hits = json(&t.ok(&["find", "v", "*.txt", "--json"]));
    let got: BTreeSet<(String, String, String)> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["path"].as_str().unwrap().to_string(),
                h["first_point"].as_str().unwrap().to_string(),
                h["last_point"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, model_runs);
    // --larger-than and --path-prefix narrow it.
    let hits = json(&t.ok(&[
        "find",
        "v",
        "*",
        "--larger-than",
        "20",
        "--path-prefix",
        "tree/flip",
        "--json",
    ]));
    let paths: BTreeSet<&str> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, BTreeSet::from(["tree/flip/child.txt"]));
    // A regular expression on raw name bytes.
    let hits = json(&t.ok(&["find", "--all", "--regex", "(?-u)^caf\\xE9$", "--json"]));
    assert_eq!(hits.as_array().unwrap().len(), 1, "{hits}");
    assert_eq!(hits[0]["points"], STEPS);

    // --deleted: in some point, not in the latest, with the last point holding it.
    let last = f.snaps.last().unwrap();
    let mut model_gone: BTreeMap<String, String> = BTreeMap::new();
    for (i, s) in f.snaps.iter().enumerate().rev().skip(1) {
        for (p, e) in s {
            let gone = last.get(p).is_none_or(|l| l.kind != e.kind);
            if gone && !model_gone.contains_key(p) {
                model_gone.insert(p.clone(), f.points[i].clone());
            }
        }
    }
    let d = json(&t.ok(&["find", "v", "--deleted", "--json"]));
    let got: BTreeMap<String, String> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["path"].as_str().unwrap().to_string(),
                h["last_point"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, model_gone);
    assert!(got.contains_key("tree/old/deep/b.txt"));
    assert_eq!(got["tree/old/a.txt"], f.points[10]);
    let d = json(&t.ok(&["find", "v", "--deleted", "b.txt", "--json"]));
    assert_eq!(d.as_array().unwrap().len(), 1, "{d}");
}

/// Every file of the mount answers `user.vaultfs.content` when asked by name: equal for
/// equal content in any point, different otherwise; it is not listed, so copies made by
/// `cp -a` and `getfattr -d` do not carry it.
#[test]
fn the_mount_names_each_files_content() {
    let f = fixture();
    let m = f.t.mount(&[], &[]);
    let content = |point: usize, path: &str| {
        let p = m.dir.join("v").join(&f.points[point]).join(path);
        let o = std::process::Command::new("getfattr")
            .args(["--only-values", "-n", "user.vaultfs.content"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    // doc.txt: A at 0 and 12, B at 3 and 18, C at 7.
    assert_eq!(content(0, "tree/doc.txt"), content(12, "tree/doc.txt"));
    assert_eq!(content(3, "tree/doc.txt"), content(18, "tree/doc.txt"));
    assert_ne!(content(0, "tree/doc.txt"), content(3, "tree/doc.txt"));
    assert_ne!(content(3, "tree/doc.txt"), content(7, "tree/doc.txt"));
    // The same id as `versions` gives, and equal for two names of one hard link.
    let v = json(&f.t.ok(&["versions", "v", "tree/doc.txt", "--json"]));
    assert_eq!(v["versions"][0]["content"], content(0, "tree/doc.txt"));
    assert_eq!(content(0, "tree/h1"), content(0, "tree/h2"));
    // Not listed, not copied.
    let file = m.dir.join("v").join(&f.points[0]).join("tree/doc.txt");
    let listed = sh(&format!("getfattr -d -m - '{}' 2>&1", file.display()));
    assert!(!listed.contains("vaultfs"), "{listed}");
    let copy = f.t.path("copy");
    sh(&format!("cp -a '{}' '{}'", file.display(), copy.display()));
    assert!(xattr::get(&copy, "user.vaultfs.content").unwrap().is_none());
}

/// The views of `.vaultfs/`: `versions/` (walked like the tree, a file's versions
/// readable with their bytes and mtime), `changes/` (what each point added or modified,
/// in place, and `removed.json`), `deleted/` (the last version of what the latest point
/// no longer holds), read with real tools.
#[test]
fn the_views_across_time_match_the_model() {
    let f = fixture();
    let m = f.t.mount(&[], &[]);
    let views = m.dir.join(".vaultfs");
    let ls = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // versions/: doc.txt has three versions, named by their first point.
    let doc = views.join("versions/v/tree/doc.txt");
    let want: Vec<String> = [0, 3, 7]
        .iter()
        .map(|&i| format!("doc.{}.txt", f.points[i]))
        .collect();
    let mut sorted = want.clone();
    sorted.sort();
    assert_eq!(ls(&doc), sorted);
    for (i, name) in [0usize, 3, 7].iter().zip(&want) {
        let e = &f.snaps[*i]["tree/doc.txt"];
        let p = doc.join(name);
        assert_eq!(fs::read(&p).unwrap(), e.content, "{name}");
        let md = fs::metadata(&p).unwrap();
        assert_eq!(md.mtime() * 1_000_000_000 + md.mtime_nsec(), e.mtime_ns);
        assert_eq!(md.mode() & 0o7777, e.mode);
    }
    // The tree's names of every point, deleted ones too; a path that was a file and a
    // directory holds both its file versions and its entries.
    let top = ls(&views.join("versions/v/tree"));
    for n in ["doc.txt", "old", "flip", "link", "names"] {
        assert!(top.contains(&n.to_string()), "{n}: {top:?}");
    }
    let flip = ls(&views.join("versions/v/tree/flip"));
    assert!(flip.contains(&"child.txt".to_string()), "{flip:?}");
    assert_eq!(
        flip.iter().filter(|n| n.starts_with("flip.")).count(),
        2,
        "{flip:?}"
    );
    assert_eq!(
        fs::read(
            views
                .join("versions/v/tree/old/deep/b.txt")
                .join(format!("b.{}.txt", f.points[0]))
        )
        .unwrap(),
        b"old b"
    );
    // A symlink's versions are symlinks with its targets.
    let links = ls(&views.join("versions/v/tree/link"));
    assert_eq!(links.len(), 2);
    let targets: BTreeSet<String> = links
        .iter()
        .map(|l| {
            fs::read_link(views.join("versions/v/tree/link").join(l))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        targets,
        BTreeSet::from(["target-one".into(), "target-two".into()])
    );

    // changes/: the added and modified files (not directories) of each point, in place.
    let changes = views.join("changes/v");
    // Listed in name order: "-10" sorts before "-2" when many points share a second.
    let mut want_points = f.points[1..].to_vec();
    want_points.sort();
    assert_eq!(ls(&changes), want_points);
    for i in 1..STEPS {
        let want: BTreeSet<String> = model_diff(&f.snaps[i - 1], &f.snaps[i])
            .into_iter()
            .filter(|(c, p)| matches!(c, '+' | 'M') && f.snaps[i][p].kind != "dir")
            .map(|(_, p)| p)
            .collect();
        let dir = changes.join(&f.points[i]);
        let found = sh(&format!(
            "cd '{}' && find . ! -type d ! -name removed.json -printf '%P\\0'",
            dir.display()
        ));
        let got: BTreeSet<String> = found
            .split('\0')
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect();
        // find prints names raw; the model's are lossy: compare the UTF-8 ones.
        let utf8 = |s: &BTreeSet<String>| {
            s.iter()
                .filter(|p| !p.contains('\u{fffd}') && !p.contains('\n'))
                .cloned()
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(utf8(&got), utf8(&want), "changes of {}", f.points[i]);
        let removed: Value = json(&fs::read_to_string(dir.join("removed.json")).unwrap());
        let want_removed: BTreeSet<String> = model_diff(&f.snaps[i - 1], &f.snaps[i])
            .into_iter()
            .filter(|(c, _)| *c == '-')
            .map(|(_, p)| p)
            .collect();
        let got_removed: BTreeSet<String> = removed
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got_removed, want_removed, "removed in {}", f.points[i]);
    }
    // Read with real tools: the modified doc.txt of point 3 is version B.
    let b = changes.join(&f.points[3]).join("tree/doc.txt");
    let copy = f.t.path("b-copy");
    sh(&format!(
        "cp -a '{}' '{}' && diff '{}' '{}'",
        b.display(),
        copy.display(),
        b.display(),
        copy.display()
    ));
    assert_eq!(fs::read(&copy).unwrap(), b"version B\n");

    // deleted/: old/ whole, as point 10 had it.
    let deleted = views.join("deleted/v");
    assert_eq!(fs::read(deleted.join("tree/old/a.txt")).unwrap(), b"old a");
    assert_eq!(
        fs::read(deleted.join("tree/old/deep/b.txt")).unwrap(),
        b"old b"
    );
    let sums = sh(&format!(
        "cd '{}' && sha256sum tree/old/a.txt",
        deleted.display()
    ));
    assert!(sums.contains("tree/old/a.txt"), "{sums}");
    assert!(
        !deleted.join("tree/doc.txt").exists(),
        "doc.txt is in the latest point"
    );
}
