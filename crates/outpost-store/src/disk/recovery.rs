//! Start-up recovery: reads the purge log (tombstones), then scans every segment's record
//! headers and meta sections in id order with one buffered sequential read per file (bodies are
//! skipped, not read), and rebuilds the key index, the tag index and the prefix index.
//!
//! Rules: the newest sequence of a key wins; a record older than a tombstone that matches it (same
//! key, a tag it carries, or a prefix of its key) is dead; an expired record is skipped; a torn
//! tail (a record longer than what is left of the file, or a partial header) ends that file's
//! scan and is cut off; a record whose header checksum fails ends that file's scan (later
//! records cannot be found without trusting its length) and the rest is cut off; the reservation
//! of a streamed fill that never committed (a `PENDING` header whose own checksum holds) is
//! skipped by its length and counted as abandoned; the scan goes on with the next segment. A segment or record written by a newer format version makes the
//! whole open fail: it is refused, never misread.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::format::{
    decode_purge, FormatError, MetaView, RecordHeader, RecordKind, SegmentHeader, FORMAT_VERSION,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use super::index::{expiry_secs, DiskIndex, IndexEntry};
use super::segment::{parse_segment_name, Segment, PURGE_LOG};
use super::{OpenError, Tombstone};
use crate::hashing::U64Map;

/// Read buffer of the sequential scan.
const SCAN_BUFFER: usize = 1 << 20;

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments: u64,
    /// Bytes of segment files scanned.
    pub segment_bytes: u64,
    /// Object records found intact.
    pub records: u64,
    /// Objects indexed after recovery (and after the byte budget).
    pub indexed: u64,
    /// Records superseded by a newer record of the same key.
    pub superseded: u64,
    /// Records dead because of a tombstone.
    pub purged: u64,
    /// Records skipped because `keep_until` had passed.
    pub expired: u64,
    /// Torn records (cut by a crash) ignored.
    pub torn: u64,
    /// Records with a bad checksum or structure (the rest of their file is ignored).
    pub corrupt: u64,
    /// Reservations of streamed fills that never committed (skipped; the scan goes on).
    pub abandoned: u64,
    /// Segment files dropped whole (unreadable or without a valid header).
    pub dropped_segments: u64,
    /// Tombstones loaded from the purge log.
    pub tombstones: u64,
    /// Objects reclaimed at open because more was on disk than the budget allows (it shrank).
    pub evicted: u64,
    /// Wall time of the recovery.
    pub elapsed: Duration,
}

/// Everything recovery rebuilt.
pub(crate) struct Recovered {
    pub index: DiskIndex,
    pub segments: BTreeMap<u32, Segment>,
    /// Segments that end with a whole record (their torn or corrupt tail, if any, was cut).
    pub clean: BTreeSet<u32>,
    pub tombstones: Vec<Tombstone>,
    /// End of the purge log's last valid record (None: no usable log).
    pub purge_valid_len: Option<u64>,
    pub next_seq: u64,
    pub next_segment: u32,
    pub report: RecoveryReport,
}

enum ScanError {
    Future(u16),
    Io(io::Error),
}

impl From<io::Error> for ScanError {
    fn from(e: io::Error) -> Self {
        ScanError::Io(e)
    }
}

struct ScanOutcome {
    header: Option<SegmentHeader>,
    valid_end: u64,
    file_len: u64,
}

