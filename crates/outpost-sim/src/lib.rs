//! The Outpost cache simulator: synthetic trace generation, a plain CSV trace format, and replay
//! of traces through the storage engine's *own* admission/eviction code
//! ([`outpost_store::policy`]) plus Belady's offline optimum as the upper bound.
//!
//! - [`gen`]: seeded synthetic traces (Zipf popularity, one-hit wonders, scan bursts, object sizes
//!   from small assets to video segments).
//! - [`trace`]: the `time,key,size` CSV format, read and written.
//! - [`replay`]: hit ratios (object and byte) of one policy at one cache size, and sweeps over
//!   policies × sizes.
//! - [`belady`]: the offline optimum (next-use precomputation).
//! - [`hierarchy`]: N edges in front of one shield, per-tier hit ratios and the capacity maths
//!   (requests per second reaching each tier and the origin).
//! - [`report`]: the table, CSV and hand-written SVG plot.
//! - [`cli`]: the `outpost sim ...` subcommands.
//!
//! Everything is deterministic: the same trace (or generator seed) gives the same numbers.

pub mod belady;
pub mod cli;
pub mod error;
pub mod gen;
pub mod hierarchy;
pub mod node;
pub mod replay;
pub mod report;
pub mod rng;
pub mod size;
pub mod trace;

pub use error::SimError;
pub use gen::{GenConfig, SizeProfile};
pub use hierarchy::{next_tier_rps, HierarchyConfig, HierarchyReport, Routing};
pub use replay::{replay, sweep, CacheSize, Mode, RunResult, SimPolicy};
pub use trace::{Request, Trace};
