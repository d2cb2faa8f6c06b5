//! A mount of an S3 repository whose server stalls: the RGW process (from
//! `scripts/s3-rgw.sh`) is stopped with SIGSTOP, so that connections are accepted by the
//! kernel and never answered. Reads that need the server must fail with EIO within the
//! configured deadlines (never hang), `fusermount3 -u` must work, and once the server is
//! continued (SIGCONT) reads succeed again.
//!
//! A test binary of its own: cargo runs test binaries one after another, so no other S3
//! test is running while the server is stopped. The server is always continued by a drop
//! guard, also when an assertion fails.
//!
//! Needs `VAULTFS_TEST_S3_ENDPOINT` served by a `radosgw` process of this machine (the
//! one listening on the endpoint's port is stopped, never another). Without them the test
//! fails, unless `VAULTFS_TEST_SKIP` holds `s3`, `fuse` or `s3-stall` (then the skip is
//! recorded, see `tests/common`).

mod common;

use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

use rustix::process::{Pid, Signal, kill_process};

/// The longest a failing read may take with the mount's settings below (2 attempts of
/// 2 s within an operation deadline of 6 s), with a wide margin for a loaded machine.
const EIO_DEADLINE: Duration = Duration::from_secs(20);

/// The S3 settings of the mount: short deadlines, so that a stall is seen quickly.
const STALL_ENV: [(&str, &str); 3] = [
    ("VAULTFS_S3_TIMEOUT", "2"),
    ("VAULTFS_S3_MAX_ATTEMPTS", "2"),
    ("VAULTFS_S3_OPERATION_TIMEOUT", "6"),
];

fn is_radosgw(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "radosgw")
}

/// The pid of the `radosgw` process that listens on the endpoint's port: found through
/// the listening sockets of /proc/net/tcp and the processes' descriptors, so that the test
/// never stops another server than the one it uses (several may run on one machine).
fn rgw_pid(endpoint: &str) -> Result<i32, String> {
    let port: u16 = endpoint
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("no port in {endpoint}"))?;
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // State 0A is LISTEN; field 9 is the socket's inode.
            if f.len() > 9 && f[3] == "0A" && local_port == Some(port) {
                sockets.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if sockets.is_empty() {
        return Err(format!("nothing listens on port {port} here"));
    }
    for e in fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))? {
        let Some(pid) = e
            .ok()
            .and_then(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let listens = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .is_ok_and(|l| sockets.iter().any(|s| l.as_os_str() == s.as_str()))
        });
        if listens {
            return if is_radosgw(pid) {
                Ok(pid)
            } else {
                Err(format!(
                    "port {port} is served by pid {pid}, which is not radosgw"
                ))
            };
        }
    }
    Err(format!("no process of this machine listens on port {port}"))
}

fn signal(pid: i32, sig: Signal) {
    kill_process(Pid::from_raw(pid).unwrap(), sig)
        .unwrap_or_else(|e| panic!("kill -{sig:?} {pid}: {e}"));
}

/// Whether every thread of `pid` is stopped (state `T` in its stat line).
fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
            // "tid (comm) STATE ...": the comm may hold spaces and parentheses.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "T")
        })
    })
}

/// RGW stopped with SIGSTOP until dropped; the drop sends SIGCONT, on every path.
struct Stopped {
    pid: i32,
    since: Instant,
}

impl Stopped {
    /// Stops the process and waits until every one of its threads is stopped.
    fn new(pid: i32) -> Stopped {
        signal(pid, Signal::STOP);
        let s = Stopped {
            pid,
            since: Instant::now(),
        };
        wait_for("radosgw to stop", || all_threads_stopped(pid));
        s
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill_process(Pid::from_raw(self.pid).unwrap(), Signal::CONT);
        eprintln!("radosgw continued after {:?} stopped", self.since.elapsed());
    }
}

/// Runs `f` on a thread and waits at most `limit` for its answer; returns it and the time
/// it took. Panics when `f` does not return in time (the guards then unstop the server and
/// unmount, which frees the thread).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> (T, Duration) {
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => (v, t0.elapsed()),
        Err(_) => panic!("{what}: no answer within {limit:?} (a hang)"),
    }
}

