//! HTTP-date parsing (RFC 9110 §5.6.7) for `Date`, `Expires`, `Last-Modified`,
//! `If-Modified-Since` and `If-Range`. Accepts IMF-fixdate, rfc850-date and
//! asctime-date, and — as §5.6.7 encourages ("recipients of timestamp values are
//! encouraged to be robust in parsing timestamps") — tolerates wrong letter case,
//! a missing comma, repeated spaces, dashes in place of spaces and `UTC`/`UT` for
//! `GMT`. The weekday is ignored (never cross-checked). Never panics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::HeaderName;
use http::HeaderMap;

/// Parse one HTTP-date. `None` when the bytes are not a recognisable date.
pub fn parse_http_date(v: &[u8]) -> Option<SystemTime> {
    if v.len() > 64 {
        return None;
    }
    let s = std::str::from_utf8(v).ok()?;
    let mut day: Option<u32> = None;
    let mut month: Option<u32> = None;
    let mut year: Option<i64> = None;
    let mut time: Option<(u32, u32, u32)> = None;
    let mut zone_seen = false;
    let mut weekday_seen = false;

    for tok in s.split([' ', '\t', ',', '-']).filter(|t| !t.is_empty()) {
        if zone_seen {
            // Nothing may follow the zone.
            return None;
        }
        if tok.contains(':') {
            if time.is_some() {
                return None;
            }
            time = Some(parse_time(tok)?);
        } else if tok.bytes().all(|b| b.is_ascii_digit()) {
            match (day, tok.len()) {
                (None, 1 | 2) => day = Some(tok.parse().ok()?),
                (Some(_), 2) if year.is_none() => {
                    // rfc850 two-digit year. §5.6.7 asks for the "50 years in the
                    // future" rule, which needs a clock; 70 is the conventional pivot.
                    let yy: i64 = tok.parse().ok()?;
                    year = Some(if yy < 70 { 2000 + yy } else { 1900 + yy });
                }
                (_, 4) if year.is_none() => year = Some(tok.parse().ok()?),
                _ => return None,
            }
        } else if tok.bytes().all(|b| b.is_ascii_alphabetic()) {
            let lower = tok.to_ascii_lowercase();
            if let Some(m) = month_number(&lower) {
                if month.is_some() {
                    return None;
                }
                month = Some(m);
            } else if is_weekday(&lower) {
                if weekday_seen || day.is_some() || month.is_some() {
                    return None;
                }
                weekday_seen = true;
            } else if matches!(lower.as_str(), "gmt" | "utc" | "ut") {
                zone_seen = true;
            } else {
                return None;
            }
        } else {
            return None;
        }
    }
    let (h, mi, se) = time?;
    let secs = days_from_civil(year?, month?, day?)?
        .checked_mul(86_400)?
        .checked_add(i64::from(h * 3600 + mi * 60 + se))?;
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

/// The single valid date carried by field `name`: absent, repeated with
/// different values, or unparsable ⇒ `None`.
pub fn header_date(h: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    match single_value(h, name)? {
        SingleValue::One(v) => parse_http_date(v),
        SingleValue::Conflicting => None,
    }
}

/// Outcome of reading a field that must appear once.
pub(crate) enum SingleValue<'a> {
    One(&'a [u8]),
    Conflicting,
}

/// A singleton field: `None` if absent; repeated lines with identical values are
/// accepted (a harmless duplication), differing values are `Conflicting`.
pub(crate) fn single_value<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<SingleValue<'a>> {
    let mut it = h.get_all(name).iter();
    let first = it.next()?;
    if it.any(|v| v != first) {
        return Some(SingleValue::Conflicting);
    }
    Some(SingleValue::One(first.as_bytes()))
}

