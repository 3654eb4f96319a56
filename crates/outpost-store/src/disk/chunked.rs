//! SSD hits read chunk by chunk ([`ChunkedHit`], [`ChunkReader`]): the record's head (header,
//! meta section, chunk table) is read and verified when the hit is opened, and the body one
//! verified chunk at a time as the client takes it, so serving a large object (or a range of it)
//! never holds more than one chunk in RAM and touches only the chunks it needs.
//!
//! A chunk that does not verify, or cannot be read, ends the reader with an error; it is counted
//! and retires the segment, as on any other SSD read.

use std::fs::File;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::format::ChunkRef;
use super::index::IndexEntry;
use super::lanes::{Completion, Refused};
use super::segment::{read_at, read_large, LARGE_READ};
use super::{add, bump, Tier};

/// Why a chunk could not be returned.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The chunk did not verify against its checksum.
    #[error("SSD chunk {0} failed verification")]
    Checksum(usize),
    /// Reading the segment file failed.
    #[error("reading an SSD chunk: {0}")]
    Io(#[from] io::Error),
}

/// What the tier knows of the record behind a hit.
pub(super) struct Source {
    pub tier: Arc<Tier>,
    pub file: Arc<File>,
    pub hash: u64,
    pub entry: IndexEntry,
    pub key: String,
    /// Chunks, offsets relative to the record start.
    pub chunks: Vec<ChunkRef>,
    pub chunk_size: u64,
}

impl Source {
    /// Counts a failed chunk read and retires the segment if the record is still the indexed one.
    fn failed(&self, e: &ChunkError) {
        let tier = &self.tier;
        let same = tier
            .index()
            .index
            .entries
            .get(&self.hash)
            .is_some_and(|e| e.location() == self.entry.location());
        match e {
            ChunkError::Checksum(_) => {
                bump(&tier.c.checksum_failures);
                if same {
                    tracing::warn!(
                        target: "outpost_store::disk",
                        segment = self.entry.segment,
                        key = %self.key,
                        error = %e,
                        "SSD tier: chunk failed verification mid-response; segment retired"
                    );
                    tier.retire(self.entry.segment, "checksum mismatch");
                }
            }
            ChunkError::Io(err) => {
                let path = super::segment::segment_path(&tier.dir, self.entry.segment);
                tier.note_io("read a chunk from", &path, err);
                if same {
                    tier.retire(self.entry.segment, "read error");
                }
            }
        }
    }
}

/// An object found on SSD, with its head read and verified and its body still on disk.
pub struct ChunkedHit {
    /// Response status.
    pub status: http::StatusCode,
    /// Stored response headers.
    pub headers: http::HeaderMap,
    /// Metadata.
    pub meta: crate::ObjectMeta,
    /// Length of the whole body.
    pub body_len: u64,
    pub(super) source: Arc<Source>,
}

impl std::fmt::Debug for ChunkedHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkedHit")
            .field("status", &self.status)
            .field("key", &self.source.key)
            .field("body_len", &self.body_len)
            .finish()
    }
}

impl ChunkedHit {
    /// Chunks of the body that overlap `range` (end exclusive), with the body position of each.
    fn overlapping(&self, range: &Range<u64>) -> Vec<(u64, ChunkRef)> {
        let mut pos = 0u64;
        let mut out = Vec::new();
        for chunk in &self.source.chunks {
            let end = pos + u64::from(chunk.len);
            if end > range.start && pos < range.end {
                out.push((pos, *chunk));
            }
            pos = end;
        }
        out
    }

    /// Records that the caller serves this hit: counted as a hit, the record marked hot and the
    /// access recorded for admission (as [`DiskStore::get`](super::DiskStore::get) does).
    pub fn served(&self) {
        let src = &self.source;
        {
            let mut ix = src.tier.index();
            if let Some(e) = ix.index.entries.get_mut(&src.hash) {
                if e.location() == src.entry.location() {
                    e.flags |= super::index::FLAG_HOT;
                    let len = u64::from(e.len);
                    let resident = ix.index.len();
                    ix.admission.record(src.hash, len, resident);
                }
            }
        }
        bump(&src.tier.c.hits);
        bump(&src.tier.c.chunked_hits);
    }

    /// A reader of body bytes `range` (end exclusive, clamped to the body). A range that is not
    /// the whole body is counted as a range read with the chunks it will touch.
    pub fn reader(&self, range: Range<u64>) -> ChunkReader {
        let end = range.end.min(self.body_len);
        let start = range.start.min(end);
        let range = start..end;
        let chunks = self.overlapping(&range);
        if range != (0..self.body_len) {
            bump(&self.source.tier.c.range_reads);
            add(&self.source.tier.c.range_chunks_read, chunks.len() as u64);
        }
        ChunkReader {
            source: self.source.clone(),
            chunks: chunks.into_iter(),
            range,
            returned: 0,
            failed: false,
            pending: None,
        }
    }
}

/// A chunk read under way on an SSD read thread.
type ChunkRead = Completion<Result<Vec<u8>, ChunkError>>;

/// Where chunk `chunk` lies in the segment file: offset and length.
fn chunk_span(src: &Source, chunk: ChunkRef) -> (u64, usize) {
    (
        u64::from(src.entry.offset) + chunk.offset,
        chunk.len as usize,
    )
}

/// Checks a chunk read (at body position `pos`) against its checksum.
fn verified(src: &Source, pos: u64, chunk: ChunkRef, buf: Vec<u8>) -> Result<Vec<u8>, ChunkError> {
    if crc32fast::hash(&buf) == chunk.crc {
        Ok(buf)
    } else {
        Err(ChunkError::Checksum((pos / src.chunk_size.max(1)) as usize))
    }
}