/// Scans one file of records, calling `sink(header, offset, meta_and_table)` for every record
/// whose header checksum holds.
fn scan_file(
    path: &Path,
    report: &mut RecoveryReport,
    mut sink: impl FnMut(&RecordHeader, u64, &[u8]),
) -> Result<ScanOutcome, ScanError> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut outcome = ScanOutcome {
        header: None,
        valid_end: 0,
        file_len,
    };
    if file_len < SEGMENT_HEADER_LEN as u64 {
        return Ok(outcome);
    }
    let mut reader = BufReader::with_capacity(SCAN_BUFFER, file);
    let mut seg_header = [0u8; SEGMENT_HEADER_LEN];
    reader.read_exact(&mut seg_header)?;
    match SegmentHeader::decode(&seg_header) {
        Ok(h) => outcome.header = Some(h),
        Err(FormatError::FutureVersion { found }) => return Err(ScanError::Future(found)),
        Err(_) => return Ok(outcome),
    }
    let mut offset = SEGMENT_HEADER_LEN as u64;
    let mut header_buf = [0u8; RECORD_HEADER_LEN];
    let mut rest = Vec::new();
    loop {
        if offset == file_len {
            break;
        }
        if file_len - offset < RECORD_HEADER_LEN as u64 {
            report.torn += 1;
            break;
        }
        reader.read_exact(&mut header_buf)?;
        let header = match RecordHeader::parse(&header_buf) {
            Ok(h) => h,
            Err(_) => {
                report.corrupt += 1;
                break;
            }
        };
        let total = u64::from(header.total_len);
        if offset + total > file_len {
            report.torn += 1;
            break;
        }
        if header.is_pending() {
            match header.verify_pending(&header_buf) {
                Ok(()) => {}
                Err(FormatError::FutureVersion { found }) => return Err(ScanError::Future(found)),
                Err(_) => {
                    report.corrupt += 1;
                    break;
                }
            }
            report.abandoned += 1;
            let skip = total - RECORD_HEADER_LEN as u64;
            reader.seek_relative(
                i64::try_from(skip).map_err(|_| io::Error::other("record too large"))?,
            )?;
            offset += total;
            continue;
        }
        let rest_len = usize::try_from(header.prefix_len() - RECORD_HEADER_LEN as u64)
            .map_err(|_| io::Error::other("record too large"))?;
        rest.resize(rest_len, 0);
        reader.read_exact(&mut rest)?;
        match header.verify(&header_buf, &rest) {
            Ok(()) => {}
            Err(FormatError::FutureVersion { found }) => return Err(ScanError::Future(found)),
            Err(_) => {
                report.corrupt += 1;
                break;
            }
        }
        sink(&header, offset, &rest);
        let skip = total - header.prefix_len();
        reader.seek_relative(
            i64::try_from(skip).map_err(|_| io::Error::other("record too large"))?,
        )?;
        offset += total;
    }
    outcome.valid_end = offset;
    Ok(outcome)
}

/// Per-record outcomes counted inside the scan callback.
#[derive(Default)]
struct Tally {
    purged: u64,
    expired: u64,
    superseded: u64,
    corrupt: u64,
}

/// Tombstones by kind, for the "is this record dead" test.
#[derive(Default)]
struct Purges {
    keys: HashMap<Box<str>, u64>,
    tags: HashMap<Box<str>, u64>,
    prefixes: Vec<(Box<str>, u64)>,
}

impl Purges {
    fn add(&mut self, t: &Tombstone) {
        let map = match t.kind {
            RecordKind::PurgeKey => &mut self.keys,
            RecordKind::PurgeTag => &mut self.tags,
            RecordKind::PurgePrefix => {
                self.prefixes.push((t.text.clone(), t.seq));
                return;
            }
            RecordKind::Object => return,
        };
        let seq = map.entry(t.text.clone()).or_insert(0);
        *seq = (*seq).max(t.seq);
    }

    fn kills(&self, seq: u64, view: &MetaView<'_>) -> bool {
        if self.keys.get(view.key).is_some_and(|t| *t > seq) {
            return true;
        }
        if !self.tags.is_empty()
            && view
                .tags
                .iter()
                .any(|tag| self.tags.get(*tag).is_some_and(|t| *t > seq))
        {
            return true;
        }
        self.prefixes
            .iter()
            .any(|(p, t)| *t > seq && view.key.starts_with(&**p))
    }
}

