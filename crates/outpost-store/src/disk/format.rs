//! The on-disk format of the SSD tier, version 2: the directory's `FORMAT` file, the segment
//! header, and the self-describing record (object or purge tombstone) with its chunk table and
//! checksums. Encoding and decoding only: no files, no locks.
//!
//! All integers are little-endian. Layouts (offsets in bytes):
//!
//! Segment header (32 bytes, at offset 0 of every segment file and of `purges.log`). Its first
//! 10 bytes (magic + version) are stable across all format versions, so any future build can be
//! recognised and refused:
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `OUTPSEG\0` |
//! | 8 | 2 | format version |
//! | 10 | 2 | reserved (0) |
//! | 12 | 4 | segment id |
//! | 16 | 8 | base sequence: every record in the file has a sequence ≥ this |
//! | 24 | 4 | CRC-32 of bytes 0..24 |
//! | 28 | 4 | reserved (0) |
//!
//! Record = 40-byte header, meta section, chunk table, body:
//!
//! | off | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `OPRC` |
//! | 4 | 2 | format version |
//! | 6 | 1 | kind: 1 object, 2 purge key, 3 purge tag, 4 purge prefix |
//! | 7 | 1 | flags: bit 0 `PENDING` (a streamed fill's reservation), other bits 0 |
//! | 8 | 8 | sequence (global, increasing) |
//! | 16 | 8 | key hash (objects and key purges; else 0) |
//! | 24 | 4 | total record length |
//! | 28 | 4 | meta section length |
//! | 32 | 4 | chunk count |
//! | 36 | 4 | CRC-32 of header bytes 0..36 + meta section + chunk table |
//!
//! Meta section: `u32 len + key text` (for purges the key, tag or prefix text; nothing else), then
//! for objects: `u16 status`, request time, response time (`u64 secs + u32 nanos` since the Unix
//! epoch), initial age, lifetime (`u64 secs + u32 nanos`), keep-until (time), `u32 n` headers of
//! `u16 len + name, u32 len + value`, `u32 n` tags of `u32 len + text`, `u8 has_vary` then `u32 n`
//! names of `u16 len + name`, `u64 body length`, `u32 chunk size`. Chunk table: per chunk
//! `u32 length + u32 CRC-32 of the chunk`. Body: the chunks back to back.
//!
//! `ObjectMeta::derived` is never written; it is `None` on load.
//!
//! A fill streamed onto SSD (see `stream.rs`) first *reserves* its whole record: a header with
//! the `PENDING` flag whose CRC covers header bytes 0..36 only (all lengths are final, the
//! sequence is the reservation's), followed by the meta section; the body is written into the
//! reservation as it arrives. The commit writes the chunk table, then rewrites the header
//! without the flag, with the commit's sequence and the usual checksum. Recovery skips a
//! pending record whose header checksum holds (a fill cut by a crash or abandoned) and goes on
//! with the next record; a pending record is never indexed. Builds before the flag existed see
//! a checksum mismatch there and stop that file's scan: conservative, never a misread.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{CacheKey, ObjectMeta, StoredObject};

/// The format version this build writes. It reads every version from 1 up to this one: version 2
/// is version 1 plus the `PENDING` record flag of streamed fills, which a version-1 build would
/// take for a damaged record (and cut the segment there), so a directory this build opened is
/// marked version 2 and refused by version-1 builds.
pub const FORMAT_VERSION: u16 = 2;
/// Name of the directory's version file.
pub const FORMAT_FILE: &str = "FORMAT";
/// Text of the version file before the version number.
pub const FORMAT_FILE_PREFIX: &str = "outpost-store format ";
/// Segment (and purge log) header magic.
pub const SEGMENT_MAGIC: [u8; 8] = *b"OUTPSEG\0";
/// Segment header length.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Record magic.
pub const RECORD_MAGIC: [u8; 4] = *b"OPRC";
/// Record header length.
pub const RECORD_HEADER_LEN: usize = 40;
/// Bytes per chunk-table entry.
pub const CHUNK_ENTRY_LEN: usize = 8;
/// Default body chunk size.
pub const DEFAULT_CHUNK_BYTES: u32 = 1 << 20;
/// Record flag: a reservation of a fill being streamed (not committed).
pub const FLAG_PENDING: u8 = 1;

