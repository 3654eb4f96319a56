//! Response body types: whole bytes (hits), an origin body passed through (pass), and a follower
//! of an in-flight fill with optional byte-range slicing (misses and collapsed requests), reading
//! either the fill registry's chunks or, for a fill streamed onto SSD, the SSD tier; and an SSD
//! object read chunk by chunk (large hits and ranges).

use crate::fill_head::FillHead;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use outpost_fill::{FillError, FillFollower};
use outpost_store::{ChunkReader, TapReader};
use outpost_upstream::BoxError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Every response body the node sends: whole bytes without an allocation (every hit), or any
/// streaming body, boxed.
pub enum RespBody {
    /// A complete body, taken by the first poll.
    Full(Option<Bytes>),
    /// A streaming body.
    Stream(UnsyncBoxBody<Bytes, BoxError>),
}

impl RespBody {
    /// Box a streaming body.
    pub fn stream<B>(b: B) -> Self
    where
        B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
    {
        RespBody::Stream(b.boxed_unsync())
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            RespBody::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            RespBody::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RespBody::Stream(s) => s.size_hint(),
        }
    }
}

/// A complete body.
pub fn full(b: Bytes) -> RespBody {
    RespBody::Full(Some(b))
}

/// An origin body streamed through.
pub fn stream_incoming(b: Incoming) -> RespBody {
    RespBody::stream(b.map_err(|e| Box::new(e) as BoxError))
}

/// Cuts `chunk` to what is left of `take` (no limit when `None`) and counts it off.
fn limit(chunk: &mut Bytes, take: &mut Option<u64>) {
    if let Some(t) = *take {
        if chunk.len() as u64 > t {
            chunk.truncate(t as usize);
        }
        *take = Some(t - chunk.len() as u64);
    }
}

type Next = (FillFollower<FillHead>, Option<Result<Bytes, FillError>>);

/// Streams a fill's chunks to one client, skipping `skip` bytes and sending at most `take`.
pub struct FollowerBody {
    follower: Option<FillFollower<FillHead>>,
    pending: Option<Pin<Box<dyn Future<Output = Next> + Send>>>,
    skip: u64,
    take: Option<u64>,
    done: bool,
    /// Resuming a fill that spilled from SSD into the registry: the body position reached, to
    /// turn into `skip` once the spill offset is known (it is set before the first spilled chunk).
    resume: Option<(Arc<FillHead>, u64)>,
}

impl FollowerBody {
    /// A body reading `f` from byte `skip`, `take` bytes (all when `None`).
    pub fn new(f: FillFollower<FillHead>, skip: u64, take: Option<u64>) -> Self {
        Self {
            follower: Some(f),
            pending: None,
            skip,
            take,
            done: false,
            resume: None,
        }
    }

    /// A body that goes on at body position `pos` with what the fill spilled into the registry
    /// after its SSD stream failed (see `fill::Filling`).
    pub fn resume(
        f: FillFollower<FillHead>,
        head: Arc<FillHead>,
        pos: u64,
        take: Option<u64>,
    ) -> Self {
        Self {
            resume: Some((head, pos)),
            ..Self::new(f, 0, take)
        }
    }
}

