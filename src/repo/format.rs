//! The persisted structures of a repository, and how they are framed.
//!
//! FORMAT.md at the top of the source tree is the user-facing description; this module is
//! its implementation. Everything persisted is postcard-encoded. The `config` object is
//! plaintext framed as `MAGIC || u32 LE format version || postcard(Config)`; every other
//! metadata object is encrypted, and its plaintext is `u8 OBJECT_VERSION || postcard(T)`.
//! Magic numbers and version numbers never change meaning: a new layout gets a new
//! version, and readers refuse versions they do not know with a clear error.

use serde::{Deserialize, Serialize};

/// First bytes of the `config` object.
pub const MAGIC: &[u8; 8] = b"VAULTFS\x01";
/// The repository format version this build writes.
pub const FORMAT_VERSION: u32 = 5;
/// The oldest format version this build reads (and upgrades with `vaultfs upgrade`).
pub const OLDEST_FORMAT: u32 = 1;
/// Version byte in front of the plaintext of encrypted metadata objects whose layout
/// has not changed since format 1: trees, index objects, locks, forwarding objects.
pub const OBJECT_VERSION: u8 = 1;
/// Version byte of the records written by this build (manifests, vaults, point updates,
/// resources, usage records, policies, schedule states). A record of version 1, 2 or 3
/// still decodes, in the layout that version wrote (see [`Record`]), with the fields
/// added since then empty.
pub const RECORD_VERSION: u8 = 4;
/// The version byte of records written by format 3.
pub const RECORD_VERSION_3: u8 = 3;
/// The version byte of records written by format 2.
pub const RECORD_VERSION_2: u8 = 2;
/// Length of the authentication code that ends a `config` object of format 2 or later.
pub const CONFIG_MAC_LEN: usize = 32;

/// A chunk id: keyed BLAKE3 of the chunk's plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", &self.to_hex()[..16])
    }
}

impl std::fmt::Display for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A pack id: random, 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackId(pub [u8; 16]);

impl PackId {
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        getrandom::getrandom(&mut b).expect("the OS random source failed");
        PackId(b)
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Some(PackId(v.try_into().ok()?))
    }
    /// The object key of this pack: `packs/<first two hex digits>/<hex>`.
    pub fn key(&self) -> String {
        let h = self.to_hex();
        format!("packs/{}/{}", &h[..2], h)
    }
    /// The object key of the index object that describes this pack.
    pub fn index_key(&self) -> String {
        format!("index/{}", self.to_hex())
    }
    /// The object key of the forwarding object left when prune removed this pack.
    pub fn forward_key(&self) -> String {
        format!("forward/{}", self.to_hex())
    }
}

impl std::fmt::Debug for PackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What a chunk holds: file data, or an encoded [`Tree`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkKind {
    Data,
    Tree,
}

/// Where a chunk is stored and how large it is. Trees and manifests carry full
/// locations, so reading a backup needs no index at all: one ranged read per chunk, or
/// (format 5) per run of frames of a chunk sealed as [`Frames`].
///
/// Encoded as its five fields in order (the layout of formats 1 to 4); a chunk sealed as
/// frames sets bit 31 of `raw_len` (a length no chunk can have, see [`FRAMED`]) and
/// appends its frame table: `frame size (u32) || [stored length of each frame (u32)]`.
/// So every older location decodes as it always did, and a location of either kind
/// decodes wherever one is found (trees, manifests, forwards).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub pack: PackId,
    /// Byte offset of the stored (encrypted) chunk in the pack.
    pub offset: u32,
    /// Stored length: nonce + ciphertext + tag (of every frame, for a framed chunk).
    pub stored_len: u32,
    /// Plaintext length after decompression.
    pub raw_len: u32,
    /// The frame table of a chunk sealed as frames (format 5); `None` for a chunk
    /// sealed whole.
    pub frames: Option<std::sync::Arc<Frames>>,
}

/// The marker bit of an encoded `raw_len` that says a frame table follows. Chunks are at
/// most 1 GiB (`repo::pack::MAX_CHUNK_LEN`), so no older location has it set.
pub const FRAMED: u32 = 1 << 31;
/// The most frames a chunk may have (a frame table read from storage with more is
/// refused before anything is allocated for it).
pub const MAX_FRAMES: usize = 4096;
/// The smallest raw frame size a reader accepts.
pub const MIN_FRAME_SIZE: u32 = 4096;
/// The largest raw frame size a reader accepts.
pub const MAX_FRAME_SIZE: u32 = 16 << 20;

/// The frame table of a chunk sealed as frames (format 5): its plaintext cut into raw
/// frames of `size` bytes (the last one shorter), each compressed and sealed on its own
/// (aad: chunk id, frame index, frame count), stored back to back; `lens[k]` is the
/// stored length of frame `k`. A reader computes the byte range of any frame from this
/// alone. Shared behind an `Arc` by locations (they are copied often; tables never
/// change), which so grow by one pointer only.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frames {
    pub size: u32,
    pub lens: Box<[u32]>,
}

impl Frames {
    pub fn count(&self) -> usize {
        self.lens.len()
    }

    /// The frames that hold raw bytes `a..b` of the chunk (`a < b`): `first..=last`.
    pub fn covering(&self, a: u64, b: u64) -> (usize, usize) {
        let last = self.count().saturating_sub(1);
        let f = |x: u64| ((x / self.size as u64) as usize).min(last);
        (f(a), f(b.saturating_sub(1).max(a)))
    }

