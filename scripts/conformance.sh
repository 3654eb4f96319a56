#!/usr/bin/env bash
# Runs the public HTTP caching test suite (npm `http-cache-tests@0.4.5`, cache-tests.fyi) against
# an Outpost edge and checks the pass counts against scripts/conformance-floor.json.
#
#   scripts/conformance.sh                  # outpost node in front of the suite's origin
#   scripts/conformance.sh --update-floor   # same, then raise the floor to the current counts
#   scripts/conformance.sh --id TEST_ID     # one test, with request/response dumps (no floor)
#   CONFORMANCE_TARGET=nginx scripts/conformance.sh     # a peer instead: nginx | varnish | direct
#   scripts/conformance.sh --target-cmd 'CMD'           # any proxy: CMD must listen on
#        127.0.0.1:$LISTEN_PORT and forward to 127.0.0.1:$ORIGIN_PORT ($WORK is a scratch dir)
#
# Env: OUTPOST_BIN (default target/release/outpost), CONFORMANCE_TIMEOUT (client seconds, 900),
#      CONFORMANCE_TLS=1 (outpost only): the client talks HTTPS with h2 to the node's TLS listener
#      (a fresh ECDSA certificate it trusts; conformance/h2-cli.mjs swaps the suite's node-fetch
#      for undici with allowH2 and reports the ALPN of every connection), same floor. --id is
#      not supported in this mode.
# Output: .scratch/conformance/results.json (raw suite output: id -> true | [error, message]),
# summary.json, and logs of every process. Exit 1 when a count is below the floor (outpost only).
#
# How the suite works: its origin (server/server.mjs) takes a per-test config by `PUT /config/UUID`,
# answers `/test/UUID` as configured and reports what it saw at `GET /state/UUID`; the client
# (cli.mjs) sends all three to the base URL, i.e. through the proxy. So the proxy must forward PUT
# and uncacheable GETs, and must forward any Host (the client sends Host: 127.0.0.1:EDGE_PORT).
# The base URL is given without a trailing slash (the client appends "/test/...").
#
# Known 0.4.5 harness limit: the four required `stale-close-*` tests score a correct 502 (origin
# closed the connection, stored response may not be served stale) as a failure, because they
# look for the origin's Server-Request-Count header on the response. See summarize.mjs.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=SCRIPTDIR/lib/common.sh
. "$HERE/lib/common.sh"

HCT_VERSION=0.4.5
TARGET="${CONFORMANCE_TARGET:-outpost}"
TARGET_CMD=""
UPDATE_FLOOR=0
TEST_ID=""
while [ $# -gt 0 ]; do
  case "$1" in
    --update-floor) UPDATE_FLOOR=1 ;;
    --target-cmd) TARGET_CMD="${2:?--target-cmd needs a command}"; TARGET=custom; shift ;;
    --target) TARGET="${2:?--target needs a name}"; shift ;;
    --id) TEST_ID="${2:?--id needs a test id}"; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

OUTPOST_BIN="${OUTPOST_BIN:-$REPO/target/release/outpost}"
CLIENT_TIMEOUT="${CONFORMANCE_TIMEOUT:-900}"
FLOOR="$REPO/scripts/conformance-floor.json"
OUT="$SCRATCH/conformance"
HCT_ROOT="$SCRATCH/hct"
HCT="$HCT_ROOT/node_modules/http-cache-tests"
WORK="$OUT/work-$TARGET"
mkdir -p "$OUT"
rm -rf "$WORK"; mkdir -p "$WORK"

trap cleanup_all EXIT
trap 'exit 130' INT TERM

# --- dependencies -------------------------------------------------------------
ensure_cmds node:nodejs npm:npm curl:curl
case "$TARGET" in
  nginx) ensure_cmds nginx:nginx-light ;;
  varnish) ensure_cmds varnishd:varnish ;;
  outpost) [ -x "$OUTPOST_BIN" ] || die "no outpost binary at $OUTPOST_BIN (build it, or set OUTPOST_BIN / CONFORMANCE_TARGET)" ;;
  direct|custom) ;;
  *) die "unknown CONFORMANCE_TARGET $TARGET (outpost | nginx | varnish | direct, or --target-cmd)" ;;
