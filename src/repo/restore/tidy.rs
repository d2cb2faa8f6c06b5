//! What a restore removes from its target: the temporaries an interrupted `--overwrite`
//! left (`.vaultfs-restore-` and 16 hex digits, nothing else), and with `--delete` the
//! entries of a restored directory that the backup does not hold.
//!
//! Everything is reached through the descriptor of a directory the restore holds open:
//! entries are listed from it, removed with `unlinkat` relative to it, and a directory
//! being removed is opened relative to its parent with `O_NOFOLLOW | O_DIRECTORY` (a
//! symlink is unlinked, never entered). A directory on another file system (a mount
//! point inside the target) is left alone with a warning.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType};

use super::super::format::printable_path;
use super::open_dir;

/// The prefix of the temporary names of `--overwrite`.
pub const TEMP_PREFIX: &str = ".vaultfs-restore-";

/// Whether `name` is exactly a temporary name of an `--overwrite` restore.
pub fn is_temp_name(name: &[u8]) -> bool {
    name.strip_prefix(TEMP_PREFIX.as_bytes())
        .is_some_and(|h| h.len() == 16 && h.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The names in a directory (but `.` and `..`), with their types where the file system
/// tells them.
pub fn entries(dir: &File) -> std::io::Result<Vec<(OsString, Option<FileType>)>> {
    let mut out = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let ft = match e.file_type() {
            FileType::Unknown => None,
            ft => Some(ft),
        };
        out.push((OsStr::from_bytes(name).to_os_string(), ft));
    }
    Ok(out)
}

/// The type of `name` in `dir`, not following a symlink (None when it is gone).
pub fn type_at(dir: &File, name: &OsStr) -> std::io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes the leftover temporaries of an interrupted `--overwrite` in `dir` (never a
/// directory, whatever its name); returns how many went.
pub fn remove_temporaries(dir: &File) -> std::io::Result<u64> {
    let mut n = 0;
    for (name, ft) in entries(dir)? {
        if !is_temp_name(name.as_bytes()) {
            continue;
        }
        let ft = match ft {
            Some(ft) => Some(ft),
            None => type_at(dir, &name)?,
        };
        if matches!(ft, None | Some(FileType::Directory)) {
            continue;
        }
        match rustix::fs::unlinkat(dir, &name, AtFlags::empty()) {
            Ok(()) => n += 1,
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

/// Removes `name` from `parent`, a directory with everything under it; returns how many
/// entries went (the directory and each entry under it count one). `path` is for
/// messages.
pub fn remove_tree(parent: &File, name: &OsStr, path: &Path) -> std::io::Result<u64> {
    let Some(ft) = type_at(parent, name)? else {
        return Ok(0);
    };
    if ft != FileType::Directory {
        return match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
            Ok(()) => Ok(1),
            Err(rustix::io::Errno::NOENT) => Ok(0),
            Err(e) => Err(e.into()),
        };
    }
    // A symlink swapped in since the stat fails the open (ELOOP), never entered.
    let dir = open_dir(parent, name, true)?;
    let (here, there) = (rustix::fs::fstat(parent)?, rustix::fs::fstat(&dir)?);
    if here.st_dev != there.st_dev {
        eprintln!(
            "warning: {}: not deleted: another file system is mounted there",
            printable_path(path)
        );
        return Ok(0);
    }
    let mut n = 0;
    for (child, _) in entries(&dir)? {
        n += remove_tree(&dir, &child, &path.join(&child))?;
    }
    drop(dir);
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) => Ok(n + 1),
        Err(rustix::io::Errno::NOENT) => Ok(n),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_exactly_the_pattern() {
        assert!(is_temp_name(b".vaultfs-restore-0123456789abcdef"));
        for other in [
            &b".vaultfs-restore-0123456789abcde"[..],
            b".vaultfs-restore-0123456789abcdef0",
            b".vaultfs-restore-0123456789ABCDEF",
            b".vaultfs-restore-",
            b"vaultfs-restore-0123456789abcdef",
            b".vaultfs-restore-0123456789abcdeg",
        ] {
            assert!(!is_temp_name(other), "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn trees_go_through_descriptors_and_symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let outside = root.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        let t = root.join("t");
        std::fs::create_dir_all(t.join("d/e")).unwrap();
        std::fs::write(t.join("d/e/f"), b"f").unwrap();
        std::os::unix::fs::symlink(&outside, t.join("d/link")).unwrap();
        std::fs::write(t.join(".vaultfs-restore-0123456789abcdef"), b"x").unwrap();
        std::fs::write(t.join(".vaultfs-restore-mine"), b"x").unwrap();
        std::fs::create_dir(t.join(".vaultfs-restore-fedcba9876543210")).unwrap();
        let dir = open_dir(rustix::fs::CWD, t.as_os_str(), false).unwrap();
        assert_eq!(remove_temporaries(&dir).unwrap(), 1);
        assert!(t.join(".vaultfs-restore-mine").exists());
        assert!(t.join(".vaultfs-restore-fedcba9876543210").is_dir());
        // d, d/e, d/e/f, d/link.
        assert_eq!(remove_tree(&dir, OsStr::new("d"), &t.join("d")).unwrap(), 4);
        assert!(!t.join("d").exists());
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"k");
        assert_eq!(remove_tree(&dir, OsStr::new("gone"), &t).unwrap(), 0);
    }
}
