//! Real-mount tests of the control directory: snapshot files written into
//! `.vaultfs/incoming/<vault>/` become recovery points; vaults are made and removed with
//! mkdir and rmdir; every ingest has a task file.

mod common;

use std::fs;
use std::process::Command;

use common::*;

fn task_files(m: &Mount) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in fs::read_dir(m.p(".vaultfs/tasks")).unwrap() {
        let text = fs::read(e.unwrap().path()).unwrap();
        out.push(serde_json::from_slice(&text).unwrap());
    }
    out
}

#[test]
fn tar_copied_into_incoming_becomes_a_point_equal_to_its_tree() {
    if !fuse_available() {
        return;
    }
    let t = TestRepo::new();
    let src = t.path("tricky");
    make_tricky_tree(&src);
    let tarball = t.path("tricky.tar");
    sh(&format!(
        "cd '{}' && tar --xattrs --xattrs-include='*' -S -cf '{}' .",
        src.display(),
        tarball.display()
    ));
    let m = t.mount(&[], &[]);
    // cp of a real tar (GNU format, sparse members, xattrs as pax records).
    let st = Command::new("cp")
        .arg(&tarball)
        .arg(m.p(".vaultfs/incoming/v/"))
        .status()
        .unwrap();
    assert!(st.success());
    let diff = rsync_diff(&src, &m.p("v/latest/tricky"));
    assert_eq!(diff, "", "ingested tree differs:\n{diff}");
    // A streamed, compressed archive through a pipe: tar | zstd | dd.
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar --xattrs --xattrs-include='*' -S -C '{}' -cf - . | zstd -q | dd of='{}' bs=1M status=none",
            src.display(),
            m.p(".vaultfs/incoming/v/streamed.tar.zst").display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let diff = rsync_diff(&src, &m.p("v/latest/streamed"));
    assert_eq!(diff, "", "streamed ingest differs:\n{diff}");
    let tasks = task_files(&m);
    assert_eq!(tasks.len(), 2);
    let listed = t.ok(&["tasks".as_ref(), m.dir.as_os_str(), "--json".as_ref()]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let table = t.ok(&["tasks".as_ref(), m.dir.as_os_str()]);
    assert!(table.contains("succeeded"), "{table}");
    assert!(
        tasks
            .iter()
            .all(|j| j["status"] == "succeeded" && j["point"].is_string()),
        "{tasks:?}"
    );
    drop(m);
    t.ok(&["check", "--read-data"]);
}

#[test]
fn a_slow_writer_gets_the_same_backup_name_as_a_fast_one() {
    if !fuse_available() {
        return;
    }
    let t = TestRepo::new();
    let src = t.path("etc");
    make_tricky_tree(&src);
    let tarball = t.path("etc.tar");
    sh(&format!(
        "cd '{}' && tar --xattrs --xattrs-include='*' -S -cf '{}' . && zstd -q -k '{}'",
        src.display(),
        tarball.display(),
        tarball.display()
    ));
    let m = t.mount(&[], &[]);
    let incoming = m.p(".vaultfs/incoming/v");
    // A writer that waits before it closes: the archive ended long before.
    sh(&format!(
        "( cat '{}.zst'; sleep 3 ) | dd of='{}/slowA.tar.zst' status=none",
        tarball.display(),
        incoming.display()
    ));
    // A writer that pauses before the zero padding of its last record: the writes after
    // the end-of-archive blocks are taken, not refused.
    let size = fs::metadata(&tarball).unwrap().len();
    assert!(size > 10240);
    sh(&format!(
        "( head -c {} '{t}'; sleep 2; tail -c 10240 '{t}' ) | dd of='{}/slowB.tar' bs=512 status=none",
        size - 10240,
        incoming.display(),
        t = tarball.display(),
    ));
    let points = t.points();
    let names: Vec<&str> = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["backups"][0]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["slowA", "slowB"], "{points}");
    for name in ["slowA", "slowB"] {
        let id = points
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["backups"][0]["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let got = m.p(&format!("v/{id}/{name}"));
        wait_for(&format!("{name} in the mount"), || got.exists());
        let diff = rsync_diff(&src, &got);
        assert_eq!(diff, "", "{name} differs:\n{diff}");
    }
    assert!(
        task_files(&m).iter().all(|j| j["status"] == "succeeded"),
        "{:?}",
        task_files(&m)
    );
}

/// Runs a python writer against a file of the mount; returns its exit status.
fn python(script: &str, args: &[&std::path::Path]) -> std::process::ExitStatus {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .status()
        .unwrap()
}

/// The task whose file is (or was) `name`, once it has an outcome.
fn finished_task(m: &Mount, name: &str) -> serde_json::Value {
    let mut found = serde_json::Value::Null;
    wait_for(&format!("the task of {name} to finish"), || {
        found = task_files(m)
            .into_iter()
            .find(|j| j["name"] == name && j["status"] != "running" && j["status"] != "queued")
            .unwrap_or_default();
        !found.is_null()
    });
    found
}

#[test]
fn an_interrupted_write_never_becomes_a_point() {
    if !fuse_available() {
        return;
    }
    let t = TestRepo::new();
    let m = t.mount(&[], &[]);
    let dir = m.p(".vaultfs/incoming/v");
    // A writer killed (-9, or by SIGINT as Ctrl-C and `timeout` do) while it holds the
    // file open, half-way through: cp from a pipe that delivers 3 MiB and then stalls.
    let fifo = t.path("fifo");
    sh(&format!("mkfifo '{}'", fifo.display()));
    for (name, sig) in [("killed.img", "KILL"), ("interrupted.img", "INT")] {
        let mut feeder = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "head -c 3145728 /dev/urandom > '{f}.part' && exec > '{f}' && cat '{f}.part' && exec sleep 30",
                f = fifo.display()
            ))
            .spawn()
            .unwrap();
        let mut cp = Command::new("cp")
            .arg(&fifo)
            .arg(dir.join(name))
            .spawn()
            .unwrap();
        let file = dir.join(name);
        wait_for("cp to be half-way", || {
            fs::metadata(&file).is_ok_and(|md| md.len() == 3 << 20)
        });
        sh(&format!("kill -{sig} {}", cp.id()));
        let st = cp.wait().unwrap();
        assert!(!st.success(), "{name}: {st}");
        let _ = feeder.kill();
        let _ = feeder.wait();
        let task = finished_task(&m, name);
        assert_eq!(task["status"], "failed", "{task}");
        let reason = task["fail_reason"].as_str().unwrap_or_default();
        assert!(reason.contains("killed by signal"), "{name}: {reason}");
    }
    // A writer that gives up (exits non-zero) with the file still open.
    let st = python(
        "import sys, os\nf = open(sys.argv[1], 'wb')\nf.write(os.urandom(1 << 20)); f.flush()\nos._exit(3)",
        &[&dir.join("gave-up.img")],
    );
    assert_eq!(st.code(), Some(3));
    let task = finished_task(&m, "gave-up.img");
    assert!(
        task["fail_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("exited with status 3"),
        "{task}"
    );
    // A write refused (a rewrite of bytes already ingested) fails the close too.
    let st = python(
        "import sys, os\n\
         fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\n\
         os.write(fd, b'x' * 100000)\n\
         try:\n    os.pwrite(fd, b'y' * 10, 0)\nexcept OSError:\n    pass\n\
         try:\n    os.close(fd)\nexcept OSError:\n    sys.exit(0)\n\
         sys.exit(1)",
        &[&dir.join("rewritten.img")],
    );
    assert_eq!(
        st.code(),
        Some(0),
        "close() after a refused write must fail"
    );
    assert_eq!(finished_task(&m, "rewritten.img")["status"], "failed");
    // rsync's temporary name: nothing is committed at close, an unlink abandons it, and
    // the rename to the final name commits it.
    let st = python(
        "import sys, os\n\
         open(sys.argv[1], 'wb').write(os.urandom(1 << 20))\n\
         os.unlink(sys.argv[1])",
        &[&dir.join(".abandoned.img.Ab12Cd")],
    );
    assert!(st.success());
    let data = random_bytes(11, 2 << 20);
    fs::write(t.path("kept.img"), &data).unwrap();
    let tmp = dir.join(".kept.img.Zz9Yy8");
    fs::copy(t.path("kept.img"), &tmp).unwrap();
    assert!(
        t.points().as_array().unwrap().is_empty(),
        "a temporary name is not committed at close: {}",
        t.points()
    );
    fs::rename(&tmp, dir.join("kept.img")).unwrap();
    let points = t.points();
    let points = points.as_array().unwrap();
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0]["backups"][0]["name"], "kept.img");
    let id = points[0]["id"].as_str().unwrap();
    let got = m.p(&format!("v/{id}/kept.img"));
    wait_for("the point in the mount", || got.exists());
    assert_eq!(sha256(&got), sha256(&t.path("kept.img")));
    // A tar followed by trailing bytes after its end-of-archive blocks: GNU tar reads it,
    // and so does the ingest (the writer's close succeeds and the point is the tree).
    let src = t.path("tree");
    make_tricky_tree(&src);
    let tarball = t.path("trailing.tar");
    sh(&format!(
        "tar -C '{}' --xattrs --xattrs-include='*' -cf '{}' . && head -c 5000 /dev/urandom >> '{}'",
        src.display(),
        tarball.display(),
        tarball.display()
    ));
    sh(&format!("tar -tf '{}' >/dev/null", tarball.display()));
    let st = Command::new("cp").arg(&tarball).arg(&dir).status().unwrap();
    assert!(st.success());
    let points = t.points();
    let p = points
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["backups"][0]["name"] == "trailing")
        .expect("the tar with trailing bytes is a point")
        .clone();
    let got = m.p(&format!("v/{}/trailing", p["id"].as_str().unwrap()));
    wait_for("the point in the mount", || got.exists());
    assert_eq!(rsync_diff(&src, &got), "");
    // Of all these, two points: kept.img and trailing.
    assert_eq!(t.points().as_array().unwrap().len(), 2);
    drop(m);
    t.ok(&["check"]);
}

