#!/usr/bin/env bash
# Cache-hit throughput and cold-miss latency: Outpost against nginx proxy_cache and Varnish on this
# machine, in the same run, with a bare hyper server as the ceiling (shared/BENCHMARKING.md).
#
#   scripts/bench.sh                                   # full run (4 cases x 4 contenders x 2 rounds x 10 s)
#   BENCH_DURATION=3 BENCH_ROUNDS=2 scripts/bench.sh   # smoke run
#   BENCH_CONTENDERS="nginx varnish" scripts/bench.sh  # without the outpost binary
#
# Env:
#   BENCH_CONTENDERS  space-separated, from: outpost nginx varnish bare-hyper static outpost-ssd
#                     varnish-file (outpost-ssd: --store-dir with a 1 MiB RAM tier, so hits come
#                     from the SSD segments; varnish-file: Varnish with -s file storage)
#                     (default "outpost nginx varnish bare-hyper"; static = the origin nginx
#                     itself: 1 worker, unbuffered access log, so a floor, not a tuned static server)
#   BENCH_CASES       from: 1k 100k 1m random (default all four)
#   BENCH_DURATION    seconds per wrk run (10)         BENCH_ROUNDS   interleaved rounds (2)
#   BENCH_CONNECTIONS wrk connections (64)             BENCH_THREADS  wrk threads (2)
#   BENCH_KEYS        distinct keys of the random case (10000)
#   BENCH_COLD_N      sequential cold misses per contender (500; 0 skips the cold-miss test)
#   OUTPOST_BIN       default target/release/outpost
#   OUTPOST_BASE_BIN  the binary of contender `outpost-base`, an earlier build run as `outpost` is
#                     (before/after comparisons in one run: BENCH_CONTENDERS="outpost outpost-base ...")
#   BARE_HYPER_BIN    default target/release/examples/bare_hyper
#                     (cargo build --release --example bare_hyper -p outpost-testkit)
#   OUTPOST_RAM       --ram-bytes for outpost (1024M, like Varnish's -s malloc,1G)
#   BENCH_NGINX_WORKERS  worker_processes of the nginx contender (auto)
#   BENCH_NGINX_SENDFILE sendfile of the nginx contender (on). Measured here: off gives nginx ~40%
#                     more req/CPU-s on 1 KiB hits (~40k vs ~28k) but ~30% less on 100 KiB hits.
#   BENCH_QUIET_WAIT  seconds to wait before each run for other load to stop (10)
#
# Method: every contender runs at once in front of one static nginx origin (access-logged); a case
# warms all its keys through every contender (twice), then runs wrk against A B C, A B C, ...
# For each run: req/s and p99 (wrk --latency), requests per CPU-second of the contender's process
# tree (utime+stime from /proc, all threads), foreign load = host busy - contender - wrk, in % of
# one core (runs over 25% are flagged and left out of the median when a clean round exists), and
# requests that reached the origin during a hit run (must be 0). Bare hyper answers a constant
# 1 KiB body, so it runs in the 1k and random cases only.
# Output: table on stdout and .scratch/bench/results.md; raw runs in .scratch/bench/runs.tsv.
# Exit status: 0; 3 when a hit run reached the origin; 2 on setup errors.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=SCRIPTDIR/lib/common.sh
. "$HERE/lib/common.sh"
# shellcheck source=SCRIPTDIR/bench/configs.sh
. "$HERE/bench/configs.sh"
# shellcheck source=SCRIPTDIR/bench/measure.sh
. "$HERE/bench/measure.sh"

read -r -a CONTENDERS <<<"${BENCH_CONTENDERS:-outpost nginx varnish bare-hyper}"
read -r -a CASES <<<"${BENCH_CASES:-1k 100k 1m random}"
DURATION="${BENCH_DURATION:-10}"; DURATION="${DURATION%s}"
ROUNDS="${BENCH_ROUNDS:-2}"
CONNS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"
export BENCH_KEYS="${BENCH_KEYS:-10000}"
COLD_N="${BENCH_COLD_N:-500}"
OUTPOST_BIN="${OUTPOST_BIN:-$REPO/target/release/outpost}"
BARE_HYPER_BIN="${BARE_HYPER_BIN:-$REPO/target/release/examples/bare_hyper}"
OUTPOST_RAM="${OUTPOST_RAM:-1024M}"
FOREIGN_LIMIT=25
QUIET_WAIT="${BENCH_QUIET_WAIT:-10}"