impl Body for FollowerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.done || self.take == Some(0) {
                return Poll::Ready(None);
            }
            if self.pending.is_none() {
                let Some(mut f) = self.follower.take() else {
                    return Poll::Ready(None);
                };
                self.pending = Some(Box::pin(async move {
                    let r = f.next_chunk().await;
                    (f, r)
                }));
            }
            let Some(fut) = self.pending.as_mut() else {
                return Poll::Ready(None);
            };
            let (f, r) = match fut.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(x) => x,
            };
            self.pending = None;
            self.follower = Some(f);
            if let (Some(Ok(_)), Some((head, pos))) = (&r, self.resume.take()) {
                // The registry holds the body from the spill offset on.
                match head.spilled_from().and_then(|from| pos.checked_sub(from)) {
                    Some(skip) => self.skip = skip,
                    None => {
                        self.done = true;
                        return Poll::Ready(Some(Err("fill lost bytes it had not spilled".into())));
                    }
                }
            }
            match r {
                None if self.resume.is_some() => {
                    // The fill ended without spilling what this client still needed.
                    self.done = true;
                    return Poll::Ready(Some(Err("streamed fill ended short".into())));
                }
                None => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Some(Ok(mut chunk)) => {
                    let len = chunk.len() as u64;
                    if self.skip >= len {
                        self.skip -= len;
                        continue;
                    }
                    if self.skip > 0 {
                        chunk = chunk.slice(self.skip as usize..);
                        self.skip = 0;
                    }
                    limit(&mut chunk, &mut self.take);
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.take == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.take {
            Some(t) => SizeHint::with_exact(t),
            None => SizeHint::default(),
        }
    }
}

/// Streams a fill being written onto SSD to one client, from the reader's start position,
/// sending at most `take` bytes. When the SSD stream fails (a full disk), the fill spills the
/// rest of the body into the fill registry and this body goes on from there: no client sees a
/// short body because the cache's disk filled up.
pub struct TapBody {
    reader: TapReader,
    spill: Option<(FillFollower<FillHead>, Arc<FillHead>)>,
    fallback: Option<FollowerBody>,
    take: Option<u64>,
    done: bool,
}

impl TapBody {
    /// A body reading `reader`, `take` bytes (all when `None`), with `f` on the same fill for
    /// what it spills.
    pub fn new(
        reader: TapReader,
        f: FillFollower<FillHead>,
        head: Arc<FillHead>,
        take: Option<u64>,
    ) -> Self {
        Self {
            reader,
            spill: Some((f, head)),
            fallback: None,
            take,
            done: false,
        }
    }
}

impl Body for TapBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(fb) = self.fallback.as_mut() {
            return Pin::new(fb).poll_frame(cx);
        }
        if self.done || self.take == Some(0) {
            return Poll::Ready(None);
        }
        // The SSD read runs on the store's read threads; this task is woken when it is done.
        match self.reader.poll_read(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => match self.spill.take() {
                Some((f, head)) => {
                    tracing::debug!(error = %e, "SSD tap failed; following the fill's spill");
                    let pos = self.reader.position();
                    let take = self.take;
                    let fb = self
                        .fallback
                        .insert(FollowerBody::resume(f, head, pos, take));
                    Pin::new(fb).poll_frame(cx)
                }
                None => {
                    self.done = true;
                    Poll::Ready(Some(Err(Box::new(e))))
                }
            },
            Poll::Ready(Some(Ok(mut chunk))) => {
                limit(&mut chunk, &mut self.take);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.fallback {
            Some(fb) => fb.is_end_stream(),
            None => self.done || self.take == Some(0),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.take {
            Some(t) => SizeHint::with_exact(t),
            None => SizeHint::default(),
        }
    }
}

/// Streams a range of an SSD object to one client, one verified chunk per frame.
pub struct ChunkBody {
    reader: ChunkReader,
    first: Option<Bytes>,
    left: u64,
}

impl ChunkBody {
    /// A body of `first` (the range's first piece, already read) and everything `reader` returns
    /// after it.
    pub fn new(reader: ChunkReader, first: Option<Bytes>) -> Self {
        let left = reader.remaining() + first.as_ref().map_or(0, |b| b.len() as u64);
        Self {
            reader,
            first,
            left,
        }
    }
}

impl Body for ChunkBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let next = match self.first.take() {
            Some(first) => Some(Ok(first)),
            // Read and verified on the store's read threads, never on this worker.
            None => match self.reader.poll_next_chunk(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(next) => next,
            },
        };
        match next {
            None => Poll::Ready(None),
            Some(Err(e)) => {
                self.left = 0;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Some(Ok(chunk)) => {
                self.left = self.left.saturating_sub(chunk.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
