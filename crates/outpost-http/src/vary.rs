//! `Vary` (RFC 9110 §12.5.5) and the secondary cache key it implies (RFC 9111
//! §4.1). Selecting header values are normalised as §4.1 allows ("by adding or
//! removing whitespace ..., combining multiple field lines ..., normalizing both
//! header field values in a way that is known to have identical semantics"),
//! plus deliberate content-negotiation bucketing for Accept-Encoding and
//! Accept-Language so variants do not fragment.
//!
//! Bucketing is only correct if the proxy forwards the *bucketed* value
//! upstream (see [`normalised_accept_encoding`]): the stored variant must be
//! the one the bucket stands for.

use http::header::{HeaderName, ACCEPT_ENCODING, ACCEPT_LANGUAGE, VARY};
use http::HeaderMap;

use crate::lex;

/// Parsed `Vary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// No Vary, or only empty members.
    None,
    /// `*` anywhere (or an unparsable member): the response can never be matched.
    Star,
    /// Field names, sorted, deduplicated, lower-case.
    Fields(Vec<HeaderName>),
}

/// Parse every `Vary` line. An invalid member (not a token) is treated like `*`:
/// the cache cannot tell what the response depends on.
pub fn parse(h: &HeaderMap) -> Vary {
    let mut names: Vec<HeaderName> = Vec::new();
    for m in lex::split_all(h.get_all(VARY)) {
        if m == b"*" {
            return Vary::Star;
        }
        if !lex::is_token(m) {
            return Vary::Star;
        }
        match HeaderName::from_bytes(m) {
            Ok(n) => names.push(n),
            Err(_) => return Vary::Star,
        }
    }
    if names.is_empty() {
        return Vary::None;
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Vary::Fields(names)
}

/// Normalised secondary key material for the request's values of `fields`, e.g. "accept-encoding=br|accept-language=en".
/// Accept-Encoding is normalised to one of "br", "gzip", "identity" (best supported token with q>0, br > gzip > identity);
/// Accept-Language to the primary tag of the highest-q entry lower-cased ("en", "fr", "*"); other headers: values joined with ", ", whitespace-trimmed.
/// An absent header is distinct from an empty one.
///
/// Details: fields are sorted and deduplicated first, so the order of `fields`
/// does not matter. An absent header renders as the bare name (`foo`), a
/// present one as `foo=value`. For other headers every list member is trimmed,
/// so `1,2`, ` 1, 2 ` and two lines `1` / `2` are one key. When several
/// Accept-Language entries share the highest q, all their primary tags are kept,
/// sorted (`de,en`), so `en, de` and `de, en` match but `en` alone does not.
/// `%`, `|` and bytes outside visible ASCII are percent-encoded so values cannot
/// forge separators.
pub fn variance_key(fields: &[HeaderName], req: &HeaderMap) -> String {
    let mut names: Vec<&HeaderName> = fields.iter().collect();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    let mut out = String::new();
    for (i, name) in names.into_iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        out.push_str(name.as_str());
        if !req.contains_key(name) {
            continue;
        }
        out.push('=');
        let value = if name == ACCEPT_ENCODING {
            normalised_accept_encoding(req)
                .unwrap_or("identity")
                .to_owned()
        } else if name == ACCEPT_LANGUAGE {
            normalised_accept_language(req).unwrap_or_default()
        } else {
            let members = lex::split_all(req.get_all(name));
            let mut joined = Vec::new();
            for (j, m) in members.iter().enumerate() {
                if j > 0 {
                    joined.extend_from_slice(b", ");
                }
                joined.extend_from_slice(m);
            }
            String::from_utf8_lossy(&joined).into_owned()
        };
        escape_into(&mut out, value.as_bytes());
    }
    out
}