    /// Where frames `first..=last` are, relative to the chunk's stored offset: (start,
    /// length) in stored bytes.
    pub fn span(&self, first: usize, last: usize) -> (u64, u64) {
        let start: u64 = self.lens[..first].iter().map(|&l| l as u64).sum();
        let len: u64 = self.lens[first..=last].iter().map(|&l| l as u64).sum();
        (start, len)
    }

    /// The raw bytes frame `k` of a chunk of `raw_len` bytes holds.
    pub fn raw_range(&self, raw_len: u32, k: usize) -> std::ops::Range<usize> {
        let start = (k as u64 * self.size as u64).min(raw_len as u64) as usize;
        let end = ((k as u64 + 1) * self.size as u64).min(raw_len as u64) as usize;
        start..end
    }

    /// Whether this table can describe a chunk of `raw_len` bytes stored in `stored_len`
    /// bytes: a frame size in bounds, one frame per `size` bytes (at least two, at most
    /// [`MAX_FRAMES`]), each frame at least a sealed empty payload long, and the lengths
    /// adding up to `stored_len`.
    pub fn check(&self, stored_len: u32, raw_len: u32) -> Result<(), String> {
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&self.size) {
            return Err(format!(
                "a frame size of {} bytes, outside {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE}",
                self.size
            ));
        }
        let want = (raw_len as u64).div_ceil(self.size as u64);
        if self.count() as u64 != want || !(2..=MAX_FRAMES).contains(&self.count()) {
            return Err(format!(
                "{} frames for {raw_len} bytes in frames of {} (expected {want}, 2 to {MAX_FRAMES})",
                self.count(),
                self.size
            ));
        }
        let min = (super::crypto::OVERHEAD + 1) as u32;
        if self.lens.iter().any(|&l| l < min) {
            return Err("a frame shorter than a sealed frame can be".into());
        }
        let sum: u64 = self.lens.iter().map(|&l| l as u64).sum();
        if sum != stored_len as u64 {
            return Err(format!(
                "frames of {sum} stored bytes in all, expected {stored_len}"
            ));
        }
        Ok(())
    }
}

impl ChunkRef {
    /// The index entry that describes this chunk in its pack.
    pub fn index_entry(&self, kind: ChunkKind) -> IndexEntry {
        IndexEntry {
            id: self.id,
            kind,
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
            frames: self.frames.clone(),
        }
    }
}

/// Writes `raw_len` (with [`FRAMED`] and the table after it when there is one) as the
/// last elements of an encoded location.
fn serialize_tail<T: serde::ser::SerializeTuple>(
    t: &mut T,
    raw_len: u32,
    frames: &Option<std::sync::Arc<Frames>>,
) -> Result<(), T::Error> {
    match frames {
        None => t.serialize_element(&raw_len),
        Some(f) => {
            t.serialize_element(&(raw_len | FRAMED))?;
            t.serialize_element(&f.size)?;
            t.serialize_element(&*f.lens)
        }
    }
}

/// Reads what [`serialize_tail`] wrote: `raw_len` and the frame table, checked against
/// `stored_len` (a table that cannot be is a decoding error, never a panic later).
fn deserialize_tail<'de, A: serde::de::SeqAccess<'de>>(
    seq: &mut A,
    stored_len: u32,
) -> Result<(u32, Option<std::sync::Arc<Frames>>), A::Error> {
    use serde::de::Error;
    let missing = || A::Error::custom("a chunk location cut short");
    let raw: u32 = seq.next_element()?.ok_or_else(missing)?;
    if raw & FRAMED == 0 {
        return Ok((raw, None));
    }
    let raw_len = raw & !FRAMED;
    let size: u32 = seq.next_element()?.ok_or_else(missing)?;
    let lens: Vec<u32> = seq.next_element()?.ok_or_else(missing)?;
    if lens.len() > MAX_FRAMES {
        return Err(A::Error::custom("a frame table of too many frames"));
    }
    let frames = Frames {
        size,
        lens: lens.into(),
    };
    frames
        .check(stored_len, raw_len)
        .map_err(|e| A::Error::custom(format!("a bad frame table: {e}")))?;
    Ok((raw_len, Some(std::sync::Arc::new(frames))))
}

/// The most elements an encoded location has (see [`ChunkRef`]).
const LOCATION_FIELDS: usize = 8;

/// The encoding a location and an index entry share: `id`, `mid` (the pack, or the
/// kind), `offset`, `stored_len`, `raw_len` and the frame table after it (see
/// [`ChunkRef`]). Tuples in postcard are their elements in order, so a location sealed
/// whole encodes exactly as a derived struct of the five fields did.
struct Encoded<M> {
    id: ChunkId,
    mid: M,
    offset: u32,
    stored_len: u32,
    raw_len: u32,
    frames: Option<std::sync::Arc<Frames>>,
}

impl<M> Encoded<M> {
    fn new(
        id: ChunkId,
        mid: M,
        offset: u32,
        stored_len: u32,
        raw_len: u32,
        frames: &Option<std::sync::Arc<Frames>>,
    ) -> Self {
        Encoded {
            id,
            mid,
            offset,
            stored_len,
            raw_len,
            frames: frames.clone(),
        }
    }
}

