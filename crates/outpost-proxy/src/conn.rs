//! Connection guards that need to see the bytes a client sends, below hyper:
//!
//! - **Request smuggling.** hyper resolves a request carrying both Content-Length and
//!   Transfer-Encoding by dropping Content-Length (RFC 9112 §6.3 allows it), so the request driver
//!   can no longer see the ambiguity. [`FramingScanner`] follows request framing (header blocks,
//!   Content-Length bodies, chunked bodies) and flags a block that carries both fields; the driver
//!   then answers 400 and closes (RFC 9112 §6.3: "ought to be handled as an error").
//! - **Slow clients.** [`Watchdog`] closes connections whose request head is not complete within the
//!   header timeout (slowloris), or that show no progress for the idle timeout. It replaces hyper's
//!   per-request header timer (a timer-wheel entry per request cost ~10% of a cache hit's CPU)
//!   with one coarse clock and a sweep every 250 ms.
//! - **Draining.** On shutdown the watchdog asks every connection to finish its request in flight
//!   and close ([`Watched`] calls hyper's graceful shutdown).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes of each line kept for classification (header names and values of framing fields).
const KEEP: usize = 64;

/// Where a chunked body is (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { value: u64, ext: bool },
    Data(u64),
    DataEnd,
    Trailer { line_len: usize },
}

/// The body that follows the current header block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum BodyState {
    #[default]
    None,
    Length(u64),
    Chunked(Chunk),
}

/// Incremental request-framing scanner (pure; fed whatever bytes arrive, in any split).
#[derive(Debug, Default)]
pub struct FramingScanner {
    head: Vec<u8>,
    tail: [u8; 9],
    len: usize,
    in_block: bool,
    saw_cl: bool,
    saw_te: bool,
    content_length: Option<u64>,
    chunked: bool,
    body: BodyState,
    heads: u64,
    ambiguous: bool,
}

impl FramingScanner {
    /// Feed bytes; returns true once any header block carried both framing fields.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.body {
                BodyState::Length(n) => {
                    let take = (n as usize).min(rest.len());
                    rest = &rest[take..];
                    let left = n - take as u64;
                    self.body = if left == 0 {
                        BodyState::None
                    } else {
                        BodyState::Length(left)
                    };
                }
                BodyState::Chunked(Chunk::Data(n)) => {
                    let take = (n as usize).min(rest.len());
                    rest = &rest[take..];
                    let left = n - take as u64;
                    self.body = BodyState::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                }
                BodyState::Chunked(c) => {
                    let b = rest[0];
                    rest = &rest[1..];
                    self.body = chunk_step(c, b);
                }
                BodyState::None => match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.push(&rest[..i]);
                        self.end_line();
                        rest = &rest[i + 1..];
                    }
                    None => {
                        self.push(rest);
                        break;
                    }
                },
            }
        }
        self.ambiguous
    }

    /// True while a request head has started but not ended (the slowloris window).
    pub fn mid_head(&self) -> bool {
        self.body == BodyState::None && (self.in_block || self.len > 0)
    }

    /// Request heads completed so far.
    pub fn heads(&self) -> u64 {
        self.heads
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
            if self.in_block {
                self.heads += 1;
                if self.saw_cl && self.saw_te {
                    self.ambiguous = true;
                }
                // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3), as in hyper.
                self.body = if self.chunked {
                    BodyState::Chunked(Chunk::Size {
                        value: 0,
                        ext: false,
                    })
                } else {
                    match self.content_length {
                        Some(n) if n > 0 => BodyState::Length(n),
                        _ => BodyState::None,
                    }
                };
            }
            self.in_block = false;
            self.saw_cl = false;
            self.saw_te = false;
            self.content_length = None;
            self.chunked = false;
        } else if !self.in_block {
            if self.len >= 14 && tail_ok(&self.tail) {
                self.in_block = true;
            }
        } else if let Some(v) = field_value(head, b"content-length") {
            self.saw_cl = true;
            self.content_length = std::str::from_utf8(v)
                .ok()
                .and_then(|t| t.trim().parse().ok());
        } else if let Some(v) = field_value(head, b"transfer-encoding") {
            self.saw_te = true;
            self.chunked |= v.windows(7).any(|w| w == b"chunked");
        }
        self.head.clear();
        self.tail = [0; 9];
        self.len = 0;
    }
}

