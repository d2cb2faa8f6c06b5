//! One 512-byte tar header block, read the way GNU tar 1.34 reads it.
//!
//! Every field is decoded by hand rather than through the `tar` crate, because GNU tar
//! accepts headers that the crate refuses: numeric fields that are empty, blank or all
//! NUL (read as 0; every `.crate` file has an all-NUL uid), octal followed by junk after a
//! space or NUL, base-256 numbers, and checksums computed over signed bytes by historic
//! tars. Nothing here panics on any input: every field is a slice of a fixed-size block.

/// The size of a tar block.
pub const BLOCK: usize = 512;

/// An old GNU sparse header's map entries `(offset, numbytes)`, whether extension
/// blocks follow, and the real size of the file.
pub type OldSparse = (Vec<(u64, u64)>, bool, u64);

/// The fields of one header block that a member is made of.
#[derive(Debug, Clone)]
pub struct Header {
    /// The name (ustar prefix joined in when the header is POSIX ustar).
    pub name: Vec<u8>,
    pub typeflag: u8,
    pub mode: u64,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: i64,
    pub linkname: Vec<u8>,
    pub devmajor: u64,
    pub devminor: u64,
    /// An old GNU sparse header (`S`): its map entries, whether extension blocks
    /// follow, and the real size of the file.
    pub old_sparse: Option<OldSparse>,
}

/// Why a header block could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    Checksum,
    Field(&'static str),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Checksum => {
                f.write_str("bad header checksum (damaged, or not a tar archive)")
            }
            HeaderError::Field(name) => write!(f, "invalid numeric field `{name}`"),
        }
    }
}

/// The bytes of a NUL-terminated (or full-width) string field.
pub fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(i) => &field[..i],
        None => field,
    }
}

/// Decodes a numeric field as GNU tar does: base-256 when the top bit of the first byte
/// is set, otherwise octal after one optional NUL and any spaces, ended by the field's
/// end, a NUL or a space. An empty, blank or all-NUL field is 0.
pub fn parse_num(field: &[u8]) -> Option<i64> {
    let first = *field.first()?;
    if first & 0x80 != 0 {
        if field.len() > 16 {
            return None;
        }
        // Two's complement over the field, the sign in bit 6 of the first byte.
        let mut v: i128 = if first & 0x40 != 0 { -1 } else { 0 };
        v = (v << 7) | (first & 0x7f) as i128;
        for &b in &field[1..] {
            v = (v << 8) | b as i128;
        }
        return i64::try_from(v).ok();
    }
    let mut i = usize::from(first == 0);
    while i < field.len() && field[i] == b' ' {
        i += 1;
    }
    let mut v: i64 = 0;
    while i < field.len() && (b'0'..=b'7').contains(&field[i]) {
        v = v.checked_mul(8)?.checked_add((field[i] - b'0') as i64)?;
        i += 1;
    }
    match field.get(i) {
        None | Some(0) | Some(b' ') => Some(v),
        Some(_) => None,
    }
}

fn unsigned(field: &[u8], name: &'static str) -> Result<u64, HeaderError> {
    parse_num(field)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or(HeaderError::Field(name))
}

/// Whether the block is all zeros (an end-of-archive block).
pub fn is_zero_block(block: &[u8; BLOCK]) -> bool {
    block.iter().all(|&b| b == 0)
}

/// Checks the header checksum, accepting sums over unsigned bytes (POSIX) and over
/// signed bytes (historic Sun and BSD tars).
fn checksum_ok(block: &[u8; BLOCK]) -> bool {
    let Some(stored) = parse_num(&block[148..156]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as i64;
        signed += b as i8 as i64;
    }
    stored == unsigned || stored == signed
}