/// Reads a whole file; the error's errno when it fails.
fn read_all(p: PathBuf) -> Result<Vec<u8>, i32> {
    fs::read(&p).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

#[test]
fn stalled_server_gives_eio_in_time_unmounts_and_recovers() {
    if skip_requested("s3-stall") {
        record_skip("s3-stall", "stops the local radosgw with SIGSTOP");
        return;
    }
    let Some(endpoint) = s3_endpoint() else {
        return;
    };
    if !fuse_available() {
        return;
    }
    let pid = rgw_pid(&endpoint).unwrap_or_else(|why| {
        panic!(
            "the stall test stops the radosgw process of {endpoint} and cannot find it: \
             {why} (VAULTFS_TEST_SKIP=s3-stall skips this test)"
        )
    });
    // Declared before every guard below, so that it is dropped (and its objects deleted)
    // after the server is continued.
    let t = TestRepo::create(TestRepo::s3_target(&unique_bucket("stall")), 1);
    let src = t.path("src");
    fs::create_dir_all(&src).unwrap();
    let n = 6;
    let data: Vec<Vec<u8>> = (0..n).map(|i| random_bytes(50 + i, 2 << 20)).collect();
    for (i, d) in data.iter().enumerate() {
        fs::write(src.join(format!("f{i}")), d).unwrap();
    }
    t.ok(&["backup".as_ref(), "v".as_ref(), src.as_os_str()]);
    let point = t.points()[0]["id"].as_str().unwrap().to_string();
    let rel = |i: usize| format!("v/{point}/src/f{i}");

    // ---- first mount: EIO while stopped, reads again once continued ----
    let m = t.mount(&[], &STALL_ENV);
    assert_eq!(fs::read(m.p(&rel(0))).unwrap(), data[0]);
    assert_eq!(
        fs::read_dir(m.p(&format!("v/{point}/src")))
            .unwrap()
            .count(),
        n as usize
    );
    for i in 1..n as usize {
        fs::metadata(m.p(&rel(i))).unwrap(); // lookups done while the server answers
    }
    let mut held = fs::File::open(m.p(&rel(1))).unwrap();
    {
        let _stopped = Stopped::new(pid);

        // A read through a handle opened before the stall.
        let (res, took) = within(Duration::from_secs(90), "read of an open file", move || {
            let mut buf = vec![0u8; 1 << 20];
            let r = held.read(&mut buf).map_err(|e| e.raw_os_error());
            drop(held);
            r
        });
        eprintln!("stalled: read of an open file failed in {took:?}: {res:?}");
        assert_eq!(res.unwrap_err(), Some(libc::EIO));
        assert!(took < EIO_DEADLINE, "EIO took {took:?}");

        // `cat` of another file, by path.
        let f2 = m.p(&rel(2));
        let (out, took) = within(Duration::from_secs(90), "cat", move || {
            Command::new("cat")
                .arg(&f2)
                .stdout(Stdio::null())
                .output()
                .unwrap()
        });
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("stalled: cat failed in {took:?}: {}", err.trim());
        assert!(
            !out.status.success() && err.contains("Input/output error"),
            "{err}"
        );
        assert!(took < EIO_DEADLINE, "cat took {took:?}");

        // A file read before the stall: a figure, not a requirement (its chunks are in the
        // memory cache, but the kernel may ask for fresh entries).
        let f0 = m.p(&rel(0));
        let (res, took) = within(
            Duration::from_secs(90),
            "read of a cached file",
            move || read_all(f0).map(|d| d.len()),
        );
        eprintln!("stalled: read of the cached f0 gave {res:?} in {took:?}");
        // The daemon is still alive and mounted.
        assert!(mounted(&m.dir));
    }
    // Continued: the same mount serves every file, those that failed included, once the
    // mount has forgotten the failures (it remembers a chunk's store failure for 2 s, so
    // that the kernel's immediate retry of a failed read does not wait a second time).
    // A sleep, not a wait on a condition: the 2 s must really pass (what is tested is
    // that the mount serves again once they have; the failures all happened before the
    // SIGCONT above).
    std::thread::sleep(Duration::from_millis(2500));
    let t0 = Instant::now();
    for (i, d) in data.iter().enumerate() {
        let (res, _) = within(Duration::from_secs(90), "read after SIGCONT", {
            let p = m.p(&rel(i));
            move || read_all(p)
        });
        assert!(res.as_ref() == Ok(d), "f{i} after SIGCONT: {:?}", res.err());
    }
    eprintln!("after SIGCONT every file read in {:?}", t0.elapsed());
    let log = m.log_text();
    eprintln!("the mount's log:\n{log}");
    // One line per failed read names the file, and says the store timed out, with the
    // deadlines of STALL_ENV.
    let lines: Vec<String> = log.lines().map(common::strip_ansi).collect();
    for f in [1, 2] {
        let file = format!("file={}", rel(f));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("read failed at offset 0: get range packs/")
                    && l.contains(": timed out (attempt timeout 2s, operation timeout 6s)")
                    && l.contains(&file)),
            "no log line says that the read of f{f} timed out: {log}"
        );
    }
    drop(m);

    // ---- second mount: fusermount3 -u while the server is stopped ----
    let mut m = t.mount(&[], &STALL_ENV);
    assert_eq!(fs::read(m.p(&rel(3))).unwrap(), data[3]);
    {
        let _stopped = Stopped::new(pid);
        let (res, took) = within(Duration::from_secs(90), "read", {
            let p = m.p(&rel(4));
            move || read_all(p).map(|d| d.len())
        });
        assert_eq!(res, Err(libc::EIO), "took {took:?}");
        let dir = m.dir.clone();
        let (out, took) = within(Duration::from_secs(60), "fusermount3 -u", move || {
            Command::new("fusermount3")
                .arg("-u")
                .arg(&dir)
                .output()
                .unwrap()
        });
        assert!(
            out.status.success(),
            "fusermount3 -u while stalled: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t0 = Instant::now();
        let st = m.wait_exit(Duration::from_secs(30));
        eprintln!(
            "stalled: fusermount3 -u in {took:?}, daemon exited {st} after {:?} more",
            t0.elapsed()
        );
        assert!(st.success(), "mount exited with {st}: {}", m.log_text());
        assert!(!mounted(&m.dir));
    }

    // ---- continued: a fresh mount reads everything, and the repository is whole ----
    let m = t.mount(&[], &[]);
    for (i, d) in data.iter().enumerate() {
        assert!(fs::read(m.p(&rel(i))).unwrap() == *d, "f{i} after remount");
    }
    drop(m);
    t.ok(&["check", "--read-data"]);
}
