#!/usr/bin/env bash
# The cost of the hierarchy: a 1 KiB hit served by the key's owner box, the same hit through a
# box that forwards it to the owner (one hop in the PoP), and a hot key replicated on the box that
# receives it; in requests per CPU-second of every node process of the topology. Then the
# cold-miss added latency of edge -> shield -> origin against a single node, link latency off.
#
#   scripts/bench-tiers.sh                        # 3 rounds x 10 s per case
#   BENCH_DURATION=3 BENCH_ROUNDS=1 scripts/bench-tiers.sh
#
# Env: BENCH_DURATION (10), BENCH_ROUNDS (3), BENCH_CONNECTIONS (64), BENCH_THREADS (2),
#      BENCH_COLD_N (300), OUTPOST_BIN (target/release/outpost).
# The forwarded hit runs three times: pipelined asks to the owner (the default), HTTP/2 only and
# HTTP/1.1 only (topology.forward_pipeline = false).
# Method (shared/BENCHMARKING.md): every process runs at once; the cases interleave round by
# round; CPU is utime+stime from /proc of all node processes of the topology in use; wrk shares
# the two cores. Targets (issue 9): forwarded <= 2x a local hit's CPU, hot replica = local.
# Output: table on stdout and .scratch/bench-tiers/results.md.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=SCRIPTDIR/lib/common.sh
. "$HERE/lib/common.sh"
# shellcheck source=SCRIPTDIR/bench/configs.sh
. "$HERE/bench/configs.sh"
# shellcheck source=SCRIPTDIR/bench/measure.sh
. "$HERE/bench/measure.sh"

DURATION="${BENCH_DURATION:-10}"
ROUNDS="${BENCH_ROUNDS:-3}"
CONNS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
COLD_N="${BENCH_COLD_N:-300}"
OUTPOST_BIN="${OUTPOST_BIN:-$REPO/target/release/outpost}"
OUT="$SCRATCH/bench-tiers"
WORK="$OUT/work"
rm -rf "$WORK"; mkdir -p "$WORK"
trap cleanup_all EXIT
trap 'exit 130' INT TERM

if [ "$OUTPOST_BIN" = "$REPO/target/release/outpost" ] && [ ! -x "$OUTPOST_BIN" ]; then
  log "building target/release/outpost"
  (cd "$REPO" && cargo build --release -p outpost --bin outpost) || die "cargo build failed"
fi
ensure_cmds nginx:nginx-light wrk:wrk curl:curl
BENCH_KEYS=10 make_content "$OUT/www"

ORIGIN_PORT=$(free_port)
mkdir -p "$WORK/origin"
write_origin_conf "$WORK/origin/nginx.conf" "$WORK/origin" "$ORIGIN_PORT" "$OUT/www"
spawn origin "$WORK/origin/stderr.log" nginx -p "$WORK/origin" -e "$WORK/origin/logs/error.log" \
  -c "$WORK/origin/nginx.conf" -g 'daemon off;'
wait_port "$ORIGIN_PORT" "$SPAWNED_PID" origin 30 || exit 2

