//! Request coalescing: the single-flight registry and body fan-out.
//!
//! For each cache key at most one *leader* fetches from upstream; concurrent requests for the same key
//! become *followers* that receive the response head and then every body chunk as the leader pushes
//! it (late joiners replay the chunks already received, so a slow 10 MiB fill starts flowing to all
//! of them at once). If the leader fails or is dropped, followers see an error and can elect a new
//! leader by joining again. A leader that finds the response uncacheable *releases* its followers (they
//! go upstream on their own) and can mark the key "pass" for a while so later requests skip the wait.

use bytes::Bytes;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::watch;

/// Why a follower did not get (all of) the leader's response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    /// The leader's upstream fetch failed (or the leader went away) before completing.
    #[error("fill leader failed: {0}")]
    LeaderFailed(FillFailure),
    /// The response is not shareable; fetch on your own.
    #[error("response not shareable")]
    Released,
}

/// Why a fill failed, as its leader saw it. Followers act on the class: a fill that timed out is a
/// 504 for every one of its requests, one whose leader went away is joined again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FillFailure {
    /// No response head in time (connect or first byte).
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// Upstream refused, could not be resolved, or broke the protocol before a head.
    #[error("upstream unreachable")]
    UpstreamUnreachable,
    /// Upstream answered with a server error the fill does not share (5xx while a stale copy
    /// may be served instead).
    #[error("upstream answered {0}")]
    UpstreamStatus(u16),
    /// The body failed mid-way (connection reset, protocol error).
    #[error("upstream body failed")]
    BodyFailed,
    /// The body stalled longer than the idle limit.
    #[error("upstream body stalled")]
    BodyStalled,
    /// The body ended before its Content-Length.
    #[error("upstream body shorter than Content-Length")]
    BodyShort,
    /// The leader went away before publishing a head (its client left, its task ended): join
    /// again and a new leader is elected.
    #[error("fill leader went away")]
    LeaderGone,
}

impl FillFailure {
    /// Stable name for logs and `Cache-Status; detail=`.
    pub fn as_str(&self) -> &'static str {
        match self {
            FillFailure::UpstreamTimeout => "upstream-timeout",
            FillFailure::UpstreamUnreachable => "upstream-unreachable",
            FillFailure::UpstreamStatus(_) => "upstream-error-status",
            FillFailure::BodyFailed => "upstream-body-failed",
            FillFailure::BodyStalled => "upstream-body-stalled",
            FillFailure::BodyShort => "upstream-body-short",
            FillFailure::LeaderGone => "leader-gone",
        }
    }

    /// Whether the failure is a timeout (a client waiting on it gets 504, not 502).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            FillFailure::UpstreamTimeout | FillFailure::BodyStalled
        )
    }
}

#[derive(Debug)]
enum End {
    Complete,
    Failed(FillFailure),
    Released,
}

struct State<H> {
    head: Option<Arc<H>>,
    chunks: Vec<Bytes>,
    end: Option<End>,
    followers: usize,
    /// The key was invalidated while this fill ran: its result must not be stored.
    poisoned: bool,
}

struct Fill<H> {
    state: Mutex<State<H>>,
    version: watch::Sender<u64>,
}

impl<H> Fill<H> {
    fn lock(&self) -> MutexGuard<'_, State<H>> {
        // A poisoned lock only means another thread panicked mid-update; the state stays usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }
}

struct Inner<K, H> {
    fills: Mutex<HashMap<K, Arc<Fill<H>>>>,
    passes: Mutex<HashMap<K, Instant>>,
}

/// The registry of in-flight fills, keyed by cache key. Cheap to clone (shared).
pub struct FillRegistry<K, H> {
    inner: Arc<Inner<K, H>>,
}

impl<K, H> Clone for FillRegistry<K, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone, H> Default for FillRegistry<K, H> {
    fn default() -> Self {
        Self::new()
    }
}

/// What joining a key gave this request.
pub enum Joined<K: Hash + Eq + Clone, H> {
    /// Nobody is fetching: you fetch, and feed the followers.
    Leader(FillLeader<K, H>),
    /// Someone is fetching: read their response.
    Follower(FillFollower<H>),
    /// The key was recently found uncacheable: go upstream directly without coalescing.
    Pass,
}