/// The value of `name: value` (or `name : value`) when `line` is that field.
fn field_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let rest = line.strip_prefix(name)?;
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    rest.strip_prefix(b":")
}

fn chunk_step(c: Chunk, b: u8) -> BodyState {
    let next = match c {
        Chunk::Size { value, ext } => match b {
            b'\n' if value == 0 => Chunk::Trailer { line_len: 0 },
            b'\n' => Chunk::Data(value),
            b'\r' => c,
            _ if !ext && b.is_ascii_hexdigit() => {
                let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                Chunk::Size {
                    value: value.saturating_mul(16).saturating_add(d),
                    ext,
                }
            }
            _ => Chunk::Size { value, ext: true },
        },
        Chunk::Data(n) => Chunk::Data(n),
        Chunk::DataEnd => {
            if b == b'\n' {
                Chunk::Size {
                    value: 0,
                    ext: false,
                }
            } else {
                Chunk::DataEnd
            }
        }
        Chunk::Trailer { line_len } => match b {
            b'\n' if line_len == 0 => return BodyState::None,
            b'\n' => Chunk::Trailer { line_len: 0 },
            b'\r' => c,
            _ => Chunk::Trailer {
                line_len: line_len + 1,
            },
        },
    };
    BodyState::Chunked(next)
}

/// Milliseconds value meaning "no deadline".
const NO_DEADLINE: u64 = u64::MAX;

/// Closes connections that are too slow to send a request head or idle for too long, and asks
/// every connection to finish its request in flight and close when the node drains. It holds no
/// descriptor of its own: a connection it ends is dropped by its own task ([`Watched`]), so each
/// client connection costs one file descriptor.
pub struct Watchdog {
    epoch: Instant,
    now_ms: AtomicU64,
    header_ms: u64,
    idle_ms: u64,
    draining: AtomicBool,
    conns: Mutex<Vec<Weak<ConnWatch>>>,
}

impl Watchdog {
    /// A watchdog with these limits; call [`Watchdog::run`] in a task.
    pub fn new(header_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            now_ms: AtomicU64::new(0),
            header_ms: header_timeout.as_millis() as u64,
            idle_ms: idle_timeout.as_millis() as u64,
            draining: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        })
    }

    fn now(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    /// Watch a new connection.
    pub fn watch(self: &Arc<Self>) -> Arc<ConnWatch> {
        let w = Arc::new(ConnWatch {
            dog: self.clone(),
            deadline: AtomicU64::new(self.now().saturating_add(self.header_ms)),
            end: AtomicU8::new(if self.draining.load(Ordering::Relaxed) {
                END_DRAIN
            } else {
                END_NONE
            }),
            waker: Mutex::new(None),
            graceful_idle: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
        });
        self.lock().push(Arc::downgrade(&w));
        w
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<ConnWatch>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Advance the clock and close overdue connections, forever (every 250 ms).
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sweep();
        }
    }

    /// One sweep: update the coarse clock, end overdue connections, forget closed ones.
    pub fn sweep(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.now_ms.store(now, Ordering::Relaxed);
        self.lock().retain(|w| match w.upgrade() {
            None => false,
            Some(c) => {
                if c.deadline.load(Ordering::Relaxed) <= now {
                    if c.graceful_idle.load(Ordering::Relaxed) {
                        // HTTP/2 with no request for the idle timeout: GOAWAY, and streams
                        // still sending their answers finish.
                        tracing::debug!("closing an idle HTTP/2 connection");
                        c.deadline.store(NO_DEADLINE, Ordering::Relaxed);
                        c.end(END_DRAIN);
                        return true;
                    }
                    tracing::debug!("closing a connection past its header/idle deadline");
                    c.end(END_KILL);
                    false
                } else {
                    true
                }
            }
        });
    }

    /// Ask every connection (and every one accepted from now on) to finish the request in
    /// flight and close: the node is draining.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        for c in self.lock().iter().filter_map(Weak::upgrade) {
            c.end(END_DRAIN);
        }
    }

    /// Connections still open.
    pub fn live(&self) -> usize {
        self.lock().iter().filter(|w| w.strong_count() > 0).count()
    }
}

