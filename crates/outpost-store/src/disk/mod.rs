//! The SSD tier ([`DiskStore`]): append-only segment files in one directory, an in-RAM index
//! (28-byte slots, see `table.rs`), tag and prefix indexes, purge tombstones in `purges.log`, a
//! byte budget enforced by reclaiming whole segments oldest first (hot survivors are re-appended),
//! and TinyLFU admission when the tier is full (`admission.rs`).
//!
//! # Durability contract
//!
//! A fill (or purge) is *committed* once `insert` (or `remove*`) has returned: its record was
//! written whole with `pwrite(2)` into the page cache. A streamed fill is committed once
//! [`StreamFill::commit`] has returned; one cut before that leaves a `PENDING` reservation that
//! recovery skips (see `stream.rs` and `format.rs`). Committed records survive `kill -9` and
//! any crash of the process (the kernel still writes them back). They do not necessarily survive
//! a power loss or kernel crash: nothing is `fsync`ed on the write path; [`DiskStore::flush`]
//! (`fdatasync` of the active segment and the purge log) is the caller's option, e.g. at
//! shutdown. A record cut by a crash (torn: shorter than its header says) or damaged (checksum
//! mismatch) is ignored at recovery together with the rest of its file; every earlier record and
//! every other segment still counts. A purged object is never resurrected: its tombstone is
//! written before `remove*` returns, and recovery drops every older record it matches. Objects
//! reclamation dropped, or whose segment was retired, may come back after a restart as the
//! newest *surviving* record of their key (a valid, older response whose own freshness
//! metadata still governs it).
//!
//! # Failure behaviour
//!
//! Only a directory written by a newer format version (or a `FORMAT` file that is not ours) is
//! refused at open ([`OpenError::fallback_to_ram`] is false). A missing directory is created; one
//! that cannot be created or written gives an [`OpenError::Io`] the caller logs before going on
//! with RAM only. At run time every I/O error is counted and logged (rate-limited) and the
//! operation degrades: a failed append rejects the insert, a failed read is a miss and retires
//! the segment. Nothing here panics on bad bytes.

mod admission;
mod chunked;
mod format;
mod index;
mod recovery;
mod segment;
mod stream;
mod table;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;

pub use chunked::{ChunkError, ChunkReader, ChunkedHit};
pub use format::{FormatError, DEFAULT_CHUNK_BYTES, FORMAT_VERSION};
pub use index::{index_footprint, IndexFootprint};
pub use recovery::RecoveryReport;
pub use stream::{StreamFill, StreamTap, TapError, TapReader};

use format::{
    decode_object, encode_meta, encode_object, encode_pending, encode_purge, format_file_text,
    object_record_len, parse_format_file, set_sequence, verify_record, DecodeError, RecordKind,
    StreamLayout, FORMAT_FILE, SEGMENT_HEADER_LEN,
};
use index::{expiry_secs, DiskIndex, IndexEntry, FLAG_HOT};
use segment::{read_at, PurgeFile, Segment};

use crate::policy::PolicyKind;
use crate::store::Admission;
use crate::{CacheKey, StoredObject};
use admission::DiskAdmission;

/// Default segment size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 256 << 20;
/// Purge-log compaction happens once at least this many tombstones are obsolete.
const COMPACT_MIN_OBSOLETE: usize = 64;

/// Why the SSD tier could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory holds data of a newer on-disk format: refused, never misread.
    #[error(
        "store directory: {} was written by on-disk format version {found}, but this build \
         reads only version {supported}; refusing to use it (run a newer outpost, or point \
         store.dir at another directory)",
        .path.display()
    )]
    FutureFormat {
        /// The file that carries the version.
        path: PathBuf,
        /// Version found.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },
    /// The directory's `FORMAT` file is not ours: refused rather than overwritten.
    #[error(
        "store directory: {} is not an outpost store format file ({reason}); refusing to use \
         the directory",
        .path.display()
    )]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process holds the directory's lock.
    #[error(
        "store directory: {} is in use by another process (it holds {}); two nodes must not \
         share one store.dir",
        .dir.display(),
        .lock.display()
    )]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The directory cannot be created, read or written.
    #[error("store directory: cannot {op} {}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl OpenError {
    /// Whether the node may go on with the RAM tier only (I/O trouble), as opposed to a
    /// directory it must refuse (a newer format, a foreign `FORMAT` file).
    pub fn fallback_to_ram(&self) -> bool {
        matches!(self, OpenError::Io { .. })
    }

    /// Stable name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            OpenError::FutureFormat { .. } => "future_format",
            OpenError::NotAStore { .. } => "not_a_store",
            OpenError::InUse { .. } => "in_use",
            OpenError::Io { .. } => "io",
        }
    }
}

/// Settings of the SSD tier.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// Directory of the segment files (`store.dir`).
    pub dir: PathBuf,
    /// Byte budget of the segment files (`store.disk_bytes`).
    pub disk_bytes: u64,
    /// Segment size (clamped to `disk_bytes / 2` and `u32::MAX`).
    pub segment_bytes: u64,
    /// Body chunk size.
    pub chunk_bytes: u32,
    /// Admission policy (W-TinyLFU filters fills by frequency when the tier is full; the
    /// others admit every fill).
    pub policy: PolicyKind,
}

impl DiskConfig {
    /// Defaults: 256 MiB segments, 1 MiB chunks, W-TinyLFU.
    pub fn new(dir: impl Into<PathBuf>, disk_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            disk_bytes,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            policy: PolicyKind::default(),
        }
    }
}

