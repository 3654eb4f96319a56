//! One DNS question to one reply, without sockets: which name in the zone the question is
//! about (apex, a name server, a PoP's service name, a tenant hostname), the RFC 7871 client
//! subnet, the steering decision, and the records and response code. The server shell only
//! encodes what this returns; `outpost explain --dns` prints the same decision.

use crate::geo::{Geo, Place};
use crate::steer::{self, Decision, Family, Location, Map};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use outpost_config::{Config, ConfigError};
use std::collections::HashMap;
use std::net::IpAddr;

/// What a query name is, in our zone's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The zone apex.
    Apex,
    /// Name server `i` (`nameservers[i]`).
    Nameserver(usize),
    /// `<pop>.<zone>`: PoP `i`'s own service name (no steering).
    Pop(usize),
    /// A tenant hostname, or `<hostname>.<zone>` (what tenants CNAME to): steered.
    Tenant(String),
    /// Inside the zone but nothing there: NXDOMAIN.
    NoSuchName,
    /// Not ours: REFUSED.
    NotOurs,
}

/// Where the client address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The query's EDNS Client Subnet option.
    Ecs,
    /// The resolver's own address (no ECS, or ECS with source prefix 0).
    Resolver,
}

impl Source {
    /// Metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Ecs => "ecs",
            Source::Resolver => "resolver",
        }
    }
}

/// The client as steering sees it.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// The address looked up (ECS address, or the resolver's).
    pub addr: IpAddr,
    /// Where it came from.
    pub source: Source,
    /// Significant bits of `addr` (ECS source prefix, or the full address).
    pub prefix: u8,
}

/// A reply, ready to encode.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Response code.
    pub rcode: ResponseCode,
    /// Authoritative answer flag.
    pub authoritative: bool,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section (SOA for negative answers, NS for referrals to ourselves).
    pub authority: Vec<Record>,
    /// Additional section (glue).
    pub additional: Vec<Record>,
    /// ECS scope prefix to return (when the query carried ECS).
    pub scope: u8,
    /// The steered PoP, when the answer was steered.
    pub pop: Option<usize>,
    /// The decision, when one was made.
    pub decision: Option<Decision>,
    /// The GeoIP result, when one was looked up.
    pub place: Option<Place>,
}

impl Reply {
    fn new(rcode: ResponseCode, authoritative: bool) -> Self {
        Self {
            rcode,
            authoritative,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            scope: 0,
            pop: None,
            decision: None,
            place: None,
        }
    }
}

/// The zone and its steering: everything needed to answer, built once from the config.
#[derive(Debug)]
pub struct Zone {
    /// Zone name, lower case, no final dot.
    pub zone: String,
    zone_name: Name,
    /// Steering map.
    pub map: Map,
    /// Name servers: name (lower case, no final dot) and addresses.
    pub nameservers: Vec<(String, Vec<IpAddr>)>,
    /// TTL of steered and static answers.
    pub ttl: u32,
    tenants: HashMap<String, String>,
    /// Tenant hostnames learnt from the control plane (`/api/v1/tenants`), beside the file's.
    control_tenants: arc_swap::ArcSwap<HashMap<String, String>>,
    pops: HashMap<String, usize>,
    soa: Record,
    /// GeoIP database.
    pub geo: Option<Geo>,
}

/// Building the zone failed.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// The config is wrong (names the field).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The GeoIP database cannot be read.
    #[error("{0}")]
    Geo(#[from] crate::geo::GeoError),
}

fn dns_name(s: &str, path: &str) -> Result<Name, ConfigError> {
    Name::from_ascii(format!("{s}."))
        .map_err(|e| ConfigError::new(path, format!("{s:?} is not a DNS name: {e}")))
}

