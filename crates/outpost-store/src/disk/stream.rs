//! Fills streamed onto SSD chunk by chunk ([`StreamFill`]), and readers that follow a fill while
//! it is being written ([`StreamTap`], [`TapReader`]).
//!
//! [`DiskStore::begin_stream`](super::DiskStore::begin_stream) reserves the whole record in the
//! active segment (its length is known from `Content-Length`) and writes a `PENDING` header and
//! the meta section (format.rs). Each [`StreamFill::write`] then `pwrite`s the body bytes into
//! the reservation at once, so nothing but the chunk being checksummed is held in RAM, and
//! publishes the new end to the readers. [`StreamFill::commit`] writes the chunk table and the
//! final header and indexes the object; dropping the fill uncommitted abandons the reservation
//! (dead space until its segment is reclaimed; recovery skips it).
//!
//! Readers get bytes as soon as they are written: a chunk already complete is read whole and
//! verified against the checksum the writer computed; bytes of the chunk still being written are
//! passed on as written (their checksum does not exist yet). A reader that reaches the end of
//! the body ends cleanly even before the commit; one that waits for bytes the writer will never
//! write (it failed or was dropped) gets an error. Readers keep their own handle on the segment
//! file, so a reclaimed segment (deleted, never reused in place) stays readable to them.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use bytes::Bytes;

use super::format::{encode_commit, RecordKind, StreamLayout};
use super::index::IndexEntry;
use super::lanes::{Completion, Lanes, Refused};
use super::{bump, Tier, Writer};
use crate::store::Admission;
use crate::CacheKey;

/// Why a reader cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The fill ended without writing the bytes the reader waits for.
    #[error("streamed fill failed: {0}")]
    Failed(&'static str),
    /// A completed chunk did not verify against its checksum.
    #[error("streamed fill chunk {0} failed verification")]
    Checksum(u64),
    /// Reading the segment file failed.
    #[error("reading a streamed fill: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    Failed(&'static str),
}

#[derive(Debug)]
struct TapState {
    /// Body bytes written so far.
    written: u64,
    /// CRC-32 of each completed chunk, in order.
    crcs: Vec<u32>,
    end: End,
    wakers: Vec<Waker>,
}

/// What the writer shares with its readers.
#[derive(Debug)]
struct Shared {
    file: Arc<File>,
    /// File offset of body byte 0.
    body_start: u64,
    body_len: u64,
    chunk_bytes: u64,
    state: Mutex<TapState>,
    /// The store's counter of bytes served to followers.
    tap_bytes: Arc<AtomicU64>,
    /// A reader found a completed chunk that does not verify: the fill must not be indexed.
    corrupt: AtomicBool,
    /// The SSD I/O queues ([`TapReader::poll_read`] reads on a read thread).
    io: Arc<Lanes>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, TapState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, f: impl FnOnce(&mut TapState)) {
        let wakers = {
            let mut st = self.lock();
            f(&mut st);
            std::mem::take(&mut st.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }
}

/// A fill being streamed into its reservation on SSD. Dropping it without
/// [`StreamFill::commit`] abandons the fill: readers waiting for more bytes get an error.
pub struct StreamFill {
    tier: Arc<Tier>,
    shared: Arc<Shared>,
    key: CacheKey,
    tags: Vec<String>,
    expires: u32,
    segment: u32,
    /// Record start in the segment.
    offset: u64,
    layout: StreamLayout,
    meta: Vec<u8>,
    reserve_seq: u64,
    /// Checksum of the chunk being written and its bytes so far.
    hasher: crc32fast::Hasher,
    in_chunk: u64,
    crcs: Vec<(u32, u32)>,
    written: u64,
    done: bool,
}

/// What a queued write ([`StreamFill::write_queued`]) hands back.
#[derive(Debug)]
pub struct Written {
    /// The fill, to write more into or commit; `None` when the write was abandoned (the store
    /// shut down under it).
    pub fill: Option<StreamFill>,
    /// `Ok` when every byte was written; an error failed the fill, as [`StreamFill::write`] does.
    pub result: io::Result<()>,
}

/// What [`DiskStore::begin_stream`](super::DiskStore::begin_stream) reserved.
pub(super) struct Reservation {
    pub tier: Arc<Tier>,
    pub file: Arc<File>,
    pub key: CacheKey,
    pub tags: Vec<String>,
    pub expires: u32,
    pub segment: u32,
    pub offset: u64,
    pub layout: StreamLayout,
    pub meta: Vec<u8>,
    pub reserve_seq: u64,
    pub body_len: u64,
    pub chunk_bytes: u32,
    pub tap_bytes: Arc<AtomicU64>,
}

impl std::fmt::Debug for StreamFill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamFill")
            .field("key", &self.key.text())
            .field("segment", &self.segment)
            .field("offset", &self.offset)
            .field("written", &self.written)
            .field("body_len", &self.shared.body_len)
            .finish()
    }
}