/// Counters and gauges of the SSD tier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Objects indexed.
    pub objects: u64,
    /// Bytes of indexed records.
    pub live_bytes: u64,
    /// Bytes of segment files.
    pub used_bytes: u64,
    /// Byte budget.
    pub capacity_bytes: u64,
    /// Segment size in use.
    pub segment_bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Gets that returned an object.
    pub hits: u64,
    /// Gets that returned nothing.
    pub misses: u64,
    /// Records appended by inserts.
    pub inserts: u64,
    /// Inserts the admission policy refused.
    pub rejected: u64,
    /// Inserts too large for a segment.
    pub too_large: u64,
    /// Objects dropped by the policy or by segment reclamation.
    pub evictions: u64,
    /// Objects dropped because `keep_until` passed.
    pub expired: u64,
    /// Segments reclaimed to stay within the budget.
    pub reclaimed_segments: u64,
    /// Hot survivors re-appended by reclamation.
    pub reappended: u64,
    /// Reads whose checksum (or structure) did not verify.
    pub checksum_failures: u64,
    /// Segments retired after a checksum failure or read error.
    pub retired_segments: u64,
    /// I/O errors.
    pub io_errors: u64,
    /// Tombstones held in the purge log.
    pub tombstones: u64,
    /// Tag index references (live and not yet swept).
    pub tag_refs: u64,
    /// Prefix index entries (live and not yet swept).
    pub prefix_entries: u64,
    /// Range reads served ([`DiskStore::get_range`] hits).
    pub range_reads: u64,
    /// Body chunks those range reads touched.
    pub range_chunks_read: u64,
    /// Body chunks read one at a time by [`ChunkReader`]s (large hits and ranges).
    pub chunks_served: u64,
    /// Hits served chunk by chunk ([`ChunkedHit::served`]; also counted in `hits`).
    pub chunked_hits: u64,
    /// Fills streamed onto SSD (reservations made).
    pub stream_fills: u64,
    /// Streamed fills committed and indexed.
    pub stream_commits: u64,
    /// Streamed fills that failed or were abandoned before their body was whole.
    pub stream_aborts: u64,
    /// Streamed fills written whole but not indexed (purged meanwhile, segment gone).
    pub stream_dropped: u64,
    /// Bytes readers following streamed fills read from SSD.
    pub stream_tap_bytes: u64,
}

/// Everything of a fill to stream except its body (see [`DiskStore::begin_stream`]).
#[derive(Debug, Clone)]
pub struct StreamHead {
    /// Response status.
    pub status: http::StatusCode,
    /// Response headers as stored.
    pub headers: http::HeaderMap,
    /// Metadata (`derived` is not persisted).
    pub meta: crate::ObjectMeta,
    /// The body length the origin announced.
    pub body_len: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: u64,
    misses: u64,
    inserts: u64,
    rejected: u64,
    too_large: u64,
    evictions: u64,
    expired: u64,
    reclaimed_segments: u64,
    reappended: u64,
    checksum_failures: u64,
    retired_segments: u64,
    io_errors: u64,
    range_reads: u64,
    range_chunks_read: u64,
    chunks_served: u64,
    chunked_hits: u64,
    stream_fills: u64,
    stream_commits: u64,
    stream_aborts: u64,
    stream_dropped: u64,
}

/// Part of a stored body with the object's head: the answer of [`DiskStore::get_range`].
#[derive(Debug, Clone)]
pub struct RangeRead {
    /// Response status.
    pub status: http::StatusCode,
    /// Stored response headers.
    pub headers: http::HeaderMap,
    /// Metadata.
    pub meta: crate::ObjectMeta,
    /// Length of the whole body.
    pub body_len: u64,
    /// Where `bytes` start in the body.
    pub start: u64,
    /// The requested bytes, clamped to the body.
    pub bytes: bytes::Bytes,
    /// Body chunks read from SSD to answer.
    pub chunks_read: u32,
}

enum RangeError {
    KeyMismatch,
    Corrupt(FormatError),
    Io(io::Error),
}

/// A record's head, read and verified: what a hit needs before its body.
struct Head {
    status: http::StatusCode,
    headers: http::HeaderMap,
    meta: crate::ObjectMeta,
    body_len: u64,
    chunk_size: u64,
    chunks: Vec<format::ChunkRef>,
}

/// Reads and verifies the record prefix (header, meta section, chunk table) of `entry`,
/// checking it belongs to `key`; the body is left on disk.
fn read_head(file: &std::fs::File, entry: IndexEntry, key: &str) -> Result<Head, RangeError> {
    let base = u64::from(entry.offset);
    let first = (entry.len as usize).min(4096);
    let mut prefix = read_at(file, base, first).map_err(RangeError::Io)?;
    let header = format::RecordHeader::parse(&prefix).map_err(RangeError::Corrupt)?;
    let plen = usize::try_from(header.prefix_len())
        .map_err(|_| RangeError::Corrupt(FormatError::TooLarge))?;
    if plen > entry.len as usize || u64::from(header.total_len) != u64::from(entry.len) {
        return Err(RangeError::Corrupt(FormatError::Invalid("record length")));
    }
    if plen > prefix.len() {
        prefix = read_at(file, base, plen).map_err(RangeError::Io)?;
    }
    let (_, view, chunks) = format::parse_prefix(&prefix).map_err(RangeError::Corrupt)?;
    if view.key != key {
        return Err(RangeError::KeyMismatch);
    }
    Ok(Head {
        status: http::StatusCode::from_u16(view.status)
            .map_err(|_| RangeError::Corrupt(FormatError::Invalid("status")))?,
        headers: view.headers().map_err(RangeError::Corrupt)?,
        meta: view.object_meta().map_err(RangeError::Corrupt)?,
        body_len: view.body_len,
        chunk_size: u64::from(view.chunk_size),
        chunks,
    })
}