# world NAME HOT_RPS PROTOCOL — a PoP of two boxes and a shield set of two, tenant "*" behind the
# shields, PROTOCOL between the nodes.
declare -A PORT PID
world() {
  local w="$1" hot="$2" proto="$3" pipe="${4:-true}" f="$WORK/$1.toml" n
  {
    printf '[node]\nname = "%s-a"\n[store]\nram_bytes = "256M"\n' "$w"
    printf '[topology]\nhot_key_rps = %s\nramp_up = "1s"\npeer_protocol = "%s"\nforward_pipeline = %s\n' "$hot" "$proto" "$pipe"
    printf '[[topology.pop]]\nname = "%s-pop"\nregion = "r1"\n' "$w"
    for n in a b; do
      PORT[$w-$n]=$(free_port); PORT[$w-$n-m]=$(free_port)
      printf '[[topology.pop.box]]\nname = "%s-%s"\nlisten = "127.0.0.1:%s"\nmetrics = "127.0.0.1:%s"\n' \
        "$w" "$n" "${PORT[$w-$n]}" "${PORT[$w-$n-m]}"
    done
    printf '[[topology.shield_set]]\nname = "%s-shields"\nregion = "r1"\n' "$w"
    for n in s1 s2; do
      PORT[$w-$n]=$(free_port); PORT[$w-$n-m]=$(free_port)
      printf '[[topology.shield_set.box]]\nname = "%s-%s"\nlisten = "127.0.0.1:%s"\nmetrics = "127.0.0.1:%s"\n' \
        "$w" "$n" "${PORT[$w-$n]}" "${PORT[$w-$n-m]}"
    done
    printf '[[tenant]]\nname = "bench"\nhostnames = ["*"]\norigins = ["http://127.0.0.1:%s"]\nshield = "%s-shields"\n' \
      "$ORIGIN_PORT" "$w"
  } >"$f"
  for n in s1 s2 a b; do
    spawn "$w-$n" "$WORK/$w-$n.log" "$OUTPOST_BIN" node --config "$f" --name "$w-$n"
    PID[$w-$n]=$SPAWNED_PID
  done
  for n in s1 s2 a b; do wait_port "${PORT[$w-$n]}" "${PID[$w-$n]}" "$w-$n" 30 || exit 2; done
}
world t 0 http2         # owner-local and forwarded hits (pipelined asks, the default)
world v 0 http2 false   # forwarded hits over HTTP/2 only (no pipelined ask)
world u 0 http1 false   # forwarded hits over HTTP/1.1 only
world h 1 http2   # hot-key replicas (every key is hot)
SINGLE_PORT=$(free_port)
spawn single "$WORK/single.log" "$OUTPOST_BIN" node --listen "127.0.0.1:$SINGLE_PORT" \
  --origin "http://127.0.0.1:$ORIGIN_PORT" --name single --metrics ""
wait_port "$SINGLE_PORT" "$SPAWNED_PID" single 30 || exit 2
sleep 1

# owner_of WORLD — "a b" when box a owns /f1k, "b a" otherwise (a forwarded answer names its owner).
owner_of() {
  local cs
  cs=$(curl -s -o /dev/null -D - "http://127.0.0.1:${PORT[$1-a]}/f1k" | tr -d '\r' | awk -F': ' 'tolower($1) == "cache-status" { print $2 }')
  case "$cs" in *'detail="owner '*) echo "b a" ;; *) echo "a b" ;; esac
}
read -r T_OWNER T_OTHER <<<"$(owner_of t)"
read -r H_OWNER H_OTHER <<<"$(owner_of h)"
read -r U_OWNER U_OTHER <<<"$(owner_of u)"
read -r V_OWNER V_OTHER <<<"$(owner_of v)"
log "world t: owner box $T_OWNER, forwarding box $T_OTHER; world h: owner $H_OWNER, replica box $H_OTHER"
for _ in 1 2 3; do
  for p in "${PORT[t-$T_OWNER]}" "${PORT[t-$T_OTHER]}" "${PORT[u-$U_OTHER]}" "${PORT[v-$V_OTHER]}" "${PORT[h-$H_OTHER]}"; do
    curl -s -o /dev/null "http://127.0.0.1:$p/f1k"
  done
done

world_ticks() { local w="$1" t=0 n; for n in s1 s2 a b; do t=$((t + $(tree_ticks "${PID[$w-$n]}"))); done; echo "$t"; }

