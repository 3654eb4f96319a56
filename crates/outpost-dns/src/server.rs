//! The `dns` node: hickory-server on UDP and TCP in front of [`Zone::answer`], the health
//! prober, the control plane's heartbeat watch, and an admin HTTP listener (`/metrics` in
//! Prometheus text, `/healthz`, `/explain?name=&subnet=` as JSON).
//!
//! One query, top to bottom in [`DnsHandler::handle_request`]: opcode and question count,
//! EDNS version, the RFC 7871 client subnet (malformed → FORMERR), the answer, the OPT record
//! echoing the subnet with its scope, metrics.

use crate::answer::{client_of, request_subnet, Client, Reply, Source, Target, Zone};
use crate::health::{Health, Policy, Probe};
use hickory_proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use outpost_config::Config;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Response codes we count (index into [`Metrics::rcodes`]).
const RCODES: [&str; 7] = [
    "NOERROR", "NXDOMAIN", "REFUSED", "FORMERR", "NOTIMP", "SERVFAIL", "BADVERS",
];

fn rcode_index(r: ResponseCode) -> usize {
    match r {
        ResponseCode::NoError => 0,
        ResponseCode::NXDomain => 1,
        ResponseCode::Refused => 2,
        ResponseCode::FormErr => 3,
        ResponseCode::NotImp => 4,
        ResponseCode::BADVERS => 6,
        _ => 5,
    }
}

/// Counters of the dns node.
#[derive(Debug)]
pub struct Metrics {
    /// Steered answers per PoP × source (ECS, resolver).
    steered: Vec<[AtomicU64; 2]>,
    rcodes: [AtomicU64; 7],
    fail_open: AtomicU64,
}

impl Metrics {
    fn new(pops: usize) -> Self {
        Self {
            steered: (0..pops)
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
            rcodes: Default::default(),
            fail_open: AtomicU64::new(0),
        }
    }

