//! The GeoDNS's side of a query: any bytes that hickory parses as a DNS message go through our
//! client-subnet validation, name classification and answer (GeoIP off, every PoP up or down as
//! the input says). Nothing may panic; an answer never names a PoP that has no address of the
//! asked family.
#![no_main]

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use outpost_dns::answer::{client_of, request_subnet, Zone};
use std::sync::OnceLock;

const CONFIG: &str = r#"
[dns]
zone = "cdn.test"
[[tenant]]
name = "site"
hostnames = ["www.example.com", "a.b.example.org"]
origins = ["http://127.0.0.1:9"]
[topology]
[[topology.region]]
name = "eu"
lat = 50.1
lon = 8.7
[[topology.region]]
name = "us"
lat = 39.0
lon = -77.5
countries = ["DE"]
[[topology.pop]]
name = "fra"
region = "eu"
addresses = ["192.0.2.1"]
weight = 40
[[topology.pop.box]]
name = "fra-a"
listen = "127.0.0.1:9"
[[topology.pop]]
name = "iad"
region = "us"
addresses = ["2001:db8::2"]
[[topology.pop.box]]
name = "iad-a"
listen = "127.0.0.1:10"
"#;

fn zone() -> &'static Zone {
    static Z: OnceLock<Zone> = OnceLock::new();
    Z.get_or_init(|| {
        let cfg = outpost_config::Config::parse_toml(CONFIG).expect("config");
        Zone::from_config(&cfg, None).expect("zone")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&health, packet)) = data.split_first() else {
        return;
    };
    let Ok(msg) = Message::from_vec(packet) else {
        return;
    };
    let Ok(ecs) = request_subnet(msg.edns.as_ref()) else {
        return;
    };
    let up = [health & 1 == 1, health & 2 == 2];
    let src = std::net::IpAddr::from([health, 2, 3, 4]);
    let client = client_of(src, ecs.map(|s| (s.addr(), s.source_prefix())));
    for q in &msg.queries {
        let r = zone().answer(q.name(), q.query_type(), q.query_class(), &client, &up);
        if let Some(p) = r.pop {
            let pop = &zone().map.pops[p];
            assert!(!r.answers.is_empty() || (pop.v4.is_empty() && pop.v6.is_empty()));
        }
        assert!(r.scope <= 128);
    }
});
