//! Outpost's control plane: tenants, config versions and purges kept in a durable store
//! (`store.rs`, SQLite) and sequenced into one log (`log.rs`), served over a REST API
//! (`api.rs`, `openapi.rs`), published to every node through a bus (`bus.rs`: in-process;
//! `nats.rs`: NATS JetStream) by the control service (`control.rs`), and applied on each node
//! by its agent (`agent.rs`) in order, once, with acknowledgements back for purge status.

pub mod agent;
pub mod api;
pub mod bus;
pub mod control;
pub mod log;
#[cfg(feature = "nats")]
pub mod nats;
pub mod openapi;
pub mod rollout;
pub mod store;

pub use bus::{Bus, BusError, InProcessBus};
pub use control::{start, CanaryOptions, Control, ControlOptions, RunningControl};
