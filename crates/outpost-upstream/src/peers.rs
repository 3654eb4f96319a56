//! A set of Outpost peers a node sends requests to by key: the other boxes of its PoP (to reach
//! a key's owner) or an origin's shield set. The member for a key is chosen by consistent hashing
//! ([`crate::ring`]); on a connection failure, a broken response or a failed health state the
//! request goes to the next member in the key's order (when it may be sent again: see
//! [`PeerSet::send`]). A first-byte timeout is not failed over: the peer may be waiting on a slow
//! origin, and asking its sibling would double the origin's load. It counts as a failure,
//! though, so a hung peer (which also fails its health probes) goes down and its keys move on.
//!
//! Health: passive (consecutive failures of real requests) and active (`GET /healthz` on each
//! peer's admin address every `interval`), with `fall` failures to go down and `rise` successes
//! to come back. A peer that comes back is ramped up: it takes a growing fraction of its keys
//! over `ramp_up`, so a restarted box does not turn its whole share into misses at once.

use crate::ring::{Eligibility, Ring};
use crate::{
    build, classify, empty_body, first_byte_timeout, ReqBody, Timeouts, UpstreamError,
    UpstreamErrorKind,
};
use http::{HeaderMap, Method, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// One member of a peer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// Node name (hashed for the ring: every node must use the same names).
    pub name: String,
    /// `host:port` of its HTTP listener.
    pub http: String,
    /// `host:port` of its admin listener (`/healthz`), if it has one.
    pub admin: Option<String>,
}

/// Health thresholds and ramp-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Time between active probes.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Consecutive failures that mark a peer down.
    pub fall: u32,
    /// Consecutive probe successes that bring a down peer back.
    pub rise: u32,
    /// How long a peer that came back takes to reach its full share of keys.
    pub ramp_up: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            fall: 3,
            rise: 2,
            ramp_up: Duration::from_secs(30),
        }
    }
}

#[derive(Default)]
struct PeerState {
    down: AtomicBool,
    fails: AtomicU32,
    oks: AtomicU32,
    /// Milliseconds since the process epoch when the peer last came back or joined (0: up from
    /// the start).
    up_since_ms: AtomicU64,
    requests: AtomicU64,
}

/// A set of peers chosen by key.
pub struct PeerSet {
    name: String,
    peers: Vec<PeerSpec>,
    ring: Ring,
    state: Vec<PeerState>,
    /// The member that is this node (never probed, always up; requests for its keys are not
    /// sent).
    local: Option<usize>,
    client: Client<HttpConnector, ReqBody>,
    timeouts: Timeouts,
    policy: HealthPolicy,
    delay: Duration,
    failovers: AtomicU64,
    /// HTTP/2 (prior knowledge) to the peers: one multiplexed connection each.
    h2: Option<Vec<tokio::sync::Mutex<Option<Http2Sender>>>>,
    /// Pipelined HTTP/1.1 connections for small whole answers ([`PeerSet::probe`]), made on
    /// first use.
    pipes: Vec<std::sync::OnceLock<crate::pipe::Pipe>>,
}

type Http2Sender = hyper::client::conn::http2::SendRequest<ReqBody>;

/// The protocol between tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerProtocol {
    /// HTTP/1.1 with a keep-alive pool: one request per connection at a time.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge: one connection per peer carries every request.
    Http2,
}

/// What [`PeerSet::send`] returns: the response and the member that gave it.
pub type PeerResponse = (Response<Incoming>, usize);

impl PeerSet {
    /// A set called `name` of `peers`; `local` names the member that is this node, if any.
    /// `delay` is added before every request (simulated link latency; zero in production).
    pub fn new(
        name: &str,
        peers: Vec<PeerSpec>,
        local: Option<&str>,
        timeouts: Timeouts,
        policy: HealthPolicy,
        delay: Duration,
    ) -> Self {
        Self::with_protocol(
            name,
            peers,
            local,
            timeouts,
            policy,
            delay,
            PeerProtocol::Http1,
        )
    }