impl StreamFill {
    pub(super) fn new(r: Reservation) -> Self {
        let shared = Arc::new(Shared {
            file: r.file,
            body_start: r.offset + r.layout.body,
            body_len: r.body_len,
            chunk_bytes: u64::from(r.chunk_bytes.max(1)),
            state: Mutex::new(TapState {
                written: 0,
                crcs: Vec::new(),
                end: End::Open,
                wakers: Vec::new(),
            }),
            tap_bytes: r.tap_bytes,
            corrupt: AtomicBool::new(false),
            io: r.tier.io.clone(),
        });
        Self {
            tier: r.tier,
            shared,
            key: r.key,
            tags: r.tags,
            expires: r.expires,
            segment: r.segment,
            offset: r.offset,
            layout: r.layout,
            meta: r.meta,
            reserve_seq: r.reserve_seq,
            hasher: crc32fast::Hasher::new(),
            in_chunk: 0,
            crcs: Vec::new(),
            written: 0,
            done: false,
        }
    }

    /// The key being filled.
    pub fn key(&self) -> &CacheKey {
        &self.key
    }

    /// Body bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The announced body length.
    pub fn body_len(&self) -> u64 {
        self.shared.body_len
    }

    /// A handle readers use to follow this fill (valid after the fill ends too).
    pub fn tap(&self) -> StreamTap {
        StreamTap(self.shared.clone())
    }

