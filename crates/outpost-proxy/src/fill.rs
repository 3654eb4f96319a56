//! The leader's side of a cache fill: [`Filling`] takes each origin body chunk, hands it to the
//! followers, keeps a copy for the store (up to the tenant's object limit) and stores the object
//! when the body is complete. A fill streamed onto SSD instead writes each chunk there at once
//! (followers read it back from SSD, nothing is buffered) and commits it at the end. [`FillingBody`] is the leader's own client body: it reads the origin
//! body directly (no task between origin and client) and, if the client goes away early, hands the
//! rest of the fill to a background task so followers and the store still get the whole object.

use crate::driver::{cacheable_object, invalidate, store_variant, stored_vary_marker, FillHead};
use crate::tenant::Tenant;
use crate::Node;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use outpost_fill::{FillFollower, FillLeader};
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
    node: Arc<Node>,
    tenant: Arc<Tenant>,
    primary: CacheKey,
    key: CacheKey,
    leader: FillLeader<CacheKey, FillHead>,
    head: Arc<FillHead>,
    keep_until: SystemTime,
    buf: BytesMut,
    keep: bool,
    /// The SSD reservation the body streams into (see `STREAM_MIN_BYTES` in the driver).
    stream: Option<StreamFill>,
    /// Whether the fill started streaming (followers read the SSD tier, not the registry).
    streaming: bool,
}

impl Filling {
    /// Start filling `key` (whose response head is already published), streaming the body into
    /// `stream` when given.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: Arc<Node>,
        tenant: Arc<Tenant>,
        primary: CacheKey,
        key: CacheKey,
        leader: FillLeader<CacheKey, FillHead>,
        head: Arc<FillHead>,
        keep_until: SystemTime,
        stream: Option<StreamFill>,
    ) -> Self {
        let limit = tenant.max_object_bytes;
        let streaming = stream.is_some();
        let cap = if streaming {
            0
        } else {
            head.content_length().unwrap_or(16 * 1024).min(limit) as usize
        };
        Self {
            node,
            tenant,
            primary,
            key,
            leader,
            head,
            keep_until,
            buf: BytesMut::with_capacity(cap),
            keep: !streaming,
            stream,
            streaming,
        }
    }

    /// A follower handle on this fill.
    pub fn follower(&self) -> FillFollower<FillHead> {
        self.leader.follower()
    }

    /// Takes one origin body chunk; `false` when the fill cannot go on (its SSD stream failed:
    /// the caller fails the fill so that new requests go to the origin instead of following it).
    #[must_use]
    fn on_data(&mut self, data: &Bytes) -> bool {
        self.node
            .metrics
            .origin_bytes(self.tenant.index, data.len() as u64);
        if self.streaming {
            // Followers read what is written; a failed write fails them (the stream drops).
            let Some(stream) = self.stream.as_mut() else {
                return false;
            };
            if let Err(e) = stream.write(data) {
                tracing::warn!(key = %self.key, error = %e, "SSD stream write failed; fill abandoned");
                self.stream = None;
                return false;
            }
            return true;
        }
        if self.keep {
            if (self.buf.len() + data.len()) as u64 > self.tenant.max_object_bytes {
                self.keep = false;
                self.buf = BytesMut::new();
            } else {
                self.buf.extend_from_slice(data);
            }
        }
        self.leader.push(data.clone());
        true
    }

    fn fail(mut self, reason: &str) {
        tracing::debug!(key = %self.key, reason, "fill failed");
        drop(self.stream.take());
        self.leader.fail(reason);
    }

    /// Whether every byte the origin announced has arrived (so the fill can be stored before the
    /// client sees its last byte, and an invalidation that follows it cannot be overtaken).
    fn all_received(&self) -> bool {
        self.keep
            && self
                .head
                .content_length()
                .is_some_and(|l| self.buf.len() as u64 == l)
    }

    /// The origin body ended cleanly: store the object (if kept) and end the fill.
    fn complete(self) {
        if self.streaming {
            return self.complete_stream();
        }
        if self.leader.is_poisoned() {
            // Invalidated while filling: followers still get the body, the store does not.
            self.leader.finish();
            return;
        }
        if let Some(expected) = self.head.content_length() {
            if self.keep && self.buf.len() as u64 != expected {
                self.leader.fail("origin body shorter than Content-Length");
                return;
            }
        }
        if self.keep {
            let head = &self.head;
            let body = self.buf.freeze();
            let obj = Arc::new(cacheable_object(
                head.status(),
                head.headers().clone(),
                body,
                head.timing(),
                self.keep_until,
            ));
            let now = SystemTime::now();
            let node = &self.node;
            match head.vary() {
                None => {
                    if self.key == self.primary
                        && stored_vary_marker(node, &self.primary, now).is_some()
                    {
                        invalidate(node, &self.primary);
                    }
                    node.store.insert(self.key.clone(), obj, now);
                }
                Some((fields, variance)) => {
                    store_variant(
                        node,
                        &self.tenant,
                        &self.primary,
                        fields,
                        variance,
                        obj,
                        self.keep_until,
                        now,
                    );
                }
            }
        }
        self.leader.finish();
    }

    /// [`Filling::complete`] of a fill streamed onto SSD: commit it unless it was invalidated
    /// meanwhile (followers still read the whole body then) or the body is short.
    fn complete_stream(mut self) {
        let Some(stream) = self.stream.take() else {
            return self.leader.fail("SSD stream failed");
        };
        if stream.written() != stream.body_len() {
            drop(stream);
            return self.leader.fail("origin body shorter than Content-Length");
        }
        if self.leader.is_poisoned() {
            stream.close_uncommitted();
        } else {
            self.node.store.commit_stream(stream, SystemTime::now());
        }
        self.leader.finish();
    }

    /// Read the rest of `body` into the fill (for when no client is reading it).
    pub async fn drain(mut self, mut body: Incoming) {
        loop {
            match tokio::time::timeout(BODY_IDLE, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        if !self.on_data(data) {
                            return self.fail("SSD stream failed");
                        }
                    }
                }
                Ok(None) => return self.complete(),
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "origin body failed mid-fill");
                    return self.fail("origin body error");
                }
                Err(_) => return self.fail("origin body idle timeout"),
            }
        }
    }
}