RUNS="$OUT/runs.tsv"
printf 'case\tround\treq_s\tp99_ms\trequests\tnode_ticks\treq_per_cpu_s\tcache_status\n' >"$RUNS"
run_case() { # CASE ROUND WORLD PORT
  local cs="$1" r="$2" w="$3" port="$4" out="$WORK/wrk-$1-$2.txt" t0 t1 rps p99 reqs cs_hdr
  t0=$(world_ticks "$w")
  timeout $((DURATION + 60)) wrk -t "$THREADS" -c "$CONNS" -d "${DURATION}s" --latency \
    "http://127.0.0.1:$port/f1k" >"$out" 2>&1
  t1=$(world_ticks "$w")
  rps=$(awk '/^Requests\/sec:/{ print $2 }' "$out")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  reqs=$(awk '/requests in/{ print $1 }' "$out")
  cs_hdr=$(curl -s -o /dev/null -D - "http://127.0.0.1:$port/f1k" | tr -d '\r' | awk -F': ' 'tolower($1) == "cache-status" { print $2 }')
  local per
  per=$(awk -v n="$reqs" -v t="$((t1 - t0))" -v hz="$CLK_TCK" 'BEGIN { if (t > 0) printf "%.0f", n / (t / hz); else print 0 }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cs" "$r" "$rps" "$p99" "$reqs" "$((t1 - t0))" "$per" "$cs_hdr" >>"$RUNS"
  log "$cs round $r: $rps req/s, p99 $p99 ms, $per req per node CPU-s ($cs_hdr)"
}
for ((r = 1; r <= ROUNDS; r++)); do
  run_case local "$r" t "${PORT[t-$T_OWNER]}"
  run_case forwarded-pipelined "$r" t "${PORT[t-$T_OTHER]}"
  run_case forwarded-http2 "$r" v "${PORT[v-$V_OTHER]}"
  run_case forwarded-http1 "$r" u "${PORT[u-$U_OTHER]}"
  run_case hot-replica "$r" h "${PORT[h-$H_OTHER]}"
done

# Cold misses: never-seen keys, one keep-alive curl each, origin direct / single node / CDN box.
cold() { # NAME PORT
  local cfg="$WORK/cold-$1.curl" i
  for ((i = 0; i < COLD_N; i++)); do
    printf 'url = "http://127.0.0.1:%s/cold/%s-%d"\noutput = "/dev/null"\n' "$2" "$1" "$i"
  done >"$cfg"
  timeout 600 curl -s -m 10 -w '%{http_code} %{time_total}\n' -K "$cfg" |
    awk '$1 == 200 { print $2 * 1000 }' | median
}
C_ORIGIN=$(cold origin "$ORIGIN_PORT")
C_SINGLE=$(cold single "$SINGLE_PORT")
C_OWNER=$(cold cdn "${PORT[t-$T_OWNER]}")

med() { awk -F'\t' -v c="$1" -v k="$2" 'NR > 1 && $1 == c { print $k }' "$RUNS" | median; }
L=$(med local 7); F=$(med forwarded-pipelined 7); H=$(med hot-replica 7)
{
  echo "# Outpost tiers bench — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "wrk -t$THREADS -c$CONNS -d${DURATION}s, $ROUNDS interleaved rounds, medians; 1 KiB hit; CPU of all 4 node processes of the topology."
  echo
  echo "| case | req/s | p99 ms | req per node CPU-s | CPU per hit vs local |"
  echo "|---|---|---|---|---|"
  for c in local forwarded-pipelined forwarded-http2 forwarded-http1 hot-replica; do
    v=$(med "$c" 7)
    printf '| %s | %s | %s | %s | %s |\n' "$c" "$(med "$c" 3)" "$(med "$c" 4)" "$v" \
      "$(awk -v l="$L" -v v="$v" 'BEGIN { if (v > 0) printf "%.2fx", l / v; else print "n/a" }')"
  done
  echo
  echo "Cold miss (median of $COLD_N sequential never-seen keys, link latency off):"
  echo "origin direct ${C_ORIGIN} ms; single node ${C_SINGLE} ms (+$(awk -v a="$C_SINGLE" -v b="$C_ORIGIN" 'BEGIN { printf "%.3f", a - b }') ms);"
  echo "CDN box -> (owner) -> shield -> origin ${C_OWNER} ms (+$(awk -v a="$C_OWNER" -v b="$C_ORIGIN" 'BEGIN { printf "%.3f", a - b }') ms)."
  echo
  echo "Targets: forwarded costs at most 2x a local hit ($(awk -v l="$L" -v f="$F" 'BEGIN { printf "%.2fx", l / f }')); hot replica the same as local ($(awk -v l="$L" -v h="$H" 'BEGIN { printf "%.2fx", l / h }'))."
} | tee "$OUT/results.md"
