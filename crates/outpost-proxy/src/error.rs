//! The node's one error type for answers it generates itself ([`ProxyError`]): a class that
//! decides the status and the short code a client sees, a retry hint, and the underlying cause as
//! its `source`, which goes to the log and never to the client (no origin addresses, no library
//! error chains in response bodies).

use http::StatusCode;
use outpost_fill::FillFailure;
use outpost_upstream::{BoxError, UpstreamError, UpstreamErrorKind};

/// What kind of failure a generated answer reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is malformed or ambiguous (framing, Host, URL): 400, connection closed.
    BadRequest,
    /// No tenant serves the Host: 421 (RFC 9110 §15.5.20), never a cache lookup.
    UnknownHost,
    /// A method the node does not proxy (`CONNECT`): 405.
    MethodNotAllowed,
    /// A request other than GET or HEAD arrived as TLS early data: 425 (RFC 8470 §5.2); the
    /// client sends it again after the handshake.
    TooEarly,
    /// The request already went through this node (`CDN-Loop`, RFC 8586): 508.
    LoopDetected,
    /// `only-if-cached` and nothing usable stored: 504 (RFC 9111 §5.2.1.7).
    NotCached,
    /// Upstream did not answer in time: 504.
    UpstreamTimeout,
    /// Upstream could not be reached (refused, unresolvable, no route): 502.
    UpstreamUnreachable,
    /// Upstream broke the protocol or its body failed: 502.
    UpstreamProtocol,
    /// The TLS handshake with an HTTPS origin failed (certificate not verified, no common
    /// protocol): 502 naming the cause.
    UpstreamTls,
    /// The node is shutting down or out of resources: 503.
    Unavailable,
}

impl ErrorClass {
    /// The status sent.
    pub fn status(&self) -> StatusCode {
        match self {
            ErrorClass::BadRequest => StatusCode::BAD_REQUEST,
            ErrorClass::UnknownHost => StatusCode::MISDIRECTED_REQUEST,
            ErrorClass::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorClass::LoopDetected => StatusCode::LOOP_DETECTED,
            ErrorClass::TooEarly => StatusCode::TOO_EARLY,
            ErrorClass::NotCached | ErrorClass::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorClass::UpstreamUnreachable
            | ErrorClass::UpstreamProtocol
            | ErrorClass::UpstreamTls => StatusCode::BAD_GATEWAY,
            ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The short code in the body, `Cache-Status; detail=` and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorClass::BadRequest => "bad-request",
            ErrorClass::UnknownHost => "unknown-host",
            ErrorClass::MethodNotAllowed => "method-not-allowed",
            ErrorClass::LoopDetected => "loop-detected",
            ErrorClass::TooEarly => "too-early",
            ErrorClass::NotCached => "only-if-cached",
            ErrorClass::UpstreamTimeout => "upstream-timeout",
            ErrorClass::UpstreamUnreachable => "upstream-unreachable",
            ErrorClass::UpstreamProtocol => "upstream-protocol-error",
            ErrorClass::UpstreamTls => "upstream-tls-error",
            ErrorClass::Unavailable => "unavailable",
        }
    }

    /// Whether the failure is upstream's (logged as a rate-limited warning) rather than the
    /// client's.
    pub fn is_upstream(&self) -> bool {
        matches!(
            self,
            ErrorClass::UpstreamTimeout
                | ErrorClass::UpstreamUnreachable
                | ErrorClass::UpstreamProtocol
                | ErrorClass::UpstreamTls
        )
    }

    /// The class of a fill failure as its requests (leader and followers alike) see it.
    pub fn of_fill(f: FillFailure) -> Self {
        match f {
            FillFailure::UpstreamTimeout | FillFailure::BodyStalled => ErrorClass::UpstreamTimeout,
            FillFailure::UpstreamUnreachable | FillFailure::LeaderGone => {
                ErrorClass::UpstreamUnreachable
            }
            FillFailure::UpstreamStatus(_) | FillFailure::BodyFailed | FillFailure::BodyShort => {
                ErrorClass::UpstreamProtocol
            }
        }
    }
}