/// Record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A cached object.
    Object = 1,
    /// Purge of one key.
    PurgeKey = 2,
    /// Purge of every object carrying a surrogate-key tag.
    PurgeTag = 3,
    /// Purge of every key starting with a prefix.
    PurgePrefix = 4,
}

impl RecordKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(RecordKind::Object),
            2 => Some(RecordKind::PurgeKey),
            3 => Some(RecordKind::PurgeTag),
            4 => Some(RecordKind::PurgePrefix),
            _ => None,
        }
    }
}

/// Why bytes are not a valid record or header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Fewer bytes than the structure needs.
    #[error("truncated")]
    Truncated,
    /// Not our magic.
    #[error("bad magic")]
    BadMagic,
    /// A checksum does not match.
    #[error("checksum mismatch")]
    Checksum,
    /// Written by a newer format version than this build reads.
    #[error("format version {found} is newer than this build reads")]
    FutureVersion {
        /// The version found.
        found: u16,
    },
    /// Structurally invalid (a field out of range).
    #[error("invalid record: {0}")]
    Invalid(&'static str),
    /// Too large to encode (a length over `u32`).
    #[error("too large to encode")]
    TooLarge,
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version.
    pub version: u16,
    /// Segment id.
    pub id: u32,
    /// Lower bound of the sequences in the file.
    pub base_seq: u64,
}