impl<M: Serialize> Serialize for Encoded<M> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(LOCATION_FIELDS)?;
        t.serialize_element(&self.id)?;
        t.serialize_element(&self.mid)?;
        t.serialize_element(&self.offset)?;
        t.serialize_element(&self.stored_len)?;
        serialize_tail(&mut t, self.raw_len, &self.frames)?;
        t.end()
    }
}

impl<'de, M: Deserialize<'de>> Deserialize<'de> for Encoded<M> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<M>(std::marker::PhantomData<M>);
        impl<'de, M: Deserialize<'de>> serde::de::Visitor<'de> for V<M> {
            type Value = Encoded<M>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a chunk location")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Encoded<M>, A::Error> {
                let missing =
                    || <A::Error as serde::de::Error>::custom("a chunk location cut short");
                let id = seq.next_element()?.ok_or_else(missing)?;
                let mid = seq.next_element()?.ok_or_else(missing)?;
                let offset = seq.next_element()?.ok_or_else(missing)?;
                let stored_len = seq.next_element()?.ok_or_else(missing)?;
                let (raw_len, frames) = deserialize_tail(&mut seq, stored_len)?;
                Ok(Encoded {
                    id,
                    mid,
                    offset,
                    stored_len,
                    raw_len,
                    frames,
                })
            }
        }
        d.deserialize_tuple(LOCATION_FIELDS, V(std::marker::PhantomData))
    }
}

impl Serialize for ChunkRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (id, offset, stored_len) = (self.id, self.offset, self.stored_len);
        Encoded::new(
            id,
            self.pack,
            offset,
            stored_len,
            self.raw_len,
            &self.frames,
        )
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ChunkRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let e = Encoded::<PackId>::deserialize(d)?;
        Ok(e.mid_as_location())
    }
}

impl Encoded<PackId> {
    fn mid_as_location(self) -> ChunkRef {
        ChunkRef {
            id: self.id,
            pack: self.mid,
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
            frames: self.frames,
        }
    }
}

/// One piece of a file's content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Extent {
    /// A stored chunk.
    Data(ChunkRef),
    /// A run of zero bytes that is not stored (a hole in a sparse file or image).
    Hole(u64),
}

impl Extent {
    pub fn len(&self) -> u64 {
        match self {
            Extent::Data(r) => r.raw_len as u64,
            Extent::Hole(n) => *n,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The kind of a tree entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// One entry of a directory, with everything needed to restore it exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name as raw bytes (Unix names need not be UTF-8).
    pub name: Vec<u8>,
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (no file-type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status-change time at backup, nanoseconds; used only to detect changes.
    pub ctime_ns: i64,
    /// Source inode number at backup; used only to detect changes.
    pub inode: u64,
    /// Logical size in bytes (files), target length (symlinks), 0 otherwise.
    pub size: u64,
    /// Device number for character and block devices.
    pub rdev: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Symlink target, raw bytes.
    pub target: Option<Vec<u8>>,
    /// For files with more than one link: (group number within the backup, link count).
    pub hardlink: Option<(u64, u32)>,
    /// File content, in order; the lengths add up to `size`.
    pub content: Vec<Extent>,
    /// For directories: the tree chunk holding the entries.
    pub subtree: Option<ChunkRef>,
}

impl Node {
    /// A node with no content and default modes (0755 for directories, 0644 otherwise),
    /// owned by root, time 0: a starting point to fill in.
    pub fn empty(name: Vec<u8>, kind: NodeKind) -> Node {
        Node {
            name,
            kind,
            mode: if kind == NodeKind::Dir { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            size: 0,
            rdev: 0,
            xattrs: Vec::new(),
            target: None,
            hardlink: None,
            content: Vec::new(),
            subtree: None,
        }
    }

    /// Bytes of content actually stored (not holes).
    pub fn data_bytes(&self) -> u64 {
        self.content
            .iter()
            .map(|e| match e {
                Extent::Data(r) => r.raw_len as u64,
                Extent::Hole(_) => 0,
            })
            .sum()
    }
}

/// A directory: its entries sorted by name bytes. Stored as a chunk of kind `Tree`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// Whether a backup is a directory tree or a single image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupKind {
    Tree,
    Image,
}

impl BackupKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            BackupKind::Tree => "tree",
            BackupKind::Image => "image",
        }
    }
}

/// Counters kept for one backup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStats {
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    /// Logical bytes of file content.
    pub bytes: u64,
    /// Files whose content was reused from the parent point without reading.
    pub files_unchanged: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Chunks newly stored by this backup, and their stored size.
    pub chunks_new: u64,
    pub bytes_stored_new: u64,
}

/// One protected resource in a recovery point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupEntry {
    /// The backup's name: the source's basename (raw bytes).
    pub name: Vec<u8>,
    pub kind: BackupKind,
    /// The absolute source path at backup time (raw bytes), or `-` for stdin.
    pub source: Vec<u8>,
    /// A tree chunk holding exactly one node: the backup's top entry (a directory for a
    /// tree backup, a file for an image backup).
    pub root: ChunkRef,
    pub stats: BackupStats,
}

/// The status of a recovery point, in the lifecycle of the cloud backup services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PointStatus {
    Creating,
    Available,
    Restoring,
    Deleting,
    Error,
}