/// A persisted purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tombstone {
    pub seq: u64,
    pub kind: RecordKind,
    pub text: Box<str>,
}

/// A hot record being moved out of a reclaimed segment.
struct Survivor {
    hash: u64,
    bytes: Vec<u8>,
    tags: Vec<String>,
    expires: u32,
}

struct Inner {
    /// Holds an exclusive lock on `dir/LOCK` for as long as the tier or a streamed fill of it is
    /// alive (released on drop or exit).
    _lock: std::fs::File,
    dir: PathBuf,
    segment_bytes: u64,
    disk_bytes: u64,
    index: DiskIndex,
    admission: DiskAdmission,
    /// Records of `victims_segment` (the oldest) that a full tier would drop next, in order.
    victims: std::collections::VecDeque<u64>,
    victims_segment: Option<u32>,
    segments: BTreeMap<u32, Segment>,
    active: Option<u32>,
    next_segment: u32,
    next_seq: u64,
    purge: Option<PurgeFile>,
    tombstones: Vec<Tombstone>,
    c: Counters,
}

/// The SSD tier. Thread-safe: one mutex guards the index, the admission filter and the appender; reads
/// copy the record location under it and `pread` outside it.
pub struct DiskStore {
    dir: PathBuf,
    chunk_bytes: u32,
    max_record: u64,
    inner: Arc<Mutex<Inner>>,
    /// Bytes read by followers of streamed fills (shared with every fill's readers).
    tap_bytes: Arc<AtomicU64>,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("dir", &self.dir)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("max_record", &self.max_record)
            .finish()
    }
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> OpenError {
    let path = path.to_path_buf();
    move |source| OpenError::Io { path, op, source }
}

/// Reads the directory's `FORMAT` file (refusing newer or foreign ones) or writes it.
/// Take the directory's exclusive lock (`LOCK`, an advisory `flock` the kernel drops when the
/// process dies, so a `kill -9` never leaves it stale). A lock can linger for a moment after its
/// holder closed it when a forked child still shares the descriptor (until the child's exec), so
/// a busy lock is retried for ~250 ms before the directory is declared in use.
fn lock_dir(dir: &Path) -> Result<std::fs::File, OpenError> {
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path, "open"))?;
    let mut tries = 0;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if tries < 25 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::InUse {
                    dir: dir.to_path_buf(),
                    lock: path,
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(OpenError::Io {
                    path,
                    op: "lock",
                    source: e,
                })
            }
        }
    }
}

fn check_format_file(dir: &Path) -> Result<(), OpenError> {
    let path = dir.join(FORMAT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            match parse_format_file(&text) {
                Ok(found) if found > FORMAT_VERSION => Err(OpenError::FutureFormat {
                    path,
                    found,
                    supported: FORMAT_VERSION,
                }),
                Ok(0) => Err(OpenError::NotAStore {
                    path,
                    reason: "version 0".into(),
                }),
                Ok(found) if found < FORMAT_VERSION => {
                    // Older data stays readable; the directory is marked with this version so
                    // that older builds refuse it rather than misread what this one writes.
                    write_format_file(dir)
                }
                Ok(_) => Ok(()),
                Err(e) => Err(OpenError::NotAStore {
                    path,
                    reason: e.to_string(),
                }),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => write_format_file(dir),
        Err(e) => Err(io_err(&path, "read")(e)),
    }
}

/// Writes this build's `FORMAT` file (via a temporary file and a rename).
fn write_format_file(dir: &Path) -> Result<(), OpenError> {
    let path = dir.join(FORMAT_FILE);
    let tmp = dir.join("FORMAT.tmp");
    std::fs::write(&tmp, format_file_text()).map_err(io_err(&tmp, "write"))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path, "create"))?;
    Ok(())
}

