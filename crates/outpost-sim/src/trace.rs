//! Traces and the plain CSV trace format.
//!
//! One request per line, `time,key,size`:
//!
//! - `time`: an integer timestamp in the trace's own unit (the generator writes seconds); it is
//!   carried through but no policy uses it. A decimal value is truncated.
//! - `key`: an unsigned 64-bit integer object id, or any other text without a comma (a URL, a
//!   hash in hex), which is hashed to a 64-bit id.
//! - `size`: the object's size in bytes (0 is allowed; it weighs 1 in byte mode).
//!
//! A first line that does not parse as a request (such as the `time,key,size` header the writer
//! emits), blank lines and lines starting with `#` are skipped. Replay needs the whole trace in
//! memory (Belady looks ahead), 24 bytes per request.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use crate::error::SimError;
use crate::rng::mix64;

/// The header line the writer emits.
pub const CSV_HEADER: &str = "time,key,size";

/// One request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Request {
    /// Timestamp, in the trace's unit.
    pub time: u64,
    /// Object id.
    pub key: u64,
    /// Object size in bytes.
    pub size: u64,
}

/// A sequence of requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// The requests, in order.
    pub requests: Vec<Request>,
}

/// Working-set figures of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceStats {
    /// Requests.
    pub requests: u64,
    /// Distinct keys.
    pub unique_keys: u64,
    /// Sum of each distinct key's size (at its first request), like libCacheSim's working set.
    pub unique_bytes: u64,
    /// Sum of all requests' sizes.
    pub requested_bytes: u64,
}

impl Trace {
    /// A trace of these requests.
    pub fn new(requests: Vec<Request>) -> Self {
        Self { requests }
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether there are no requests.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Working-set figures.
    pub fn stats(&self) -> TraceStats {
        let mut seen: HashSet<u64> = HashSet::with_capacity(self.requests.len() / 4);
        let mut stats = TraceStats {
            requests: self.requests.len() as u64,
            ..TraceStats::default()
        };
        for r in &self.requests {
            stats.requested_bytes = stats.requested_bytes.saturating_add(r.size);
            if seen.insert(r.key) {
                stats.unique_keys += 1;
                stats.unique_bytes = stats.unique_bytes.saturating_add(r.size);
            }
        }
        stats
    }

    /// Reads a CSV trace (see the module docs for the format).
    pub fn read_csv(path: &Path) -> Result<Self, SimError> {
        let file = File::open(path).map_err(|e| SimError::io(path, e))?;
        let reader = BufReader::with_capacity(1 << 20, file);
        let mut requests = Vec::new();
        let mut first_content_line = true;
        for (idx, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| SimError::io(path, e))?;
            let text = line.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            match parse_line(text) {
                Ok(req) => requests.push(req),
                // A header (or any non-request first line) is skipped once.
                Err(_) if first_content_line => {}
                Err(message) => {
                    return Err(SimError::Parse {
                        path: path.to_path_buf(),
                        line: idx + 1,
                        message,
                    })
                }
            }
            first_content_line = false;
        }
        Ok(Self { requests })
    }

    /// Writes the trace as CSV with a `time,key,size` header.
    pub fn write_csv(&self, path: &Path) -> Result<(), SimError> {
        let file = File::create(path).map_err(|e| SimError::io(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let io = |e| SimError::io(path, e);
        writeln!(out, "{CSV_HEADER}").map_err(io)?;
        for r in &self.requests {
            writeln!(out, "{},{},{}", r.time, r.key, r.size).map_err(io)?;
        }
        out.flush().map_err(io)
    }
}

/// Parses one `time,key,size` line.
fn parse_line(text: &str) -> Result<Request, String> {
    let mut fields = text.split(',').map(str::trim);
    let (Some(time), Some(key), Some(size)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(format!("expected `time,key,size`, got {text:?}"));
    };
    if fields.next().is_some() {
        return Err(format!("expected 3 fields, got more in {text:?}"));
    }
    let time = parse_time(time).ok_or_else(|| format!("bad time {time:?}"))?;
    if key.is_empty() {
        return Err("empty key".to_owned());
    }
    let key = key.parse::<u64>().unwrap_or_else(|_| hash_text_key(key));
    let size = size
        .parse::<u64>()
        .map_err(|_| format!("bad size {size:?} (expected bytes as an integer)"))?;
    Ok(Request { time, key, size })
}

fn parse_time(text: &str) -> Option<u64> {
    if let Ok(t) = text.parse::<u64>() {
        return Some(t);
    }
    let f = text.parse::<f64>().ok()?;
    (f.is_finite() && f >= 0.0).then_some(f as u64)
}

/// A 64-bit id for a textual key: FNV-1a, then the SplitMix64 finalizer for avalanche.
pub fn hash_text_key(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A file of the system temp dir, named for this process (each test removes its own).
    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("outpost-sim-test-{}-{name}", std::process::id()))
    }

    #[test]
    fn csv_round_trip() {
        let trace = Trace::new(
            (0..1000u64)
                .map(|i| Request {
                    time: i / 10,
                    key: (i * 7919) % 313,
                    size: 1 + (i * 31) % 5000,
                })
                .collect(),
        );
        let path = temp_path("round-trip.csv");
        trace.write_csv(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("time,key,size\n0,0,1\n"),
            "{}",
            &text[..40]
        );
        let back = Trace::read_csv(&path).unwrap();
        assert_eq!(back, trace);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn reads_headerless_text_keys_comments_and_decimal_times() {
        let path = temp_path("loose.csv");
        std::fs::write(
            &path,
            "# a comment\n1.5,/a.js,100\n\n2, /b.css ,200\n3,/a.js,100\n4,42,7\n",
        )
        .unwrap();
        let t = Trace::read_csv(&path).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t.requests[0].time, 1);
        assert_eq!(t.requests[0].key, t.requests[2].key);
        assert_ne!(t.requests[0].key, t.requests[1].key);
        assert_eq!(t.requests[1].key, hash_text_key("/b.css"));
        assert_eq!(t.requests[3].key, 42);
        let s = t.stats();
        assert_eq!(
            (s.requests, s.unique_keys, s.unique_bytes, s.requested_bytes),
            (4, 3, 307, 407)
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn reports_the_line_of_a_bad_request() {
        let path = temp_path("bad.csv");
        std::fs::write(&path, "time,key,size\n1,2,3\n2,3,x\n").unwrap();
        match Trace::read_csv(&path) {
            Err(SimError::Parse { line, message, .. }) => {
                assert_eq!(line, 3);
                assert!(message.contains("bad size"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, "1,2\n").unwrap();
        // The only line is taken for a header; the trace is empty but readable.
        assert!(Trace::read_csv(&path).unwrap().is_empty());
        std::fs::write(&path, "1,2,3\n1,2\n").unwrap();
        assert!(matches!(
            Trace::read_csv(&path),
            Err(SimError::Parse { line: 2, .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(Trace::read_csv(&path), Err(SimError::Io { .. })));
    }
}
