//! Connection-level request-smuggling guard. hyper resolves a request carrying both Content-Length
//! and Transfer-Encoding by dropping Content-Length (RFC 9112 §6.3 allows it), so the request driver
//! can no longer see the ambiguity. [`SniffStream`] watches the bytes a client sends, finds request
//! header blocks (a request line, then header lines up to the blank line) and flags the connection
//! when one block carries both fields; the driver then answers 400 and closes (RFC 9112 §6.3: "ought
//! to be handled as an error"). A body that itself contains such a block is a false positive that
//! errs on the safe side.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes of each line kept for classification (header names and the request-line tail).
const KEEP: usize = 32;

/// Incremental header-block scanner (pure; fed whatever bytes arrive).
#[derive(Debug, Default)]
pub struct FramingScanner {
    head: Vec<u8>,
    tail: [u8; 9],
    len: usize,
    in_block: bool,
    saw_cl: bool,
    saw_te: bool,
    ambiguous: bool,
}

impl FramingScanner {
    /// Feed bytes; returns true once any header block carried both framing fields.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut rest = bytes;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.push(&rest[..i]);
                    self.end_line();
                    rest = &rest[i + 1..];
                }
                None => {
                    self.push(rest);
                    break;
                }
            }
        }
        self.ambiguous
    }

    /// Add part of a line: the first [`KEEP`] bytes (lower-cased) and the last 9 are remembered.
    fn push(&mut self, seg: &[u8]) {
        if self.head.len() < KEEP {
            let n = (KEEP - self.head.len()).min(seg.len());
            self.head
                .extend(seg[..n].iter().map(|b| b.to_ascii_lowercase()));
        }
        if seg.len() >= 9 {
            self.tail.copy_from_slice(&seg[seg.len() - 9..]);
        } else if !seg.is_empty() {
            self.tail.rotate_left(seg.len());
            self.tail[9 - seg.len()..].copy_from_slice(seg);
        }
        self.len += seg.len();
    }

    fn end_line(&mut self) {
        let mut head: &[u8] = &self.head;
        if head.last() == Some(&b'\r') {
            head = &head[..head.len() - 1];
        }
        let tail_ok = |t: &[u8; 9]| {
            let t = if t[8] == b'\r' { &t[..8] } else { &t[1..] };
            t == b"HTTP/1.1" || t == b"HTTP/1.0"
        };
        let line_len = self.len - usize::from(self.tail[8] == b'\r' && self.len > 0);
        if line_len == 0 {
            if self.in_block && self.saw_cl && self.saw_te {
                self.ambiguous = true;
            }
            self.in_block = false;
            self.saw_cl = false;
            self.saw_te = false;
        } else if !self.in_block {
            if self.len >= 14 && tail_ok(&self.tail) {
                self.in_block = true;
            }
        } else if head.starts_with(b"content-length:") || head.starts_with(b"content-length :") {
            self.saw_cl = true;
        } else if head.starts_with(b"transfer-encoding:")
            || head.starts_with(b"transfer-encoding :")
        {
            self.saw_te = true;
        }
        self.head.clear();
        self.tail = [0; 9];
        self.len = 0;
    }
}

/// A stream that scans what the client sends with a [`FramingScanner`].
pub struct SniffStream<S> {
    inner: S,
    scanner: FramingScanner,
    flag: Arc<AtomicBool>,
}

impl<S> SniffStream<S> {
    /// Wrap `inner`; `flag` turns true when an ambiguous request was seen.
    pub fn new(inner: S, flag: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            scanner: FramingScanner::default(),
            flag,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SniffStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let this = &mut *self;
            if this.scanner.feed(&buf.filled()[before..]) {
                this.flag.store(true, Ordering::Relaxed);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SniffStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    fn scan(chunks: &[&[u8]]) -> bool {
        let mut s = FramingScanner::default();
        let mut hit = false;
        for c in chunks {
            hit |= s.feed(c);
        }
        hit
    }

    #[test]
    fn detects_both_framings() {
        let req: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(scan(&[req]));
        // Split at every position.
        for i in 0..req.len() {
            assert!(scan(&[&req[..i], &req[i..]]), "split at {i}");
        }
        assert!(scan(&[b"GET / HTTP/1.1\r\nhost: a\r\n\r\nPOST /x HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\nContent-length: 3\r\n\r\n"]));
    }

    #[test]
    fn ordinary_requests_pass() {
        assert!(!scan(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]));
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd"
        ]));
        assert!(!scan(&[b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"]));
        // Fields in different requests do not combine.
        assert!(!scan(&[b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]));
        // A header *value* mentioning the other field is not the field.
        assert!(!scan(&[
            b"GET / HTTP/1.1\r\nX-Note: transfer-encoding: x\r\nContent-Length: 0\r\n\r\n"
        ]));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = scan(&[&data]);
        }
    }
}