fn escape_into(out: &mut String, v: &[u8]) {
    for &b in v {
        if ((0x21..=0x7e).contains(&b) && b != b'%' && b != b'|') || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The content coding bucket for the request (RFC 9110 §12.5.3): `"br"`,
/// `"gzip"` or `"identity"` — the best of those with q>0, explicitly or via `*`.
/// `None` when the request has no Accept-Encoding. Forward exactly this value
/// upstream (as `Accept-Encoding: br` etc.) when the key buckets on it.
pub fn normalised_accept_encoding(req: &HeaderMap) -> Option<&'static str> {
    if !req.contains_key(ACCEPT_ENCODING) {
        return None;
    }
    let mut br: Option<u16> = None;
    let mut gzip: Option<u16> = None;
    let mut star: Option<u16> = None;
    for m in lex::split_all(req.get_all(ACCEPT_ENCODING)) {
        let (coding, q) = lex::split_weight(m);
        let slot = if coding.eq_ignore_ascii_case(b"br") {
            &mut br
        } else if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
            &mut gzip
        } else if coding == b"*" {
            &mut star
        } else {
            continue;
        };
        // The most specific (and, for repeats, the lowest) weight wins.
        *slot = Some(slot.map_or(q, |prev| prev.min(q)));
    }
    let acceptable = |explicit: Option<u16>| explicit.or(star).is_some_and(|q| q > 0);
    Some(if acceptable(br) {
        "br"
    } else if acceptable(gzip) {
        "gzip"
    } else {
        "identity"
    })
}