OUT="$SCRATCH/bench"
WORK="$OUT/work"
WWW="$OUT/www"
RUNS="$OUT/runs.tsv"
mkdir -p "$OUT"
rm -rf "$WORK"; mkdir -p "$WORK"

trap cleanup_all EXIT
trap 'exit 130' INT TERM

case "$DURATION" in ''|*[!0-9]*) die "BENCH_DURATION must be whole seconds" ;; esac
# On a fresh clone, build what the default contenders need (release binaries).
if [ "$OUTPOST_BIN" = "$REPO/target/release/outpost" ] && [ ! -x "$OUTPOST_BIN" ]; then
  log "building target/release/outpost"
  (cd "$REPO" && cargo build --release -p outpost --bin outpost) || die "cargo build of outpost failed"
fi
case " ${CONTENDERS[*]} " in
  *" bare-hyper "*)
    if [ "$BARE_HYPER_BIN" = "$REPO/target/release/examples/bare_hyper" ] && [ ! -x "$BARE_HYPER_BIN" ]; then
      log "building target/release/examples/bare_hyper"
      (cd "$REPO" && cargo build --release --example bare_hyper -p outpost-testkit) || die "cargo build of bare_hyper failed"
    fi ;;
esac
for c in "${CONTENDERS[@]}"; do
  case "$c" in
    outpost) [ -x "$OUTPOST_BIN" ] || die "no outpost binary at $OUTPOST_BIN (build it, set OUTPOST_BIN, or BENCH_CONTENDERS without outpost)" ;;
    bare-hyper) [ -x "$BARE_HYPER_BIN" ] || die "no bare_hyper at $BARE_HYPER_BIN (cargo build --release --example bare_hyper -p outpost-testkit, or drop bare-hyper from BENCH_CONTENDERS)" ;;
    outpost-ssd) [ -x "$OUTPOST_BIN" ] || die "no outpost binary at $OUTPOST_BIN" ;;
    outpost-base) [ -x "${OUTPOST_BASE_BIN:-}" ] || die "outpost-base needs OUTPOST_BASE_BIN (an earlier build of outpost)" ;;
    nginx|varnish|varnish-file|static) ;;
    *) die "unknown contender $c (outpost outpost-base nginx varnish bare-hyper static outpost-ssd varnish-file)" ;;
  esac
done
for c in "${CASES[@]}"; do
  case "$c" in 1k|100k|1m|random) ;; *) die "unknown case $c (1k 100k 1m random)" ;; esac
done

needs=(nginx:nginx-light wrk:wrk curl:curl)
for c in "${CONTENDERS[@]}"; do case "$c" in varnish|varnish-file) needs+=(varnishd:varnish) ;; esac; done
ensure_cmds "${needs[@]}"

log "making content in $WWW (1 KiB, 100 KiB, 1 MiB, $BENCH_KEYS keys)"
make_content "$WWW"

# --- processes ----------------------------------------------------------------------
declare -A PORT PID
ORIGIN_PORT=$(free_port)
mkdir -p "$WORK/origin"
write_origin_conf "$WORK/origin/nginx.conf" "$WORK/origin" "$ORIGIN_PORT" "$WWW"
spawn origin "$WORK/origin/stderr.log" nginx -p "$WORK/origin" -e "$WORK/origin/logs/error.log" \
  -c "$WORK/origin/nginx.conf" -g 'daemon off;'
ORIGIN_PID=$SPAWNED_PID
wait_port "$ORIGIN_PORT" "$ORIGIN_PID" origin 30 || exit 2
ORIGIN_LOG="$WORK/origin/logs/access.log"