fn io_error(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> OpenError {
    let path = path.to_path_buf();
    move |source| OpenError::Io { path, op, source }
}

fn future(path: &Path, found: u16) -> OpenError {
    OpenError::FutureFormat {
        path: path.to_path_buf(),
        found,
        supported: FORMAT_VERSION,
    }
}

/// Rebuilds the SSD tier's state from `dir`.
pub(crate) fn recover(dir: &Path, now: SystemTime) -> Result<Recovered, OpenError> {
    let started = Instant::now();
    let mut report = RecoveryReport::default();
    let mut max_seq = 0u64;

    // 1. Tombstones.
    let purge_path = dir.join(PURGE_LOG);
    let mut tombstones = Vec::new();
    let mut purge_valid_len = None;
    if purge_path.exists() {
        let mut found = Vec::new();
        match scan_file(&purge_path, &mut report, |header, _, rest| {
            if header.kind == RecordKind::Object {
                return;
            }
            if let Ok(text) = decode_purge(header, rest) {
                found.push(Tombstone {
                    seq: header.seq,
                    kind: header.kind,
                    text: text.into_boxed_str(),
                });
            }
        }) {
            Ok(outcome) => {
                if outcome.header.is_some() {
                    purge_valid_len = Some(outcome.valid_end);
                }
            }
            Err(ScanError::Future(found)) => return Err(future(&purge_path, found)),
            Err(ScanError::Io(e)) => return Err(io_error(&purge_path, "read the purge log")(e)),
        }
        tombstones = found;
    }
    let mut purges = Purges::default();
    for t in &tombstones {
        purges.add(t);
        max_seq = max_seq.max(t.seq);
    }
    report.tombstones = tombstones.len() as u64;

    // 2. Segments, oldest first.
    let listing = std::fs::read_dir(dir).map_err(io_error(dir, "list the directory"))?;
    let mut ids: Vec<(u32, PathBuf)> = listing
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            parse_segment_name(name.to_str()?).map(|id| (id, e.path()))
        })
        .collect();
    ids.sort_unstable_by_key(|(id, _)| *id);
    let next_segment = ids.last().map_or(1, |(id, _)| id.saturating_add(1));

    let mut index = DiskIndex::default();
    let mut seqs: U64Map<u64> = U64Map::default();
    let mut segments = BTreeMap::new();
    let mut tally = Tally::default();
    let mut clean = BTreeSet::new();
    for (id, path) in ids {
        report.segments += 1;
        let mut records = 0u64;
        let outcome = scan_file(&path, &mut report, |header, offset, rest| {
            if header.kind != RecordKind::Object {
                return;
            }
            let Ok(offset32) = u32::try_from(offset) else {
                return;
            };
            let meta = &rest[..header.meta_len as usize];
            let Ok(view) = MetaView::parse(meta) else {
                tally.corrupt += 1;
                return;
            };
            records += 1;
            max_seq = max_seq.max(header.seq);
            let hash = header.key_hash;
            if let Some(&newer) = seqs.get(&hash) {
                tally.superseded += 1;
                if newer > header.seq {
                    return;
                }
            }
            // The newest record of a key decides, even when it is dead (purged or expired): an
            // older version never comes back in its place.
            seqs.insert(hash, header.seq);
            if purges.kills(header.seq, &view) {
                tally.purged += 1;
                index.remove(hash);
                return;
            }
            if now >= view.keep_until {
                tally.expired += 1;
                index.remove(hash);
                return;
            }
            index.insert(
                hash,
                IndexEntry {
                    segment: id,
                    offset: offset32,
                    len: header.total_len,
                    expires: expiry_secs(view.keep_until),
                    flags: 0,
                },
                view.key,
                view.tags.iter().copied(),
            );
        });
        report.records += records;
        match outcome {
            Err(ScanError::Future(found)) => return Err(future(&path, found)),
            Err(ScanError::Io(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "SSD tier: cannot read segment; dropping it");
                drop_segment(&path, &mut report, &mut index, id);
            }
            Ok(outcome) => match outcome.header {
                None => {
                    tracing::warn!(path = %path.display(), "SSD tier: segment without a valid header; dropping it");
                    drop_segment(&path, &mut report, &mut index, id);
                }
                Some(header) => {
                    max_seq = max_seq.max(header.base_seq);
                    report.segment_bytes += outcome.file_len;
                    let mut len = outcome.file_len;
                    if outcome.valid_end < outcome.file_len {
                        // Cut the torn or corrupt tail so it is never looked at again.
                        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
                            if f.set_len(outcome.valid_end).is_ok() {
                                len = outcome.valid_end;
                            }
                        }
                    }
                    if len == outcome.valid_end {
                        clean.insert(id);
                    }
                    match File::open(&path) {
                        Ok(file) => {
                            segments.insert(
                                id,
                                Segment {
                                    id,
                                    file: Arc::new(file),
                                    len,
                                    base_seq: header.base_seq,
                                    path,
                                    unlinked: false,
                                },
                            );
                        }
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "SSD tier: cannot reopen segment; dropping it");
                            drop_segment(&path, &mut report, &mut index, id);
                        }
                    }
                }
            },
        }
    }
    report.purged += tally.purged;
    report.expired += tally.expired;
    report.superseded += tally.superseded;
    report.corrupt += tally.corrupt;

    report.elapsed = started.elapsed();
    Ok(Recovered {
        index,
        segments,
        clean,
        tombstones,
        purge_valid_len,
        next_seq: max_seq + 1,
        next_segment,
        report,
    })
}

fn drop_segment(path: &Path, report: &mut RecoveryReport, index: &mut DiskIndex, id: u32) {
    report.dropped_segments += 1;
    for (hash, _) in index.entries_in(id) {
        index.remove(hash);
    }
    let _ = std::fs::remove_file(path);
}