impl PointStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            PointStatus::Creating => "creating",
            PointStatus::Available => "available",
            PointStatus::Restoring => "restoring",
            PointStatus::Deleting => "deleting",
            PointStatus::Error => "error",
        }
    }
}

/// What a person says about a recovery point, changeable after its commit: the
/// manifest holds the first value, point updates (`attrs/...`) later ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointAttrs {
    pub description: String,
    /// Free strings, sorted, no duplicates.
    pub tags: Vec<String>,
    /// A protected point is never deleted (by `point delete`, forget or prune) until it
    /// is unprotected.
    pub protected: bool,
    /// When the point expires (nanoseconds since the epoch): forget removes it from then
    /// on, whatever its rules. `None`: never.
    pub expires_ns: Option<i64>,
}

/// A path a backup could not read, left out of the point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedPath {
    pub path: Vec<u8>,
    pub error: String,
}

/// A change of a point's attributes or status after its commit. Key
/// `attrs/<vault>/<point>/<time_ns as 20 digits>-<8 random hex digits>`, written
/// create-only; the newest (greatest key) wins. Each holds the whole new state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointUpdate {
    pub time_ns: i64,
    pub hostname: String,
    pub attrs: PointAttrs,
    /// `Available`, or `Deleting` once a deletion started (the manifest goes next).
    pub status: PointStatus,
}

/// A recovery point as format 1 wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestV1 {
    pub vault: String,
    pub name: String,
    pub time_ns: i64,
    pub end_ns: i64,
    pub hostname: String,
    pub status: PointStatus,
    pub parent: Option<String>,
    pub backups: Vec<BackupEntry>,
}

impl From<ManifestV1> for Manifest {
    fn from(m: ManifestV1) -> Manifest {
        Manifest {
            vault: m.vault,
            name: m.name,
            time_ns: m.time_ns,
            end_ns: m.end_ns,
            hostname: m.hostname,
            status: m.status,
            parent: m.parent,
            backups: m.backups,
            attrs: PointAttrs::default(),
            skipped: Vec::new(),
            fail_reason: None,
            skipped_resources: Vec::new(),
            trigger: Trigger::Manual,
        }
    }
}

/// A recovery point as format 2 wrote it: [`Manifest`] without `trigger`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestV2 {
    pub vault: String,
    pub name: String,
    pub time_ns: i64,
    pub end_ns: i64,
    pub hostname: String,
    pub status: PointStatus,
    pub parent: Option<String>,
    pub backups: Vec<BackupEntry>,
    pub attrs: PointAttrs,
    pub skipped: Vec<SkippedPath>,
    pub fail_reason: Option<String>,
    pub skipped_resources: Vec<SkippedResource>,
}

impl From<ManifestV2> for Manifest {
    fn from(m: ManifestV2) -> Manifest {
        Manifest {
            vault: m.vault,
            name: m.name,
            time_ns: m.time_ns,
            end_ns: m.end_ns,
            hostname: m.hostname,
            status: m.status,
            parent: m.parent,
            backups: m.backups,
            attrs: m.attrs,
            skipped: m.skipped,
            fail_reason: m.fail_reason,
            skipped_resources: m.skipped_resources,
            trigger: Trigger::Manual,
        }
    }
}

/// What started a backup (Huawei's `auto_trigger`): a person or a script, or the
/// scheduler running the vault's policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    #[default]
    Manual,
    /// The scheduler, at a due time of the named policy.
    Policy(String),
}

impl Trigger {
    /// The policy that started it, if the scheduler did.
    pub fn policy(&self) -> Option<&str> {
        match self {
            Trigger::Manual => None,
            Trigger::Policy(p) => Some(p),
        }
    }
}

/// A recovery point: written last, its creation is the commit of a backup run.
///
/// A backup that failed after it started leaves a manifest of status `Error` under
/// `errors/<vault>/<name>` instead: a record of what failed (`fail_reason`), holding no
/// data, never a point to read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub vault: String,
    /// The point's name: its UTC time, `YYYY-MM-DDTHHMMSSZ` (plus `-N` when taken twice
    /// in one second).
    pub name: String,
    /// Start time of the backup, nanoseconds since the epoch.
    pub time_ns: i64,
    /// End time of the backup, nanoseconds since the epoch.
    pub end_ns: i64,
    pub hostname: String,
    pub status: PointStatus,
    /// The point this one was compared against for unchanged files.
    pub parent: Option<String>,
    pub backups: Vec<BackupEntry>,
    /// The attributes given at backup time (later point updates override them).
    pub attrs: PointAttrs,
    /// Paths the backup could not read, with their errors.
    pub skipped: Vec<SkippedPath>,
    /// Why the backup failed (error records only).
    pub fail_reason: Option<String>,
    /// Resources of the vault that this point could not back up, with why (the others
    /// are in `backups`).
    pub skipped_resources: Vec<SkippedResource>,
    /// Who took it: by hand, or the scheduler for a policy (format 3).
    pub trigger: Trigger,
}

/// A resource a point left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedResource {
    pub name: String,
    pub error: String,
}

/// What a vault protects on one host. Key `resources/<vault>/<name>` (format 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// The name of the backup it becomes in each point.
    pub name: String,
    pub vault: String,
    /// Only this host backs it up.
    pub hostname: String,
    pub kind: ResourceKind,
    pub created_ns: i64,
}