    /// Writes the next body bytes into the reservation and hands them to the readers. More bytes
    /// than announced, or a write error, fails the fill.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.done {
            return Err(io::Error::other("streamed fill already ended"));
        }
        if self.written + data.len() as u64 > self.shared.body_len {
            self.fail("body longer than announced");
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "body longer than announced",
            ));
        }
        if let Err(e) = self
            .shared
            .file
            .write_all_at(data, self.shared.body_start + self.written)
        {
            self.fail("write error");
            let path = super::segment::segment_path(&self.tier.dir, self.segment);
            self.tier.note_io("write a streamed fill to", &path, &e);
            return Err(e);
        }
        let first_new = self.crcs.len();
        let mut rest = data;
        while !rest.is_empty() {
            let room = (self.shared.chunk_bytes - self.in_chunk) as usize;
            let (piece, tail) = rest.split_at(room.min(rest.len()));
            self.hasher.update(piece);
            self.in_chunk += piece.len() as u64;
            rest = tail;
            if self.in_chunk == self.shared.chunk_bytes {
                let hasher = std::mem::take(&mut self.hasher);
                self.crcs.push((self.in_chunk as u32, hasher.finalize()));
                self.in_chunk = 0;
            }
        }
        self.written += data.len() as u64;
        let written = self.written;
        let completed: Vec<u32> = self.crcs[first_new..].iter().map(|c| c.1).collect();
        self.shared.publish(|st| {
            st.written = written;
            st.crcs.extend(completed);
        });
        Ok(())
    }

    /// [`StreamFill::write`] for async callers: `data` is written, in order, on the SSD append
    /// thread (a `pwrite` can wait for the device, e.g. when writeback throttles dirty pages),
    /// after every append submitted before it; the fill comes back with the outcome. Readers see
    /// the bytes as they are written. A caller that drops the [`Completion`] abandons the fill.
    ///
    /// Buffered `RWF_NOWAIT` writes (which would let a write skip the thread as reads do) are
    /// refused by ext4 on the kernels measured (`EOPNOTSUPP`), so every write is queued; callers
    /// batch what arrives while one write is under way.
    pub fn write_queued(self, data: Vec<Bytes>) -> Completion<Written> {
        let io = self.tier.io.clone();
        let (completion, done) = Completion::pending(Written {
            fill: None,
            result: Err(io::Error::other("streamed write abandoned")),
        });
        let job: super::lanes::Job = Box::new(move || {
            if done.is_cancelled() {
                // The caller gave the fill up: dropping it abandons the reservation.
                return;
            }
            let mut fill = self;
            let result = data.iter().try_for_each(|d| fill.write(d));
            done.complete(Written {
                fill: Some(fill),
                result,
            });
        });
        // Always queued (a response is under way); once the store is gone the caller writes.
        if let Err(Refused::Closed(job)) = io.append.push_always(job) {
            job();
        }
        completion
    }

    fn fail(&mut self, why: &'static str) {
        if self.done {
            return;
        }
        self.done = true;
        self.shared.publish(|st| st.end = End::Failed(why));
        bump(&self.tier.c.stream_aborts);
    }

    /// Ends the fill without indexing it (it was invalidated meanwhile): readers still get a
    /// body that was written whole; the reservation becomes dead space.
    pub fn close_uncommitted(mut self) {
        if self.written == self.shared.body_len {
            self.done = true;
            bump(&self.tier.c.stream_dropped);
        } else {
            self.fail("fill ended early");
        }
    }

    /// Commits a completely written fill: writes the chunk table and the final header and
    /// indexes the object (replacing an older version of the key). Rejected when the body is
    /// short (the older version stays), when the key was purged (by key, tag or prefix) after the
    /// fill began, or, dropping the older version it supersedes, when its segment was reclaimed or
    /// retired meanwhile, a reader found a chunk that does not verify (counted; the segment is
    /// retired) or a write failed. Readers of a body written whole end cleanly either way.
    pub fn commit(mut self, _now: SystemTime) -> Admission {
        if self.written != self.shared.body_len {
            self.fail("body shorter than announced");
            return Admission::Rejected;
        }
        if self.in_chunk > 0 {
            let hasher = std::mem::take(&mut self.hasher);
            self.crcs.push((self.in_chunk as u32, hasher.finalize()));
            self.in_chunk = 0;
        }
        self.done = true;
        let hash = self.key.hash64();
        let tier = self.tier.clone();
        let c = &tier.c;
        // Writer lock: the tombstones live there, and the commit's sequence is taken at its
        // `pwrite` like every other append's.
        let mut w = tier.writer();
        if w.purged_since(self.reserve_seq, self.key.text(), &self.tags) {
            bump(&c.stream_dropped);
            return Admission::Rejected;
        }
        // From here on a refusal still supersedes the older version.
        let superseded = |tier: &Tier| {
            tier.index().index.remove(hash);
            bump(&tier.c.stream_dropped);
            Admission::Rejected
        };
        if self.shared.corrupt.load(Ordering::Relaxed) {
            bump(&c.checksum_failures);
            tier.retire_locked(&mut w, self.segment, "checksum mismatch in a streamed fill");
            return superseded(&tier);
        }
        // A segment being drained (or gone) takes no new entry: its reclamation has already
        // decided what it keeps.
        let live = tier
            .index()
            .segments
            .get(&self.segment)
            .is_some_and(|s| !s.unlinked);
        if !live {
            return superseded(&tier);
        }
        let seq = w.next_seq;
        let written = encode_commit(seq, hash, &self.meta, self.layout, &self.crcs)
            .map_err(io::Error::other)
            .and_then(|(header, table)| {
                let file = &self.shared.file;
                file.write_all_at(&table, self.offset + self.layout.table)?;
                file.write_all_at(&header, self.offset)
            });
        if let Err(e) = written {
            let path = super::segment::segment_path(&tier.dir, self.segment);
            tier.note_io("commit a streamed fill to", &path, &e);
            bump(&c.stream_dropped);
            return Admission::Rejected;
        }
        w.next_seq += 1;
        let (Ok(offset), Ok(len)) = (u32::try_from(self.offset), u32::try_from(self.layout.total))
        else {
            bump(&c.stream_dropped);
            return Admission::Rejected;
        };
        tier.index().index.insert(
            hash,
            IndexEntry {
                segment: self.segment,
                offset,
                len,
                expires: self.expires,
                flags: 0,
            },
            self.key.text(),
            self.tags.iter().map(String::as_str),
        );
        drop(w);
        bump(&c.inserts);
        bump(&c.stream_commits);
        Admission::Admitted
    }
}