/// Reads and verifies chunk `chunk` (at body position `pos`) of a record: on any thread.
fn read_chunk(src: &Source, pos: u64, chunk: ChunkRef) -> Result<Vec<u8>, ChunkError> {
    let (offset, len) = chunk_span(src, chunk);
    // Large chunks skip zeroing the buffer (see `read_large`); any failure of that path
    // (segment reclaimed meanwhile, no descriptor) falls back to the shared handle.
    let read = if len >= LARGE_READ {
        let path = super::segment::segment_path(&src.tier.dir, src.entry.segment);
        read_large(&path, offset, len).or_else(|_| read_at(&src.file, offset, len))
    } else {
        read_at(&src.file, offset, len)
    };
    read.map_err(ChunkError::from)
        .and_then(|buf| verified(src, pos, chunk, buf))
}

/// Reads and verifies a chunk on the calling thread if the page cache holds it whole (see
/// `fastpath.rs`); `None`: it must be read on a read thread.
fn read_chunk_now(src: &Source, pos: u64, chunk: ChunkRef) -> Option<Result<Vec<u8>, ChunkError>> {
    let (offset, len) = chunk_span(src, chunk);
    let fast = &src.tier.io.fast;
    let buf = fast.try_read(&src.file, offset, len)?;
    fast.served();
    Some(verified(src, pos, chunk, buf))
}

/// Reads a [`ChunkedHit`]'s body range in order, one verified chunk at a time.
pub struct ChunkReader {
    source: Arc<Source>,
    chunks: std::vec::IntoIter<(u64, ChunkRef)>,
    range: Range<u64>,
    /// Bytes returned so far.
    returned: u64,
    failed: bool,
    /// The chunk being read on an SSD read thread ([`ChunkReader::poll_next_chunk`]).
    pending: Option<(u64, ChunkRef, ChunkRead)>,
}

impl std::fmt::Debug for ChunkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkReader")
            .field("key", &self.source.key)
            .field("range", &self.range)
            .finish()
    }
}

impl ChunkReader {
    /// Bytes the reader will return in all (the clamped range).
    pub fn len(&self) -> u64 {
        self.range.end - self.range.start
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// Bytes not returned yet.
    pub fn remaining(&self) -> u64 {
        self.len() - self.returned
    }

    /// Body position of the range's first byte.
    pub fn start(&self) -> u64 {
        self.range.start
    }

    /// Chunks still to be read.
    pub fn chunks_left(&self) -> usize {
        self.chunks.len()
    }

    /// The next piece of the range (one chunk, trimmed to the range); `None` at its end. Reads
    /// on the calling thread (see [`ChunkReader::poll_next_chunk`] for async callers).
    pub fn next_chunk(&mut self) -> Option<Result<Bytes, ChunkError>> {
        if self.failed {
            return None;
        }
        let (pos, chunk) = self.chunks.next()?;
        let read = read_chunk(&self.source, pos, chunk);
        Some(self.finish(pos, chunk, read))
    }

    /// [`ChunkReader::next_chunk`] for async callers: a chunk the page cache holds is read and
    /// verified at once on the calling thread (never waiting for the device, see
    /// `fastpath.rs`); any other is read on an SSD read thread (always queued: a response
    /// already started is never cut for a full queue) and the task is woken when it is there.
    pub fn poll_next_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, ChunkError>>> {
        if self.pending.is_none() {
            if self.failed {
                return Poll::Ready(None);
            }
            let Some((pos, chunk)) = self.chunks.next() else {
                return Poll::Ready(None);
            };
            if let Some(read) = read_chunk_now(&self.source, pos, chunk) {
                return Poll::Ready(Some(self.finish(pos, chunk, read)));
            }
            let (completion, done) = Completion::pending(Err(ChunkError::Io(io::Error::other(
                "chunk read abandoned",
            ))));
            let src = self.source.clone();
            let job = Box::new(move || {
                if !done.is_cancelled() {
                    let read = read_chunk(&src, pos, chunk);
                    done.complete(read);
                }
            });
            // Never `Full` (always queued); once the store is gone the caller reads.
            let io = &self.source.tier.io;
            match io.read.push_always(job) {
                Ok(()) => io.fast.queued(),
                Err(Refused::Closed(job)) => job(),
                Err(Refused::Full) => {}
            }
            self.pending = Some((pos, chunk, completion));
        }
        let Some((pos, chunk, completion)) = self.pending.as_mut() else {
            return Poll::Ready(None);
        };
        let (pos, chunk) = (*pos, *chunk);
        match Pin::new(completion).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(read) => {
                self.pending = None;
                Poll::Ready(Some(self.finish(pos, chunk, read)))
            }
        }
    }

    /// Counts a chunk read and trims it to the range, or ends the reader on a failure.
    fn finish(
        &mut self,
        pos: u64,
        chunk: ChunkRef,
        read: Result<Vec<u8>, ChunkError>,
    ) -> Result<Bytes, ChunkError> {
        match read {
            Ok(buf) => {
                bump(&self.source.tier.c.chunks_served);
                let from = self.range.start.saturating_sub(pos) as usize;
                let to = (self.range.end - pos).min(u64::from(chunk.len)) as usize;
                self.returned += (to - from) as u64;
                Ok(Bytes::from(buf).slice(from..to))
            }
            Err(e) => {
                self.failed = true;
                self.source.failed(&e);
                Err(e)
            }
        }
    }

    /// Reads the rest of the range into one buffer.
    pub fn read_all(mut self) -> Result<Bytes, ChunkError> {
        let mut out = Vec::with_capacity(self.len() as usize);
        while let Some(piece) = self.next_chunk() {
            out.extend_from_slice(&piece?);
        }
        Ok(Bytes::from(out))
    }
}