impl DiskStore {
    /// Opens (or creates) the tier in `cfg.dir` and recovers its contents. `now` drops records
    /// already past `keep_until`.
    pub fn open(cfg: &DiskConfig, now: SystemTime) -> Result<(Self, RecoveryReport), OpenError> {
        let dir = cfg.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir, "create the directory"))?;
        let lock = lock_dir(&dir)?;
        check_format_file(&dir)?;
        let segment_bytes = cfg
            .segment_bytes
            .min(u64::from(u32::MAX))
            .min(cfg.disk_bytes / 2)
            .max(SEGMENT_HEADER_LEN as u64);
        let max_record = segment_bytes - SEGMENT_HEADER_LEN as u64;

        let recovered = recovery::recover(&dir, now)?;
        let mut report = recovered.report;
        let index = recovered.index;
        report.indexed = index.len() as u64;
        let purge = PurgeFile::open(&dir, recovered.purge_valid_len)
            .map_err(io_err(&dir, "open the purge log in"))?;
        let mut inner = Inner {
            _lock: lock,
            dir: dir.clone(),
            segment_bytes,
            disk_bytes: cfg.disk_bytes,
            index,
            admission: DiskAdmission::new(cfg.policy),
            victims: std::collections::VecDeque::new(),
            victims_segment: None,
            segments: recovered.segments,
            active: None,
            next_segment: recovered.next_segment,
            next_seq: recovered.next_seq,
            purge: Some(purge),
            tombstones: recovered.tombstones,
            c: Counters::default(),
        };
        // Go on appending to the newest segment when it ends with a whole record, has room and
        // the budget still holds; otherwise open a fresh one (which reclaims as needed). Either
        // way the directory is proven writable.
        // More on disk than the budget allows (it shrank) is reclaimed oldest first here.
        let before = inner.index.len();
        if !inner.reuse_newest(&recovered.clean) {
            inner
                .rotate()
                .map_err(io_err(&dir, "create a segment in"))?;
        }
        report.evicted += before.saturating_sub(inner.index.len()) as u64;
        report.indexed = inner.index.len() as u64;
        Ok((
            Self {
                dir,
                chunk_bytes: cfg.chunk_bytes.max(1),
                max_record,
                inner: Arc::new(Mutex::new(inner)),
                tap_bytes: Arc::new(AtomicU64::new(0)),
            },
            report,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The largest record (object + metadata) an insert accepts.
    pub fn max_record_bytes(&self) -> u64 {
        self.max_record
    }

    /// Bytes the record of `obj` under `key` takes on disk.
    pub fn record_len(&self, key: &CacheKey, obj: &StoredObject) -> u64 {
        object_record_len(key, obj, self.chunk_bytes)
    }

    /// Reads, verifies and decodes the object of `key`. A checksum mismatch is a miss, counted,
    /// and retires the segment. The access is recorded for admission and marks the record hot.
    pub fn get(&self, key: &CacheKey, now: SystemTime) -> Option<StoredObject> {
        let hash = key.hash64();
        let (file, path, entry) = {
            let mut inner = self.lock();
            let (entry, segment) = inner.locate(hash, Some(now))?;
            let path = (entry.len as usize >= segment::LARGE_READ).then(|| segment.path.clone());
            (segment.file.clone(), path, entry)
        };
        // I/O and verification happen outside the lock.
        let (offset, len) = (u64::from(entry.offset), entry.len as usize);
        let read = match &path {
            // Any failure of the own handle (reclaimed meanwhile, out of descriptors) falls back
            // to the shared one, so only a failed read of the record itself retires a segment.
            Some(path) => {
                segment::read_large(path, offset, len).or_else(|_| read_at(&file, offset, len))
            }
            None => read_at(&file, offset, len),
        };
        let result = read.map(|bytes| decode_object(Bytes::from(bytes), key.text()));
        let mut inner = self.lock();
        let same = |inner: &Inner| {
            inner
                .index
                .entries
                .get(&hash)
                .is_some_and(|e| e.location() == entry.location())
        };
        let decoded = match result {
            Ok(decoded) => decoded,
            Err(e) => {
                let path = segment::segment_path(&self.dir, entry.segment);
                inner.note_io("read a record from", &path, &e);
                if same(&inner) {
                    inner.retire(entry.segment, "read error");
                }
                inner.c.misses += 1;
                return None;
            }
        };
        match decoded {
            Ok(obj) => {
                if now >= obj.meta.keep_until {
                    if same(&inner) {
                        inner.drop_hash(hash);
                    }
                    inner.c.expired += 1;
                    inner.c.misses += 1;
                    return None;
                }
                if same(&inner) {
                    if let Some(e) = inner.index.entries.get_mut(&hash) {
                        e.flags |= FLAG_HOT;
                    }
                    let resident = inner.index.len();
                    inner.admission.record(hash, resident);
                }
                inner.c.hits += 1;
                Some(obj)
            }
            Err(DecodeError::KeyMismatch) => {
                inner.c.misses += 1;
                None
            }
            Err(DecodeError::Corrupt(e)) => {
                inner.c.checksum_failures += 1;
                inner.c.misses += 1;
                if !same(&inner) {
                    // Moved or replaced meanwhile (a reclaimed file read while being deleted).
                    return None;
                }
                tracing::warn!(
                    target: "outpost_store::disk",
                    segment = entry.segment,
                    offset = entry.offset,
                    key = key.text(),
                    error = %e,
                    checksum_failures = inner.c.checksum_failures,
                    "SSD tier: record failed verification; served as a miss, segment retired"
                );
                inner.retire(entry.segment, "checksum mismatch");
                None
            }
        }
    }

    /// Opens the object of `key` for reading chunk by chunk: its head is read and verified now,
    /// its body by the [`ChunkedHit::reader`]s made from it, one verified chunk at a time (see
    /// `chunked.rs`). Absent keys, records shorter than `min_record` bytes and expired ones are
    /// left to [`DiskStore::get`] (`None`, no miss counted). The caller decides whether to serve it; only
    /// [`ChunkedHit::served`] counts the hit (so a declined one is not counted twice when the
    /// caller goes on with `get`). A head that does not verify is a miss and retires the segment.
    pub fn get_chunked(
        &self,
        key: &CacheKey,
        min_record: u64,
        now: SystemTime,
    ) -> Option<ChunkedHit> {
        let hash = key.hash64();
        let (file, entry) = {
            let mut inner = self.lock();
            // Absent, short and expired records are left to `get`, which counts them once.
            let take = |e: &IndexEntry| u64::from(e.len) >= min_record && !e.expired(now);
            if !inner.index.entries.get(&hash).is_some_and(take) {
                return None;
            }
            let (entry, segment) = inner.locate(hash, Some(now))?;
            (segment.file.clone(), entry)
        };
        let result = read_head(&file, entry, key.text());
        let mut inner = self.lock();
        let same = inner
            .index
            .entries
            .get(&hash)
            .is_some_and(|e| e.location() == entry.location());
        match result {
            // Counted as a hit (and marked hot) only when served: see `ChunkedHit::served`.
            Ok(head) if now < head.meta.keep_until => Some(ChunkedHit {
                status: head.status,
                headers: head.headers,
                meta: head.meta,
                body_len: head.body_len,
                source: Arc::new(chunked::Source {
                    inner: self.inner.clone(),
                    file,
                    dir: self.dir.clone(),
                    hash,
                    entry,
                    key: key.text().to_owned(),
                    chunks: head.chunks,
                    chunk_size: head.chunk_size,
                }),
            }),
            Ok(_) => {
                // Expired: dropped and counted here; the miss is the caller's `get`.
                if same {
                    inner.drop_hash(hash);
                }
                inner.c.expired += 1;
                None
            }
            Err(RangeError::KeyMismatch) => {
                inner.c.misses += 1;
                None
            }
            Err(RangeError::Io(e)) => {
                let path = segment::segment_path(&self.dir, entry.segment);
                inner.note_io("read a record from", &path, &e);
                if same {
                    inner.retire(entry.segment, "read error");
                }
                inner.c.misses += 1;
                None
            }
            Err(RangeError::Corrupt(e)) => {
                inner.c.checksum_failures += 1;
                inner.c.misses += 1;
                if same {
                    tracing::warn!(
                        target: "outpost_store::disk",
                        segment = entry.segment,
                        key = key.text(),
                        error = %e,
                        "SSD tier: record head failed verification; served as a miss, segment retired"
                    );
                    inner.retire(entry.segment, "checksum mismatch");
                }
                None
            }
        }
    }

    /// Reads bytes `range` (end exclusive, clamped to the body) of `key`'s body into one buffer,
    /// touching only the record head and the chunks that overlap the range, each verified (a
    /// [`DiskStore::get_chunked`] read whole).
    pub fn get_range(
        &self,
        key: &CacheKey,
        range: std::ops::Range<u64>,
        now: SystemTime,
    ) -> Option<RangeRead> {
        let hit = self.get_chunked(key, 0, now)?;
        hit.served();
        let reader = hit.reader(range);
        let start = reader.start();
        let chunks_read = reader.chunks_left() as u32;
        let bytes = reader.read_all().ok()?;
        Some(RangeRead {
            status: hit.status,
            headers: hit.headers,
            meta: hit.meta,
            body_len: hit.body_len,
            start,
            bytes,
            chunks_read,
        })
    }

    /// Whether `key`'s hash is indexed (no I/O, no access recorded).
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.lock().index.entries.contains_key(&key.hash64())
    }

    /// Appends `obj` under `key` if the admission policy lets it in. A replacement of a stored
    /// key is always admitted; the older record becomes dead space.
    pub fn insert(&self, key: &CacheKey, obj: &StoredObject, _now: SystemTime) -> Admission {
        let hash = key.hash64();
        let len = object_record_len(key, obj, self.chunk_bytes);
        let record = if len > self.max_record {
            None
        } else {
            encode_object(0, key, obj, self.chunk_bytes).ok()
        };
        let mut inner = self.lock();
        let Some(mut record) = record else {
            // The new version supersedes the stored one even though it cannot be kept.
            inner.drop_hash(hash);
            inner.c.too_large += 1;
            return Admission::TooLarge;
        };
        let replacing = inner.index.remove(hash).is_some();
        let resident = inner.index.len();
        inner.admission.record(hash, resident);
        if !replacing && inner.full() {
            let victim = inner.next_victim();
            if !inner.admission.admits(hash, victim) {
                inner.c.rejected += 1;
                return Admission::Rejected;
            }
            if victim.is_some() {
                // The records this fill displaces; the next fill meets the ones after them.
                inner.consume_victims(record.len() as u64);
            }
        }
        let expires = expiry_secs(obj.meta.keep_until);
        match inner.append_object(hash, &mut record, key.text(), &obj.meta.tags, expires) {
            Ok(()) => {
                inner.c.inserts += 1;
                Admission::Admitted
            }
            Err(e) => {
                let path = inner.dir.clone();
                inner.note_io("append a record in", &path, &e);
                Admission::Rejected
            }
        }
    }

    /// Starts streaming a fill of `head.body_len` body bytes under `key`: reserves the whole
    /// record in the active segment (see `stream.rs`) after the same admission test as
    /// [`DiskStore::insert`]. Write the body with [`StreamFill::write`], then
    /// [`StreamFill::commit`]; until the commit an older version of the key stays indexed.
    pub fn begin_stream(
        &self,
        key: &CacheKey,
        head: &StreamHead,
        _now: SystemTime,
    ) -> Result<StreamFill, Admission> {
        let hash = key.hash64();
        let meta = encode_meta(
            key,
            head.status,
            &head.headers,
            &head.meta,
            head.body_len,
            self.chunk_bytes,
        );
        // A refusal here is neither recorded nor counted: the caller falls back to buffering
        // the body and `insert`, which records the access and counts its outcome once.
        let Ok(meta) = meta else {
            return Err(Admission::TooLarge);
        };
        let layout = StreamLayout::new(meta.len(), head.body_len, self.chunk_bytes);
        if layout.total > self.max_record {
            return Err(Admission::TooLarge);
        }
        let mut inner = self.lock();
        let replacing = inner.index.entries.contains_key(&hash);
        if !replacing && inner.full() {
            let victim = inner.next_victim();
            if !inner.admission.would_admit(hash, victim) {
                return Err(Admission::Rejected);
            }
            if victim.is_some() {
                inner.consume_victims(layout.total);
            }
        }
        let resident = inner.index.len();
        inner.admission.record(hash, resident);
        let reserved = inner.ensure_room(layout.total).and_then(|()| {
            // Read after a rotation, whose survivors took sequences of their own.
            let seq = inner.next_seq;
            let prefix = encode_pending(seq, hash, &meta, layout).map_err(io::Error::other)?;
            let id = inner
                .active
                .ok_or_else(|| io::Error::other("no active segment"))?;
            let seg = inner
                .segments
                .get_mut(&id)
                .ok_or_else(|| io::Error::other("no active segment"))?;
            let offset = seg.reserve(&prefix, layout.total)?;
            Ok((id, offset, seg.file.clone(), seq))
        });
        let (segment, offset, file, seq) = match reserved {
            Ok(r) => r,
            Err(e) => {
                let dir = inner.dir.clone();
                inner.note_io("reserve a streamed fill in", &dir, &e);
                return Err(Admission::Rejected);
            }
        };
        inner.next_seq += 1;
        inner.c.stream_fills += 1;
        drop(inner);
        Ok(StreamFill::new(stream::Reservation {
            inner: self.inner.clone(),
            file,
            key: key.clone(),
            tags: head.meta.tags.clone(),
            expires: expiry_secs(head.meta.keep_until),
            segment,
            offset,
            layout,
            meta,
            reserve_seq: seq,
            body_len: head.body_len,
            chunk_bytes: self.chunk_bytes,
            tap_bytes: self.tap_bytes.clone(),
        }))
    }

    /// Removes `key` and persists a key tombstone. Returns whether it was indexed.
    pub fn remove(&self, key: &CacheKey) -> bool {
        let mut inner = self.lock();
        inner.persist_purge(RecordKind::PurgeKey, key.text());
        let hash = key.hash64();
        inner.index.remove_key(hash, key.text()).is_some()
    }

    /// Removes every object carrying `tag` and persists a tag tombstone; returns their hashes.
    pub fn remove_tag(&self, tag: &str) -> Vec<u64> {
        let mut inner = self.lock();
        inner.persist_purge(RecordKind::PurgeTag, tag);
        inner.index.take_tag(tag)
    }

    /// Removes every object whose key starts with `prefix` and persists a prefix tombstone;
    /// returns their hashes.
    pub fn remove_prefix(&self, prefix: &str) -> Vec<u64> {
        let mut inner = self.lock();
        inner.persist_purge(RecordKind::PurgePrefix, prefix);
        inner.index.take_prefix(prefix)
    }

    /// `fdatasync`s the active segment and the purge log (optional: see the durability
    /// contract in the module docs).
    pub fn flush(&self) -> io::Result<()> {
        let inner = self.lock();
        if let Some(seg) = inner.active.and_then(|id| inner.segments.get(&id)) {
            seg.file.sync_data()?;
        }
        if let Some(purge) = &inner.purge {
            purge.file.sync_data()?;
        }
        Ok(())
    }

    /// Current counters.
    pub fn stats(&self) -> DiskStats {
        let inner = self.lock();
        let c = &inner.c;
        DiskStats {
            objects: inner.index.len() as u64,
            live_bytes: inner.index.live_bytes,
            used_bytes: inner.segments.values().map(|s| s.len).sum(),
            capacity_bytes: inner.disk_bytes,
            segment_bytes: inner.segment_bytes,
            segments: inner.segments.len() as u64,
            hits: c.hits,
            misses: c.misses,
            inserts: c.inserts,
            rejected: c.rejected,
            too_large: c.too_large,
            evictions: c.evictions,
            expired: c.expired,
            reclaimed_segments: c.reclaimed_segments,
            reappended: c.reappended,
            checksum_failures: c.checksum_failures,
            retired_segments: c.retired_segments,
            io_errors: c.io_errors,
            tombstones: inner.tombstones.len() as u64,
            tag_refs: inner.index.tag_refs() as u64,
            prefix_entries: inner.index.prefix_len() as u64,
            range_reads: c.range_reads,
            range_chunks_read: c.range_chunks_read,
            chunks_served: c.chunks_served,
            chunked_hits: c.chunked_hits,
            stream_fills: c.stream_fills,
            stream_commits: c.stream_commits,
            stream_aborts: c.stream_aborts,
            stream_dropped: c.stream_dropped,
            stream_tap_bytes: self.tap_bytes.load(Ordering::Relaxed),
        }
    }

    /// Checks internal consistency (tests).
    #[cfg(test)]
    #[allow(clippy::expect_used)]
    pub(crate) fn check_invariants(&self) {
        let inner = self.lock();
        let live: u64 = inner.index.entries.values().map(|e| u64::from(e.len)).sum();
        assert_eq!(live, inner.index.live_bytes, "live bytes");
        for (_, entry) in inner.index.entries.iter() {
            let seg = inner.segments.get(&entry.segment).expect("segment exists");
            assert!(u64::from(entry.offset) + u64::from(entry.len) <= seg.len);
        }
        let used: u64 = inner.segments.values().map(|s| s.len).sum();
        let sealed: u64 = inner
            .segments
            .values()
            .filter(|s| Some(s.id) != inner.active)
            .map(|s| s.len)
            .sum();
        assert!(
            sealed + inner.segment_bytes <= inner.disk_bytes || sealed == 0,
            "over budget: used {used}"
        );
    }
}