/// Whether repeating the request may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The same request will fail the same way (fix the request).
    Never,
    /// Nothing reached upstream, or upstream was slow: a retry may succeed.
    Later,
}

/// An answer the node generates itself, with its cause.
#[derive(Debug, thiserror::Error)]
#[error("{}", class.as_str())]
pub struct ProxyError {
    /// The class (status, code).
    pub class: ErrorClass,
    /// Whether a retry may help.
    pub retry: Retry,
    /// What the client is told beyond the class (only for client errors: what was wrong with
    /// the request; never upstream details).
    pub message: Option<String>,
    #[source]
    source: Option<BoxError>,
}

impl ProxyError {
    /// A client error with a message saying what is wrong with the request.
    pub fn client(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            retry: Retry::Never,
            message: Some(message.into()),
            source: None,
        }
    }

    /// An error of `class` caused by `source`.
    pub fn caused(class: ErrorClass, source: impl Into<BoxError>) -> Self {
        Self {
            class,
            retry: Retry::Later,
            message: None,
            source: Some(source.into()),
        }
    }

    /// An upstream request failed.
    pub fn upstream(e: UpstreamError) -> Self {
        let class = match e.kind {
            UpstreamErrorKind::ConnectTimeout | UpstreamErrorKind::Timeout => {
                ErrorClass::UpstreamTimeout
            }
            UpstreamErrorKind::Refused | UpstreamErrorKind::Unreachable => {
                ErrorClass::UpstreamUnreachable
            }
            UpstreamErrorKind::Protocol => ErrorClass::UpstreamProtocol,
            UpstreamErrorKind::Tls => {
                // The client is told why (rustls' words name no address): the operator's
                // first question about a 502 from an HTTPS origin.
                let message = e
                    .tls_cause()
                    .map(|c| format!("TLS with the origin failed: {c}"));
                return Self {
                    class: ErrorClass::UpstreamTls,
                    retry: Retry::Later,
                    message,
                    source: Some(Box::new(e)),
                };
            }
        };
        Self::caused(class, e)
    }

    /// A fill this request led or followed failed.
    pub fn fill(f: FillFailure) -> Self {
        Self::caused(ErrorClass::of_fill(f), f)
    }

    /// The cause chain, for logs.
    pub fn detail(&self) -> String {
        let mut s = self.class.as_str().to_string();
        let mut src = std::error::Error::source(self);
        while let Some(e) = src {
            s.push_str(": ");
            s.push_str(&e.to_string());
            src = e.source();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn classes_map_to_statuses() {
        assert_eq!(ErrorClass::UpstreamTimeout.status(), 504);
        assert_eq!(ErrorClass::UpstreamUnreachable.status(), 502);
        assert_eq!(ErrorClass::UnknownHost.status(), 421);
        assert_eq!(ErrorClass::MethodNotAllowed.status(), 405);
        // A timed-out fill is a 504 for every request on it, leader and followers.
        assert_eq!(
            ErrorClass::of_fill(FillFailure::UpstreamTimeout).status(),
            504
        );
        assert_eq!(ErrorClass::of_fill(FillFailure::BodyStalled).status(), 504);
        assert_eq!(
            ErrorClass::of_fill(FillFailure::UpstreamUnreachable).status(),
            502
        );
    }

    #[test]
    fn detail_has_the_cause_chain_but_display_only_the_class() {
        let up = UpstreamError::new(
            UpstreamErrorKind::Refused,
            "10.0.0.7:8080",
            Some("connection refused".into()),
        );
        let e = ProxyError::upstream(up);
        assert_eq!(e.to_string(), "upstream-unreachable");
        let d = e.detail();
        assert!(
            d.contains("10.0.0.7:8080") && d.contains("connection refused"),
            "{d}"
        );
        assert_eq!(e.retry, Retry::Later);
    }
}