impl SegmentHeader {
    /// Encodes the header at the current format version.
    pub fn encode(id: u32, base_seq: u64) -> [u8; SEGMENT_HEADER_LEN] {
        let mut buf = [0u8; SEGMENT_HEADER_LEN];
        buf[0..8].copy_from_slice(&SEGMENT_MAGIC);
        buf[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf[12..16].copy_from_slice(&id.to_le_bytes());
        buf[16..24].copy_from_slice(&base_seq.to_le_bytes());
        let crc = crc32fast::hash(&buf[0..24]);
        buf[24..28].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decodes a header. A newer version is reported before the checksum is looked at (the
    /// magic and version fields are stable across versions).
    pub fn decode(buf: &[u8]) -> Result<Self, FormatError> {
        if buf.len() < SEGMENT_HEADER_LEN {
            return Err(FormatError::Truncated);
        }
        if buf[0..8] != SEGMENT_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let version = u16::from_le_bytes([buf[8], buf[9]]);
        if version > FORMAT_VERSION {
            return Err(FormatError::FutureVersion { found: version });
        }
        let crc = le_u32(&buf[24..28]);
        if crc != crc32fast::hash(&buf[0..24]) {
            return Err(FormatError::Checksum);
        }
        if version == 0 {
            return Err(FormatError::Invalid("segment version 0"));
        }
        Ok(Self {
            version,
            id: le_u32(&buf[12..16]),
            base_seq: le_u64(&buf[16..24]),
        })
    }
}

/// The text of the `FORMAT` file for this build.
pub fn format_file_text() -> String {
    format!("{FORMAT_FILE_PREFIX}{FORMAT_VERSION}\n")
}

/// Parses the `FORMAT` file: the version it names.
pub fn parse_format_file(text: &str) -> Result<u16, FormatError> {
    text.trim()
        .strip_prefix(FORMAT_FILE_PREFIX.trim_end())
        .map(str::trim)
        .and_then(|v| v.parse::<u16>().ok())
        .ok_or(FormatError::Invalid(
            "FORMAT file is not `outpost-store format N`",
        ))
}

/// A parsed record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Format version of the record.
    pub version: u16,
    /// Kind.
    pub kind: RecordKind,
    /// Flags ([`FLAG_PENDING`]).
    pub flags: u8,
    /// Sequence.
    pub seq: u64,
    /// Key hash (objects and key purges).
    pub key_hash: u64,
    /// Whole record length.
    pub total_len: u32,
    /// Meta section length.
    pub meta_len: u32,
    /// Chunk count.
    pub chunks: u32,
    /// Header checksum.
    pub crc: u32,
}

impl RecordHeader {
    /// Parses the fixed header (magic, kind and size sanity; not the checksum, which needs the
    /// meta section and chunk table: see [`RecordHeader::verify`]).
    pub fn parse(buf: &[u8]) -> Result<Self, FormatError> {
        if buf.len() < RECORD_HEADER_LEN {
            return Err(FormatError::Truncated);
        }
        if buf[0..4] != RECORD_MAGIC {
            return Err(FormatError::BadMagic);
        }
        let kind = RecordKind::from_u8(buf[6]).ok_or(FormatError::Invalid("record kind"))?;
        if buf[7] & !FLAG_PENDING != 0 {
            return Err(FormatError::Invalid("record flags"));
        }
        let header = Self {
            version: u16::from_le_bytes([buf[4], buf[5]]),
            kind,
            flags: buf[7],
            seq: le_u64(&buf[8..16]),
            key_hash: le_u64(&buf[16..24]),
            total_len: le_u32(&buf[24..28]),
            meta_len: le_u32(&buf[28..32]),
            chunks: le_u32(&buf[32..36]),
            crc: le_u32(&buf[36..40]),
        };
        if u64::from(header.total_len) < header.prefix_len() {
            return Err(FormatError::Invalid("record lengths"));
        }
        Ok(header)
    }

    /// Bytes of header + meta section + chunk table.
    pub fn prefix_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64
            + u64::from(self.meta_len)
            + u64::from(self.chunks) * CHUNK_ENTRY_LEN as u64
    }

    /// Whether this is the reservation of a streamed fill that was never committed.
    pub fn is_pending(&self) -> bool {
        self.flags & FLAG_PENDING != 0
    }

    /// Checks a pending header's checksum (it covers header bytes 0..36 only), then the
    /// version: a pending record that passes can be skipped by its length.
    pub fn verify_pending(&self, header: &[u8]) -> Result<(), FormatError> {
        if header.len() < RECORD_HEADER_LEN {
            return Err(FormatError::Truncated);
        }
        if !self.is_pending() || crc32fast::hash(&header[0..36]) != self.crc {
            return Err(FormatError::Checksum);
        }
        if self.version > FORMAT_VERSION {
            return Err(FormatError::FutureVersion {
                found: self.version,
            });
        }
        Ok(())
    }

    /// Checks the header checksum against the header bytes and the bytes that follow it (meta
    /// section + chunk table), then the version. A pending header never verifies.
    pub fn verify(&self, header: &[u8], rest: &[u8]) -> Result<(), FormatError> {
        if header.len() < RECORD_HEADER_LEN {
            return Err(FormatError::Truncated);
        }
        if self.is_pending() {
            return Err(FormatError::Invalid("pending record"));
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[0..36]);
        hasher.update(rest);
        if hasher.finalize() != self.crc {
            return Err(FormatError::Checksum);
        }
        if self.version > FORMAT_VERSION {
            return Err(FormatError::FutureVersion {
                found: self.version,
            });
        }
        if self.version == 0 {
            return Err(FormatError::Invalid("record version 0"));
        }
        Ok(())
    }
}

/// Sets a record's sequence and recomputes its header checksum (the body's chunk checksums are
/// unaffected). Used when the sequence is assigned at append time and when survivors move.
pub fn set_sequence(record: &mut [u8], seq: u64) -> Result<(), FormatError> {
    let header = RecordHeader::parse(record)?;
    let prefix = usize::try_from(header.prefix_len()).map_err(|_| FormatError::TooLarge)?;
    if record.len() < prefix {
        return Err(FormatError::Truncated);
    }
    record[8..16].copy_from_slice(&seq.to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&record[0..36]);
    hasher.update(&record[RECORD_HEADER_LEN..prefix]);
    let crc = hasher.finalize();
    record[36..40].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn put_time(buf: &mut Vec<u8>, t: SystemTime) {
    put_duration(buf, t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO));
}

fn put_duration(buf: &mut Vec<u8>, d: Duration) {
    buf.extend_from_slice(&d.as_secs().to_le_bytes());
    buf.extend_from_slice(&d.subsec_nanos().to_le_bytes());
}

fn put_u32_len(buf: &mut Vec<u8>, len: usize) -> Result<(), FormatError> {
    let len = u32::try_from(len).map_err(|_| FormatError::TooLarge)?;
    buf.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

fn put_u16_len(buf: &mut Vec<u8>, len: usize) -> Result<(), FormatError> {
    let len = u16::try_from(len).map_err(|_| FormatError::TooLarge)?;
    buf.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

fn header_bytes(
    kind: RecordKind,
    seq: u64,
    key_hash: u64,
    total: usize,
    meta_len: usize,
    chunks: usize,
) -> Result<[u8; RECORD_HEADER_LEN], FormatError> {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(&RECORD_MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[6] = kind as u8;
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..24].copy_from_slice(&key_hash.to_le_bytes());
    let total = u32::try_from(total).map_err(|_| FormatError::TooLarge)?;
    let meta_len = u32::try_from(meta_len).map_err(|_| FormatError::TooLarge)?;
    let chunks = u32::try_from(chunks).map_err(|_| FormatError::TooLarge)?;
    h[24..28].copy_from_slice(&total.to_le_bytes());
    h[28..32].copy_from_slice(&meta_len.to_le_bytes());
    h[32..36].copy_from_slice(&chunks.to_le_bytes());
    Ok(h)
}

/// The length [`encode_object`] will produce, without encoding (for admission checks).
pub fn object_record_len(key: &CacheKey, obj: &StoredObject, chunk_bytes: u32) -> u64 {
    let chunk = u64::from(chunk_bytes.max(1));
    let body = obj.body.len() as u64;
    let chunks = body.div_ceil(chunk);
    let headers: u64 = obj
        .headers
        .iter()
        .map(|(n, v)| 6 + n.as_str().len() as u64 + v.len() as u64)
        .sum();
    let tags: u64 = obj.meta.tags.iter().map(|t| 4 + t.len() as u64).sum();
    let vary: u64 = obj.meta.vary.as_ref().map_or(0, |names| {
        4 + names
            .iter()
            .map(|n| 2 + n.as_str().len() as u64)
            .sum::<u64>()
    });
    let meta = 4 + key.text().len() as u64 + 2 + 12 * 5 + 4 + headers + 4 + tags + 1 + vary + 8 + 4;
    RECORD_HEADER_LEN as u64 + meta + chunks * CHUNK_ENTRY_LEN as u64 + body
}

/// Encodes an object's meta section (see the module docs).
pub fn encode_meta(
    key: &CacheKey,
    status: http::StatusCode,
    headers: &http::HeaderMap,
    m: &ObjectMeta,
    body_len: u64,
    chunk_bytes: u32,
) -> Result<Vec<u8>, FormatError> {
    let mut meta = Vec::with_capacity(256 + key.text().len());
    put_u32_len(&mut meta, key.text().len())?;
    meta.extend_from_slice(key.text().as_bytes());
    meta.extend_from_slice(&status.as_u16().to_le_bytes());
    put_time(&mut meta, m.request_time);
    put_time(&mut meta, m.response_time);
    put_duration(&mut meta, m.initial_age);
    put_duration(&mut meta, m.lifetime);
    put_time(&mut meta, m.keep_until);
    put_u32_len(&mut meta, headers.len())?;
    for (name, value) in headers {
        put_u16_len(&mut meta, name.as_str().len())?;
        meta.extend_from_slice(name.as_str().as_bytes());
        put_u32_len(&mut meta, value.len())?;
        meta.extend_from_slice(value.as_bytes());
    }
    put_u32_len(&mut meta, m.tags.len())?;
    for tag in &m.tags {
        put_u32_len(&mut meta, tag.len())?;
        meta.extend_from_slice(tag.as_bytes());
    }
    match &m.vary {
        None => meta.push(0),
        Some(names) => {
            meta.push(1);
            put_u32_len(&mut meta, names.len())?;
            for name in names.iter() {
                put_u16_len(&mut meta, name.as_str().len())?;
                meta.extend_from_slice(name.as_str().as_bytes());
            }
        }
    }
    meta.extend_from_slice(&body_len.to_le_bytes());
    meta.extend_from_slice(&chunk_bytes.max(1).to_le_bytes());
    Ok(meta)
}

/// Encodes an object record (sequence as given; see [`set_sequence`]).
pub fn encode_object(
    seq: u64,
    key: &CacheKey,
    obj: &StoredObject,
    chunk_bytes: u32,
) -> Result<Vec<u8>, FormatError> {
    let chunk = usize::try_from(chunk_bytes.max(1)).map_err(|_| FormatError::TooLarge)?;
    let meta = encode_meta(
        key,
        obj.status,
        &obj.headers,
        &obj.meta,
        obj.body.len() as u64,
        chunk_bytes,
    )?;
    let chunks = obj.body.len().div_ceil(chunk);
    let total = RECORD_HEADER_LEN + meta.len() + chunks * CHUNK_ENTRY_LEN + obj.body.len();
    let header = header_bytes(
        RecordKind::Object,
        seq,
        key.hash64(),
        total,
        meta.len(),
        chunks,
    )?;
    let mut buf = Vec::with_capacity(total);
    buf.extend_from_slice(&header);
    buf.extend_from_slice(&meta);
    for piece in obj.body.chunks(chunk) {
        put_u32_len(&mut buf, piece.len())?;
        buf.extend_from_slice(&crc32fast::hash(piece).to_le_bytes());
    }
    let prefix = buf.len();
    buf.extend_from_slice(&obj.body);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&buf[0..36]);
    hasher.update(&buf[RECORD_HEADER_LEN..prefix]);
    let crc = hasher.finalize();
    buf[36..40].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// The layout of a streamed fill's record: its total length, the offset of the chunk table and
/// of the body from the record start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLayout {
    /// Whole record length.
    pub total: u64,
    /// Chunk table offset.
    pub table: u64,
    /// Body offset.
    pub body: u64,
    /// Chunk count.
    pub chunks: u64,
}

impl StreamLayout {
    /// Layout of a record with a `meta_len`-byte meta section and a `body_len`-byte body.
    pub fn new(meta_len: usize, body_len: u64, chunk_bytes: u32) -> Self {
        let chunks = body_len.div_ceil(u64::from(chunk_bytes.max(1)));
        let table = (RECORD_HEADER_LEN + meta_len) as u64;
        let body = table + chunks * CHUNK_ENTRY_LEN as u64;
        Self {
            total: body + body_len,
            table,
            body,
            chunks,
        }
    }
}

/// The reservation a streamed fill writes first: a `PENDING` header (checksum over its own
/// bytes 0..36) followed by the meta section.
pub fn encode_pending(
    seq: u64,
    key_hash: u64,
    meta: &[u8],
    layout: StreamLayout,
) -> Result<Vec<u8>, FormatError> {
    let total = usize::try_from(layout.total).map_err(|_| FormatError::TooLarge)?;
    let chunks = usize::try_from(layout.chunks).map_err(|_| FormatError::TooLarge)?;
    let mut header = header_bytes(RecordKind::Object, seq, key_hash, total, meta.len(), chunks)?;
    header[7] = FLAG_PENDING;
    let crc = crc32fast::hash(&header[0..36]);
    header[36..40].copy_from_slice(&crc.to_le_bytes());
    let mut buf = Vec::with_capacity(RECORD_HEADER_LEN + meta.len());
    buf.extend_from_slice(&header);
    buf.extend_from_slice(meta);
    Ok(buf)
}

/// The commit of a streamed fill: the chunk table (`(length, CRC-32)` per chunk) and the final
/// header (no flag, sequence `seq`, checksum over header + meta + table).
pub fn encode_commit(
    seq: u64,
    key_hash: u64,
    meta: &[u8],
    layout: StreamLayout,
    chunks: &[(u32, u32)],
) -> Result<([u8; RECORD_HEADER_LEN], Vec<u8>), FormatError> {
    if chunks.len() as u64 != layout.chunks {
        return Err(FormatError::Invalid("chunk count"));
    }
    let total = usize::try_from(layout.total).map_err(|_| FormatError::TooLarge)?;
    let mut header = header_bytes(
        RecordKind::Object,
        seq,
        key_hash,
        total,
        meta.len(),
        chunks.len(),
    )?;
    let mut table = Vec::with_capacity(chunks.len() * CHUNK_ENTRY_LEN);
    for (len, crc) in chunks {
        table.extend_from_slice(&len.to_le_bytes());
        table.extend_from_slice(&crc.to_le_bytes());
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[0..36]);
    hasher.update(meta);
    hasher.update(&table);
    header[36..40].copy_from_slice(&hasher.finalize().to_le_bytes());
    Ok((header, table))
}

/// Encodes a purge tombstone record.
pub fn encode_purge(kind: RecordKind, seq: u64, text: &str) -> Result<Vec<u8>, FormatError> {
    let key_hash = match kind {
        RecordKind::PurgeKey => crate::hashing::key_hash(text),
        _ => 0,
    };
    let meta_len = 4 + text.len();
    let total = RECORD_HEADER_LEN + meta_len;
    let header = header_bytes(kind, seq, key_hash, total, meta_len, 0)?;
    let mut buf = Vec::with_capacity(total);
    buf.extend_from_slice(&header);
    put_u32_len(&mut buf, text.len())?;
    buf.extend_from_slice(text.as_bytes());
    let crc = {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&buf[0..36]);
        hasher.update(&buf[RECORD_HEADER_LEN..]);
        hasher.finalize()
    };
    buf[36..40].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// A bounds-checked little-endian cursor.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self.pos.checked_add(n).ok_or(FormatError::Truncated)?;
        let out = self.buf.get(self.pos..end).ok_or(FormatError::Truncated)?;
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FormatError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(le_u32(self.take(4)?))
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(le_u64(self.take(8)?))
    }
    fn len32(&mut self) -> Result<usize, FormatError> {
        usize::try_from(self.u32()?).map_err(|_| FormatError::TooLarge)
    }
    fn duration(&mut self) -> Result<Duration, FormatError> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(FormatError::Invalid("nanoseconds"));
        }
        Ok(Duration::new(secs, nanos))
    }
    fn time(&mut self) -> Result<SystemTime, FormatError> {
        UNIX_EPOCH
            .checked_add(self.duration()?)
            .ok_or(FormatError::Invalid("time out of range"))
    }
    fn str(&mut self, n: usize) -> Result<&'a str, FormatError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| FormatError::Invalid("utf-8"))
    }
}

