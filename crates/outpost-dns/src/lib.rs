//! Outpost's `dns` role: the CDN's authoritative GeoDNS. It answers A/AAAA for every tenant
//! hostname (and `<hostname>.<zone>`, what tenants CNAME to) with the nearest healthy PoP for
//! the client, using the RFC 7871 client subnet when the query has one and the resolver's
//! address otherwise, a MaxMind-format GeoIP database for the country, and the topology's
//! region coordinates for distance. PoPs are health-checked; weights and drain flags shed load.
//!
//! Layers: [`countries`] and [`steer`] are pure (ranking and choice), [`geo`] reads the GeoIP
//! file, [`answer`] turns one question into one reply, [`health`] probes the edges, and
//! [`server`] is the hickory-server shell with metrics and `/explain`.

pub mod answer;
pub mod countries;
pub mod geo;
pub mod health;
pub mod server;
pub mod steer;

pub use server::{parse_subnet, start, ControlWatch, DnsNode, RunningDns, StartError};
