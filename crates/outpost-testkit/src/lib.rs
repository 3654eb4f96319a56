//! outpost-testkit: helpers for Outpost's end-to-end tests (dev-only; never linked into the node).
//!
//! This crate owns the scriptable test origin ([`TestOrigin`], [`RouteSpec`], [`SeenRequest`]) that
//! records what an origin saw, the deliberately hand-written HTTP/1.1 client ([`http_get`],
//! [`http_request`], [`raw_request`]) that shows tests the exact bytes a client would get, a
//! settable clock ([`FakeClock`]) for pure tests, and [`ScratchDir`], a temp directory removed on
//! drop. The `bare_hyper` example is the benchmark ceiling.

mod client;
mod clock;
mod origin;
mod ports;
mod process;
mod scratch;

pub use client::{http_get, http_request, raw_request, SimpleResponse};
pub use clock::FakeClock;
pub use origin::{RouteSpec, SeenRequest, TestOrigin};
pub use ports::free_port;
pub use process::{wait_port, Proc};
pub use scratch::ScratchDir;