/// A parsed meta section, borrowing the record bytes (headers are left raw so that recovery,
/// which needs only the key, tags and expiry, does not build them).
#[derive(Debug)]
pub struct MetaView<'a> {
    /// Key text.
    pub key: &'a str,
    /// Status code.
    pub status: u16,
    /// Request time.
    pub request_time: SystemTime,
    /// Response time.
    pub response_time: SystemTime,
    /// Corrected initial age.
    pub initial_age: Duration,
    /// Freshness lifetime.
    pub lifetime: Duration,
    /// Keep-until.
    pub keep_until: SystemTime,
    header_count: usize,
    headers_raw: &'a [u8],
    /// Surrogate-key tags.
    pub tags: Vec<&'a str>,
    /// Vary names of a vary marker.
    pub vary: Option<Vec<&'a str>>,
    /// Body length.
    pub body_len: u64,
    /// Chunk size.
    pub chunk_size: u32,
}

impl<'a> MetaView<'a> {
    /// Parses an object's meta section.
    pub fn parse(meta: &'a [u8]) -> Result<Self, FormatError> {
        let mut c = Cursor { buf: meta, pos: 0 };
        let key_len = c.len32()?;
        let key = c.str(key_len)?;
        let status = c.u16()?;
        let request_time = c.time()?;
        let response_time = c.time()?;
        let initial_age = c.duration()?;
        let lifetime = c.duration()?;
        let keep_until = c.time()?;
        let header_count = c.len32()?;
        let start = c.pos;
        for _ in 0..header_count {
            let n = usize::from(c.u16()?);
            c.take(n)?;
            let v = c.len32()?;
            c.take(v)?;
        }
        let headers_raw = &meta[start..c.pos];
        let tag_count = c.len32()?;
        let mut tags = Vec::with_capacity(tag_count.min(64));
        for _ in 0..tag_count {
            let n = c.len32()?;
            tags.push(c.str(n)?);
        }
        let vary = match c.u8()? {
            0 => None,
            1 => {
                let n = c.len32()?;
                let mut names = Vec::with_capacity(n.min(64));
                for _ in 0..n {
                    let len = usize::from(c.u16()?);
                    names.push(c.str(len)?);
                }
                Some(names)
            }
            _ => return Err(FormatError::Invalid("vary flag")),
        };
        let body_len = c.u64()?;
        let chunk_size = c.u32()?;
        if c.pos != meta.len() {
            return Err(FormatError::Invalid("meta section length"));
        }
        if chunk_size == 0 {
            return Err(FormatError::Invalid("chunk size 0"));
        }
        Ok(Self {
            key,
            status,
            request_time,
            response_time,
            initial_age,
            lifetime,
            keep_until,
            header_count,
            headers_raw,
            tags,
            vary,
            body_len,
            chunk_size,
        })
    }

