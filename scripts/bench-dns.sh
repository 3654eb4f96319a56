#!/usr/bin/env bash
# GeoDNS throughput: `outpost dns` against Knot DNS (Debian's knot) serving a static zone, same
# machine, same run, both driven by dnsperf (Debian). Reported in queries per second and per
# CPU-second of the server process (utime+stime from /proc), so the ratio holds on a shared,
# noisy machine (shared/BENCHMARKING.md).
#
#   scripts/bench-dns.sh                                  # 3 rounds x 10 s per case
#   BENCH_DURATION=3 BENCH_ROUNDS=1 scripts/bench-dns.sh
#
# Cases, interleaved round by round:
#   knot          static A record for www.example.com.cdn.bench (no steering)
#   outpost       the same name, steered (resolver address: default region), 3 regions/PoPs
#   outpost-ecs   the same, every query carrying an EDNS Client Subnet (81.2.69.0/24, UK):
#                 GeoIP lookup + ranking + ECS echo
# Env: BENCH_DURATION (10), BENCH_ROUNDS (3), BENCH_CLIENTS (8), OUTPOST_BIN (target/release/outpost).
# Output: table on stdout and .scratch/bench-dns/results.md.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=SCRIPTDIR/lib/common.sh
. "$HERE/lib/common.sh"
# shellcheck source=SCRIPTDIR/bench/measure.sh
. "$HERE/bench/measure.sh"

DURATION="${BENCH_DURATION:-10}"
ROUNDS="${BENCH_ROUNDS:-3}"
CLIENTS="${BENCH_CLIENTS:-8}"
OUTPOST_BIN="${OUTPOST_BIN:-$REPO/target/release/outpost}"
OUT="$SCRATCH/bench-dns"
WORK="$OUT/work"
rm -rf "$WORK"; mkdir -p "$WORK/knot"
trap cleanup_all EXIT
trap 'exit 130' INT TERM

if [ "$OUTPOST_BIN" = "$REPO/target/release/outpost" ]; then
  log "building target/release/outpost (a no-op when it is current)"
  (cd "$REPO" && cargo build --release -p outpost --bin outpost) || die "cargo build failed"
fi
PATH="$PATH:/usr/sbin" ensure_cmds dnsperf:dnsperf knotd:knot dig:dnsutils
KNOTD="$(PATH="$PATH:/usr/sbin" command -v knotd)"
GEOIP="$(bash "$HERE/install-geoip.sh")" || die "GeoIP database unavailable"

# --- Knot: a static zone -----------------------------------------------------
KNOT_PORT=$(free_port)
cat >"$WORK/knot/cdn.bench.zone" <<EOF
\$ORIGIN cdn.bench.
\$TTL 30
@        SOA ns1 hostmaster 1 3600 600 86400 30
@        NS  ns1
ns1      A   127.0.0.1
www.example.com A 192.0.2.1
EOF
cat >"$WORK/knot/knot.conf" <<EOF
server:
    listen: 127.0.0.1@$KNOT_PORT
    rundir: $WORK/knot
database:
    storage: $WORK/knot/db
template:
  - id: default
    storage: $WORK/knot
zone:
  - domain: cdn.bench
    file: cdn.bench.zone
log:
  - target: stderr
    any: warning
EOF
spawn knot "$WORK/knot/stderr.log" "$KNOTD" -c "$WORK/knot/knot.conf"
KNOT_PID=$SPAWNED_PID
for _ in $(seq 1 100); do
  dig @127.0.0.1 -p "$KNOT_PORT" +time=1 +tries=1 +short www.example.com.cdn.bench A 2>/dev/null | grep -q 192.0.2.1 && break
  sleep 0.1
done
dig @127.0.0.1 -p "$KNOT_PORT" +short www.example.com.cdn.bench A | grep -q 192.0.2.1 \
  || die "knot does not answer (see $WORK/knot/stderr.log)"

# --- Outpost dns: three regions, a PoP each (TCP-probed placeholder edges) -----
EDGE_PORTS=()
for i in 1 2 3; do
  p=$(free_port)
  spawn "edge$i" "$WORK/edge$i.log" python3 -m http.server "$p" --bind 127.0.0.1 --directory "$WORK"
  wait_port "$p" "$SPAWNED_PID" "edge$i" 20 || exit 2
  EDGE_PORTS+=("$p")
done
DNS_PORT=$(free_port)
cat >"$WORK/dns.toml" <<EOF
[dns]
listen = "127.0.0.1:$DNS_PORT"
zone = "cdn.bench"
geoip = "$GEOIP"

[[tenant]]
name = "site"
hostnames = ["www.example.com"]
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
[[topology.region]]
name = "ap"
lat = 1.35
lon = 103.8

