//! Fuzz cache-key canonicalisation (outpost_cache::key::canonicalize).
//!
//! Input: `host 0xFF target` (both lossily decoded as UTF-8); without a 0xFF byte the whole input
//! is the target and the host is "example.com". Checks, for every Ok result:
//! - idempotence of the path and query alone (re-canonicalised under a fixed valid host), then of
//!   the host alone (canonical_host), then of the whole: canonicalize(result.host,
//!   result.path_and_query()) == Ok(result) — separate asserts so a host bug cannot mask a path bug;
//! - the key text (and the path-and-query forwarded upstream) has no space or control character;
//! - the path starts with '/'. (The query may itself start with '?': "/a??x" has query "?x".)
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_cache::key::{canonical_host, canonicalize, QueryRules};

fuzz_target!(|data: &[u8]| {
    let (host, target) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            String::from_utf8_lossy(&data[i + 1..]).into_owned(),
        ),
        None => (
            "example.com".to_string(),
            String::from_utf8_lossy(data).into_owned(),
        ),
    };
    let rules = QueryRules::default();
    let Ok(c) = canonicalize(&host, &target, &rules) else {
        return;
    };
    assert_eq!(
        canonicalize(&host, &target, &rules).as_ref(),
        Ok(&c),
        "not deterministic"
    );
    assert!(c.path.starts_with('/'), "path without leading '/': {c:?}");

    let pq = c.path_and_query();
    let key = c.key_text("tenant", "");
    assert!(
        !key.chars().any(|ch| ch == ' ' || ch.is_control()),
        "key text has a space or control char: {key:?} (host={host:?} target={target:?})"
    );
    assert!(
        !pq.chars().any(|ch| ch == ' ' || ch.is_control()),
        "path_and_query has a space or control char: {pq:?}"
    );

    let pq_again = canonicalize("example.com", &pq, &rules).map(|u| (u.path, u.query));
    assert_eq!(
        pq_again,
        Ok((c.path.clone(), c.query.clone())),
        "path/query not idempotent: target={target:?} -> {pq:?}"
    );
    let host_again = canonical_host(&c.host);
    assert_eq!(
        host_again.as_ref(),
        Ok(&c.host),
        "host not idempotent: host={host:?} -> {:?} -> {host_again:?}",
        c.host
    );
    let again = canonicalize(&c.host, &pq, &rules);
    assert_eq!(
        again.as_ref(),
        Ok(&c),
        "not idempotent: host={host:?} target={target:?} -> {c:?} -> {again:?}"
    );
});