for c in "${CONTENDERS[@]}"; do
  p=$(free_port); PORT[$c]=$p; w="$WORK/$c"; mkdir -p "$w"
  case "$c" in
    outpost)
      spawn outpost "$w/stderr.log" "$OUTPOST_BIN" node --listen "127.0.0.1:$p" \
        --origin "http://127.0.0.1:$ORIGIN_PORT" --name bench --ram-bytes "$OUTPOST_RAM" ;;
    outpost-base)
      spawn outpost-base "$w/stderr.log" "$OUTPOST_BASE_BIN" node --listen "127.0.0.1:$p" \
        --origin "http://127.0.0.1:$ORIGIN_PORT" --name bench --ram-bytes "$OUTPOST_RAM" ;;
    nginx)
      write_nginx_proxy_conf "$w/nginx.conf" "$w" "$p" "$ORIGIN_PORT"
      spawn nginx "$w/stderr.log" nginx -p "$w" -e "$w/logs/error.log" -c "$w/nginx.conf" -g 'daemon off;' ;;
    varnish)
      write_varnish_vcl "$w/bench.vcl" "$ORIGIN_PORT"
      spawn varnish "$w/stderr.log" varnishd -F -j none -n "$w/varnish" -T none \
        -a "127.0.0.1:$p" -f "$w/bench.vcl" -s malloc,1G ;;
    outpost-ssd)
      rm -rf "$w/store"
      spawn outpost-ssd "$w/stderr.log" "$OUTPOST_BIN" node --listen "127.0.0.1:$p" \
        --origin "http://127.0.0.1:$ORIGIN_PORT" --name bench-ssd --ram-bytes 1M \
        --store-dir "$w/store" --disk-bytes 2G ;;
    varnish-file)
      write_varnish_vcl "$w/bench.vcl" "$ORIGIN_PORT"
      spawn varnish-file "$w/stderr.log" varnishd -F -j none -n "$w/varnish" -T none \
        -a "127.0.0.1:$p" -f "$w/bench.vcl" -s "file,$w/varnish_storage.bin,2G" ;;
    bare-hyper)
      spawn bare-hyper "$w/stderr.log" "$BARE_HYPER_BIN" --listen "127.0.0.1:$p" ;;
    static)
      PORT[$c]=$ORIGIN_PORT; SPAWNED_PID=$ORIGIN_PID ;;
  esac
  PID[$c]=$SPAWNED_PID
done
for c in "${CONTENDERS[@]}"; do
  # Varnish compiles its VCL at start-up (1-2 s): 30 s is plenty for everyone.
  wait_port "${PORT[$c]}" "${PID[$c]}" "$c" 30 || { tail -n 20 "$WORK/$c/stderr.log" >&2; exit 2; }
done
log "origin 127.0.0.1:$ORIGIN_PORT; $(for c in "${CONTENDERS[@]}"; do printf '%s 127.0.0.1:%s  ' "$c" "${PORT[$c]}"; done)"

# --- helpers -----------------------------------------------------------------------
case_path() { case "$1" in 1k) echo /f1k ;; 100k) echo /f100k ;; 1m) echo /f1m ;; random) echo /keys/k00000 ;; esac; }
case_size() { case "$1" in 1k) echo 1024 ;; 100k) echo 102400 ;; 1m) echo 1048576 ;; random) echo 1007 ;; esac; }
applies() { # contender case: bare hyper has one constant 1 KiB body
  [ "$1" != bare-hyper ] || [ "$2" = 1k ] || [ "$2" = random ]
}
is_proxy() { [ "$1" != bare-hyper ] && [ "$1" != static ]; }
origin_lines() { if [ -f "$ORIGIN_LOG" ]; then wc -l <"$ORIGIN_LOG"; else echo 0; fi; }

# curl_list PORT PATHFILE FORMAT — one keep-alive curl fetching every path in PATHFILE in order,
# printing FORMAT per transfer.
curl_list() {
  local port="$1" paths="$2" fmt="$3" cfg
  cfg=$(mktemp "$WORK/curl.XXXXXX")
  awk -v p="$port" '{ printf "url = \"http://127.0.0.1:%s%s\"\noutput = \"/dev/null\"\n", p, $0 }' "$paths" >"$cfg"
  timeout 600 curl -s -m 10 -w "$fmt" -K "$cfg"
  rm -f "$cfg"
}