impl Inner {
    /// Counts and logs (at powers of two, so a failing disk does not flood the log) an I/O
    /// error.
    fn note_io(&mut self, op: &str, path: &Path, err: &io::Error) {
        self.c.io_errors += 1;
        let n = self.c.io_errors;
        if n.is_power_of_two() {
            tracing::warn!(
                target: "outpost_store::disk",
                path = %path.display(),
                error = %err,
                io_errors = n,
                "SSD tier: cannot {op} the store directory; serving from RAM and origin"
            );
        }
    }

    /// Drops `hash` from the index.
    fn drop_hash(&mut self, hash: u64) {
        self.index.remove(hash);
    }

    /// The record of `hash` and its segment, or a counted miss. With `now`, a record already
    /// past its expiry is dropped and counted as expired; a record whose segment is gone is
    /// dropped.
    fn locate(&mut self, hash: u64, now: Option<SystemTime>) -> Option<(IndexEntry, &Segment)> {
        let Some(entry) = self.index.entries.get(&hash).copied() else {
            self.c.misses += 1;
            return None;
        };
        if now.is_some_and(|now| entry.expired(now)) {
            self.drop_hash(hash);
            self.c.expired += 1;
            self.c.misses += 1;
            return None;
        }
        if !self.segments.contains_key(&entry.segment) {
            self.drop_hash(hash);
            self.c.misses += 1;
            return None;
        }
        self.segments
            .get(&entry.segment)
            .map(|segment| (entry, segment))
    }

