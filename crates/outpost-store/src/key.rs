//! [`CacheKey`]: the canonical key text of a stored object plus its stable 64-bit hash, which
//! picks the shard and indexes the policy.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::hashing::key_hash;

/// A cache key: canonical key text (built by `outpost-cache`) and its stable hash.
///
/// The hash is keyed SipHash-2-4 of the text with a fixed key, so it is the same across processes
/// and builds. Equality and `Hash` go by text; the store indexes by [`CacheKey::hash64`] and always
/// checks the text, so two keys whose hashes collide never see each other's objects.
#[derive(Clone)]
pub struct CacheKey {
    hash: u64,
    text: Arc<str>,
}

impl CacheKey {
    /// Builds a key from its canonical text.
    pub fn new(text: impl Into<Arc<str>>) -> Self {
        let text = text.into();
        Self {
            hash: key_hash(&text),
            text,
        }
    }

    /// Test-only: a key with a chosen hash, to force collisions.
    #[cfg(test)]
    pub(crate) fn with_forced_hash(text: impl Into<Arc<str>>, hash: u64) -> Self {
        Self {
            hash,
            text: text.into(),
        }
    }

    /// The canonical key text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The stable 64-bit hash of the text.
    pub fn hash64(&self) -> u64 {
        self.hash
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for CacheKey {}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheKey")
            .field("text", &&*self.text)
            .field("hash", &format_args!("{:016x}", self.hash))
            .finish()
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<&str> for CacheKey {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<String> for CacheKey {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn equal_text_equal_key_and_hash() {
        let a = CacheKey::new("https://a.example/x");
        let b = CacheKey::new(String::from("https://a.example/x"));
        assert_eq!(a, b);
        assert_eq!(a.hash64(), b.hash64());
        assert_ne!(a.hash64(), CacheKey::new("https://a.example/y").hash64());
        assert_eq!(a.to_string(), "https://a.example/x");
        assert_eq!(a.text(), "https://a.example/x");
    }
}