# warm CONTENDER CASE — fetch every key of the case twice; all must be 200 with the full body.
warm() {
  local c="$1" cs="$2" paths="$WORK/warm-$2.paths" bad
  if [ ! -s "$paths" ]; then
    if [ "$cs" = random ]; then
      for ((i = 0; i < BENCH_KEYS; i++)); do printf '/keys/k%05d\n' "$i"; done >"$paths"
    else
      case_path "$cs" >"$paths"
    fi
  fi
  for pass in 1 2; do
    bad=$(curl_list "${PORT[$c]}" "$paths" '%{http_code} %{size_download}\n' |
      awk -v cs="$cs" -v want="$(case_size "$cs")" '$1 != 200 || (cs != "random" && $2 != want) { n++ } END { print n + 0 }')
    [ "$bad" = 0 ] || log "warning: warm-up of $cs through $c (pass $pass): $bad responses not 200 with full body"
  done
}

printf 'case\tcontender\tround\treq_s\tp99_ms\trequests\tproxy_ticks\twrk_ticks\thost_ticks\telapsed_s\tforeign_pct\torigin_reqs\terrors\n' >"$RUNS"

# wait_quiet — up to QUIET_WAIT seconds for the machine to be idle (busy under FOREIGN_LIMIT% of a
# core over 0.5 s) before a run; a run that starts noisy anyway is flagged by its foreign load.
wait_quiet() {
  local deadline=$(( $(date +%s) + QUIET_WAIT )) h0 h1 pct
  while :; do
    h0=$(host_busy_ticks); sleep 0.5; h1=$(host_busy_ticks)
    pct=$(( (h1 - h0) * 100 * 2 / CLK_TCK ))
    [ "$pct" -le "$FOREIGN_LIMIT" ] && return 0
    if [ "$(date +%s)" -ge "$deadline" ]; then
      [ "$QUIET_WAIT" -gt 0 ] && log "machine still busy (${pct}% of a core) after ${QUIET_WAIT}s; running anyway"
      return 0
    fi
  done
}

