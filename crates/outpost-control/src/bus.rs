//! The bus between the control plane and the nodes ([`Bus`]): the log stream (control → every
//! node, durable, one position per node, replayed to a node that reconnects) and the
//! acknowledgements (nodes → control). Two implementations: [`InProcessBus`] for `outpost up`
//! (every node in one process) and `NatsBus` (`nats.rs`, NATS JetStream) for separate processes
//! and machines. Delivery is at least once and in sequence order; consumers dedupe by sequence.

use crate::log::{Ack, Entry};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};

/// A boxed future (the bus is used as a trait object).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A bus failure (the server is down, a reply was malformed...).
#[derive(Debug, Clone, thiserror::Error)]
#[error("bus: {0}")]
pub struct BusError(pub String);

/// The log stream and the acknowledgements.
pub trait Bus: Send + Sync + 'static {
    /// Store `entry` in the log stream; returns once the bus holds it durably. Publishing the
    /// same sequence twice stores it once (a republish after a crash is harmless).
    fn publish(&self, entry: Entry) -> BoxFut<'_, Result<(), BusError>>;
    /// The entries for the durable consumer `node`, from the first it has not acknowledged, in
    /// sequence order. The receiver ends when the connection is lost: subscribe again.
    fn subscribe(&self, node: &str) -> BoxFut<'_, Result<mpsc::Receiver<Delivery>, BusError>>;
    /// Send a node's acknowledgement to the control plane (best effort: heartbeats repeat the
    /// applied position).
    fn ack(&self, ack: Ack) -> BoxFut<'_, Result<(), BusError>>;
    /// The acknowledgements every node sends.
    fn acks(&self) -> BoxFut<'_, Result<mpsc::UnboundedReceiver<Ack>, BusError>>;
    /// The sequence of the last entry in the log (0: empty).
    fn head(&self) -> BoxFut<'_, Result<u64, BusError>>;
    /// A short description for logs ("in-process", "nats://127.0.0.1:4222").
    fn describe(&self) -> String;
}

/// One delivered entry; [`Delivery::done`] moves the consumer's durable position past it.
pub struct Delivery {
    /// The entry.
    pub entry: Entry,
    done: Done,
}

enum Done {
    InProcess(Arc<Shared>, String),
    #[cfg(feature = "nats")]
    Nats(Box<async_nats::jetstream::Message>),
}

impl Delivery {
    /// An in-process delivery.
    fn in_process(entry: Entry, shared: Arc<Shared>, node: String) -> Self {
        Self {
            entry,
            done: Done::InProcess(shared, node),
        }
    }

    /// A JetStream delivery.
    #[cfg(feature = "nats")]
    pub(crate) fn nats(entry: Entry, msg: async_nats::jetstream::Message) -> Self {
        Self {
            entry,
            done: Done::Nats(Box::new(msg)),
        }
    }

    /// Acknowledge the entry to the bus: the consumer will not be given it again.
    pub async fn done(self) -> Result<(), BusError> {
        match self.done {
            Done::InProcess(shared, node) => {
                let mut pos = lock(&shared.positions);
                let p = pos.entry(node).or_insert(0);
                *p = (*p).max(self.entry.seq);
                Ok(())
            }
            #[cfg(feature = "nats")]
            Done::Nats(msg) => msg.ack().await.map_err(|e| BusError(e.to_string())),
        }
    }
}

#[derive(Default)]
struct Shared {
    entries: Mutex<BTreeMap<u64, Entry>>,
    positions: Mutex<HashMap<String, u64>>,
    ack_subscribers: Mutex<Vec<mpsc::UnboundedSender<Ack>>>,
    /// Nodes cut off the bus (a partition, for tests and drills).
    cut: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The bus of a CDN running in one process: the log in memory (the control store is the
/// durable copy and republishes what was not acknowledged), positions per node.
pub struct InProcessBus {
    shared: Arc<Shared>,
    last: watch::Sender<u64>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self {
            shared: Arc::default(),
            last: watch::channel(0).0,
        }
    }
}

impl InProcessBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cut `node` off the bus (`true`) or reconnect it: a cut node's subscription ends and it
    /// cannot subscribe or ack until reconnected. For partition drills.
    pub fn set_cut(&self, node: &str, cut: bool) {
        let mut c = lock(&self.shared.cut);
        c.retain(|n| n != node);
        if cut {
            c.push(node.to_string());
        }
        // Wake subscription tasks so a cut one notices.
        self.last.send_modify(|_| {});
    }

    fn is_cut(shared: &Shared, node: &str) -> bool {
        lock(&shared.cut).iter().any(|n| n == node)
    }
}

