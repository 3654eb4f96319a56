//! Steering, pure: from a client's location to a ranking of PoPs, and from the ranking, the PoPs'
//! health, weights and drain flags to the PoP that answers (and why). No I/O, no clock: the
//! server and `outpost explain --dns` both call this, so an explanation is the real decision.
//!
//! Ranking: regions that list the client's country come first; then regions by great-circle
//! distance from the client's country; PoPs of one region are ordered per client by rendezvous
//! hashing, so a region's clients spread over its PoPs. Choice: the first PoP in the ranking that
//! is up, not drained, has an address of the asked family and keeps this client under its weight
//! (a deterministic per-client bucket, so one subnet always gets one answer). When no PoP
//! qualifies the answer fails open to the nearest PoP with an address, health aside: a wrong
//! PoP beats no answer.

use crate::countries::Country;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A region with coordinates.
#[derive(Debug, Clone)]
pub struct Region {
    /// Name.
    pub name: String,
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Countries always sent here first.
    pub countries: Vec<String>,
}

/// A PoP as the GeoDNS sees it.
#[derive(Debug, Clone)]
pub struct Pop {
    /// Name (the topology's PoP name).
    pub name: String,
    /// Index into [`Map::regions`].
    pub region: usize,
    /// A answers.
    pub v4: Vec<Ipv4Addr>,
    /// AAAA answers.
    pub v6: Vec<Ipv6Addr>,
    /// Percent of its clients it keeps (0-100).
    pub weight: u32,
    /// Maintenance: nobody is sent here.
    pub drain: bool,
}

impl Pop {
    fn has(&self, family: Family) -> bool {
        match family {
            Family::V4 => !self.v4.is_empty(),
            Family::V6 => !self.v6.is_empty(),
        }
    }
}

/// Address family of the question (A or AAAA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// A.
    V4,
    /// AAAA.
    V6,
}

/// The static part of steering: regions and PoPs.
#[derive(Debug, Clone)]
pub struct Map {
    /// Regions.
    pub regions: Vec<Region>,
    /// PoPs.
    pub pops: Vec<Pop>,
    /// Region of clients with no known location.
    pub default_region: usize,
}

/// Where a client is, as far as steering knows.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    /// Its country, if the GeoIP database placed it.
    pub country: Option<&'static Country>,
    /// Steering key: a hash of the client's address truncated to the steering prefix (so
    /// clients of one subnet share every decision).
    pub key: u64,
}

/// One PoP's place in a client's ranking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Index into [`Map::pops`].
    pub pop: usize,
    /// Its region lists the client's country.
    pub listed: bool,
    /// Distance from the client's country (or the default region) to the PoP's region, km.
    pub km: f64,
}

/// What steering made of one PoP of the ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// This PoP answers.
    Chosen,
    /// Failing its health checks.
    Down,
    /// Drain flag set.
    Drained,
    /// Up, but this client's bucket is above its weight: shed to the next.
    Shed {
        /// The client's bucket for this PoP (0-99).
        bucket: u32,
        /// The PoP's weight.
        weight: u32,
    },
    /// No address of the asked family.
    NoAddress,
    /// Not looked at: an earlier PoP answered.
    NotReached,
}

impl Verdict {
    /// Short name for logs and explanations.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Chosen => "chosen",
            Verdict::Down => "down",
            Verdict::Drained => "drained",
            Verdict::Shed { .. } => "shed",
            Verdict::NoAddress => "no-address",
            Verdict::NotReached => "not-reached",
        }
    }
}

/// A steering decision with its reasons.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The ranking with each PoP's verdict.
    pub steps: Vec<(Ranked, Verdict)>,
    /// The answering PoP, if any PoP has an address of the family.
    pub chosen: Option<usize>,
    /// No PoP qualified: the nearest with an address answers, health and weights aside.
    pub fail_open: bool,
    /// A partial weight was consulted, so the answer depends on the client's bucket (the ECS
    /// scope must cover the steering key's bits).
    pub bucketed: bool,
}

/// Great-circle distance in km (haversine).
pub fn km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().min(1.0).asin()
}