impl<K: Hash + Eq + Clone, H> FillRegistry<K, H> {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                fills: Mutex::new(HashMap::new()),
                passes: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn fills(&self) -> MutexGuard<'_, HashMap<K, Arc<Fill<H>>>> {
        self.inner.fills.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn passes(&self) -> MutexGuard<'_, HashMap<K, Instant>> {
        self.inner.passes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Become the leader for `key`, or follow the current leader, or learn the key is a pass.
    pub fn join(&self, key: &K, now: Instant) -> Joined<K, H> {
        {
            let mut passes = self.passes();
            if let Some(until) = passes.get(key) {
                if *until > now {
                    return Joined::Pass;
                }
                passes.remove(key);
            }
        }
        let mut fills = self.fills();
        if let Some(fill) = fills.get(key) {
            let fill = fill.clone();
            fill.lock().followers += 1;
            let rx = fill.version.subscribe();
            return Joined::Follower(FillFollower { fill, rx, next: 0 });
        }
        let (tx, _rx) = watch::channel(0u64);
        let fill = Arc::new(Fill {
            state: Mutex::new(State {
                head: None,
                chunks: Vec::new(),
                end: None,
                followers: 0,
                poisoned: false,
            }),
            version: tx,
        });
        fills.insert(key.clone(), fill.clone());
        Joined::Leader(FillLeader {
            registry: self.clone(),
            key: key.clone(),
            fill,
            done: false,
        })
    }

    /// Remember that `key` is uncacheable until `until` (hit-for-pass).
    pub fn mark_pass(&self, key: K, until: Instant) {
        let mut passes = self.passes();
        if passes.len() > 100_000 {
            let now = Instant::now();
            passes.retain(|_, u| *u > now);
        }
        passes.insert(key, until);
    }

    /// Forget a pass mark (e.g. after a purge).
    pub fn clear_pass(&self, key: &K) {
        self.passes().remove(key);
    }

    /// The key was invalidated (purge, unsafe method): a fill in flight for it must not store its
    /// (now outdated) result, and later requests start a new fill.
    pub fn poison(&self, key: &K) {
        let mut fills = self.fills();
        if let Some(fill) = fills.remove(key) {
            fill.lock().poisoned = true;
        }
    }

    /// Poison every fill in flight whose key (and head, once published) `matches`, and forget
    /// the pass marks of matching keys; returns how many fills were poisoned. For purges that
    /// name a prefix or a tag rather than one key.
    pub fn poison_where(&self, mut matches: impl FnMut(&K, Option<&H>) -> bool) -> usize {
        let mut poisoned = 0;
        self.fills().retain(|key, fill| {
            let mut st = fill.lock();
            if matches(key, st.head.as_deref()) {
                st.poisoned = true;
                poisoned += 1;
                false
            } else {
                true
            }
        });
        self.passes().retain(|key, _| !matches(key, None));
        poisoned
    }

    /// Fills in flight now.
    pub fn in_flight(&self) -> usize {
        self.fills().len()
    }

    fn remove(&self, key: &K, fill: &Arc<Fill<H>>) {
        let mut fills = self.fills();
        if fills.get(key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            fills.remove(key);
        }
    }
}

/// The leader's handle. Dropping it without [`FillLeader::finish`] fails the fill for followers.
pub struct FillLeader<K: Hash + Eq + Clone, H> {
    registry: FillRegistry<K, H>,
    key: K,
    fill: Arc<Fill<H>>,
    done: bool,
}

impl<K: Hash + Eq + Clone, H> FillLeader<K, H> {
    /// Publish the response head to followers.
    pub fn set_head(&self, head: Arc<H>) {
        self.fill.lock().head = Some(head);
        self.fill.bump();
    }

    /// Append a body chunk for followers.
    pub fn push(&self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.fill.lock().chunks.push(chunk);
        self.fill.bump();
    }

    /// A follower handle on this very fill (the leader's own client reads the body through it, so
    /// the fill goes on into the cache even if that client goes away).
    pub fn follower(&self) -> FillFollower<H> {
        FillFollower {
            fill: self.fill.clone(),
            rx: self.fill.version.subscribe(),
            next: 0,
        }
    }

