//! Cache-Control directives (RFC 9111 §5.2) for requests and responses, plus the
//! targeted fields a CDN obeys instead of Cache-Control: CDN-Cache-Control
//! (RFC 9213) and Surrogate-Control (W3C Edge Architecture note).
//!
//! Parsing is lenient where RFC 9111 asks for it (§5.2: both token and
//! quoted-string argument forms, case-insensitive names, unknown extensions
//! ignored per §5.2.3) and conservative where values are broken: an invalid or
//! conflicting freshness value makes the response stale (§4.2.1), never fresher.

use http::header::{HeaderName, CACHE_CONTROL, PRAGMA};
use http::{HeaderMap, HeaderValue};

use crate::lex;

/// RFC 9213 CDN-Cache-Control field name.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
/// The field targeted at Outpost alone (RFC 9213 §2's convention of a CDN-specific field, like
/// `Akamai-Cache-Control`): it takes precedence over CDN-Cache-Control and is never forwarded.
pub const OUTPOST_CACHE_CONTROL: HeaderName = HeaderName::from_static("outpost-cache-control");
/// Surrogate-Control field name (W3C Edge Architecture 1.0).
pub const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");
/// Surrogate-Capability request field name (W3C Edge Architecture 1.0).
pub const SURROGATE_CAPABILITY: HeaderName = HeaderName::from_static("surrogate-capability");
/// The device token Outpost answers to in `Surrogate-Control: max-age=60;outpost`.
/// The proxy advertises it upstream as `Surrogate-Capability: outpost="Surrogate/1.0"`.
pub const SURROGATE_DEVICE_TOKEN: &str = "outpost";

/// Response directives (RFC 9111 §5.2.2, RFC 5861, RFC 8246).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseCacheControl {
    /// §5.2.2.1, saturated at 2^31. Invalid or conflicting values ⇒ `Some(0)` (stale).
    pub max_age: Option<u64>,
    /// §5.2.2.10, same rules as `max_age`.
    pub s_maxage: Option<u64>,
    /// §5.2.2.9
    pub public: bool,
    /// Some(vec![]) = unqualified private; Some(names) = qualified (lower-case field names)
    pub private: Option<Vec<String>>,
    /// §5.2.2.5
    pub no_store: bool,
    /// Some(vec![]) = unqualified no-cache; Some(names) = qualified
    pub no_cache: Option<Vec<String>>,
    /// §5.2.2.2
    pub must_revalidate: bool,
    /// §5.2.2.8
    pub proxy_revalidate: bool,
    /// RFC 8246
    pub immutable: bool,
    /// RFC 5861 §3; invalid or conflicting ⇒ `None` (no stale serving).
    pub stale_while_revalidate: Option<u64>,
    /// RFC 5861 §4; invalid or conflicting ⇒ `None`.
    pub stale_if_error: Option<u64>,
    /// §5.2.2.3
    pub must_understand: bool,
    /// §5.2.2.6
    pub no_transform: bool,
}

impl ResponseCacheControl {
    /// Parse all values of a Cache-Control-like field (multiple header lines combine). Duplicated
    /// directives with conflicting values: follow RFC 9111 §4.2.1 (treat as invalid → most restrictive, e.g. max-age invalid ⇒ stale).
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Self {
        Self::from_directives(&parse_directives(values, Syntax::CacheControl))
    }

    fn from_directives(dirs: &[Directive]) -> Self {
        let mut max_age = Delta::Unset;
        let mut s_maxage = Delta::Unset;
        let mut swr = Delta::Unset;
        let mut sie = Delta::Unset;
        let mut cc = ResponseCacheControl::default();
        for d in dirs {
            match d.name.as_str() {
                "max-age" => max_age.add(d),
                "s-maxage" => s_maxage.add(d),
                "stale-while-revalidate" => swr.add(d),
                "stale-if-error" => sie.add(d),
                "public" => cc.public = true,
                "private" => merge_field_list(&mut cc.private, d),
                "no-cache" => merge_field_list(&mut cc.no_cache, d),
                // Surrogate-Control's "no-store-remote" asks caches far from the
                // origin not to store; a CDN edge is exactly that.
                "no-store" | "no-store-remote" => cc.no_store = true,
                "must-revalidate" => cc.must_revalidate = true,
                "proxy-revalidate" => cc.proxy_revalidate = true,
                "immutable" => cc.immutable = true,
                "must-understand" => cc.must_understand = true,
                "no-transform" => cc.no_transform = true,
                // §5.2.3: unrecognised extensions are ignored.
                _ => {}
            }
        }
        // §4.2.1: invalid freshness information ⇒ stale.
        cc.max_age = max_age.resolve(Some(0));
        cc.s_maxage = s_maxage.resolve(Some(0));
        cc.stale_while_revalidate = swr.resolve(None);
        cc.stale_if_error = sie.resolve(None);
        cc
    }