impl Zone {
    /// Build from a validated config; `geo` overrides `dns.geoip`.
    pub fn from_config(cfg: &Config, geo: Option<Geo>) -> Result<Self, ZoneError> {
        let dns = cfg.validate_dns()?;
        let Some(topo) = cfg.topology.as_ref() else {
            return Err(ConfigError::new("topology", "missing").into());
        };
        let zone = dns.zone.trim_end_matches('.').to_ascii_lowercase();
        let zone_name = dns_name(&zone, "dns.zone")?;
        let regions: Vec<steer::Region> = topo
            .regions
            .iter()
            .map(|r| steer::Region {
                name: r.name.clone(),
                lat: r.lat,
                lon: r.lon,
                countries: r.countries.clone(),
            })
            .collect();
        let mut pops = Vec::new();
        let mut pop_index = HashMap::new();
        for (i, p) in topo.pops.iter().enumerate() {
            let region = regions
                .iter()
                .position(|r| r.name == p.region)
                .ok_or_else(|| {
                    ConfigError::new(format!("topology.pop[{i}].region"), "no such region")
                })?;
            let mut addrs: Vec<IpAddr> =
                p.addresses.iter().filter_map(|a| a.parse().ok()).collect();
            if addrs.is_empty() {
                for b in &p.boxes {
                    if let Ok(sa) = b.listen.parse::<std::net::SocketAddr>() {
                        if !addrs.contains(&sa.ip()) {
                            addrs.push(sa.ip());
                        }
                    }
                }
            }
            let pop_label = p.name.to_ascii_lowercase();
            dns_name(
                &format!("{pop_label}.{zone}"),
                &format!("topology.pop[{i}].name"),
            )?;
            pop_index.insert(pop_label, i);
            pops.push(steer::Pop {
                name: p.name.clone(),
                region,
                v4: addrs
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V4(v) => Some(*v),
                        IpAddr::V6(_) => None,
                    })
                    .collect(),
                v6: addrs
                    .iter()
                    .filter_map(|a| match a {
                        IpAddr::V6(v) => Some(*v),
                        IpAddr::V4(_) => None,
                    })
                    .collect(),
                weight: p.weight,
                drain: p.drain,
            });
        }
        let default_region = if dns.default_region.is_empty() {
            0
        } else {
            regions
                .iter()
                .position(|r| r.name == dns.default_region)
                .unwrap_or(0)
        };
        let listen_ip = dns
            .listen
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip())
            .map_err(|_| ConfigError::new("dns.listen", "not an IP:port address"))?;
        let ns_addrs: Vec<IpAddr> = if dns.nameserver_addresses.is_empty() {
            vec![listen_ip]
        } else {
            dns.nameserver_addresses
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect()
        };
        let ns_names: Vec<String> = if dns.nameservers.is_empty() {
            vec![format!("ns1.{zone}")]
        } else {
            dns.nameservers
                .iter()
                .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                .collect()
        };
        let nameservers = ns_names
            .into_iter()
            .map(|n| (n, ns_addrs.clone()))
            .collect::<Vec<_>>();
        let tenants = tenant_names(
            &zone,
            cfg.tenants
                .iter()
                .map(|t| (t.name.as_str(), t.hostnames.as_slice())),
        );
        let ttl = u32::try_from(dns.ttl.0.as_secs()).unwrap_or(30).max(1);
        let mname = dns_name(&nameservers[0].0, "dns.nameservers[0]")?;
        let rname = dns_name(&format!("hostmaster.{zone}"), "dns.zone")?;
        // Serial: the config has no version of its own here; seconds since the epoch at
        // start is monotonic across restarts, which is what secondaries need.
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let soa = Record::from_rdata(
            zone_name.clone(),
            ttl,
            RData::SOA(SOA::new(mname, rname, serial, 3600, 600, 86_400, ttl)),
        );
        let geo = match geo {
            Some(g) => Some(g),
            None if !dns.geoip.is_empty() => Some(Geo::open(std::path::Path::new(&dns.geoip))?),
            None => None,
        };
        Ok(Self {
            zone,
            zone_name,
            map: Map {
                regions,
                pops,
                default_region,
            },
            nameservers,
            ttl,
            tenants,
            control_tenants: arc_swap::ArcSwap::from_pointee(HashMap::new()),
            pops: pop_index,
            soa,
            geo,
        })
    }

    /// The SOA record.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// Replace the control plane's tenants: (tenant name, its hostnames).
    pub fn set_control_tenants(&self, tenants: &[(String, Vec<String>)]) {
        let m = tenant_names(
            &self.zone,
            tenants.iter().map(|(n, h)| (n.as_str(), h.as_slice())),
        );
        if *self.control_tenants.load_full() != m {
            tracing::info!(
                hostnames = m.len(),
                "tenant hostnames from the control plane"
            );
            self.control_tenants.store(std::sync::Arc::new(m));
        }
    }

    /// Keep the control plane's tenants of `old` (across a reload).
    pub fn carry_over(&self, old: &Zone) {
        self.control_tenants.store(old.control_tenants.load_full());
    }

    /// What `name` (any case, with or without the final dot) is.
    pub fn classify(&self, name: &str) -> Target {
        let n = name.trim_end_matches('.').to_ascii_lowercase();
        if self.tenants.contains_key(&n) || self.control_tenants.load().contains_key(&n) {
            return Target::Tenant(n);
        }
        if n == self.zone {
            return Target::Apex;
        }
        if let Some(i) = self.nameservers.iter().position(|(ns, _)| *ns == n) {
            return Target::Nameserver(i);
        }
        let Some(rest) = n.strip_suffix(&self.zone).and_then(|r| r.strip_suffix('.')) else {
            return Target::NotOurs;
        };
        if let Some(i) = self.pops.get(rest) {
            return Target::Pop(*i);
        }
        Target::NoSuchName
    }

    /// Where `client` is.
    pub fn locate(&self, client: &Client) -> (Location, Place) {
        let place = match &self.geo {
            Some(g) => g.locate(client.addr),
            None => Place {
                country: None,
                prefix: 0,
            },
        };
        let bits = steer::key_bits(client.addr, client.prefix);
        (
            Location {
                country: place.country,
                key: steer::client_key(client.addr, bits),
            },
            place,
        )
    }

    /// Answer one question (`qtype` of `name`) from `client`, with PoP health `up`.
    pub fn answer(
        &self,
        name: &Name,
        qtype: RecordType,
        qclass: DNSClass,
        client: &Client,
        up: &[bool],
    ) -> Reply {
        if qclass != DNSClass::IN {
            return Reply::new(ResponseCode::Refused, false);
        }
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            // Zone transfers are not offered: every answer is computed per client.
            return Reply::new(ResponseCode::Refused, false);
        }
        let target = self.classify(&name.to_ascii());
        let mut r = Reply::new(ResponseCode::NoError, true);
        match target {
            Target::NotOurs => return Reply::new(ResponseCode::Refused, false),
            Target::NoSuchName => {
                r.rcode = ResponseCode::NXDomain;
                r.authority.push(self.soa.clone());
            }
            Target::Apex => match qtype {
                RecordType::SOA => r.answers.push(self.soa.clone()),
                RecordType::NS => {
                    for (ns, addrs) in &self.nameservers {
                        if let Ok(nsn) = Name::from_ascii(format!("{ns}.")) {
                            r.answers.push(Record::from_rdata(
                                self.zone_name.clone(),
                                self.ttl,
                                RData::NS(NS(nsn.clone())),
                            ));
                            for a in addrs {
                                r.additional.push(addr_record(&nsn, self.ttl, *a));
                            }
                        }
                    }
                }
                RecordType::ANY => r.answers.push(self.soa.clone()),
                _ => r.authority.push(self.soa.clone()),
            },
            Target::Nameserver(i) => {
                let addrs = &self.nameservers[i].1;
                self.fill(&mut r, name, qtype, addrs.iter().copied());
            }
            Target::Pop(i) => {
                let p = &self.map.pops[i];
                let addrs =
                    p.v4.iter()
                        .map(|a| IpAddr::V4(*a))
                        .chain(p.v6.iter().map(|a| IpAddr::V6(*a)));
                self.fill(&mut r, name, qtype, addrs);
            }
            Target::Tenant(host) => {
                let family = match qtype {
                    RecordType::A | RecordType::ANY => Some(Family::V4),
                    RecordType::AAAA => Some(Family::V6),
                    _ => None,
                };
                let Some(family) = family else {
                    // NODATA: the name exists, the type does not.
                    if host.ends_with(&self.zone) {
                        r.authority.push(self.soa.clone());
                    }
                    return r;
                };
                let (loc, place) = self.locate(client);
                let d = self.map.choose(&loc, family, up);
                if let Some(i) = d.chosen {
                    let p = &self.map.pops[i];
                    match family {
                        Family::V4 => r.answers.extend(
                            p.v4.iter()
                                .map(|a| addr_record(name, self.ttl, IpAddr::V4(*a))),
                        ),
                        Family::V6 => r.answers.extend(
                            p.v6.iter()
                                .map(|a| addr_record(name, self.ttl, IpAddr::V6(*a))),
                        ),
                    }
                    r.pop = Some(i);
                } else if host.ends_with(&self.zone) {
                    r.authority.push(self.soa.clone());
                }
                // RFC 7871 §7.2.1: the scope covers the bits the answer depended on: the
                // GeoIP network, and the steering key's bits when a weight bucket decided.
                if client.source == Source::Ecs && client.prefix > 0 {
                    let key_bits = if d.bucketed {
                        steer::key_bits(client.addr, client.prefix)
                    } else {
                        0
                    };
                    r.scope = place.prefix.max(key_bits);
                }
                r.decision = Some(d);
                r.place = Some(place);
            }
        }
        r
    }

    fn fill(
        &self,
        r: &mut Reply,
        name: &Name,
        qtype: RecordType,
        addrs: impl Iterator<Item = IpAddr>,
    ) {
        let want = |a: &IpAddr| match qtype {
            RecordType::A => a.is_ipv4(),
            RecordType::AAAA => a.is_ipv6(),
            RecordType::ANY => true,
            _ => false,
        };
        r.answers
            .extend(addrs.filter(want).map(|a| addr_record(name, self.ttl, a)));
        if r.answers.is_empty() {
            r.authority.push(self.soa.clone());
        }
    }
}

