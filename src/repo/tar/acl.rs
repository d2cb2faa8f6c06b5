//! POSIX ACLs of tar members (`SCHILY.acl.access` and `SCHILY.acl.default` pax records,
//! written by GNU tar `--acls`, bsdtar and star) as the `system.posix_acl_access` and
//! `system.posix_acl_default` xattrs a filesystem walk records, so both kinds of backup
//! restore ACLs the same way.
//!
//! The text is `acl_to_text`'s: entries `tag:qualifier:perms[:id]` separated by newlines
//! (GNU tar) or commas (libarchive), `#` starting a comment; a qualifier is a number, or
//! a name looked up on this host, as GNU tar's extraction does (libarchive's fourth field,
//! the numeric id, wins when present). The xattr is the kernel's layout: version 2, then
//! `(tag u16, perm u16, id u32)` little-endian entries sorted by tag and id.

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

/// The xattr value of an ACL text, or why it cannot be read.
pub fn to_xattr(text: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_string())?;
    let mut entries: Vec<(u16, u16, u32)> = Vec::new();
    for raw in text.split(['\n', ',']) {
        let e = raw.split('#').next().unwrap_or("").trim();
        if e.is_empty() {
            continue;
        }
        let f: Vec<&str> = e.split(':').collect();
        if f.len() < 3 || f.len() > 4 {
            return Err(format!("bad entry {e:?}"));
        }
        let (tag_s, qual, perm_s) = (f[0], f[1], f[2]);
        let named = !qual.is_empty();
        let tag = match (tag_s, named) {
            ("user" | "u", false) => USER_OBJ,
            ("user" | "u", true) => USER,
            ("group" | "g", false) => GROUP_OBJ,
            ("group" | "g", true) => GROUP,
            ("mask" | "m", false) => MASK,
            ("other" | "o", false) => OTHER,
            _ => return Err(format!("bad entry {e:?}")),
        };
        let id = if !named {
            UNDEFINED_ID
        } else if let Some(n) = f.get(3).and_then(|s| s.parse().ok()) {
            n
        } else if let Ok(n) = qual.parse() {
            n
        } else {
            lookup(tag, qual).ok_or_else(|| format!("unknown {tag_s} {qual:?} on this host"))?
        };
        entries.push((
            tag,
            perms(perm_s).ok_or_else(|| format!("bad permissions in {e:?}"))?,
            id,
        ));
    }
    entries.sort_unstable_by_key(|&(tag, _, id)| (tag, id));
    entries.dedup_by_key(|e| (e.0, e.2));
    let has = |t| entries.iter().any(|e| e.0 == t);
    let named = has(USER) || has(GROUP);
    if !has(USER_OBJ) || !has(GROUP_OBJ) || !has(OTHER) || (named && !has(MASK)) {
        return Err(
            "an ACL needs user::, group:: and other:: entries (and mask:: with named ones)".into(),
        );
    }
    let mut out = Vec::with_capacity(4 + entries.len() * 8);
    out.extend_from_slice(&VERSION.to_le_bytes());
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(out)
}

/// The permission bits an access ACL gives a file (as the kernel sets them with the
/// ACL): the owner's from `user::`, the group's from `mask::` if there is one, else from
/// `group::`, the others' from `other::`.
pub fn mode_bits(xattr: &[u8]) -> Option<u32> {
    let entries = xattr.get(4..)?.chunks_exact(8);
    let (mut user, mut group, mut mask, mut other) = (None, None, None, None);
    for e in entries {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u32::from(u16::from_le_bytes([e[2], e[3]]) & 7);
        match tag {
            USER_OBJ => user = Some(perm),
            GROUP_OBJ => group = Some(perm),
            MASK => mask = Some(perm),
            OTHER => other = Some(perm),
            _ => {}
        }
    }
    Some(user? << 6 | mask.or(group)? << 3 | other?)
}

fn perms(s: &str) -> Option<u16> {
    let mut p = 0;
    for c in s.chars() {
        p |= match c {
            'r' => 4,
            'w' => 2,
            'x' => 1,
            '-' => 0,
            _ => return None,
        };
    }
    (s.len() <= 3 || s.chars().all(|c| c == '-')).then_some(p)
}

fn lookup(tag: u16, name: &str) -> Option<u32> {
    if tag == USER {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    } else {
        nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gnu_and_libarchive_texts_give_the_kernel_layout() {
        // What `getfattr -e hex` shows for `setfacl -m u:1234:rwx,g:5678:r-x` on a 0644 file.
        let want = hex::decode(
            "0200000001000600ffffffff02000700d204000004000400ffffffff080005002e16000010000700ffffffff20000400ffffffff",
        )
        .unwrap();
        let gnu = b"user::rw-\nuser:1234:rwx\ngroup::r--\ngroup:5678:r-x\nmask::rwx\nother::r--\n";
        let bsd = b"user::rw-,group::r--,other::r--,user:1234:rwx,group:5678:r-x,mask::rwx";
        assert_eq!(to_xattr(gnu).unwrap(), want);
        assert_eq!(to_xattr(bsd).unwrap(), want);
        // libarchive's numeric fourth field wins over the name; comments are ignored.
        let named = b"user::rw-,user:nosuchuser-x:rwx:1234\t#effective:r--,group::r--,group:5678:r-x,mask::rwx,other::r--";
        assert_eq!(to_xattr(named).unwrap(), want);
        assert_eq!(
            to_xattr(b"user::rwx\nuser:root:r--\ngroup::r-x\nmask::r-x\nother::---\n").unwrap()
                [16..20],
            0u32.to_le_bytes()
        );
    }

    #[test]
    fn the_mask_gives_the_group_bits() {
        let x = to_xattr(b"user::rw-,group::r--,other::r--,user:1:rwx,mask::rwx").unwrap();
        assert_eq!(mode_bits(&x), Some(0o674));
        let minimal = to_xattr(b"user::rwx,group::r-x,other::---").unwrap();
        assert_eq!(mode_bits(&minimal), Some(0o750));
        assert_eq!(mode_bits(b"\x02\0\0\0"), None);
    }

    #[test]
    fn bad_texts_are_refused_with_the_entry() {
        for (text, why) in [
            (&b"user::rw-\nbogus::r--\n"[..], "bad entry \"bogus::r--\""),
            (b"user::rwz,group::r--,other::r--", "bad permissions"),
            (b"user::rw-,user:1:r--,group::r--,other::r--", "mask"),
            (b"user::rw-", "other::"),
            (
                b"user::rw-,user:no-such-user-here:r--,group::r--,mask::r--,other::r--",
                "unknown user",
            ),
        ] {
            let e = to_xattr(text).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