    /// [`PeerSet::new`] speaking `protocol` to the peers.
    pub fn with_protocol(
        name: &str,
        peers: Vec<PeerSpec>,
        local: Option<&str>,
        timeouts: Timeouts,
        policy: HealthPolicy,
        delay: Duration,
        protocol: PeerProtocol,
    ) -> Self {
        let ring = Ring::equal(peers.iter().map(|p| p.name.as_str()));
        let local = local.and_then(|l| peers.iter().position(|p| p.name == l));
        let state = peers.iter().map(|_| PeerState::default()).collect();
        Self {
            name: name.to_string(),
            ring,
            state,
            local,
            client: crate::plain_client(timeouts),
            timeouts,
            policy,
            delay,
            failovers: AtomicU64::new(0),
            pipes: peers.iter().map(|_| std::sync::OnceLock::new()).collect(),
            h2: (protocol == PeerProtocol::Http2).then(|| {
                peers
                    .iter()
                    .map(|_| tokio::sync::Mutex::new(None))
                    .collect()
            }),
            peers,
        }
    }

    /// The set's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The members.
    pub fn peers(&self) -> &[PeerSpec] {
        &self.peers
    }

    /// Index of the member that is this node.
    pub fn local(&self) -> Option<usize> {
        self.local
    }

    /// Requests that went to another member after one failed.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// Requests member `i` answered.
    pub fn requests(&self, i: usize) -> u64 {
        self.state
            .get(i)
            .map_or(0, |s| s.requests.load(Ordering::Relaxed))
    }

    /// Whether member `i` is up (passive and active health).
    pub fn is_up(&self, i: usize) -> bool {
        self.state
            .get(i)
            .is_some_and(|s| !s.down.load(Ordering::Relaxed))
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }

