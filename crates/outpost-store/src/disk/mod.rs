//! The SSD tier ([`DiskStore`]): append-only segment files in one directory, an in-RAM index
//! (28-byte slots, see `table.rs`), tag and prefix indexes, purge tombstones in `purges.log`, a
//! byte budget enforced by reclaiming whole segments oldest first (hot survivors are re-appended),
//! and TinyLFU admission when the tier is full (`admission.rs`).
//!
//! # Locks
//!
//! The index (with the segment map and admission state) has a mutex of its own, apart from the
//! writer (active segment, sequence numbers, purge log and tombstones) and from the reclamation
//! under way (`reclaim.rs`); they are taken in the order reclaim → writer → index, and the index
//! lock is never held across I/O. A hit takes only the index lock, twice, for O(1) work, so an
//! append, an `fdatasync` or a reclamation never makes it wait. Counters are atomics.
//!
//! # Reads for async callers
//!
//! The `_async` reads (and [`ChunkReader::poll_next_chunk`], [`TapReader::poll_read`]) first try
//! the read on the caller's thread with `RWF_NOWAIT` (`fastpath.rs`): served from the page cache
//! without ever waiting for the device. Only a read that would wait goes to the `ssd-read-N`
//! threads (`lanes.rs`).
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
use crate::counter::{Count, Sharded};
mod chunked;
mod fastpath;
mod format;
mod index;
mod lanes;
mod reclaim;
mod recovery;
mod segment;
mod stream;
mod table;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;

pub use chunked::{ChunkError, ChunkReader, ChunkedHit};
pub use format::{FormatError, DEFAULT_CHUNK_BYTES, FORMAT_VERSION};
pub use index::{index_footprint, IndexFootprint};
pub use lanes::Completion;
pub use recovery::RecoveryReport;
pub use stream::{StreamFill, StreamTap, TapError, TapReader, Written};

use format::{
    decode_object, encode_meta, encode_object, encode_pending, encode_purge, format_file_text,
    object_record_len, parse_format_file, set_sequence, DecodeError, RecordKind, StreamLayout,
    FORMAT_FILE, SEGMENT_HEADER_LEN,
};
use index::{expiry_secs, DiskIndex, IndexEntry, FLAG_HOT};
use segment::{read_at, PurgeFile, Segment};

use crate::policy::PolicyKind;
use crate::store::Admission;
use crate::{CacheKey, StoredObject};
use admission::DiskAdmission;

/// Default segment size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 256 << 20;
/// Default number of `ssd-read-N` threads (see [`DiskConfig::read_threads`]).
pub const DEFAULT_READ_THREADS: usize = 4;
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
    /// Admission policy (the TinyLFU policies, `s3-tinylfu` by default, filter fills by frequency
    /// when the tier is full; `s3-fifo` and `lru` admit every fill).
    pub policy: PolicyKind,
    /// Threads that serve lookups and chunk reads that would wait for the device
    /// (`ssd-read-N`).
    pub read_threads: usize,
    /// Try each read for an async caller on its own thread first, from the page cache only
    /// (`preadv2` with `RWF_NOWAIT`), before handing it to a read thread. Turned off by itself
    /// when the file system does not support it.
    pub fast_reads: bool,
    /// Lookups queued for them at most; one more is a miss (it would wait behind the disk).
    pub read_queue: usize,
    /// Inserts and streamed-fill starts queued for the append thread at most; one more is not
    /// stored (commits and purges are always queued).
    pub append_queue: usize,
}

