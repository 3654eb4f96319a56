//! A pipelined HTTP/1.1 connection to one peer, for small bodiless requests whose answers come
//! back whole (a box asking its PoP's owner box for a cached object). Requests queued by any
//! task are written together in one write, the peer answers them in order (hyper's server
//! aggregates its flushes for pipelined requests), and one read brings back many answers: the
//! per-request socket round trip that dominates a forwarded hit on loopback (write, wake-up,
//! read on each side) is paid once per batch.
//!
//! Only answers with a `Content-Length` (or none by their status or the request's method) up to
//! [`MAX_BODY`] are accepted: anything else ends the connection and fails what was in flight,
//! and callers fall back to their ordinary path. One connection task per peer; it connects on
//! the first request and again after an error.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Largest body a pipelined answer may carry.
pub const MAX_BODY: usize = 256 * 1024;
/// Requests in flight on the connection at most (others wait in the queue).
const MAX_IN_FLIGHT: usize = 256;
/// Largest response head.
const MAX_HEAD: usize = 64 * 1024;
/// Free room kept in the read buffer (one read takes many answers).
const READ_ROOM: usize = 32 * 1024;

/// A whole answer.
#[derive(Debug)]
pub struct PipeResponse {
    /// Status.
    pub status: StatusCode,
    /// Header fields.
    pub headers: HeaderMap,
    /// The body (empty for HEAD, 1xx, 204, 304).
    pub body: Bytes,
}

/// Why a pipelined request got no answer (the caller falls back).
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    /// Connecting failed.
    #[error("connect to {0}: {1}")]
    Connect(String, std::io::Error),
    /// The connection broke or the answer was not one this pipe accepts.
    #[error("pipelined connection: {0}")]
    Broken(String),
    /// The connection task is gone.
    #[error("pipelined connection closed")]
    Closed,
    /// The oldest request in flight waited longer than the pipe allows.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

struct Job {
    head: Vec<u8>,
    head_only: bool,
    reply: oneshot::Sender<Result<PipeResponse, PipeError>>,
}

/// The handle to one peer's pipelined connection.
pub struct Pipe {
    tx: mpsc::UnboundedSender<Job>,
}

impl Pipe {
    /// A pipe to `authority` (host:port); its task starts now and connects on first use. A
    /// request in flight longer than `answer_timeout` ends the connection (failing what is in
    /// flight): one timer per connection, none per request.
    pub fn new(authority: &str, connect_timeout: Duration, answer_timeout: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let limits = Limits {
            connect: connect_timeout,
            answer: answer_timeout,
        };
        tokio::spawn(run(authority.to_string(), limits, rx));
        Pipe { tx }
    }

    /// Send a bodiless request built with [`Head`].
    pub async fn send(&self, head: Head) -> Result<PipeResponse, PipeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                head: head.bytes,
                head_only: head.head_only,
                reply,
            })
            .map_err(|_| PipeError::Closed)?;
        rx.await.map_err(|_| PipeError::Closed)?
    }
}

/// A request head written straight into bytes (no `HeaderMap` in between).
pub struct Head {
    bytes: Vec<u8>,
    head_only: bool,
}

