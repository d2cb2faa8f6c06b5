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

    // A restore target under a file.
    t.ok(&["backup", "v", t.dir.path().join("a-file").to_str().unwrap()]);
    let target = file.join("sub");
    let err = t.fails(&["restore", "v", "latest", target.to_str().unwrap()]);
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
    assert!(err.contains(&*target.to_string_lossy()), "{err}");
}