impl Header {
    /// Decodes a non-zero header block.
    pub fn parse(block: &[u8; BLOCK]) -> Result<Header, HeaderError> {
        if !checksum_ok(block) {
            return Err(HeaderError::Checksum);
        }
        let magic = &block[257..265];
        let posix = &magic[..6] == b"ustar\0";
        let mut name = cstr(&block[0..100]).to_vec();
        if posix {
            let prefix = cstr(&block[345..500]);
            if !prefix.is_empty() {
                let mut full = prefix.to_vec();
                full.push(b'/');
                full.extend_from_slice(&name);
                name = full;
            }
        }
        let typeflag = block[156];
        let device = matches!(typeflag, b'3' | b'4');
        Ok(Header {
            name,
            typeflag,
            mode: unsigned(&block[100..108], "mode")?,
            uid: unsigned(&block[108..116], "uid")?,
            gid: unsigned(&block[116..124], "gid")?,
            size: unsigned(&block[124..136], "size")?,
            mtime: parse_num(&block[136..148]).ok_or(HeaderError::Field("mtime"))?,
            linkname: cstr(&block[157..257]).to_vec(),
            // Only device nodes use these; others may hold anything (GNU tar ignores it).
            devmajor: if device {
                unsigned(&block[329..337], "devmajor")?
            } else {
                0
            },
            devminor: if device {
                unsigned(&block[337..345], "devminor")?
            } else {
                0
            },
            old_sparse: if typeflag == b'S' {
                Some(old_sparse_header(block)?)
            } else {
                None
            },
        })
    }
}

/// The old GNU sparse map of a `S` header: up to 4 entries, whether extension blocks
/// follow, and the real size.
fn old_sparse_header(block: &[u8; BLOCK]) -> Result<OldSparse, HeaderError> {
    let map = sparse_entries(&block[386..482])?;
    let real = unsigned(&block[483..495], "realsize")?;
    Ok((map, block[482] != 0, real))
}

/// An old GNU sparse extension block: up to 21 entries, and whether another follows.
pub fn old_sparse_extension(block: &[u8; BLOCK]) -> Result<(Vec<(u64, u64)>, bool), HeaderError> {
    Ok((sparse_entries(&block[..504])?, block[504] != 0))
}

/// (offset, numbytes) pairs of 12-byte fields, up to the first empty one.
fn sparse_entries(area: &[u8]) -> Result<Vec<(u64, u64)>, HeaderError> {
    let mut out = Vec::new();
    for e in area.chunks_exact(24) {
        if e[12] == 0 {
            break;
        }
        out.push((
            unsigned(&e[..12], "sparse offset")?,
            unsigned(&e[12..], "sparse numbytes")?,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields_as_gnu_tar_reads_them() {
        assert_eq!(parse_num(b"0000644\0"), Some(0o644));
        assert_eq!(parse_num(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_num(b"        "), Some(0));
        assert_eq!(parse_num(b""), None);
        assert_eq!(parse_num(b"   17 \0"), Some(0o17));
        assert_eq!(parse_num(b"17 \0junk"), Some(0o17));
        assert_eq!(parse_num(b"\x0017\0"), Some(0o17));
        assert_eq!(parse_num(b"12x"), None);
        assert_eq!(parse_num(b"9"), None);
        assert_eq!(
            parse_num(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Some(1 << 32)
        );
        assert_eq!(parse_num(&[0xff; 12]), Some(-1));
        assert_eq!(
            parse_num(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]),
            Some(-2)
        );
        assert_eq!(
            parse_num(&[
                0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ]),
            None
        );
        assert_eq!(parse_num(b"77777777777777777777777"), None);
    }

    #[test]
    fn signed_and_unsigned_checksums() {
        let mut b = [0u8; BLOCK];
        b[..4].copy_from_slice(b"f\xe9\xe9\xe9");
        b[156] = b'0';
        let sum = |b: &[u8; BLOCK], signed: bool| -> i64 {
            b.iter()
                .enumerate()
                .map(|(i, &x)| {
                    let x = if (148..156).contains(&i) { b' ' } else { x };
                    if signed { x as i8 as i64 } else { x as i64 }
                })
                .sum()
        };
        for signed in [false, true] {
            let s = sum(&b, signed);
            b[148..156].copy_from_slice(format!("{s:06o}\0 ").as_bytes());
            assert!(Header::parse(&b).is_ok(), "signed={signed}");
        }
        b[148..156].copy_from_slice(b"0000001\0");
        assert_eq!(Header::parse(&b).unwrap_err(), HeaderError::Checksum);
    }
}