    /// Take over the health of the members `old` also had (by name), so a new topology does
    /// not forget which peers are down; a member `old` did not have has just joined and ramps
    /// up over `ramp_up`, like one that came back.
    pub fn carry_over(&self, old: &PeerSet) {
        let now = self.now_ms().max(1);
        for (i, p) in self.peers.iter().enumerate() {
            let s = &self.state[i];
            match old.peers.iter().position(|o| o.name == p.name) {
                Some(j) => {
                    let o = &old.state[j];
                    s.down
                        .store(o.down.load(Ordering::Relaxed), Ordering::Relaxed);
                    s.fails
                        .store(o.fails.load(Ordering::Relaxed), Ordering::Relaxed);
                    s.oks
                        .store(o.oks.load(Ordering::Relaxed), Ordering::Relaxed);
                    s.up_since_ms
                        .store(o.up_since_ms.load(Ordering::Relaxed), Ordering::Relaxed);
                    s.requests
                        .store(o.requests.load(Ordering::Relaxed), Ordering::Relaxed);
                }
                None if Some(i) != self.local => {
                    s.up_since_ms.store(now, Ordering::Relaxed);
                    tracing::info!(set = %self.name, peer = %p.name, "peer joined (ramping)");
                }
                None => {}
            }
        }
        self.failovers
            .store(old.failovers.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Whether member `i` takes keys now.
    pub fn eligibility(&self, i: usize) -> Eligibility {
        if Some(i) == self.local {
            return Eligibility::Up;
        }
        let Some(s) = self.state.get(i) else {
            return Eligibility::Down;
        };
        if s.down.load(Ordering::Relaxed) {
            return Eligibility::Down;
        }
        let since = s.up_since_ms.load(Ordering::Relaxed);
        let ramp = self.policy.ramp_up.as_millis() as u64;
        if since == 0 || ramp == 0 {
            return Eligibility::Up;
        }
        let elapsed = self.now_ms().saturating_sub(since);
        if elapsed >= ramp {
            Eligibility::Up
        } else {
            Eligibility::Ramping(elapsed as f64 / ramp as f64)
        }
    }

    /// The member that owns `key` now (health and ramp-up included).
    pub fn owner(&self, key: u64) -> Option<usize> {
        self.ring.owner_with(key, |i| self.eligibility(i))
    }

    /// The members in the order to try for `key`.
    pub fn order(&self, key: u64) -> Vec<usize> {
        self.ring.order_with(key, |i| self.eligibility(i))
    }

    fn failed(&self, i: usize) {
        let s = &self.state[i];
        s.oks.store(0, Ordering::Relaxed);
        let f = s.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if f >= self.policy.fall && !s.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(set = %self.name, peer = %self.peers[i].name, "peer down");
        }
    }

    fn succeeded(&self, i: usize, probe: bool) {
        let s = &self.state[i];
        s.fails.store(0, Ordering::Relaxed);
        if !s.down.load(Ordering::Relaxed) {
            return;
        }
        // A down peer comes back only on probes (a real request is not sent to it unless every
        // member is down).
        let oks = s.oks.fetch_add(1, Ordering::Relaxed) + 1;
        if probe && oks >= self.policy.rise {
            s.up_since_ms.store(self.now_ms().max(1), Ordering::Relaxed);
            s.oks.store(0, Ordering::Relaxed);
            s.down.store(false, Ordering::Relaxed);
            tracing::info!(set = %self.name, peer = %self.peers[i].name, "peer up (ramping)");
        }
    }

    /// Send a request for `key` to its owner. When a member fails to answer, the request goes
    /// to the next member if its body was kept ([`crate::replay::Payload`]: bodiless, or small
    /// with a declared length) and either the member could not be reached or the method is
    /// idempotent; a larger body is sent once. `skip` is this node:
    /// when it comes next in the key's order, the request is not sent further (an error: this
    /// node answers the key itself, as every node will once the failed member is marked down).
    /// Returns the response and the member that answered.
    pub async fn send(
        &self,
        key: u64,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Option<ReqBody>,
        skip: Option<usize>,
    ) -> Result<PeerResponse, UpstreamError> {
        self.send_within(
            self.timeouts.first_byte,
            key,
            method,
            path_and_query,
            headers,
            body,
            skip,
        )
        .await
    }

    /// Send a bodiless request to member `i` over its pipelined connection (`crate::pipe`);
    /// the whole answer within `within`, or an error (the
    /// connection's one timer: `within` must be the same on every call). For answers that are
    /// small and quick (a cached object): anything else fails, and the caller takes its
    /// ordinary path. Failures do not count against the member's health (the ordinary path
    /// that follows does).
    pub async fn pipelined(
        &self,
        i: usize,
        within: Duration,
        head: crate::pipe::Head,
    ) -> Result<crate::pipe::PipeResponse, crate::pipe::PipeError> {
        let peer = &self.peers[i];
        let pipe = self.pipes[i]
            .get_or_init(|| crate::pipe::Pipe::new(&peer.http, self.timeouts.connect, within));
        let r = pipe.send(head).await?;
        self.state[i].requests.fetch_add(1, Ordering::Relaxed);
        Ok(r)
    }

    /// [`PeerSet::send`] waiting at most `first_byte` for each member's response head (what is
    /// behind the peer decides how long that may take).
    #[allow(clippy::too_many_arguments)]
    pub async fn send_within(
        &self,
        first_byte: Duration,
        key: u64,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Option<ReqBody>,
        skip: Option<usize>,
    ) -> Result<PeerResponse, UpstreamError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let order = self.order(key);
        let mut payload = crate::replay::Payload::read_within(body, first_byte, &self.name).await?;
        let idempotent = crate::replay::idempotent(method);
        let mut last: Option<UpstreamError> = None;
        let mut replayable = true;
        for (tries, i) in order.into_iter().enumerate() {
            if Some(i) == skip {
                // This node is next in the key's order: it answers the key itself now.
                return Err(last.unwrap_or_else(|| {
                    UpstreamError::new(
                        UpstreamErrorKind::Unreachable,
                        &self.name,
                        Some("this node is next in the key's order".into()),
                    )
                }));
            }
            if tries > 0 {
                // Sent again only when it may be (RFC 9110 §9.2.2): its body was kept, and
                // nothing reached the member or the method is idempotent.
                let again = replayable
                    && (idempotent || last.as_ref().is_some_and(|e| e.kind.is_connect()));
                if !again {
                    break;
                }
                self.failovers.fetch_add(1, Ordering::Relaxed);
            }
            let peer = &self.peers[i];
            replayable = payload.replayable();
            let b = payload.attempt_body();
            if self.h2.is_some() {
                match self
                    .send_h2(i, first_byte, method, path_and_query, headers, b)
                    .await
                {
                    Ok(resp) => {
                        self.succeeded(i, false);
                        self.state[i].requests.fetch_add(1, Ordering::Relaxed);
                        return Ok((resp, i));
                    }
                    Err(err) if err.kind == UpstreamErrorKind::Timeout => {
                        // Counted (a hung peer goes down after `fall` of them), not failed over.
                        self.failed(i);
                        return Err(err);
                    }
                    Err(err) => {
                        tracing::debug!(set = %self.name, peer = %peer.name, error = %err.detail(), "peer request failed; trying the next");
                        self.failed(i);
                        last = Some(err);
                        continue;
                    }
                }
            }
            let req = build(method, &peer.http, path_and_query, headers, b).map_err(|e| {
                UpstreamError::new(UpstreamErrorKind::Protocol, &peer.http, Some(Box::new(e)))
            })?;
            match tokio::time::timeout(first_byte, self.client.request(req)).await {
                Ok(Ok(resp)) => {
                    self.succeeded(i, false);
                    self.state[i].requests.fetch_add(1, Ordering::Relaxed);
                    return Ok((resp, i));
                }
                Ok(Err(e)) => {
                    let err = classify(e, &peer.http);
                    tracing::debug!(set = %self.name, peer = %peer.name, error = %err.detail(), "peer request failed; trying the next");
                    self.failed(i);
                    last = Some(err);
                }
                Err(_) => {
                    self.failed(i);
                    return Err(first_byte_timeout(&peer.http, first_byte));
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            UpstreamError::new(
                UpstreamErrorKind::Unreachable,
                &self.name,
                Some("no member to send to".into()),
            )
        }))
    }