    /// Whether the next segment rotation has to reclaim (so a fill displaces live records).
    fn full(&self) -> bool {
        self.sealed_bytes() + 2 * self.segment_bytes > self.disk_bytes
    }

    /// The live, not-hot record that reclamation drops next (hot records are re-appended
    /// instead): from the oldest sealed segment, then the next one once those are used up by
    /// admitted fills. `None` when there is none (at most one segment is scanned per call).
    fn next_victim(&mut self) -> Option<u64> {
        let mut rebuilt = false;
        loop {
            while let Some(&h) = self.victims.front() {
                if let Some(e) = self.index.entries.get(&h) {
                    if Some(e.segment) == self.victims_segment && !e.is_hot() {
                        return Some(h);
                    }
                }
                self.victims.pop_front();
            }
            if rebuilt {
                return None;
            }
            let next = match self.victims_segment {
                Some(cur) if self.segments.contains_key(&cur) => self
                    .segments
                    .range(cur.saturating_add(1)..)
                    .next()
                    .map(|(id, _)| *id),
                _ => self.segments.keys().next().copied(),
            }
            .filter(|id| Some(*id) != self.active)?;
            self.victims_segment = Some(next);
            self.victims = self
                .index
                .entries_in(next)
                .into_iter()
                .map(|(h, _)| h)
                .collect();
            rebuilt = true;
        }
    }