#[test]
fn a_truncated_archive_fails_close_and_leaves_no_point() {
    if !fuse_available() {
        return;
    }
    let t = TestRepo::new();
    let src = t.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), random_bytes(1, 3 << 20)).unwrap();
    let tarball = t.path("a.tar");
    sh(&format!(
        "tar -C '{}' -cf '{}' .",
        src.display(),
        tarball.display()
    ));
    let data = fs::read(&tarball).unwrap();
    fs::write(t.path("cut.tar"), &data[..data.len() / 2]).unwrap();
    let m = t.mount(&[], &[]);
    let out = Command::new("cp")
        .arg(t.path("cut.tar"))
        .arg(m.p(".vaultfs/incoming/v/"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "cp of a truncated archive succeeded");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Input/output error"));
    let tasks = task_files(&m);
    assert_eq!(tasks[0]["status"], "failed");
    assert!(
        tasks[0]["fail_reason"]
            .as_str()
            .unwrap()
            .contains("archive"),
        "{tasks:?}"
    );
    assert!(t.points().as_array().unwrap().is_empty());
    assert!(!m.p("v/latest").exists());
}

#[test]
fn images_rsync_and_parallel_ingests() {
    if !fuse_available() {
        return;
    }
    let t = TestRepo::new();
    let img = t.path("disk.img");
    let f = fs::File::create(&img).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&random_bytes(7, 1 << 20), 8 << 20).unwrap();
    drop(f);
    let other = t.path("other.raw");
    fs::write(&other, random_bytes(8, 5 << 20)).unwrap();
    let m = t.mount(&[], &[]);
    // Two ingests at once.
    let a = Command::new("cp")
        .arg(&img)
        .arg(m.p(".vaultfs/incoming/v/"))
        .spawn()
        .unwrap();
    let b = Command::new("dd")
        .arg(format!("if={}", other.display()))
        .arg(format!(
            "of={}",
            m.p(".vaultfs/incoming/v/other.raw").display()
        ))
        .arg("bs=128k")
        .arg("status=none")
        .spawn()
        .unwrap();
    assert!(a.wait_with_output().unwrap().status.success());
    assert!(b.wait_with_output().unwrap().status.success());
    // cp --sparse=always punches holes ahead of what it writes (fallocate PUNCH_HOLE).
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(&img)
        .arg(m.p(".vaultfs/incoming/v/punched.img"))
        .status()
        .unwrap();
    assert!(st.success());
    // One pwrite at 1 TiB: the hole before it costs nothing.
    let st = Command::new("python3")
        .arg("-c")
        .arg("import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT)\nos.pwrite(fd, b'far away', 1 << 40)\nos.close(fd)")
        .arg(m.p(".vaultfs/incoming/v/far.img"))
        .status()
        .unwrap();
    assert!(st.success());
    // rsync writes .name.XXXXXX and renames it.
    let st = Command::new("rsync")
        .arg(&other)
        .arg(m.p(".vaultfs/incoming/v/renamed.raw"))
        .status()
        .unwrap();
    assert!(st.success());
    let points = t.points();
    assert_eq!(points.as_array().unwrap().len(), 5, "{points}");
    let names: Vec<String> = points
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["backups"][0]["name"].as_str().unwrap().to_string())
        .collect();
    for n in ["disk.img", "other.raw", "punched.img", "renamed.raw"] {
        assert!(names.iter().any(|x| x == n), "{names:?}");
    }
    // Bit for bit, once the mount's vault listing has refreshed.
    for p in points.as_array().unwrap() {
        let id = p["id"].as_str().unwrap();
        wait_for(&format!("point {id} in the mount"), || {
            m.p(&format!("v/{id}")).exists()
        });
    }
    for p in points.as_array().unwrap() {
        let name = p["backups"][0]["name"].as_str().unwrap();
        let got = m.p(&format!("v/{}/{name}", p["id"].as_str().unwrap()));
        if name == "far.img" {
            assert_eq!(fs::metadata(&got).unwrap().len(), (1 << 40) + 8);
            let mut buf = [0u8; 8];
            fs::File::open(&got)
                .unwrap()
                .read_exact_at(&mut buf, 1 << 40)
                .unwrap();
            assert_eq!(&buf, b"far away");
            continue;
        }
        let want = if name.ends_with(".img") { &img } else { &other };
        assert_eq!(sha256(&got), sha256(want), "{name}");
    }
    for name in ["disk.img", "punched.img"] {
        let disk = points
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["backups"][0]["name"] == name)
            .unwrap();
        assert!(
            disk["backups"][0]["bytes_stored"].as_u64().unwrap() < 2 << 20,
            "holes of {name} were stored"
        );
    }
}