impl Drop for StreamFill {
    fn drop(&mut self) {
        if !self.done {
            self.fail("fill abandoned");
        }
    }
}

impl Writer {
    /// Whether a tombstone newer than `seq` matches the key (by key, tag or prefix).
    pub(super) fn purged_since(&self, seq: u64, key: &str, tags: &[String]) -> bool {
        self.tombstones
            .iter()
            .rev()
            .take_while(|t| t.seq > seq)
            .any(|t| match t.kind {
                RecordKind::PurgeKey => &*t.text == key,
                RecordKind::PurgeTag => tags.iter().any(|tag| *tag == *t.text),
                RecordKind::PurgePrefix => key.starts_with(&*t.text),
                RecordKind::Object => false,
            })
    }
}

/// A handle on a streamed fill from which readers are made. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StreamTap(Arc<Shared>);

impl StreamTap {
    /// Body bytes written (and visible to readers) so far.
    pub fn written(&self) -> u64 {
        self.0.lock().written
    }

    /// The body length the fill announced.
    pub fn body_len(&self) -> u64 {
        self.0.body_len
    }

    /// A reader from body byte `start`.
    pub fn reader(&self, start: u64) -> TapReader {
        TapReader {
            shared: self.0.clone(),
            pos: start.min(self.0.body_len),
            pending: None,
        }
    }
}

/// Reads a streamed fill's body in order, waiting for bytes not yet written.
#[derive(Debug)]
pub struct TapReader {
    shared: Arc<Shared>,
    pos: u64,
    /// The span being read on an SSD read thread ([`TapReader::poll_read`]).
    pending: Option<(Span, Completion<io::Result<Vec<u8>>>)>,
}

/// What the next read covers: body bytes `from..to`, and the checksum of the whole chunk
/// `chunk` when it is complete.
#[derive(Debug, Clone, Copy)]
struct Span {
    from: u64,
    to: u64,
    crc: Option<u32>,
    chunk: u64,
}

type Next = Poll<Option<Result<Bytes, TapError>>>;

/// Reads a span of the body (on any thread).
fn read_span(sh: &Shared, span: Span) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; (span.to - span.from) as usize];
    sh.file.read_exact_at(&mut buf, sh.body_start + span.from)?;
    Ok(buf)
}

/// Longest piece of an unfinished chunk returned at once.
const MAX_PIECE: u64 = 256 * 1024;

