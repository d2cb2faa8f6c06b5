//! The command line through the real binary: error texts, help texts, `--json` output,
//! counts, and the options of `backup` (excludes, caches, file systems, files whose
//! size lies).

mod common;

use std::fs;

use common::*;

/// A message is said once and names its path.
#[test]
fn errors_are_said_once_and_name_the_path() {
    let t = TestRepo::new();
    let err = t.fails(&["backup", "v", "/nonexistent"]);
    assert_eq!(
        err, "vaultfs: /nonexistent: No such file or directory (os error 2)\n",
        "{err}"
    );

    // A repository address that is a file.
    let file = t.path("a-file");
    fs::write(&file, b"x").unwrap();
    let out = t
        .cmd()
        .env("VAULTFS_REPO", &file)
        .args(["vault", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
    assert!(err.contains(&*file.to_string_lossy()), "{err}");

    // An address the store cannot open is named once, as it was given.
    let out = t
        .cmd()
        .env("VAULTFS_REPO", "s3://")
        .args(["vault", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("vaultfs: open s3://: "), "{err}");
    assert_eq!(err.matches("names no bucket").count(), 1, "{err}");

    // A restore target under a file.
    t.ok(&["backup", "v", t.dir.path().join("a-file").to_str().unwrap()]);
    let target = file.join("sub");
    let err = t.fails(&["restore", "v", "latest", target.to_str().unwrap()]);
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
    assert!(err.contains(&*target.to_string_lossy()), "{err}");
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Every command that prints has `--json`, and a vault is shown with the same fields
/// wherever it is shown.
#[test]
fn json_on_every_command_that_prints() {
    let t = TestRepo::new();
    // init, on a second repository.
    let other = t.path("other-repo");
    let out = t
        .cmd()
        .env("VAULTFS_REPO", &other)
        .args(["init", "--kdf-memory-mib", "8", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let j = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(j["location"], other.to_string_lossy().as_ref());
    assert_eq!(j["kdf_memory_kib"], 8 * 1024);
    assert_eq!(j["chunk_avg"], 512 * 1024);
    assert_eq!(j["id"].as_str().unwrap().len(), 32);

    let created = json(&t.ok(&["vault", "create", "w", "--description", "d1", "--json"]));
    assert_eq!(created["name"], "w");
    assert_eq!(created["description"], "d1");
    assert_eq!(created["point_count"], 0);
    assert_eq!(created["bytes_used"], 0);
    assert!(created["latest"].is_null());

    let src = t.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"hello").unwrap();
    let point = json(&t.ok(&["backup", "w", src.to_str().unwrap(), "--json"]));
    assert_eq!(point["skipped"], serde_json::json!([]));
    let id = point["id"].as_str().unwrap().to_string();

    let updated = json(&t.ok(&["vault", "update", "w", "--description", "d2", "--json"]));
    assert_eq!(updated["description"], "d2");
    assert_eq!(updated["latest"], id.as_str());
    assert_eq!(updated["point_count"], 1);
    assert!(updated["bytes_used"].as_u64().unwrap() > 0);

    // list and show: the same object, field for field.
    let shown = json(&t.ok(&["vault", "show", "w", "--json"]));
    assert_eq!(shown, updated);
    let listed = json(&t.ok(&["vault", "list", "--json"]));
    let w = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "w")
        .unwrap();
    assert_eq!(*w, shown);

    let restored = json(&t.ok(&[
        "restore",
        "w",
        "latest",
        t.path("out").to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(restored["point"], id.as_str());
    assert_eq!(restored["files"], 1);
    assert_eq!(restored["size"], 5);

    let unlocked = json(&t.ok(&["unlock", "--json"]));
    assert_eq!(unlocked["removed"], 0);

    let deleted = json(&t.ok(&["vault", "delete", "w", "--force", "--json"]));
    assert_eq!(deleted, shown);
    t.fails(&["vault", "show", "w"]);
}

/// A backup and a restore of the same tree count the same things: regular files (a hard
/// link once per name), directories, other entries.
#[test]
fn backup_and_restore_count_alike() {
    let t = TestRepo::new();
    let src = t.path("tree");
    make_tricky_tree(&src);
    let point = json(&t.ok(&["backup", "v", src.to_str().unwrap(), "--json"]));
    let b = &point["backups"][0];
    let restored = json(&t.ok(&[
        "restore",
        "v",
        "latest",
        t.path("out").to_str().unwrap(),
        "--json",
    ]));
    for k in ["files", "dirs", "other", "size"] {
        assert_eq!(restored[k], b[k], "{k}: backup {b} restore {restored}");
    }
    // What find sees in the source.
    let count = |args: &str| {
        sh(&format!(
            "find '{}' {args} -printf . | wc -c",
            src.display()
        ))
        .trim()
        .parse::<u64>()
        .unwrap()
    };
    assert_eq!(b["files"], count("-type f"));
    assert_eq!(b["dirs"], count("-type d"));
    assert_eq!(b["other"], count("! -type f ! -type d"));

    // The text summaries say it in the same words.
    let words = format!(
        "{} files, {} dirs, {} other,",
        b["files"], b["dirs"], b["other"]
    );
    let text = t.ok(&["backup", "v", src.to_str().unwrap()]);
    assert!(text.contains(&words), "{text}");
    let text = t.ok(&["restore", "v", "latest", t.path("out2").to_str().unwrap()]);
    assert!(text.contains(&words), "{text}");
}

/// Every command and argument has a help line, and the mount's help says what is true.
#[test]
fn every_argument_has_help() {
    use clap::CommandFactory;
    let mut missing = Vec::new();
    let mut stack = vec![(String::from("vaultfs"), vaultfs::cli::Cli::command())];
    while let Some((path, cmd)) = stack.pop() {
        if cmd.get_about().is_none() {
            missing.push(path.clone());
        }
        for a in cmd.get_arguments() {
            if a.get_help().is_none() && !matches!(a.get_id().as_str(), "help" | "version") {
                missing.push(format!("{path} {}", a.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            stack.push((format!("{path} {}", sub.get_name()), sub.clone()));
        }
    }
    assert!(missing.is_empty(), "without help: {missing:?}");

    let t = TestRepo::new();
    let help = t.ok(&["mount", "--help"]);
    assert!(!help.contains("Mount the repository read-only"), "{help}");
    assert!(help.contains("until `vaultfs prune`"), "{help}");
}

/// Every path of a point, from `ls -R`.
fn listing(t: &TestRepo) -> Vec<String> {
    t.ok(&["ls", "v", "latest", "-R"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// `--exclude`, `--exclude-file` and `--exclude-caches` leave out what they match, with
/// restic's glob meaning; nothing else is left out.
#[test]
fn excludes_leave_out_what_they_match() {
    let t = TestRepo::new();
    let src = t.path("src");
    for d in [
        "a/deep/er",
        "logs",
        "node_modules/x",
        "cache",
        "not-a-cache",
        "keep",
    ] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for f in [
        "a/x.log",
        "a/deep/er/y.log",
        "a/deep/er/y.txt",
        "logs/z.txt",
        "node_modules/x/index.js",
        "keep/file.tmp",
        "keep/file.txt",
        "top.o",
    ] {
        fs::write(src.join(f), f).unwrap();
    }
    fs::write(
        src.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    )
    .unwrap();
    fs::write(src.join("cache/blob"), b"cached").unwrap();
    // Wrong signature: an ordinary directory.
    fs::write(src.join("not-a-cache/CACHEDIR.TAG"), b"Signature: 0000\n").unwrap();
    let patterns = t.path("excludes");
    fs::write(&patterns, "# build output\n\n  *.o  \nnode_modules/\n").unwrap();
    let abs_logs = format!("{}/logs", src.display());
    t.ok(&[
        "backup",
        "v",
        src.to_str().unwrap(),
        "--exclude",
        "*.log",
        "--exclude",
        &abs_logs,
        "--exclude",
        "keep/*.tmp",
        "--exclude-file",
        patterns.to_str().unwrap(),
        "--exclude-caches",
    ]);
    let got = listing(&t);
    let want = [
        "src",
        "src/a",
        "src/a/deep",
        "src/a/deep/er",
        "src/a/deep/er/y.txt",
        "src/keep",
        "src/keep/file.txt",
        "src/not-a-cache",
        "src/not-a-cache/CACHEDIR.TAG",
    ];
    assert_eq!(got, want, "{got:#?}");

    // A bad pattern is refused before anything is read.
    let err = t.fails(&["backup", "v", src.to_str().unwrap(), "--exclude", "a[b"]);
    assert!(err.contains("exclude pattern \"a[b\""), "{err}");
}

/// `--one-file-system` records a mount point as an empty directory and does not enter
/// it: here a real vaultfs mount inside the tree backed up.
#[test]
fn one_file_system_does_not_enter_a_mount() {
    if !fuse_available() {
        return;
    }
    let t = TestRepo::new();
    let inner = t.path("inner");
    fs::create_dir_all(&inner).unwrap();
    fs::write(inner.join("f"), b"inside the mount").unwrap();
    t.ok(&["backup", "v", inner.to_str().unwrap()]);
    let m = t.mount(&[], &[]);
    // The tree backed up holds the mount at tree/mnt-N.
    let tree = t.dir.path();
    let mnt_name = m.dir.file_name().unwrap().to_str().unwrap().to_string();
    let out = json(&t.ok(&[
        "backup",
        "v",
        tree.to_str().unwrap(),
        "--one-file-system",
        "--exclude",
        "repo",
        "--json",
    ]));
    let root = tree.file_name().unwrap().to_str().unwrap();
    let got = listing(&t);
    let mnt_path = format!("{root}/{mnt_name}");
    assert!(got.contains(&mnt_path), "{got:#?}");
    let under: Vec<&String> = got
        .iter()
        .filter(|p| p.starts_with(&format!("{mnt_path}/")))
        .collect();
    assert!(under.is_empty(), "entered the mount: {under:#?}");
    assert!(out["backups"][0]["size"].as_u64().unwrap() < 4096, "{out}");
    // Without the option the mount is backed up like any directory.
    t.ok(&["backup", "v", tree.to_str().unwrap(), "--exclude", "repo"]);
    let got = listing(&t);
    assert!(got.contains(&format!("{mnt_path}/v/latest")), "{got:#?}");
    drop(m);
}

/// Files whose size `stat` gets wrong are read to their end: /proc says 0 bytes, /sys
/// says 4096.
#[test]
fn files_whose_size_lies_are_read_to_their_end() {
    let t = TestRepo::new();
    // /proc/self/status of the backing-up process: it names itself.
    t.ok(&["backup", "v", "/proc/self/status"]);
    let text = t.ok(&["cat", "v", "latest", "status"]);
    assert!(text.starts_with("Name:\tvaultfs\n"), "{text:?}");
    let long = t.ok(&["ls", "v", "latest", "status", "-l"]);
    let size: u64 = long.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(size, text.len() as u64, "{long}");
    // A file of /sys: the same bytes as a read gives.
    let sys = "/sys/kernel/mm/transparent_hugepage/enabled";
    let sys = if std::path::Path::new(sys).exists() {
        sys
    } else {
        "/sys/kernel/uevent_seqnum"
    };
    let want = fs::read(sys).unwrap();
    assert!(!want.is_empty() && want.len() < 4096);
    t.ok(&["backup", "v", sys]);
    let name = sys.rsplit('/').next().unwrap();
    let out = t.run(&["cat", "v", "latest", name]);
    assert!(out.status.success());
    assert_eq!(out.stdout, want);
    // Inside a tree too, beside real empty files.
    let src = t.path("tree");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("/proc/self/status", src.join("link")).unwrap();
    t.ok(&["backup", "v", "/proc/self/stat", src.to_str().unwrap()]);
    let stat = t.ok(&["cat", "v", "latest", "stat"]);
    assert!(stat.contains("(vaultfs)"), "{stat:?}");
    assert_eq!(t.ok(&["cat", "v", "latest", "tree/empty"]), "");
}

/// A file that cannot be read is skipped with one warning naming it once, and it is not
/// counted: /proc/kmsg would block forever (EAGAIN with O_NONBLOCK), or is refused.
#[test]
fn an_unreadable_file_is_skipped_and_not_counted() {
    if !std::path::Path::new("/proc/kmsg").exists() {
        eprintln!("skipped: no /proc/kmsg");
        return;
    }
    let t = TestRepo::new();
    let out = t.run(&["backup", "v", "/proc/kmsg", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("warning: skipped /proc/kmsg: "), "{err}");
    assert_eq!(err.matches("/proc/kmsg").count(), 1, "{err}");
    assert!(!err.contains("<source>"), "{err}");
    let j = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(j["skipped"][0]["path"], "/proc/kmsg");
    assert_eq!(j["backups"][0]["files"], 0, "{j}");
}

/// Restoring over an existing target never follows a symlink found there, at any depth:
/// a point whose tree has `x -> DIR` restored, then a point where `x` is a directory,
/// into the same target, writes nothing into DIR and changes nothing of it.
#[test]
fn restore_never_follows_a_symlink_it_finds_in_the_target() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let t = TestRepo::new();
    let victim = t.path("victim");
    fs::create_dir_all(victim.join("deep")).unwrap();
    fs::write(victim.join("file"), b"precious").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o750)).unwrap();
    let before = sh(&format!(
        "cd '{}' && find . -printf '%p %m %s %n %T@\\n' | sort",
        victim.display()
    ));
    // First point: symlinks pointing out of the tree, at every depth and kind.
    let src = t.path("src");
    let a = src.join("tree");
    fs::create_dir_all(a.join("sub")).unwrap();
    symlink(&victim, a.join("x")).unwrap();
    symlink(&victim, a.join("sub/y")).unwrap();
    symlink(victim.join("file"), a.join("f")).unwrap();
    symlink(victim.join("deep"), a.join("sub/z")).unwrap();
    t.ok(&["backup", "v", a.to_str().unwrap()]);
    // Second point: the same names as directories, files and a hard link.
    fs::remove_dir_all(&a).unwrap();
    fs::create_dir_all(a.join("x/inner")).unwrap();
    fs::create_dir_all(a.join("sub/y")).unwrap();
    fs::create_dir_all(a.join("sub/z/w")).unwrap();
    fs::write(a.join("x/planted"), b"not for the victim").unwrap();
    fs::write(a.join("x/inner/deeper"), b"nor this").unwrap();
    fs::write(a.join("sub/y/planted"), b"nor this").unwrap();
    fs::write(a.join("sub/z/w/planted"), b"nor this").unwrap();
    fs::write(a.join("f"), b"a file now").unwrap();
    fs::hard_link(a.join("f"), a.join("sub/f-link")).unwrap();
    fs::set_permissions(a.join("x"), fs::Permissions::from_mode(0o777)).unwrap();
    t.ok(&["backup", "v", a.to_str().unwrap()]);
    let points = t.points();
    let points: Vec<&str> = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(points.len(), 2);
    let target = t.path("restored");
    t.ok(&["restore", "v", points[0], target.to_str().unwrap()]);
    assert!(
        fs::symlink_metadata(target.join("tree/x"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    t.ok(&[
        "restore",
        "v",
        points[1],
        target.to_str().unwrap(),
        "--overwrite",
    ]);
    // The victim is as it was: no file planted, no mode changed, its file intact.
    let after = sh(&format!(
        "cd '{}' && find . -printf '%p %m %s %n %T@\\n' | sort",
        victim.display()
    ));
    assert_eq!(before, after);
    assert_eq!(fs::read(victim.join("file")).unwrap(), b"precious");
    // And the target holds the second point's tree, real directories in place of links.
    assert_eq!(rsync_diff(&a, &target.join("tree")), "");
    for d in ["tree/x", "tree/sub/y", "tree/sub/z"] {
        assert!(
            fs::symlink_metadata(target.join(d)).unwrap().is_dir(),
            "{d}"
        );
    }
}

/// A directory of the target swapped for a symlink while the restore runs (a writer
/// racing it inside the target) does not carry anything out either: everything below the
/// target is reached through descriptors of the directories restore made, never by path.
#[test]
fn restore_is_not_led_out_by_symlinks_swapped_in_while_it_runs() {
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicBool, Ordering};
    let t = TestRepo::new();
    let victim = t.path("victim");
    fs::create_dir_all(&victim).unwrap();
    let src = t.path("src");
    for d in 0..40 {
        let dir = src.join(format!("tree/d{d:02}"));
        fs::create_dir_all(dir.join("inner")).unwrap();
        for f in 0..25 {
            fs::write(dir.join(format!("f{f:02}")), format!("{d} {f}")).unwrap();
            fs::write(dir.join(format!("inner/g{f:02}")), format!("{d} {f}")).unwrap();
        }
    }
    let tree = src.join("tree");
    t.ok(&["backup", "v", tree.to_str().unwrap()]);
    let target = t.path("restored");
    for round in 0..5 {
        let _ = fs::remove_dir_all(&target);
        fs::create_dir_all(&target).unwrap();
        let mut child = t
            .cmd()
            .args(["restore", "v", "latest", target.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let done = AtomicBool::new(false);
        let swapped = std::thread::scope(|s| {
            let attacker = s.spawn(|| {
                let mut swapped = 0;
                while !done.load(Ordering::Relaxed) {
                    for d in 0..40 {
                        for sub in ["", "/inner"] {
                            let p = target.join(format!("tree/d{d:02}{sub}"));
                            let moved = target.join(format!("moved-{round}-{d}-{}", sub.len()));
                            let is_dir = fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
                            if is_dir && fs::rename(&p, &moved).is_ok() {
                                let _ = symlink(&victim, &p);
                                swapped += 1;
                            }
                        }
                    }
                }
                swapped
            });
            let _ = child.wait().unwrap();
            done.store(true, Ordering::Relaxed);
            attacker.join().unwrap()
        });
        assert!(swapped > 0, "round {round}: the race was never run");
        let planted: Vec<_> = fs::read_dir(&victim)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            planted.is_empty(),
            "round {round}: restore wrote {planted:?}"
        );
    }
}

/// `--password-file` beats VAULTFS_PASSWORD, a named file that cannot be read is an
/// error, and a new repository never gets an empty password.
#[test]
fn a_password_file_beats_the_environment_and_must_be_readable() {
    let t = TestRepo::new();
    let file = t.path("pw");
    fs::write(&file, b"from the file\n").unwrap();
    let repo = t.path("other");
    let run = |env_pw: Option<&str>, args: &[&str]| {
        let mut c = t.cmd();
        c.env("VAULTFS_REPO", &repo);
        match env_pw {
            Some(p) => c.env("VAULTFS_PASSWORD", p),
            None => c.env_remove("VAULTFS_PASSWORD"),
        };
        c.args(args).output().unwrap()
    };
    let pw_file = file.to_str().unwrap();
    // Both given: the file's password is the repository's.
    let o = run(
        Some("from the env"),
        &["--password-file", pw_file, "init", "--kdf-memory-mib", "8"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        run(None, &["--password-file", pw_file, "vault", "list"])
            .status
            .success()
    );
    let o = run(Some("from the env"), &["vault", "list"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("vaultfs: wrong password for the repository at "),
        "{err}"
    );
    // A named file that is missing is an error, whatever the environment holds.
    let missing = t.path("missing");
    let o = run(
        Some("from the file"),
        &[
            "--password-file",
            missing.to_str().unwrap(),
            "vault",
            "list",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "vaultfs: password file {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    // An empty password is refused at init, from the environment or a file.
    let empty = t.path("empty");
    fs::write(&empty, b"\n").unwrap();
    for args in [
        vec!["init"],
        vec!["--password-file", empty.to_str().unwrap(), "init"],
    ] {
        let mut c = t.cmd();
        c.env("VAULTFS_REPO", t.path("never"))
            .env("VAULTFS_PASSWORD", "");
        let o = c.args(&args).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            "vaultfs: an empty password is not allowed\n",
            "{args:?}"
        );
        assert!(!t.path("never").exists());
    }
}

/// Names are printed with their control characters escaped: an escape sequence in a file
/// name never reaches the terminal (ls, ls -l with a symlink target, backup summaries,
/// restore errors), while `--json` keeps the name (JSON escapes it).
#[test]
fn control_characters_in_names_are_escaped_when_printed() {
    use std::os::unix::ffi::OsStrExt;
    let t = TestRepo::new();
    let src = t.path("src\x1b[2J");
    fs::create_dir(&src).unwrap();
    let evil = std::ffi::OsStr::from_bytes(b"evil\x1b]0;owned\x07\n.txt");
    fs::write(src.join(evil), b"x").unwrap();
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(b"to\x1b[31m"), src.join("link"))
        .unwrap();
    let out = t.ok(&["backup".as_ref(), "v".as_ref(), src.as_os_str()]);
    assert!(!out.contains('\x1b'), "{out:?}");
    assert!(out.contains("src\\x1b[2J (tree)"), "{out:?}");
    let ls = t.run(&["ls", "-l", "-R", "v", "latest"]);
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    assert!(text.contains("evil\\x1b]0;owned\\x07\\x0a.txt"), "{text:?}");
    assert!(text.contains("link -> to\\x1b[31m"), "{text:?}");
    let json: serde_json::Value =
        serde_json::from_str(&t.ok(&["ls", "-R", "--json", "v", "latest"])).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.ends_with("evil\x1b]0;owned\x07\n.txt")),
        "{names:?}"
    );
}

/// A reader that closes the pipe early (`| head`) ends the JSON output without a panic.
#[test]
fn json_into_a_closed_pipe_does_not_panic() {
    let t = TestRepo::new();
    let src = t.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    t.ok(&["backup", "v", src.to_str().unwrap()]);
    let mut child = t
        .cmd()
        .args(["points", "v", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

/// Restore into a target that holds files: refused by default (naming them, nothing
/// written), `--skip-existing` keeps them, `--overwrite` replaces them (hard links
/// included, directory times kept) and `--verify` reads everything back; `--at` picks the
/// newest point at or before a time, and `--path` may be given twice.
#[test]
fn restore_modes_over_an_existing_target() {
    use std::os::unix::fs::MetadataExt;
    let t = TestRepo::new();
    let src = t.path("src");
    fs::create_dir_all(src.join("tree/sub")).unwrap();
    fs::write(src.join("tree/a"), b"first a").unwrap();
    fs::write(src.join("tree/sub/b"), b"first b").unwrap();
    t.ok(&["backup", "v", src.join("tree").to_str().unwrap()]);
    let first = t.points()[0]["id"].as_str().unwrap().to_string();
    let first_time = t.points()[0]["time"].as_str().unwrap().to_string();
    fs::write(src.join("tree/a"), b"second a").unwrap();
    fs::write(src.join("tree/new"), b"new file").unwrap();
    fs::hard_link(src.join("tree/a"), src.join("tree/sub/a-link")).unwrap();
    sh(&format!(
        "touch -d '2010-01-01' '{0}/tree/sub' '{0}/tree'",
        src.display()
    ));
    t.ok(&["backup", "v", src.join("tree").to_str().unwrap()]);

    let target = t.path("target");
    t.ok(&["restore", "v", &first, target.to_str().unwrap()]);
    fs::write(target.join("tree/a"), b"edited here").unwrap();
    // Refused: names the file, writes nothing (not even the new file).
    let o = t.run(&["restore", "v", "latest", target.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tree/a") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!target.join("tree/new").exists());
    // Skipped: the edited file stays, what is missing comes.
    let j: serde_json::Value = serde_json::from_str(&t.ok(&[
        "restore",
        "v",
        "latest",
        target.to_str().unwrap(),
        "--skip-existing",
        "--json",
    ]))
    .unwrap();
    assert_eq!(fs::read(target.join("tree/a")).unwrap(), b"edited here");
    assert_eq!(fs::read(target.join("tree/new")).unwrap(), b"new file");
    assert!(j["kept"].as_u64().unwrap() >= 2, "{j}");
    // Overwritten and verified: the target is the backup, hard link and times included.
    t.ok(&[
        "restore",
        "v",
        "latest",
        target.to_str().unwrap(),
        "--overwrite",
        "--verify",
    ]);
    assert_eq!(rsync_diff(&src.join("tree"), &target.join("tree")), "");
    let (a, l) = (
        fs::metadata(target.join("tree/a")).unwrap(),
        fs::metadata(target.join("tree/sub/a-link")).unwrap(),
    );
    assert_eq!(a.ino(), l.ino());
    assert_eq!(a.nlink(), 2);
    let leftovers = sh(&format!(
        "find '{}' -name '.vaultfs-restore-*'",
        target.display()
    ));
    assert_eq!(leftovers, "");
    // --at: the newest point at or before the first point's time is the first point.
    let at = t.path("at");
    t.ok(&["restore", "v", "--at", &first_time, at.to_str().unwrap()]);
    assert_eq!(fs::read(at.join("tree/a")).unwrap(), b"first a");
    let o = t.run(&[
        "restore",
        "v",
        "--at",
        "2001-01-01",
        t.path("none").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no point taken at or before"));
    // Two --path.
    let two = t.path("two");
    t.ok(&[
        "restore",
        "v",
        "latest",
        two.to_str().unwrap(),
        "--path",
        "tree/new",
        "--path",
        "tree/sub",
    ]);
    assert_eq!(fs::read(two.join("new")).unwrap(), b"new file");
    assert_eq!(fs::read(two.join("sub/b")).unwrap(), b"first b");
    assert!(!two.join("a").exists());
}

/// `--overwrite` killed while it writes a large file leaves the old file whole under its
/// name (the new one was being written under a temporary name).
#[test]
fn an_overwrite_killed_midway_leaves_the_old_file() {
    let t = TestRepo::new();
    let src = t.path("src");
    fs::create_dir_all(&src).unwrap();
    let big = random_bytes(7, 96 << 20);
    fs::write(src.join("big"), &big).unwrap();
    t.ok(&["backup", "v", src.to_str().unwrap()]);
    let target = t.path("target");
    fs::create_dir_all(target.join("src")).unwrap();
    let old = random_bytes(8, 1 << 20);
    fs::write(target.join("src/big"), &old).unwrap();
    let mut child = t
        .cmd()
        .args([
            "restore",
            "v",
            "latest",
            target.to_str().unwrap(),
            "--overwrite",
        ])
        .env("VAULTFS_FAULTS", "get_range:packs/:delay=300")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the new file is being written under its temporary name.
    let started = std::time::Instant::now();
    loop {
        let tmp = sh(&format!(
            "find '{}' -name '.vaultfs-restore-*' -size +0",
            target.display()
        ));
        if !tmp.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "no temporary file appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore ended before it was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(fs::read(target.join("src/big")).unwrap(), old);
    // Re-run: the new file, whole.
    t.ok(&[
        "restore",
        "v",
        "latest",
        target.to_str().unwrap(),
        "--overwrite",
    ]);
    assert_eq!(fs::read(target.join("src/big")).unwrap(), big);
}