impl Bus for InProcessBus {
    fn publish(&self, entry: Entry) -> BoxFut<'_, Result<(), BusError>> {
        let seq = entry.seq;
        lock(&self.shared.entries).entry(seq).or_insert(entry);
        self.last.send_modify(|l| *l = (*l).max(seq));
        Box::pin(async { Ok(()) })
    }

    fn subscribe(&self, node: &str) -> BoxFut<'_, Result<mpsc::Receiver<Delivery>, BusError>> {
        let node = node.to_string();
        Box::pin(async move {
            if Self::is_cut(&self.shared, &node) {
                return Err(BusError(format!("{node} is cut off the bus")));
            }
            let (tx, rx) = mpsc::channel(64);
            let shared = self.shared.clone();
            let mut last = self.last.subscribe();
            tokio::spawn(async move {
                let mut cursor = lock(&shared.positions).get(&node).copied().unwrap_or(0);
                loop {
                    if Self::is_cut(&shared, &node) {
                        return;
                    }
                    let next: Vec<Entry> = lock(&shared.entries)
                        .range(cursor + 1..)
                        .map(|(_, e)| e.clone())
                        .collect();
                    for e in next {
                        cursor = e.seq;
                        let d = Delivery::in_process(e, shared.clone(), node.clone());
                        if tx.send(d).await.is_err() {
                            return;
                        }
                    }
                    if last.changed().await.is_err() {
                        return;
                    }
                }
            });
            Ok(rx)
        })
    }

    fn ack(&self, ack: Ack) -> BoxFut<'_, Result<(), BusError>> {
        Box::pin(async move {
            if Self::is_cut(&self.shared, &ack.node) {
                return Err(BusError(format!("{} is cut off the bus", ack.node)));
            }
            lock(&self.shared.ack_subscribers).retain(|s| s.send(ack.clone()).is_ok());
            Ok(())
        })
    }

    fn acks(&self) -> BoxFut<'_, Result<mpsc::UnboundedReceiver<Ack>, BusError>> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.shared.ack_subscribers).push(tx);
        Box::pin(async { Ok(rx) })
    }

    fn head(&self) -> BoxFut<'_, Result<u64, BusError>> {
        let last = lock(&self.shared.entries).keys().next_back().copied();
        Box::pin(async move { Ok(last.unwrap_or(0)) })
    }

    fn describe(&self) -> String {
        "in-process".into()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::log::{Op, PurgeOp};
    use std::time::Duration;

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            issued_ms: 0,
            op: Op::Purge(PurgeOp {
                id: format!("pg_{seq}"),
                purge: outpost_proxy::admin::PurgeRequest {
                    everything: true,
                    ..Default::default()
                },
            }),
        }
    }

    async fn next(rx: &mut mpsc::Receiver<Delivery>) -> Option<Delivery> {
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn a_reconnecting_consumer_resumes_after_what_it_acknowledged() {
        let bus = InProcessBus::new();
        bus.publish(entry(1)).await.unwrap();
        bus.publish(entry(2)).await.unwrap();
        // A republish of the same sequence is stored once.
        bus.publish(entry(2)).await.unwrap();
        let mut rx = bus.subscribe("n1").await.unwrap();
        let d = next(&mut rx).await.unwrap();
        assert_eq!(d.entry.seq, 1);
        d.done().await.unwrap();
        let d = next(&mut rx).await.unwrap();
        assert_eq!(d.entry.seq, 2);
        // Not acknowledged: cut off, then back.
        bus.set_cut("n1", true);
        assert!(next(&mut rx).await.is_none(), "the subscription ends");
        assert!(bus.subscribe("n1").await.is_err());
        bus.publish(entry(3)).await.unwrap();
        bus.set_cut("n1", false);
        let mut rx = bus.subscribe("n1").await.unwrap();
        let seqs: Vec<u64> = [next(&mut rx).await.unwrap(), next(&mut rx).await.unwrap()]
            .into_iter()
            .map(|d| d.entry.seq)
            .collect();
        assert_eq!(
            seqs,
            vec![2, 3],
            "redelivered from the first unacknowledged, in order"
        );
        // Another node has its own position.
        let mut other = bus.subscribe("n2").await.unwrap();
        assert_eq!(next(&mut other).await.unwrap().entry.seq, 1);
    }

    #[tokio::test]
    async fn acks_reach_every_listener() {
        let bus = InProcessBus::new();
        let mut a = bus.acks().await.unwrap();
        let ack = Ack {
            node: "n".into(),
            seq: 1,
            applied: 1,
            at_ms: 5,
            error: None,
            detail: None,
            rollups: Vec::new(),
        };
        bus.ack(ack.clone()).await.unwrap();
        assert_eq!(a.recv().await.unwrap(), ack);
    }
}
