//! PoP health for steering: every edge box is probed every `probe_interval` (`GET /healthz` on
//! its metrics listener, or a TCP connect to its listener when it has none), all boxes at once.
//! A refused connection marks a box down at once (nothing listens there: the process is gone);
//! timeouts and error statuses count towards `probe_fall`; `probe_rise` good probes bring it
//! back. Where a control plane runs, a box whose heartbeat it has not heard for
//! `heartbeat_stale` is held down too (a passive signal: the box may answer probes yet miss
//! purges and config). A PoP is up while at least one of its boxes is.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How a box is probed.
#[derive(Debug, Clone)]
pub enum Probe {
    /// `GET /healthz` on this `host:port`; 2xx is healthy.
    Http(String),
    /// A TCP connect to this `host:port`.
    Tcp(String),
}

/// One edge box.
#[derive(Debug)]
pub struct BoxHealth {
    /// Node name.
    pub name: String,
    /// How it is probed.
    pub probe: Probe,
    state: Mutex<BoxState>,
}

#[derive(Debug, Clone, Copy)]
struct BoxState {
    up: bool,
    fails: u32,
    oks: u32,
    stale: bool,
    last: Outcome,
}

/// A probe's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not probed yet.
    Unknown,
    /// Healthy answer.
    Ok,
    /// Connection refused: nothing listens.
    Refused,
    /// No answer in time.
    Timeout,
    /// An answer that is not 2xx, or a broken one.
    Bad,
}

impl Outcome {
    /// Name for metrics and explanations.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Unknown => "unknown",
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Bad => "bad-status",
        }
    }
}

/// Thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Probe period.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Failures (not refusals) to mark a box down.
    pub fall: u32,
    /// Successes to bring it back.
    pub rise: u32,
}

/// Health of every PoP's boxes.
#[derive(Debug)]
pub struct Health {
    /// PoP names (same order as the steering map).
    pub names: Vec<String>,
    /// Per PoP, its boxes.
    pub pops: Vec<Vec<BoxHealth>>,
    up: Vec<AtomicBool>,
    /// PoP state changes (up ↔ down), per PoP.
    pub changes: Vec<AtomicU64>,
    policy: Policy,
}

/// One box's state for explanations and `/healthz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BoxView {
    /// Node name.
    pub name: String,
    /// Counted up.
    pub up: bool,
    /// Last probe outcome.
    pub last: &'static str,
    /// Held down by the control plane's stale heartbeat.
    pub stale_heartbeat: bool,
}

impl Health {
    /// PoPs (name, boxes); every box starts up (the first probe round runs before serving).
    pub fn new(pops: Vec<(String, Vec<(String, Probe)>)>, policy: Policy) -> Self {
        let up = pops.iter().map(|_| AtomicBool::new(true)).collect();
        let changes = pops.iter().map(|_| AtomicU64::new(0)).collect();
        let names = pops.iter().map(|(n, _)| n.clone()).collect();
        let pops = pops
            .into_iter()
            .map(|(_, boxes)| {
                boxes
                    .into_iter()
                    .map(|(name, probe)| BoxHealth {
                        name,
                        probe,
                        state: Mutex::new(BoxState {
                            up: true,
                            fails: 0,
                            oks: 0,
                            stale: false,
                            last: Outcome::Unknown,
                        }),
                    })
                    .collect()
            })
            .collect();
        Self {
            names,
            pops,
            up,
            changes,
            policy,
        }
    }

    /// Take the state of boxes and PoPs that are also in `old` (a config reload must not make
    /// a down box look up, nor reset counters).
    pub fn carry_over(&self, old: &Health) {
        for (i, bs) in self.pops.iter().enumerate() {
            let Some(oi) = old.names.iter().position(|n| *n == self.names[i]) else {
                continue;
            };
            self.changes[i].store(old.changes[oi].load(Ordering::Relaxed), Ordering::Relaxed);
            for b in bs {
                if let Some(ob) = old.pops[oi].iter().find(|x| x.name == b.name) {
                    *lock(&b.state) = *lock(&ob.state);
                }
            }
            let any = bs.iter().any(|b| {
                let s = lock(&b.state);
                s.up && !s.stale
            });
            self.up[i].store(any, Ordering::Relaxed);
        }
    }