# run_one CONTENDER CASE ROUND — one wrk run with CPU and origin accounting; appends to runs.tsv.
run_one() {
  local c="$1" cs="$2" r="$3" url out="$WORK/wrk-$2-$1-$3.txt" script=()
  url="http://127.0.0.1:${PORT[$c]}$(case_path "$cs")"
  [ "$cs" = random ] && script=(-s "$HERE/bench/random-keys.lua")
  local o0 p0 h0 t0 o1 p1 h1 t1 wrk_stat
  wait_quiet
  o0=$(origin_lines); p0=$(tree_ticks "${PID[$c]}"); h0=$(host_busy_ticks); t0=$(now_ns)
  wrk_stat=$(
    timeout $((DURATION + 60)) wrk -t "$THREADS" -c "$CONNS" -d "${DURATION}s" --timeout 5s --latency \
      "${script[@]}" "$url" >"$out" 2>&1
    read -r line </proc/$BASHPID/stat; printf '%s' "$line"
  )
  t1=$(now_ns); h1=$(host_busy_ticks); p1=$(tree_ticks "${PID[$c]}"); o1=$(origin_lines)
  local wrk_ticks rps p99 reqs errs
  wrk_ticks=$(child_ticks_of_stat_line "$wrk_stat")
  rps=$(awk '/^Requests\/sec:/{ print $2 }' "$out")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  reqs=$(awk '/requests in/{ print $1 }' "$out")
  errs=$(awk '/Non-2xx/{ n += $NF } /Socket errors/{ gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$out")
  [ -n "$rps" ] || { log "wrk failed for $c $cs: $(tail -n 3 "$out" | tr '\n' ' ')"; rps=0; reqs=0; }
  local proxy_ticks=$((p1 - p0)) host_ticks=$((h1 - h0)) origin_reqs=$((o1 - o0))
  local elapsed foreign
  elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
  foreign=$(awk -v h="$host_ticks" -v p="$proxy_ticks" -v w="$wrk_ticks" -v e="$elapsed" -v hz="$CLK_TCK" \
    'BEGIN { f = h - p - w; if (f < 0) f = 0; printf "%.1f", 100 * f / (e * hz) }')
  is_proxy "$c" || origin_reqs=-
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cs" "$c" "$r" "$rps" "$p99" "$reqs" \
    "$proxy_ticks" "$wrk_ticks" "$host_ticks" "$elapsed" "$foreign" "$origin_reqs" "$errs" >>"$RUNS"
  log "$cs $c round $r: ${rps} req/s, p99 ${p99} ms, proxy $((proxy_ticks)) ticks, wrk $wrk_ticks, foreign ${foreign}% core, origin $origin_reqs, errors $errs"
}

# --- hit runs ------------------------------------------------------------------------
for cs in "${CASES[@]}"; do
  for c in "${CONTENDERS[@]}"; do applies "$c" "$cs" && { log "warming $cs through $c"; warm "$c" "$cs"; }; done
  for ((r = 1; r <= ROUNDS; r++)); do
    for c in "${CONTENDERS[@]}"; do applies "$c" "$cs" && run_one "$c" "$cs" "$r"; done
  done
done

# --- cold misses -----------------------------------------------------------------------
COLD="$OUT/cold.tsv"
printf 'target\tmedian_ms\tp90_ms\tsamples\n' >"$COLD"
if [ "$COLD_N" -gt 0 ]; then
  run_id="$(date +%s)-$$"
  cold_run() { # NAME PORT — COLD_N sequential never-seen keys on one keep-alive connection
    local name="$1" port="$2" paths="$WORK/cold-$1-$3.paths" samples="$WORK/cold-$1-$3.samples"
    for ((i = 0; i < COLD_N; i++)); do printf '/cold/%s-%s-%s-%d\n' "$run_id" "$name" "$3" "$i"; done >"$paths"
    curl_list "$port" "$paths" '%{http_code} %{time_total}\n' >"$samples"
    awk '$1 == 200 { print $2 * 1000 }' "$samples" >>"$WORK/cold-$name.ms"
  }
  rm -f "$WORK"/cold-*.ms
  # origin directly before each proxy, so drift hits both sides alike
  for c in "${CONTENDERS[@]}"; do
    is_proxy "$c" || continue
    log "cold misses: origin direct, then $c ($COLD_N each)"
    cold_run origin "$ORIGIN_PORT" "$c"
    o0=$(origin_lines)
    cold_run "$c" "${PORT[$c]}" 1
    o1=$(origin_lines)
    [ $((o1 - o0)) -ge "$COLD_N" ] || log "warning: $c sent only $((o1 - o0)) of $COLD_N cold misses to the origin"
  done
  for f in "$WORK"/cold-*.ms; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .ms); name=${name#cold-}
    printf '%s\t%s\t%s\t%s\n' "$name" "$(median <"$f")" \
      "$(sort -g "$f" | awk '{ v[NR] = $1 } END { if (NR) print v[int(NR * 0.9 + 0.5)] }')" "$(wc -l <"$f")" >>"$COLD"
  done
fi

# --- report ------------------------------------------------------------------------------
REPORT="$OUT/results.md"
HIT_LEAK=0
{
  echo "# Outpost bench — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "wrk -t$THREADS -c$CONNS -d${DURATION}s, $ROUNDS interleaved rounds, medians; $(nproc) cores; CLK_TCK=$CLK_TCK."
  echo "Contenders: ${CONTENDERS[*]}. req/CPU-s = requests per CPU-second of the contender's processes."
  echo "Foreign = host busy minus contender minus wrk, % of one core (max over the rounds used; ⚠ over $FOREIGN_LIMIT%)."
  echo
  echo "| case | contender | req/s | p99 ms | req/CPU-s | contender CPU (cores) | foreign % | origin reqs | errors | rounds used |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} >"$REPORT"

declare -A EFF
summary_rows() {
  local cs="$1" c="$2"
  awk -F'\t' -v cs="$cs" -v c="$c" -v lim="$FOREIGN_LIMIT" -v hz="$CLK_TCK" '
    NR > 1 && $1 == cs && $2 == c {
      n++; rps[n] = $4; p99[n] = $5; eff[n] = ($7 > 0 ? $6 / ($7 / hz) : 0); cores[n] = $7 / hz / $10
      fo[n] = $11; orig = ($12 == "-" ? "-" : orig + $12); err += $13; clean[n] = ($11 <= lim)
      if (clean[n]) nc++
    }
    function med(a, use,   m, i, j, t, v) {
      m = 0
      for (i = 1; i <= n; i++) if (use[i]) v[++m] = a[i]
      for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
      if (m == 0) return "nan"
      return (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
    }
    END {
      if (n == 0) exit
      for (i = 1; i <= n; i++) use[i] = (nc == 0 || clean[i])
      fmax = 0; for (i = 1; i <= n; i++) if (use[i] && fo[i] > fmax) fmax = fo[i]
      flag = (fmax > lim) ? " ⚠" : ""
      used = (nc == 0) ? n "/" n " (all noisy)" : nc "/" n
      printf "%s\t%.0f\t%.2f\t%.0f\t%.2f\t%.1f%s\t%s\t%d\t%s\n", c, med(rps, use), med(p99, use), med(eff, use),
        med(cores, use), fmax, flag, (orig == "" ? 0 : orig), err, used
    }' "$RUNS"
}
for cs in "${CASES[@]}"; do
  for c in "${CONTENDERS[@]}"; do
    applies "$c" "$cs" || continue
    row=$(summary_rows "$cs" "$c")
    [ -n "$row" ] || continue
    IFS=$'\t' read -r _ rps p99 eff cores foreign orig errs used <<<"$row"
    EFF[$cs,$c]=$eff
    if [ "$orig" != "-" ] && [ "$orig" != 0 ]; then HIT_LEAK=1; orig="$orig ✗"; fi
    echo "| $cs | $c | $rps | $p99 | $eff | $cores | $foreign | $orig | $errs | $used |" >>"$REPORT"
  done
done

ratio() { # CASE A B
  local a="${EFF[$1,$2]:-}" b="${EFF[$1,$3]:-}"
  if [ -n "$a" ] && [ -n "$b" ] && [ "$b" != 0 ]; then awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }'; else echo "n/a"; fi
}
{
  echo
  echo "Ratios of req/CPU-s (higher is better for Outpost):"
  echo
  echo "| case | Outpost/Varnish | Outpost/nginx | Outpost/bare-hyper |"
  echo "|---|---|---|---|"
  for cs in "${CASES[@]}"; do
    echo "| $cs | $(ratio "$cs" outpost varnish) | $(ratio "$cs" outpost nginx) | $(ratio "$cs" outpost bare-hyper) |"
  done
  if [ -n "${PORT[outpost-base]:-}" ]; then
    echo
    echo "This build against the earlier one (OUTPOST_BASE_BIN), req/CPU-s:"
    echo
    echo "| case | Outpost/Outpost-base | Outpost-base/Varnish | Outpost-base/nginx |"
    echo "|---|---|---|---|"
    for cs in "${CASES[@]}"; do
      echo "| $cs | $(ratio "$cs" outpost outpost-base) | $(ratio "$cs" outpost-base varnish) | $(ratio "$cs" outpost-base nginx) |"
    done
  fi
  if [ -n "${PORT[outpost-ssd]:-}" ] && [ -n "${PORT[varnish-file]:-}" ]; then
    echo
    echo "SSD tier: Outpost with a 1 MiB RAM tier and --store-dir vs Varnish -s file (req/CPU-s):"
    echo
    echo "| case | Outpost-SSD/Varnish-file |"
    echo "|---|---|"
    for cs in "${CASES[@]}"; do echo "| $cs | $(ratio "$cs" outpost-ssd varnish-file) |"; done
  fi
  if [ "$COLD_N" -gt 0 ]; then
    echo
    echo "Cold misses: $COLD_N sequential never-seen keys per proxy on one keep-alive connection (curl time_total),"
    echo "against the origin directly (measured right before each proxy):"
    echo
    echo "| target | median ms | p90 ms | added median ms vs origin | samples |"
    echo "|---|---|---|---|---|"
    omed=$(awk -F'\t' '$1 == "origin" { print $2 }' "$COLD")
    awk -F'\t' -v o="$omed" 'NR > 1 {
      added = ($1 == "origin" || o == "") ? "—" : sprintf("%+.3f", $2 - o)
      printf "%d\t| %s | %.3f | %.3f | %s | %s |\n", ($1 != "origin"), $1, $2, $3, added, $4 }' "$COLD" |
      sort -t$'\t' -k1,1n -s | cut -f2-
  fi
  echo
  if [ "$HIT_LEAK" -eq 1 ]; then
    echo "✗ some hit runs reached the origin (column 'origin reqs'): those are not pure hit numbers."
  else
    echo "Hit runs sent 0 requests to the origin (access log line count before/after each run)."
  fi
  echo "Raw runs: $RUNS; wrk outputs and logs: $WORK."
} >>"$REPORT"

echo
cat "$REPORT"
[ "$HIT_LEAK" -eq 0 ] || exit 3
exit 0
