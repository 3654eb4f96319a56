//! Sending a request again: which requests may be (RFC 9110 §9.2.2: an idempotent method, or
//! nothing reached the server), which failures call for it (the connection closed before any
//! response: a keep-alive connection the server closed as it was reused), and a request body
//! kept so it can be sent more than once (small bodies of declared length are read first;
//! larger or unsized ones stream, once).

use crate::{empty_body, BoxError, ReqBody, UpstreamError, UpstreamErrorKind};
use bytes::Bytes;
use http::Method;
use http_body::Body as _;
use http_body_util::{BodyExt, Full};

/// Request bodies up to this declared size are read before sending, so that the request can be
/// sent again after a failed attempt.
pub const REPLAY_BODY_MAX: u64 = 64 * 1024;

/// The body of a request that may be sent more than once.
pub enum Payload {
    /// Held in memory (empty for a bodiless request): every attempt sends a copy.
    Replay(Bytes),
    /// Streamed to the first attempt only.
    Stream(Option<ReqBody>),
}

impl Payload {
    /// Read `body` when it is small and its length known; otherwise keep it to stream. A body
    /// that fails while being read is an error (of the client's side: nothing was sent).
    pub async fn read(body: Option<ReqBody>) -> Result<Self, BoxError> {
        let Some(body) = body else {
            return Ok(Payload::Replay(Bytes::new()));
        };
        if body.is_end_stream() {
            return Ok(Payload::Replay(Bytes::new()));
        }
        match body.size_hint().upper() {
            Some(n) if n <= REPLAY_BODY_MAX => {
                Ok(Payload::Replay(body.collect().await?.to_bytes()))
            }
            _ => Ok(Payload::Stream(Some(body))),
        }
    }

    /// [`Payload::read`] within `within` (the request's first-byte timeout: a client that stalls
    /// mid-body gets the 504 it got when its body streamed to the origin). Errors name `upstream`:
    /// a body that failed while being read is a protocol error, one that did not arrive a
    /// timeout.
    pub async fn read_within(
        body: Option<ReqBody>,
        within: std::time::Duration,
        upstream: &str,
    ) -> Result<Self, UpstreamError> {
        if body.as_ref().is_none_or(|b| b.is_end_stream()) {
            // Nothing to read (every cache fill): no timer.
            return Ok(Payload::Replay(Bytes::new()));
        }
        match tokio::time::timeout(within, Self::read(body)).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(UpstreamError::new(
                UpstreamErrorKind::Protocol,
                upstream,
                Some(format!("reading the request body: {e}").into()),
            )),
            Err(_) => Err(UpstreamError::new(
                UpstreamErrorKind::Timeout,
                upstream,
                Some(format!("request body not received within {within:?}").into()),
            )),
        }
    }

    /// Whether another attempt can carry the same body.
    pub fn replayable(&self) -> bool {
        match self {
            Payload::Replay(_) => true,
            // Before the first attempt took it, or a bodiless stream.
            Payload::Stream(b) => b.is_none(),
        }
    }

    /// The body of the next attempt (after the first, a stream's attempts are bodiless: callers
    /// check [`Payload::replayable`] before making another).
    pub fn attempt_body(&mut self) -> ReqBody {
        match self {
            Payload::Replay(b) if b.is_empty() => empty_body(),
            Payload::Replay(b) => bytes_body(b.clone()),
            Payload::Stream(b) => b.take().unwrap_or_else(empty_body),
        }
    }
}

/// A request body of `bytes`, in one frame.
pub fn bytes_body(bytes: Bytes) -> ReqBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// Whether `method` is idempotent (RFC 9110 §9.2.2), so that a request whose connection failed
/// after it was sent may be sent again.
pub fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether an error means the connection closed (reset, aborted, end of stream) before a
/// complete response head arrived: what a keep-alive connection the server closed as it was
/// reused looks like. Read from error types and I/O kinds in the source chain, never from text.
pub fn closed_before_response(e: &(dyn std::error::Error + 'static)) -> bool {
    let hyper_closed = crate::sources(e)
        .filter_map(|err| err.downcast_ref::<hyper::Error>())
        .any(|h| h.is_incomplete_message() || h.is_canceled());
    hyper_closed
        || matches!(
            crate::io_kind(e),
            Some(
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn full(s: &'static [u8]) -> ReqBody {
        bytes_body(Bytes::from_static(s))
    }

    async fn bytes_of(b: ReqBody) -> Bytes {
        b.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn small_sized_bodies_are_kept_for_every_attempt() {
        let mut p = Payload::read(Some(full(b"hello"))).await.unwrap();
        assert!(p.replayable());
        assert_eq!(bytes_of(p.attempt_body()).await, "hello");
        assert!(p.replayable());
        assert_eq!(bytes_of(p.attempt_body()).await, "hello");
    }

    #[tokio::test]
    async fn bodiless_requests_are_replayable() {
        let mut p = Payload::read(None).await.unwrap();
        assert!(p.replayable());
        assert!(p.attempt_body().is_end_stream());
        let p = Payload::read(Some(empty_body())).await.unwrap();
        assert!(p.replayable());
    }

    #[tokio::test]
    async fn large_and_unsized_bodies_stream_once() {
        static BIG: [u8; REPLAY_BODY_MAX as usize + 1] = [7; REPLAY_BODY_MAX as usize + 1];
        let mut p = Payload::read(Some(full(&BIG))).await.unwrap();
        assert!(!p.replayable(), "a body over the limit is streamed");
        assert_eq!(bytes_of(p.attempt_body()).await.len(), BIG.len());
        assert!(p.replayable(), "once taken, what is left is bodiless");

        let chunks = unsized_chunks();
        let mut p = Payload::read(Some(chunks)).await.unwrap();
        assert!(!p.replayable(), "a body of unknown length is streamed");
        assert_eq!(bytes_of(p.attempt_body()).await, "abcd");
    }

    /// Two chunks, no size hint (as a chunked client body).
    struct Chunks(Vec<&'static [u8]>);

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            let next = if self.0.is_empty() {
                None
            } else {
                Some(Ok(http_body::Frame::data(Bytes::from_static(
                    self.0.remove(0),
                ))))
            };
            std::task::Poll::Ready(next)
        }
    }

    fn unsized_chunks() -> ReqBody {
        Chunks(vec![b"ab", b"cd"]).boxed()
    }

    /// A body that declares 5 bytes and never sends them (a stalled client).
    struct Stalled;

    impl http_body::Body for Stalled {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
            std::task::Poll::Pending
        }
        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(5)
        }
    }

    #[tokio::test]
    async fn a_stalled_body_is_a_timeout() {
        let within = std::time::Duration::from_millis(50);
        let e = match Payload::read_within(Some(Stalled.boxed()), within, "origin:1").await {
            Err(e) => e,
            Ok(_) => panic!("a body that never arrives cannot be read"),
        };
        assert_eq!(e.kind, UpstreamErrorKind::Timeout, "{}", e.detail());
        assert_eq!(e.kind.status(), 504);
    }

    #[test]
    fn idempotent_methods() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!idempotent(&m), "{m}");
        }
    }

    #[test]
    fn resets_count_as_closed_before_response() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(closed_before_response(&reset));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!closed_before_response(&refused));
        let other = std::fmt::Error;
        assert!(!closed_before_response(&other));
    }
}