[[topology.pop]]
name = "fra"
region = "eu"
addresses = ["192.0.2.1"]
[[topology.pop.box]]
name = "fra-a"
listen = "127.0.0.1:${EDGE_PORTS[0]}"

[[topology.pop]]
name = "iad"
region = "us"
addresses = ["192.0.2.2"]
[[topology.pop.box]]
name = "iad-a"
listen = "127.0.0.1:${EDGE_PORTS[1]}"

[[topology.pop]]
name = "sin"
region = "ap"
addresses = ["192.0.2.3"]
[[topology.pop.box]]
name = "sin-a"
listen = "127.0.0.1:${EDGE_PORTS[2]}"
EOF
RUST_LOG=warn spawn outpost-dns "$WORK/outpost-dns.log" "$OUTPOST_BIN" dns --config "$WORK/dns.toml"
DNS_PID=$SPAWNED_PID
for _ in $(seq 1 100); do
  dig @127.0.0.1 -p "$DNS_PORT" +time=1 +tries=1 +short www.example.com.cdn.bench A 2>/dev/null | grep -q 192.0.2 && break
  sleep 0.1
done
dig @127.0.0.1 -p "$DNS_PORT" +short www.example.com.cdn.bench A | grep -q 192.0.2 \
  || die "outpost dns does not answer (see $WORK/outpost-dns.log)"

echo "www.example.com.cdn.bench A" >"$WORK/queries.txt"
# ECS option 8: family 1, source 24, scope 0, 81.2.69
ECS_OPT="8:00011800510245"

# run CASE PORT PID [dnsperf args...] — prints "qps qps_per_cpu_s lost_pct"
run() {
  local case="$1" port="$2" pid="$3"; shift 3
  local t0 t1 out qps done lost
  t0=$(tree_ticks "$pid")
  out=$(dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l "$DURATION" -c "$CLIENTS" \
        -T 1 -q 200 "$@" 2>&1)
  t1=$(tree_ticks "$pid")
  qps=$(printf '%s\n' "$out" | awk '/Queries per second:/ {print $4}')
  done=$(printf '%s\n' "$out" | awk '/Queries completed:/ {print $3}')
  lost=$(printf '%s\n' "$out" | awk '/Queries lost:/ {gsub(/[()%]/,"",$4); print $4}')
  local cpu_s
  cpu_s=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / hz }')
  awk -v q="$qps" -v d="$done" -v c="$cpu_s" -v l="$lost" -v n="$case" \
    'BEGIN { printf "%s %.0f %.0f %s %s\n", n, q, (c > 0 ? d / c : 0), (l == "" ? 0 : l), c }'
}

log "rounds: $ROUNDS x ${DURATION}s per case, $CLIENTS dnsperf clients"
: >"$WORK/raw.txt"
for r in $(seq 1 "$ROUNDS"); do
  run knot "$KNOT_PORT" "$KNOT_PID" | tee -a "$WORK/raw.txt"
  run outpost "$DNS_PORT" "$DNS_PID" | tee -a "$WORK/raw.txt"
  run outpost-ecs "$DNS_PORT" "$DNS_PID" -E "$ECS_OPT" | tee -a "$WORK/raw.txt"
  log "round $r done"
done

# The ECS case must really be steered with a scope: one dig to show it.
ECS_SHOW=$(dig @127.0.0.1 -p "$DNS_PORT" www.example.com.cdn.bench A +subnet=81.2.69.0/24 +noall +answer +comments \
  | grep -E "CLIENT-SUBNET|IN\s+A" | tr '\n' ' ')

med() { awk -v c="$1" -v f="$2" '$1 == c { print $f }' "$WORK/raw.txt" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
K_QPS=$(med knot 2); K_CPU=$(med knot 3)
O_QPS=$(med outpost 2); O_CPU=$(med outpost 3)
E_QPS=$(med outpost-ecs 2); E_CPU=$(med outpost-ecs 3)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
{
  echo "| case | queries/s (median) | queries per CPU-second (median) | vs knot per CPU-s |"
  echo "|---|---|---|---|"
  echo "| knot $("$KNOTD" -V 2>&1 | awk '{print $NF}') static zone | $K_QPS | $K_CPU | 1.00 |"
  echo "| outpost dns, resolver address | $O_QPS | $O_CPU | $(ratio "$O_CPU" "$K_CPU") |"
  echo "| outpost dns, ECS 81.2.69.0/24 | $E_QPS | $E_CPU | $(ratio "$E_CPU" "$K_CPU") |"
  echo
  echo "$ROUNDS rounds x ${DURATION}s, dnsperf -c $CLIENTS -q 200, servers and dnsperf on the same 2 cores."
  echo "ECS answer: $ECS_SHOW"
  echo
  echo "raw (case qps qps_per_cpu_s lost_pct cpu_s):"
  sed 's/^/    /' "$WORK/raw.txt"
} | tee "$OUT/results.md"