esac

installed_version() { node -e 'try{console.log(require(process.argv[1]).version)}catch(e){}' "$HCT/package.json" 2>/dev/null; }
if [ "$(installed_version)" != "$HCT_VERSION" ]; then
  log "installing http-cache-tests@$HCT_VERSION into $HCT_ROOT"
  mkdir -p "$HCT_ROOT"
  [ -f "$HCT_ROOT/package.json" ] || echo '{"name":"outpost-hct-scratch","private":true}' >"$HCT_ROOT/package.json"
  (cd "$HCT_ROOT" && timeout 300 npm install --no-audit --no-fund --loglevel=error "http-cache-tests@$HCT_VERSION" >&2) \
    || die "npm install http-cache-tests@$HCT_VERSION failed"
  [ "$(installed_version)" = "$HCT_VERSION" ] || die "http-cache-tests $HCT_VERSION not found after install"
fi

TLS_MODE="${CONFORMANCE_TLS:-0}"
if [ "$TLS_MODE" = 1 ]; then
  [ "$TARGET" = outpost ] || die "CONFORMANCE_TLS=1 is for the outpost target"
  ensure_cmds openssl:openssl
  if [ ! -f "$HCT_ROOT/node_modules/undici/package.json" ]; then
    log "installing undici@6 into $HCT_ROOT (h2 for the client)"
    (cd "$HCT_ROOT" && timeout 300 npm install --no-audit --no-fund --loglevel=error "undici@6" >&2) \
      || die "npm install undici@6 failed"
  fi
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$WORK/tls-key.pem" -out "$WORK/tls-cert.pem" 2>/dev/null || die "openssl req failed"
fi

# --- origin: the suite's own server, on loopback ------------------------------
ORIGIN_PORT=$(free_port)
(
  cd "$HCT" || exit 1
  export npm_config_protocol=http npm_config_port="$ORIGIN_PORT" npm_config_pidfile="$WORK/origin.pid"
  exec setsid node --no-warnings --require "$HERE/conformance/listen-loopback.cjs" server/server.mjs
) >"$OUT/origin.log" 2>&1 </dev/null &
ORIGIN_PID=$!; PIDS+=("$ORIGIN_PID")
log "origin: http-cache-tests server pid $ORIGIN_PID on 127.0.0.1:$ORIGIN_PORT"
wait_port "$ORIGIN_PORT" "$ORIGIN_PID" origin 30 || { tail -n 20 "$OUT/origin.log" >&2; exit 2; }

# --- the cache under test ------------------------------------------------------
LISTEN_PORT=$(free_port)
TARGET_LOG="$OUT/target-$TARGET.log"
case "$TARGET" in
  outpost)
    # The node's defaults, except Set-Cookie in its RFC 9111 mode (`store`): the suite checks
    # RFC 9111 §3.1, under which Set-Cookie is stored and replayed; the default (`explicit`)
    # keeps cookies out of shared copies, as Varnish, nginx and Cloudflare do
    # (docs/behaviour.md lists the tests that default fails by design).
    cat >"$WORK/outpost.toml" <<EOF
[node]
name = "conformance"
listen = "127.0.0.1:$LISTEN_PORT"
metrics = ""

