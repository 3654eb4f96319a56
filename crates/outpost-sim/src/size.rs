//! Cache size specifications: `0.1%` (of the trace's unique keys in object mode, of its unique
//! bytes in byte mode), a plain count (`5000`: objects in object mode, bytes in byte mode), or a
//! byte size with a K/M/G/T suffix in powers of 1024 (`64M`, `1.5GiB`, as in the config file).

use std::fmt;
use std::str::FromStr;

use crate::error::SimError;

/// One cache size as written on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeSpec {
    /// The text as given (used as the label in tables and plots).
    pub label: String,
    /// What it means.
    pub kind: SizeKind,
}

/// A relative or absolute size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SizeKind {
    /// Percent of the working set (unique keys or unique bytes).
    Percent(f64),
    /// Objects (object mode) or bytes (byte mode).
    Absolute(u64),
}

impl SizeSpec {
    /// The capacity for a working set of `base` units: percentages are rounded to the nearest
    /// unit, and every capacity is at least 1.
    pub fn resolve(&self, base: u64) -> u64 {
        match self.kind {
            SizeKind::Percent(p) => ((base as f64 * p / 100.0).round() as u64).max(1),
            SizeKind::Absolute(n) => n.max(1),
        }
    }

    /// Parses a comma-separated list (`0.1%,1%,10%`).
    pub fn parse_list(text: &str) -> Result<Vec<SizeSpec>, SimError> {
        let specs = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<SizeSpec>, SimError>>()?;
        if specs.is_empty() {
            return Err(SimError::invalid("cache sizes", "no size given"));
        }
        Ok(specs)
    }
}

impl fmt::Display for SizeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

impl FromStr for SizeSpec {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let bad = |why: &str| SimError::invalid("cache size", format!("{text:?}: {why}"));
        if let Some(pct) = text.strip_suffix('%') {
            let p: f64 = pct.trim().parse().map_err(|_| bad("not a percentage"))?;
            if !(p.is_finite() && p > 0.0) {
                return Err(bad("the percentage must be positive"));
            }
            return Ok(SizeSpec {
                label: text.to_owned(),
                kind: SizeKind::Percent(p),
            });
        }
        let lower = text.to_ascii_lowercase();
        let digits_end = lower
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(lower.len());
        let (number, suffix) = lower.split_at(digits_end);
        let multiplier: u64 = match suffix.trim() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return Err(bad("expected N%, a count, or bytes with a K/M/G/T suffix")),
        };
        let value: f64 = number.parse().map_err(|_| bad("not a number"))?;
        let units = value * multiplier as f64;
        if !(units.is_finite() && units >= 1.0 && units < u64::MAX as f64) {
            return Err(bad("must be at least 1"));
        }
        Ok(SizeSpec {
            label: text.to_owned(),
            kind: SizeKind::Absolute(units as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_percentages_counts_and_byte_sizes() {
        let specs = SizeSpec::parse_list("0.1%, 1%,10%,5000,64M,1.5GiB,2k").unwrap();
        let kinds: Vec<SizeKind> = specs.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            vec![
                SizeKind::Percent(0.1),
                SizeKind::Percent(1.0),
                SizeKind::Percent(10.0),
                SizeKind::Absolute(5000),
                SizeKind::Absolute(64 << 20),
                SizeKind::Absolute(3 << 29),
                SizeKind::Absolute(2048),
            ]
        );
        assert_eq!(specs[1].label, "1%");
        assert_eq!(specs[0].resolve(123_456), 123);
        assert_eq!(specs[2].resolve(123_456), 12_346);
        assert_eq!(specs[0].resolve(10), 1, "never zero");
        for bad in ["", "abc", "-1%", "0%", "0", "12q", "1.2.3"] {
            assert!(SizeSpec::parse_list(bad).is_err(), "{bad}");
        }
    }
}