    /// Builds the header map.
    pub fn headers(&self) -> Result<http::HeaderMap, FormatError> {
        let mut map = http::HeaderMap::with_capacity(self.header_count.min(256));
        let mut c = Cursor {
            buf: self.headers_raw,
            pos: 0,
        };
        for _ in 0..self.header_count {
            let n = usize::from(c.u16()?);
            let name = http::HeaderName::from_bytes(c.take(n)?)
                .map_err(|_| FormatError::Invalid("header name"))?;
            let v = c.len32()?;
            let value = http::HeaderValue::from_bytes(c.take(v)?)
                .map_err(|_| FormatError::Invalid("header value"))?;
            map.append(name, value);
        }
        Ok(map)
    }

    /// Builds the object metadata (`derived` is `None`).
    pub fn object_meta(&self) -> Result<ObjectMeta, FormatError> {
        let vary = match &self.vary {
            None => None,
            Some(names) => {
                let parsed: Result<Vec<http::HeaderName>, FormatError> = names
                    .iter()
                    .map(|n| {
                        http::HeaderName::from_bytes(n.as_bytes())
                            .map_err(|_| FormatError::Invalid("vary name"))
                    })
                    .collect();
                Some(Arc::from(parsed?))
            }
        };
        Ok(ObjectMeta {
            request_time: self.request_time,
            response_time: self.response_time,
            initial_age: self.initial_age,
            lifetime: self.lifetime,
            keep_until: self.keep_until,
            tags: self.tags.iter().map(|t| (*t).to_owned()).collect(),
            vary,
            derived: None,
        })
    }
}