const END_NONE: u8 = 0;
const END_DRAIN: u8 = 1;
const END_KILL: u8 = 2;

/// One watched connection: its deadline, and whether it was asked to end.
pub struct ConnWatch {
    dog: Arc<Watchdog>,
    deadline: AtomicU64,
    end: AtomicU8,
    waker: Mutex<Option<Waker>>,
    /// HTTP/2: the idle deadline ends the connection gracefully ([`ConnWatch::h2_idle`]).
    graceful_idle: AtomicBool,
    /// HTTP/2: requests being handled.
    in_flight: AtomicU64,
}

impl ConnWatch {
    fn on_read(&self, was_mid_head: bool, heads_before: u64, sc: &FramingScanner) {
        let now = self.dog.now();
        if sc.mid_head() {
            if !was_mid_head || sc.heads() != heads_before {
                // A new head started: it must be complete within the header timeout, however
                // slowly its bytes trickle in.
                self.deadline
                    .store(now.saturating_add(self.dog.header_ms), Ordering::Relaxed);
            }
        } else {
            self.deadline
                .store(now.saturating_add(self.dog.idle_ms), Ordering::Relaxed);
        }
    }

    fn on_write(&self, mid_head: bool) {
        if !mid_head {
            let d = self.dog.now().saturating_add(self.dog.idle_ms);
            self.deadline.store(d, Ordering::Relaxed);
        }
    }

    /// The header read timeout (a client that sends nothing for this long is closed).
    pub fn header_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.dog.header_ms)
    }

    /// HTTP/2 (which this watchdog cannot scan): the connection is idle while no request is
    /// being handled, and one idle for the idle timeout gets GOAWAY; streams still sending
    /// finish (hyper's graceful shutdown). Dead clients are found by h2 pings.
    pub fn h2_idle(&self) {
        self.graceful_idle.store(true, Ordering::Relaxed);
        self.deadline.store(
            self.dog.now().saturating_add(self.dog.idle_ms),
            Ordering::Relaxed,
        );
    }

    /// An HTTP/2 request starts: no idle deadline until it and every other one is handled.
    pub fn h2_request(self: &Arc<Self>) -> H2Request {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.deadline.store(NO_DEADLINE, Ordering::Relaxed);
        H2Request(self.clone())
    }

    /// Stop enforcing deadlines (e.g. for a connection being upgraded).
    pub fn disarm(&self) {
        self.deadline.store(NO_DEADLINE, Ordering::Relaxed);
    }

    fn end(&self, how: u8) {
        self.end.fetch_max(how, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Remember the waker of the task serving the connection (once per task, not per poll).
    fn register(&self, w: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(|p| p.into_inner());
        if !slot.as_ref().is_some_and(|old| old.will_wake(w)) {
            *slot = Some(w.clone());
        }
    }
}

/// An HTTP/2 request being handled ([`ConnWatch::h2_request`]); the idle clock restarts when
/// the last one is dropped.
pub struct H2Request(Arc<ConnWatch>);

impl Drop for H2Request {
    fn drop(&mut self) {
        let w = &self.0;
        if w.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            let d = w.dog.now().saturating_add(w.dog.idle_ms);
            w.deadline.store(d, Ordering::Relaxed);
        }
    }
}

/// What a served connection must support to be ended early.
pub trait GracefulConnection: Future {
    /// Finish the request in flight, then close.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> GracefulConnection for hyper::server::conn::http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http1::Connection::graceful_shutdown(self);
    }
}