/// Every name a tenant is answered for: each hostname (lower case, no final dot) and
/// `<hostname>.<zone>`, mapped to the tenant; `*`, IP addresses and non-DNS names are skipped.
fn tenant_names<'a>(
    zone: &str,
    tenants: impl Iterator<Item = (&'a str, &'a [String])>,
) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for (name, hosts) in tenants {
        for h in hosts {
            let h = h.trim_end_matches('.').to_ascii_lowercase();
            if h == "*" || h.parse::<IpAddr>().is_ok() || !outpost_config::is_dns_name(&h) {
                continue;
            }
            m.insert(format!("{h}.{zone}"), name.to_string());
            m.insert(h, name.to_string());
        }
    }
    m
}

fn addr_record(name: &Name, ttl: u32, a: IpAddr) -> Record {
    match a {
        IpAddr::V4(v) => Record::from_rdata(name.clone(), ttl, RData::A(A(v))),
        IpAddr::V6(v) => Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(v))),
    }
}

/// The client of a query: the ECS option's subnet when it has a non-zero source prefix,
/// otherwise the resolver's address.
pub fn client_of(src: IpAddr, ecs: Option<(IpAddr, u8)>) -> Client {
    match ecs {
        Some((addr, prefix)) if prefix > 0 => Client {
            addr,
            source: Source::Ecs,
            prefix,
        },
        _ => Client {
            addr: src,
            source: Source::Resolver,
            prefix: if src.is_ipv4() { 32 } else { 128 },
        },
    }
}