    /// The directive set forbids serving this response stale without successful
    /// revalidation by a shared cache: must-revalidate (§5.2.2.2),
    /// proxy-revalidate (§5.2.2.8), s-maxage (§5.2.2.10 implies proxy-revalidate)
    /// or unqualified no-cache (§5.2.2.4: never reused without validation).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate
            || self.proxy_revalidate
            || self.s_maxage.is_some()
            || self.requires_revalidation()
    }

    /// Unqualified no-cache (§5.2.2.4): every reuse must be validated first.
    pub fn requires_revalidation(&self) -> bool {
        matches!(&self.no_cache, Some(v) if v.is_empty())
    }

    /// Unqualified private (§5.2.2.7): a shared cache must not store it.
    pub fn is_private(&self) -> bool {
        matches!(&self.private, Some(v) if v.is_empty())
    }

    /// Field names a shared cache must not store (qualified private, §5.2.2.7)
    /// or must not reuse without revalidation (qualified no-cache, §5.2.2.4;
    /// Outpost implements that by not storing them, RFC 9111 §3.1). Lower-case.
    pub fn unstorable_fields(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for list in [&self.private, &self.no_cache].into_iter().flatten() {
            out.extend(list.iter().cloned());
        }
        out.sort();
        out.dedup();
        out
    }
}

/// max-stale request directive (RFC 9111 §5.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    /// `max-stale` without a value: any staleness is acceptable.
    Any,
    /// `max-stale=N`.
    Seconds(u64),
}

/// Request directives (RFC 9111 §5.2.1, RFC 5861 §4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCacheControl {
    /// §5.2.1.1; an invalid value counts as `max-age=0` (most restrictive).
    pub max_age: Option<u64>,
    /// §5.2.1.2; an invalid value is ignored (most restrictive).
    pub max_stale: Option<MaxStale>,
    /// §5.2.1.3; an invalid value is ignored.
    pub min_fresh: Option<u64>,
    /// §5.2.1.4 (also set by `Pragma: no-cache` without Cache-Control, §5.4)
    pub no_cache: bool,
    /// §5.2.1.5
    pub no_store: bool,
    /// §5.2.1.7
    pub only_if_cached: bool,
    /// RFC 5861 §4
    pub stale_if_error: Option<u64>,
}

impl RequestCacheControl {
    /// Parse all values of a request Cache-Control field.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Self {
        let dirs = parse_directives(values, Syntax::CacheControl);
        let mut max_age = Delta::Unset;
        let mut min_fresh = Delta::Unset;
        let mut sie = Delta::Unset;
        let mut max_stale: Option<Option<MaxStale>> = None;
        let mut cc = RequestCacheControl::default();
        for d in &dirs {
            match d.name.as_str() {
                "max-age" => max_age.add(d),
                "min-fresh" => min_fresh.add(d),
                "stale-if-error" => sie.add(d),
                "max-stale" => {
                    let this = if d.value.is_none() && !d.malformed {
                        Some(MaxStale::Any)
                    } else {
                        d.delta().map(MaxStale::Seconds)
                    };
                    max_stale = Some(match max_stale {
                        None => this,
                        Some(prev) if prev == this => prev,
                        // Conflicting duplicates: ignore the directive.
                        Some(_) => None,
                    });
                }
                "no-cache" => cc.no_cache = true,
                "no-store" => cc.no_store = true,
                "only-if-cached" => cc.only_if_cached = true,
                _ => {}
            }
        }
        cc.max_age = max_age.resolve(Some(0));
        cc.min_fresh = min_fresh.resolve(None);
        cc.stale_if_error = sie.resolve(None);
        cc.max_stale = max_stale.flatten();
        cc
    }

    /// Cache-Control plus `Pragma: no-cache` when Cache-Control is absent (RFC 9111 §5.4)
    pub fn from_headers(h: &HeaderMap) -> Self {
        if h.contains_key(CACHE_CONTROL) {
            return Self::parse(h.get_all(CACHE_CONTROL));
        }
        RequestCacheControl {
            no_cache: lex::split_all(h.get_all(PRAGMA))
                .iter()
                .any(|m| m.eq_ignore_ascii_case(b"no-cache")),
            ..RequestCacheControl::default()
        }
    }
}

/// Which field supplied the directives Outpost obeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CcSource {
    /// `Outpost-Cache-Control`, the field targeted at Outpost alone (RFC 9213 §2.2 target list).
    OutpostCacheControl,
    /// RFC 9213 CDN-Cache-Control.
    CdnCacheControl,
    /// Surrogate-Control.
    SurrogateControl,
    /// Plain Cache-Control.
    CacheControl,
    /// No caching field at all.
    None,
}

impl CcSource {
    /// Stable name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            CcSource::OutpostCacheControl => "outpost-cache-control",
            CcSource::CdnCacheControl => "cdn-cache-control",
            CcSource::SurrogateControl => "surrogate-control",
            CcSource::CacheControl => "cache-control",
            CcSource::None => "none",
        }
    }

    /// A targeted field (RFC 9213 §2.1) replaced Cache-Control and Expires.
    pub fn is_targeted(&self) -> bool {
        matches!(
            self,
            CcSource::OutpostCacheControl | CcSource::CdnCacheControl | CcSource::SurrogateControl
        )
    }
}

