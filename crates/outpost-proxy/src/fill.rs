//! The leader's side of a cache fill. [`Filling`] takes each origin body chunk, hands it to the followers, keeps a copy for the store
//! (up to the tenant's object limit) and stores the object when the body is complete, through the
//! purge log, so a purge that lands while the fill runs is never undone by it. A fill streamed
//! onto SSD instead writes each chunk there at once (followers read it back from SSD, nothing is
//! buffered; the writes run on the store's append thread, batched, see `fill_stream.rs`) and
//! commits it at the end; if an SSD write fails (a full disk), the rest of the body
//! *spills* into the fill registry and every reader carries on from there, so no client sees a
//! short body because the cache's disk filled up. [`FillingBody`] is the leader's own client body:
//! it reads the origin body directly (no task between origin and client) and, if the client goes
//! away early, hands the rest of the fill to a background task so followers and the store still
//! get the whole object.

use crate::fill_head::FillHead;
use crate::fill_stream::{Spill, SsdStream, Until};
use crate::key::CacheRequest;
use crate::objects::{self, cacheable_object};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use outpost_fill::{FillFailure, FillFollower, FillLeader};
use outpost_store::{CacheKey, StreamFill};
use outpost_upstream::BoxError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

/// Longest pause between two origin body chunks before the fill is abandoned.
const BODY_IDLE: Duration = Duration::from_secs(30);

/// One fill in progress, owned by its leader.
pub struct Filling {
    req: Arc<CacheRequest>,
    key: CacheKey,
    leader: FillLeader<CacheKey, FillHead>,
    head: Arc<FillHead>,
    keep_until: SystemTime,
    /// The purge sequence when the fill started.
    since: u64,
    buf: BytesMut,
    keep: bool,
    /// The SSD reservation the body streams into, and its writes under way.
    stream: Option<SsdStream>,
    /// Whether the fill started streaming onto SSD (followers read the SSD tier first).
    streaming: bool,
    /// Body bytes received.
    received: u64,
}

impl Filling {
    /// Start filling `key` for `req` (whose response head is already published), streaming the
    /// body into `stream` when given; `since` is the purge sequence when the fill started.
    pub fn new(
        req: Arc<CacheRequest>,
        key: CacheKey,
        leader: FillLeader<CacheKey, FillHead>,
        head: Arc<FillHead>,
        keep_until: SystemTime,
        since: u64,
        stream: Option<StreamFill>,
    ) -> Self {
        let limit = req.tenant.max_object_bytes;
        let streaming = stream.is_some();
        let cap = if streaming {
            0
        } else {
            head.content_length().unwrap_or(16 * 1024).min(limit) as usize
        };
        Self {
            req,
            key,
            leader,
            head,
            keep_until,
            since,
            buf: BytesMut::with_capacity(cap),
            keep: !streaming,
            stream: stream.map(SsdStream::new),
            streaming,
            received: 0,
        }
    }

    /// A follower handle on this fill.
    pub fn follower(&self) -> FillFollower<FillHead> {
        self.leader.follower()
    }

    /// Takes one origin body chunk.
    fn on_data(&mut self, data: &Bytes) {
        self.req.tenant.stats.origin_bytes(data.len() as u64);
        let at = self.received;
        self.received += data.len() as u64;
        if let Some(stream) = self.stream.as_mut() {
            // Followers read what is written to SSD.
            match stream.push(data.clone()) {
                Ok(()) => return,
                Err(spill) => self.spill(spill),
            }
        }
        debug_assert!(self.head.spilled_from().is_none_or(|from| from <= at));
        if self.keep {
            if (self.buf.len() + data.len()) as u64 > self.req.tenant.max_object_bytes {
                self.keep = false;
                self.buf = BytesMut::new();
            } else {
                self.buf.extend_from_slice(data);
            }
        }
        self.leader.push(data.clone());
    }

