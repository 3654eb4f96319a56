//! Hash functions owned by the store: the stable, keyed SipHash-2-4 that turns key text into a
//! [`CacheKey`](crate::CacheKey) hash, and a cheap mixing hasher for maps already keyed by such a
//! `u64` (shard maps, policy indexes, the tag index).

use std::hash::{BuildHasher, Hasher};

/// Fixed SipHash key. It is part of the on-disk contract of key hashes: never change it.
const SIP_K0: u64 = 0x6f75_7470_6f73_742d; // "outpost-"
const SIP_K1: u64 = 0x6b65_792d_7631_2e30; // "key-v1.0"

#[inline]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-2-4 of `data` under the key `(k0, k1)`.
pub(crate) fn siphash24(k0: u64, k1: u64, data: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(chunk);
        let m = u64::from_le_bytes(buf);
        v[3] ^= m;
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^= m;
    }
    let rest = chunks.remainder();
    let mut last = (data.len() as u64) << 56;
    for (i, byte) in rest.iter().enumerate() {
        last |= u64::from(*byte) << (8 * i);
    }
    v[3] ^= last;
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The stable 64-bit hash of a cache key's text.
pub(crate) fn key_hash(text: &str) -> u64 {
    siphash24(SIP_K0, SIP_K1, text.as_bytes())
}

/// MurmurHash3's 64-bit finaliser: a bijective mix so that structured `u64`s (sequential ids in a
/// trace, hashes sharing high bits within a shard) spread over every bit.
#[inline]
pub(crate) fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// A hasher for maps keyed by a `u64` that is already a hash: one multiply-xorshift mix.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct MixHasher {
    state: u64,
}

impl Hasher for MixHasher {
    #[inline]
    fn finish(&self) -> u64 {
        mix64(self.state)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u64 keys; fold the bytes in so it is still a correct hasher.
        for byte in bytes {
            self.state =
                (self.state.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.state ^= i;
    }
}

/// `BuildHasher` for [`MixHasher`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct MixBuildHasher;

impl BuildHasher for MixBuildHasher {
    type Hasher = MixHasher;
    #[inline]
    fn build_hasher(&self) -> MixHasher {
        MixHasher::default()
    }
}

/// A `HashMap` keyed by a pre-hashed `u64`.
pub(crate) type U64Map<V> = std::collections::HashMap<u64, V, MixBuildHasher>;
/// A `HashSet` of pre-hashed `u64`s.
pub(crate) type U64Set = std::collections::HashSet<u64, MixBuildHasher>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn siphash24_matches_reference_vectors() {
        // Reference vectors from the SipHash paper (key 00..0f, messages 00, 00 01, ...).
        let k0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let k1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(siphash24(k0, k1, &[]), 0x726f_db47_dd0e_0e31);
        let msg: Vec<u8> = (0u8..15).collect();
        assert_eq!(siphash24(k0, k1, &msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    #[allow(deprecated)]
    fn siphash24_matches_std_for_many_lengths() {
        for len in 0..64usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut std_hasher = std::hash::SipHasher::new_with_keys(SIP_K0, SIP_K1);
            std_hasher.write(&data);
            assert_eq!(
                siphash24(SIP_K0, SIP_K1, &data),
                std_hasher.finish(),
                "len {len}"
            );
        }
    }

    #[test]
    fn key_hash_is_stable() {
        // Golden value: key hashes may be persisted, so this must never change.
        assert_eq!(key_hash("https://example.com/"), GOLDEN);
    }
    const GOLDEN: u64 = 0xc7377474bf977b34;
}
