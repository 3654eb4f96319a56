//! HTTP-date parsing (RFC 9110 §5.6.7), two ways:
//!
//! - [`parse_http_date_strict`], for `Expires` (RFC 9111 §5.3: an invalid date means "already
//!   expired", so what counts as valid matters): exactly the three formats of the grammar
//!   (IMF-fixdate, rfc850-date, asctime-date), each to its exact layout, with the one relaxation
//!   RFC 9111 §4.2 asks of caches (names and `GMT` matched case-insensitively) and the rfc850
//!   two-digit-year rule of §5.6.7 (more than 50 years in the future ⇒ the past century).
//! - [`parse_http_date`], for `Date`, `Last-Modified`, `If-Modified-Since` and `If-Range`, where
//!   §5.6.7 encourages robustness ("recipients of timestamp values are encouraged to be robust in
//!   parsing timestamps"): it tolerates wrong letter case, a missing comma, repeated spaces,
//!   dashes in place of spaces and `UTC`/`UT` for `GMT`.
//!
//! The weekday is never cross-checked against the date. Neither parser panics.

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
    to_time(year?, month?, day?, time?)
}

/// Parse one HTTP-date to the exact grammar of RFC 9110 §5.6.7 (names and `GMT`
/// case-insensitive, RFC 9111 §4.2). `now` resolves an rfc850 two-digit year: one that would be
/// more than 50 years after `now` is the most recent past year with those digits. `None` for
/// anything else: `UTC`, a missing comma, extra or missing spaces, dashes in the IMF form, a
/// two-digit year in the IMF form, a one-digit hour or day (except asctime's ` 6`), a zone other
/// than GMT.
pub fn parse_http_date_strict(v: &[u8], now: SystemTime) -> Option<SystemTime> {
    let (year, month, day, time) = match v.len() {
        // Sun, 06 Nov 1994 08:49:37 GMT
        29 if v[3] == b',' => {
            short_day_name(&v[0..3])?;
            sp(v, [4, 7, 11, 16, 25])?;
            let day = digits(&v[5..7])?;
            let month = month_abbrev(&v[8..11])?;
            let year = digits(&v[12..16])?;
            let time = time_of_day(&v[17..25])?;
            gmt(&v[26..29])?;
            (i64::from(year), month, day, time)
        }
        // Sun Nov  6 08:49:37 1994
        24 if v[3] == b' ' => {
            short_day_name(&v[0..3])?;
            sp(v, [3, 7, 10, 19, 19])?;
            let month = month_abbrev(&v[4..7])?;
            let day = match v[8] {
                b' ' => digits(&v[9..10])?,
                _ => digits(&v[8..10])?,
            };
            let time = time_of_day(&v[11..19])?;
            let year = digits(&v[20..24])?;
            (i64::from(year), month, day, time)
        }
        // Sunday, 06-Nov-94 08:49:37 GMT
        _ => {
            let comma = v.iter().position(|&b| b == b',')?;
            long_day_name(&v[..comma])?;
            let rest = &v[comma + 1..];
            if rest.len() != 23 || rest[0] != b' ' {
                return None;
            }
            let r = &rest[1..];
            if r[2] != b'-' || r[6] != b'-' {
                return None;
            }
            sp(r, [9, 18, 18, 18, 18])?;
            let day = digits(&r[0..2])?;
            let month = month_abbrev(&r[3..6])?;
            let yy = digits(&r[7..9])?;
            let time = time_of_day(&r[10..18])?;
            gmt(&r[19..22])?;
            (two_digit_year(yy, now), month, day, time)
        }
    };
    to_time(year, month, day, time)
}

/// `b' '` at each of these offsets.
fn sp<const N: usize>(v: &[u8], at: [usize; N]) -> Option<()> {
    at.iter().all(|&i| v.get(i) == Some(&b' ')).then_some(())
}

/// A fixed-width run of ASCII digits.
fn digits(v: &[u8]) -> Option<u32> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u32, |acc, &b| {
        acc.checked_mul(10)?.checked_add(u32::from(b - b'0'))
    })
}

/// `HH:MM:SS`, two digits each (`00:00:00`–`23:59:60`).
fn time_of_day(v: &[u8]) -> Option<(u32, u32, u32)> {
    if v.len() != 8 || v[2] != b':' || v[5] != b':' {
        return None;
    }
    let (h, m, s) = (digits(&v[0..2])?, digits(&v[3..5])?, digits(&v[6..8])?);
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some((h, m, s.min(59)))
}

fn gmt(v: &[u8]) -> Option<()> {
    v.eq_ignore_ascii_case(b"GMT").then_some(())
}

fn short_day_name(v: &[u8]) -> Option<()> {
    const DAYS: [&[u8]; 7] = [b"mon", b"tue", b"wed", b"thu", b"fri", b"sat", b"sun"];
    DAYS.iter().any(|d| v.eq_ignore_ascii_case(d)).then_some(())
}

fn long_day_name(v: &[u8]) -> Option<()> {
    const DAYS: [&[u8]; 7] = [
        b"monday",
        b"tuesday",
        b"wednesday",
        b"thursday",
        b"friday",
        b"saturday",
        b"sunday",
    ];
    DAYS.iter().any(|d| v.eq_ignore_ascii_case(d)).then_some(())
}

fn month_abbrev(v: &[u8]) -> Option<u32> {
    let lower = std::str::from_utf8(v).ok()?.to_ascii_lowercase();
    if lower.len() != 3 {
        return None;
    }
    month_number(&lower)
}