/// The directives Outpost obeys for its own caching. RFC 9213 §2.2: the first field of the
/// target list `[Outpost-Cache-Control, CDN-Cache-Control]` with a valid, non-empty value wins,
/// and then Cache-Control and Expires are ignored; a targeted field that is empty, does not parse
/// as an RFC 8941 Dictionary, or gives a known directive a value of the wrong type is ignored as a
/// whole (§2.1), falling through to the next. After the target list, Surrogate-Control (W3C Edge
/// Architecture) is honoured when it carries a caching directive for this device: directives
/// targeted at another device (`;other`) are dropped, those for [`SURROGATE_DEVICE_TOKEN`] or
/// untargeted are kept. Plain Cache-Control comes last.
pub fn effective_response_cc(h: &HeaderMap) -> (ResponseCacheControl, CcSource) {
    effective_response_cc_for(h, SURROGATE_DEVICE_TOKEN)
}

/// [`effective_response_cc`] with an explicit Surrogate-Control device token.
pub fn effective_response_cc_for(
    h: &HeaderMap,
    surrogate_token: &str,
) -> (ResponseCacheControl, CcSource) {
    if let Some(cc) = targeted_sf(h, &OUTPOST_CACHE_CONTROL) {
        return (cc, CcSource::OutpostCacheControl);
    }
    if let Some(cc) = targeted_sf(h, &CDN_CACHE_CONTROL) {
        return (cc, CcSource::CdnCacheControl);
    }
    if let Some(cc) = targeted(
        h,
        &SURROGATE_CONTROL,
        Syntax::Surrogate(surrogate_token.as_bytes()),
    ) {
        return (cc, CcSource::SurrogateControl);
    }
    if h.contains_key(CACHE_CONTROL) {
        (
            ResponseCacheControl::parse(h.get_all(CACHE_CONTROL)),
            CcSource::CacheControl,
        )
    } else {
        (ResponseCacheControl::default(), CcSource::None)
    }
}

/// An RFC 9213 targeted field, parsed as an RFC 8941 Dictionary (all field lines combined,
/// RFC 8941 §4.2). `None` when absent, empty or invalid as a whole.
fn targeted_sf(h: &HeaderMap, name: &HeaderName) -> Option<ResponseCacheControl> {
    let mut lines = h.get_all(name).iter();
    let first = lines.next()?;
    let mut joined: Vec<u8> = first.as_bytes().to_vec();
    for more in lines {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(more.as_bytes());
    }
    let dict: sfv::Dictionary = sfv::Parser::new(&joined).parse().ok()?;
    if dict.is_empty() {
        return None;
    }
    let mut cc = ResponseCacheControl::default();
    for (key, entry) in &dict {
        let name = key.as_str();
        let known = is_caching_directive(name) || name == "no-transform";
        // Parameters are ignored (§2.1); unknown directives are ignored whatever their value.
        let item = match entry {
            sfv::ListEntry::Item(item) => &item.bare_item,
            sfv::ListEntry::InnerList(_) if known => return None,
            sfv::ListEntry::InnerList(_) => continue,
        };
        // A known directive with a value of the wrong type (`max-age="60"`, `max-age=1.5`,
        // `no-store=1`) violates its inferred constraint: the field is ignored (§2.1 "SHOULD NOT
        // consume values that violate these inferred constraints"; RFC 8941 §2).
        match name {
            "max-age" => cc.max_age = Some(sf_delta(item)?),
            "s-maxage" => cc.s_maxage = Some(sf_delta(item)?),
            "stale-while-revalidate" => cc.stale_while_revalidate = Some(sf_delta(item)?),
            "stale-if-error" => cc.stale_if_error = Some(sf_delta(item)?),
            "public" => cc.public = item.as_boolean()?,
            "no-store" | "no-store-remote" => cc.no_store |= item.as_boolean()?,
            "must-revalidate" => cc.must_revalidate = item.as_boolean()?,
            "proxy-revalidate" => cc.proxy_revalidate = item.as_boolean()?,
            "immutable" => cc.immutable = item.as_boolean()?,
            "must-understand" => cc.must_understand = item.as_boolean()?,
            "no-transform" => cc.no_transform = item.as_boolean()?,
            "private" => cc.private = sf_field_list(item)?,
            "no-cache" => cc.no_cache = sf_field_list(item)?,
            _ => {}
        }
    }
    Some(cc)
}

/// A delta-seconds directive as a Structured Field: a non-negative Integer (saturated at 2^31).
fn sf_delta(item: &sfv::BareItem) -> Option<u64> {
    let n = u64::try_from(item.as_integer()?).ok()?;
    Some(n.min(lex::DELTA_SECONDS_MAX))
}