/// The kinds of resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResourceKind {
    /// A directory tree (or one file), with exclude patterns of its own.
    Tree {
        path: Vec<u8>,
        excludes: Vec<String>,
    },
    /// A volume or disk image file.
    Image { path: Vec<u8> },
    /// The standard output of `sh -c command`: an image, or with `tar` a tar stream
    /// expanded into a tree. A non-zero exit fails the resource.
    Command { command: String, tar: bool },
}

/// Settings of a vault as format 1 wrote them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultV1 {
    pub name: String,
    pub description: String,
    pub created_ns: i64,
}

impl From<VaultV1> for Vault {
    fn from(v: VaultV1) -> Vault {
        Vault {
            name: v.name,
            description: v.description,
            created_ns: v.created_ns,
            retention: Retention::default(),
            quota: None,
            warn_at: None,
            tags: Vec::new(),
            policy: None,
            policy_applied_ns: None,
            members: Members::default(),
        }
    }
}

/// Settings of a vault as format 2 wrote them: [`Vault`] without `policy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultV2 {
    pub name: String,
    pub description: String,
    pub created_ns: i64,
    pub retention: Retention,
    pub quota: Option<u64>,
    pub warn_at: Option<u8>,
    pub tags: Vec<(String, String)>,
}

impl From<VaultV2> for Vault {
    fn from(v: VaultV2) -> Vault {
        Vault {
            name: v.name,
            description: v.description,
            created_ns: v.created_ns,
            retention: v.retention,
            quota: v.quota,
            warn_at: v.warn_at,
            tags: v.tags,
            policy: None,
            policy_applied_ns: None,
            members: Members::default(),
        }
    }
}

/// Settings of a vault as format 3 wrote them: [`Vault`] without `members`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultV3 {
    pub name: String,
    pub description: String,
    pub created_ns: i64,
    pub retention: Retention,
    pub quota: Option<u64>,
    pub warn_at: Option<u8>,
    pub tags: Vec<(String, String)>,
    pub policy: Option<String>,
    pub policy_applied_ns: Option<i64>,
}

impl From<VaultV3> for Vault {
    fn from(v: VaultV3) -> Vault {
        Vault {
            name: v.name,
            description: v.description,
            created_ns: v.created_ns,
            retention: v.retention,
            quota: v.quota,
            warn_at: v.warn_at,
            tags: v.tags,
            policy: v.policy,
            policy_applied_ns: v.policy_applied_ns,
            members: Members::default(),
        }
    }
}

/// Who besides the mount's owner and root may read a vault through a mount with
/// `--allow-other` (format 4): local user ids, and group ids (a process is a member of
/// a group when it is its group or one of its supplementary groups). Both sorted,
/// without repeats.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

impl Members {
    pub fn is_empty(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }
}

/// A vault's own retention: the keep rules `forget` applies when given none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    pub within: Option<crate::repo::retention::Span>,
    pub tags: Vec<String>,
    pub max_age: Option<crate::repo::retention::Span>,
    /// IANA time zone of the calendar buckets; `None`: UTC.
    pub timezone: Option<String>,
}

/// Settings of a vault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vault {
    pub name: String,
    pub description: String,
    pub created_ns: i64,
    pub retention: Retention,
    /// The most stored bytes the vault's points may reference; a backup that would pass
    /// it fails before its commit.
    pub quota: Option<u64>,
    /// Percent of the quota past which a warning is logged and shown.
    pub warn_at: Option<u8>,
    /// `key=value` labels, sorted by key.
    pub tags: Vec<(String, String)>,
    /// The policy applied to the vault, at most one (format 3).
    pub policy: Option<String>,
    /// When it was applied: a scheduler that never ran the vault's backups on its host
    /// counts due times from then (format 3).
    pub policy_applied_ns: Option<i64>,
    /// Who may read the vault through a mount with `--allow-other` (format 4).
    pub members: Members,
}

/// A schedule plus retention rules, applied to vaults. Key `policies/<name>` (format 3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    /// When backups run: iCalendar RRULE strings (see `repo::schedule`), 1 to 24.
    pub schedules: Vec<String>,
    /// The time zone the rules are evaluated in: an IANA name, or `UTC`, `UTC+08:00`.
    pub timezone: String,
    /// What forget applies after each scheduled backup (when it has no rule, the vault's
    /// own retention is applied instead).
    pub retention: Retention,
    /// When prune runs (one RRULE, same time zone).
    pub prune_schedule: String,
    /// A disabled policy runs nothing.
    pub enabled: bool,
    pub created_ns: i64,
    pub updated_ns: i64,
}

/// What the scheduler of one host last did for one job. Key
/// `schedule/backup/<vault>/<host>` (the vault's backups) or
/// `schedule/prune/<policy>/<host>` (the policy's prunes), format 3. Rewritten after
/// every run; a scheduler that starts and finds a due time after `last_slot_ns` (one or
/// many, missed while none ran) runs the job once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The due time (nanoseconds since the epoch) of the last run made.
    pub last_slot_ns: i64,
    /// When that run ended, and how: `None` when it succeeded.
    pub last_run_end_ns: i64,
    pub last_error: Option<String>,
}