impl DiskConfig {
    /// Defaults: 256 MiB segments, 1 MiB chunks, the default policy, [`DEFAULT_READ_THREADS`] read
    /// threads behind the page-cache fast path, queues of 1024 lookups and 1024 appends.
    pub fn new(dir: impl Into<PathBuf>, disk_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            disk_bytes,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            policy: PolicyKind::default(),
            read_threads: DEFAULT_READ_THREADS,
            fast_reads: true,
            read_queue: 1024,
            append_queue: 1024,
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
    /// `s3-tinylfu`: whether the admission's shadows have the tier admitting every fill now
    /// (otherwise fills contest the next victims by TinyLFU frequency).
    pub admit_every_fill: bool,
    /// `s3-tinylfu`: how often the admission's shadows switched sides.
    pub admission_switches: u64,
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
    /// Bounded steps the reclaimer took to move survivors ahead of a rotation.
    pub reclaim_steps: u64,
    /// Whether a segment is being prepared for reclamation or drained now.
    pub reclaiming: bool,
    /// Lookups turned away (answered as misses) because the read queue was full.
    pub read_queue_full: u64,
    /// Reads for async callers (lookups, chunks, followers of streamed fills) served from the
    /// page cache on the caller's thread (`RWF_NOWAIT`).
    pub fast_reads: u64,
    /// Reads for async callers handed to the read threads (not all cached, or no fast path).
    pub queued_reads: u64,
    /// Inserts and streamed-fill starts turned away because the append queue was full.
    pub append_queue_full: u64,
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

/// Event counters, atomics so that no counter needs a lock (a chunk served, a miss, a scrape);
/// those every hit bumps are sharded per thread (`counter.rs`).
#[derive(Debug, Default)]
struct Counters {
    hits: Sharded,
    misses: Sharded,
    inserts: AtomicU64,
    rejected: AtomicU64,
    too_large: AtomicU64,
    evictions: AtomicU64,
    expired: Sharded,
    reclaimed_segments: AtomicU64,
    reappended: AtomicU64,
    reclaim_steps: AtomicU64,
    read_queue_full: AtomicU64,
    append_queue_full: AtomicU64,
    checksum_failures: AtomicU64,
    retired_segments: AtomicU64,
    io_errors: AtomicU64,
    range_reads: Sharded,
    range_chunks_read: Sharded,
    chunks_served: Sharded,
    chunked_hits: Sharded,
    stream_fills: AtomicU64,
    stream_commits: AtomicU64,
    stream_aborts: AtomicU64,
    stream_dropped: AtomicU64,
    /// Gauge: tombstones held (they live under the writer lock; `stats` takes no writer lock).
    tombstones: AtomicU64,
}

/// Adds one to a counter.
fn bump(c: &impl Count) {
    c.add(1);
}

/// Adds `n` to a counter.
fn add(c: &impl Count, n: u64) {
    c.add(n);
}

fn load(c: &impl Count) -> u64 {
    c.get()
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

/// How a read for a lookup is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Blocking: on a read thread, or for a synchronous caller.
    Wait,
    /// Only from the page cache, on the caller's thread (see `fastpath.rs`).
    NoWait,
}

/// A [`Read::NoWait`] lookup found its bytes not all cached (or the fast path off): queue it.
#[derive(Debug)]
struct WouldWait;

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
fn read_head(
    file: &std::fs::File,
    entry: IndexEntry,
    key: &str,
    read_at: impl Fn(&std::fs::File, u64, usize) -> io::Result<Vec<u8>>,
) -> Result<Head, RangeError> {
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

/// The segment appends go to: the writer's own view (the index keeps its length too, updated
/// in the same index hold as the entry an append creates).
struct Active {
    id: u32,
    file: Arc<std::fs::File>,
    /// Where the next record goes.
    len: u64,
}

/// What only the appender touches: every `pwrite` to a segment or the purge log happens under
/// this lock and takes its sequence there, so append order is sequence order.
pub(super) struct Writer {
    active: Option<Active>,
    next_seq: u64,
    next_segment: u32,
    purge: Option<PurgeFile>,
    tombstones: Vec<Tombstone>,
}

/// What readers touch: the indexes, the segment map (files shared with readers), the admission
/// filter and the admission victims. Held only for O(1) work or one bounded batch, never across
/// I/O, so a hit never waits for an append, a reclamation or an `fdatasync`.
pub(super) struct IndexState {
    index: DiskIndex,
    admission: DiskAdmission,
    /// Records `(hash, offset)` of `victims_segment` (the oldest) a full tier would drop next, in
    /// order; each is checked against the index when used.
    victims: std::collections::VecDeque<(u64, u32)>,
    victims_segment: Option<u32>,
    segments: BTreeMap<u32, Segment>,
    active: Option<u32>,
    segment_bytes: u64,
    disk_bytes: u64,
}

/// The SSD tier's shared state, held by the store, its streamed fills and its chunked hits.
///
/// Three locks, always taken in this order: `reclaim` → `writer` → `index` (a reader takes only
/// `index`). Counters are atomics.
pub(super) struct Tier {
    /// Holds an exclusive lock on `dir/LOCK` for as long as the tier or a streamed fill of it is
    /// alive (released on drop or exit).
    _lock: std::fs::File,
    dir: PathBuf,
    segment_bytes: u64,
    disk_bytes: u64,
    chunk_bytes: u32,
    max_record: u64,
    /// The reclamation under way (see `reclaim.rs`): a rotation and a reclaimer step hold it
    /// across their I/O, so only one drains a segment at a time.
    reclaim: Mutex<reclaim::Reclaim>,
    writer: Mutex<Writer>,
    index: Mutex<IndexState>,
    c: Counters,
    /// Bytes read by followers of streamed fills (shared with every fill's readers).
    tap_bytes: Arc<AtomicU64>,
    /// Wakes the reclaimer thread (see `reclaim.rs`).
    wake: Mutex<reclaim::Wake>,
    wake_cv: std::sync::Condvar,
    /// A segment is being prepared for (or drained by) reclamation.
    reclaiming: std::sync::atomic::AtomicBool,
    /// The I/O threads' queues (shared with followers of streamed fills).
    io: Arc<lanes::Lanes>,
    #[cfg(any(test, feature = "testing"))]
    hooks: reclaim::hooks::Hooks,
}

/// The SSD tier. Thread-safe: reads lock only the index, briefly, and `pread` outside it; appends
/// and purges serialize on a writer lock of their own (see [`Tier`]).
pub struct DiskStore {
    tier: Arc<Tier>,
    /// The reclaimer and I/O threads, joined on drop (so the directory lock is released with
    /// the store).
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        #[cfg(any(test, feature = "testing"))]
        self.tier.hooks.off();
        self.tier.stop_reclaimer();
        // The I/O threads finish what is queued (commits and purges are never lost), then end.
        self.tier.io.read.close();
        self.tier.io.append.close();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A handle on the SSD tier that jobs on the I/O threads hold (the store itself owns the
/// threads and cannot be shared with them).
pub(crate) struct DiskRef(Arc<Tier>);

impl DiskRef {
    pub(crate) fn get(&self, key: &CacheKey, now: SystemTime) -> Option<StoredObject> {
        self.0.get(key, now)
    }

    pub(crate) fn get_chunked(
        &self,
        key: &CacheKey,
        min_record: u64,
        now: SystemTime,
    ) -> Option<ChunkedHit> {
        Tier::get_chunked(&self.0, key, min_record, now)
    }

    pub(crate) fn insert(&self, key: &CacheKey, obj: &StoredObject) -> Admission {
        self.0.insert(key, obj)
    }

    pub(crate) fn begin_stream(
        &self,
        key: &CacheKey,
        head: &StreamHead,
    ) -> Result<StreamFill, Admission> {
        Tier::begin_stream(&self.0, key, head)
    }

    pub(crate) fn remove(&self, key: &CacheKey) -> bool {
        self.0.remove(key)
    }

    pub(crate) fn remove_tag(&self, tag: &str) -> Vec<u64> {
        self.0.remove_tag(tag)
    }

    pub(crate) fn remove_prefix(&self, prefix: &str) -> Vec<u64> {
        self.0.remove_prefix(prefix)
    }
}

/// Which I/O queue a job goes to, and whether a full queue refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaneKind {
    /// A new lookup: refused when the read queue is full.
    Read,
    /// An append that may be shed (an insert, a streamed fill's start).
    Append,
    /// Work that must not be lost, in submission order (commits, purges).
    AppendAlways,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("dir", &self.tier.dir)
            .field("chunk_bytes", &self.tier.chunk_bytes)
            .field("max_record", &self.tier.max_record)
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DiskStore {
    /// Opens (or creates) the tier in `cfg.dir` and recovers its contents. `now` drops records
    /// already past `keep_until`.
    pub fn open(cfg: &DiskConfig, now: SystemTime) -> Result<(Self, RecoveryReport), OpenError> {
        let dir = cfg.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir, "create the directory"))?;
        let lock_file = lock_dir(&dir)?;
        check_format_file(&dir)?;
        let segment_bytes = cfg
            .segment_bytes
            .min(u64::from(u32::MAX))
            .min(cfg.disk_bytes / 2)
            .max(SEGMENT_HEADER_LEN as u64);
        let max_record = segment_bytes - SEGMENT_HEADER_LEN as u64;

        let recovered = recovery::recover(&dir, now)?;
        let mut report = recovered.report;
        report.indexed = recovered.index.len() as u64;
        let purge = PurgeFile::open(&dir, recovered.purge_valid_len)
            .map_err(io_err(&dir, "open the purge log in"))?;
        let c = Counters::default();
        c.tombstones
            .store(recovered.tombstones.len() as u64, Ordering::Relaxed);
        let mut ix = IndexState {
            index: recovered.index,
            admission: DiskAdmission::new(cfg.policy, cfg.disk_bytes),
            victims: std::collections::VecDeque::new(),
            victims_segment: None,
            segments: recovered.segments,
            active: None,
            segment_bytes,
            disk_bytes: cfg.disk_bytes,
        };
        let mut writer = Writer {
            active: None,
            next_seq: recovered.next_seq,
            next_segment: recovered.next_segment,
            purge: Some(purge),
            tombstones: recovered.tombstones,
        };
        // Go on appending to the newest segment when it ends with a whole record, has room and
        // the budget still holds; otherwise open a fresh one (which reclaims as needed). Either
        // way the directory is proven writable.
        let reused = ix.reuse_newest(&recovered.clean);
        if let Some(active) = reused {
            writer.active = Some(active);
        }
        let before = ix.index.len();
        let tier = Tier {
            _lock: lock_file,
            dir: dir.clone(),
            segment_bytes,
            disk_bytes: cfg.disk_bytes,
            chunk_bytes: cfg.chunk_bytes.max(1),
            max_record,
            reclaim: Mutex::new(reclaim::Reclaim::default()),
            writer: Mutex::new(writer),
            index: Mutex::new(ix),
            c,
            tap_bytes: Arc::new(AtomicU64::new(0)),
            wake: Mutex::new(reclaim::Wake::default()),
            wake_cv: std::sync::Condvar::new(),
            reclaiming: std::sync::atomic::AtomicBool::new(false),
            io: Arc::new(lanes::Lanes {
                read: lanes::Lane::new(cfg.read_queue),
                append: lanes::Lane::new(cfg.append_queue),
                fast: fastpath::FastPath::new(cfg.fast_reads),
            }),
            #[cfg(any(test, feature = "testing"))]
            hooks: reclaim::hooks::Hooks::default(),
        };
        if tier.writer().active.is_none() {
            // More on disk than the budget allows (it shrank) is reclaimed oldest first here.
            let mut r = tier.reclaim_lock();
            let mut w = tier.writer();
            tier.rotate(&mut r, &mut w, 0)
                .map_err(io_err(&dir, "create a segment in"))?;
        }
        let after = tier.index().index.len();
        report.evicted += before.saturating_sub(after) as u64;
        report.indexed = after as u64;
        let tier = Arc::new(tier);
        let mut threads = Vec::new();
        let reclaimer = {
            let tier = tier.clone();
            std::thread::Builder::new()
                .name("ssd-reclaim".into())
                .spawn(move || tier.reclaimer())
        };
        match reclaimer {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                // Rotations still drain segments themselves; only the work ahead is lost.
                tracing::warn!(
                    target: "outpost_store::disk",
                    error = %e,
                    "SSD tier: cannot start the reclaimer thread; rotations reclaim inline"
                );
            }
        }
        let mut lanes = vec![("ssd-append".to_owned(), false)];
        lanes.extend((0..cfg.read_threads.max(1)).map(|i| (format!("ssd-read-{i}"), true)));
        for (name, read) in lanes {
            let io = tier.io.clone();
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                if read {
                    io.read.serve();
                } else {
                    io.append.serve();
                }
            });
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    // Without its thread a queue's jobs would never run: run them inline.
                    tracing::warn!(
                        target: "outpost_store::disk",
                        error = %e,
                        "SSD tier: cannot start an I/O thread; its jobs run on the caller"
                    );
                    if read {
                        tier.io.read.close();
                    } else {
                        tier.io.append.close();
                    }
                }
            }
        }
        tier.wake_reclaimer();
        Ok((Self { tier, threads }, report))
    }

    /// Runs `job` on an I/O thread (`lane`); the completion answers with its result, or with
    /// `fallback` if the job is dropped unrun. `None`: the queue is full and refused it
    /// (counted). After the store is dropped the job runs on the caller. A read whose
    /// completion was dropped before it started is skipped.
    pub(crate) fn submit<T: Send + 'static>(
        &self,
        lane: LaneKind,
        fallback: T,
        job: impl FnOnce(&DiskRef) -> T + Send + 'static,
    ) -> Option<Completion<T>> {
        let (completion, done) = Completion::pending(fallback);
        let disk = DiskRef(self.tier.clone());
        let read = lane == LaneKind::Read;
        let run: lanes::Job = Box::new(move || {
            if read && done.is_cancelled() {
                return;
            }
            let value = job(&disk);
            done.complete(value);
        });
        let lanes = &self.tier.io;
        let pushed = match lane {
            LaneKind::Read => lanes.read.try_push(run),
            LaneKind::Append => lanes.append.try_push(run),
            LaneKind::AppendAlways => lanes.append.push_always(run),
        };
        match pushed {
            Ok(()) => {
                if read {
                    self.tier.io.fast.queued();
                }
                Some(completion)
            }
            Err(lanes::Refused::Closed(run)) => {
                run();
                Some(completion)
            }
            Err(lanes::Refused::Full) => {
                bump(match lane {
                    LaneKind::Read => &self.tier.c.read_queue_full,
                    _ => &self.tier.c.append_queue_full,
                });
                None
            }
        }
    }

    /// [`DiskStore::get`] for an async caller, answered at once when the page cache holds the
    /// record (read on the caller's thread, never waiting for the device: see `fastpath.rs`),
    /// otherwise on a read thread. A full read queue answers at once with a miss.
    pub fn get_async(&self, key: &CacheKey, now: SystemTime) -> Completion<Option<StoredObject>> {
        if let Some(found) = self.get_now(key, now) {
            return Completion::ready(found);
        }
        let key = key.clone();
        self.submit(LaneKind::Read, None, move |d| d.get(&key, now))
            .unwrap_or_else(|| {
                bump(&self.tier.c.misses);
                Completion::ready(None)
            })
    }

    /// [`DiskStore::get`] if it can be answered without waiting for the device: `Some` (the
    /// answer) when the record is absent or its bytes are all in the page cache (read on this
    /// thread), `None` when it must be read on a read thread.
    pub(crate) fn get_now(&self, key: &CacheKey, now: SystemTime) -> Option<Option<StoredObject>> {
        if !self.tier.io.fast.enabled() {
            return None;
        }
        self.tier.get_with(key, now, Read::NoWait).ok()
    }

    /// [`DiskStore::get_chunked`] for an async caller: the head is read on the caller's thread
    /// when the page cache holds it, otherwise on a read thread. A full read queue answers
    /// `None` at once (the caller's `get` then decides).
    pub fn get_chunked_async(
        &self,
        key: &CacheKey,
        min_record: u64,
        now: SystemTime,
    ) -> Completion<Option<ChunkedHit>> {
        if self.tier.io.fast.enabled() {
            if let Ok(hit) = Tier::get_chunked_with(&self.tier, key, min_record, now, Read::NoWait)
            {
                return Completion::ready(hit);
            }
        }
        let key = key.clone();
        self.submit(LaneKind::Read, None, move |d| {
            d.get_chunked(&key, min_record, now)
        })
        .unwrap_or_else(|| Completion::ready(None))
    }

    /// [`DiskStore::insert`] on the append thread. A full append queue answers `Rejected` at
    /// once.
    pub fn insert_async(
        &self,
        key: CacheKey,
        obj: Arc<StoredObject>,
        _now: SystemTime,
    ) -> Completion<Admission> {
        self.submit(LaneKind::Append, Admission::Rejected, move |d| {
            d.insert(&key, &obj)
        })
        .unwrap_or_else(|| Completion::ready(Admission::Rejected))
    }

    /// [`DiskStore::begin_stream`] on the append thread. A full append queue answers
    /// `Err(Rejected)` at once (the caller buffers the body).
    pub fn begin_stream_async(
        &self,
        key: CacheKey,
        head: StreamHead,
        _now: SystemTime,
    ) -> Completion<Result<StreamFill, Admission>> {
        self.submit(LaneKind::Append, Err(Admission::Rejected), move |d| {
            d.begin_stream(&key, &head)
        })
        .unwrap_or_else(|| Completion::ready(Err(Admission::Rejected)))
    }

    /// [`StreamFill::commit`] on the append thread, after every append submitted before it.
    pub fn commit_async(&self, fill: StreamFill, now: SystemTime) -> Completion<Admission> {
        self.submit(LaneKind::AppendAlways, Admission::Rejected, move |_| {
            fill.commit(now)
        })
        .unwrap_or_else(|| Completion::ready(Admission::Rejected))
    }

    /// [`DiskStore::remove`] on the append thread, after every append submitted before it.
    pub fn remove_async(&self, key: CacheKey) -> Completion<bool> {
        self.submit(LaneKind::AppendAlways, false, move |d| d.remove(&key))
            .unwrap_or_else(|| Completion::ready(false))
    }

    /// [`DiskStore::remove_tag`] on the append thread, after every append submitted before it.
    pub fn remove_tag_async(&self, tag: String) -> Completion<Vec<u64>> {
        self.submit(LaneKind::AppendAlways, Vec::new(), move |d| {
            d.remove_tag(&tag)
        })
        .unwrap_or_else(|| Completion::ready(Vec::new()))
    }

    /// [`DiskStore::remove_prefix`] on the append thread, after every append submitted before
    /// it.
    pub fn remove_prefix_async(&self, prefix: String) -> Completion<Vec<u64>> {
        self.submit(LaneKind::AppendAlways, Vec::new(), move |d| {
            d.remove_prefix(&prefix)
        })
        .unwrap_or_else(|| Completion::ready(Vec::new()))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.tier.dir
    }

    /// The largest record (object + metadata) an insert accepts.
    pub fn max_record_bytes(&self) -> u64 {
        self.tier.max_record
    }

    /// Bytes the record of `obj` under `key` takes on disk.
    pub fn record_len(&self, key: &CacheKey, obj: &StoredObject) -> u64 {
        object_record_len(key, obj, self.tier.chunk_bytes)
    }

    /// Reads, verifies and decodes the object of `key`. A checksum mismatch is a miss, counted,
    /// and retires the segment. The access is recorded for admission and marks the record hot.
    pub fn get(&self, key: &CacheKey, now: SystemTime) -> Option<StoredObject> {
        self.tier.get(key, now)
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
        Tier::get_chunked(&self.tier, key, min_record, now)
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
        self.tier.index().index.entries.contains_key(&key.hash64())
    }

    /// Appends `obj` under `key` if the admission policy lets it in. A replacement of a stored
    /// key is always admitted; the older record becomes dead space.
    pub fn insert(&self, key: &CacheKey, obj: &StoredObject, _now: SystemTime) -> Admission {
        self.tier.insert(key, obj)
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
        Tier::begin_stream(&self.tier, key, head)
    }

    /// Removes `key` and persists a key tombstone. Returns whether it was indexed.
    pub fn remove(&self, key: &CacheKey) -> bool {
        self.tier.remove(key)
    }

    /// Removes every object carrying `tag` and persists a tag tombstone; returns their hashes.
    pub fn remove_tag(&self, tag: &str) -> Vec<u64> {
        self.tier.remove_tag(tag)
    }

    /// Removes every object whose key starts with `prefix` and persists a prefix tombstone;
    /// returns their hashes.
    pub fn remove_prefix(&self, prefix: &str) -> Vec<u64> {
        self.tier.remove_prefix(prefix)
    }

    /// `fdatasync`s the active segment and the purge log (optional: see the durability
    /// contract in the module docs). The files are synced outside every lock.
    pub fn flush(&self) -> io::Result<()> {
        let (active, purge) = {
            let w = self.tier.writer();
            (
                w.active.as_ref().map(|a| a.file.clone()),
                w.purge.as_ref().map(|p| p.file.clone()),
            )
        };
        if let Some(file) = active {
            file.sync_data()?;
        }
        if let Some(file) = purge {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Current counters.
    pub fn stats(&self) -> DiskStats {
        let tier = &self.tier;
        let c = &tier.c;
        let ix = tier.index();
        DiskStats {
            objects: ix.index.len() as u64,
            live_bytes: ix.index.live_bytes,
            used_bytes: ix.used_bytes(),
            capacity_bytes: tier.disk_bytes,
            segment_bytes: tier.segment_bytes,
            segments: ix.segments.values().filter(|s| !s.unlinked).count() as u64,
            hits: load(&c.hits),
            misses: load(&c.misses),
            inserts: load(&c.inserts),
            rejected: load(&c.rejected),
            admit_every_fill: ix.admission.admits_every_fill(),
            admission_switches: ix.admission.switches(),
            too_large: load(&c.too_large),
            evictions: load(&c.evictions),
            expired: load(&c.expired),
            reclaimed_segments: load(&c.reclaimed_segments),
            reappended: load(&c.reappended),
            reclaim_steps: load(&c.reclaim_steps),
            reclaiming: tier.reclaiming.load(Ordering::Relaxed),
            read_queue_full: load(&c.read_queue_full),
            fast_reads: load(&tier.io.fast.fast),
            queued_reads: load(&tier.io.fast.queued),
            append_queue_full: load(&c.append_queue_full),
            checksum_failures: load(&c.checksum_failures),
            retired_segments: load(&c.retired_segments),
            io_errors: load(&c.io_errors),
            tombstones: load(&c.tombstones),
            tag_refs: ix.index.tag_refs() as u64,
            prefix_entries: ix.index.prefix_len() as u64,
            range_reads: load(&c.range_reads),
            range_chunks_read: load(&c.range_chunks_read),
            chunks_served: load(&c.chunks_served),
            chunked_hits: load(&c.chunked_hits),
            stream_fills: load(&c.stream_fills),
            stream_commits: load(&c.stream_commits),
            stream_aborts: load(&c.stream_aborts),
            stream_dropped: load(&c.stream_dropped),
            stream_tap_bytes: tier.tap_bytes.load(Ordering::Relaxed),
        }
    }

    /// The next thread to reach reclamation point `point` parks there (tests; see
    /// `reclaim::hooks`).
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn park_reclaim_at(&self, point: &'static str) {
        self.tier.hooks.park_at(point);
    }

    /// Makes every page-cache read of the fast path report `EAGAIN`, as if nothing were cached,
    /// so reads for async callers go to the read threads (tests).
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn force_read_eagain(&self, on: bool) {
        self.tier
            .io
            .fast
            .force_errno(on.then_some(rustix::io::Errno::AGAIN));
    }

    /// Waits until a thread is parked at `point` (tests).
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn wait_reclaim_parked(&self, point: &'static str) -> bool {
        self.tier.hooks.wait_parked(point)
    }

    /// Lets the parked reclamation go on (tests).
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn release_reclaim(&self) {
        self.tier.hooks.release();
    }

    /// Waits until the reclaimer has nothing left to do (tests; false after 10 s).
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn wait_reclaimer_idle(&self) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            {
                let st = lock(&self.tier.wake);
                if !st.pending() && !st.busy() {
                    return true;
                }
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Checks internal consistency (tests).
    #[cfg(test)]
    #[allow(clippy::expect_used)]
    pub(crate) fn check_invariants(&self) {
        let tier = &self.tier;
        // Every lock, in order: no reclamation step or append is half done.
        let _r = tier.reclaim_lock();
        let w = tier.writer();
        let ix = tier.index();
        let live: u64 = ix.index.entries.values().map(|e| u64::from(e.len)).sum();
        assert_eq!(live, ix.index.live_bytes, "live bytes");
        for (_, entry) in ix.index.entries.iter() {
            let seg = ix.segments.get(&entry.segment).expect("segment exists");
            assert!(!seg.unlinked, "no entry in an unlinked segment");
            assert!(u64::from(entry.offset) + u64::from(entry.len) <= seg.len);
        }
        assert_eq!(w.active.as_ref().map(|a| a.id), ix.active, "active segment");
        if let Some(a) = &w.active {
            assert_eq!(ix.segments.get(&a.id).map(|s| s.len), Some(a.len));
        }
        assert!(
            ix.segments.values().all(|s| !s.unlinked),
            "no segment left draining"
        );
        let used = ix.used_bytes();
        let sealed = ix.sealed_bytes();
        assert!(
            sealed + ix.segment_bytes <= ix.disk_bytes || sealed == 0,
            "over budget: used {used}"
        );
    }
}

impl Tier {
    /// A point where tests can park the reclamation (a no-op outside tests).
    #[cfg(any(test, feature = "testing"))]
    fn hook(&self, point: &'static str) {
        self.hooks.hit(point);
    }

    #[cfg(not(any(test, feature = "testing")))]
    #[inline(always)]
    fn hook(&self, _point: &'static str) {}

    fn writer(&self) -> MutexGuard<'_, Writer> {
        lock(&self.writer)
    }

    fn index(&self) -> MutexGuard<'_, IndexState> {
        lock(&self.index)
    }

    fn reclaim_lock(&self) -> MutexGuard<'_, reclaim::Reclaim> {
        lock(&self.reclaim)
    }

    /// Counts and logs (at powers of two, so a failing disk does not flood the log) an I/O
    /// error.
    fn note_io(&self, op: &str, path: &Path, err: &io::Error) {
        let n = self.c.io_errors.fetch_add(1, Ordering::Relaxed) + 1;
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

    /// The record of `hash` and its segment, or a counted miss. With `now`, a record already
    /// past its expiry is dropped and counted as expired; a record whose segment is gone
    /// (reclaimed, its entries not swept yet) is dropped.
    fn locate<'a>(
        &self,
        ix: &'a mut IndexState,
        hash: u64,
        now: Option<SystemTime>,
    ) -> Option<(IndexEntry, &'a Segment)> {
        let Some(entry) = ix.index.entries.get(&hash).copied() else {
            bump(&self.c.misses);
            return None;
        };
        if now.is_some_and(|now| entry.expired(now)) {
            ix.index.remove(hash);
            bump(&self.c.expired);
            bump(&self.c.misses);
            return None;
        }
        if !ix.segments.contains_key(&entry.segment) {
            ix.index.remove(hash);
            bump(&self.c.misses);
            return None;
        }
        ix.segments.get(&entry.segment).map(|seg| (entry, seg))
    }

    fn get(&self, key: &CacheKey, now: SystemTime) -> Option<StoredObject> {
        self.get_with(key, now, Read::Wait).unwrap_or(None)
    }

    /// [`Tier::get`]; with [`Read::NoWait`] the record is read only if the page cache holds it
    /// (`Err(WouldWait)` otherwise, before anything is counted, so the caller queues a `get`).
    fn get_with(
        &self,
        key: &CacheKey,
        now: SystemTime,
        how: Read,
    ) -> Result<Option<StoredObject>, WouldWait> {
        let hash = key.hash64();
        let (file, path, entry) = {
            let mut ix = self.index();
            let Some((entry, segment)) = self.locate(&mut ix, hash, Some(now)) else {
                return Ok(None);
            };
            let path = (how == Read::Wait && entry.len as usize >= segment::LARGE_READ)
                .then(|| segment.path.clone());
            (segment.file.clone(), path, entry)
        };
        // I/O and verification happen outside the lock.
        let (offset, len) = (u64::from(entry.offset), entry.len as usize);
        let read = match (how, &path) {
            (Read::NoWait, _) => match self.io.fast.try_read(&file, offset, len) {
                Some(bytes) => {
                    self.io.fast.served();
                    Ok(bytes)
                }
                None => return Err(WouldWait),
            },
            // Any failure of the own handle (reclaimed meanwhile, out of descriptors) falls back
            // to the shared one, so only a failed read of the record itself retires a segment.
            (Read::Wait, Some(path)) => {
                segment::read_large(path, offset, len).or_else(|_| read_at(&file, offset, len))
            }
            (Read::Wait, None) => read_at(&file, offset, len),
        };
        Ok(self.decoded(key, hash, entry, now, read))
    }

    /// What a `get` does with the bytes it read (or failed to read): verifies and decodes them,
    /// marks the record hot and counts the hit; a failure is a miss and may retire the segment.
    fn decoded(
        &self,
        key: &CacheKey,
        hash: u64,
        entry: IndexEntry,
        now: SystemTime,
        read: io::Result<Vec<u8>>,
    ) -> Option<StoredObject> {
        let result = read.map(|bytes| decode_object(Bytes::from(bytes), key.text()));
        let mut ix = self.index();
        let same = |ix: &IndexState| {
            ix.index
                .entries
                .get(&hash)
                .is_some_and(|e| e.location() == entry.location())
        };
        let decoded = match result {
            Ok(decoded) => decoded,
            Err(e) => {
                let path = segment::segment_path(&self.dir, entry.segment);
                self.note_io("read a record from", &path, &e);
                bump(&self.c.misses);
                if same(&ix) {
                    drop(ix);
                    self.retire(entry.segment, "read error");
                }
                return None;
            }
        };
        match decoded {
            Ok(obj) => {
                if now >= obj.meta.keep_until {
                    if same(&ix) {
                        ix.index.remove(hash);
                    }
                    bump(&self.c.expired);
                    bump(&self.c.misses);
                    return None;
                }
                if same(&ix) {
                    let mut len = 0;
                    if let Some(e) = ix.index.entries.get_mut(&hash) {
                        e.flags |= FLAG_HOT;
                        len = u64::from(e.len);
                    }
                    let resident = ix.index.len();
                    ix.admission.record(hash, len, resident);
                }
                bump(&self.c.hits);
                Some(obj)
            }
            Err(DecodeError::KeyMismatch) => {
                bump(&self.c.misses);
                None
            }
            Err(DecodeError::Corrupt(e)) => {
                let n = self.c.checksum_failures.fetch_add(1, Ordering::Relaxed) + 1;
                bump(&self.c.misses);
                if !same(&ix) {
                    // Moved or replaced meanwhile (a reclaimed file read while being deleted).
                    return None;
                }
                drop(ix);
                tracing::warn!(
                    target: "outpost_store::disk",
                    segment = entry.segment,
                    offset = entry.offset,
                    key = key.text(),
                    error = %e,
                    checksum_failures = n,
                    "SSD tier: record failed verification; served as a miss, segment retired"
                );
                self.retire(entry.segment, "checksum mismatch");
                None
            }
        }
    }

    fn get_chunked(
        this: &Arc<Self>,
        key: &CacheKey,
        min_record: u64,
        now: SystemTime,
    ) -> Option<ChunkedHit> {
        Self::get_chunked_with(this, key, min_record, now, Read::Wait).unwrap_or(None)
    }

    /// [`Tier::get_chunked`]; with [`Read::NoWait`] the head is read only if the page cache
    /// holds it (`Err(WouldWait)` otherwise, before anything is counted).
    fn get_chunked_with(
        this: &Arc<Self>,
        key: &CacheKey,
        min_record: u64,
        now: SystemTime,
        how: Read,
    ) -> Result<Option<ChunkedHit>, WouldWait> {
        let hash = key.hash64();
        let (file, entry) = {
            let mut ix = this.index();
            // Absent, short and expired records are left to `get`, which counts them once.
            let take = |e: &IndexEntry| u64::from(e.len) >= min_record && !e.expired(now);
            if !ix.index.entries.get(&hash).is_some_and(take) {
                return Ok(None);
            }
            let Some((entry, segment)) = this.locate(&mut ix, hash, Some(now)) else {
                return Ok(None);
            };
            (segment.file.clone(), entry)
        };
        let result = match how {
            Read::Wait => read_head(&file, entry, key.text(), read_at),
            Read::NoWait => {
                let fast = &this.io.fast;
                let try_read = |f: &std::fs::File, offset: u64, len: usize| {
                    fast.try_read(f, offset, len)
                        .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))
                };
                match read_head(&file, entry, key.text(), try_read) {
                    // Not all cached (or a real error, which the queued read meets and reports).
                    Err(RangeError::Io(_)) => return Err(WouldWait),
                    result => {
                        fast.served();
                        result
                    }
                }
            }
        };
        let mut ix = this.index();
        let same = ix
            .index
            .entries
            .get(&hash)
            .is_some_and(|e| e.location() == entry.location());
        Ok(match result {
            // Counted as a hit (and marked hot) only when served: see `ChunkedHit::served`.
            Ok(head) if now < head.meta.keep_until => Some(ChunkedHit {
                status: head.status,
                headers: head.headers,
                meta: head.meta,
                body_len: head.body_len,
                source: Arc::new(chunked::Source {
                    tier: this.clone(),
                    file,
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
                    ix.index.remove(hash);
                }
                bump(&this.c.expired);
                None
            }
            Err(RangeError::KeyMismatch) => {
                bump(&this.c.misses);
                None
            }
            Err(RangeError::Io(e)) => {
                drop(ix);
                let path = segment::segment_path(&this.dir, entry.segment);
                this.note_io("read a record from", &path, &e);
                bump(&this.c.misses);
                if same {
                    this.retire(entry.segment, "read error");
                }
                None
            }
            Err(RangeError::Corrupt(e)) => {
                drop(ix);
                bump(&this.c.checksum_failures);
                bump(&this.c.misses);
                if same {
                    tracing::warn!(
                        target: "outpost_store::disk",
                        segment = entry.segment,
                        key = key.text(),
                        error = %e,
                        "SSD tier: record head failed verification; served as a miss, segment retired"
                    );
                    this.retire(entry.segment, "checksum mismatch");
                }
                None
            }
        })
    }

    /// The writer lock with room for `len` more bytes in the active segment, rotating (and so
    /// reclaiming) first when there is none. A rotation needs the reclaim lock, taken before the
    /// writer lock (lock order), so the check is made again once both are held.
    fn writer_with_room(&self, len: u64) -> io::Result<MutexGuard<'_, Writer>> {
        let needs = |w: &Writer| match &w.active {
            Some(a) => a.len + len > self.segment_bytes,
            None => true,
        };
        let w = self.writer();
        if !needs(&w) {
            return Ok(w);
        }
        drop(w);
        let mut r = self.reclaim_lock();
        let mut w = self.writer();
        if needs(&w) {
            self.rotate(&mut r, &mut w, len)?;
        }
        Ok(w)
    }

    /// The admission test of a fill of `hash` needing `bytes` when the tier is full: the
    /// candidate competes with the record reclamation drops next. `record` counts the access
    /// first (a whole insert) or only asks (a streamed fill, see `DiskAdmission::would_admit`).
    /// Called with the writer lock held (the victims of a segment may have to be read from its
    /// file, outside the index lock).
    fn admit(&self, hash: u64, bytes: u64, record: bool) -> bool {
        let mut ix = self.index();
        let replacing = ix.index.entries.contains_key(&hash);
        if record {
            let resident = ix.index.len();
            ix.admission.record(hash, bytes, resident);
        }
        if replacing || !ix.full() {
            return true;
        }
        let mut scanned = false;
        let victim = loop {
            match ix.next_victim(!scanned) {
                Victim::Found(v) => break v,
                Victim::Scan(id, file, len) => {
                    drop(ix);
                    let records = reclaim::scan_records(&file, len)
                        .map(|(records, _)| records)
                        .unwrap_or_default();
                    ix = self.index();
                    if ix.segments.get(&id).is_some_and(|s| !s.unlinked) {
                        ix.victims_segment = Some(id);
                        ix.victims = records.into();
                    }
                    scanned = true;
                }
            }
        };
        let admitted = if record {
            ix.admission.admits(hash, victim)
        } else {
            ix.admission.would_admit(hash, victim)
        };
        if admitted && victim.is_some() {
            // The records this fill displaces; the next fill meets the ones after them.
            ix.consume_victims(bytes);
        }
        admitted
    }

    /// Appends `bytes` at the end of the active segment (the writer lock is held); returns the
    /// segment and offset. The caller updates the index in one hold (`IndexState::appended`).
    fn append(w: &mut Writer, bytes: &[u8]) -> io::Result<(u32, u64)> {
        let a = w
            .active
            .as_mut()
            .ok_or_else(|| io::Error::other("no active segment"))?;
        let offset = a.len;
        a.file.write_all_at(bytes, offset)?;
        a.len += bytes.len() as u64;
        Ok((a.id, offset))
    }

    fn insert(&self, key: &CacheKey, obj: &StoredObject) -> Admission {
        let hash = key.hash64();
        let len = object_record_len(key, obj, self.chunk_bytes);
        let record = if len > self.max_record {
            None
        } else {
            encode_object(0, key, obj, self.chunk_bytes).ok()
        };
        let Some(mut record) = record else {
            // The new version supersedes the stored one even though it cannot be kept (under
            // the writer lock, so that no survivor move re-creates it).
            let _w = self.writer();
            self.index().index.remove(hash);
            bump(&self.c.too_large);
            return Admission::TooLarge;
        };
        let mut w = match self.writer_with_room(record.len() as u64) {
            Ok(w) => w,
            Err(e) => {
                self.note_io("append a record in", &self.dir, &e);
                let _w = self.writer();
                self.index().index.remove(hash);
                return Admission::Rejected;
            }
        };
        if !self.admit(hash, record.len() as u64, true) {
            bump(&self.c.rejected);
            return Admission::Rejected;
        }
        let expires = expiry_secs(obj.meta.keep_until);
        let seq = w.next_seq;
        let appended = set_sequence(&mut record, seq)
            .map_err(io::Error::other)
            .and_then(|()| Self::append(&mut w, &record));
        let (id, offset) = match appended {
            Ok(at) => at,
            Err(e) => {
                self.note_io("append a record in", &self.dir, &e);
                self.index().index.remove(hash);
                return Admission::Rejected;
            }
        };
        w.next_seq += 1;
        let end = offset + record.len() as u64;
        let (Ok(offset), Ok(len)) = (u32::try_from(offset), u32::try_from(record.len())) else {
            self.index().set_len(id, end);
            return Admission::Rejected;
        };
        let mut ix = self.index();
        ix.set_len(id, end);
        ix.index.insert(
            hash,
            IndexEntry {
                segment: id,
                offset,
                len,
                expires,
                flags: 0,
            },
            key.text(),
            obj.meta.tags.iter().map(String::as_str),
        );
        drop(ix);
        bump(&self.c.inserts);
        Admission::Admitted
    }

    fn begin_stream(
        this: &Arc<Self>,
        key: &CacheKey,
        head: &StreamHead,
    ) -> Result<StreamFill, Admission> {
        let hash = key.hash64();
        let meta = encode_meta(
            key,
            head.status,
            &head.headers,
            &head.meta,
            head.body_len,
            this.chunk_bytes,
        );
        // A refusal here is neither recorded nor counted: the caller falls back to buffering
        // the body and `insert`, which records the access and counts its outcome once.
        let Ok(meta) = meta else {
            return Err(Admission::TooLarge);
        };
        let layout = StreamLayout::new(meta.len(), head.body_len, this.chunk_bytes);
        if layout.total > this.max_record {
            return Err(Admission::TooLarge);
        }
        let mut w = match this.writer_with_room(layout.total) {
            Ok(w) => w,
            Err(e) => {
                this.note_io("reserve a streamed fill in", &this.dir, &e);
                return Err(Admission::Rejected);
            }
        };
        if !this.admit(hash, layout.total, false) {
            return Err(Admission::Rejected);
        }
        {
            let mut ix = this.index();
            let resident = ix.index.len();
            ix.admission.record(hash, layout.total, resident);
        }
        let seq = w.next_seq;
        let reserved = encode_pending(seq, hash, &meta, layout)
            .map_err(io::Error::other)
            .and_then(|prefix| {
                let a = w
                    .active
                    .as_mut()
                    .ok_or_else(|| io::Error::other("no active segment"))?;
                let offset = a.len;
                a.file.write_all_at(&prefix, offset)?;
                a.len += layout.total;
                Ok((a.id, offset, a.file.clone(), a.len))
            });
        let (segment, offset, file, end) = match reserved {
            Ok(r) => r,
            Err(e) => {
                this.note_io("reserve a streamed fill in", &this.dir, &e);
                return Err(Admission::Rejected);
            }
        };
        this.index().set_len(segment, end);
        w.next_seq += 1;
        drop(w);
        bump(&this.c.stream_fills);
        Ok(StreamFill::new(stream::Reservation {
            tier: this.clone(),
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
            chunk_bytes: this.chunk_bytes,
            tap_bytes: this.tap_bytes.clone(),
        }))
    }

    fn remove(&self, key: &CacheKey) -> bool {
        let mut w = self.writer();
        self.persist_purge(&mut w, RecordKind::PurgeKey, key.text());
        let removed = self
            .index()
            .index
            .remove_key(key.hash64(), key.text())
            .is_some();
        removed
    }

    fn remove_tag(&self, tag: &str) -> Vec<u64> {
        let mut w = self.writer();
        self.persist_purge(&mut w, RecordKind::PurgeTag, tag);
        // The writer lock is held throughout, so no survivor moves in between.
        self.take_batched(|ix| ix.index.take_tag(tag))
    }

    fn remove_prefix(&self, prefix: &str) -> Vec<u64> {
        let mut w = self.writer();
        self.persist_purge(&mut w, RecordKind::PurgePrefix, prefix);
        self.take_batched(|ix| ix.index.take_prefix(prefix))
    }

    /// Runs `take` (a tag or prefix purge's removal from the index) and returns the hashes it
    /// removed. The caller holds the writer lock.
    fn take_batched(&self, take: impl FnOnce(&mut IndexState) -> Vec<u64>) -> Vec<u64> {
        take(&mut self.index())
    }

    /// Writes a tombstone before the purge takes effect in RAM (the writer lock is held). A
    /// failure is counted and logged (the purge still applies to this process).
    fn persist_purge(&self, w: &mut Writer, kind: RecordKind, text: &str) {
        let seq = w.next_seq;
        w.next_seq += 1;
        let result = match (&mut w.purge, encode_purge(kind, seq, text)) {
            (Some(purge), Ok(record)) => purge.append(&record),
            (None, _) => Err(io::Error::other("purge log unavailable")),
            (_, Err(e)) => Err(io::Error::other(e)),
        };
        match result {
            Ok(()) => {
                w.tombstones.push(Tombstone {
                    seq,
                    kind,
                    text: Box::from(text),
                });
                bump(&self.c.tombstones);
            }
            Err(e) => {
                let path = self.dir.join(segment::PURGE_LOG);
                self.note_io("persist a purge tombstone to", &path, &e);
            }
        }
    }

    /// Retires segment `id` after a checksum mismatch or read error: its objects leave the
    /// index and the file is deleted (readers in flight keep their handle). Takes the writer
    /// lock (the segment may be the active one); the caller holds no lock.
    fn retire(&self, id: u32, why: &str) {
        let mut w = self.writer();
        self.retire_locked(&mut w, id, why);
    }

    /// [`Tier::retire`] with the writer lock held. The full-table scan for the segment's
    /// entries stays: this is the error path only.
    fn retire_locked(&self, w: &mut Writer, id: u32, why: &str) {
        let mut ix = self.index();
        let Some(seg) = ix.segments.remove(&id) else {
            return;
        };
        if ix.active == Some(id) {
            ix.active = None;
            w.active = None;
        }
        let mut dropped = 0u64;
        for (hash, _) in ix.index.entries_in(id) {
            ix.index.remove(hash);
            dropped += 1;
        }
        drop(ix);
        bump(&self.c.retired_segments);
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
}