/// `private` / `no-cache` as a Structured Field: `true` (unqualified), `?0` (absent), or a String
/// of comma-separated field names (qualified).
fn sf_field_list(item: &sfv::BareItem) -> Option<Option<Vec<String>>> {
    if let Some(b) = item.as_boolean() {
        return Some(b.then(Vec::new));
    }
    let names = item.as_string()?.as_str();
    // As in Cache-Control (`merge_field_list`): lower-case field names, sorted and deduplicated;
    // a member that is not a token makes the directive unqualified (the stricter reading).
    let mut list = Vec::new();
    for n in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !lex::is_token(n.as_bytes()) {
            return Some(Some(Vec::new()));
        }
        list.push(n.to_ascii_lowercase());
    }
    list.sort();
    list.dedup();
    Some(Some(list))
}

/// The source [`effective_response_cc`] would pick, without building the directives.
pub fn effective_source(h: &HeaderMap) -> CcSource {
    effective_response_cc(h).1
}

fn targeted(h: &HeaderMap, name: &HeaderName, syntax: Syntax<'_>) -> Option<ResponseCacheControl> {
    if !h.contains_key(name) {
        return None;
    }
    let dirs = parse_directives(h.get_all(name), syntax);
    if !dirs.iter().any(|d| is_caching_directive(&d.name)) {
        return None;
    }
    Some(ResponseCacheControl::from_directives(&dirs))
}

fn is_caching_directive(name: &str) -> bool {
    matches!(
        name,
        "max-age"
            | "s-maxage"
            | "public"
            | "private"
            | "no-store"
            | "no-store-remote"
            | "no-cache"
            | "must-revalidate"
            | "proxy-revalidate"
            | "immutable"
            | "stale-while-revalidate"
            | "stale-if-error"
            | "must-understand"
    )
}

/// Whether a response field is addressed to this cache alone (Surrogate-Control, and the
/// Outpost-targeted field of RFC 9213's convention), so it is used and never passed on.
/// `CDN-Cache-Control` is not: it is for every CDN in a chain and is forwarded downstream.
pub fn is_ours(name: &HeaderName) -> bool {
    name == SURROGATE_CONTROL || name == OUTPOST_CACHE_CONTROL
}

/// Remove the fields [`is_ours`] names.
pub fn strip_ours(h: &mut HeaderMap) {
    h.remove(SURROGATE_CONTROL);
    h.remove(OUTPOST_CACHE_CONTROL);
}

// ---------------------------------------------------------------------------
// Directive lexing

/// Field syntaxes that share the directive lexer.
#[derive(Clone, Copy)]
enum Syntax<'a> {
    /// RFC 9111 §5.2: `token [ "=" ( token / quoted-string ) ]`. Anything after
    /// the argument (e.g. `max-age=1;x`) makes the directive malformed.
    CacheControl,
    /// Surrogate-Control: `directive[;device-token]`; a directive targeted at a
    /// different device is dropped. `max-age=N+M` keeps N.
    Surrogate(&'a [u8]),
}

/// One lexed directive.
struct Directive {
    /// Lower-cased name.
    name: String,
    /// Argument with quotes removed, if any.
    value: Option<Vec<u8>>,
    /// The member did not follow the grammar (e.g. `max-age =1`, `max-age=1;x`).
    malformed: bool,
}

impl Directive {
    fn delta(&self) -> Option<u64> {
        if self.malformed {
            return None;
        }
        lex::parse_delta_seconds(self.value.as_deref()?)
    }
}

fn parse_directives<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
    syntax: Syntax<'_>,
) -> Vec<Directive> {
    let mut out = Vec::new();
    for member in lex::split_all(values) {
        if let Some(d) = lex_directive(member, syntax) {
            out.push(d);
        }
    }
    out
}

fn lex_directive(member: &[u8], syntax: Syntax<'_>) -> Option<Directive> {
    let (name, rest) = lex::take_token(member);
    if name.is_empty() {
        return None;
    }
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let mut malformed = false;
    let mut value = None;
    let mut rest = rest;
    if let Some(after_eq) = rest.strip_prefix(b"=") {
        if after_eq.first() == Some(&b'"') {
            match lex::parse_quoted(after_eq) {
                Some((v, r)) => {
                    value = Some(v);
                    rest = r;
                }
                None => {
                    malformed = true;
                    rest = &[];
                }
            }
        } else {
            let (tok, r) = lex::take_token(after_eq);
            if tok.is_empty() {
                malformed = true;
            }
            value = Some(tok.to_vec());
            rest = r;
        }
    }
    match syntax {
        Syntax::CacheControl => {
            if !rest.is_empty() {
                malformed = true;
            }
        }
        Syntax::Surrogate(token) => {
            if let Some(target) = rest.strip_prefix(b";") {
                let target = lex::trim_ows(target);
                if !target.eq_ignore_ascii_case(token) {
                    return None;
                }
            } else if !rest.is_empty() {
                malformed = true;
            }
            if name == "max-age" {
                if let Some(v) = value.as_mut() {
                    if let Some(plus) = v.iter().position(|&b| b == b'+') {
                        v.truncate(plus);
                    }
                }
            }
        }
    }
    Some(Directive {
        name,
        value,
        malformed,
    })
}