/// A record's older layouts: what version-2 bytes decode as (version-1 bytes name their
/// layout at each read, see [`decode_record`]). Records that format 3 left unchanged
/// (and those it added) are their own version-2 layout.
pub trait Record: for<'a> Deserialize<'a> {
    type V2: for<'a> Deserialize<'a> + Into<Self>;
    /// Decodes version-3 bytes: in the current layout, unless format 4 changed the
    /// record's layout (a vault's `members`).
    fn from_v3(bytes: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes(bytes)
    }
}

impl Record for Manifest {
    type V2 = ManifestV2;
}
impl Record for Vault {
    type V2 = VaultV2;
    fn from_v3(bytes: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes::<VaultV3>(bytes).map(Into::into)
    }
}
impl Record for PointUpdate {
    type V2 = PointUpdate;
}
impl Record for Resource {
    type V2 = Resource;
}
impl Record for UsageRecord {
    type V2 = UsageRecord;
}
impl Record for Policy {
    type V2 = Policy;
}
impl Record for ScheduleState {
    type V2 = ScheduleState;
}

/// One entry of an index object. Encoded as its fields in order, the frame table as
/// in a [`ChunkRef`] (after `raw_len`, marked by [`FRAMED`]): the index of formats 1 to
/// 4 decodes as it always did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub id: ChunkId,
    pub kind: ChunkKind,
    pub offset: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    pub frames: Option<std::sync::Arc<Frames>>,
}

impl IndexEntry {
    /// The location of this entry's chunk in `pack`.
    pub fn chunk_ref(&self, pack: PackId) -> ChunkRef {
        ChunkRef {
            id: self.id,
            pack,
            offset: self.offset,
            stored_len: self.stored_len,
            raw_len: self.raw_len,
            frames: self.frames.clone(),
        }
    }
}

impl Serialize for IndexEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (id, offset, stored_len) = (self.id, self.offset, self.stored_len);
        Encoded::new(
            id,
            self.kind,
            offset,
            stored_len,
            self.raw_len,
            &self.frames,
        )
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for IndexEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let e = Encoded::<ChunkKind>::deserialize(d)?;
        Ok(IndexEntry {
            id: e.id,
            kind: e.mid,
            offset: e.offset,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
            frames: e.frames,
        })
    }
}

/// An index object: the chunks of one pack. Key `index/<pack id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackIndex {
    pub pack: PackId,
    pub entries: Vec<IndexEntry>,
}

/// Where the live chunks of a pack removed by prune went. Key `forward/<old pack id>`.
///
/// Trees carry chunk locations, and trees are immutable: a reader whose chunk's pack is
/// gone looks here (and follows further forwards if the new pack was itself repacked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    /// The removed pack.
    pub pack: PackId,
    /// Each moved chunk's id and its new location.
    pub moved: Vec<ChunkRef>,
}

/// The last computed usage of a vault, for views that may not walk trees (the mount).
/// Key `usage/<vault>`, rewritten by every command that computes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub time_ns: i64,
    /// The vault's points the figures are of (sorted): current while the list is.
    pub points: Vec<String>,
    pub chunks: u64,
    pub bytes: u64,
    pub shared_bytes: u64,
}

/// A writer's lock. Key `locks/<random>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub hostname: String,
    pub pid: u32,
    pub time_ns: i64,
    pub command: String,
}

/// Argon2id parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub salt: [u8; 16],
}

/// One password's copy of the master keys: key `keys/<id>` (format 4), plaintext, framed
/// as `KEY_MAGIC || u8 KEY_LAYOUT || postcard(KeyFile)` then a 32-byte code (see
/// `repo::keys`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// Argon2id parameters and this copy's own random salt.
    pub kdf: KdfParams,
    /// The master keys sealed under the password-derived key: nonce || ciphertext || tag.
    pub sealed_keys: Vec<u8>,
    pub created_ns: i64,
    /// Where and by whom the key was added, for `key list`.
    pub hostname: String,
    pub username: String,
}

/// FastCDC parameters, fixed for the life of a repository (changing them would defeat
/// deduplication).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min_size: 128 * 1024,
            avg_size: 512 * 1024,
            max_size: 2 * 1024 * 1024,
        }
    }
}

/// The plaintext `config` object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub repo_id: [u8; 16],
    pub created_ns: i64,
    pub kdf: KdfParams,
    /// The master keys, sealed with the password-derived key: nonce || ciphertext || tag.
    /// Empty in format 4 once this copy was removed (`key remove config`, `key passwd`):
    /// the key objects `keys/<id>` then hold every copy.
    pub sealed_keys: Vec<u8>,
    pub chunker: ChunkerParams,
    /// Target size of pack objects in bytes.
    pub pack_size: u32,
    /// zstd level for chunks.
    pub zstd_level: i32,
}

/// Encodes the `config` object's signed part: magic, version, postcard. Format 2 appends
/// a [`CONFIG_MAC_LEN`]-byte authentication code of these bytes (see `Repository`).
pub fn encode_config(config: &Config, version: u32) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&postcard::to_stdvec(config).expect("config encodes"));
    out
}

/// Why a `config` object could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("not a vaultfs repository (bad magic in the config object)")]
    BadMagic,
    #[error(
        "repository format version {0} is not supported by this vaultfs (it reads versions {OLDEST_FORMAT} to {FORMAT_VERSION})"
    )]
    Version(u32),
    #[error("the config object is damaged: {0}")]
    Decode(postcard::Error),
    #[error("the config object failed authentication: it was changed or damaged")]
    Tampered,
    /// It decodes, but a setting is outside what this build can use (see [`check_config`]).
    #[error("the config object is damaged: {0}")]
    Unusable(String),
}

