//! The `outpost sim ...` subcommands, ready to be nested in the `outpost` binary's CLI:
//!
//! ```text
//! outpost sim gen --zipf 0.8 --keys 100000 --requests 1000000 --scan-fraction 0.2 \
//!     --one-hit 0.1 --sizes mixed --seed 1 --out trace.csv
//! outpost sim run --trace trace.csv --sizes 0.1%,1%,10% \
//!     --policies lru,s3-fifo,w-tinylfu,belady --csv out.csv --svg out.svg [--bytes]
//! outpost sim hierarchy --trace trace.csv --edges 4 --edge-size 1% --shield-size 10% --rps 10000000
//! outpost sim capacity --rps 10000000 --hit-ratios 0.95,0.9
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use outpost_store::policy::PolicyKind;

use crate::error::SimError;
use crate::gen::{generate, GenConfig, SizeProfile};
use crate::hierarchy::{next_tier_rps, simulate, HierarchyConfig, Routing};
use crate::replay::{resolve_sizes, sweep, Mode, SimPolicy};
use crate::report;
use crate::size::SizeSpec;
use crate::trace::Trace;

/// `outpost sim` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// Generate a synthetic trace (Zipf objects or video titles, one-hit wonders, scan bursts,
    /// churn, a loop) as `time,key,size` CSV.
    Gen {
        /// Zipf exponent α of the catalogue's popularity.
        #[arg(long, default_value_t = 0.8)]
        zipf: f64,
        /// Catalogue size (distinct Zipf keys).
        #[arg(long, default_value_t = 100_000)]
        keys: u64,
        /// Number of requests.
        #[arg(long, default_value_t = 1_000_000)]
        requests: u64,
        /// Share of requests that are one-pass scans of fresh keys, in bursts.
        #[arg(long, default_value_t = 0.0)]
        scan_fraction: f64,
        /// Requests per scan burst.
        #[arg(long, default_value_t = 1_000)]
        scan_burst: u64,
        /// Share of requests for one-hit wonders (fresh keys, never requested again).
        #[arg(long = "one-hit", default_value_t = 0.0)]
        one_hit: f64,
        /// Object sizes: unit (1 byte), small (web assets), video (segments) or mixed.
        #[arg(long, default_value = "small")]
        sizes: String,
        /// Random seed; the same flags and seed give the same trace.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Requests per second of trace time (the `time` column).
        #[arg(long, default_value_t = 1_000.0)]
        rate: f64,
        /// Popularity churn: every N requests the ranking moves --churn-step ranks colder and
        /// that many new objects take the top (0: static popularity).
        #[arg(long, default_value_t = 0)]
        churn_every: u64,
        /// Ranks the popularity ranking moves per churn shift.
        #[arg(long, default_value_t = 1_000)]
        churn_step: u64,
        /// Video: titles (popularity by title, Zipf --zipf); viewers fetch each title's
        /// segments in order (0: plain objects).
        #[arg(long, default_value_t = 0)]
        video_titles: u64,
        /// Video: segments per title.
        #[arg(long, default_value_t = 150)]
        segments: u64,
        /// Video: concurrent viewing sessions.
        #[arg(long, default_value_t = 100)]
        viewers: u64,
        /// Share of requests walking a fixed loop of --loop-keys objects, over and over.
        #[arg(long, default_value_t = 0.0)]
        loop_fraction: f64,
        /// Objects in the loop.
        #[arg(long, default_value_t = 0)]
        loop_keys: u64,
        /// Output CSV file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Replay a trace through policies at several cache sizes; print object and byte hit ratios.
    Run {
        /// Trace CSV (`time,key,size`).
        #[arg(long)]
        trace: PathBuf,
        /// Cache sizes: N% of unique keys (or of unique bytes with --bytes), a count, or bytes
        /// with a K/M/G/T suffix.
        #[arg(long, default_value = "0.1%,1%,10%")]
        sizes: String,
        /// Policies: lru, s3-fifo, s3-tinylfu (the default), w-tinylfu, size-aware (the store's own
        /// code), belady (offline optimum), belady-admit (Belady that admits every miss, as
        /// libCacheSim does).
        #[arg(long, default_value = "lru,s3-fifo,w-tinylfu,s3-tinylfu,belady")]
        policies: String,
        /// Weigh objects by their size in bytes (default: every object weighs 1).
        #[arg(long)]
        bytes: bool,
        /// Write the results as CSV here.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Write an SVG plot of hit ratio against cache size here.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Plot title (default: the trace file name).
        #[arg(long)]
        title: Option<String>,
        /// Simulations to run in parallel.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
    /// Simulate N edges in front of one shield; per-tier hit ratios and requests per second.
    Hierarchy {
        /// Trace CSV (`time,key,size`).
        #[arg(long)]
        trace: PathBuf,
        /// Number of edges.
        #[arg(long, default_value_t = 4)]
        edges: usize,
        /// Cache size of each edge (same syntax as `run --sizes`).
        #[arg(long, default_value = "1%")]
        edge_size: String,
        /// Cache size of the shield.
        #[arg(long, default_value = "10%")]
        shield_size: String,
        /// Client requests per second, for the capacity maths.
        #[arg(long, default_value_t = 10_000_000.0)]
        rps: f64,
        /// Policy of both tiers (s3-tinylfu, w-tinylfu, s3-fifo, size-aware, lru).
        #[arg(long, default_value = "s3-tinylfu")]
        policy: String,
        /// Edge policy (overrides --policy for edges).
        #[arg(long)]
        edge_policy: Option<String>,
        /// Shield policy (overrides --policy for the shield).
        #[arg(long)]
        shield_policy: Option<String>,
        /// How requests are spread over edges: random (users over PoPs) or hash (keys sharded).
        #[arg(long, default_value = "random")]
        route: String,
        /// Seed for random routing.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Weigh objects by their size in bytes.
        #[arg(long)]
        bytes: bool,
    },
    /// Replay a trace through one node's two tiers, the store's own RAM tier in front of its SSD
    /// tier (segment files in a scratch directory); per-tier hit ratios.
    Node {
        /// Trace CSV (`time,key,size`).
        #[arg(long)]
        trace: PathBuf,
        /// RAM tier budget: N% of the trace's unique bytes, or bytes (K/M/G/T suffix).
        #[arg(long, default_value = "1%")]
        ram: String,
        /// SSD tier budget, as --ram.
        #[arg(long, default_value = "10%")]
        ssd: String,
        /// Policy of both tiers (s3-tinylfu, w-tinylfu, s3-fifo, size-aware, lru).
        #[arg(long, default_value = "s3-tinylfu")]
        policy: String,
        /// Divide object sizes and budgets by this; `auto` brings the working set to ~256 MiB.
        #[arg(long, default_value = "auto")]
        scale: String,
        /// Scratch directory for the segment files (emptied first, removed after).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Capacity maths only: requests per second reaching each tier of a chain of hit ratios.
    Capacity {
        /// Client requests per second.
        #[arg(long)]
        rps: f64,
        /// Hit ratio of each tier, outermost first (e.g. 0.95,0.9 for edge then shield).
        #[arg(long)]
        hit_ratios: String,
    },
}

/// Runs a subcommand, printing results on stdout and progress on stderr.
pub fn run(cmd: SimCommand) -> Result<(), String> {
    run_command(cmd).map_err(|e| e.to_string())
}

fn load(path: &Path) -> Result<Trace, SimError> {
    let started = Instant::now();
    let trace = Trace::read_csv(path)?;
    if trace.is_empty() {
        return Err(SimError::EmptyTrace);
    }
    let s = trace.stats();
    eprintln!(
        "trace {}: {} requests, {} unique keys, {} unique bytes (read in {:.1?})",
        path.display(),
        s.requests,
        s.unique_keys,
        s.unique_bytes,
        started.elapsed()
    );
    Ok(trace)
}

fn parse_kind(what: &'static str, text: &str) -> Result<PolicyKind, SimError> {
    text.parse::<PolicyKind>()
        .map_err(|e| SimError::invalid(what, e.to_string()))
}

fn mode_of(bytes: bool) -> Mode {
    if bytes {
        Mode::Bytes
    } else {
        Mode::Objects
    }
}

fn run_command(cmd: SimCommand) -> Result<(), SimError> {
    match cmd {
        SimCommand::Gen {
            zipf,
            keys,
            requests,
            scan_fraction,
            scan_burst,
            one_hit,
            sizes,
            seed,
            rate,
            churn_every,
            churn_step,
            video_titles,
            segments,
            viewers,
            loop_fraction,
            loop_keys,
            out,
        } => {
            let cfg = GenConfig {
                zipf,
                keys,
                requests,
                scan_fraction,
                scan_burst,
                one_hit_fraction: one_hit,
                sizes: sizes.parse::<SizeProfile>()?,
                seed,
                rate,
                churn_every,
                churn_step,
                video_titles,
                segments,
                viewers,
                loop_fraction,
                loop_keys,
            };
            let trace = generate(&cfg)?;
            trace.write_csv(&out)?;
            let s = trace.stats();
            println!(
                "wrote {}: {} requests, {} unique keys, {} unique bytes, {} requested bytes",
                out.display(),
                s.requests,
                s.unique_keys,
                s.unique_bytes,
                s.requested_bytes
            );
            Ok(())
        }
        SimCommand::Run {
            trace,
            sizes,
            policies,
            bytes,
            csv,
            svg,
            title,
            jobs,
        } => {
            let specs = SizeSpec::parse_list(&sizes)?;
            let policies = SimPolicy::parse_list(&policies)?;
            let mode = mode_of(bytes);
            let t = load(&trace)?;
            let sizes = resolve_sizes(&t, mode, &specs);
            let started = Instant::now();
            let results = sweep(&t, &policies, &sizes, mode, jobs)?;
            eprintln!("{} simulations in {:.1?}", results.len(), started.elapsed());
            print!("{}", report::table(&results));
            if let Some(path) = csv {
                report::write_file(&path, &report::csv(&results))?;
                eprintln!("wrote {}", path.display());
            }
            if let Some(path) = svg {
                let title = title.unwrap_or_else(|| {
                    let name = trace
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    format!("hit ratio vs cache size: {name}")
                });
                report::write_file(&path, &report::svg(&results, &title))?;
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        SimCommand::Node {
            trace,
            ram,
            ssd,
            policy,
            scale,
            dir,
        } => {
            let policy = parse_kind("--policy", &policy)?;
            let ram_spec: SizeSpec = ram.parse()?;
            let ssd_spec: SizeSpec = ssd.parse()?;
            let t = load(&trace)?;
            let unique = t.stats().unique_bytes;
            let scale = if scale == "auto" {
                crate::node::auto_scale(unique)
            } else {
                scale
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| {
                        SimError::invalid(
                            "--scale",
                            format!("{scale:?}: expected auto or an integer >= 1"),
                        )
                    })?
            };
            let dir = dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("outpost-sim-node-{}", std::process::id()))
            });
            let report = crate::node::replay_node(
                &t,
                &crate::node::NodeConfig {
                    ram_bytes: ram_spec.resolve(unique),
                    ssd_bytes: ssd_spec.resolve(unique),
                    policy,
                    scale,
                    dir,
                },
            )?;
            print!("{}", report.render());
            Ok(())
        }
        SimCommand::Hierarchy {
            trace,
            edges,
            edge_size,
            shield_size,
            rps,
            policy,
            edge_policy,
            shield_policy,
            route,
            seed,
            bytes,
        } => {
            let mode = mode_of(bytes);
            let edge_spec: SizeSpec = edge_size.parse()?;
            let shield_spec: SizeSpec = shield_size.parse()?;
            let default_kind = parse_kind("--policy", &policy)?;
            let edge_policy = match edge_policy {
                Some(p) => parse_kind("--edge-policy", &p)?,
                None => default_kind,
            };
            let shield_policy = match shield_policy {
                Some(p) => parse_kind("--shield-policy", &p)?,
                None => default_kind,
            };
            let routing: Routing = route.parse()?;
            let t = load(&trace)?;
            let capacities = resolve_sizes(&t, mode, &[edge_spec, shield_spec]);
            let (Some(edge), Some(shield)) = (capacities.first(), capacities.get(1)) else {
                return Err(SimError::invalid("sizes", "could not resolve"));
            };
            let cfg = HierarchyConfig {
                edges,
                edge_capacity: edge.capacity,
                shield_capacity: shield.capacity,
                edge_policy,
                shield_policy,
                routing,
                seed,
                mode,
                rps,
            };
            let report = simulate(&t, &cfg)?;
            print!("{}", report.render());
            Ok(())
        }
        SimCommand::Capacity { rps, hit_ratios } => {
            if !(rps.is_finite() && rps >= 0.0) {
                return Err(SimError::invalid("--rps", "must be a non-negative number"));
            }
            let ratios = hit_ratios
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|h| (0.0..=1.0).contains(h))
                        .ok_or_else(|| {
                            SimError::invalid("--hit-ratios", format!("{s:?} is not in [0, 1]"))
                        })
                })
                .collect::<Result<Vec<f64>, SimError>>()?;
            if ratios.is_empty() {
                return Err(SimError::invalid("--hit-ratios", "no hit ratio given"));
            }
            let mut incoming = rps;
            for (i, h) in ratios.iter().enumerate() {
                let out = next_tier_rps(incoming, *h);
                println!(
                    "tier {}: {:.0} rps in, hit ratio {:.2}% → {:.0} rps to the next tier",
                    i + 1,
                    incoming,
                    100.0 * h,
                    out
                );
                incoming = out;
            }
            println!("origin: {incoming:.0} rps");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: SimCommand,
    }

    #[test]
    fn gen_run_and_hierarchy_end_to_end() {
        let dir = std::env::temp_dir().join(format!("outpost-sim-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let (trace, out_csv, out_svg) = (s("t.csv"), s("out.csv"), s("out.svg"));
        let parse =
            |args: &[&str]| Cli::parse_from(std::iter::once("x").chain(args.iter().copied())).cmd;
        run(parse(&[
            "gen",
            "--keys",
            "1000",
            "--requests",
            "20000",
            "--scan-fraction",
            "0.2",
            "--scan-burst",
            "100",
            "--one-hit",
            "0.1",
            "--sizes",
            "mixed",
            "--out",
            &trace,
        ]))
        .unwrap();
        run(parse(&[
            "run", "--trace", &trace, "--sizes", "1%,10%", "--csv", &out_csv, "--svg", &out_svg,
            "--jobs", "2",
        ]))
        .unwrap();
        let csv = std::fs::read_to_string(&out_csv).unwrap();
        assert_eq!(csv.lines().count(), 1 + 5 * 2);
        assert!(std::fs::read_to_string(&out_svg)
            .unwrap()
            .contains("w-tinylfu"));
        run(parse(&[
            "hierarchy",
            "--trace",
            &trace,
            "--edges",
            "3",
            "--bytes",
        ]))
        .unwrap();
        run(parse(&[
            "capacity",
            "--rps",
            "10000000",
            "--hit-ratios",
            "0.95,0.9",
        ]))
        .unwrap();
        let err = run(parse(&["run", "--trace", &trace, "--policies", "arc"])).unwrap_err();
        assert!(err.contains("arc"), "{err}");
        assert!(run(parse(&["capacity", "--rps", "1", "--hit-ratios", "1.5"])).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