    /// The HTTP/2 connection to peer `i` (made on first use, again after it closed).
    async fn h2_sender(&self, i: usize) -> Result<Http2Sender, UpstreamError> {
        let peer = &self.peers[i];
        let Some(slots) = &self.h2 else {
            return Err(UpstreamError::new(
                UpstreamErrorKind::Protocol,
                &peer.http,
                None,
            ));
        };
        let mut slot = slots[i].lock().await;
        if let Some(s) = slot.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        *slot = None;
        let connect = tokio::time::timeout(
            self.timeouts.connect,
            tokio::net::TcpStream::connect(&peer.http),
        )
        .await;
        let stream = match connect {
            Err(_) => {
                return Err(UpstreamError::new(
                    UpstreamErrorKind::ConnectTimeout,
                    &peer.http,
                    None,
                ))
            }
            Ok(Err(e)) => {
                let kind = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset => {
                        UpstreamErrorKind::Refused
                    }
                    _ => UpstreamErrorKind::Unreachable,
                };
                return Err(UpstreamError::new(kind, &peer.http, Some(Box::new(e))));
            }
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| {
                    UpstreamError::new(UpstreamErrorKind::Protocol, &peer.http, Some(Box::new(e)))
                })?;
        let name = peer.name.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(peer = %name, error = %e, "HTTP/2 connection to a peer ended");
            }
        });
        *slot = Some(sender.clone());
        Ok(sender)
    }

    /// One request over HTTP/2; `:authority` is the client's Host (the peer is the connection).
    async fn send_h2(
        &self,
        i: usize,
        first_byte: Duration,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: ReqBody,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let peer = &self.peers[i];
        let authority = headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(&peer.http);
        let mut req = build(method, authority, path_and_query, headers, body).map_err(|e| {
            UpstreamError::new(UpstreamErrorKind::Protocol, &peer.http, Some(Box::new(e)))
        })?;
        req.headers_mut().remove(http::header::HOST);
        *req.version_mut() = http::Version::HTTP_2;
        let attempt = async {
            let mut sender = self.h2_sender(i).await?;
            sender.send_request(req).await.map_err(|e| {
                UpstreamError::new(UpstreamErrorKind::Protocol, &peer.http, Some(Box::new(e)))
            })
        };
        match tokio::time::timeout(first_byte, attempt).await {
            Ok(r) => r,
            Err(_) => Err(first_byte_timeout(&peer.http, first_byte)),
        }
    }

    /// Probe every member but this node every `interval` until the set is dropped.
    pub fn spawn_probes(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let interval = self.policy.interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(set) = weak.upgrade() else { return };
                set.probe_all().await;
            }
        });
    }

    async fn probe_all(&self) {
        let probes = (0..self.peers.len())
            .filter(|i| Some(*i) != self.local)
            .map(|i| async move {
                let ok = self.probe(i).await;
                if ok {
                    self.succeeded(i, true);
                } else {
                    self.failed(i);
                }
            });
        futures_join_all(probes).await;
    }

    async fn probe(&self, i: usize) -> bool {
        let peer = &self.peers[i];
        let timeout = self.policy.timeout;
        match &peer.admin {
            Some(admin) => {
                let Ok(req) = build(
                    &Method::GET,
                    admin,
                    "/healthz",
                    &HeaderMap::new(),
                    empty_body(),
                ) else {
                    return false;
                };
                matches!(
                    tokio::time::timeout(timeout, self.client.request(req)).await,
                    Ok(Ok(r)) if r.status().is_success()
                )
            }
            None => matches!(
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&peer.http)).await,
                Ok(Ok(_))
            ),
        }
    }
}