    /// The SSD stream failed at body offset `spill.at`: from here on the body goes through the
    /// fill registry (readers of the SSD stream switch to it where the stream stops), starting
    /// with the bytes the failed writes did not write, and the object is not stored (its first
    /// bytes are nowhere else).
    fn spill(&mut self, spill: Spill) {
        let node = &self.req.node;
        if let Some(suppressed) = node.warnings.disk.allow() {
            tracing::warn!(key = %self.key, error = %spill.error, at = spill.at, suppressed,
                "SSD write failed during a streamed fill; serving the rest from the origin stream");
        }
        self.stream = None;
        self.keep = false;
        // Set before the first spilled byte is pushed: a reader that sees one sees this.
        self.head.mark_spilled(spill.at);
        for piece in spill.rest {
            self.leader.push(piece);
        }
    }

    /// Drives the SSD writes until `until` holds; `Pending` while a write is under way (the
    /// task is woken when it ends). A failed write spills here.
    fn poll_stream(&mut self, cx: &mut Context<'_>, until: Until) -> Poll<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(());
        };
        match stream.poll_progress(cx, until) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Ready(Err(spill)) => {
                self.spill(spill);
                Poll::Ready(())
            }
        }
    }

    /// What to wait for before reading more of the origin body: every queued byte submitted, or
    /// (when too much is queued) written.
    fn stream_until(&self) -> Until {
        match &self.stream {
            Some(s) if s.over_limit() => Until::Written,
            _ => Until::Submitted,
        }
    }

    fn fail(mut self, why: FillFailure) {
        tracing::debug!(key = %self.key, reason = why.as_str(), "fill failed");
        drop(self.stream.take());
        self.leader.fail(why);
    }

    /// Whether every byte the origin announced has arrived (so the fill can be stored before the
    /// client sees its last byte, and an invalidation that follows it cannot be overtaken).
    fn all_received(&self) -> bool {
        !self.streaming
            && self
                .head
                .content_length()
                .is_some_and(|l| self.received == l)
    }

    /// The origin body ended cleanly: store the object (if kept) and end the fill. The store
    /// writes are submitted under the purge log's lock (so a purge either precedes them or
    /// refuses them) and awaited after it; what storing replaces (a Vary marker, which may be on
    /// SSD) is read before. The fill ends, and new requests look the store up, once the writes
    /// are applied.
    async fn complete(mut self) {
        if let Some(expected) = self.head.content_length() {
            if self.received != expected {
                drop(self.stream.take());
                return self.leader.fail(FillFailure::BodyShort);
            }
        }
        let node = self.req.node.clone();
        let head = self.head.clone();
        let purges = &node.purges;
        if let Some(stream) = self.stream.take() {
            let stream = match stream.finish().await {
                Ok(stream) => stream,
                Err(spill) => {
                    // The rest goes to the followers through the registry; nothing is stored.
                    self.spill(spill);
                    return self.leader.finish();
                }
            };
            let now = node.clock.now();
            let committed =
                purges.commit_unless_purged(self.since, self.key.text(), head.tags(), || {
                    node.store.commit_stream_async(stream, now)
                });
            match committed {
                Some(commit) => drop(commit.await),
                None => tracing::debug!(key = %self.key, "purged while filling: not stored"),
            }
            return self.leader.finish();
        }
        if self.keep && !self.streaming {
            let body = std::mem::take(&mut self.buf).freeze();
            let obj = Arc::new(cacheable_object(
                &self.req.tenant.name,
                head.status(),
                head.headers().clone(),
                body,
                head.timing(),
                self.keep_until,
            ));
            let now = node.clock.now();
            let req = self.req.clone();
            let old = match head.vary() {
                None => objects::vary_marker(&node, &self.key, now).await,
                Some(_) => node.store.get_async(&req.primary, now).await,
            };
            let key = &self.key;
            let stored = purges.commit_unless_purged(self.since, key.text(), head.tags(), || {
                match head.vary() {
                    None => objects::store_primary(&node, key.clone(), obj, now, old.as_deref()),
                    Some((fields, variance)) => objects::store_variant(
                        &node,
                        req.tenant.max_variants,
                        &req.primary,
                        fields,
                        variance,
                        obj,
                        self.keep_until,
                        now,
                        old.as_deref(),
                    ),
                }
            });
            match stored {
                Some(insert) => drop(insert.await),
                None => tracing::debug!(key = %self.key, "purged while filling: not stored"),
            }
        }
        self.leader.finish();
    }

    /// Read the rest of `body` into the fill (for when no client is reading it).
    pub async fn drain(mut self, mut body: Incoming) {
        loop {
            // Queued SSD writes go out before the next wait for the origin (all of them are
            // written first when too many are queued).
            let until = self.stream_until();
            std::future::poll_fn(|cx| self.poll_stream(cx, until)).await;
            match tokio::time::timeout(BODY_IDLE, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        self.on_data(data);
                    }
                }
                Ok(None) => return self.complete().await,
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "origin body failed mid-fill");
                    return self.fail(FillFailure::BodyFailed);
                }
                Err(_) => return self.fail(FillFailure::BodyStalled),
            }
        }
    }
}

