//! Helpers shared by this crate's unit tests.
#![allow(clippy::unwrap_used)]

use http::{HeaderMap, HeaderName, HeaderValue};

/// A header map from `(name, value)` pairs, repeated names appended in order.
pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    h
}