    /// Whether the key was invalidated since this fill started (see [`FillRegistry::poison`]).
    pub fn is_poisoned(&self) -> bool {
        self.fill.lock().poisoned
    }

    /// How many followers joined so far.
    pub fn followers(&self) -> usize {
        self.fill.lock().followers
    }

    /// The body completed; followers finish reading. Call after storing the object so new requests
    /// find it in the store rather than starting a new fill.
    pub fn finish(mut self) {
        self.end(End::Complete);
    }

    /// The fetch failed; followers get [`FillError::LeaderFailed`].
    pub fn fail(mut self, why: FillFailure) {
        self.end(End::Failed(why));
    }

    /// The response cannot be shared; followers get [`FillError::Released`] and fetch on their own.
    pub fn release(mut self) {
        self.end(End::Released);
    }

    fn end(&mut self, end: End) {
        if self.done {
            return;
        }
        self.done = true;
        self.registry.remove(&self.key, &self.fill);
        self.fill.lock().end = Some(end);
        self.fill.bump();
    }
}

impl<K: Hash + Eq + Clone, H> Drop for FillLeader<K, H> {
    fn drop(&mut self) {
        if !self.done {
            self.end(End::Failed(FillFailure::LeaderGone));
        }
    }
}

/// A follower's handle: wait for the head, then read chunks in order.
pub struct FillFollower<H> {
    fill: Arc<Fill<H>>,
    rx: watch::Receiver<u64>,
    next: usize,
}

impl<H> FillFollower<H> {
    /// Wait for the leader's response head.
    pub async fn head(&mut self) -> Result<Arc<H>, FillError> {
        loop {
            self.rx.borrow_and_update();
            {
                let st = self.fill.lock();
                match &st.end {
                    Some(End::Failed(r)) => return Err(FillError::LeaderFailed(*r)),
                    Some(End::Released) => return Err(FillError::Released),
                    _ => {}
                }
                if let Some(h) = &st.head {
                    return Ok(h.clone());
                }
                if matches!(st.end, Some(End::Complete)) {
                    return Err(FillError::LeaderFailed(FillFailure::LeaderGone));
                }
            }
            if self.rx.changed().await.is_err() {
                return Err(FillError::LeaderFailed(FillFailure::LeaderGone));
            }
        }
    }