/// A fill storing its object ([`Filling::complete`]).
type Completing = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The leader's client body: the origin body, teed into the fill.
pub struct FillingBody {
    body: Option<Incoming>,
    filling: Option<Filling>,
    idle: Pin<Box<tokio::time::Sleep>>,
    /// The fill storing its object, and the frame that completed it (`None`: the end), held
    /// back until it is stored, so that the client's next request finds it.
    completing: Option<(Completing, Option<Frame<Bytes>>)>,
}

impl FillingBody {
    /// Tee `body` into `filling`.
    pub fn new(body: Incoming, filling: Filling) -> Self {
        Self {
            body: Some(body),
            filling: Some(filling),
            idle: Box::pin(tokio::time::sleep(BODY_IDLE)),
            completing: None,
        }
    }
}

impl Body for FillingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some((store, _)) = this.completing.as_mut() {
            if store.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let frame = this.completing.take().and_then(|(_, frame)| frame);
            return Poll::Ready(frame.map(Ok));
        }
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(f) = this.filling.as_mut() {
            // Queued SSD writes go out as the previous one ends (this task is woken then); with
            // too many queued, the origin waits for the disk.
            let until = f.stream_until();
            if f.poll_stream(cx, until).is_pending() && until == Until::Written {
                return Poll::Pending;
            }
        }
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle
                    .as_mut()
                    .reset(tokio::time::Instant::now() + BODY_IDLE);
                if let (Some(data), Some(f)) = (frame.data_ref(), this.filling.as_mut()) {
                    f.on_data(data);
                    if f.all_received() {
                        if let Some(f) = this.filling.take() {
                            this.completing = Some((Box::pin(f.complete()), Some(frame)));
                            return self.poll_frame(cx);
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.body = None;
                if let Some(f) = this.filling.take() {
                    f.fail(FillFailure::BodyFailed);
                }
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.body = None;
                if let Some(f) = this.filling.take() {
                    this.completing = Some((Box::pin(f.complete()), None));
                    return self.poll_frame(cx);
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    this.body = None;
                    if let Some(f) = this.filling.take() {
                        f.fail(FillFailure::BodyStalled);
                    }
                    return Poll::Ready(Some(Err("origin body idle timeout".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Not while the fill is being stored: the body must be polled until it is.
        self.completing.is_none() && self.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| http_body::SizeHint::with_exact(0))
    }
}

impl Drop for FillingBody {
    fn drop(&mut self) {
        if let Some((store, _)) = self.completing.take() {
            // The client left while the object was being stored: finish storing it.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(store);
            }
        }
        if let (Some(body), Some(filling)) = (self.body.take(), self.filling.take()) {
            // The client left before the end: finish the fill for followers and the store.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(filling.drain(body));
            } else {
                filling.fail(FillFailure::LeaderGone);
            }
        }
    }
}