/// RFC 9110 §5.6.7: a two-digit year that "appears to be more than 50 years in the future" is
/// "the most recent year in the past that had the same last two digits".
fn two_digit_year(yy: u32, now: SystemTime) -> i64 {
    let now_year = year_of(now);
    let mut y = now_year - now_year.rem_euclid(100) + i64::from(yy);
    if y > now_year + 50 {
        y -= 100;
    }
    y
}

/// The proleptic Gregorian year of `t` (H. Hinnant's `civil_from_days`).
fn year_of(t: SystemTime) -> i64 {
    let days = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs() / 86_400).unwrap_or(i64::MAX / 2),
        Err(e) => -i64::try_from(e.duration().as_secs() / 86_400 + 1).unwrap_or(i64::MAX / 2),
    };
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(m <= 2)
}

fn to_time(year: i64, month: u32, day: u32, (h, mi, se): (u32, u32, u32)) -> Option<SystemTime> {
    let secs = days_from_civil(year, month, day)?
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

    fn strict(v: &str) -> Option<i64> {
        // "now" in 2026, for the rfc850 two-digit-year rule.
        let now = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        parse_http_date_strict(v.as_bytes(), now).map(|t| match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap(),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap(),
        })
    }

    #[test]
    fn strict_accepts_exactly_the_three_formats() {
        let want = Some(784_111_777);
        assert_eq!(strict("Sun, 06 Nov 1994 08:49:37 GMT"), want);
        assert_eq!(strict("Sunday, 06-Nov-94 08:49:37 GMT"), want);
        assert_eq!(strict("Sun Nov  6 08:49:37 1994"), want);
        assert_eq!(
            strict("Sun Nov 16 08:49:37 1994"),
            secs("Sun, 16 Nov 1994 08:49:37 GMT")
        );
        // RFC 9111 §4.2: names and GMT case-insensitively.
        assert_eq!(strict("SUN, 06 NOV 1994 08:49:37 gmt"), want);
        assert_eq!(strict("sunday, 06-nov-94 08:49:37 Gmt"), want);
        // The weekday is not cross-checked.
        assert_eq!(strict("Mon, 06 Nov 1994 08:49:37 GMT"), want);
        assert_eq!(strict("Tue, 19 Jan 2038 03:14:08 GMT"), Some(2_147_483_648));
        assert!(strict("Fri, 31 Dec 9999 23:59:59 GMT").is_some());
        // A leap second is the second before.
        assert_eq!(strict("Sun, 06 Nov 1994 08:49:60 GMT"), Some(784_111_799));
    }

    #[test]
    fn strict_rfc850_years_follow_the_fifty_year_rule() {
        // Now is 2026: 76 is 2076 (50 years ahead), 77 would be more than 50 ⇒ 1977.
        assert_eq!(
            strict("Thursday, 01-Jan-70 00:00:00 GMT"),
            secs("Thu, 01 Jan 2070 00:00:00 GMT")
        );
        assert_eq!(
            strict("Wednesday, 01-Jan-76 00:00:00 GMT"),
            secs("Wed, 01 Jan 2076 00:00:00 GMT")
        );
        assert_eq!(
            strict("Saturday, 01-Jan-77 00:00:00 GMT"),
            secs("Sat, 01 Jan 1977 00:00:00 GMT")
        );
        assert_eq!(
            strict("Friday, 01-Jan-99 00:00:00 GMT"),
            secs("Fri, 01 Jan 1999 00:00:00 GMT")
        );
        assert_eq!(
            strict("Saturday, 01-Jan-00 00:00:00 GMT"),
            secs("Sat, 01 Jan 2000 00:00:00 GMT")
        );
        assert_eq!(year_of(UNIX_EPOCH), 1970);
        assert_eq!(year_of(UNIX_EPOCH - Duration::from_secs(1)), 1969);
    }

    #[test]
    fn strict_refuses_everything_else() {
        for v in [
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 02:01:18 AEST",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18  Aug 2050 02:01:18 GMT",
            "Thu,  18 Aug 2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thu, 8 Aug 2050 02:01:18 GMT",
            "Thu, 18 August 2050 02:01:18 GMT",
            "Thursday, 18 Aug 2050 02:01:18 GMT",
            "Thursday, 18-Aug-2050 02:01:18 GMT",
            "Thursday, 18-Aug-50 02:01:18",
            "Thursday,18-Aug-50 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 GMT ",
            " Thu, 18 Aug 2050 02:01:18 GMT",
            "Thu Aug 18 02:01:18 2050 GMT",
            "Thu Aug 18 02:01:18  2050",
            "Thu Aug  8 2:01:18 2050",
            "Thu, 31 Feb 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 24:00:00 GMT",
            "Thu, 18 Aug 2050 02:01 GMT",
            "Thu, 18 Aug 2050 02:01:18 +0000",
            "Thu, 18 Aug 2050 02-01-18 GMT",
            "0",
            "",
            "Thu, 18 Aug 2050 02:01:18 GMT\u{fc}",
        ] {
            assert_eq!(strict(v), None, "{v:?}");
        }
    }

    #[test]
    fn strict_agrees_with_lenient_where_both_accept() {
        for v in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Tue, 19 Jan 2038 03:14:08 GMT",
            "Wed, 31 Dec 1969 23:59:59 GMT",
        ] {
            assert_eq!(strict(v), secs(v), "{v}");
        }
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
            let _ = parse_http_date_strict(&bytes, SystemTime::UNIX_EPOCH);
        }

        #[test]
        fn never_panics_on_date_like(s in "[A-Za-z0-9 ,:-]{0,40}") {
            let _ = parse_http_date(s.as_bytes());
        }
    }
}
