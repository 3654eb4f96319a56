//! The dns node under bad input (proof 3 of the GeoDNS issue): malformed packets, oversized
//! queries, unknown types and opcodes, bad EDNS and client-subnet options, and a bounded query
//! flood on 127.0.0.1. Every case gets the right response code (or, for what cannot be answered
//! at all, silence), and the server keeps answering good queries throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hickory_proto::op::{Message, ResponseCode};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

const CONFIG: &str = r#"
[dns]
listen = "127.0.0.1:0"
zone = "cdn.test"
probe_interval = "1s"

[[tenant]]
name = "site"
hostnames = ["www.example.com"]
origins = ["http://127.0.0.1:9"]

[topology]
[[topology.region]]
name = "eu"
lat = 50.1
lon = 8.7

[[topology.pop]]
name = "fra"
region = "eu"
addresses = ["192.0.2.1"]
[[topology.pop.box]]
name = "fra-a"
listen = "127.0.0.1:9"
"#;

async fn server() -> outpost_dns::RunningDns {
    let cfg = outpost_config::Config::parse_toml(CONFIG).unwrap();
    let node = outpost_dns::DnsNode::from_config(&cfg, None).unwrap();
    outpost_dns::start(node, "127.0.0.1:0", None, None)
        .await
        .unwrap()
}

/// A query: id, flags (opcode in bits 11-14), one question, optional OPT with raw options.
fn query(id: u16, opcode: u8, name: &str, qtype: u16, opt: Option<(u8, Vec<u8>)>) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    let flags: u16 = (u16::from(opcode) << 11) | 0x0100; // RD
    p.extend_from_slice(&flags.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes());
    p.extend_from_slice(&u16::from(opt.is_some()).to_be_bytes());
    for label in name.split('.').filter(|l| !l.is_empty()) {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes()); // IN
    if let Some((version, options)) = opt {
        p.push(0); // root
        p.extend_from_slice(&41u16.to_be_bytes());
        p.extend_from_slice(&1232u16.to_be_bytes());
        p.push(0); // ext rcode
        p.push(version);
        p.extend_from_slice(&0u16.to_be_bytes());
        p.extend_from_slice(&(options.len() as u16).to_be_bytes());
        p.extend_from_slice(&options);
    }
    p
}

/// An ECS option (code 8) with raw fields.
fn ecs(family: u16, source: u8, scope: u8, addr: &[u8]) -> Vec<u8> {
    let mut o = Vec::new();
    o.extend_from_slice(&8u16.to_be_bytes());
    o.extend_from_slice(&((4 + addr.len()) as u16).to_be_bytes());
    o.extend_from_slice(&family.to_be_bytes());
    o.push(source);
    o.push(scope);
    o.extend_from_slice(addr);
    o
}

async fn ask(server: SocketAddr, packet: &[u8]) -> Option<Message> {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_millis(700), s.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(Message::from_vec(&buf[..n]).expect("the server's reply parses")),
        _ => None,
    }
}

async fn rcode(server: SocketAddr, packet: &[u8]) -> Option<ResponseCode> {
    ask(server, packet).await.map(|m| m.metadata.response_code)
}