[[tenant]]
name = "conformance"
hostnames = ["*"]
origins = ["http://127.0.0.1:$ORIGIN_PORT"]
[tenant.cache]
set_cookie = "store"
EOF
    if [ "$TLS_MODE" = 1 ]; then
      TLS_PORT=$(free_port)
      printf 'tls_listen = "127.0.0.1:%s"\ntls_default_cert = "%s"\ntls_default_key = "%s"\n' \
        "$TLS_PORT" "$WORK/tls-cert.pem" "$WORK/tls-key.pem" >"$WORK/tls.toml"
      sed -i '/^metrics = ""$/r '"$WORK/tls.toml" "$WORK/outpost.toml"
    fi
    spawn outpost "$TARGET_LOG" "$OUTPOST_BIN" node --config "$WORK/outpost.toml"
    ;;
  nginx)
    # Close to the suite's own docker/nginx config (proxy_cache + proxy_cache_revalidate).
    mkdir -p "$WORK/cache" "$WORK/tmp" "$WORK/logs"
    cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log $WORK/logs/access.log;
    client_body_temp_path $WORK/tmp/body;
    proxy_temp_path $WORK/tmp/proxy;
    fastcgi_temp_path $WORK/tmp/fastcgi;
    uwsgi_temp_path $WORK/tmp/uwsgi;
    scgi_temp_path $WORK/tmp/scgi;
    proxy_cache_path $WORK/cache levels=1:2 keys_zone=hct:8m max_size=1000m inactive=600m;
    server {
        listen 127.0.0.1:$LISTEN_PORT;
        location / {
            proxy_pass http://127.0.0.1:$ORIGIN_PORT;
            proxy_cache hct;
            proxy_cache_revalidate on;
        }
    }
}
EOF
    spawn nginx "$TARGET_LOG" nginx -p "$WORK" -e "$WORK/logs/error.log" -c "$WORK/nginx.conf" -g 'daemon off;'
    ;;
  varnish)
    spawn varnish "$TARGET_LOG" varnishd -F -j none -n "$WORK/varnish" -T none \
      -a "127.0.0.1:$LISTEN_PORT" -b "127.0.0.1:$ORIGIN_PORT" -s malloc,256M
    ;;
  direct)
    LISTEN_PORT="$ORIGIN_PORT"   # no cache at all: a baseline of what an origin alone scores
    SPAWNED_PID="$ORIGIN_PID"
    ;;
  custom)
    export LISTEN_PORT ORIGIN_PORT WORK
    spawn custom "$TARGET_LOG" bash -c "$TARGET_CMD"
    ;;
esac
TARGET_PID="$SPAWNED_PID"
wait_port "$LISTEN_PORT" "$TARGET_PID" "$TARGET" 30 || { tail -n 20 "$TARGET_LOG" >&2; exit 2; }
BASE="http://127.0.0.1:$LISTEN_PORT"
if [ "$TLS_MODE" = 1 ]; then
  wait_port "$TLS_PORT" "$TARGET_PID" "$TARGET" 30 || exit 2
  BASE="https://127.0.0.1:$TLS_PORT"
  export NODE_EXTRA_CA_CERTS="$WORK/tls-cert.pem" UNDICI_DIR="$HCT_ROOT/node_modules" HCT_DIR="$HCT"
fi
log "target $TARGET on $BASE (origin 127.0.0.1:$ORIGIN_PORT)"

# Smoke: PUT must reach the origin through the proxy, or every test is a setup failure.
smoke=$(curl -s -m 10 ${NODE_EXTRA_CA_CERTS:+--cacert "$NODE_EXTRA_CA_CERTS"} -o /dev/null -w '%{http_code}' -X PUT -H 'content-type: application/json' \
  --data '[{"id":"smoke"}]' "$BASE/config/smoke-$$-$RANDOM") || true
[ "$smoke" = 201 ] || log "warning: PUT /config through $TARGET answered '$smoke', not 201; expect setup failures"

# --- the client -------------------------------------------------------------------
run_client() {
  local cli=cli.mjs
  [ "$TLS_MODE" = 1 ] && cli="$HERE/conformance/h2-cli.mjs"
  (cd "$HCT" && npm_config_base="$BASE" npm_config_id="$1" npm_package_config_id="" \
    timeout "$CLIENT_TIMEOUT" node --no-warnings "$cli")
}
if [ -n "$TEST_ID" ]; then
  run_client "$TEST_ID"
  exit $?
