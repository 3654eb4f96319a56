//! The SSD side of a streamed fill: the origin body's bytes are written into the fill's SSD
//! reservation on the store's append thread, never on a tokio worker (a `pwrite` can wait for
//! the device when writeback throttles dirty pages). One write is under way at a time; what
//! arrives meanwhile is queued and goes in the next write as one batch, so a fast origin costs
//! a thread hop per batch, not per chunk. Queued bytes are bounded ([`MAX_QUEUED`]): past it the
//! leader stops reading the origin until the disk catches up.
//!
//! Every byte stays referenced here until its write is confirmed, so when a write fails (a full
//! disk) the bytes from the failure on are handed back ([`Spill`]) for the fill registry, and
//! the readers that followed the SSD carry on from there.

use bytes::Bytes;
use outpost_store::{Completion, StreamFill, StreamTap, Written};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Body bytes queued or being written at most before the leader waits for the disk.
pub(crate) const MAX_QUEUED: u64 = 8 << 20;

/// How far [`SsdStream::poll_progress`] goes before it is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// Every byte is submitted (a write may still be under way).
    Submitted,
    /// Every byte is written and the fill is back.
    Written,
}

/// A write failed: the body from `at` on was not written, and `rest` holds those bytes.
#[derive(Debug)]
pub(crate) struct Spill {
    pub at: u64,
    pub rest: Vec<Bytes>,
    pub error: std::io::Error,
}

enum State {
    /// No write under way: the fill is here.
    Idle(StreamFill),
    /// A write of the first `in_flight` queued pieces is under way.
    Writing(Completion<Written>),
    /// A write failed (already reported).
    Failed,
}

/// A streamed fill's SSD writes, batched onto the append thread.
pub(crate) struct SsdStream {
    state: State,
    /// Bytes not yet confirmed written, from body offset `from`; the first `in_flight` are in
    /// the write under way.
    queued: VecDeque<Bytes>,
    from: u64,
    in_flight: usize,
    queued_bytes: u64,
    /// What readers see, for where a failed (or abandoned) write stopped.
    tap: StreamTap,
}

impl SsdStream {
    pub(crate) fn new(fill: StreamFill) -> Self {
        let tap = fill.tap();
        Self {
            state: State::Idle(fill),
            queued: VecDeque::new(),
            from: 0,
            in_flight: 0,
            queued_bytes: 0,
            tap,
        }
    }

    /// Whether the leader should wait for the disk before reading more of the origin body.
    pub(crate) fn over_limit(&self) -> bool {
        self.queued_bytes > MAX_QUEUED
    }

    /// Queues the next body bytes (submitting them at once when no write is under way). A
    /// failure found on the way is returned and `data` is not taken: it goes where the spill
    /// goes.
    pub(crate) fn push(&mut self, data: Bytes) -> Result<(), Spill> {
        if let State::Writing(c) = &mut self.state {
            if c.is_ready() {
                let written = std::mem::replace(c, Completion::ready(abandoned())).wait();
                self.settle(written)?;
            }
        }
        if matches!(self.state, State::Failed) {
            return Err(self.spill(std::io::Error::other("streamed fill failed before")));
        }
        self.queued_bytes += data.len() as u64;
        self.queued.push_back(data);
        if matches!(self.state, State::Idle(_)) {
            self.submit();
        }
        Ok(())
    }

    /// Drives the writes until `until` holds (`Ready(Ok)`), a write fails (`Ready(Err)`), or a
    /// write is under way (`Pending`: the task is woken when it ends).
    pub(crate) fn poll_progress(
        &mut self,
        cx: &mut Context<'_>,
        until: Until,
    ) -> Poll<Result<(), Spill>> {
        loop {
            match &mut self.state {
                State::Failed => {
                    let error = std::io::Error::other("streamed fill failed before");
                    return Poll::Ready(Err(self.spill(error)));
                }
                State::Idle(_) if self.queued.is_empty() => return Poll::Ready(Ok(())),
                State::Idle(_) => self.submit(),
                State::Writing(_)
                    if until == Until::Submitted && self.in_flight == self.queued.len() =>
                {
                    return Poll::Ready(Ok(()));
                }
                State::Writing(c) => match Pin::new(c).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(written) => {
                        self.state = State::Failed;
                        if let Err(spill) = self.settle(written) {
                            return Poll::Ready(Err(spill));
                        }
                    }
                },
            }
        }
    }

    /// Waits until every queued byte is written and gives the fill back (to commit it).
    pub(crate) async fn finish(mut self) -> Result<StreamFill, Spill> {
        std::future::poll_fn(|cx| self.poll_progress(cx, Until::Written)).await?;
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Idle(fill) => Ok(fill),
            _ => Err(self.spill(std::io::Error::other("streamed fill failed before"))),
        }
    }

    /// Hands every queued piece to one write on the append thread.
    fn submit(&mut self) {
        let State::Idle(fill) = std::mem::replace(&mut self.state, State::Failed) else {
            return;
        };
        self.in_flight = self.queued.len();
        let batch: Vec<Bytes> = self.queued.iter().cloned().collect();
        self.state = State::Writing(fill.write_queued(batch));
    }

    /// Takes a write's outcome: the written pieces are dropped and the fill is idle again, or
    /// the failure is returned as a spill.
    fn settle(&mut self, written: Written) -> Result<(), Spill> {
        match written {
            Written {
                fill: Some(fill),
                result: Ok(()),
            } => {
                for piece in self.queued.drain(..self.in_flight) {
                    self.from += piece.len() as u64;
                    self.queued_bytes -= piece.len() as u64;
                }
                self.in_flight = 0;
                self.state = State::Idle(fill);
                Ok(())
            }
            Written { fill, result } => {
                drop(fill);
                self.state = State::Failed;
                let error = result
                    .err()
                    .unwrap_or_else(|| std::io::Error::other("streamed write abandoned"));
                Err(self.spill(error))
            }
        }
    }

    /// The queued bytes from where the readers stopped (the last byte written) on.
    fn spill(&mut self, error: std::io::Error) -> Spill {
        let at = self.tap.written().max(self.from);
        let mut skip = at - self.from;
        let mut rest = Vec::with_capacity(self.queued.len());
        for piece in self.queued.drain(..) {
            let len = piece.len() as u64;
            if skip >= len {
                skip -= len;
                continue;
            }
            rest.push(piece.slice(skip as usize..));
            skip = 0;
        }
        self.from = at;
        self.in_flight = 0;
        self.queued_bytes = 0;
        Spill { at, rest, error }
    }
}