    /// Take the counts of `old` (same PoP names) so a reload does not reset counters.
    fn carry_over(&self, old: &Metrics, names: &[String], old_names: &[String]) {
        for (i, n) in names.iter().enumerate() {
            if let Some(oi) = old_names.iter().position(|o| o == n) {
                for k in 0..2 {
                    self.steered[i][k].store(
                        old.steered[oi][k].load(Ordering::Relaxed),
                        Ordering::Relaxed,
                    );
                }
            }
        }
        for (a, b) in self.rcodes.iter().zip(old.rcodes.iter()) {
            a.store(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.fail_open
            .store(old.fail_open.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Steered answers for PoP `pop` from `source`.
    pub fn steered(&self, pop: usize, source: Source) -> u64 {
        self.steered
            .get(pop)
            .map(|c| c[source as usize].load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

/// Everything a query needs.
#[derive(Debug)]
pub struct DnsNode {
    /// Zone and steering.
    pub zone: Zone,
    /// PoP health.
    pub health: Arc<Health>,
    /// Counters.
    pub metrics: Metrics,
}

impl DnsNode {
    /// Build from a config (GeoIP from `dns.geoip` unless `geo` is given).
    pub fn from_config(
        cfg: &Config,
        geo: Option<crate::geo::Geo>,
    ) -> Result<Self, crate::answer::ZoneError> {
        let zone = Zone::from_config(cfg, geo)?;
        let dns = cfg.dns.clone().unwrap_or_default();
        let topo = cfg.topology.as_ref();
        let pops = topo
            .map(|t| {
                t.pops
                    .iter()
                    .map(|p| {
                        let boxes = p
                            .boxes
                            .iter()
                            .map(|b| {
                                let probe = if b.metrics.is_empty() {
                                    Probe::Tcp(b.listen.clone())
                                } else {
                                    Probe::Http(b.metrics.clone())
                                };
                                (b.name.clone(), probe)
                            })
                            .collect();
                        (p.name.clone(), boxes)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let health = Arc::new(Health::new(
            pops,
            Policy {
                interval: dns.probe_interval.0,
                timeout: dns.probe_timeout.0,
                fall: dns.probe_fall,
                rise: dns.probe_rise,
            },
        ));
        let metrics = Metrics::new(zone.map.pops.len());
        Ok(Self {
            zone,
            health,
            metrics,
        })
    }

    /// Prometheus text.
    pub fn render_metrics(&self) -> String {
        let mut s = String::new();
        s.push_str("# HELP outpost_dns_answers_total Steered answers by PoP and by where the client address came from.\n# TYPE outpost_dns_answers_total counter\n");
        for (i, p) in self.zone.map.pops.iter().enumerate() {
            for src in [Source::Ecs, Source::Resolver] {
                s.push_str(&format!(
                    "outpost_dns_answers_total{{pop=\"{}\",source=\"{}\"}} {}\n",
                    p.name,
                    src.as_str(),
                    self.metrics.steered(i, src)
                ));
            }
        }
        s.push_str("# HELP outpost_dns_responses_total Responses by code.\n# TYPE outpost_dns_responses_total counter\n");
        for (i, name) in RCODES.iter().enumerate() {
            s.push_str(&format!(
                "outpost_dns_responses_total{{rcode=\"{name}\"}} {}\n",
                self.metrics.rcodes[i].load(Ordering::Relaxed)
            ));
        }
        s.push_str("# HELP outpost_dns_fail_open_total Answers given with every PoP down, drained or shedding.\n# TYPE outpost_dns_fail_open_total counter\n");
        s.push_str(&format!(
            "outpost_dns_fail_open_total {}\n",
            self.metrics.fail_open.load(Ordering::Relaxed)
        ));
        s.push_str("# HELP outpost_dns_pop_up PoP health as steering sees it.\n# TYPE outpost_dns_pop_up gauge\n");
        for (i, p) in self.zone.map.pops.iter().enumerate() {
            s.push_str(&format!(
                "outpost_dns_pop_up{{pop=\"{}\"}} {}\n",
                p.name,
                u8::from(self.health.is_up(i))
            ));
        }
        s.push_str("# HELP outpost_dns_health_changes_total PoP health changes (up to down or back).\n# TYPE outpost_dns_health_changes_total counter\n");
        for (i, p) in self.zone.map.pops.iter().enumerate() {
            s.push_str(&format!(
                "outpost_dns_health_changes_total{{pop=\"{}\"}} {}\n",
                p.name,
                self.health.changes[i].load(Ordering::Relaxed)
            ));
        }
        s
    }

    /// Why `name` from `subnet` (or resolver address) gets the answer it gets, as JSON.
    pub fn explain(&self, name: &str, client: &Client, family_v6: bool) -> Value {
        let qname = match Name::from_ascii(format!("{}.", name.trim_end_matches('.'))) {
            Ok(n) => n,
            Err(e) => return json!({"error": format!("{name:?} is not a DNS name: {e}")}),
        };
        let up = self.health.snapshot();
        let qtype = if family_v6 {
            RecordType::AAAA
        } else {
            RecordType::A
        };
        let reply = self
            .zone
            .answer(&qname, qtype, hickory_proto::rr::DNSClass::IN, client, &up);
        let target = match self.zone.classify(name) {
            Target::Tenant(_) => "tenant hostname: steered",
            Target::Apex => "zone apex",
            Target::Nameserver(_) => "name server",
            Target::Pop(_) => "PoP service name: not steered",
            Target::NoSuchName => "no such name in the zone",
            Target::NotOurs => "not in this server's zone: refused",
        };
        let place = reply.place.map(|p| {
            json!({
                "country": p.country.map(|c| c.code),
                "continent": p.country.map(|c| c.continent),
                "lat": p.country.map(|c| c.lat),
                "lon": p.country.map(|c| c.lon),
                "network_prefix": p.prefix,
            })
        });
        let ranking: Vec<Value> = reply
            .decision
            .as_ref()
            .map(|d| {
                d.steps
                    .iter()
                    .map(|(r, v)| {
                        let p = &self.zone.map.pops[r.pop];
                        let why = match v {
                            crate::steer::Verdict::Shed { bucket, weight } => {
                                format!("client bucket {bucket} >= weight {weight}")
                            }
                            crate::steer::Verdict::Down => "failing health checks".to_string(),
                            crate::steer::Verdict::Drained => "drained".to_string(),
                            crate::steer::Verdict::NoAddress => {
                                "no address of this family".to_string()
                            }
                            crate::steer::Verdict::Chosen => "nearest eligible".to_string(),
                            crate::steer::Verdict::NotReached => String::new(),
                        };
                        json!({
                            "pop": p.name,
                            "region": self.zone.map.regions[p.region].name,
                            "km": r.km,
                            "country_listed": r.listed,
                            "up": up.get(r.pop).copied().unwrap_or(false),
                            "boxes": self.health.boxes(r.pop),
                            "weight": p.weight,
                            "drain": p.drain,
                            "verdict": v.as_str(),
                            "why": why,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "name": name,
            "target": target,
            "client": {
                "address": client.addr.to_string(),
                "prefix": client.prefix,
                "source": client.source.as_str(),
            },
            "location": place,
            "default_region": self.zone.map.regions.get(self.zone.map.default_region).map(|r| r.name.clone()),
            "rcode": RCODES[rcode_index(reply.rcode)],
            "answer": reply.answers.iter().map(|r| r.data.to_string()).collect::<Vec<_>>(),
            "pop": reply.pop.map(|i| self.zone.map.pops[i].name.clone()),
            "fail_open": reply.decision.as_ref().map(|d| d.fail_open),
            "ecs_scope": reply.scope,
            "ranking": ranking,
            "ttl": self.zone.ttl,
        })
    }
}

/// The current node, swapped whole on a config reload.
type Shared = Arc<arc_swap::ArcSwap<DnsNode>>;

/// hickory's request handler.
#[derive(Debug, Clone)]
pub struct DnsHandler {
    node: Shared,
}

impl DnsHandler {
    async fn send<R: ResponseHandler>(
        node: &DnsNode,
        request: &Request,
        mut response_handle: R,
        reply: Reply,
        ecs: Option<ClientSubnet>,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = false;
        metadata.response_code = reply.rcode;
        node.metrics.rcodes[rcode_index(reply.rcode)].fetch_add(1, Ordering::Relaxed);
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            // RFC 6891 §6.2.5: at least 512; 1232 avoids IP fragmentation (DNS flag day 2020).
            e.set_max_payload(req.max_payload().clamp(512, 1232));
            if let Some(mut s) = ecs {
                s.set_scope_prefix(reply.scope);
                e.options_mut().insert(EdnsOption::Subnet(s));
            }
            e
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = edns.as_ref() {
            builder.edns(e);
        }
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authority.iter(),
            std::iter::empty(),
            reply.additional.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "dns response not sent");
                let mut m = Metadata::response_from_request(&request.metadata);
                m.response_code = ResponseCode::ServFail;
                ResponseInfo::from(hickory_proto::op::Header {
                    metadata: m,
                    counts: Default::default(),
                })
            }
        }
    }

    fn error(rcode: ResponseCode) -> Reply {
        Reply {
            rcode,
            authoritative: false,
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

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        use tracing::Instrument;
        let span = tracing::debug_span!("dns", id = request.metadata.id, src = %request.src());
        self.handle(request, response_handle).instrument(span).await
    }
}

impl DnsHandler {
    async fn handle<R: ResponseHandler>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let node = self.node.load_full();
        let node = node.as_ref();
        let admitted = admit(request).and_then(|ecs| {
            let q = request
                .queries
                .queries()
                .first()
                .ok_or(ResponseCode::FormErr)?;
            Ok((ecs, q))
        });
        let (ecs, q) = match admitted {
            Ok(a) => a,
            Err(code) => {
                return Self::send(node, request, response_handle, Self::error(code), None).await
            }
        };
        let client = client_of(
            request.src().ip(),
            ecs.map(|s| (s.addr(), s.source_prefix())),
        );
        let up = node.health.snapshot();
        let name: Name = q.name().into();
        let reply = node
            .zone
            .answer(&name, q.query_type(), q.query_class(), &client, &up);
        if let Some(pop) = reply.pop {
            if let Some(c) = node.metrics.steered.get(pop) {
                c[client.source as usize].fetch_add(1, Ordering::Relaxed);
            }
            if reply.decision.as_ref().is_some_and(|d| d.fail_open) {
                node.metrics.fail_open.fetch_add(1, Ordering::Relaxed);
            }
        }
        Self::send(node, request, response_handle, reply, ecs).await
    }
}

/// What a query must be before it is answered: a QUERY (else NOTIMP), EDNS version 0 (else
/// BADVERS, RFC 6891 §6.1.3), exactly one question and nothing in the answer and authority
/// sections (else FORMERR), a well-formed client subnet (else FORMERR). Its subnet, if any.
fn admit(request: &Request) -> Result<Option<ClientSubnet>, ResponseCode> {
    if request.metadata.op_code != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return Err(ResponseCode::BADVERS);
    }
    if request.queries.queries().len() != 1
        || !request.answers.is_empty()
        || !request.authorities.is_empty()
    {
        return Err(ResponseCode::FormErr);
    }
    request_subnet(request.edns.as_ref())
}

/// A running dns node.
pub struct RunningDns {
    shared: Shared,
    prober: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// UDP and TCP address.
    pub addr: SocketAddr,
    /// Admin HTTP address, if any.
    pub admin: Option<SocketAddr>,
    server: hickory_server::Server<DnsHandler>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RunningDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningDns")
            .field("addr", &self.addr)
            .field("admin", &self.admin)
            .finish()
    }
}

/// Starting failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad config or GeoIP file.
    #[error("{0}")]
    Zone(#[from] crate::answer::ZoneError),
    /// A listener could not be bound.
    #[error("{what} {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Its address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The control plane's heartbeat view, as a passive health signal.
#[derive(Debug, Clone)]
pub struct ControlWatch {
    /// `http://host:port` of its API.
    pub api: String,
    /// API key (admin).
    pub key: String,
    /// Heartbeat age that holds a box down.
    pub stale: Duration,
    /// Poll period.
    pub every: Duration,
}

/// Start the dns node: one probe round, then UDP+TCP on `listen` (port 0: any) and the admin
/// listener.
pub async fn start(
    node: DnsNode,
    listen: &str,
    admin: Option<&str>,
    control: Option<ControlWatch>,
) -> Result<RunningDns, StartError> {
    // Probe once before answering, so a PoP that is down at start never gets clients.
    node.health.probe_round().await;
    let shared: Shared = Arc::new(arc_swap::ArcSwap::from_pointee(node));
    let node = shared.load_full();
    let udp = tokio::net::UdpSocket::bind(listen)
        .await
        .map_err(|source| StartError::Bind {
            what: "dns udp",
            addr: listen.to_string(),
            source,
        })?;
    let addr = udp.local_addr().map_err(|source| StartError::Bind {
        what: "dns udp",
        addr: listen.to_string(),
        source,
    })?;
    // TCP on the same port as UDP (port 0 picks it once, for both).
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            what: "dns tcp",
            addr: addr.to_string(),
            source,
        })?;
    let mut server = hickory_server::Server::new(DnsHandler {
        node: Arc::clone(&shared),
    });
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 4096);
    let prober = node.health.spawn();
    let mut tasks = Vec::new();
    if let Some(w) = control {
        tasks.push(spawn_heartbeat_watch(Arc::clone(&shared), w));
    }
    let admin_addr = match admin {
        Some(a) if !a.is_empty() => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .map_err(|source| StartError::Bind {
                    what: "dns admin",
                    addr: a.to_string(),
                    source,
                })?;
            let la = l.local_addr().ok();
            tasks.push(tokio::spawn(serve_admin(l, Arc::clone(&shared))));
            la
        }
        _ => None,
    };
    tracing::info!(%addr, admin = ?admin_addr, zone = %node.zone.zone, "dns node serving");
    Ok(RunningDns {
        shared,
        prober: std::sync::Mutex::new(Some(prober)),
        addr,
        admin: admin_addr,
        server,
        tasks,
    })
}

impl RunningDns {
    /// The node answering now (zone, health, metrics).
    pub fn node(&self) -> Arc<DnsNode> {
        self.shared.load_full()
    }

    /// Swap in a node built from a new config (weights, drains, PoPs, tenants, TTL): boxes and
    /// PoPs that stay keep their health and counters; new boxes are probed before it answers.
    pub async fn reload(&self, node: DnsNode) {
        let old = self.shared.load_full();
        node.health.carry_over(&old.health);
        node.zone.carry_over(&old.zone);
        let old_names: Vec<String> = old.zone.map.pops.iter().map(|p| p.name.clone()).collect();
        let names: Vec<String> = node.zone.map.pops.iter().map(|p| p.name.clone()).collect();
        node.metrics.carry_over(&old.metrics, &names, &old_names);
        node.health.probe_round().await;
        let prober = node.health.spawn();
        self.shared.store(Arc::new(node));
        let mut slot = self.prober.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = slot.replace(prober) {
            h.abort();
        }
        tracing::info!("dns config reloaded");
    }

    fn abort_all(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(h) = self.prober.lock().unwrap_or_else(|p| p.into_inner()).take() {
            h.abort();
        }
    }

    /// Run until the server's sockets close.
    pub async fn wait(&mut self) {
        let _ = self.server.block_until_done().await;
        self.abort_all();
    }

    /// Stop serving.
    pub async fn stop(mut self) {
        let _ = self.server.shutdown_gracefully().await;
        self.abort_all();
    }
}

/// Poll the control plane: `/api/v1/nodes` holds down boxes whose heartbeat is stale, and
/// `/api/v1/tenants` adds the hostnames of tenants created through the API (no file edit, no
/// reload needed).
fn spawn_heartbeat_watch(shared: Shared, w: ControlWatch) -> tokio::task::JoinHandle<()> {
    let ControlWatch {
        api,
        key,
        stale,
        every,
    } = w;
    tokio::spawn(async move {
        let hostport = api
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let stale_ms = stale.as_millis() as u64;
        loop {
            tokio::time::sleep(every).await;
            let node = shared.load_full();
            // The control plane being away says nothing about the boxes: no change then.
            if let Some(v) = http_get(&hostport, "/api/v1/nodes", &key)
                .await
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            {
                for n in v["nodes"].as_array().into_iter().flatten() {
                    let (Some(name), Some(ago)) = (n["node"].as_str(), n["seen_ms_ago"].as_u64())
                    else {
                        continue;
                    };
                    // Never heard from (no agent on that box): no signal.
                    let never = ago > 1_000_000_000_000;
                    node.health.set_stale(name, !never && ago > stale_ms);
                }
            }
            if let Some(v) = http_get(&hostport, "/api/v1/tenants", &key)
                .await
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            {
                let list: Vec<(String, Vec<String>)> = v["tenants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| {
                        let name = t["name"].as_str()?.to_string();
                        let hosts = t["hostnames"]
                            .as_array()?
                            .iter()
                            .filter_map(|h| h.as_str().map(str::to_string))
                            .collect();
                        Some((name, hosts))
                    })
                    .collect();
                node.zone.set_control_tenants(&list);
            }
        }
    })
}

/// A small HTTP/1.1 GET with a bearer key; the body on 200, None otherwise.
async fn http_get(hostport: &str, path: &str, key: &str) -> Option<Vec<u8>> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(hostport).await.ok()?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.take(4 << 20).read_to_end(&mut buf).await.ok()?;
        let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        if !buf.starts_with(b"HTTP/1.1 200") {
            return None;
        }
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let body = buf[head_end + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            return dechunk(&body);
        }
        Some(body)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// The admin listener: `GET /metrics`, `GET /healthz`, `GET /explain?name=N&subnet=S[&type=AAAA]`.
async fn serve_admin(l: tokio::net::TcpListener, shared: Shared) {
    while let Ok((mut s, _)) = l.accept().await {
        let node = shared.load_full();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let k = s.read(&mut buf[n..]).await.ok()?;
                    if k == 0 {
                        return None;
                    }
                    n += k;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        return Some(());
                    }
                    if n == buf.len() {
                        return None;
                    }
                }
            })
            .await;
            let (status, ctype, body) = match read {
                Ok(Some(())) => admin_route(&node, &buf[..n]),
                _ => (400, "text/plain", "bad request\n".to_string()),
            };
            let head = format!(
                "HTTP/1.1 {status} {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                if status == 200 { "OK" } else { "Error" },
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(body.as_bytes()).await;
        });
    }
}

fn admin_route(node: &DnsNode, req: &[u8]) -> (u16, &'static str, String) {
    let text = String::from_utf8_lossy(req);
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return (
            405,
            "application/json",
            json!({"error": {"code": "method_not_allowed", "message": "GET only"}}).to_string(),
        );
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/metrics" => (200, "text/plain; version=0.0.4", node.render_metrics()),
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/explain" => {
            let mut name = None;
            let mut subnet = None;
            let mut v6 = false;
            for kv in query.split('&') {
                match kv.split_once('=') {
                    Some(("name", v)) => name = Some(v.to_string()),
                    Some(("subnet", v)) => subnet = Some(v.replace("%2F", "/").replace("%2f", "/")),
                    Some(("type", v)) => v6 = v.eq_ignore_ascii_case("AAAA"),
                    _ => {}
                }
            }
            let Some(name) = name else {
                return (
                    400,
                    "application/json",
                    json!({"error": {"code": "bad_request", "message": "name is required"}})
                        .to_string(),
                );
            };
            let client = match subnet.as_deref().map(parse_subnet) {
                None => client_of(IpAddr::from([127, 0, 0, 1]), None),
                Some(Ok((a, p))) => client_of(a, Some((a, p))),
                Some(Err(e)) => {
                    return (
                        400,
                        "application/json",
                        json!({"error": {"code": "bad_request", "field": "subnet", "message": e}})
                            .to_string(),
                    )
                }
            };
            (200, "application/json", node.explain(&name, &client, v6).to_string())
        }
        _ => (
            404,
            "application/json",
            json!({"error": {"code": "not_found", "message": "try /metrics, /healthz or /explain?name=&subnet="}})
                .to_string(),
        ),
    }
}

/// `81.2.69.0/24` (or a bare address: a full-length prefix) → (truncated address, prefix).
pub fn parse_subnet(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("{s:?}: {a:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{s:?}: prefix must be 0..={max}"))?,
        None => max,
    };
    Ok((crate::steer::truncate(addr, prefix), prefix))
}