/// Why a stored record could not be returned for a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record is intact but belongs to another key (hash collision).
    #[error("record belongs to another key")]
    KeyMismatch,
    /// The record is damaged.
    #[error("corrupt record: {0}")]
    Corrupt(#[from] FormatError),
}

/// One chunk's place in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    /// Offset of the chunk from the start of the record.
    pub offset: u64,
    /// Length.
    pub len: u32,
    /// CRC-32.
    pub crc: u32,
}

/// Parses a verified record prefix (header + meta + chunk table) into the meta view and the
/// chunk list (offsets relative to the record start).
pub fn parse_prefix(
    prefix: &[u8],
) -> Result<(RecordHeader, MetaView<'_>, Vec<ChunkRef>), FormatError> {
    let header = RecordHeader::parse(prefix)?;
    let plen = usize::try_from(header.prefix_len()).map_err(|_| FormatError::TooLarge)?;
    if prefix.len() < plen {
        return Err(FormatError::Truncated);
    }
    header.verify(
        &prefix[..RECORD_HEADER_LEN],
        &prefix[RECORD_HEADER_LEN..plen],
    )?;
    if header.kind != RecordKind::Object {
        return Err(FormatError::Invalid("not an object record"));
    }
    let meta_end = RECORD_HEADER_LEN + header.meta_len as usize;
    let view = MetaView::parse(&prefix[RECORD_HEADER_LEN..meta_end])?;
    let mut chunks = Vec::with_capacity(header.chunks as usize);
    let mut c = Cursor {
        buf: &prefix[meta_end..plen],
        pos: 0,
    };
    let mut offset = plen as u64;
    let mut sum = 0u64;
    for _ in 0..header.chunks {
        let len = c.u32()?;
        let crc = c.u32()?;
        chunks.push(ChunkRef { offset, len, crc });
        offset += u64::from(len);
        sum += u64::from(len);
    }
    if chunks.iter().any(|c| c.len == 0 || c.len > view.chunk_size) {
        return Err(FormatError::Invalid("chunk length"));
    }
    if sum != view.body_len || offset != u64::from(header.total_len) {
        return Err(FormatError::Invalid("chunk lengths"));
    }
    Ok((header, view, chunks))
}