impl TapReader {
    /// Body position of the next byte returned.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next bytes: `Ready(None)` at the end of the body, `Pending` (the waker is kept) while
    /// the writer has not reached `position()`. Reads on the calling thread (see
    /// [`TapReader::poll_read`] for async callers).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Next {
        let span = match self.span(cx) {
            Ok(span) => span,
            Err(now) => return now,
        };
        let read = read_span(&self.shared, span);
        self.finish(span, read)
    }

    /// [`TapReader::poll_next`] for async callers: bytes already written are read at once on
    /// the calling thread when the page cache holds them (never waiting for the device, see
    /// `fastpath.rs`; just written, they nearly always are), otherwise on an SSD read thread
    /// (always queued: the response is under way) and the task is woken when they are there.
    pub fn poll_read(&mut self, cx: &mut Context<'_>) -> Next {
        if self.pending.is_none() {
            let span = match self.span(cx) {
                Ok(span) => span,
                Err(now) => return now,
            };
            let sh = &self.shared;
            let len = (span.to - span.from) as usize;
            if let Some(buf) = sh
                .io
                .fast
                .try_read(&sh.file, sh.body_start + span.from, len)
            {
                sh.io.fast.served();
                return self.finish(span, Ok(buf));
            }
            let (completion, done) =
                Completion::pending(Err(io::Error::other("tap read abandoned")));
            let sh = self.shared.clone();
            let job = Box::new(move || {
                if !done.is_cancelled() {
                    let read = read_span(&sh, span);
                    done.complete(read);
                }
            });
            // Never `Full` (always queued); once the store is gone the caller reads.
            match self.shared.io.read.push_always(job) {
                Ok(()) => self.shared.io.fast.queued(),
                Err(Refused::Closed(job)) => job(),
                Err(Refused::Full) => {}
            }
            self.pending = Some((span, completion));
        }
        let Some((span, completion)) = self.pending.as_mut() else {
            return Poll::Ready(None);
        };
        let span = *span;
        match std::pin::Pin::new(completion).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(read) => {
                self.pending = None;
                self.finish(span, read)
            }
        }
    }

    /// What the next read covers, or the answer when there is nothing to read now.
    fn span(&mut self, cx: &mut Context<'_>) -> Result<Span, Next> {
        let sh = &self.shared;
        if self.pos >= sh.body_len {
            return Err(Poll::Ready(None));
        }
        let chunk = self.pos / sh.chunk_bytes;
        let mut st = sh.lock();
        if let Some(&crc) = st.crcs.get(chunk as usize) {
            let from = chunk * sh.chunk_bytes;
            let to = (from + sh.chunk_bytes).min(sh.body_len);
            Ok(Span {
                from,
                to,
                crc: Some(crc),
                chunk,
            })
        } else if self.pos < st.written {
            let to = st.written.min(self.pos + MAX_PIECE);
            Ok(Span {
                from: self.pos,
                to,
                crc: None,
                chunk,
            })
        } else if st.written == sh.body_len {
            // The last chunk is complete but its checksum is the commit's.
            Ok(Span {
                from: self.pos,
                to: sh.body_len,
                crc: None,
                chunk,
            })
        } else if let End::Failed(why) = st.end {
            Err(Poll::Ready(Some(Err(TapError::Failed(why)))))
        } else {
            if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                st.wakers.push(cx.waker().clone());
            }
            Err(Poll::Pending)
        }
    }

    /// Verifies a span read and hands out the bytes from `position()`.
    fn finish(&mut self, span: Span, read: io::Result<Vec<u8>>) -> Next {
        let sh = &self.shared;
        let buf = match read {
            Ok(buf) => buf,
            Err(e) => return Poll::Ready(Some(Err(e.into()))),
        };
        if let Some(crc) = span.crc {
            if crc32fast::hash(&buf) != crc {
                sh.corrupt.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(TapError::Checksum(span.chunk))));
            }
        }
        let bytes = Bytes::from(buf).slice((self.pos - span.from) as usize..);
        self.pos = span.to;
        sh.tap_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Poll::Ready(Some(Ok(bytes)))
    }

    /// Waits for and returns the next bytes (see [`TapReader::poll_next`]).
    pub async fn next(&mut self) -> Option<Result<Bytes, TapError>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}
