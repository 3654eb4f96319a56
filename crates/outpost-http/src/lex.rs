//! Byte-level lexing shared by the field parsers: RFC 9110 §5.6 lists (`#rule`),
//! tokens, quoted strings and OWS. Everything here works on raw header bytes
//! (which may contain obs-text or garbage) and never panics.

/// RFC 9110 §5.6.2 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// RFC 9110 §5.6.2 `token` (non-empty run of tchar).
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// RFC 9110 §5.6.3 OWS is SP / HTAB.
pub(crate) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Trim leading and trailing OWS.
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_ows(b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or(&[])
}

/// Split one field line into list members at top-level commas (RFC 9110 §5.6.1),
/// respecting quoted strings with backslash escapes (§5.6.4). Members are
/// OWS-trimmed and empty members are dropped, as §5.6.1 requires recipients to do.
/// An unterminated quoted string extends to the end of the line.
pub(crate) fn split_list(v: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, &b) in v.iter().enumerate() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = false;
            }
            continue;
        }
        match b {
            b'"' => in_quotes = true,
            b',' => {
                push_member(&mut out, v.get(start..i).unwrap_or(&[]));
                start = i + 1;
            }
            _ => {}
        }
    }
    push_member(&mut out, v.get(start..).unwrap_or(&[]));
    out
}

fn push_member<'a>(out: &mut Vec<&'a [u8]>, m: &'a [u8]) {
    let m = trim_ows(m);
    if !m.is_empty() {
        out.push(m);
    }
}

/// Split every line of a (possibly multi-line) field into list members; multiple
/// field lines are equivalent to one comma-joined line (RFC 9110 §5.3).
pub(crate) fn split_all<'a>(
    values: impl IntoIterator<Item = &'a http::HeaderValue>,
) -> Vec<&'a [u8]> {
    values
        .into_iter()
        .flat_map(|v| split_list(v.as_bytes()))
        .collect()
}

/// Parse a quoted-string at the start of `s` (which must begin with `"`).
/// Returns the unescaped content and the remaining bytes after the closing quote,
/// or `None` if the string is not terminated.
pub(crate) fn parse_quoted(s: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    if s.first() != Some(&b'"') {
        return None;
    }
    let mut out = Vec::new();
    let mut escaped = false;
    for (i, &b) in s.iter().enumerate().skip(1) {
        if escaped {
            out.push(b);
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            return Some((out, s.get(i + 1..).unwrap_or(&[])));
        } else {
            out.push(b);
        }
    }
    None
}

/// Split `s` at the end of its leading token: `(token, rest)`.
pub(crate) fn take_token(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().position(|&b| !is_tchar(b)).unwrap_or(s.len());
    (s.get(..n).unwrap_or(&[]), s.get(n..).unwrap_or(&[]))
}

/// RFC 9111 §1.2.2 delta-seconds: a non-empty run of ASCII digits. Values larger
/// than 2^31 saturate at 2^31 ("the greatest integer it can represent ... MUST
/// consider the value to be 2147483648"). Leading zeros are fine.
pub(crate) fn parse_delta_seconds(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        v = v.saturating_mul(10).saturating_add(u64::from(b - b'0'));
        if v >= DELTA_SECONDS_MAX {
            return Some(DELTA_SECONDS_MAX);
        }
    }
    Some(v)
}

/// RFC 9111 §1.2.2: 2^31, the ceiling for every delta-seconds value.
pub const DELTA_SECONDS_MAX: u64 = 2_147_483_648;

/// Parse an RFC 9110 §12.4.2 qvalue into thousandths (0..=1000). Invalid ⇒ `None`.
pub(crate) fn parse_qvalue(s: &[u8]) -> Option<u16> {
    let (first, rest) = s.split_first()?;
    let int = match first {
        b'0' => 0u16,
        b'1' => 1000u16,
        _ => return None,
    };
    if rest.is_empty() {
        return Some(int);
    }
    let (dot, frac) = rest.split_first()?;
    if *dot != b'.' || frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u16 = 0;
    let mut scale: u16 = 100;
    for &d in frac {
        v += u16::from(d - b'0') * scale;
        scale /= 10;
    }
    if int == 1000 {
        // "1.000" is the only legal form with a leading 1.
        return if v == 0 { Some(1000) } else { None };
    }
    Some(v)
}

/// Split a list member `value;param;param` into the value and its `q` weight
/// (RFC 9110 §12.4.2); missing weight ⇒ 1000, invalid weight ⇒ 0 (not acceptable).
pub(crate) fn split_weight(member: &[u8]) -> (&[u8], u16) {
    let mut parts = member.split(|&b| b == b';');
    let value = trim_ows(parts.next().unwrap_or(&[]));
    let mut q = 1000u16;
    for p in parts {
        let p = trim_ows(p);
        if p.len() >= 2 && (p[0] == b'q' || p[0] == b'Q') && p[1] == b'=' {
            q = parse_qvalue(p.get(2..).unwrap_or(&[])).unwrap_or(0);
        }
    }
    (value, q)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn split_respects_quotes_and_empties() {
        let v = split_list(br#" a, ,b="x, y" ,, c="unterminated, d"#);
        assert_eq!(
            v,
            vec![&b"a"[..], &b"b=\"x, y\""[..], &b"c=\"unterminated, d"[..]]
        );
        assert!(split_list(b"").is_empty());
        assert!(split_list(b" , ,\t").is_empty());
        let v = split_list(br#"a="q\"," , b"#);
        assert_eq!(v, vec![&br#"a="q\",""#[..], &b"b"[..]]);
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(parse_delta_seconds(b"0"), Some(0));
        assert_eq!(parse_delta_seconds(b"003600"), Some(3600));
        assert_eq!(parse_delta_seconds(b"2147483647"), Some(2_147_483_647));
        assert_eq!(parse_delta_seconds(b"2147483648"), Some(DELTA_SECONDS_MAX));
        assert_eq!(
            parse_delta_seconds(b"99999999999999999999999999"),
            Some(DELTA_SECONDS_MAX)
        );
        assert_eq!(parse_delta_seconds(b""), None);
        assert_eq!(parse_delta_seconds(b"-1"), None);
        assert_eq!(parse_delta_seconds(b"1.0"), None);
        assert_eq!(parse_delta_seconds(b" 1"), None);
        assert_eq!(parse_delta_seconds("١".as_bytes()), None);
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue(b"1"), Some(1000));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        assert_eq!(parse_qvalue(b"1.001"), None);
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"0.5"), Some(500));
        assert_eq!(parse_qvalue(b"0.123"), Some(123));
        assert_eq!(parse_qvalue(b"0.1234"), None);
        assert_eq!(parse_qvalue(b"0."), Some(0));
        assert_eq!(parse_qvalue(b"2"), None);
        assert_eq!(parse_qvalue(b""), None);
        assert_eq!(split_weight(b"gzip;q=0.5"), (&b"gzip"[..], 500));
        assert_eq!(split_weight(b"gzip ; Q=0"), (&b"gzip"[..], 0));
        assert_eq!(split_weight(b"gzip;q=x"), (&b"gzip"[..], 0));
        assert_eq!(split_weight(b"br"), (&b"br"[..], 1000));
    }

    #[test]
    fn quoted() {
        assert_eq!(
            parse_quoted(br#""a\"b" rest"#),
            Some((b"a\"b".to_vec(), &b" rest"[..]))
        );
        assert_eq!(parse_quoted(br#""open"#), None);
        assert_eq!(parse_quoted(b"x"), None);
        assert_eq!(trim_ows(b"  \t "), b"");
        assert_eq!(trim_ows(b" a b "), b"a b");
    }
}