/// A stand-in answer for a completion already taken.
fn abandoned() -> Written {
    Written {
        fill: None,
        result: Err(std::io::Error::other("streamed write abandoned")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use outpost_store::{Admission, CacheKey, DiskConfig, DiskStore, ObjectMeta, StreamHead};
    use std::time::{Duration, SystemTime};

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn store(name: &str) -> (DiskStore, std::path::PathBuf) {
        store_sized(name, 1 << 20, 4 << 20)
    }

    fn store_sized(name: &str, segment: u64, disk: u64) -> (DiskStore, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("outpost-fill-stream-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = DiskConfig {
            chunk_bytes: 1000,
            segment_bytes: segment,
            ..DiskConfig::new(&dir, disk)
        };
        (DiskStore::open(&cfg, t(0)).unwrap().0, dir)
    }

    fn begin(store: &DiskStore, key: &CacheKey, body_len: u64) -> StreamFill {
        let head = StreamHead {
            status: http::StatusCode::OK,
            headers: http::HeaderMap::new(),
            meta: ObjectMeta {
                request_time: t(1),
                response_time: t(1),
                initial_age: Duration::ZERO,
                lifetime: Duration::from_secs(600),
                keep_until: t(600),
                tags: Vec::new(),
                vary: None,
                derived: None,
            },
            body_len,
        };
        store.begin_stream(key, &head, t(1)).unwrap()
    }

    fn body(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    /// Drives `s` as the leader does: push, make progress, and finally give the fill back.
    fn run(mut s: SsdStream, pieces: &[&[u8]]) -> Result<StreamFill, Spill> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for p in pieces {
            s.push(Bytes::copy_from_slice(p))?;
            if let Poll::Ready(Err(spill)) = s.poll_progress(&mut cx, Until::Submitted) {
                return Err(spill);
            }
        }
        block_on(s.finish())
    }

    /// Waits for `f` on this thread (the writes run on the store's append thread).
    fn block_on<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn pieces_are_written_in_order_off_the_caller_and_the_fill_commits() {
        let (store, dir) = store("order");
        let key = CacheKey::new("https://a.example/v");
        let bytes = body(10_500);
        let fill = begin(&store, &key, bytes.len() as u64);
        let tap = fill.tap();
        let pieces: Vec<&[u8]> = bytes.chunks(700).collect();
        let fill = run(SsdStream::new(fill), &pieces).expect("written");
        assert_eq!(tap.written(), bytes.len() as u64);
        assert_eq!(fill.commit(t(2)), Admission::Admitted);
        let got = store.get(&key, t(2)).expect("stored");
        assert_eq!(&got.body[..], &bytes[..]);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_failed_write_hands_back_every_byte_from_where_the_readers_stopped() {
        let (store, dir) = store("spill");
        let key = CacheKey::new("https://a.example/s");
        let bytes = body(5_000);
        // Announced 3 000 bytes: the write that goes past them fails (as a full disk would).
        let fill = begin(&store, &key, 3_000);
        let tap = fill.tap();
        let pieces: Vec<&[u8]> = bytes.chunks(1_200).collect();
        let spill = run(SsdStream::new(fill), &pieces).expect_err("spilled");
        assert_eq!(spill.at, tap.written());
        assert!(
            spill.at <= 3_000 && spill.at.is_multiple_of(1_200),
            "{}",
            spill.at
        );
        let rest: Vec<u8> = spill.rest.iter().flat_map(|b| b.iter().copied()).collect();
        // What the readers saw plus what was handed back is the whole body, once.
        let (seen, _) = bytes.split_at(spill.at as usize);
        assert_eq!([seen, &rest[..]].concat(), bytes[..seen.len() + rest.len()]);
        assert!(
            seen.len() + rest.len() >= 3_600,
            "every pushed byte is accounted for"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn pushes_faster_than_the_disk_are_batched_and_all_written() {
        let (store, dir) = store_sized("batch", 16 << 20, 64 << 20);
        let key = CacheKey::new("https://a.example/l");
        let len = 12u64 << 20;
        let fill = begin(&store, &key, len);
        let tap = fill.tap();
        let mut s = SsdStream::new(fill);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let piece = Bytes::from(vec![7u8; 256 << 10]);
        let mut pushed = 0u64;
        while pushed < len {
            s.push(piece.clone()).unwrap();
            pushed += piece.len() as u64;
            assert!(s.queued_bytes <= pushed);
            assert_eq!(s.over_limit(), s.queued_bytes > MAX_QUEUED);
            let _ = s.poll_progress(&mut cx, Until::Submitted);
        }
        // Waiting for every byte written empties the queue.
        while s.poll_progress(&mut cx, Until::Written).is_pending() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!s.over_limit());
        assert_eq!((s.queued_bytes, s.from, tap.written()), (0, len, len));
        let fill = block_on(s.finish()).unwrap();
        assert_eq!(fill.commit(t(2)), Admission::Admitted);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