/// Decodes and fully verifies (header checksum and every chunk checksum) an object record read
/// whole, checking that it belongs to `expect_key`. The body shares `record`'s buffer.
pub fn decode_object(record: Bytes, expect_key: &str) -> Result<StoredObject, DecodeError> {
    let (header, view, chunks) = parse_prefix(&record)?;
    if u64::from(header.total_len) != record.len() as u64 {
        return Err(FormatError::Invalid("record length").into());
    }
    if view.key != expect_key {
        return Err(DecodeError::KeyMismatch);
    }
    for chunk in &chunks {
        let start = usize::try_from(chunk.offset).map_err(|_| FormatError::TooLarge)?;
        let end = start + chunk.len as usize;
        let bytes = record.get(start..end).ok_or(FormatError::Truncated)?;
        if crc32fast::hash(bytes) != chunk.crc {
            return Err(FormatError::Checksum.into());
        }
    }
    let status =
        http::StatusCode::from_u16(view.status).map_err(|_| FormatError::Invalid("status"))?;
    let headers = view.headers()?;
    let meta = view.object_meta()?;
    let body_start = usize::try_from(header.prefix_len()).map_err(|_| FormatError::TooLarge)?;
    let body = record.slice(body_start..);
    Ok(StoredObject {
        status,
        headers,
        body,
        meta,
    })
}