/// The query's client subnet option, if any; FORMERR when it is malformed (RFC 7871 §6).
pub fn request_subnet(
    edns: Option<&hickory_proto::op::Edns>,
) -> Result<Option<hickory_proto::rr::rdata::opt::ClientSubnet>, ResponseCode> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match edns.and_then(|e| e.option(EdnsCode::Subnet)) {
        Some(EdnsOption::Subnet(s)) if ecs_is_valid(s.addr(), s.source_prefix()) => Ok(Some(*s)),
        Some(_) => Err(ResponseCode::FormErr),
        None => Ok(None),
    }
}

/// RFC 7871 §6: ADDRESS bits beyond SOURCE PREFIX-LENGTH must be zero (the decoder already
/// checked the length).
pub fn ecs_is_valid(addr: IpAddr, source_prefix: u8) -> bool {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    source_prefix <= max && steer::truncate(addr, source_prefix) == addr
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const CONFIG: &str = r#"
[dns]
zone = "CDN.test."
[[tenant]]
name = "site"
hostnames = ["www.example.com", "*", "10.0.0.1"]
origins = ["http://127.0.0.1:9"]
[topology]
[[topology.region]]
name = "eu"
lat = 50.1
lon = 8.7
[[topology.pop]]
name = "fra"
region = "eu"
addresses = ["192.0.2.1", "2001:db8::1"]
[[topology.pop.box]]
name = "fra-a"
listen = "127.0.0.1:9"
"#;

    fn zone() -> Zone {
        Zone::from_config(&Config::parse_toml(CONFIG).unwrap(), None).unwrap()
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn names_are_classified_case_insensitively() {
        let z = zone();
        assert_eq!(z.classify("cdn.test."), Target::Apex);
        assert_eq!(z.classify("NS1.cdn.test"), Target::Nameserver(0));
        assert_eq!(z.classify("fra.cdn.test"), Target::Pop(0));
        assert_eq!(
            z.classify("WWW.Example.com."),
            Target::Tenant("www.example.com".into())
        );
        assert_eq!(
            z.classify("www.example.com.cdn.test"),
            Target::Tenant("www.example.com.cdn.test".into())
        );
        assert_eq!(z.classify("other.cdn.test"), Target::NoSuchName);
        assert_eq!(z.classify("example.org"), Target::NotOurs);
        assert_eq!(z.classify("xcdn.test"), Target::NotOurs);
        // "*" and IP hostnames are not DNS names.
        assert_eq!(z.classify("10.0.0.1"), Target::NotOurs);
    }

    #[test]
    fn tenants_from_the_control_plane_are_answered_until_removed() {
        let z = zone();
        let resolver = client_of([127, 0, 0, 1].into(), None);
        let q = name("shop.example.net.");
        let r = z.answer(&q, RecordType::A, DNSClass::IN, &resolver, &[true]);
        assert_eq!(r.rcode, ResponseCode::Refused);
        z.set_control_tenants(&[("shop".into(), vec!["Shop.Example.net".into(), "*".into()])]);
        let r = z.answer(&q, RecordType::A, DNSClass::IN, &resolver, &[true]);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(
            z.classify("shop.example.net.cdn.test"),
            Target::Tenant("shop.example.net.cdn.test".into())
        );
        z.set_control_tenants(&[]);
        let r = z.answer(&q, RecordType::A, DNSClass::IN, &resolver, &[true]);
        assert_eq!(r.rcode, ResponseCode::Refused);
    }

    #[test]
    fn answers_by_type() {
        let z = zone();
        let c = client_of([127, 0, 0, 1].into(), None);
        let up = [true];
        let a = z.answer(
            &name("www.example.com."),
            RecordType::AAAA,
            DNSClass::IN,
            &c,
            &up,
        );
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.scope, 0, "no ECS: no scope");
        let mx = z.answer(
            &name("www.example.com."),
            RecordType::MX,
            DNSClass::IN,
            &c,
            &up,
        );
        assert_eq!(mx.rcode, ResponseCode::NoError);
        assert!(mx.answers.is_empty() && mx.authority.is_empty());
        let ns = z.answer(&name("cdn.test."), RecordType::NS, DNSClass::IN, &c, &up);
        assert_eq!(ns.answers.len(), 1);
        assert_eq!(ns.additional.len(), 1, "glue");
        let nx = z.answer(&name("x.cdn.test."), RecordType::A, DNSClass::IN, &c, &up);
        assert_eq!(nx.rcode, ResponseCode::NXDomain);
        assert_eq!(nx.authority.len(), 1);
        let ch = z.answer(
            &name("www.example.com."),
            RecordType::A,
            DNSClass::CH,
            &c,
            &up,
        );
        assert_eq!(ch.rcode, ResponseCode::Refused);
        // ECS with a source prefix: a scope is returned (no GeoIP: prefix 0 unless bucketed).
        let e = client_of([127, 0, 0, 1].into(), Some(([81, 2, 69, 0].into(), 24)));
        assert_eq!(e.source, Source::Ecs);
        let r = z.answer(
            &name("www.example.com."),
            RecordType::A,
            DNSClass::IN,
            &e,
            &up,
        );
        assert_eq!(r.pop, Some(0));
        // Source prefix 0: the resolver's address.
        let zero = client_of([127, 0, 0, 1].into(), Some(([0, 0, 0, 0].into(), 0)));
        assert_eq!(zero.source, Source::Resolver);
    }

    #[test]
    fn ecs_validity() {
        assert!(ecs_is_valid([81, 2, 69, 0].into(), 24));
        assert!(!ecs_is_valid([81, 2, 69, 1].into(), 24));
        assert!(ecs_is_valid([0, 0, 0, 0].into(), 0));
        assert!(!ecs_is_valid([1, 0, 0, 0].into(), 0));
        assert!(!ecs_is_valid([1, 2, 3, 4].into(), 33));
    }
}