/// The language bucket for the request (RFC 9110 §12.5.4): the sorted, lower-case
/// primary subtags of the entries with the highest q (>0), comma-joined; `*`
/// stays `*`. `Some("")` when nothing is acceptable; `None` when absent.
pub fn normalised_accept_language(req: &HeaderMap) -> Option<String> {
    if !req.contains_key(ACCEPT_LANGUAGE) {
        return None;
    }
    let mut best_q = 0u16;
    let mut best: Vec<String> = Vec::new();
    for m in lex::split_all(req.get_all(ACCEPT_LANGUAGE)) {
        let (range, q) = lex::split_weight(m);
        if q == 0 {
            continue;
        }
        let primary = range.split(|&b| b == b'-').next().unwrap_or(&[]);
        let valid = primary == b"*"
            || (!primary.is_empty()
                && primary.len() <= 8
                && primary.iter().all(u8::is_ascii_alphabetic));
        if !valid {
            continue;
        }
        let tag = String::from_utf8_lossy(primary).to_ascii_lowercase();
        if q > best_q {
            best_q = q;
            best.clear();
        }
        if q == best_q {
            best.push(tag);
        }
    }
    best.sort();
    best.dedup();
    Some(best.join(","))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http::HeaderValue;

    use crate::test_util::headers;

    fn names(v: &[&str]) -> Vec<HeaderName> {
        v.iter()
            .map(|s| HeaderName::from_bytes(s.as_bytes()).unwrap())
            .collect()
    }

    #[test]
    fn parse_table() {
        let cases: Vec<(Vec<&str>, Vary)> = vec![
            (vec![], Vary::None),
            (vec![""], Vary::None),
            (vec![" , "], Vary::None),
            (vec!["*"], Vary::Star),
            (vec!["*, *"], Vary::Star),
            (vec!["*", "*"], Vary::Star),
            (vec![", *"], Vary::Star),
            (vec!["", "*"], Vary::Star),
            (vec!["*, Foo"], Vary::Star),
            (vec!["Foo, *"], Vary::Star),
            (vec!["Foo bar"], Vary::Star),
            (vec!["Foo"], Vary::Fields(names(&["foo"]))),
            (
                vec!["Foo, Bar", "foo"],
                Vary::Fields(names(&["bar", "foo"])),
            ),
            (
                vec!["Foo, Bar, Baz"],
                Vary::Fields(names(&["bar", "baz", "foo"])),
            ),
            (
                vec!["accept-encoding,ACCEPT-LANGUAGE"],
                Vary::Fields(names(&["accept-encoding", "accept-language"])),
            ),
        ];
        for (lines, want) in cases {
            let pairs: Vec<(&str, &str)> = lines.iter().map(|v| ("vary", *v)).collect();
            assert_eq!(parse(&headers(&pairs)), want, "{lines:?}");
        }
    }

    fn key(fields: &[&str], req: &[(&str, &str)]) -> String {
        variance_key(&names(fields), &headers(req))
    }

    #[test]
    fn key_generic() {
        assert_eq!(key(&["foo"], &[("foo", "1")]), "foo=1");
        assert_eq!(key(&["foo"], &[]), "foo");
        assert_eq!(key(&["foo"], &[("foo", "")]), "foo=");
        assert_ne!(key(&["foo"], &[]), key(&["foo"], &[("foo", "")]));
        assert_ne!(
            key(&["foo"], &[("foo", "1")]),
            key(&["foo"], &[("foo", "2")])
        );
        // vary-normalise-combine / -space.
        assert_eq!(
            key(&["foo"], &[("foo", "1, 2")]),
            key(&["foo"], &[("foo", "1"), ("foo", "2")])
        );
        assert_eq!(
            key(&["foo"], &[("foo", "1,2")]),
            key(&["foo"], &[("foo", " 1, 2 ")])
        );
        // Order of fields doesn't matter; headers not listed are ignored.
        assert_eq!(
            key(
                &["foo", "bar"],
                &[("foo", "1"), ("bar", "abc"), ("other", "2")]
            ),
            key(
                &["bar", "foo", "foo"],
                &[("bar", "abc"), ("foo", "1"), ("other", "3")]
            )
        );
        assert_eq!(
            key(&["bar", "baz", "foo"], &[("foo", "1"), ("baz", "789")]),
            "bar|baz=789|foo=1"
        );
        assert_ne!(
            key(&["foo", "bar"], &[("foo", "1"), ("bar", "abc4")]),
            key(&["foo", "bar"], &[("foo", "1"), ("bar", "abc")])
        );
        // Separator forging is impossible.
        assert_eq!(key(&["foo"], &[("foo", "a|bar=b%")]), "foo=a%7Cbar=b%25");
        let mut h = HeaderMap::new();
        h.insert("foo", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        let k = variance_key(&names(&["foo"]), &h);
        assert!(k.is_ascii());
        assert_eq!(key(&[], &[("foo", "1")]), "");
    }

    #[test]
    fn accept_encoding() {
        let cases: &[(&[&str], &str)] = &[
            (&["gzip, deflate, br"], "br"),
            (&["br;q=0, gzip"], "gzip"),
            (&["gzip;q=0.5, br;q=0.1"], "br"),
            (&["deflate"], "identity"),
            (&[""], "identity"),
            (&["*"], "br"),
            (&["*;q=0, gzip"], "gzip"),
            (&["*, br;q=0"], "gzip"),
            (&["x-gzip"], "gzip"),
            (&["GZIP"], "gzip"),
            (&["identity;q=0"], "identity"),
            (&["gzip;q=bogus"], "identity"),
            (&["br", "gzip"], "br"),
            (&["br, br;q=0"], "identity"),
        ];
        for (lines, want) in cases {
            let pairs: Vec<(&str, &str)> = lines.iter().map(|v| ("accept-encoding", *v)).collect();
            assert_eq!(
                normalised_accept_encoding(&headers(&pairs)),
                Some(*want),
                "{lines:?}"
            );
            assert_eq!(
                key(&["accept-encoding"], &pairs),
                format!("accept-encoding={want}")
            );
        }
        assert_eq!(normalised_accept_encoding(&HeaderMap::new()), None);
        assert_eq!(key(&["accept-encoding"], &[]), "accept-encoding");
    }

    #[test]
    fn accept_language() {
        let cases: &[(&[&str], &str)] = &[
            (&["en"], "en"),
            (&["en-US,en;q=0.9,de;q=0.8"], "en"),
            (&["fr;q=0.5, de;q=1.0"], "de"),
            (&["en, de"], "de,en"),
            (&["de, en"], "de,en"),
            (&["eN, De"], "de,en"),
            (&[" en ,   de"], "de,en"),
            (&["en-GB, en-US"], "en"),
            (&["*"], "*"),
            (&["en;q=0"], ""),
            (&[""], ""),
            (&["12, en;q=0.5"], "en"),
            (&["en", "fr"], "en,fr"),
        ];
        for (lines, want) in cases {
            let pairs: Vec<(&str, &str)> = lines.iter().map(|v| ("accept-language", *v)).collect();
            assert_eq!(
                normalised_accept_language(&headers(&pairs)).as_deref(),
                Some(*want),
                "{lines:?}"
            );
        }
        assert_eq!(
            key(
                &["accept-language", "accept-encoding"],
                &[("accept-language", "en-GB"), ("accept-encoding", "br")]
            ),
            "accept-encoding=br|accept-language=en"
        );
        assert_eq!(normalised_accept_language(&HeaderMap::new()), None);
    }
}
