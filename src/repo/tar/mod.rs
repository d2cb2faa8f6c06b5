//! A streaming tar reader that yields the members GNU tar 1.34 would extract.
//!
//! Formats: v7, old GNU, GNU, ustar and pax (POSIX.1-2001), as written by GNU tar,
//! bsdtar, busybox, Python's tarfile and cargo. Meta headers are folded into the member
//! they describe: GNU long names and link names (`L`, `K`; the last of several wins, cut
//! at its first NUL), pax extended headers (`x`, Sun's `X`; the last of several wins)
//! over pax globals (`g`). Sparse members in every GNU variant (old GNU `S` headers with
//! extension blocks, pax 0.0, 0.1 and 1.0) come with their map, and their holes are never
//! read: a member's data is only the bytes the archive stores.
//!
//! GNU tar's reading rules, kept here: only regular files (`0`, `\0`, `7`, `S`, unknown
//! types) and dumpdirs (`D`) have data, whatever size other headers declare; a regular
//! file whose name ends in `/` is a directory (pre-POSIX tars); numeric fields may be
//! blank; checksums may be signed. The archive ends at its first zero block (a lone zero
//! block then anything is accepted with a warning, as GNU tar does); an archive that
//! stops before a zero block is truncated and refused. Bytes after the end are not read.
//!
//! Nothing read from the archive can panic or allocate without bound: extended headers
//! are capped at [`MAX_EXTENDED`] bytes, long names at [`MAX_LONG_NAME`], sparse maps at
//! [`MAX_SPARSE_ENTRIES`] entries. Every error names the member (or the byte offset of
//! the header) and the reason.

mod acl;
mod header;
mod pax;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read};

use header::{BLOCK, Header, is_zero_block};

use super::RepoError;

/// Largest pax extended header read into memory.
pub const MAX_EXTENDED: u64 = 64 << 20;
/// Largest GNU long name or long link record read into memory.
pub const MAX_LONG_NAME: u64 = 1 << 20;
/// Most entries in one sparse map.
pub const MAX_SPARSE_ENTRIES: usize = 1 << 20;

type Result<T> = std::result::Result<T, RepoError>;

/// What a member is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberKind {
    File,
    Dir,
    Symlink,
    HardLink,
    CharDevice,
    BlockDevice,
    Fifo,
}

/// A sparse member's layout: data segments `(offset, length)` in order, and the size of
/// the file they belong to. The archive stores the segments back to back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparseMap {
    pub segments: Vec<(u64, u64)>,
    pub real_size: u64,
}

/// One member, its meta headers applied.
#[derive(Clone, Debug)]
pub struct Member {
    /// The name as stored (not yet split or checked).
    pub path: Vec<u8>,
    pub kind: MemberKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime_ns: i64,
    /// Symlink target or hard link target.
    pub link: Vec<u8>,
    pub devmajor: u64,
    pub devminor: u64,
    /// `SCHILY.xattr.*` records, sorted by name, the last record of a name winning.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub sparse: Option<SparseMap>,
    /// Bytes of data the archive holds for this member (after any sparse 1.0 map).
    pub data_len: u64,
}

impl Member {
    /// The name for messages.
    pub fn quoted(&self) -> String {
        quoted(&self.path)
    }
}

fn quoted(path: &[u8]) -> String {
    let s = String::from_utf8_lossy(path);
    if s.len() > 200 {
        format!(
            "{:?}... ({} bytes)",
            s.chars().take(100).collect::<String>(),
            path.len()
        )
    } else {
        format!("{s:?}")
    }
}

pub fn malformed(what: impl std::fmt::Display) -> RepoError {
    RepoError::BadInput(format!("malformed archive: {what}"))
}

pub fn truncated(what: impl std::fmt::Display) -> RepoError {
    RepoError::BadInput(format!("truncated archive: {what}"))
}