/// Accumulates occurrences of a delta-seconds directive (RFC 9111 §4.2.1:
/// duplicates with differing values are treated as invalid).
#[derive(Clone, Copy)]
enum Delta {
    Unset,
    Valid(u64),
    Invalid,
}

impl Delta {
    fn add(&mut self, d: &Directive) {
        let new = d.delta();
        *self = match (*self, new) {
            (Delta::Unset, Some(v)) => Delta::Valid(v),
            (Delta::Valid(a), Some(b)) if a == b => Delta::Valid(a),
            _ => Delta::Invalid,
        };
    }

    fn resolve(self, invalid: Option<u64>) -> Option<u64> {
        match self {
            Delta::Unset => None,
            Delta::Valid(v) => Some(v),
            Delta::Invalid => invalid,
        }
    }
}

/// Merge one `private` / `no-cache` occurrence: unqualified wins over
/// qualified; qualified lists union. A qualified list that is empty or names an
/// invalid field is treated as unqualified (the restrictive reading).
fn merge_field_list(slot: &mut Option<Vec<String>>, d: &Directive) {
    let this: Vec<String> = match (&d.value, d.malformed) {
        (Some(v), false) => {
            let mut names = Vec::new();
            let mut ok = true;
            for m in lex::split_list(v) {
                if lex::is_token(m) {
                    names.push(String::from_utf8_lossy(m).to_ascii_lowercase());
                } else {
                    ok = false;
                }
            }
            if ok {
                names
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    };
    *slot = Some(match slot.take() {
        None => this,
        Some(prev) if prev.is_empty() || this.is_empty() => Vec::new(),
        Some(mut prev) => {
            prev.extend(this);
            prev
        }
    });
    if let Some(v) = slot.as_mut() {
        v.sort();
        v.dedup();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn resp(lines: &[&str]) -> ResponseCacheControl {
        let vals: Vec<HeaderValue> = lines.iter().map(|s| hv(s)).collect();
        ResponseCacheControl::parse(vals.iter())
    }

    fn req(lines: &[&str]) -> RequestCacheControl {
        let vals: Vec<HeaderValue> = lines.iter().map(|s| hv(s)).collect();
        RequestCacheControl::parse(vals.iter())
    }

    #[test]
    fn max_age_table() {
        // (field lines, expected max_age) — cases from http-cache-tests cc-parse / cc-freshness.
        let cases: &[(&[&str], Option<u64>)] = &[
            (&["max-age=3600"], Some(3600)),
            (&["MaX-aGe=3600"], Some(3600)),
            (&["max-age=003600"], Some(3600)),
            (&["max-age=\"3600\""], Some(3600)),
            (&["max-age='3600'"], Some(0)),
            (&["max-age=0"], Some(0)),
            (&["max-age=-3600"], Some(0)),
            (&["max-age=3600.0"], Some(0)),
            (&["max-age=3600a"], Some(0)),
            (&["max-age=a3600"], Some(0)),
            (&["max-age"], Some(0)),
            (&["max-age="], Some(0)),
            (&["max-age =3600"], Some(0)),
            (&["max-age= 3600"], Some(0)),
            (&["max-age=7200;foo=bar"], Some(0)),
            (&["max-age=2147483647"], Some(2_147_483_647)),
            (&["max-age=2147483648"], Some(2_147_483_648)),
            (&["max-age=2147483649"], Some(2_147_483_648)),
            (&["max-age=99999999999"], Some(2_147_483_648)),
            (
                &["max-age=99999999999999999999999999999999"],
                Some(2_147_483_648),
            ),
            (&["foobar, max-age=3600"], Some(3600)),
            (&["extension=\"max-age=3600\", max-age=1"], Some(1)),
            (&["max-age=1, extension=\"max-age=3600\""], Some(1)),
            (&["extension=\"max-age=3600\", max-age=\"1\""], Some(1)),
            (&["max-age=3600, max-age=3600"], Some(3600)),
            (&["max-age=3600, max-age=1800"], Some(0)),
            (&["max-age=3600", "max-age=1800"], Some(0)),
            (&["max-age=1", "max-age=1800"], Some(0)),
            (&["max-age=\"1\", ext=\"a,b\", max-age=1"], Some(1)),
            (&["no-store"], None),
            (&[""], None),
            (&[",,,"], None),
        ];
        for (lines, want) in cases {
            assert_eq!(resp(lines).max_age, *want, "{lines:?}");
        }
    }

    #[test]
    fn flags_and_lists() {
        let cc = resp(&["No-StOrE, PUBLIC, must-revalidate, proxy-revalidate, immutable, must-understand, no-transform"]);
        assert!(cc.no_store && cc.public && cc.must_revalidate && cc.proxy_revalidate);
        assert!(cc.immutable && cc.must_understand && cc.no_transform);

        assert_eq!(resp(&["no-cache"]).no_cache, Some(vec![]));
        assert_eq!(resp(&["No-CaChE"]).no_cache, Some(vec![]));
        assert_eq!(resp(&["no-cache=\"a\""]).no_cache, Some(vec!["a".into()]));
        assert_eq!(
            resp(&["no-cache=\"A, b\""]).no_cache,
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(resp(&["no-cache=a"]).no_cache, Some(vec!["a".into()]));
        assert_eq!(resp(&["no-cache=\"\""]).no_cache, Some(vec![]));
        assert_eq!(resp(&["no-cache=\"a b\""]).no_cache, Some(vec![]));
        assert_eq!(resp(&["no-cache=\"a\", no-cache"]).no_cache, Some(vec![]));
        assert_eq!(
            resp(&["no-cache=\"a\"", "no-cache=\"b, a\""]).no_cache,
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(resp(&["private"]).private, Some(vec![]));
        assert!(resp(&["private"]).is_private());
        let q = resp(&["private=\"set-cookie\", no-cache=\"x-a\""]);
        assert!(!q.is_private());
        assert!(!q.requires_revalidation());
        assert_eq!(q.unstorable_fields(), vec!["set-cookie", "x-a"]);
        // Unknown value on a flag still sets it (restrictive).
        assert!(resp(&["no-store=1"]).no_store);
    }

    #[test]
    fn stale_extensions() {
        let cc = resp(&["max-age=2, stale-while-revalidate=30, stale-if-error=60"]);
        assert_eq!(cc.stale_while_revalidate, Some(30));
        assert_eq!(cc.stale_if_error, Some(60));
        let cc = resp(&["stale-while-revalidate=x, stale-if-error=1, stale-if-error=2"]);
        assert_eq!(cc.stale_while_revalidate, None);
        assert_eq!(cc.stale_if_error, None);
        assert!(resp(&["s-maxage=1"]).forbids_stale());
        assert!(resp(&["must-revalidate"]).forbids_stale());
        assert!(resp(&["proxy-revalidate"]).forbids_stale());
        assert!(resp(&["no-cache"]).forbids_stale());
        assert!(!resp(&["no-cache=\"a\""]).forbids_stale());
        assert!(!resp(&["max-age=1"]).forbids_stale());
    }

    #[test]
    fn s_maxage() {
        assert_eq!(resp(&["s-maxage=3600"]).s_maxage, Some(3600));
        assert_eq!(resp(&["max-age=3600", "s-maxage=1"]).s_maxage, Some(1));
        assert_eq!(resp(&["s-maxage=x"]).s_maxage, Some(0));
    }

    #[test]
    fn request_directives() {
        let r = req(&["max-age=0"]);
        assert_eq!(r.max_age, Some(0));
        assert_eq!(req(&["max-stale"]).max_stale, Some(MaxStale::Any));
        assert_eq!(
            req(&["max-stale=1000"]).max_stale,
            Some(MaxStale::Seconds(1000))
        );
        assert_eq!(req(&["max-stale=x"]).max_stale, None);
        assert_eq!(req(&["max-stale=1, max-stale=2"]).max_stale, None);
        assert_eq!(req(&["min-fresh=2000"]).min_fresh, Some(2000));
        assert_eq!(req(&["min-fresh=-1"]).min_fresh, None);
        assert_eq!(req(&["max-age=abc"]).max_age, Some(0));
        let r = req(&["no-cache, no-store, only-if-cached, stale-if-error=5"]);
        assert!(r.no_cache && r.no_store && r.only_if_cached);
        assert_eq!(r.stale_if_error, Some(5));
        assert_eq!(
            req(&["nothing-to-see-here"]),
            RequestCacheControl::default()
        );
    }

    #[test]
    fn pragma_fallback() {
        let mut h = HeaderMap::new();
        h.insert(PRAGMA, hv("no-cache"));
        assert!(RequestCacheControl::from_headers(&h).no_cache);
        h.insert(PRAGMA, hv("foo, No-Cache"));
        assert!(RequestCacheControl::from_headers(&h).no_cache);
        h.insert(PRAGMA, hv("unrecognised-extension"));
        assert!(!RequestCacheControl::from_headers(&h).no_cache);
        // Cache-Control present ⇒ Pragma ignored (RFC 9111 §5.4).
        h.insert(PRAGMA, hv("no-cache"));
        h.insert(CACHE_CONTROL, hv("nothing-to-see-here"));
        assert!(!RequestCacheControl::from_headers(&h).no_cache);
    }

    #[test]
    fn targeted_fields() {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, hv("max-age=3600"));
        assert_eq!(effective_response_cc(&h).1, CcSource::CacheControl);

        h.insert(SURROGATE_CONTROL, hv("max-age=1"));
        let (cc, src) = effective_response_cc(&h);
        assert_eq!((cc.max_age, src), (Some(1), CcSource::SurrogateControl));

        // Targeted at someone else ⇒ ignored, fall back to Cache-Control.
        h.insert(SURROGATE_CONTROL, hv("max-age=3600;not-for-you"));
        let (cc, src) = effective_response_cc(&h);
        assert_eq!((cc.max_age, src), (Some(3600), CcSource::CacheControl));

        h.insert(
            SURROGATE_CONTROL,
            hv("max-age=10000;outpost, no-store;other"),
        );
        let (cc, src) = effective_response_cc(&h);
        assert_eq!(
            (cc.max_age, cc.no_store, src),
            (Some(10000), false, CcSource::SurrogateControl)
        );
        h.insert(SURROGATE_CONTROL, hv("max-age=60+30"));
        assert_eq!(effective_response_cc(&h).0.max_age, Some(60));
        h.insert(SURROGATE_CONTROL, hv("content=\"ESI/1.0\""));
        assert_eq!(effective_response_cc(&h).1, CcSource::CacheControl);
        h.insert(SURROGATE_CONTROL, hv("max-age =100"));
        assert_eq!(effective_response_cc(&h).0.max_age, Some(0));

        // CDN-Cache-Control wins over both; parameters ignored; booleans.
        h.insert(CDN_CACHE_CONTROL, hv("max-age=600;foo=bar, no-store=?0"));
        let (cc, src) = effective_response_cc(&h);
        assert_eq!(
            (cc.max_age, cc.no_store, src),
            (Some(600), false, CcSource::CdnCacheControl)
        );
        h.insert(CDN_CACHE_CONTROL, hv("no-store=?1"));
        assert!(effective_response_cc(&h).0.no_store);
        h.insert(CDN_CACHE_CONTROL, hv(""));
        assert_eq!(effective_response_cc(&h).1, CcSource::SurrogateControl);
        h.remove(CDN_CACHE_CONTROL);

        strip_ours(&mut h);
        assert!(!h.contains_key(SURROGATE_CONTROL));
        assert!(h.contains_key(CACHE_CONTROL));

        assert_eq!(
            effective_response_cc(&HeaderMap::new()),
            (ResponseCacheControl::default(), CcSource::None)
        );
        assert_eq!(CcSource::CdnCacheControl.as_str(), "cdn-cache-control");
        assert_eq!(CcSource::None.as_str(), "none");
    }

    /// RFC 9213 + RFC 8941: which field governs, and what it says.
    #[test]
    fn targeted_fields_are_structured_dictionaries() {
        type Fields = &'static [(&'static str, &'static str)];
        let cases: &[(Fields, CcSource, Option<u64>)] = &[
            (
                &[("cdn-cache-control", "max-age=60")],
                CcSource::CdnCacheControl,
                Some(60),
            ),
            // Lines combine into one dictionary; a repeated key's last value wins.
            (
                &[
                    ("cdn-cache-control", "max-age=60"),
                    ("cdn-cache-control", "max-age=30"),
                ],
                CcSource::CdnCacheControl,
                Some(30),
            ),
            (
                &[("cdn-cache-control", "max-age=60, max-age=90")],
                CcSource::CdnCacheControl,
                Some(90),
            ),
            // Parameters are ignored.
            (
                &[("cdn-cache-control", "max-age=60;x=1")],
                CcSource::CdnCacheControl,
                Some(60),
            ),
            // Invalid as a whole ⇒ ignored: Cache-Control governs.
            (
                &[("cdn-cache-control", "max-age=10000, &&&&&")],
                CcSource::CacheControl,
                None,
            ),
            (
                &[("cdn-cache-control", "MaX-aGe=10000")],
                CcSource::CacheControl,
                None,
            ),
            (
                &[("cdn-cache-control", "max-age =10000")],
                CcSource::CacheControl,
                None,
            ),
            (
                &[("cdn-cache-control", "max-age= 10000")],
                CcSource::CacheControl,
                None,
            ),
            (
                &[("cdn-cache-control", "max-age=10000,,public")],
                CcSource::CacheControl,
                None,
            ),
            (
                &[("cdn-cache-control", "max-age=1234567890123456")],
                CcSource::CacheControl,
                None,
            ),
            // A known directive with a value of the wrong type ⇒ the field is ignored.
            (
                &[("cdn-cache-control", "max-age=\"10000\"")],
                CcSource::CacheControl,
                None,
            ),
            (
                &[("cdn-cache-control", "max-age=10.5")],
                CcSource::CacheControl,
                None,
            ),
            (
                &[("cdn-cache-control", "max-age=-1")],
                CcSource::CacheControl,
                None,
            ),
            (
                &[("cdn-cache-control", "no-store=1")],
                CcSource::CacheControl,
                None,
            ),
            (
                &[("cdn-cache-control", "max-age=(1 2)")],
                CcSource::CacheControl,
                None,
            ),
            // Unknown directives are ignored whatever their value; `none` is a valid, non-empty
            // field that governs (RFC 9213 §3.1): Cache-Control is ignored.
            (
                &[("cdn-cache-control", "max-age=60, x-foo=(a b), y=\"z\"")],
                CcSource::CdnCacheControl,
                Some(60),
            ),
            (
                &[("cdn-cache-control", "none")],
                CcSource::CdnCacheControl,
                None,
            ),
            // The Outpost-targeted field comes first in the target list ...
            (
                &[
                    ("cdn-cache-control", "max-age=60"),
                    ("outpost-cache-control", "max-age=5"),
                ],
                CcSource::OutpostCacheControl,
                Some(5),
            ),
            // ... and falls through to CDN-Cache-Control when invalid.
            (
                &[
                    ("cdn-cache-control", "max-age=60"),
                    ("outpost-cache-control", "max-age=five"),
                ],
                CcSource::CdnCacheControl,
                Some(60),
            ),
        ];
        for (fields, source, max_age) in cases {
            let mut h = HeaderMap::new();
            h.insert(CACHE_CONTROL, hv("no-store"));
            for (k, v) in *fields {
                h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), hv(v));
            }
            let (cc, src) = effective_response_cc(&h);
            assert_eq!(src, *source, "{fields:?}");
            if src == CcSource::CacheControl {
                assert!(cc.no_store, "{fields:?}");
            } else {
                assert_eq!(cc.max_age, *max_age, "{fields:?}");
                assert!(!cc.no_store, "Cache-Control is ignored: {fields:?}");
            }
        }
        // Booleans, qualified lists, stale extensions.
        let mut h = HeaderMap::new();
        h.insert(
            CDN_CACHE_CONTROL,
            hv("s-maxage=9, private=\"Set-Cookie, X-A\", no-cache, must-revalidate, immutable=?0, stale-if-error=30"),
        );
        let (cc, _) = effective_response_cc(&h);
        assert_eq!(cc.s_maxage, Some(9));
        assert_eq!(cc.private, Some(vec!["set-cookie".into(), "x-a".into()]));
        assert_eq!(cc.no_cache, Some(vec![]));
        assert!(cc.must_revalidate && !cc.immutable);
        // Field lists read as Cache-Control's: sorted, deduplicated; a non-token makes the
        // directive unqualified (found by the cache_control fuzz target).
        let list = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(CDN_CACHE_CONTROL, hv(v));
            effective_response_cc(&h).0.private
        };
        assert_eq!(
            list("private=\"Set-CooXie, k-Foo, set-cooxie\", s-maxage=30"),
            Some(vec!["k-foo".into(), "set-cooxie".into()])
        );
        assert_eq!(list("private=\"a b, c\", s-maxage=30"), Some(vec![]));
        assert_eq!(cc.stale_if_error, Some(30));
        // What this cache alone may see is stripped; CDN-Cache-Control is passed on.
        let mut h = HeaderMap::new();
        for n in [
            "cdn-cache-control",
            "outpost-cache-control",
            "surrogate-control",
        ] {
            h.insert(HeaderName::from_static(n), hv("max-age=1"));
        }
        assert!(is_ours(&OUTPOST_CACHE_CONTROL) && is_ours(&SURROGATE_CONTROL));
        assert!(!is_ours(&CDN_CACHE_CONTROL));
        strip_ours(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(CDN_CACHE_CONTROL));
    }

    #[test]
    fn non_ascii_and_garbage() {
        let v = HeaderValue::from_bytes(b"max-age=\xff\xfe, \xc3\xa9, no-store").unwrap();
        let cc = ResponseCacheControl::parse([&v]);
        assert_eq!(cc.max_age, Some(0));
        assert!(cc.no_store);
        let v = HeaderValue::from_bytes(b"no-cache=\"unterminated, max-age=5").unwrap();
        let cc = ResponseCacheControl::parse([&v]);
        assert_eq!(cc.no_cache, Some(vec![]));
        assert_eq!(cc.max_age, None);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(lines in proptest::collection::vec(
            proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..4)) {
            let vals: Vec<HeaderValue> = lines
                .iter()
                .filter_map(|b| HeaderValue::from_bytes(b).ok())
                .collect();
            let cc = ResponseCacheControl::parse(vals.iter());
            proptest::prop_assert!(cc.max_age.unwrap_or(0) <= lex::DELTA_SECONDS_MAX);
            let _ = RequestCacheControl::parse(vals.iter());
            let mut h = HeaderMap::new();
            for v in &vals {
                h.append(CDN_CACHE_CONTROL, v.clone());
                h.append(SURROGATE_CONTROL, v.clone());
                h.append(CACHE_CONTROL, v.clone());
            }
            let _ = effective_response_cc(&h);
        }

        #[test]
        fn parse_never_panics_structured(s in "[a-zA-Z=,;\"\\\\ 0-9?+-]{0,60}") {
            if let Ok(v) = HeaderValue::from_str(&s) {
                let _ = ResponseCacheControl::parse([&v]);
                let mut h = HeaderMap::new();
                h.insert(SURROGATE_CONTROL, v.clone());
                h.insert(CDN_CACHE_CONTROL, v);
                let _ = effective_response_cc(&h);
            }
        }
    }
}