async fn still_answers(server: SocketAddr) {
    let m = ask(server, &query(7, 0, "www.example.com", 1, None))
        .await
        .expect("a good query is answered");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unusual_queries_get_the_right_codes() {
    let dns = server().await;
    let a = dns.addr;
    still_answers(a).await;

    // Garbage shorter than a header: nothing to answer to.
    assert!(ask(a, &[1, 2, 3]).await.is_none());
    still_answers(a).await;
    // A header promising a question that is not there: FORMERR.
    let mut trunc = query(1, 0, "www.example.com", 1, None);
    trunc.truncate(16);
    assert_eq!(rcode(a, &trunc).await, Some(ResponseCode::FormErr));
    // Two questions: FORMERR.
    let mut two = query(2, 0, "www.example.com", 1, None);
    let q = two[12..].to_vec();
    two[5] = 2;
    two.extend_from_slice(&q);
    assert_eq!(rcode(a, &two).await, Some(ResponseCode::FormErr));
    // A name label pointing at itself (compression loop): FORMERR, no hang.
    let mut lp = query(3, 0, "", 1, None);
    lp.truncate(12);
    lp.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    assert_eq!(rcode(a, &lp).await, Some(ResponseCode::FormErr));
    // Random bytes behind a valid-looking header, many times: never a crash.
    let mut seed = 0x1234_5678_u64;
    for i in 0..300u16 {
        let mut p = query(i, 0, "www.example.com", 1, None);
        let len = p.len();
        for b in p[12..len].iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed.is_multiple_of(3) {
                *b = seed as u8;
            }
        }
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(&p, a).await.unwrap();
    }
    still_answers(a).await;

    // Opcodes other than QUERY: NOTIFY (4), UPDATE (5), STATUS (2) → NOTIMP.
    for op in [2u8, 4, 5] {
        let r = rcode(a, &query(10, op, "www.example.com", 1, None)).await;
        assert!(
            matches!(r, Some(ResponseCode::NotImp) | Some(ResponseCode::FormErr)),
            "opcode {op}: {r:?}"
        );
    }
    // Unknown type for a tenant name: NOERROR, no data, authoritative.
    let m = ask(a, &query(11, 0, "www.example.com", 65280, None))
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert!(m.answers.is_empty());
    // Unknown type inside the zone: NODATA with the SOA; a missing name: NXDOMAIN.
    let m = ask(a, &query(12, 0, "fra.cdn.test", 65280, None))
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.authorities.len(), 1);
    let m = ask(a, &query(13, 0, "nothing.cdn.test", 1, None))
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // Not our zone: REFUSED, not authoritative.
    let m = ask(a, &query(14, 0, "example.org", 1, None)).await.unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.authoritative);
    // Zone transfer: REFUSED.
    assert_eq!(
        rcode(a, &query(15, 0, "cdn.test", 252, None)).await,
        Some(ResponseCode::Refused)
    );

    // EDNS version 1: BADVERS (RFC 6891 §6.1.3), extended rcode 16 (which hickory's parser
    // names BADSIG: the two share the number).
    let r = rcode(a, &query(20, 0, "www.example.com", 1, Some((1, vec![])))).await;
    assert!(
        matches!(r, Some(ResponseCode::BADVERS | ResponseCode::BADSIG)),
        "{r:?}"
    );
    // ECS with address bits beyond the source prefix: FORMERR (RFC 7871 §6).
    assert_eq!(
        rcode(
            a,
            &query(
                21,
                0,
                "www.example.com",
                1,
                Some((0, ecs(1, 20, 0, &[81, 2, 69])))
            )
        )
        .await,
        Some(ResponseCode::FormErr)
    );
    // ECS source prefix longer than the family allows: FORMERR.
    assert_eq!(
        rcode(
            a,
            &query(
                22,
                0,
                "www.example.com",
                1,
                Some((0, ecs(1, 40, 0, &[1, 2, 3, 4, 5])))
            )
        )
        .await,
        Some(ResponseCode::FormErr)
    );
    // Unknown family: FORMERR.
    assert_eq!(
        rcode(
            a,
            &query(23, 0, "www.example.com", 1, Some((0, ecs(9, 8, 0, &[1]))))
        )
        .await,
        Some(ResponseCode::FormErr)
    );
    // A good ECS is echoed with a scope; source 0 gets scope 0.
    let m = ask(
        a,
        &query(
            24,
            0,
            "www.example.com",
            1,
            Some((0, ecs(1, 24, 0, &[81, 2, 69]))),
        ),
    )
    .await
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.edns.is_some());
    let m = ask(
        a,
        &query(25, 0, "www.example.com", 1, Some((0, ecs(1, 0, 0, &[])))),
    )
    .await
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);

    // A response (QR set) is never answered: no reflection.
    let mut resp = query(30, 0, "www.example.com", 1, None);
    resp[2] |= 0x80;
    assert!(ask(a, &resp).await.is_none());

    // Oversized: a 9,000-byte UDP datagram and a 65,535-byte TCP message of junk.
    let mut big = query(31, 0, "www.example.com", 1, None);
    big.resize(9000, 0xAB);
    let _ = ask(a, &big).await;
    still_answers(a).await;
    let mut tcp = tokio::net::TcpStream::connect(a).await.unwrap();
    let mut junk = vec![0xFFu8, 0xFF];
    junk.extend(std::iter::repeat_n(0x41u8, 65_535));
    let _ = tcp.write_all(&junk).await;
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut sink)).await;
    drop(tcp);
    still_answers(a).await;

    // A good query over TCP works.
    let q = query(40, 0, "www.example.com", 1, None);
    let mut tcp = tokio::net::TcpStream::connect(a).await.unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    tcp.write_all(&framed).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(2), tcp.read_exact(&mut len))
        .await
        .unwrap()
        .unwrap();
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    tcp.read_exact(&mut body).await.unwrap();
    let m = Message::from_vec(&body).unwrap();
    assert_eq!(m.answers.len(), 1);

    // Counted by code.
    let text = dns.node().render_metrics();
    assert!(text.contains("outpost_dns_responses_total{rcode=\"FORMERR\"}"));
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_flood_leaves_the_server_answering() {
    let dns = server().await;
    let a = dns.addr;
    // 8 senders × 5,000 queries as fast as they go (127.0.0.1 only), replies ignored.
    let mut senders = Vec::new();
    for t in 0..8u16 {
        senders.push(tokio::spawn(async move {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            for i in 0..5000u16 {
                let name = if i.is_multiple_of(3) {
                    "www.example.com"
                } else {
                    "nothing.cdn.test"
                };
                let _ = s
                    .send_to(&query(t.wrapping_mul(5000) ^ i, 0, name, 1, None), a)
                    .await;
            }
        }));
    }
    // While the flood runs, good queries keep being answered (a few may be lost to full socket
    // buffers, as under any UDP flood; most are not).
    let started = Instant::now();
    let mut answered = 0;
    let mut worst = Duration::ZERO;
    for i in 0..20u16 {
        let t = Instant::now();
        if let Some(m) = ask(a, &query(60_000 + i, 0, "www.example.com", 1, None)).await {
            if m.metadata.id == 60_000 + i {
                answered += 1;
                worst = worst.max(t.elapsed());
            }
        }
    }
    for s in senders {
        s.await.unwrap();
    }
    eprintln!(
        "flood: {answered}/20 probe queries answered during 40,000 flood queries, worst {worst:?}, {:?} in all",
        started.elapsed()
    );
    assert!(answered >= 10, "{answered}/20");
    // After the flood: every good query answered.
    for _ in 0..5 {
        still_answers(a).await;
    }
    dns.stop().await;
}