/// Parses a verified purge record: its kind, sequence and text.
pub fn decode_purge(header: &RecordHeader, rest: &[u8]) -> Result<String, FormatError> {
    let mut c = Cursor { buf: rest, pos: 0 };
    let n = c.len32()?;
    let text = c.str(n)?;
    if c.pos != rest.len() {
        return Err(FormatError::Invalid("purge record length"));
    }
    if header.kind == RecordKind::Object {
        return Err(FormatError::Invalid("not a purge record"));
    }
    Ok(text.to_owned())
}

/// Fully verifies a whole object record (header checksum, structure, every chunk checksum) and
/// returns its tags (used when a survivor is moved).
pub fn verify_record(record: &[u8]) -> Result<Vec<String>, FormatError> {
    let (header, view, chunks) = parse_prefix(record)?;
    if u64::from(header.total_len) != record.len() as u64 {
        return Err(FormatError::Invalid("record length"));
    }
    for chunk in &chunks {
        let start = usize::try_from(chunk.offset).map_err(|_| FormatError::TooLarge)?;
        let end = start + chunk.len as usize;
        let bytes = record.get(start..end).ok_or(FormatError::Truncated)?;
        if crc32fast::hash(bytes) != chunk.crc {
            return Err(FormatError::Checksum);
        }
    }
    Ok(view.tags.iter().map(|t| (*t).to_owned()).collect())
}
