//! Cookie policy for cache keys: never key on raw cookies; either ignore them, bypass the cache when a
//! named cookie is present, or key on a small, allow-listed *bucket* taken from one cookie's value.

use http::HeaderMap;

/// The cookie policy of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CookiePolicy {
    /// Cookies are not part of the key and are not forwarded on cacheable requests.
    #[default]
    Ignore,
    /// Bypass the cache when any of these cookies is present.
    BypassIf(Vec<String>),
    /// Key on `cookie`'s value when it is one of `values`, else on "other".
    Bucket {
        /// Cookie name.
        cookie: String,
        /// Allowed values.
        values: Vec<String>,
    },
}

/// The outcome of applying a cookie policy to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieDecision {
    /// Cache normally; `extra` is added to the key (empty for Ignore).
    Key(String),
    /// Bypass the cache; the named cookie was present.
    Bypass(String),
}

/// Iterate `(name, value)` pairs over all Cookie header lines.
pub fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (n, v) = pair.split_once('=')?;
            Some((n.trim(), v.trim()))
        })
}

/// Apply a cookie policy.
pub fn decide(policy: &CookiePolicy, headers: &HeaderMap) -> CookieDecision {
    match policy {
        CookiePolicy::Ignore => CookieDecision::Key(String::new()),
        CookiePolicy::BypassIf(names) => {
            match cookies(headers).find(|(n, _)| names.iter().any(|x| x == n)) {
                Some((n, _)) => CookieDecision::Bypass(n.to_string()),
                None => CookieDecision::Key(String::new()),
            }
        }
        CookiePolicy::Bucket { cookie, values } => {
            let v = cookies(headers)
                .find(|(n, _)| n == cookie)
                .map(|(_, v)| v)
                .filter(|v| values.iter().any(|x| x == v))
                .unwrap_or("other");
            CookieDecision::Key(format!("{cookie}={v}"))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn hm(cookie: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, cookie.parse().unwrap());
        h
    }

    #[test]
    fn policies() {
        let h = hm("a=1; session=xyz; ab=b");
        assert_eq!(
            decide(&CookiePolicy::Ignore, &h),
            CookieDecision::Key(String::new())
        );
        assert_eq!(
            decide(&CookiePolicy::BypassIf(vec!["session".into()]), &h),
            CookieDecision::Bypass("session".into())
        );
        assert_eq!(
            decide(&CookiePolicy::BypassIf(vec!["login".into()]), &h),
            CookieDecision::Key(String::new())
        );
        let b = CookiePolicy::Bucket {
            cookie: "ab".into(),
            values: vec!["a".into(), "b".into()],
        };
        assert_eq!(decide(&b, &h), CookieDecision::Key("ab=b".into()));
        assert_eq!(
            decide(&b, &hm("ab=zzz")),
            CookieDecision::Key("ab=other".into())
        );
        assert_eq!(
            decide(&b, &HeaderMap::new()),
            CookieDecision::Key("ab=other".into())
        );
    }
}