fi

log "running http-cache-tests $HCT_VERSION client against $BASE (up to ${CLIENT_TIMEOUT}s)"
start=$(date +%s)
run_client "" >"$OUT/results.raw" 2>"$OUT/client.log"
rc=$?
log "client finished in $(( $(date +%s) - start ))s (exit $rc)"
if [ "$TLS_MODE" = 1 ]; then
  grep -h "alpn protocols" "$OUT/client.log" "$OUT/results.raw" >&2 || log "warning: no ALPN report from the client"
fi
# The client prints the JSON object last; keep from the first line that is exactly "{".
sed -n '/^{$/,$p' "$OUT/results.raw" >"$OUT/results.json"
if ! node -e 'JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"))' "$OUT/results.json" 2>/dev/null; then
  tail -n 20 "$OUT/client.log" "$OUT/results.raw" >&2
  die "client produced no JSON results (exit $rc)"
fi
[ "$TARGET" = outpost ] || cp "$OUT/results.json" "$OUT/results-$TARGET.json"

echo "http-cache-tests $HCT_VERSION against $TARGET ($BASE)"
flags=()
if [ "$TLS_MODE" = 1 ]; then
  # The same client (undici fetch) over plain HTTP/1.1 on the node's HTTP listener: every test
  # must score over HTTPS+h2 as it does there. (The committed floor tracks the package's own
  # node-fetch client; WHATWG fetch turns conditional requests into Cache-Control: no-cache
  # ones, fetch spec "HTTP-network-or-cache fetch", so its absolute counts differ.)
  log "the same client over plain HTTP/1.1 ($BASE -> http://127.0.0.1:$LISTEN_PORT), for comparison"
  (cd "$HCT" && npm_config_base="http://127.0.0.1:$LISTEN_PORT" CONFORMANCE_H2=0 \
    timeout "$CLIENT_TIMEOUT" node --no-warnings "$HERE/conformance/h2-cli.mjs") \
    >"$OUT/results-h1.raw" 2>>"$OUT/client.log"
  sed -n '/^{$/,$p' "$OUT/results-h1.raw" >"$OUT/results-h1.json"
  node --input-type=module -e '
    import fs from "node:fs"
    const [h2, h1] = process.argv.slice(1).map(f => JSON.parse(fs.readFileSync(f, "utf8")))
    const ok = v => v === true
    const worse = Object.keys(h1).filter(k => ok(h1[k]) && !ok(h2[k]))
    const better = Object.keys(h2).filter(k => ok(h2[k]) && !ok(h1[k]))
    const n = o => Object.values(o).filter(ok).length
    console.log(`HTTPS+h2: ${n(h2)} passed; the same client over HTTP/1.1: ${n(h1)} passed`)
    if (better.length) console.log(`passing only over h2: ${better.join(", ")}`)
    if (worse.length) { console.log(`FAILING ONLY OVER h2: ${worse.join(", ")}`); process.exit(1) }
    console.log("every test scores over HTTPS+h2 as over plain HTTP/1.1")
  ' "$OUT/results.json" "$OUT/results-h1.json" || exit 1
  node "$HERE/conformance/summarize.mjs" "$HCT" "$OUT/results.json" "$FLOOR" >/dev/null
  exit 0
fi
if [ "$TARGET" = outpost ]; then
  flags+=(--check-floor)
  [ "$UPDATE_FLOOR" -eq 1 ] && flags+=(--update-floor)
else
  [ "$UPDATE_FLOOR" -eq 1 ] && log "--update-floor ignored: the floor tracks outpost, not $TARGET"
  echo "(floor not checked: target is $TARGET, the floor tracks outpost)"
fi
node "$HERE/conformance/summarize.mjs" "$HCT" "$OUT/results.json" "$FLOOR" "${flags[@]}"