/// Milliseconds since the first peer set of the process was made (one epoch for every set, so
/// state carried from one set to the next keeps its times).
fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Await every future (they are few; no dependency on `futures`).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let set: Vec<_> = futs.map(Box::pin).collect();
    for f in set {
        f.await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn spec(name: &str, http: String) -> PeerSpec {
        PeerSpec {
            name: name.into(),
            http,
            admin: None,
        }
    }

    async fn server(body: &'static str) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(r.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn closed_port() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    fn policy() -> HealthPolicy {
        HealthPolicy {
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(200),
            fall: 2,
            rise: 2,
            ramp_up: Duration::from_secs(3600),
        }
    }

    fn timeouts() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(1),
            first_byte: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn fails_over_to_the_next_member_and_marks_the_dead_one_down() {
        let a = server("a").await;
        // A key owned by the dead member.
        let (set, key) = two_shields(closed_port(), a);
        for _ in 0..3 {
            let (resp, who) = set
                .send(key, &Method::GET, "/", &HeaderMap::new(), None, None)
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(who, 1);
        }
        assert!(!set.is_up(0));
        assert_eq!(set.owner(key), Some(1));
        assert_eq!(
            set.failovers(),
            2,
            "once down, the dead member is not tried first"
        );
    }

    /// A shield set of `first` and `second`, and a key `first` owns.
    fn two_shields(first: String, second: String) -> (PeerSet, u64) {
        let set = PeerSet::new(
            "shields",
            vec![spec("s1", first), spec("s2", second)],
            None,
            timeouts(),
            policy(),
            Duration::ZERO,
        );
        let key = (0u64..)
            .map(crate::ring::mix64)
            .find(|k| set.owner(*k) == Some(0))
            .unwrap();
        (set, key)
    }

    /// A member that reads each request and resets the connection without answering.
    async fn resetter() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                // Linger 0 resets at once (the deprecation is about blocking on drop).
                #[allow(deprecated)]
                let _ = s.set_linger(Some(Duration::ZERO));
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_kept_body_fails_over_only_when_the_method_is_idempotent() {
        let (set, key) = two_shields(resetter().await, server("b").await);
        let body = || Some(crate::replay::bytes_body(bytes::Bytes::from_static(b"put")));
        let (resp, who) = set
            .send(key, &Method::PUT, "/", &HeaderMap::new(), body(), None)
            .await
            .unwrap();
        assert_eq!((resp.status().as_u16(), who), (200, 1));
        let e = set
            .send(key, &Method::POST, "/", &HeaderMap::new(), body(), None)
            .await
            .unwrap_err();
        assert_eq!(e.kind, UpstreamErrorKind::Protocol, "{}", e.detail());
    }

    #[tokio::test]
    async fn probes_bring_a_member_back_with_ramp_up() {
        // The member's port is closed, then a server appears on it.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let set = Arc::new(PeerSet::new(
            "pop",
            vec![spec("b1", addr.to_string()), spec("b2", server("b").await)],
            Some("b2"),
            timeouts(),
            policy(),
            Duration::ZERO,
        ));
        set.spawn_probes();
        let deadline = Instant::now() + Duration::from_secs(5);
        while set.is_up(0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!set.is_up(0), "probes mark the closed member down");
        assert_eq!(
            set.eligibility(1),
            Eligibility::Up,
            "the local member is always up"
        );
        let back = tokio::net::TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = back.accept().await {
                held.push(s);
            }
        });
        while !set.is_up(0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(set.is_up(0));
        match set.eligibility(0) {
            Eligibility::Ramping(f) => assert!(f < 0.01),
            other => panic!("expected ramping, got {other:?}"),
        }
    }
}
