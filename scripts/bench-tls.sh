#!/usr/bin/env bash
# TLS and HTTP/2 at the edge: Outpost against nginx (Debian, proxy_cache, `listen ssl http2`), the
# same ECDSA P-256 certificate, same run, cases interleaved round by round:
#   wrk-tls       1 KiB hits over TLS 1.3 keep-alive, HTTP/1.1 (wrk -t2 -c64)
#   h2load        1 KiB hits over h2 (h2load -c64 -m10, Debian's nghttp2-client)
#   hs-full-1.3   new TLS 1.3 handshakes (openssl s_time -new)
#   hs-full-1.2   new TLS 1.2 handshakes (openssl s_time -new -tls1_2)
#   hs-resumed    resumed TLS 1.2 handshakes (openssl s_time -reuse -tls1_2)
# Reported per CPU-second of the server process tree (utime+stime from /proc): requests or
# handshakes. Clients share the two cores; ratios hold, absolute numbers move.
#
#   scripts/bench-tls.sh                              # 3 rounds x 8 s per case
#   BENCH_DURATION=3 BENCH_ROUNDS=1 scripts/bench-tls.sh
# Output: table on stdout and .scratch/bench-tls/results.md.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=SCRIPTDIR/lib/common.sh
. "$HERE/lib/common.sh"
# shellcheck source=SCRIPTDIR/bench/configs.sh
. "$HERE/bench/configs.sh"
# shellcheck source=SCRIPTDIR/bench/measure.sh
. "$HERE/bench/measure.sh"

DURATION="${BENCH_DURATION:-8}"
ROUNDS="${BENCH_ROUNDS:-3}"
OUTPOST_BIN="${OUTPOST_BIN:-$REPO/target/release/outpost}"
OUT="$SCRATCH/bench-tls"
W="$OUT/work"
rm -rf "$W"; mkdir -p "$W"
trap cleanup_all EXIT
trap 'exit 130' INT TERM
if [ "$OUTPOST_BIN" = "$REPO/target/release/outpost" ]; then
  (cd "$REPO" && cargo build --release -p outpost --bin outpost) || die "cargo build failed"
fi
ensure_cmds nginx:nginx-light wrk:wrk h2load:nghttp2-client openssl:openssl curl:curl

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test,IP:127.0.0.1" \
  -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null || die "openssl req failed"

BENCH_KEYS=4 make_content "$W/www"
ORIGIN_PORT=$(free_port)
mkdir -p "$W/origin"
write_origin_conf "$W/origin/nginx.conf" "$W/origin" "$ORIGIN_PORT" "$W/www"
spawn origin "$W/origin/stderr.log" nginx -p "$W/origin" -e "$W/origin/logs/error.log" \
  -c "$W/origin/nginx.conf" -g 'daemon off;'
wait_port "$ORIGIN_PORT" "$SPAWNED_PID" origin 30 || exit 2
PATH_1K="$(cd "$W/www" && ls | grep -m1 -E '1k|1024' || true)"
[ -n "$PATH_1K" ] || PATH_1K="$(cd "$W/www" && ls | head -1)"
log "object: /$PATH_1K ($(wc -c <"$W/www/$PATH_1K") bytes)"

# Outpost: single-origin node with an HTTPS listener and the default certificate.
O_HTTP=$(free_port); O_TLS=$(free_port)
cat >"$W/outpost.toml" <<EOF
[node]
name = "bench"
listen = "127.0.0.1:$O_HTTP"
metrics = ""
tls_listen = "127.0.0.1:$O_TLS"
tls_default_cert = "$W/cert.pem"
tls_default_key = "$W/key.pem"
[store]
ram_bytes = "256M"
[[tenant]]
name = "bench"
hostnames = ["*"]
origins = ["http://127.0.0.1:$ORIGIN_PORT"]
EOF
RUST_LOG=warn spawn outpost "$W/outpost.log" "$OUTPOST_BIN" node --config "$W/outpost.toml"
O_PID=$SPAWNED_PID
wait_port "$O_TLS" "$O_PID" outpost 30 || exit 2

# nginx: the same cache setup as scripts/bench.sh, TLS and h2 on the listener.
N_TLS=$(free_port)
mkdir -p "$W/nginx/tmp" "$W/nginx/logs" "$W/nginx/cache"
cat >"$W/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $W/nginx/nginx.pid;
error_log $W/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $W/nginx/tmp/body;
    proxy_temp_path $W/nginx/tmp/proxy;
    fastcgi_temp_path $W/nginx/tmp/fastcgi;
    uwsgi_temp_path $W/nginx/tmp/uwsgi;
    scgi_temp_path $W/nginx/tmp/scgi;
    keepalive_requests 1000000;
    proxy_cache_path $W/nginx/cache levels=1:2 keys_zone=bench:64m max_size=1g inactive=2h use_temp_path=off;
    upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
        listen 127.0.0.1:$N_TLS ssl http2;
        ssl_certificate $W/cert.pem;
        ssl_certificate_key $W/key.pem;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
        }
    }
}
EOF
spawn nginx "$W/nginx/stderr.log" nginx -p "$W/nginx" -e "$W/nginx/logs/error.log" \
  -c "$W/nginx/nginx.conf" -g 'daemon off;'