/// Reads members from a decompressed tar stream.
pub struct TarReader<R> {
    inner: R,
    /// Bytes consumed from `inner`.
    pos: u64,
    /// Data bytes of the current member not read yet, and the padding after them.
    data_left: u64,
    pad_left: u64,
    /// The current member, for messages.
    current: String,
    /// Pax global records, in order.
    globals: pax::Records,
    /// A read error met inside [`TarReader::data`], for the caller to report.
    data_error: Option<RepoError>,
    ended: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            pos: 0,
            data_left: 0,
            pad_left: 0,
            current: String::new(),
            globals: Vec::new(),
            data_error: None,
            ended: false,
        }
    }

    /// Reads up to `buf.len()` bytes, stopping early only at the end of the stream.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(malformed(format!(
                        "reading the archive at byte {}: {e}",
                        self.pos + n as u64
                    )));
                }
            }
        }
        self.pos += n as u64;
        Ok(n)
    }

    /// Reads exactly one block, or fails naming what was being read.
    fn block(&mut self, what: &str) -> Result<[u8; BLOCK]> {
        let mut b = [0u8; BLOCK];
        let at = self.pos;
        if self.read_full(&mut b)? < BLOCK {
            return Err(truncated(format!("{what} at byte {at} is cut short")));
        }
        Ok(b)
    }

    /// Reads and discards `n` bytes of the current member.
    fn skip(&mut self, mut n: u64) -> Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self.read_full(&mut buf[..want])?;
            if got < want {
                return Err(truncated(format!(
                    "the data of {} ends early, at byte {}",
                    self.current, self.pos
                )));
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// Reads the whole data of a meta header (`size` bytes, then its padding).
    fn meta_data(&mut self, size: u64, limit: u64, what: &str, at: u64) -> Result<Vec<u8>> {
        if size > limit {
            return Err(malformed(format!(
                "the {what} at byte {at} is {size} bytes long (more than {limit})"
            )));
        }
        let mut data = vec![0u8; size as usize];
        if self.read_full(&mut data)? < data.len() {
            return Err(truncated(format!("the {what} at byte {at} is cut short")));
        }
        self.skip(padding(size))?;
        Ok(data)
    }

    /// The data of the current member. A read error is kept for [`Self::take_error`].
    pub fn data(&mut self) -> DataReader<'_, R> {
        DataReader { tar: self }
    }

    /// The error that made the last [`DataReader`] fail, if it did.
    pub fn take_error(&mut self) -> Option<RepoError> {
        self.data_error.take()
    }

    /// The next member, or `None` at the end-of-archive marker.
    pub fn next_member(&mut self) -> Result<Option<Member>> {
        if self.ended {
            return Ok(None);
        }
        self.skip(self.data_left.saturating_add(self.pad_left))?;
        self.data_left = 0;
        self.pad_left = 0;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut local: Option<pax::Records> = None;
        loop {
            let at = self.pos;
            let mut block = [0u8; BLOCK];
            let n = self.read_full(&mut block)?;
            if n == 0 {
                let after = if self.current.is_empty() {
                    "its start".to_string()
                } else {
                    self.current.clone()
                };
                return Err(truncated(format!(
                    "the archive ends after {after} without an end-of-archive marker \
                     (zero blocks)"
                )));
            }
            if n < BLOCK {
                return Err(truncated(format!("the header at byte {at} is cut short")));
            }
            if is_zero_block(&block) {
                self.ended = true;
                let mut next = [0u8; BLOCK];
                let n = self.read_full(&mut next)?;
                if n < BLOCK || !is_zero_block(&next) {
                    tracing::warn!(
                        "a lone zero block at byte {at} ends the archive (GNU tar stops there too)"
                    );
                }
                if long_name.is_some() || long_link.is_some() || local.is_some() {
                    return Err(truncated(format!(
                        "the archive ends at byte {at} after a meta header, without its member"
                    )));
                }
                return Ok(None);
            }
            let h = Header::parse(&block)
                .map_err(|e| malformed(format!("the header at byte {at}: {e}")))?;
            match h.typeflag {
                b'x' | b'X' => {
                    let data = self.meta_data(h.size, MAX_EXTENDED, "pax header", at)?;
                    let recs = pax::records(&data)
                        .map_err(|e| malformed(format!("the pax header at byte {at}: {e}")))?;
                    local = Some(recs);
                }
                b'g' => {
                    let data = self.meta_data(h.size, MAX_EXTENDED, "pax global header", at)?;
                    let recs = pax::records(&data)
                        .map_err(|e| malformed(format!("the pax header at byte {at}: {e}")))?;
                    for (k, v) in recs {
                        self.globals.retain(|(gk, _)| *gk != k);
                        if !v.is_empty() {
                            self.globals.push((k, v));
                        }
                    }
                }
                b'L' => {
                    let d = self.meta_data(h.size, MAX_LONG_NAME, "GNU long name", at)?;
                    long_name = Some(header::cstr(&d).to_vec());
                }
                b'K' => {
                    let d = self.meta_data(h.size, MAX_LONG_NAME, "GNU long link name", at)?;
                    long_link = Some(header::cstr(&d).to_vec());
                }
                b'V' => {
                    // A volume label: no member.
                    self.skip(h.size.saturating_add(padding(h.size)))?;
                }
                b'M' | b'N' => {
                    return Err(malformed(format!(
                        "{}: {} headers (multi-volume continuation, old GNU long names) \
                         are not supported",
                        quoted(&h.name),
                        h.typeflag as char
                    )));
                }
                _ => {
                    let member = self.member(h, long_name, long_link, local)?;
                    return Ok(Some(member));
                }
            }
        }
    }

    /// Builds a member from its header and the meta headers before it.
    fn member(
        &mut self,
        h: Header,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        local: Option<pax::Records>,
    ) -> Result<Member> {
        let mut path = long_name.unwrap_or_else(|| h.name.clone());
        let mut link = long_link.unwrap_or_else(|| h.linkname.clone());
        let name_for_errors = quoted(&path);
        self.current = name_for_errors.clone();
        let bad = |why: String| malformed(format!("{name_for_errors}: {why}"));
        let (mut uid, mut gid, mut size) = (h.uid, h.gid, h.size);
        let mut mtime_ns = h
            .mtime
            .checked_mul(1_000_000_000)
            .ok_or_else(|| bad("mtime out of range".into()))?;
        let mut xattrs: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let (mut sparse_size, mut sparse_name, mut major, mut minor) = (None, None, None, None);
        let mut map: Option<Vec<(u64, u64)>> = None;
        let mut pending_offset: Option<u64> = None;
        // Globals first, then this member's records; path-like and size records of a
        // global header are ignored (they cannot describe every member).
        let globals = self.globals.iter().filter(|(k, _)| {
            !matches!(k.as_slice(), b"path" | b"linkpath" | b"size")
                && !k.starts_with(b"GNU.sparse.")
        });
        let local = local.unwrap_or_default();
        for (k, v) in globals.chain(local.iter()) {
            let num = || {
                pax::decimal(v)
                    .ok_or_else(|| bad(format!("bad pax record {}", String::from_utf8_lossy(k))))
            };
            match k.as_slice() {
                b"path" => {
                    path = if v.is_empty() {
                        h.name.clone()
                    } else {
                        v.clone()
                    }
                }
                b"linkpath" => {
                    link = if v.is_empty() {
                        h.linkname.clone()
                    } else {
                        v.clone()
                    }
                }
                b"size" => size = if v.is_empty() { h.size } else { num()? },
                b"uid" => uid = if v.is_empty() { h.uid } else { num()? },
                b"gid" => gid = if v.is_empty() { h.gid } else { num()? },
                b"mtime" if !v.is_empty() => {
                    mtime_ns = pax::time_ns(v).ok_or_else(|| bad("bad pax mtime".into()))?
                }
                b"GNU.sparse.size" | b"GNU.sparse.realsize" => sparse_size = Some(num()?),
                b"GNU.sparse.name" => sparse_name = Some(v.clone()),
                b"GNU.sparse.major" => major = Some(num()?),
                b"GNU.sparse.minor" => minor = Some(num()?),
                b"GNU.sparse.map" => {
                    let m = pax::map_01(v).ok_or_else(|| bad("bad GNU.sparse.map".into()))?;
                    if m.len() > MAX_SPARSE_ENTRIES {
                        return Err(bad("sparse map too large".into()));
                    }
                    map = Some(m);
                }
                b"GNU.sparse.offset" => {
                    if pending_offset.is_some() {
                        return Err(bad("GNU.sparse.offset without its numbytes".into()));
                    }
                    pending_offset = Some(num()?);
                }
                b"GNU.sparse.numbytes" => {
                    let off = pending_offset
                        .take()
                        .ok_or_else(|| bad("GNU.sparse.numbytes without an offset".into()))?;
                    let m = map.get_or_insert_with(Vec::new);
                    if m.len() >= MAX_SPARSE_ENTRIES {
                        return Err(bad("sparse map too large".into()));
                    }
                    m.push((off, num()?));
                }
                b"SCHILY.acl.access" | b"SCHILY.acl.default" => {
                    let name: &[u8] = if k.ends_with(b"access") {
                        b"system.posix_acl_access"
                    } else {
                        b"system.posix_acl_default"
                    };
                    // As GNU tar extracting: an ACL it cannot read is left out, with a word.
                    match acl::to_xattr(v) {
                        Ok(x) => {
                            xattrs.insert(name.to_vec(), x);
                        }
                        Err(why) => tracing::warn!(
                            "{}: {} not restorable ({why}): left out",
                            name_for_errors,
                            String::from_utf8_lossy(k)
                        ),
                    }
                }
                _ => {
                    if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                        xattrs.insert(name.to_vec(), v.clone());
                    }
                }
            }
        }
        if pending_offset.is_some() {
            return Err(bad("GNU.sparse.offset without its numbytes".into()));
        }
        if let Some(n) = sparse_name {
            path = n;
        }
        if quoted(&path) != name_for_errors {
            self.current = quoted(&path);
        }
        let bad = |why: String| malformed(format!("{}: {why}", quoted(&path)));
        let trailing_slash = path.last() == Some(&b'/');
        let kind = match h.typeflag {
            b'0' | b'\0' if trailing_slash => MemberKind::Dir,
            b'5' | b'D' => MemberKind::Dir,
            b'1' => MemberKind::HardLink,
            b'2' => MemberKind::Symlink,
            b'3' => MemberKind::CharDevice,
            b'4' => MemberKind::BlockDevice,
            b'6' => MemberKind::Fifo,
            b'0' | b'\0' | b'7' | b'S' => MemberKind::File,
            other => {
                tracing::warn!(
                    "{}: unknown type {:?}, read as a regular file (as GNU tar does)",
                    quoted(&path),
                    other as char
                );
                MemberKind::File
            }
        };
        // Only regular files and dumpdirs have data (GNU tar ignores other sizes).
        let mut data_len = match (kind, h.typeflag) {
            (MemberKind::File, _) | (_, b'D') => size,
            _ => 0,
        };
        self.data_left = data_len;
        self.pad_left = padding(data_len);
        let mut sparse = None;
        if kind == MemberKind::File && h.typeflag == b'S' {
            let (mut segs, mut more, real) = h.old_sparse.clone().unwrap_or_default();
            while more {
                let b = self.block("an old GNU sparse extension block")?;
                let (m, next) = header::old_sparse_extension(&b).map_err(|e| bad(e.to_string()))?;
                if segs.len() + m.len() > MAX_SPARSE_ENTRIES {
                    return Err(bad("sparse map too large".into()));
                }
                segs.extend(m);
                more = next;
            }
            sparse = Some(SparseMap {
                segments: segs,
                real_size: real,
            });
        } else if kind == MemberKind::File && major == Some(1) {
            if minor.unwrap_or(0) != 0 {
                return Err(bad(format!(
                    "GNU sparse format 1.{} is not known",
                    minor.unwrap_or(0)
                )));
            }
            let real =
                sparse_size.ok_or_else(|| bad("GNU sparse 1.0 without its real size".into()))?;
            let segs = self.sparse_map_10(&bad)?;
            data_len = self.data_left;
            sparse = Some(SparseMap {
                segments: segs,
                real_size: real,
            });
        } else if kind == MemberKind::File && map.is_some() {
            let real =
                sparse_size.ok_or_else(|| bad("GNU sparse map without GNU.sparse.size".into()))?;
            sparse = Some(SparseMap {
                segments: map.unwrap_or_default(),
                real_size: real,
            });
        } else if let Some(m) = major {
            return Err(bad(format!("GNU sparse format {m} is not known")));
        }
        if let Some(s) = &sparse {
            check_sparse(s, data_len).map_err(bad)?;
        }
        let mut mode = (h.mode & 0o7777) as u32;
        if let Some(bits) = xattrs
            .get(&b"system.posix_acl_access"[..])
            .and_then(|x| acl::mode_bits(x))
        {
            // Setting an access ACL sets the permission bits (the group's from the mask):
            // what a file extracted by GNU tar --acls ends with, whatever the header said
            // (libarchive writes the group:: entry's bits there).
            mode = (mode & !0o777) | bits;
        }
        Ok(Member {
            path,
            kind,
            mode,
            uid,
            gid,
            mtime_ns,
            link,
            devmajor: h.devmajor,
            devminor: h.devminor,
            xattrs: xattrs.into_iter().collect(),
            sparse,
            data_len,
        })
    }

    /// Reads a sparse 1.0 map from the start of the member's data: decimal numbers one
    /// per line (the count, then offset and length pairs), padded to a block.
    fn sparse_map_10(&mut self, bad: &dyn Fn(String) -> RepoError) -> Result<Vec<(u64, u64)>> {
        let mut block = [0u8; BLOCK];
        let mut in_block = BLOCK;
        let mut line = |tar: &mut Self| -> Result<u64> {
            let mut digits = Vec::new();
            loop {
                if in_block == BLOCK {
                    if tar.data_left < BLOCK as u64 {
                        return Err(bad("the sparse map runs past the member's data".into()));
                    }
                    block = tar.block("a sparse map block")?;
                    tar.data_left -= BLOCK as u64;
                    in_block = 0;
                }
                let b = block[in_block];
                in_block += 1;
                if b == b'\n' {
                    break;
                }
                if digits.len() > 20 {
                    return Err(bad("bad sparse map".into()));
                }
                digits.push(b);
            }
            pax::decimal(&digits).ok_or_else(|| bad("bad sparse map".into()))
        };
        let n = line(self)?;
        if n > MAX_SPARSE_ENTRIES as u64 {
            return Err(bad("sparse map too large".into()));
        }
        let mut map = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let off = line(self)?;
            let len = line(self)?;
            map.push((off, len));
        }
        Ok(map)
    }
}