impl Head {
    /// `METHOD path_and_query HTTP/1.1` (origin-form; the fields must include `Host`).
    pub fn new(method: &Method, path_and_query: &str) -> Self {
        let mut bytes = Vec::with_capacity(512);
        bytes.extend_from_slice(method.as_str().as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(path_and_query.as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        Head {
            bytes,
            head_only: method == Method::HEAD,
        }
    }

    /// One field line (the caller passes valid names and values: from a `HeaderMap`).
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(b": ");
        self.bytes.extend_from_slice(value);
        self.bytes.extend_from_slice(b"\r\n");
    }

    /// The end of the head.
    pub fn finish(mut self) -> Self {
        self.bytes.extend_from_slice(b"\r\n");
        self
    }
}

#[derive(Clone, Copy)]
struct Limits {
    connect: Duration,
    answer: Duration,
}

async fn run(authority: String, limits: Limits, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut queued: VecDeque<Job> = VecDeque::new();
    loop {
        if queued.is_empty() {
            match rx.recv().await {
                Some(j) => queued.push_back(j),
                None => return,
            }
        }
        let sock = match tokio::time::timeout(limits.connect, TcpStream::connect(&authority)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                fail_all(&mut queued, &mut rx, |_| {
                    PipeError::Connect(authority.clone(), clone_io(&e))
                });
                continue;
            }
            Err(_) => {
                fail_all(&mut queued, &mut rx, |_| {
                    PipeError::Connect(authority.clone(), std::io::ErrorKind::TimedOut.into())
                });
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let why = serve(sock, limits.answer, &mut queued, &mut rx).await;
        tracing::debug!(peer = %authority, why = %why, "pipelined connection ended");
        if why == "closed" && queued.is_empty() && rx.is_closed() {
            return;
        }
    }
}

fn clone_io(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}

/// Fail every queued job (and what is waiting in the channel now).
fn fail_all(
    queued: &mut VecDeque<Job>,
    rx: &mut mpsc::UnboundedReceiver<Job>,
    err: impl Fn(()) -> PipeError,
) {
    while let Ok(j) = rx.try_recv() {
        queued.push_back(j);
    }
    for j in queued.drain(..) {
        let _ = j.reply.send(Err(err(())));
    }
}

type InFlight = VecDeque<(
    bool,
    Instant,
    oneshot::Sender<Result<PipeResponse, PipeError>>,
)>;

/// Run one connection until it fails; `queued` holds jobs not yet written.
async fn serve(
    mut sock: TcpStream,
    answer_timeout: Duration,
    queued: &mut VecDeque<Job>,
    rx: &mut mpsc::UnboundedReceiver<Job>,
) -> String {
    let mut in_flight: InFlight = VecDeque::new();
    let mut wbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let why = loop {
        // Everything waiting goes out in one write, once the last batch is answered: under
        // load, requests queue up while a batch is out and travel together (one write and one
        // wake-up on each side for all of them); alone, a request leaves at once. The owner
        // answers in order anyway, so holding a batch back delays nothing.
        let now = Instant::now();
        while in_flight.len() < MAX_IN_FLIGHT && (in_flight.is_empty() || !wbuf.is_empty()) {
            let job = match queued.pop_front() {
                Some(j) => j,
                None => match rx.try_recv() {
                    Ok(j) => j,
                    Err(_) => break,
                },
            };
            wbuf.extend_from_slice(&job.head);
            in_flight.push_back((job.head_only, now, job.reply));
        }
        if !wbuf.is_empty() {
            if let Err(e) = sock.write_all(&wbuf).await {
                break format!("write: {e}");
            }
            wbuf.clear();
        }
        if rbuf.capacity() - rbuf.len() < READ_ROOM {
            rbuf.reserve(64 * 1024);
        }
        let oldest = in_flight
            .front()
            .map_or(now + answer_timeout, |(_, sent, _)| *sent + answer_timeout);
        tokio::select! {
            biased;
            r = sock.read_buf(&mut rbuf), if !in_flight.is_empty() => {
                match r {
                    Ok(0) => break "the peer closed the connection".to_string(),
                    Ok(_) => {}
                    Err(e) => break format!("read: {e}"),
                }
                if let Err(e) = parse_answers(&mut rbuf, &mut in_flight) {
                    break e;
                }
            }
            job = rx.recv(), if in_flight.is_empty() => {
                match job {
                    Some(j) => queued.push_back(j),
                    None if in_flight.is_empty() => break "closed".to_string(),
                    None => {}
                }
            }
            _ = tokio::time::sleep_until(oldest.into()), if !in_flight.is_empty() => {
                for (_, _, reply) in in_flight.drain(..) {
                    let _ = reply.send(Err(PipeError::Timeout(answer_timeout)));
                }
                break format!("no answer within {answer_timeout:?}");
            }
        }
        if in_flight.is_empty() && queued.is_empty() && rx.is_closed() {
            break "closed".to_string();
        }
    };
    for (_, _, reply) in in_flight.drain(..) {
        let _ = reply.send(Err(PipeError::Broken(why.clone())));
    }
    why
}

/// Take every complete answer off the front of `buf`, in order.
fn parse_answers(buf: &mut BytesMut, in_flight: &mut InFlight) -> Result<(), String> {
    while let Some((head_only, _, _)) = in_flight.front() {
        match parse_one(buf, *head_only)? {
            Some(resp) => {
                if let Some((_, _, reply)) = in_flight.pop_front() {
                    let _ = reply.send(Ok(resp));
                }
            }
            None => break,
        }
    }
    if !buf.is_empty() && in_flight.is_empty() {
        return Err("bytes after the last answer".into());
    }
    Ok(())
}

/// One answer from the front of `buf`, if it is complete. Header values are slices of the
/// answer's own bytes (no copy per field).
fn parse_one(buf: &mut BytesMut, head_only: bool) -> Result<Option<PipeResponse>, String> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut fields);
    let head_len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err("response head too large".into())
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let code = r.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| format!("bad status {code}"))?;
    if status.is_informational() {
        return Err("1xx answers are not pipelined".into());
    }
    // Where each field is in the head (offsets, so the head can be frozen and sliced).
    let base = buf.as_ptr() as usize;
    let mut spans: Vec<(HeaderName, usize, usize)> = Vec::with_capacity(r.headers.len());
    let mut length: Option<usize> = None;
    for h in r.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| e.to_string())?;
        if name == http::header::CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("bad Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length".into());
            }
            length = Some(n);
        }
        if name == http::header::TRANSFER_ENCODING {
            return Err("chunked answers are not pipelined".into());
        }
        let start = h.value.as_ptr() as usize - base;
        spans.push((name, start, start + h.value.len()));
    }
    let body_len =
        if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            0
        } else {
            match length {
                Some(n) if n <= MAX_BODY => n,
                Some(_) => return Err("answer too large for the pipe".into()),
                None => return Err("answer without Content-Length".into()),
            }
        };
    if buf.len() < head_len + body_len {
        buf.reserve(head_len + body_len - buf.len());
        return Ok(None);
    }
    let mut whole = buf.split_to(head_len + body_len).freeze();
    let body = whole.split_off(head_len);
    let mut headers = HeaderMap::with_capacity(spans.len());
    for (name, start, end) in spans {
        let value =
            HeaderValue::from_maybe_shared(whole.slice(start..end)).map_err(|e| e.to_string())?;
        headers.append(name, value);
    }
    Ok(Some(PipeResponse {
        status,
        headers,
        body,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parse(text: &[u8], head_only: bool) -> Result<Option<PipeResponse>, String> {
        let mut b = BytesMut::from(text);
        parse_one(&mut b, head_only)
    }

    #[test]
    fn answers_are_taken_whole_and_in_order() {
        let mut b = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx: 1\r\n\r\nabcHTTP/1.1 304 Not Modified\r\netag: \"e\"\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhe"[..],
        );
        let r = parse_one(&mut b, false).unwrap().unwrap();
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"abc"[..]));
        assert_eq!(r.headers["x"], "1");
        let r = parse_one(&mut b, false).unwrap().unwrap();
        assert_eq!((r.status.as_u16(), r.body.len()), (304, 0));
        assert!(parse_one(&mut b, false).unwrap().is_none(), "partial body");
        b.extend_from_slice(b"llo");
        let r = parse_one(&mut b, false).unwrap().unwrap();
        assert_eq!(&r.body[..], b"hello");
        assert!(b.is_empty());
    }

    #[test]
    fn junk_and_mutated_answers_never_panic() {
        let valid = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncache-status: a; hit\r\n\r\nhello";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let mut bytes = valid.to_vec();
            if round % 2 == 0 {
                for _ in 0..(next() % 6) {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] = next() as u8;
                }
                bytes.truncate((next() as usize) % (bytes.len() + 1));
            } else {
                bytes = (0..(next() % 200)).map(|_| next() as u8).collect();
            }
            let mut b = BytesMut::from(&bytes[..]);
            let mut in_flight: InFlight = VecDeque::new();
            for _ in 0..3 {
                let (tx, _rx) = oneshot::channel();
                in_flight.push_back((round % 3 == 0, Instant::now(), tx));
            }
            let _ = parse_answers(&mut b, &mut in_flight);
        }
    }

    #[test]
    fn head_answers_have_no_body() {
        let r = parse(b"HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.body.len(), 0);
        assert_eq!(r.headers["content-length"], "1024");
    }

    #[test]
    fn what_the_pipe_cannot_carry_is_an_error() {
        assert!(parse(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            false
        )
        .is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\n\r\n", false).is_err());
        assert!(parse(
            b"HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n",
            false
        )
        .is_err());
        assert!(parse(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            false
        )
        .is_err());
        assert!(parse(b"HTTP/1.1 100 Continue\r\n\r\n", false).is_err());
        assert!(parse(b"garbage\r\n\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ncontent-le", false)
            .unwrap()
            .is_none());
    }
}