/// What [`IndexState::next_victim`] found.
enum Victim {
    /// The next victim (`None`: nothing has to go, or none is known).
    Found(Option<u64>),
    /// The victims of this segment (file, length) must be read from its file first.
    Scan(u32, Arc<std::fs::File>, u64),
}

impl IndexState {
    /// Whether the next segment rotation has to reclaim (so a fill displaces live records).
    fn full(&self) -> bool {
        self.sealed_bytes() + 2 * self.segment_bytes > self.disk_bytes
    }

    /// Bytes of sealed segments still counted against the budget (a segment being drained
    /// is not: its replacement already is).
    fn sealed_bytes(&self) -> u64 {
        self.segments
            .values()
            .filter(|s| Some(s.id) != self.active && !s.unlinked)
            .map(|s| s.len)
            .sum()
    }

    /// Bytes of segment files counted against the budget.
    fn used_bytes(&self) -> u64 {
        self.segments
            .values()
            .filter(|s| !s.unlinked)
            .map(|s| s.len)
            .sum()
    }

    /// Records the new length of segment `id` after an append.
    fn set_len(&mut self, id: u32, len: u64) {
        if let Some(seg) = self.segments.get_mut(&id) {
            seg.len = seg.len.max(len);
        }
    }

    /// The live, not-hot record that reclamation drops next (hot records are re-appended
    /// instead): from the oldest sealed segment, then the next one once those are used up by
    /// admitted fills. With `may_scan`, a segment whose records are not known yet is named for
    /// the caller to read (at most one per admission test).
    fn next_victim(&mut self, may_scan: bool) -> Victim {
        if let Some(cur) = self.victims_segment {
            if self.segments.get(&cur).is_some_and(|s| !s.unlinked) {
                while let Some(&(h, offset)) = self.victims.front() {
                    let valid = self
                        .index
                        .entries
                        .get(&h)
                        .is_some_and(|e| e.segment == cur && e.offset == offset && !e.is_hot());
                    if valid {
                        return Victim::Found(Some(h));
                    }
                    self.victims.pop_front();
                }
            } else {
                self.victims.clear();
            }
        }
        if !may_scan {
            return Victim::Found(None);
        }
        let next = match self.victims_segment {
            Some(cur) if self.segments.contains_key(&cur) => self
                .segments
                .range(cur.saturating_add(1)..)
                .find(|(_, s)| !s.unlinked)
                .map(|(id, _)| *id),
            _ => self.segments.values().find(|s| !s.unlinked).map(|s| s.id),
        }
        .filter(|id| Some(*id) != self.active);
        match next.and_then(|id| self.segments.get(&id)) {
            Some(seg) => Victim::Scan(seg.id, seg.file.clone(), seg.len),
            None => Victim::Found(None),
        }
    }