    /// PoP `i` is up.
    pub fn is_up(&self, i: usize) -> bool {
        self.up.get(i).is_some_and(|u| u.load(Ordering::Relaxed))
    }

    /// Every PoP's state, in map order.
    pub fn snapshot(&self) -> Vec<bool> {
        self.up.iter().map(|u| u.load(Ordering::Relaxed)).collect()
    }

    /// Boxes of PoP `i`.
    pub fn boxes(&self, i: usize) -> Vec<BoxView> {
        self.pops
            .get(i)
            .map(|bs| {
                bs.iter()
                    .map(|b| {
                        let s = lock(&b.state);
                        BoxView {
                            name: b.name.clone(),
                            up: s.up && !s.stale,
                            last: s.last.as_str(),
                            stale_heartbeat: s.stale,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Apply one probe outcome to a box (pure state machine; `probe_round` calls it).
    pub fn record(&self, pop: usize, b: usize, outcome: Outcome) {
        let Some(bx) = self.pops.get(pop).and_then(|bs| bs.get(b)) else {
            return;
        };
        {
            let mut s = lock(&bx.state);
            s.last = outcome;
            match outcome {
                Outcome::Ok => {
                    s.fails = 0;
                    s.oks = s.oks.saturating_add(1);
                    if !s.up && s.oks >= self.policy.rise {
                        s.up = true;
                    }
                }
                Outcome::Refused => {
                    s.oks = 0;
                    s.fails = s.fails.saturating_add(1);
                    s.up = false;
                }
                Outcome::Timeout | Outcome::Bad => {
                    s.oks = 0;
                    s.fails = s.fails.saturating_add(1);
                    if s.fails >= self.policy.fall {
                        s.up = false;
                    }
                }
                Outcome::Unknown => {}
            }
        }
        self.settle(pop);
    }

    /// Hold box `name` down (or release it) on the control plane's word.
    pub fn set_stale(&self, name: &str, stale: bool) {
        for (i, bs) in self.pops.iter().enumerate() {
            if let Some(bx) = bs.iter().find(|b| b.name == name) {
                lock(&bx.state).stale = stale;
                self.settle(i);
            }
        }
    }

    fn settle(&self, pop: usize) {
        let any = self.pops[pop].iter().any(|b| {
            let s = lock(&b.state);
            s.up && !s.stale
        });
        let was = self.up[pop].swap(any, Ordering::Relaxed);
        if was != any {
            self.changes[pop].fetch_add(1, Ordering::Relaxed);
            tracing::warn!(pop = %self.names[pop], up = any, "pop health changed");
        }
    }

    /// Probe every box once, concurrently, and record the outcomes.
    pub async fn probe_round(&self) {
        let mut set = tokio::task::JoinSet::new();
        for (i, bs) in self.pops.iter().enumerate() {
            for (j, b) in bs.iter().enumerate() {
                let probe = b.probe.clone();
                let timeout = self.policy.timeout;
                set.spawn(async move { (i, j, probe_once(&probe, timeout).await) });
            }
        }
        while let Some(r) = set.join_next().await {
            if let Ok((i, j, outcome)) = r {
                self.record(i, j, outcome);
            }
        }
    }

    /// Probe forever every `interval` (until the process ends).
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.policy.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.probe_round().await;
            }
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One probe.
pub async fn probe_once(probe: &Probe, timeout: Duration) -> Outcome {
    let (addr, http) = match probe {
        Probe::Http(a) => (a.as_str(), true),
        Probe::Tcp(a) => (a.as_str(), false),
    };
    let attempt = async {
        let mut s = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Outcome::Refused,
            Err(_) => return Outcome::Bad,
        };
        if !http {
            return Outcome::Ok;
        }
        let req = format!(
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: outpost-dns\r\nConnection: close\r\n\r\n"
        );
        if s.write_all(req.as_bytes()).await.is_err() {
            return Outcome::Bad;
        }
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            match s.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => return Outcome::Bad,
                Ok(k) => n += k,
            }
        }
        // "HTTP/1.1 200"
        let status = &buf[9..12];
        if buf.starts_with(b"HTTP/1.") && status[0] == b'2' {
            Outcome::Ok
        } else {
            Outcome::Bad
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(o) => o,
        Err(_) => Outcome::Timeout,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn health(fall: u32, rise: u32) -> Health {
        Health::new(
            vec![
                (
                    "a".into(),
                    vec![
                        ("a1".into(), Probe::Tcp("127.0.0.1:1".into())),
                        ("a2".into(), Probe::Tcp("127.0.0.1:1".into())),
                    ],
                ),
                (
                    "b".into(),
                    vec![("b1".into(), Probe::Tcp("127.0.0.1:1".into()))],
                ),
            ],
            Policy {
                interval: Duration::from_millis(10),
                timeout: Duration::from_millis(100),
                fall,
                rise,
            },
        )
    }

    #[test]
    fn a_pop_is_up_while_one_box_is() {
        let h = health(1, 1);
        h.record(0, 0, Outcome::Refused);
        assert!(h.is_up(0));
        h.record(0, 1, Outcome::Refused);
        assert!(!h.is_up(0));
        assert_eq!(h.changes[0].load(Ordering::Relaxed), 1);
        h.record(0, 1, Outcome::Ok);
        assert!(h.is_up(0));
        assert_eq!(h.changes[0].load(Ordering::Relaxed), 2);
    }

    #[test]
    fn refusals_are_immediate_timeouts_count_to_fall_and_rise_brings_back() {
        let h = health(3, 2);
        h.record(1, 0, Outcome::Timeout);
        h.record(1, 0, Outcome::Bad);
        assert!(h.is_up(1), "two failures of three");
        h.record(1, 0, Outcome::Ok);
        h.record(1, 0, Outcome::Timeout);
        h.record(1, 0, Outcome::Timeout);
        assert!(h.is_up(1), "the good probe reset the count");
        h.record(1, 0, Outcome::Timeout);
        assert!(!h.is_up(1));
        h.record(1, 0, Outcome::Ok);
        assert!(!h.is_up(1), "one of two");
        h.record(1, 0, Outcome::Ok);
        assert!(h.is_up(1));
        h.record(1, 0, Outcome::Refused);
        assert!(!h.is_up(1), "a refusal is at once");
    }

    #[test]
    fn a_reload_keeps_known_boxes_state() {
        let old = health(1, 1);
        old.record(1, 0, Outcome::Refused);
        assert!(!old.is_up(1));
        let new = health(1, 1);
        new.carry_over(&old);
        assert!(!new.is_up(1));
        assert!(new.is_up(0));
        assert_eq!(new.changes[1].load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_stale_heartbeat_holds_a_box_down() {
        let h = health(1, 1);
        h.set_stale("b1", true);
        assert!(!h.is_up(1));
        assert!(h.boxes(1)[0].stale_heartbeat);
        h.set_stale("b1", false);
        assert!(h.is_up(1));
    }

    #[tokio::test]
    async fn probes_tell_refused_ok_and_bad_apart() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let t = Duration::from_millis(500);
        assert_eq!(
            probe_once(&Probe::Tcp(closed.clone()), t).await,
            Outcome::Refused
        );
        assert_eq!(probe_once(&Probe::Http(closed), t).await, Outcome::Refused);
        let serve = |status: &'static str| async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap().to_string();
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    let mut b = [0u8; 512];
                    let _ = s.read(&mut b).await;
                    let _ = s
                        .write_all(
                            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                }
            });
            a
        };
        let ok = serve("200 OK").await;
        assert_eq!(probe_once(&Probe::Http(ok.clone()), t).await, Outcome::Ok);
        assert_eq!(probe_once(&Probe::Tcp(ok), t).await, Outcome::Ok);
        let draining = serve("503 Service Unavailable").await;
        assert_eq!(probe_once(&Probe::Http(draining), t).await, Outcome::Bad);
        // A listener that never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = silent.local_addr().unwrap().to_string();
        assert_eq!(
            probe_once(&Probe::Http(a), Duration::from_millis(100)).await,
            Outcome::Timeout
        );
    }
}
