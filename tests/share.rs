//! Sharing a vault on a real mount with `--allow-other`: other local users (run with
//! `setpriv`) see a vault only when they are its members, by uid, by group or by a
//! supplementary group; others get EACCES on it and do not see it listed, at the root
//! or in `.vaultfs/`; file modes inside backups still hold; nobody but the mount's owner
//! and root writes into `incoming/`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use common::{TestRepo, fuse_available, wait_for};

/// Runs `sh -c script` as `uid:gid` with `groups` as its supplementary groups.
fn as_user(uid: u32, gid: u32, groups: &[u32], script: &str) -> Output {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        let g: Vec<String> = groups.iter().map(u32::to_string).collect();
        c.arg(format!("--groups={}", g.join(",")));
    }
    c.args(["sh", "-c", script]).output().expect("run setpriv")
}

fn stdout_as(uid: u32, gid: u32, groups: &[u32], script: &str) -> String {
    let out = as_user(uid, gid, groups, script);
    assert!(
        out.status.success(),
        "{script} as {uid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The script fails as `uid` with "Permission denied" (EACCES).
fn denied(uid: u32, gid: u32, script: &str) {
    let out = as_user(uid, gid, &[], script);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Permission denied"),
        "{script} as {uid} should get EACCES: status {}, stdout {:?}, stderr {err}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

fn names(listing: &str) -> Vec<&str> {
    listing.split_whitespace().collect()
}

const MEMBER: u32 = 4242;
const GROUP: u32 = 4343;
const OTHER: u32 = 4444;

#[test]
fn shared_vaults_are_seen_by_their_members_only() {
    if !fuse_available() {
        return;
    }
    if !rustix::process::getuid().is_root() {
        common::record_skip("fuse", "needs root, to act as other users with setpriv");
        return;
    }
    let t = TestRepo::new();
    // Other users must reach the mount point inside the test's directory.
    std::fs::set_permissions(t.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = t.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"for the members\n").unwrap();
    std::fs::write(src.join("secret"), b"root only\n").unwrap();
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    t.backup(&[&src]);
    t.ok(&["vault", "share", "v", "--uid", &MEMBER.to_string()]);
    t.ok(&["vault", "create", "team"]);
    t.ok(&["backup", "team", src.to_str().unwrap()]);
    t.ok(&["vault", "share", "team", "--gid", &GROUP.to_string()]);
    t.ok(&["vault", "create", "private"]);
    t.ok(&["backup", "private", src.to_str().unwrap()]);
    let show: serde_json::Value =
        serde_json::from_str(&t.ok(&["vault", "show", "v", "--json"])).unwrap();
    assert_eq!(show["members"]["uids"], serde_json::json!([MEMBER]));
    assert!(
        t.ok(&["vault", "show", "v"])
            .contains(&format!("uid {MEMBER}"))
    );

    let m = t.mount(&["--allow-other"], &[]);
    let mnt = m.dir.to_str().unwrap().to_string();
    let root_sees = names(&common::sh(&format!("ls '{mnt}'")))
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert_eq!(root_sees, ["private", "team", "v"]);

    // The member reads v, and only v.
    assert_eq!(
        names(&stdout_as(MEMBER, MEMBER, &[], &format!("ls '{mnt}'"))),
        ["v"]
    );
    assert_eq!(
        stdout_as(MEMBER, MEMBER, &[], &format!("cat '{mnt}/v/latest/src/f'")),
        "for the members\n"
    );
    stdout_as(
        MEMBER,
        MEMBER,
        &[],
        &format!("stat '{mnt}/v' '{mnt}/v/latest/src'"),
    );
    assert_eq!(
        names(&stdout_as(
            MEMBER,
            MEMBER,
            &[],
            &format!("ls '{mnt}/.vaultfs/vaults'")
        )),
        ["v.json"]
    );
    for dir in ["points", "incoming", "versions", "changes", "deleted"] {
        assert_eq!(
            names(&stdout_as(
                MEMBER,
                MEMBER,
                &[],
                &format!("ls '{mnt}/.vaultfs/{dir}'")
            )),
            ["v"],
            "{dir}"
        );
    }
    let json = stdout_as(
        MEMBER,
        MEMBER,
        &[],
        &format!("cat '{mnt}/.vaultfs/vaults/v.json'"),
    );
    assert!(json.contains(&MEMBER.to_string()), "{json}");
    // File modes inside the backup still hold (default_permissions).
    denied(MEMBER, MEMBER, &format!("cat '{mnt}/v/latest/src/secret'"));
    // Others' vaults: EACCES, as for a user who is not a member at all.
    denied(MEMBER, MEMBER, &format!("ls '{mnt}/private'"));
    denied(MEMBER, MEMBER, &format!("stat '{mnt}/private'"));
    denied(MEMBER, MEMBER, &format!("cat '{mnt}/private/latest/src/f'"));
    denied(
        MEMBER,
        MEMBER,
        &format!("cat '{mnt}/.vaultfs/vaults/private.json'"),
    );
    denied(
        MEMBER,
        MEMBER,
        &format!("ls '{mnt}/.vaultfs/points/private'"),
    );
    denied(
        MEMBER,
        MEMBER,
        &format!("ls '{mnt}/.vaultfs/versions/private'"),
    );

    // Right after the member's reads (the kernel holds their entries): a non-member gets
    // EACCES on everything of v and sees no vault.
    assert!(names(&stdout_as(OTHER, OTHER, &[], &format!("ls '{mnt}'"))).is_empty());
    assert!(
        names(&stdout_as(
            OTHER,
            OTHER,
            &[],
            &format!("ls '{mnt}/.vaultfs/vaults'")
        ))
        .is_empty()
    );
    denied(OTHER, OTHER, &format!("ls '{mnt}/v'"));
    denied(OTHER, OTHER, &format!("stat '{mnt}/v'"));
    denied(OTHER, OTHER, &format!("cat '{mnt}/v/latest/src/f'"));
    denied(OTHER, OTHER, &format!("stat '{mnt}/v/latest/src'"));
    denied(OTHER, OTHER, &format!("cat '{mnt}/.vaultfs/vaults/v.json'"));
    denied(OTHER, OTHER, &format!("ls '{mnt}/.vaultfs/changes/v'"));

    // A group member, by its group or by a supplementary group.
    assert_eq!(
        names(&stdout_as(4445, GROUP, &[], &format!("ls '{mnt}'"))),
        ["team"]
    );
    assert_eq!(
        names(&stdout_as(4446, 4446, &[GROUP], &format!("ls '{mnt}'"))),
        ["team"]
    );
    assert_eq!(
        stdout_as(
            4446,
            4446,
            &[GROUP],
            &format!("cat '{mnt}/team/latest/src/f'")
        ),
        "for the members\n"
    );
    denied(4447, 4447, &format!("ls '{mnt}/team'"));

    // Nobody but the owner (root here) writes into incoming/: not even a member.
    let img = t.path("img");
    std::fs::write(&img, vec![7u8; 4096]).unwrap();
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644)).unwrap();
    let img = img.to_str().unwrap();
    denied(
        MEMBER,
        MEMBER,
        &format!("cp '{img}' '{mnt}/.vaultfs/incoming/v/'"),
    );
    denied(
        OTHER,
        OTHER,
        &format!("cp '{img}' '{mnt}/.vaultfs/incoming/v/'"),
    );
    denied(MEMBER, MEMBER, &format!("mkdir '{mnt}/newvault'"));
    assert_eq!(t.point_ids().len(), 1);
    common::sh(&format!("cp '{img}' '{mnt}/.vaultfs/incoming/v/'"));
    assert_eq!(t.point_ids().len(), 2);

    // Unsharing applies to the running mount within its refresh.
    t.ok(&["vault", "unshare", "v", "--uid", &MEMBER.to_string()]);
    wait_for("the member to lose v", || {
        !as_user(MEMBER, MEMBER, &[], &format!("stat '{mnt}/v'"))
            .status
            .success()
    });
    denied(MEMBER, MEMBER, &format!("cat '{mnt}/v/latest/src/f'"));
    assert!(names(&stdout_as(MEMBER, MEMBER, &[], &format!("ls '{mnt}'"))).is_empty());
    drop(m);
}