    /// An admitted fill of `bytes` displaces victims until their lengths cover it.
    fn consume_victims(&mut self, mut bytes: u64) {
        while bytes > 0 {
            let Victim::Found(Some(h)) = self.next_victim(false) else {
                break;
            };
            let len = self.index.entries.get(&h).map_or(1, |e| u64::from(e.len));
            self.victims.pop_front();
            bytes = bytes.saturating_sub(len.max(1));
        }
    }

    /// Makes the newest recovered segment the active one if it is clean, has room and fits the
    /// budget, reopening it for writing.
    fn reuse_newest(&mut self, clean: &std::collections::BTreeSet<u32>) -> Option<Active> {
        let (&id, newest) = self.segments.iter().next_back()?;
        if !clean.contains(&id) || newest.len >= self.segment_bytes {
            return None;
        }
        let others: u64 = self
            .segments
            .values()
            .filter(|s| s.id != id)
            .map(|s| s.len)
            .sum();
        if others + self.segment_bytes > self.disk_bytes {
            return None;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&newest.path)
            .ok()?;
        let seg = self.segments.get_mut(&id)?;
        seg.file = Arc::new(file);
        self.active = Some(id);
        Some(Active {
            id,
            file: seg.file.clone(),
            len: seg.len,
        })
    }
}