impl<I, S, E, B> GracefulConnection for hyper::server::conn::http2::Connection<I, S, E>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self);
    }
}

/// A connection future under a [`ConnWatch`]: dropped (closing the socket) when its deadline
/// passes, shut down gracefully when the node drains.
pub struct Watched<C> {
    conn: Pin<Box<C>>,
    watch: Arc<ConnWatch>,
    draining: bool,
    /// Whether the serving task's waker is registered (a spawned task keeps one waker for its
    /// whole life, so it is registered once, not on every poll).
    registered: bool,
}

impl<C> Watched<C> {
    /// Watch `conn` with `watch`.
    pub fn new(conn: C, watch: Arc<ConnWatch>) -> Self {
        Self {
            conn: Box::pin(conn),
            watch,
            draining: false,
            registered: false,
        }
    }
}

impl<C: GracefulConnection> Future for Watched<C> {
    type Output = Option<C::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Register before reading the flag: an end() that lands in between then wakes us.
        if !self.registered {
            self.watch.register(cx.waker());
            self.registered = true;
        }
        let end = self.watch.end.load(Ordering::Acquire);
        if end == END_KILL {
            return Poll::Ready(None);
        }
        if end == END_DRAIN && !self.draining {
            self.draining = true;
            self.conn.as_mut().graceful_shutdown();
        }
        self.conn.as_mut().poll(cx).map(Some)
    }
}

/// A stream that scans what the client sends with a [`FramingScanner`] and reports progress to
/// its [`ConnWatch`].
pub struct SniffStream<S> {
    inner: S,
    scanner: FramingScanner,
    flag: Arc<AtomicBool>,
    watch: Option<Arc<ConnWatch>>,
}

impl<S> SniffStream<S> {
    /// Wrap `inner`; `flag` turns true when an ambiguous request was seen.
    pub fn new(inner: S, flag: Arc<AtomicBool>, watch: Option<Arc<ConnWatch>>) -> Self {
        Self {
            inner,
            scanner: FramingScanner::default(),
            flag,
            watch,
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
            let data = &buf.filled()[before..];
            if !data.is_empty() {
                let was_mid = this.scanner.mid_head();
                let heads = this.scanner.heads();
                if this.scanner.feed(data) {
                    this.flag.store(true, Ordering::Relaxed);
                }
                if let Some(w) = &this.watch {
                    w.on_read(was_mid, heads, &this.scanner);
                }
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
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(w)) = (&r, &self.watch) {
            if *n > 0 {
                w.on_write(self.scanner.mid_head());
            }
        }
        r
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
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n)), Some(w)) = (&r, &self.watch) {
            if *n > 0 {
                w.on_write(self.scanner.mid_head());
            }
        }
        r
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

    #[test]
    fn bodies_are_not_mistaken_for_heads() {
        // A Content-Length body that looks like an ambiguous request is skipped, not scanned.
        let body = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut req = format!(
            "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        assert!(!scan(&[&req]));
        let mut s = FramingScanner::default();
        s.feed(&req);
        assert_eq!(s.heads(), 1);
        assert!(!s.mid_head());
        // Chunked body with an extension and a trailer, then a second request.
        let two = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut s = FramingScanner::default();
        for b in two.iter() {
            s.feed(std::slice::from_ref(b));
        }
        assert_eq!(s.heads(), 2);
        assert!(!s.mid_head());
        assert!(!s.ambiguous);
    }

    #[test]
    fn mid_head_tracks_partial_heads() {
        let mut s = FramingScanner::default();
        assert!(!s.mid_head());
        s.feed(b"GE");
        assert!(s.mid_head());
        s.feed(b"T / HTTP/1.1\r\nHost: a\r\n");
        assert!(s.mid_head());
        s.feed(b"\r\n");
        assert!(!s.mid_head());
        assert_eq!(s.heads(), 1);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = scan(&[&data]);
        }
    }
}