N_PID=$SPAWNED_PID
wait_port "$N_TLS" "$N_PID" nginx 30 || exit 2

for port in "$O_TLS" "$N_TLS"; do
  for _ in 1 2 3; do curl -sk -o /dev/null "https://127.0.0.1:$port/$PATH_1K"; done
  curl -sk --http2 -o /dev/null -w "  warm :$port %{http_version} %{http_code}\n" "https://127.0.0.1:$port/$PATH_1K" >&2
done

# measure NAME PID CMD... — runs CMD, prints "ops cpu_s" where ops is parsed by the case.
cpu_of() { awk -v a="$1" -v b="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", (b - a) / hz }'; }
run_case() {
  local case="$1" target="$2" port="$3" pid="$4" t0 t1 out ops
  t0=$(tree_ticks "$pid")
  case "$case" in
    wrk-tls)
      out=$(wrk -t2 -c64 -d"${DURATION}s" "https://127.0.0.1:$port/$PATH_1K" 2>&1)
      ops=$(printf '%s\n' "$out" | awk '/requests in/ {print $1}') ;;
    h2load)
      out=$(h2load -c64 -m10 -t2 -D "$DURATION" "https://127.0.0.1:$port/$PATH_1K" 2>&1)
      ops=$(printf '%s\n' "$out" | awk '/^requests:/ {print $8}') ;;
    hs-full-1.3)
      out=$(openssl s_time -connect "127.0.0.1:$port" -new -time "$DURATION" -tls1_3 2>&1)
      ops=$(printf '%s\n' "$out" | awk '/connections in/ && /real/ {print $1; exit}') ;;
    hs-full-1.2)
      out=$(openssl s_time -connect "127.0.0.1:$port" -new -time "$DURATION" -tls1_2 2>&1)
      ops=$(printf '%s\n' "$out" | awk '/connections in/ && /real/ {print $1; exit}') ;;
    hs-resumed)
      out=$(openssl s_time -connect "127.0.0.1:$port" -reuse -time "$DURATION" -tls1_2 2>&1)
      ops=$(printf '%s\n' "$out" | awk '/connections in/ && /real/ {print $1; exit}') ;;
  esac
  t1=$(tree_ticks "$pid")
  local cpu; cpu=$(cpu_of "$t0" "$t1")
  printf '%s %s %s %s\n' "$case" "$target" "${ops:-0}" "$cpu"
}

CASES="wrk-tls h2load hs-full-1.3 hs-full-1.2 hs-resumed"
: >"$W/raw.txt"
for r in $(seq 1 "$ROUNDS"); do
  for c in $CASES; do
    run_case "$c" outpost "$O_TLS" "$O_PID" | tee -a "$W/raw.txt"
    run_case "$c" nginx "$N_TLS" "$N_PID" | tee -a "$W/raw.txt"
  done
  log "round $r done"
done

per_cpu() { awk -v c="$1" -v t="$2" '$1 == c && $2 == t && $4 > 0 { print $3 / $4 }' "$W/raw.txt" | sort -n | awk '{ a[NR] = $1 } END { print (NR ? a[int((NR + 1) / 2)] : 0) }'; }
per_sec() { awk -v c="$1" -v t="$2" -v d="$DURATION" '$1 == c && $2 == t { print $3 / d }' "$W/raw.txt" | sort -n | awk '{ a[NR] = $1 } END { print (NR ? a[int((NR + 1) / 2)] : 0) }'; }
{
  echo "| case | Outpost per s | nginx per s | Outpost per CPU-s | nginx per CPU-s | Outpost / nginx per CPU-s |"
  echo "|---|---|---|---|---|---|"
  for c in $CASES; do
    o=$(per_cpu "$c" outpost); n=$(per_cpu "$c" nginx)
    os=$(per_sec "$c" outpost); ns=$(per_sec "$c" nginx)
    awk -v c="$c" -v o="$o" -v n="$n" -v os="$os" -v ns="$ns" \
      'BEGIN { printf "| %s | %.0f | %.0f | %.0f | %.0f | %.2f |\n", c, os, ns, o, n, (n > 0 ? o / n : 0) }'
  done
  echo
  echo "$ROUNDS rounds x ${DURATION}s, medians; ECDSA P-256 certificate for both; nginx $(nginx -v 2>&1 | sed 's/.*\///'), worker_processes auto."
  echo "raw (case target ops cpu_s):"
  sed 's/^/    /' "$W/raw.txt"
} | tee "$OUT/results.md"