#[test]
fn vaults_are_made_and_removed_with_mkdir_and_rmdir() {
    if !fuse_available() {
        return;
    }
    let t = TestRepo::new();
    let m = t.mount(&[], &[]);
    fs::create_dir(m.p("fresh")).unwrap();
    let j: serde_json::Value = serde_json::from_str(&t.ok(&["vault", "list", "--json"])).unwrap();
    assert!(j.as_array().unwrap().iter().any(|v| v["name"] == "fresh"));
    assert!(m.p(".vaultfs/incoming/fresh").is_dir());
    let err = fs::create_dir(m.p("bad\u{1}name")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    let err = fs::create_dir(m.p("fresh")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    // Not empty: refused.
    fs::write(m.p(".vaultfs/incoming/fresh/x.img"), b"some bytes").unwrap();
    let err = fs::remove_dir(m.p("fresh")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
    // Points cannot be deleted without --allow-delete.
    let point = t.ok(&["points", "fresh", "--json"]);
    let point: serde_json::Value = serde_json::from_str(&point).unwrap();
    let id = point[0]["id"].as_str().unwrap().to_string();
    wait_for("the new point in the mount", || {
        m.p(&format!("fresh/{id}")).exists()
    });
    let err = fs::remove_dir(m.p(&format!("fresh/{id}"))).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    drop(m);
    let m = t.mount(&["--allow-delete"], &[]);
    fs::remove_dir(m.p(&format!("fresh/{id}"))).unwrap();
    fs::remove_dir(m.p("fresh")).unwrap();
    assert!(!m.p("fresh").exists());
    // Writes outside incoming/ stay read-only.
    let err = fs::write(m.p("v/file"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
}

#[test]
fn kill_9_of_the_daemon_during_an_ingest_leaves_no_partial_point() {
    if !fuse_available() {
        return;
    }
    let t = TestRepo::new();
    let mut m = t.mount(&[], &[]);
    // A writer that stays in the middle of its file: the first half, then it waits.
    let target = m.p(".vaultfs/incoming/v/slow.img");
    let mut f = fs::File::create(&target).unwrap();
    std::io::Write::write_all(&mut f, &random_bytes(3, 6 << 20)).unwrap();
    wait_for("the daemon to hold the first half", || {
        fs::metadata(&target).is_ok_and(|m| m.len() == 6 << 20)
    });
    let pid = m.child.as_ref().unwrap().id();
    Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let _ = m.child.take().unwrap().wait();
    drop(f);
    let log = m.log_text();
    drop(m);
    let points = t.points();
    assert!(points.as_array().unwrap().is_empty(), "{points}\n{log}");
    t.ok(&["check", "--read-data"]);
    // And the next ingest works.
    let m = t.mount(&[], &[]);
    fs::write(
        m.p(".vaultfs/incoming/v/after.img"),
        random_bytes(4, 1 << 20),
    )
    .unwrap();
    assert_eq!(t.points().as_array().unwrap().len(), 1);
}

/// Generated directories change: `.vaultfs/tasks/` and `.vaultfs/points/<vault>/` list
/// the tasks and points made after their first listing (the kernel must not keep a
/// listing of them as if they were immutable), and so does `vaultfs tasks MNT`.
#[test]
fn generated_listings_show_new_tasks_and_points() {
    if !fuse_available() {
        return;
    }
    let t = TestRepo::new();
    let m = t.mount(&[], &[]);
    let names = |rel: &str| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(m.p(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let ingest = |name: &str| {
        fs::write(m.p(&format!(".vaultfs/incoming/v/{name}")), name.as_bytes()).unwrap();
    };
    // `ls` from inside the directory: no path lookup refreshes its attributes first.
    let ls_in = |rel: &str| -> usize {
        let out = Command::new("ls").current_dir(m.p(rel)).output().unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    ingest("one.img");
    ingest("two.img");
    assert_eq!(names(".vaultfs/tasks").len(), 2);
    assert_eq!(names(".vaultfs/points/v").len(), 2);
    assert_eq!(ls_in(".vaultfs/tasks"), 2);
    assert_eq!(ls_in(".vaultfs/points/v"), 2);
    ingest("three.img");
    ingest("four.img");
    assert_eq!(ls_in(".vaultfs/tasks"), 4);
    assert_eq!(ls_in(".vaultfs/points/v"), 4);
    assert_eq!(
        names(".vaultfs/tasks").len(),
        4,
        "{:?}",
        names(".vaultfs/tasks")
    );
    assert_eq!(names(".vaultfs/points/v").len(), 4);
    assert_eq!(task_files(&m).len(), 4);
}