/// Zero bytes after `size` bytes of data, up to the next block.
fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A sparse map must be in order, inside the file, and account for every stored byte.
fn check_sparse(s: &SparseMap, data_len: u64) -> std::result::Result<(), String> {
    let mut end = 0u64;
    let mut stored = 0u64;
    let last = s.segments.iter().rposition(|&(_, len)| len > 0);
    for (i, &(off, len)) in s.segments.iter().enumerate() {
        if off < end {
            return Err("sparse map out of order".into());
        }
        // GNU tar starts each segment at a block; libarchive right after the previous
        // one. They agree only when every segment but the last fills its blocks.
        if Some(i) < last && len % BLOCK as u64 != 0 {
            return Err(format!(
                "sparse segment at {off} of {len} bytes is not a multiple of 512 and not \
                 the last (tar readers disagree on where the next one starts)"
            ));
        }
        end = off.checked_add(len).ok_or("sparse map out of range")?;
        if end > s.real_size {
            return Err(format!(
                "sparse segment at {off} ends past the file's size {}",
                s.real_size
            ));
        }
        stored += len;
    }
    if stored != data_len {
        return Err(format!(
            "the sparse map holds {stored} bytes, the archive {data_len}"
        ));
    }
    Ok(())
}

/// Reads the data of the current member; EOF when it is all read.
pub struct DataReader<'a, R> {
    tar: &'a mut TarReader<R>,
}

impl<R: Read> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let tar = &mut *self.tar;
        if tar.data_left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(tar.data_left.min(usize::MAX as u64) as usize);
        let got = match tar.read_full(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) => {
                let msg = e.to_string();
                tar.data_error = Some(e);
                return Err(std::io::Error::other(msg));
            }
        };
        if got == 0 {
            let e = truncated(format!(
                "the data of {} ends early, at byte {}",
                tar.current, tar.pos
            ));
            let msg = e.to_string();
            tar.data_error = Some(e);
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, msg));
        }
        tar.data_left -= got as u64;
        Ok(got)
    }
}