/// A decoded `config` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFile {
    pub version: u32,
    pub config: Config,
    /// Format 2: the authentication code, and the length of the bytes it covers.
    pub mac: Option<([u8; CONFIG_MAC_LEN], usize)>,
}

/// Decodes the `config` object (the code is checked once the keys are open).
pub fn decode_config(data: &[u8]) -> Result<ConfigFile, ConfigError> {
    if data.len() < 12 || &data[..8] != MAGIC {
        return Err(ConfigError::BadMagic);
    }
    let version = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
    let (body, mac) = match version {
        1 => (&data[12..], None),
        2..=FORMAT_VERSION => {
            let Some(signed) = data.len().checked_sub(CONFIG_MAC_LEN).filter(|&n| n >= 12) else {
                return Err(ConfigError::Tampered);
            };
            let mac: [u8; CONFIG_MAC_LEN] = data[signed..].try_into().expect("length checked");
            (&data[12..signed], Some((mac, signed)))
        }
        v => return Err(ConfigError::Version(v)),
    };
    let config = postcard::from_bytes(body).map_err(ConfigError::Decode)?;
    check_config(&config).map_err(ConfigError::Unusable)?;
    Ok(ConfigFile {
        version,
        config,
        mac,
    })
}

/// Largest target pack size a repository may have (`init --pack-size-mib` allows 1024).
pub const MAX_PACK_SIZE: u32 = 1 << 30;

/// Checks the settings of a `config` object (read from storage before anything
/// authenticates it, or asked for by `init`) against what this build can use, so that a
/// damaged one is an error here and never a panic (FastCDC asserts its bounds) or a
/// runaway allocation (a pack buffer is `pack_size` bytes) later. Argon2id parameters are
/// checked where a key is derived (`crypto::check_kdf`): the key objects may still open
/// a repository whose config copy is unusable.
pub fn check_config(c: &Config) -> Result<(), String> {
    use fastcdc::v2020 as cdc;
    let ChunkerParams {
        min_size,
        avg_size,
        max_size,
    } = c.chunker;
    let within = |what: &str, v: u32, lo: u32, hi: u32| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(format!("chunker {what} {v} is outside {lo}..={hi}"))
        }
    };
    within("minimum", min_size, cdc::MINIMUM_MIN, cdc::MINIMUM_MAX)?;
    within("average", avg_size, cdc::AVERAGE_MIN, cdc::AVERAGE_MAX)?;
    within("maximum", max_size, cdc::MAXIMUM_MIN, cdc::MAXIMUM_MAX)?;
    if !(min_size <= avg_size && avg_size <= max_size) {
        return Err(format!(
            "chunker sizes {min_size}/{avg_size}/{max_size} are not in order"
        ));
    }
    if !(1..=MAX_PACK_SIZE).contains(&c.pack_size) {
        return Err(format!(
            "pack size {} is outside 1..={MAX_PACK_SIZE}",
            c.pack_size
        ));
    }
    let levels = zstd::compression_level_range();
    if !levels.contains(&c.zstd_level) {
        return Err(format!(
            "zstd level {} is outside {}..={}",
            c.zstd_level,
            levels.start(),
            levels.end()
        ));
    }
    Ok(())
}

/// The plaintext of a record (manifest, vault, point update, resource, usage, policy,
/// schedule state): [`RECORD_VERSION`], then postcard.
pub fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    postcard::to_io(value, &mut out).expect("in-memory encoding cannot fail");
    out
}

/// Decodes a record written by this format (`RECORD_VERSION`), by format 3 (as
/// [`Record::from_v3`] says), by format 2 (as `T::V2`) or, as its format-1 layout `Old`,
/// by format 1.
pub fn decode_record<Old, T>(data: &[u8]) -> Result<T, String>
where
    Old: for<'a> Deserialize<'a> + Into<T>,
    T: Record,
{
    match data.split_first() {
        Some((&OBJECT_VERSION, rest)) => postcard::from_bytes::<Old>(rest)
            .map(Into::into)
            .map_err(|e| format!("undecodable ({e})")),
        Some((&RECORD_VERSION_2, rest)) => postcard::from_bytes::<T::V2>(rest)
            .map(Into::into)
            .map_err(|e| format!("undecodable ({e})")),
        Some((&RECORD_VERSION_3, rest)) => {
            T::from_v3(rest).map_err(|e| format!("undecodable ({e})"))
        }
        Some((&RECORD_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| format!("undecodable ({e})"))
        }
        Some((v, _)) => Err(format!("unknown object version {v}")),
        None => Err("empty object".to_string()),
    }
}

/// The plaintext of a metadata object: version byte, then postcard.
pub fn encode_object<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![OBJECT_VERSION];
    postcard::to_io(value, &mut out).expect("in-memory encoding cannot fail");
    out
}

/// Decodes what [`encode_object`] made; an error says what is wrong.
pub fn decode_object<T: for<'a> Deserialize<'a>>(data: &[u8]) -> Result<T, String> {
    match data.split_first() {
        Some((&OBJECT_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| format!("undecodable ({e})"))
        }
        Some((v, _)) => Err(format!("unknown object version {v}")),
        None => Err("empty object".to_string()),
    }
}

