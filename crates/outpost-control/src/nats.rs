//! The NATS JetStream bus: the log is the stream `OUTPOST_LOG` (subject `outpost.log`, file
//! storage, 1 or 3 replicas), each entry published with `Nats-Msg-Id` = its sequence so a
//! republish after a crash is dropped by the server's duplicate window; each node reads it
//! through a durable pull consumer named after the node (explicit acks, so a node that was away
//! replays what it missed). Acknowledgements to the control plane are core NATS messages on
//! `outpost.acks` (heartbeats repeat them). Works with nats-server 2.9 (Debian's package): only
//! plain streams and consumers are used, never the key-value helper.

use crate::bus::{BoxFut, Bus, BusError, Delivery};
use crate::log::{Ack, Entry};
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;

/// Stream name.
pub const STREAM: &str = "OUTPOST_LOG";
/// Subject of the log.
pub const LOG_SUBJECT: &str = "outpost.log";
/// Subject of the acknowledgements.
pub const ACK_SUBJECT: &str = "outpost.acks";

/// A NATS JetStream bus.
pub struct NatsBus {
    url: String,
    client: async_nats::Client,
    js: jetstream::Context,
    replicas: usize,
    /// The stream, once it has been made (or found): publishing then costs one round trip.
    stream: tokio::sync::OnceCell<stream::Stream>,
}

fn err(e: impl std::fmt::Display) -> BusError {
    BusError(e.to_string())
}

/// A consumer name NATS accepts (no `.`, `*`, `>` or whitespace).
fn consumer_name(node: &str) -> String {
    node.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl NatsBus {
    /// Connect to `urls` (comma-separated `nats://host:port`, the servers of one cluster).
    /// The client keeps reconnecting in the background when the servers go away; the stream is
    /// created on first use with `replicas` copies (3 on a 3-server cluster).
    pub async fn connect(urls: &str, replicas: usize) -> Result<Self, BusError> {
        let servers = urls
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BusError(format!("{urls}: {e}")))?;
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(Duration::from_secs(3)))
            .connect(servers)
            .await
            .map_err(err)?;
        let js = jetstream::new(client.clone());
        Ok(Self {
            url: urls.to_string(),
            client,
            js,
            replicas: replicas.max(1),
            stream: tokio::sync::OnceCell::new(),
        })
    }

    /// The log stream, made on first use (retried on the next call when that fails, e.g. while
    /// a cluster elects its leader).
    async fn stream(&self) -> Result<stream::Stream, BusError> {
        self.stream
            .get_or_try_init(|| self.make_stream())
            .await
            .cloned()
    }

    async fn make_stream(&self) -> Result<stream::Stream, BusError> {
        self.js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec![LOG_SUBJECT.into()],
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                duplicate_window: Duration::from_secs(600),
                ..Default::default()
            })
            .await
            .map_err(err)
    }
}

impl Bus for NatsBus {
    fn publish(&self, entry: Entry) -> BoxFut<'_, Result<(), BusError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&entry).map_err(err)?;
            self.stream().await?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", entry.seq.to_string().as_str());
            self.js
                .publish_with_headers(LOG_SUBJECT, headers, body.into())
                .await
                .map_err(err)?
                .await
                .map_err(err)?;
            Ok(())
        })
    }

    fn subscribe(&self, node: &str) -> BoxFut<'_, Result<mpsc::Receiver<Delivery>, BusError>> {
        let name = consumer_name(node);
        Box::pin(async move {
            let stream = self.stream().await?;
            let consumer: consumer::PullConsumer = stream
                .get_or_create_consumer(
                    &name,
                    consumer::pull::Config {
                        durable_name: Some(name.clone()),
                        ack_policy: consumer::AckPolicy::Explicit,
                        deliver_policy: consumer::DeliverPolicy::All,
                        ack_wait: Duration::from_secs(30),
                        ..Default::default()
                    },
                )
                .await
                .map_err(err)?;
            let mut messages = consumer
                .stream()
                .heartbeat(Duration::from_secs(1))
                .expires(Duration::from_secs(5))
                .messages()
                .await
                .map_err(err)?;
            let (tx, rx) = mpsc::channel(64);
            tokio::spawn(async move {
                while let Some(m) = messages.next().await {
                    let Ok(msg) = m else {
                        // Missed heartbeats or a lost connection: end, the consumer resubscribes.
                        return;
                    };
                    match serde_json::from_slice::<Entry>(&msg.payload) {
                        Ok(entry) => {
                            if tx.send(Delivery::nats(entry, msg)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "dropping a malformed log message");
                            let _ = msg.ack().await;
                        }
                    }
                }
            });
            Ok(rx)
        })
    }

    fn ack(&self, ack: Ack) -> BoxFut<'_, Result<(), BusError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&ack).map_err(err)?;
            self.client
                .publish(ACK_SUBJECT, body.into())
                .await
                .map_err(err)
        })
    }

    fn acks(&self) -> BoxFut<'_, Result<mpsc::UnboundedReceiver<Ack>, BusError>> {
        Box::pin(async move {
            let mut sub = self.client.subscribe(ACK_SUBJECT).await.map_err(err)?;
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    if let Ok(a) = serde_json::from_slice::<Ack>(&m.payload) {
                        if tx.send(a).is_err() {
                            return;
                        }
                    }
                }
            });
            Ok(rx)
        })
    }

    fn head(&self) -> BoxFut<'_, Result<u64, BusError>> {
        Box::pin(async move {
            let stream = self.stream().await?;
            match stream.get_last_raw_message_by_subject(LOG_SUBJECT).await {
                Ok(m) => Ok(serde_json::from_slice::<Entry>(&m.payload)
                    .map(|e| e.seq)
                    .unwrap_or(0)),
                // An empty stream has no last message.
                Err(e) if e.to_string().contains("no message found") => Ok(0),
                Err(e) => Err(err(e)),
            }
        })
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}
