//! vaultfs as people who run backups use it: `mount --daemon` and `umount`, an fstab
//! line and `mount -t fuse.vaultfs` through the `mount.fuse.vaultfs` helper, the config
//! file with profiles and its precedence, the password command, shell completions and
//! man pages.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// A `vaultfs` command with a clean environment: none of the test harness's variables,
/// no config file but the one given.
fn bare(home: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"));
    c
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn pid_alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// A repository with one point: vault `v`, backup `src` holding `f`.
fn repo_with_a_file() -> (TestRepo, Vec<u8>) {
    let t = TestRepo::new();
    let content = random_bytes(7, 300_000);
    t.backup_one_file(&content);
    (t, content)
}

/// Unmounts whatever is left at `dir` when a test fails half-way.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.0)
                .status();
        }
    }
}

#[test]
fn daemon_mount_answers_at_once_and_umount_ends_it() {
    if !fuse_available() {
        return;
    }
    let (t, content) = repo_with_a_file();
    let mnt = t.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    let pid_file = t.path("vaultfs.pid");
    let log = t.path("daemon.log");
    let out = t
        .cmd()
        .arg("mount")
        .arg(&mnt)
        .args(["--daemon", "--no-schedule", "--pid-file"])
        .arg(&pid_file)
        .arg("--log-file")
        .arg(&log)
        .output()
        .unwrap();
    assert!(out.status.success(), "mount --daemon: {}", stderr(&out));
    // The parent returned: the mount answers now, with no wait.
    assert!(mounted(&mnt));
    assert_eq!(fs::read(mnt.join("v/latest/src/f")).unwrap(), content);
    let pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(pid));
    assert!(
        stderr(&out).contains(&format!("daemon pid {pid}")),
        "{}",
        stderr(&out)
    );

    // A second mount on the same directory fails with the reason, not a hang.
    let again = t
        .cmd()
        .arg("mount")
        .arg(&mnt)
        .arg("--daemon")
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already a mount point") || stderr(&again).contains("busy"),
        "{}",
        stderr(&again)
    );

    let out = t.cmd().arg("umount").arg(&mnt).output().unwrap();
    assert!(out.status.success(), "umount: {}", stderr(&out));
    assert!(!mounted(&mnt));
    assert!(!pid_alive(pid), "the daemon is still running after umount");
    assert!(!pid_file.exists(), "the pid file outlived the daemon");
    let not = t.cmd().arg("umount").arg(&mnt).output().unwrap();
    assert!(!not.status.success());
    assert!(
        stderr(&not).contains("is not a vaultfs mount"),
        "{}",
        stderr(&not)
    );
}