/// A name (file, member, symlink target: raw bytes) as text safe to print on a terminal
/// or into a log: invalid UTF-8 becomes U+FFFD, and control characters (C0, DEL, C1: the
/// escape sequences an archive could smuggle in) become `\xNN` / `\u{NN}` escapes.
pub fn printable(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    if !s.chars().any(char::is_control) {
        return s.into_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Like [`printable`], but keeping bytes that are not UTF-8 as they are (for `ls`, whose
/// output scripts may read back as names): only control characters are escaped.
pub fn printable_bytes(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let b = name[i];
        if b < 0x20 || b == 0x7f {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else if b == 0xc2 && name.get(i + 1).is_some_and(|n| (0x80..0xa0).contains(n)) {
            out.extend_from_slice(format!("\\u{{{:x}}}", name[i + 1]).as_bytes());
            i += 1;
        } else {
            out.push(b);
        }
        i += 1;
    }
    out
}

/// [`printable`] of a path.
pub fn printable_path(p: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    printable(p.as_os_str().as_bytes())
}

/// Formats a time as a point name: `2026-11-22T225501Z`.
pub fn point_name(time_ns: i64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(time_ns);
    t.format("%Y-%m-%dT%H%M%SZ").to_string()
}

/// Formats a time as RFC 3339 with seconds, for JSON and listings.
pub fn rfc3339(time_ns: i64) -> String {
    let t = chrono::DateTime::from_timestamp_nanos(time_ns);
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Current time in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_nanos() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_names_escape_control_characters() {
        assert_eq!(printable(b"plain name.txt"), "plain name.txt");
        assert_eq!(printable(b"a\x1b[31mred\x07\n"), "a\\x1b[31mred\\x07\\x0a");
        assert_eq!(printable("\u{9b}2J é".as_bytes()), "\\u{9b}2J é");
        assert_eq!(printable(b"bad\xff"), "bad\u{fffd}");
        assert_eq!(
            printable_bytes(b"raw\xff\x1b]0;x\x07"),
            b"raw\xff\\x1b]0;x\\x07"
        );
        assert_eq!(printable_bytes("\u{9b}é".as_bytes()), "\\u{9b}é".as_bytes());
    }

    #[test]
    fn point_names_sort_by_time() {
        let a = point_name(1_700_000_000_000_000_000);
        let b = point_name(1_700_000_001_000_000_000);
        assert_eq!(a, "2023-11-14T221320Z");
        assert!(a < b);
    }

    #[test]
    fn vault_records_of_format_3_decode_without_members() {
        let v3 = VaultV3 {
            name: "prod".into(),
            description: "d".into(),
            created_ns: 5,
            retention: Retention {
                last: 3,
                ..Default::default()
            },
            quota: Some(9),
            warn_at: None,
            tags: vec![("k".into(), "v".into())],
            policy: Some("nightly".into()),
            policy_applied_ns: Some(6),
        };
        let mut bytes = vec![RECORD_VERSION_3];
        bytes.extend(postcard::to_stdvec(&v3).unwrap());
        let v: Vault = decode_record::<VaultV1, Vault>(&bytes).unwrap();
        assert_eq!(v, Vault::from(v3));
        assert_eq!(v.policy.as_deref(), Some("nightly"));
        assert!(v.members.is_empty());
        // Format 4 writes the members, and reads them back.
        let mut shared = v;
        shared.members = Members {
            uids: vec![1000],
            gids: vec![100],
        };
        let enc = encode_record(&shared);
        assert_eq!(enc[0], RECORD_VERSION);
        assert_eq!(decode_record::<VaultV1, Vault>(&enc).unwrap(), shared);
        // Other records' version-3 bytes are their current layout.
        let state = ScheduleState {
            last_slot_ns: 1,
            last_run_end_ns: 2,
            last_error: None,
        };
        let mut bytes = vec![RECORD_VERSION_3];
        bytes.extend(postcard::to_stdvec(&state).unwrap());
        assert_eq!(
            decode_record::<ScheduleState, ScheduleState>(&bytes).unwrap(),
            state
        );
    }

    #[test]
    fn config_roundtrip_and_bad_magic() {
        let c = Config {
            repo_id: [1; 16],
            created_ns: 5,
            kdf: KdfParams {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1,
                salt: [2; 16],
            },
            sealed_keys: vec![1, 2, 3],
            chunker: ChunkerParams::default(),
            pack_size: 1 << 20,
            zstd_level: 3,
        };
        let enc = encode_config(&c, 1);
        assert_eq!(decode_config(&enc).unwrap().config, c);
        let mut v2 = encode_config(&c, 2);
        let signed = v2.len();
        v2.extend_from_slice(&[7; CONFIG_MAC_LEN]);
        let f = decode_config(&v2).unwrap();
        assert_eq!(
            (f.version, f.config, f.mac),
            (2, c.clone(), Some(([7; 32], signed)))
        );
        assert!(matches!(
            decode_config(&v2[..signed]),
            Err(ConfigError::Decode(_))
        ));
        let mut bad = enc.clone();
        bad[0] = b'X';
        assert!(matches!(decode_config(&bad), Err(ConfigError::BadMagic)));
        let mut newer = enc;
        newer[8] = 9;
        assert!(matches!(
            decode_config(&newer),
            Err(ConfigError::Version(9))
        ));
    }
}