/// The leader's client body: the origin body, teed into the fill.
pub struct FillingBody {
    body: Option<Incoming>,
    filling: Option<Filling>,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl FillingBody {
    /// Tee `body` into `filling`.
    pub fn new(body: Incoming, filling: Filling) -> Self {
        Self {
            body: Some(body),
            filling: Some(filling),
            idle: Box::pin(tokio::time::sleep(BODY_IDLE)),
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
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(f)) = (frame.data_ref(), this.filling.as_mut()) {
                    if !f.on_data(data) {
                        // The client still gets the origin body; the fill ends here.
                        if let Some(f) = this.filling.take() {
                            f.fail("SSD stream failed");
                        }
                    } else if f.all_received() {
                        if let Some(f) = this.filling.take() {
                            f.complete();
                        }
                    }
                }
                this.idle
                    .as_mut()
                    .reset(tokio::time::Instant::now() + BODY_IDLE);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.body = None;
                if let Some(f) = this.filling.take() {
                    f.fail("origin body error");
                }
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                this.body = None;
                if let Some(f) = this.filling.take() {
                    f.complete();
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    this.body = None;
                    if let Some(f) = this.filling.take() {
                        f.fail("origin body idle timeout");
                    }
                    return Poll::Ready(Some(Err("origin body idle timeout".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.is_end_stream())
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
        if let (Some(body), Some(filling)) = (self.body.take(), self.filling.take()) {
            // The client left before the end: finish the fill for followers and the store.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(filling.drain(body));
            } else {
                filling.fail("client went away");
            }
        }
    }
}