    /// The next body chunk; `None` at a clean end of the body.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, FillError>> {
        loop {
            self.rx.borrow_and_update();
            {
                let st = self.fill.lock();
                if let Some(c) = st.chunks.get(self.next) {
                    self.next += 1;
                    return Some(Ok(c.clone()));
                }
                match &st.end {
                    Some(End::Complete) => return None,
                    Some(End::Failed(r)) => return Some(Err(FillError::LeaderFailed(*r))),
                    Some(End::Released) => return Some(Err(FillError::Released)),
                    None => {}
                }
            }
            if self.rx.changed().await.is_err() {
                return Some(Err(FillError::LeaderFailed(FillFailure::LeaderGone)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    type Reg = FillRegistry<String, u16>;

    fn leader(j: Joined<String, u16>) -> FillLeader<String, u16> {
        match j {
            Joined::Leader(l) => l,
            _ => panic!("expected leader"),
        }
    }
    fn follower(j: Joined<String, u16>) -> FillFollower<u16> {
        match j {
            Joined::Follower(f) => f,
            _ => panic!("expected follower"),
        }
    }

    #[tokio::test]
    async fn one_leader_many_followers_stream() {
        let reg = Reg::new();
        let k = "a".to_string();
        let now = Instant::now();
        let l = leader(reg.join(&k, now));
        let mut fs: Vec<_> = (0..50).map(|_| follower(reg.join(&k, now))).collect();
        assert_eq!(l.followers(), 50);
        let tasks: Vec<_> = fs
            .drain(..)
            .map(|mut f| {
                tokio::spawn(async move {
                    let h = f.head().await.unwrap();
                    let mut body = Vec::new();
                    while let Some(c) = f.next_chunk().await {
                        body.extend_from_slice(&c.unwrap());
                    }
                    (*h, body)
                })
            })
            .collect();
        l.set_head(Arc::new(200));
        for i in 0..10u8 {
            l.push(Bytes::from(vec![i; 100]));
            tokio::task::yield_now().await;
        }
        l.finish();
        for t in tasks {
            let (h, body) = t.await.unwrap();
            assert_eq!(h, 200);
            assert_eq!(body.len(), 1000);
            assert_eq!(body[999], 9);
        }
        assert_eq!(reg.in_flight(), 0);
        // next join after finish leads a new fill
        let _l2 = leader(reg.join(&k, now));
    }

    #[tokio::test]
    async fn followers_receive_chunks_before_the_end() {
        let reg = Reg::new();
        let k = "slow".to_string();
        let l = leader(reg.join(&k, Instant::now()));
        let mut f = follower(reg.join(&k, Instant::now()));
        l.set_head(Arc::new(200));
        l.push(Bytes::from_static(b"first"));
        let c = tokio::time::timeout(Duration::from_secs(1), f.next_chunk())
            .await
            .expect("chunk must arrive before the fill ends");
        assert_eq!(c.unwrap().unwrap(), Bytes::from_static(b"first"));
        drop(l);
    }

    #[tokio::test]
    async fn dropped_leader_fails_followers_and_frees_key() {
        let reg = Reg::new();
        let k = "x".to_string();
        let l = leader(reg.join(&k, Instant::now()));
        let mut f = follower(reg.join(&k, Instant::now()));
        drop(l);
        assert!(matches!(f.head().await, Err(FillError::LeaderFailed(_))));
        // a follower re-joining becomes the new leader
        let _l = leader(reg.join(&k, Instant::now()));
    }

    #[tokio::test]
    async fn failure_mid_body_is_reported() {
        let reg = Reg::new();
        let k = "y".to_string();
        let l = leader(reg.join(&k, Instant::now()));
        let mut f = follower(reg.join(&k, Instant::now()));
        l.set_head(Arc::new(200));
        l.push(Bytes::from_static(b"part"));
        l.fail(FillFailure::BodyFailed);
        assert_eq!(
            f.head().await.unwrap_err(),
            FillError::LeaderFailed(FillFailure::BodyFailed)
        );
    }

    #[tokio::test]
    async fn release_and_pass() {
        let reg = Reg::new();
        let k = "p".to_string();
        let now = Instant::now();
        let l = leader(reg.join(&k, now));
        let mut f = follower(reg.join(&k, now));
        l.release();
        assert_eq!(f.head().await.unwrap_err(), FillError::Released);
        reg.mark_pass(k.clone(), now + Duration::from_secs(10));
        assert!(matches!(reg.join(&k, now), Joined::Pass));
        assert!(matches!(
            reg.join(&k, now + Duration::from_secs(11)),
            Joined::Leader(_)
        ));
    }

    #[tokio::test]
    async fn poison_marks_the_fill_and_frees_the_key() {
        let reg = Reg::new();
        let k = "inv".to_string();
        let l = leader(reg.join(&k, Instant::now()));
        assert!(!l.is_poisoned());
        reg.poison(&k);
        assert!(l.is_poisoned());
        // A new request after the invalidation starts its own fill.
        let l2 = leader(reg.join(&k, Instant::now()));
        assert!(!l2.is_poisoned());
        l.finish();
        // The poisoned leader finishing does not remove the new fill.
        assert_eq!(reg.in_flight(), 1);
        drop(l2);
    }

    #[tokio::test]
    async fn late_joiner_replays_earlier_chunks() {
        let reg = Reg::new();
        let k = "late".to_string();
        let l = leader(reg.join(&k, Instant::now()));
        l.set_head(Arc::new(200));
        l.push(Bytes::from_static(b"ab"));
        l.push(Bytes::from_static(b"cd"));
        let mut f = follower(reg.join(&k, Instant::now()));
        l.push(Bytes::from_static(b"ef"));
        l.finish();
        let mut body = Vec::new();
        f.head().await.unwrap();
        while let Some(c) = f.next_chunk().await {
            body.extend_from_slice(&c.unwrap());
        }
        assert_eq!(body, b"abcdef");
    }
}