/// 64-bit FNV-1a then a murmur finaliser: stable across builds and platforms (the answer a
/// subnet gets must not change when the binary does).
pub fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Bits of a client's address that steering keys on: a /24 for IPv4 and a /56 for IPv6, or
/// fewer when the client subnet says fewer.
pub fn key_bits(addr: IpAddr, source_prefix: u8) -> u8 {
    match addr {
        IpAddr::V4(_) => source_prefix.min(24),
        IpAddr::V6(_) => source_prefix.min(56),
    }
}

/// The steering key of `addr` truncated to `bits`.
pub fn client_key(addr: IpAddr, bits: u8) -> u64 {
    let masked = truncate(addr, bits);
    match masked {
        IpAddr::V4(a) => hash(&a.octets(), u64::from(bits)),
        IpAddr::V6(a) => hash(&a.octets(), u64::from(bits) | 0x100),
    }
}

/// `addr` with every bit after the first `bits` cleared.
pub fn truncate(addr: IpAddr, bits: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let b = u32::from(bits.min(32));
            let mask = if b == 0 { 0 } else { u32::MAX << (32 - b) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let b = u32::from(bits.min(128));
            let mask = if b == 0 { 0 } else { u128::MAX << (128 - b) };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

impl Map {
    /// Every PoP, best first, for a client at `loc`.
    pub fn rank(&self, loc: &Location) -> Vec<Ranked> {
        let (lat, lon, code) = match loc.country {
            Some(c) => (f64::from(c.lat), f64::from(c.lon), Some(c.code)),
            None => match self.regions.get(self.default_region) {
                Some(r) => (r.lat, r.lon, None),
                None => (0.0, 0.0, None),
            },
        };
        let mut v: Vec<(Ranked, u64)> = self
            .pops
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let r = &self.regions[p.region];
                let listed = match code {
                    Some(code) => r.countries.iter().any(|c| c == code),
                    None => p.region == self.default_region,
                };
                // Rounded to whole km so PoPs of one region tie exactly.
                let d = km(lat, lon, r.lat, r.lon).round();
                let tie = hash(p.name.as_bytes(), loc.key);
                (
                    Ranked {
                        pop: i,
                        listed,
                        km: d,
                    },
                    tie,
                )
            })
            .collect();
        v.sort_by(|(a, ta), (b, tb)| {
            b.listed
                .cmp(&a.listed)
                .then(a.km.total_cmp(&b.km))
                .then(tb.cmp(ta))
        });
        v.into_iter().map(|(r, _)| r).collect()
    }

    /// The client's bucket (0-99) for weight decisions at PoP `pop`.
    pub fn bucket(&self, pop: usize, key: u64) -> u32 {
        let name = self.pops.get(pop).map(|p| p.name.as_bytes()).unwrap_or(&[]);
        (hash(name, key ^ 0x5eed) % 100) as u32
    }

    /// Decide which PoP answers a question of `family` from a client at `loc`; `up[i]` is PoP
    /// `i`'s health.
    pub fn choose(&self, loc: &Location, family: Family, up: &[bool]) -> Decision {
        let ranking = self.rank(loc);
        let mut steps = Vec::with_capacity(ranking.len());
        let mut chosen = None;
        let mut bucketed = false;
        for r in &ranking {
            if chosen.is_some() {
                steps.push((*r, Verdict::NotReached));
                continue;
            }
            let p = &self.pops[r.pop];
            let verdict = if !p.has(family) {
                Verdict::NoAddress
            } else if p.drain || p.weight == 0 {
                Verdict::Drained
            } else if !up.get(r.pop).copied().unwrap_or(false) {
                Verdict::Down
            } else if p.weight < 100 {
                bucketed = true;
                let bucket = self.bucket(r.pop, loc.key);
                if bucket < p.weight {
                    Verdict::Chosen
                } else {
                    Verdict::Shed {
                        bucket,
                        weight: p.weight,
                    }
                }
            } else {
                Verdict::Chosen
            };
            if verdict == Verdict::Chosen {
                chosen = Some(r.pop);
            }
            steps.push((*r, verdict));
        }
        let mut fail_open = false;
        if chosen.is_none() {
            // Every PoP is down, drained or shedding: prefer an up PoP that only shed, then any
            // PoP with an address. Nearest first in both passes.
            let shed_up = steps
                .iter()
                .find(|(_, v)| matches!(v, Verdict::Shed { .. }))
                .map(|(r, _)| r.pop);
            let any = steps
                .iter()
                .find(|(_, v)| *v != Verdict::NoAddress)
                .map(|(r, _)| r.pop);
            chosen = shed_up.or(any);
            fail_open = chosen.is_some();
        }
        Decision {
            steps,
            chosen,
            fail_open,
            bucketed,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::countries::country;
    use proptest::prelude::*;

    fn region(name: &str, lat: f64, lon: f64) -> Region {
        Region {
            name: name.into(),
            lat,
            lon,
            countries: Vec::new(),
        }
    }

    fn pop(name: &str, region: usize, last: u8) -> Pop {
        Pop {
            name: name.into(),
            region,
            v4: vec![Ipv4Addr::new(192, 0, 2, last)],
            v6: Vec::new(),
            weight: 100,
            drain: false,
        }
    }

    /// Frankfurt, Ashburn, Singapore, São Paulo; one PoP each, two in Frankfurt.
    fn world() -> Map {
        Map {
            regions: vec![
                region("eu", 50.1, 8.7),
                region("us", 39.0, -77.5),
                region("ap", 1.35, 103.8),
                region("sa", -23.5, -46.6),
            ],
            pops: vec![
                pop("fra-1", 0, 1),
                pop("fra-2", 0, 2),
                pop("iad-1", 1, 3),
                pop("sin-1", 2, 4),
                pop("gru-1", 3, 5),
            ],
            default_region: 1,
        }
    }

    fn at(code: &str, key: u64) -> Location {
        Location {
            country: country(code),
            key,
        }
    }

    fn name(m: &Map, d: &Decision) -> String {
        m.pops[d.chosen.unwrap()].name.clone()
    }

    #[test]
    fn distances_are_great_circle_km() {
        // Frankfurt to Ashburn is about 6,500 km; a point to itself is 0.
        let d = km(50.1, 8.7, 39.0, -77.5);
        assert!((6300.0..6700.0).contains(&d), "{d}");
        assert_eq!(km(10.0, 10.0, 10.0, 10.0), 0.0);
    }

    #[test]
    fn clients_go_to_the_nearest_region() {
        let m = world();
        let up = vec![true; 5];
        for (code, want) in [
            ("DE", "fra"),
            ("FR", "fra"),
            ("US", "iad"),
            ("CA", "iad"),
            ("JP", "sin"),
            ("SG", "sin"),
            ("BR", "gru"),
            ("AR", "gru"),
        ] {
            let d = m.choose(&at(code, 7), Family::V4, &up);
            assert!(name(&m, &d).starts_with(want), "{code}: {:?}", d);
            assert!(!d.fail_open);
        }
    }

    #[test]
    fn a_regions_pops_share_its_clients() {
        let m = world();
        let up = vec![true; 5];
        let mut n = [0u32; 2];
        for key in 0..1000u64 {
            let d = m.choose(&at("DE", hash(&key.to_le_bytes(), 0)), Family::V4, &up);
            n[d.chosen.unwrap()] += 1;
        }
        assert!(n[0] > 400 && n[1] > 400, "{n:?}");
    }

    #[test]
    fn down_pops_are_skipped_for_the_next_nearest() {
        let m = world();
        let mut up = vec![true; 5];
        up[0] = false;
        up[1] = false;
        let d = m.choose(&at("DE", 1), Family::V4, &up);
        assert_eq!(name(&m, &d), "iad-1");
        let verdicts: Vec<_> = d.steps.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(&verdicts[..3], &["down", "down", "chosen"]);
    }

    #[test]
    fn drained_pops_get_nobody() {
        let mut m = world();
        m.pops[2].drain = true;
        let d = m.choose(&at("US", 1), Family::V4, &[true; 5]);
        assert_ne!(name(&m, &d), "iad-1");
        assert_eq!(d.steps[0].1, Verdict::Drained);
    }

    #[test]
    fn weight_keeps_its_share_and_sheds_the_rest_to_the_next() {
        let mut m = world();
        m.pops[2].weight = 30;
        let up = [true; 5];
        let mut kept = 0;
        for key in 0..2000u64 {
            let loc = at("US", hash(&key.to_le_bytes(), 1));
            let d = m.choose(&loc, Family::V4, &up);
            assert!(d.bucketed);
            if name(&m, &d) == "iad-1" {
                kept += 1;
            } else {
                // The next nearest to the US.
                assert!(name(&m, &d).starts_with("fra") || name(&m, &d) == "gru-1");
            }
            // Deterministic per client.
            assert_eq!(m.choose(&loc, Family::V4, &up), d);
        }
        assert!((500..700).contains(&kept), "{kept}");
    }

    #[test]
    fn listed_countries_override_distance() {
        let mut m = world();
        m.regions[3].countries = vec!["US".into()];
        let d = m.choose(&at("US", 1), Family::V4, &[true; 5]);
        assert_eq!(name(&m, &d), "gru-1");
        assert!(d.steps[0].0.listed);
    }

    #[test]
    fn unknown_clients_use_the_default_region() {
        let m = world();
        let d = m.choose(
            &Location {
                country: None,
                key: 3,
            },
            Family::V4,
            &[true; 5],
        );
        assert_eq!(name(&m, &d), "iad-1");
    }

    #[test]
    fn families_without_addresses_are_skipped() {
        let mut m = world();
        m.pops[3].v6 = vec!["2001:db8::4".parse().unwrap()];
        let d = m.choose(&at("DE", 1), Family::V6, &[true; 5]);
        assert_eq!(name(&m, &d), "sin-1");
        assert_eq!(d.steps[0].1, Verdict::NoAddress);
    }

    #[test]
    fn all_down_fails_open_to_the_nearest() {
        let m = world();
        let d = m.choose(&at("DE", 1), Family::V4, &[false; 5]);
        assert!(d.fail_open);
        assert!(name(&m, &d).starts_with("fra"));
        let none = Map {
            pops: vec![],
            ..world()
        };
        assert_eq!(none.choose(&at("DE", 1), Family::V4, &[]).chosen, None);
    }

    #[test]
    fn truncation_and_keys() {
        let a: IpAddr = "81.2.69.160".parse().unwrap();
        assert_eq!(truncate(a, 24), "81.2.69.0".parse::<IpAddr>().unwrap());
        assert_eq!(truncate(a, 0), "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(truncate(a, 32), a);
        let b: IpAddr = "81.2.69.7".parse().unwrap();
        assert_eq!(client_key(a, 24), client_key(b, 24));
        assert_ne!(client_key(a, 32), client_key(b, 32));
        let v6: IpAddr = "2001:db8:1:2:3::1".parse().unwrap();
        assert_eq!(truncate(v6, 48), "2001:db8:1::".parse::<IpAddr>().unwrap());
        assert_eq!(key_bits(a, 32), 24);
        assert_eq!(key_bits(v6, 128), 56);
        assert_eq!(key_bits(a, 16), 16);
    }

    proptest! {
        #[test]
        fn every_decision_is_explained(
            ups in proptest::collection::vec(any::<bool>(), 5),
            weights in proptest::collection::vec(0u32..=100, 5),
            drains in proptest::collection::vec(any::<bool>(), 5),
            key in any::<u64>(),
            c in 0usize..6,
        ) {
            let mut m = world();
            for (i, p) in m.pops.iter_mut().enumerate() {
                p.weight = weights[i];
                p.drain = drains[i];
            }
            let code = ["DE", "US", "JP", "BR", "ZA", "AU"][c];
            let d = m.choose(&at(code, key), Family::V4, &ups);
            // Every PoP appears once; the answer exists (all have v4).
            prop_assert_eq!(d.steps.len(), 5);
            let chosen = d.chosen.unwrap();
            let chosen_steps = d.steps.iter().filter(|(_, v)| *v == Verdict::Chosen).count();
            if d.fail_open {
                prop_assert_eq!(chosen_steps, 0);
            } else {
                prop_assert_eq!(chosen_steps, 1);
                // The chosen PoP is up, not drained, and every PoP before it had a reason.
                prop_assert!(ups[chosen] && !drains[chosen] && weights[chosen] > 0);
                for (r, v) in &d.steps {
                    if r.pop == chosen { break; }
                    let skipped = matches!(v, Verdict::Down | Verdict::Drained | Verdict::Shed { .. });
                    prop_assert!(skipped);
                }
            }
            // Ranking is sorted: listed first, then by distance.
            for w in d.steps.windows(2) {
                let (a, b) = (w[0].0, w[1].0);
                let sorted = (a.listed && !b.listed) || (a.listed == b.listed && a.km <= b.km);
                prop_assert!(sorted);
            }
        }
    }
}