#[test]
fn a_daemon_that_cannot_start_says_why() {
    if !fuse_available() {
        return;
    }
    let (t, _) = repo_with_a_file();
    let mnt = t.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    let out = t
        .cmd()
        .env("VAULTFS_PASSWORD", "not the password")
        .arg("mount")
        .arg(&mnt)
        .args(["--daemon", "--no-schedule"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
    assert!(!mounted(&mnt));
    let out = t
        .cmd()
        .arg("mount")
        .arg(t.path("missing"))
        .args(["--daemon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[test]
fn umount_waits_for_an_ingest_and_force_aborts_one() {
    if !fuse_available() {
        return;
    }
    let (t, _) = repo_with_a_file();
    let mnt = t.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    let daemon = |t: &TestRepo| {
        let out = t
            .cmd()
            .arg("mount")
            .arg(&mnt)
            .args(["--daemon", "--no-schedule"])
            .output()
            .unwrap();
        assert!(out.status.success(), "mount --daemon: {}", stderr(&out));
    };
    daemon(&t);
    let before = t.point_ids().len();

    // A backup being written: umount waits, then fails saying what runs.
    let image = random_bytes(8, 2 << 20);
    let mut f = fs::File::create(mnt.join(".vaultfs/incoming/v/disk.img")).unwrap();
    f.write_all(&image[..1 << 20]).unwrap();
    let out = t
        .cmd()
        .arg("umount")
        .arg(&mnt)
        .args(["--timeout", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("still being written"),
        "{}",
        stderr(&out)
    );
    assert!(mounted(&mnt));
    // Once the writer closes, the umount goes through and the backup is committed.
    f.write_all(&image[1 << 20..]).unwrap();
    drop(f);
    let out = t.cmd().arg("umount").arg(&mnt).output().unwrap();
    assert!(out.status.success(), "umount: {}", stderr(&out));
    assert!(!mounted(&mnt));
    assert_eq!(t.point_ids().len(), before + 1);

    // --force: aborts the ingest in flight, commits nothing, leaves a sound repository.
    daemon(&t);
    let mut f = fs::File::create(mnt.join(".vaultfs/incoming/v/other.img")).unwrap();
    f.write_all(&image[..1 << 20]).unwrap();
    let out = t
        .cmd()
        .arg("umount")
        .arg(&mnt)
        .args(["--force", "--timeout", "20"])
        .output()
        .unwrap();
    assert!(out.status.success(), "umount --force: {}", stderr(&out));
    assert!(!mounted(&mnt));
    drop(f);
    assert_eq!(t.point_ids().len(), before + 1);
    t.ok(&["check"]);
}

/// Puts `mount.fuse.vaultfs` (this build's binary) where mount(8) looks for helpers,
/// and restores what was there on drop.
struct Helper {
    path: PathBuf,
    old: Option<PathBuf>,
}

impl Helper {
    fn install() -> Helper {
        let path = PathBuf::from("/sbin/mount.fuse.vaultfs");
        let old = fs::read_link(&path).ok();
        assert!(
            old.is_some() || !path.exists(),
            "{} exists and is not a symlink: not replacing it",
            path.display()
        );
        let _ = fs::remove_file(&path);
        std::os::unix::fs::symlink(bin(), &path).unwrap();
        Helper { path, old }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        if let Some(old) = &self.old {
            let _ = std::os::unix::fs::symlink(old, &self.path);
        }
    }
}

#[test]
fn fstab_lines_and_mount_t_fuse_vaultfs() {
    if !fuse_available() {
        return;
    }
    let (t, content) = repo_with_a_file();
    let _helper = Helper::install();
    let pw = t.path("password");
    fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let a = t.path("a");
    let b = t.path("b");
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let _ga = Unmount(a.clone());
    let _gb = Unmount(b.clone());

    // An fstab line, mounted by mount(8) from a table of its own.
    let fstab = t.path("fstab");
    fs::write(
        &fstab,
        format!(
            "# a vaultfs repository\n{} {} fuse.vaultfs noauto,_netdev,x-systemd.automount,password_file={},cache_size=64M,no_schedule,allow_other 0 0\n",
            t.repo.display(),
            a.display(),
            pw.display()
        ),
    )
    .unwrap();
    let out = Command::new("mount")
        .arg("-T")
        .arg(&fstab)
        .arg(&a)
        .env_remove("VAULTFS_PASSWORD")
        .output()
        .unwrap();
    assert!(out.status.success(), "mount -T fstab: {}", stderr(&out));
    assert!(mounted(&a));
    assert_eq!(fs::read(a.join("v/latest/src/f")).unwrap(), content);
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(a.to_str().unwrap()))
        .unwrap();
    assert!(
        line.contains(&format!("vaultfs:{}", t.repo.display())),
        "{line}"
    );
    assert!(line.contains("allow_other"), "{line}");

    // mount -t with -o options, the password from the environment.
    let out = Command::new("mount")
        .args(["-t", "fuse.vaultfs", "-o", "no_schedule,readahead=0"])
        .arg(&t.repo)
        .arg(&b)
        .env("VAULTFS_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mount -t fuse.vaultfs: {}",
        stderr(&out)
    );
    assert_eq!(fs::read(b.join("v/latest/src/f")).unwrap(), content);

    // A mount option vaultfs does not know is refused, naming it.
    let c = t.path("c");
    fs::create_dir(&c).unwrap();
    let out = Command::new("mount")
        .args(["-t", "fuse.vaultfs", "-o", "no_such_option"])
        .arg(&t.repo)
        .arg(&c)
        .env("VAULTFS_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no-such-option"), "{}", stderr(&out));
    assert!(!mounted(&c));

    // umount(8) ends a daemon as well as `vaultfs umount` does.
    let stats: serde_json::Value =
        serde_json::from_slice(&fs::read(a.join(".vaultfs/stats.json")).unwrap()).unwrap();
    let pid = stats["pid"].as_i64().unwrap() as i32;
    let out = Command::new("umount").arg(&a).output().unwrap();
    assert!(out.status.success(), "umount: {}", stderr(&out));
    wait_for("the daemon to exit", || !pid_alive(pid));
    t.ok(&[std::ffi::OsStr::new("umount"), b.as_os_str()]);
    assert!(!mounted(&b));
}

/// Two repositories with different passwords, and a config file naming them.
struct Configured {
    a: TestRepo,
    b: TestRepo,
    home: tempfile::TempDir,
    config: PathBuf,
}

fn configured() -> Configured {
    let a = TestRepo::new();
    let b = TestRepo::new();
    b.ok(&["vault", "create", "only-in-b"]);
    let home = tempfile::tempdir().unwrap();
    let pw_a = home.path().join("pw-a");
    fs::write(&pw_a, format!("{PASSWORD}\n")).unwrap();
    let pw_b = home.path().join("pw-b");
    fs::write(&pw_b, format!("{PASSWORD}\n")).unwrap();
    let config = home.path().join("config/vaultfs/config.toml");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    fs::write(
        &config,
        format!(
            "repository = \"{}\"\npassword_file = \"{}\"\n\n[profiles.other]\nrepository = \"{}\"\npassword_command = \"cat '{}'\"\n",
            a.repo.display(),
            pw_a.display(),
            b.repo.display(),
            pw_b.display()
        ),
    )
    .unwrap();
    Configured { a, b, home, config }
}

fn vault_names(o: &Output) -> Vec<String> {
    assert!(o.status.success(), "vault list: {}", stderr(o));
    let v: serde_json::Value = serde_json::from_str(&stdout(o)).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_config_file_its_profiles_and_what_beats_it() {
    let c = configured();
    let home = c.home.path();
    let list = |cmd: &mut Command| cmd.args(["vault", "list", "--json"]).output().unwrap();

    // Found in $XDG_CONFIG_HOME with no flag at all.
    assert_eq!(vault_names(&list(&mut bare(home))), ["v"]);
    // A profile, by flag and by environment; its password comes from a command.
    assert!(
        vault_names(&list(bare(home).args(["--profile", "other"])))
            .contains(&"only-in-b".to_string())
    );
    assert!(
        vault_names(&list(bare(home).env("VAULTFS_PROFILE", "other")))
            .contains(&"only-in-b".to_string())
    );
    // An explicit --config file, elsewhere.
    let moved = home.join("elsewhere.toml");
    fs::copy(&c.config, &moved).unwrap();
    let mut cmd = bare(home);
    cmd.env("XDG_CONFIG_HOME", home.join("none"));
    assert!(
        !list(&mut cmd).status.success(),
        "no config file: no repository"
    );
    let mut cmd = bare(home);
    cmd.env("XDG_CONFIG_HOME", home.join("none"))
        .arg("--config")
        .arg(&moved);
    assert_eq!(vault_names(&list(&mut cmd)), ["v"]);

    // The environment beats the file: the repository of VAULTFS_REPO...
    let out = list(bare(home).env("VAULTFS_REPO", &c.b.repo));
    assert!(vault_names(&out).contains(&"only-in-b".to_string()));
    // ...and a flag beats both.
    let out = list(
        bare(home)
            .env("VAULTFS_REPO", &c.b.repo)
            .arg("--repo")
            .arg(&c.a.repo),
    );
    assert_eq!(vault_names(&out), ["v"]);
    // A password in the environment beats the file's password_file, wrong or not.
    let out = list(bare(home).env("VAULTFS_PASSWORD", "wrong"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));
    let out = list(bare(home).args(["--password-command", "echo wrong"]));
    assert!(stderr(&out).contains("wrong password"), "{}", stderr(&out));

    // Errors name the file and what is wrong in it.
    let out = list(bare(home).args(["--profile", "nope"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no profile \"nope\" (it has: other)"),
        "{}",
        stderr(&out)
    );
    fs::write(&c.config, "repository = \"/x\"\nrepo = \"/y\"\n").unwrap();
    let out = list(&mut bare(home));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("config.toml") && stderr(&out).contains("repo"),
        "{}",
        stderr(&out)
    );
    // A password command that fails is an error, not a prompt or a fallback.
    fs::write(
        &c.config,
        format!(
            "repository = \"{}\"\npassword_command = \"exit 3\"\n",
            c.a.repo.display()
        ),
    )
    .unwrap();
    let out = list(&mut bare(home));
    assert!(
        stderr(&out).contains("the password command failed"),
        "{}",
        stderr(&out)
    );
    // Nothing of the password leaks into an error.
    assert!(!stderr(&out).contains(PASSWORD));
}

#[test]
fn config_mount_defaults_apply_unless_a_flag_says_otherwise() {
    if !fuse_available() {
        return;
    }
    let c = configured();
    let home = c.home.path();
    fs::write(
        &c.config,
        format!(
            "repository = \"{}\"\npassword_file = \"{}\"\n[mount]\ncache_size = \"48M\"\nno_schedule = true\nreadahead = 0\n",
            c.a.repo.display(),
            home.join("pw-a").display()
        ),
    )
    .unwrap();
    let mnt = home.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    for (flags, budget) in [
        (&[][..], 48u64 << 20),
        (&["--cache-size", "40M"][..], 40 << 20),
    ] {
        let out = bare(home)
            .arg("mount")
            .arg(&mnt)
            .arg("--daemon")
            .args(flags)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", stderr(&out));
        let stats: serde_json::Value =
            serde_json::from_slice(&fs::read(mnt.join(".vaultfs/stats.json")).unwrap()).unwrap();
        assert_eq!(stats["cache_limit"].as_u64(), Some(budget), "{stats}");
        let out = bare(home).arg("umount").arg(&mnt).output().unwrap();
        assert!(out.status.success(), "umount: {}", stderr(&out));
    }
}

/// `scripts/install.sh` end to end, into a prefix of its own (with the test's binary, so
/// no release build): the program, the mount helper that mount(8) runs, completions that
/// bash loads, man pages that man renders; the helper mounts a repository.
#[test]
fn install_script_puts_everything_where_it_belongs() {
    let t = TestRepo::new();
    let prefix = t.path("prefix");
    let sbin = t.path("sbin");
    let install = || {
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh"))
            .env("PREFIX", &prefix)
            .env("SBIN", &sbin)
            .env("VAULTFS_BIN", bin())
            .output()
            .unwrap()
    };
    let out = install();
    assert!(out.status.success(), "install.sh: {}", stderr(&out));
    assert!(
        stdout(&out).contains("installed vaultfs"),
        "{}",
        stdout(&out)
    );
    let installed = prefix.join("bin/vaultfs");
    let v = Command::new(&installed).arg("--version").output().unwrap();
    assert!(
        v.status.success() && stdout(&v).starts_with("vaultfs "),
        "{}",
        stdout(&v)
    );
    let helper = sbin.join("mount.fuse.vaultfs");
    assert_eq!(fs::read_link(&helper).unwrap(), installed);
    let bash = prefix.join("share/bash-completion/completions/vaultfs");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && complete -p vaultfs",
            bash.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(prefix.join("share/zsh/site-functions/_vaultfs").is_file());
    assert!(
        prefix
            .join("share/fish/vendor_completions.d/vaultfs.fish")
            .is_file()
    );
    let page = prefix.join("share/man/man1/vaultfs-mount.1");
    let out = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .output()
        .unwrap();
    assert!(out.status.success(), "man -l: {}", stderr(&out));
    assert!(stdout(&out).contains("--daemon"), "{}", stdout(&out));
    // Again over the installed files: install.sh is idempotent.
    let again = install();
    assert!(again.status.success(), "{}", stderr(&again));
    if !fuse_available() {
        return;
    }
    // The helper as mount(8) runs it: SOURCE DIR -o OPTIONS.
    let src = t.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"installed").unwrap();
    t.backup(&[&src]);
    let mnt = t.path("mnt");
    fs::create_dir(&mnt).unwrap();
    let _g = Unmount(mnt.clone());
    let out = Command::new(&helper)
        .arg(&t.repo)
        .arg(&mnt)
        .args(["-o", "rw,no_schedule,cache_size=32M"])
        .env("VAULTFS_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        helper.display(),
        stderr(&out)
    );
    assert_eq!(fs::read(mnt.join("v/latest/src/f")).unwrap(), b"installed");
    let out = Command::new(&installed)
        .arg("umount")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "umount: {}", stderr(&out));
    assert!(!mounted(&mnt));
}

#[test]
fn completions_and_man_pages() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("vaultfs.bash");
    let out = Command::new(bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    fs::write(&script, &out.stdout).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && complete -p vaultfs",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("vaultfs"), "{}", stdout(&out));
    // A reader that stops early (`| head`) ends the output quietly, without a panic.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' completions bash | head -c 10 >/dev/null",
            bin()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    for shell in ["zsh", "fish"] {
        let out = Command::new(bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && !out.stdout.is_empty());
    }

    let man = dir.path().join("man1");
    let out = Command::new(bin()).arg("man").arg(&man).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for page in [
        "vaultfs.1",
        "vaultfs-backup.1",
        "vaultfs-vault-create.1",
        "vaultfs-umount.1",
    ] {
        assert!(man.join(page).is_file(), "no {page}");
    }
    let out = Command::new("man")
        .arg("-l")
        .arg(man.join("vaultfs-backup.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    assert!(out.status.success(), "man -l: {}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("vaultfs backup") && text.contains("--exclude"),
        "{text}"
    );
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of one sample line `name{labels} value` of a scrape.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

fn scrape(port: u16) -> String {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn metrics_count_what_is_read_and_what_fails() {
    if !fuse_available() {
        return;
    }
    let (t, content) = repo_with_a_file();
    let port = free_port();
    let m = t.mount(
        &["--no-schedule", "--metrics", &format!("127.0.0.1:{port}")],
        &[],
    );
    wait_for("the metrics endpoint", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let before = scrape(port);
    let served = sample(&before, "vaultfs_bytes_served_total");
    assert_eq!(fs::read(m.p("v/latest/src/f")).unwrap(), content);
    let after = scrape(port);
    assert_eq!(
        sample(&after, "vaultfs_bytes_served_total") - served,
        content.len() as f64,
        "the bytes counted are the bytes read"
    );
    assert!(sample(&after, "vaultfs_fuse_operations_total{op=\"read\"}") >= 1.0);
    assert!(
        after.contains("vaultfs_fuse_operation_seconds_bucket{"),
        "{after}"
    );
    assert!(sample(&after, "vaultfs_store_requests_total{op=\"get_range\"}") >= 1.0);
    assert!(sample(&after, "vaultfs_cache_misses_total") >= 1.0);
    let stats: serde_json::Value =
        serde_json::from_slice(&fs::read(m.p(".vaultfs/stats.json")).unwrap()).unwrap();
    assert_eq!(
        stats["cache_misses"].as_f64(),
        Some(sample(&scrape(port), "vaultfs_cache_misses_total")),
        "stats.json and the metrics show the same counters"
    );

    // A store call that fails shows in the error counter, and the read fails with EIO.
    let src = t.path("src2");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("g"), random_bytes(9, 200_000)).unwrap();
    t.backup(&[&src]);
    let errors = sample(&scrape(port), "vaultfs_store_errors_total");
    // The tree is loaded (and kept) first; then the packs are cut short, the file's
    // data with them.
    wait_for("the new point in the mount", || {
        m.p("v/latest/src2/g").exists()
    });
    for p in t.objects("packs") {
        fs::write(p, b"").unwrap();
    }
    assert!(fs::read(m.p("v/latest/src2/g")).is_err());
    let after = scrape(port);
    assert!(
        sample(&after, "vaultfs_store_errors_total") > errors,
        "{after}"
    );
    assert!(
        sample(&after, "vaultfs_fuse_errors_total{op=\"read\"}") >= 1.0,
        "{after}"
    );
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{port}/other"),
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "404");
}

/// Runs `sh -c script` on a pseudo-terminal (util-linux `script`), so that stderr is a
/// terminal as in an interactive shell; returns what the terminal showed.
fn on_a_terminal(t: &TestRepo, script: &str) -> String {
    let out = Command::new("script")
        .args(["-q", "-e", "-c", script, "/dev/null"])
        .env("VAULTFS_REPO", t.location())
        .env("VAULTFS_PASSWORD", PASSWORD)
        .env("TERM", "xterm")
        .env("COLUMNS", "160")
        .current_dir(t.path(""))
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {}", stdout(&out));
    stdout(&out)
}

/// Progress bars on a terminal: prune (while it repacks) and `dump` to a file draw one
/// with their name, the bytes and an ETA; `--quiet` draws none; off a terminal there is
/// none either (every other test).
#[test]
fn long_commands_draw_progress_bars_on_a_terminal() {
    let t = TestRepo::new();
    let src = t.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        fs::write(src.join(format!("f{i}")), random_bytes(100 + i, 600_000)).unwrap();
    }
    t.backup(&[&src]);
    fs::remove_file(src.join("f0")).unwrap();
    fs::remove_file(src.join("f1")).unwrap();
    t.backup(&[&src]);
    t.ok(&["forget", "v", "--keep-last", "1"]);
    let v = bin();
    let shown = on_a_terminal(&t, &format!("{v} prune --max-unused 0"));
    assert!(shown.contains("prune ["), "no prune bar: {shown:?}");
    assert!(shown.contains("ETA"), "no ETA: {shown:?}");
    assert!(shown.contains("packs"), "{shown:?}");
    let shown = on_a_terminal(&t, &format!("{v} dump v latest src > out.tar"));
    assert!(shown.contains("dump ["), "no dump bar: {shown:?}");
    let listed = Command::new("tar")
        .arg("-tf")
        .arg(t.path("out.tar"))
        .output()
        .unwrap();
    assert!(stdout(&listed).contains("src/f3"), "{}", stdout(&listed));
    let shown = on_a_terminal(&t, &format!("{v} --quiet dump v latest src/f3 > f3"));
    assert!(!shown.contains("dump"), "--quiet drew: {shown:?}");
    assert_eq!(
        fs::read(t.path("f3")).unwrap(),
        fs::read(src.join("f3")).unwrap()
    );
}