fn parse_time(tok: &str) -> Option<(u32, u32, u32)> {
    let mut parts = tok.split(':');
    let h = parts.next()?;
    let m = parts.next()?;
    let s = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let num = |p: &str, min_len: usize| -> Option<u32> {
        if p.len() < min_len || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let (h, m, s) = (num(h, 1)?, num(m, 2)?, num(s, 2)?);
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    // A leap second is folded onto the preceding second.
    Some((h, m, s.min(59)))
}

fn month_number(lower: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const LONG: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    MONTHS
        .iter()
        .position(|m| *m == lower)
        .or_else(|| LONG.iter().position(|m| *m == lower))
        .and_then(|i| u32::try_from(i + 1).ok())
}

fn is_weekday(lower: &str) -> bool {
    matches!(
        lower,
        "mon"
            | "tue"
            | "wed"
            | "thu"
            | "fri"
            | "sat"
            | "sun"
            | "monday"
            | "tuesday"
            | "wednesday"
            | "thursday"
            | "friday"
            | "saturday"
            | "sunday"
    )
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`), validating the day of month.
fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1600..=9999).contains(&y) {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if d == 0 || d > dim {
        return None;
    }
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn secs(v: &str) -> Option<i64> {
        parse_http_date(v.as_bytes()).map(|t| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap(),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap(),
        })
    }

    #[test]
    fn rfc_examples() {
        // RFC 9110 §5.6.7: the three formats of the same instant.
        let want = Some(784_111_777);
        assert_eq!(secs("Sun, 06 Nov 1994 08:49:37 GMT"), want);
        assert_eq!(secs("Sunday, 06-Nov-94 08:49:37 GMT"), want);
        assert_eq!(secs("Sun Nov  6 08:49:37 1994"), want);
        assert_eq!(secs("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
    }

    #[test]
    fn lenient_forms() {
        let want = secs("Thu, 18 Aug 2050 02:01:18 GMT");
        assert!(want.is_some());
        for v in [
            "THU, 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 AUG 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 gMT",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thursday, 18-Aug-50 02:01:18 GMT",
            "Thu Aug 18 02:01:18 2050",
            "Mon, 18 Aug 2050 02:01:18 GMT", // wrong weekday is ignored
            "  Thu, 18 Aug 2050 02:01:18 GMT ",
        ] {
            assert_eq!(secs(v), want, "{v}");
        }
        assert_eq!(
            secs("Thu, 18 Aug 2050 2:01:18 GMT"),
            secs("Thu, 18 Aug 2050 02:01:18 GMT")
        );
        // 32-bit rollover and far future.
        assert_eq!(secs("Tue 19 Jan 2038 03:14:08 GMT"), Some(2_147_483_648));
        assert!(secs("Sun 21 Nov 2286 04:46:39 GMT").is_some());
        // Before the epoch.
        assert_eq!(secs("Wed, 31 Dec 1969 23:59:59 GMT"), Some(-1));
    }

    #[test]
    fn invalid() {
        for v in [
            "",
            "0",
            "-1",
            "foo",
            "Thu, 18 Aug 2050 02:01:18 AEST",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 31 Feb 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 24:00:00 GMT",
            "Thu, 18 Aug 2050 02:01:18 GMT extra",
            "Thu, 18 Aug 205 02:01:18 GMT",
            "Thu, 18 Aug 2050",
            "Thu, 18 Aug 2050 02:01:18 GMT GMT",
            "Thu, 18 Aug Sep 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18:00 GMT",
            "Thu, 18 Aug 99999 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 GMT\u{fc}",
        ] {
            assert_eq!(secs(v), None, "{v:?}");
        }
        assert_eq!(parse_http_date(&[0xff, 0xfe]), None);
    }

    #[test]
    fn header_helpers() {
        let mut h = HeaderMap::new();
        let name = http::header::EXPIRES;
        assert!(header_date(&h, &name).is_none());
        h.append(&name, "Thu, 01 Jan 1970 00:00:10 GMT".parse().unwrap());
        assert!(header_date(&h, &name).is_some());
        h.append(&name, "Thu, 01 Jan 1970 00:00:10 GMT".parse().unwrap());
        assert!(
            header_date(&h, &name).is_some(),
            "identical duplicates accepted"
        );
        h.append(&name, "Thu, 01 Jan 1970 00:00:11 GMT".parse().unwrap());
        assert!(
            header_date(&h, &name).is_none(),
            "conflicting duplicates rejected"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = parse_http_date(&bytes);
        }

        #[test]
        fn never_panics_on_date_like(s in "[A-Za-z0-9 ,:-]{0,40}") {
            let _ = parse_http_date(s.as_bytes());
        }
    }
}
