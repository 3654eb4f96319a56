#!/usr/bin/env bash
# Instructions per cache hit, counted by callgrind (deterministic where wall-clock benchmarks on
# this shared 2-core machine are not): each binary runs `outpost node` under valgrind in front of
# a tiny Python origin (1 KiB bodies unless BODY_BYTES says otherwise, max-age=86400); 1000 keys are warmed, the counters are
# zeroed, wrk sends 20 s of hits over those keys, and the counters are dumped.
#
#   scripts/bench/hit-instructions.sh target/release/outpost [OTHER_OUTPOST_BIN]
#   BODY_BYTES=102400 scripts/bench/hit-instructions.sh ...     # 100 KiB bodies (default 1024)
#   HIT_SSD=1 scripts/bench/hit-instructions.sh ...              # hits read from the SSD tier
#   HIT_ARGS="--policy w-tinylfu" scripts/bench/hit-instructions.sh ...   # extra `outpost node` flags
#
# Prints one line per binary: requests, total instructions, instructions per request.
# Needs valgrind, wrk, curl and python3 (installed from Debian when missing).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/../lib/common.sh
. "$HERE/../lib/common.sh"
ensure_cmds valgrind:valgrind wrk:wrk curl:curl python3:python3
[ $# -ge 1 ] || die "usage: $0 OUTPOST_BIN [OTHER_OUTPOST_BIN]"
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT
ORIGIN_PORT=$(free_port)
cat >"$W/origin.py" <<PY
import http.server, socketserver
BODY = b"x" * ${BODY_BYTES:-1024}
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Cache-Control", "max-age=86400")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *a): pass
socketserver.ThreadingTCPServer.allow_reuse_address = True
with socketserver.ThreadingTCPServer(("127.0.0.1", $ORIGIN_PORT), H) as s:
    s.serve_forever()
PY
python3 "$W/origin.py" &
cat >"$W/keys.lua" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/k/" .. (counter % 1000))
end
LUA
for bin in "$@"; do
  port=$(free_port)
  ssd_args=()
  # HIT_SSD=1: a 1 MiB RAM tier in front of an SSD tier, so most hits read segment files.
  [ "${HIT_SSD:-0}" = 1 ] && ssd_args=(--ram-bytes 1M --store-dir "$W/store.$port" --disk-bytes 1G)
  out="$W/cg.$port"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" node --listen "127.0.0.1:$port" \
    --origin "http://127.0.0.1:$ORIGIN_PORT" --name cg "${ssd_args[@]}" ${HIT_ARGS:-} >/dev/null 2>"$W/err.$port" &
  vpid=$!
  for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.3; done
  for k in $(seq 0 999); do echo "url = \"http://127.0.0.1:$port/k/$k\""; done >"$W/warm.cfg"
  curl -s -K "$W/warm.cfg" >/dev/null; curl -s -K "$W/warm.cfg" >/dev/null
  wrk -t1 -c4 -d3s -s "$W/keys.lua" "http://127.0.0.1:$port/" >/dev/null
  callgrind_control -z "$vpid" >/dev/null 2>&1
  wrk -t1 -c4 -d20s -s "$W/keys.lua" "http://127.0.0.1:$port/" >"$W/wrk.$port"
  callgrind_control -d "$vpid" >/dev/null 2>&1
  sleep 1; kill -9 "$vpid"; wait "$vpid" 2>/dev/null
  reqs=$(grep -oE "^ +[0-9]+ requests" "$W/wrk.$port" | grep -oE "[0-9]+")
  dump=$(ls -t "$out".* | head -1)
  ir=$(grep -E "^(summary|totals):" "$dump" | head -1 | awk '{print $2}')
  echo "$bin requests=$reqs instructions=$ir per_request=$((ir / reqs))"
done