    /// An admitted fill of `bytes` displaces victims until their lengths cover it.
    fn consume_victims(&mut self, mut bytes: u64) {
        while bytes > 0 {
            let Some(h) = self.next_victim() else {
                break;
            };
            let len = self.index.entries.get(&h).map_or(1, |e| u64::from(e.len));
            self.victims.pop_front();
            bytes = bytes.saturating_sub(len.max(1));
        }
    }

    /// Makes the newest recovered segment the active one if it is clean, has room and fits the
    /// budget, reopening it for writing.
    fn reuse_newest(&mut self, clean: &std::collections::BTreeSet<u32>) -> bool {
        let Some((&id, newest)) = self.segments.iter().next_back() else {
            return false;
        };
        if !clean.contains(&id) || newest.len >= self.segment_bytes {
            return false;
        }
        let others: u64 = self
            .segments
            .values()
            .filter(|s| s.id != id)
            .map(|s| s.len)
            .sum();
        if others + self.segment_bytes > self.disk_bytes {
            return false;
        }
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&newest.path)
        else {
            return false;
        };
        if let Some(seg) = self.segments.get_mut(&id) {
            seg.file = std::sync::Arc::new(file);
            self.active = Some(id);
            return true;
        }
        false
    }

    fn sealed_bytes(&self) -> u64 {
        self.segments
            .values()
            .filter(|s| Some(s.id) != self.active)
            .map(|s| s.len)
            .sum()
    }

    fn ensure_room(&mut self, len: u64) -> io::Result<()> {
        let full = match self.active.and_then(|id| self.segments.get(&id)) {
            Some(seg) => seg.len + len > self.segment_bytes,
            None => true,
        };
        if full {
            self.rotate()?;
        }
        Ok(())
    }

    /// Seals the active segment, reclaims the oldest segments until a new one fits the
    /// budget, opens the new active segment and re-appends the hot survivors into it.
    fn rotate(&mut self) -> io::Result<()> {
        self.active = None;
        let mut survivors = Vec::new();
        let mut budget = self.segment_bytes / 2;
        while self.sealed_bytes() + self.segment_bytes > self.disk_bytes {
            let Some(&oldest) = self.segments.keys().next() else {
                break;
            };
            self.reclaim(oldest, &mut survivors, &mut budget);
        }
        let id = self.next_segment;
        self.next_segment = self.next_segment.wrapping_add(1).max(1);
        match Segment::create(&self.dir, id, self.next_seq) {
            Ok(seg) => {
                self.segments.insert(id, seg);
                self.active = Some(id);
            }
            Err(e) => {
                self.c.evictions += survivors.len() as u64;
                return Err(e);
            }
        }
        for survivor in survivors {
            self.reappend(survivor);
        }
        self.maybe_compact_purges();
        Ok(())
    }

    /// Deletes segment `id`; its live hot records (within `budget` bytes) become survivors, the
    /// rest are evicted.
    fn reclaim(&mut self, id: u32, survivors: &mut Vec<Survivor>, budget: &mut u64) {
        let Some(seg) = self.segments.remove(&id) else {
            return;
        };
        for (hash, entry) in self.index.entries_in(id) {
            self.index.remove(hash);
            let len = u64::from(entry.len);
            if entry.is_hot() && len <= *budget {
                match read_at(&seg.file, u64::from(entry.offset), entry.len as usize)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| {
                        verify_record(&bytes)
                            .map(|tags| (bytes, tags))
                            .map_err(|e| e.to_string())
                    }) {
                    Ok((bytes, tags)) => {
                        *budget -= len;
                        survivors.push(Survivor {
                            hash,
                            bytes,
                            tags,
                            expires: entry.expires,
                        });
                        continue;
                    }
                    Err(e) => {
                        self.c.checksum_failures += 1;
                        tracing::warn!(
                            target: "outpost_store::disk",
                            path = %seg.path.display(),
                            error = %e,
                            "SSD tier: survivor failed verification during reclamation; dropped"
                        );
                    }
                }
            }
            self.c.evictions += 1;
        }
        if let Err(e) = std::fs::remove_file(&seg.path) {
            self.note_io("delete a reclaimed segment in", &seg.path, &e);
        }
        self.c.reclaimed_segments += 1;
    }

    /// Moves a survivor into the active segment with a new sequence (so that sequence order
    /// stays append order), or evicts it if it does not fit.
    fn reappend(&mut self, mut s: Survivor) {
        let len = s.bytes.len() as u64;
        let result = (|| -> io::Result<(u32, u32)> {
            let id = self
                .active
                .ok_or_else(|| io::Error::other("no active segment"))?;
            let seq = self.next_seq;
            let seg = self
                .segments
                .get_mut(&id)
                .ok_or_else(|| io::Error::other("no active segment"))?;
            if seg.len + len > self.segment_bytes {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "survivor does not fit",
                ));
            }
            set_sequence(&mut s.bytes, seq).map_err(io::Error::other)?;
            let offset = seg.append(&s.bytes)?;
            self.next_seq += 1;
            let offset = u32::try_from(offset).map_err(io::Error::other)?;
            Ok((id, offset))
        })();
        match result {
            Ok((segment, offset)) => {
                let entry = IndexEntry {
                    segment,
                    offset,
                    len: len as u32,
                    expires: s.expires,
                    flags: 0,
                };
                self.index
                    .relocate(s.hash, entry, s.tags.iter().map(String::as_str));
                self.c.reappended += 1;
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::StorageFull {
                    let dir = self.dir.clone();
                    self.note_io("re-append a survivor in", &dir, &e);
                }
                self.c.evictions += 1;
            }
        }
    }

    /// Appends an encoded object record (sequence assigned here) and indexes it.
    fn append_object(
        &mut self,
        hash: u64,
        record: &mut [u8],
        key: &str,
        tags: &[String],
        expires: u32,
    ) -> io::Result<()> {
        let len = record.len() as u64;
        self.ensure_room(len)?;
        let seq = self.next_seq;
        set_sequence(record, seq).map_err(io::Error::other)?;
        let id = self
            .active
            .ok_or_else(|| io::Error::other("no active segment"))?;
        let seg = self
            .segments
            .get_mut(&id)
            .ok_or_else(|| io::Error::other("no active segment"))?;
        let offset = seg.append(record)?;
        self.next_seq += 1;
        let offset = u32::try_from(offset).map_err(io::Error::other)?;
        let len = u32::try_from(len).map_err(io::Error::other)?;
        self.index.insert(
            hash,
            IndexEntry {
                segment: id,
                offset,
                len,
                expires,
                flags: 0,
            },
            key,
            tags.iter().map(String::as_str),
        );
        Ok(())
    }

    /// Retires segment `id` after a checksum mismatch or read error: its objects leave the
    /// index and the file is deleted (readers in flight keep their handle).
    fn retire(&mut self, id: u32, why: &str) {
        let Some(seg) = self.segments.remove(&id) else {
            return;
        };
        if self.active == Some(id) {
            self.active = None;
        }
        let mut dropped = 0u64;
        for (hash, _) in self.index.entries_in(id) {
            self.drop_hash(hash);
            dropped += 1;
        }
        self.c.retired_segments += 1;
        tracing::warn!(
            target: "outpost_store::disk",
            path = %seg.path.display(),
            reason = why,
            objects_dropped = dropped,
            "SSD tier: segment retired"
        );
        if let Err(e) = std::fs::remove_file(&seg.path) {
            self.note_io("delete a retired segment in", &seg.path, &e);
        }
    }

    /// Writes a tombstone before the purge takes effect in RAM. A failure is counted and logged
    /// (the purge still applies to this process).
    fn persist_purge(&mut self, kind: RecordKind, text: &str) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let result = match (&mut self.purge, encode_purge(kind, seq, text)) {
            (Some(purge), Ok(record)) => purge.append(&record),
            (None, _) => Err(io::Error::other("purge log unavailable")),
            (_, Err(e)) => Err(io::Error::other(e)),
        };
        match result {
            Ok(()) => self.tombstones.push(Tombstone {
                seq,
                kind,
                text: Box::from(text),
            }),
            Err(e) => {
                let path = self.dir.join(segment::PURGE_LOG);
                self.note_io("persist a purge tombstone to", &path, &e);
            }
        }
    }

    /// Drops tombstones older than every record still on disk once enough are obsolete
    /// (they can no longer match anything), rewriting the purge log.
    fn maybe_compact_purges(&mut self) {
        let min_base = self
            .segments
            .values()
            .map(|s| s.base_seq)
            .min()
            .unwrap_or(self.next_seq);
        let obsolete = self.tombstones.iter().filter(|t| t.seq < min_base).count();
        if obsolete < COMPACT_MIN_OBSOLETE || obsolete * 2 < self.tombstones.len() {
            return;
        }
        let kept: Vec<Tombstone> = self
            .tombstones
            .iter()
            .filter(|t| t.seq >= min_base)
            .cloned()
            .collect();
        let encoded: Vec<Vec<u8>> = kept
            .iter()
            .filter_map(|t| encode_purge(t.kind, t.seq, &t.text).ok())
            .collect();
        let Some(purge) = self.purge.as_mut() else {
            return;
        };
        match purge.rewrite(&self.dir, encoded.iter().map(Vec::as_slice)) {
            Ok(()) => self.tombstones = kept,
            Err(e) => {
                let dir = self.dir.clone();
                self.note_io("compact the purge log in", &dir, &e);
            }
        }
    }
}
