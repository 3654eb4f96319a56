#!/usr/bin/env bash
# Before/after on the hit path, one binary against another, with fresh processes: runs
# scripts/bench.sh AB_RUNS times, each time a new pair of processes (the order alternating), and
# reports per case the median over runs of each run's after/before ratio of req/CPU-s.
#
#   OUTPOST_BIN=target/release/outpost OUTPOST_BASE_BIN=/tmp/outpost-before scripts/bench-ab.sh
#   OUTPOST_BIN=/tmp/x OUTPOST_BASE_BIN=/tmp/x scripts/bench-ab.sh     # A/A: the method's noise
#
# Why: on this machine one process of a binary can be ~7-10% faster than another process of the
# very same binary for its whole life (thread placement, memory layout), so more rounds against
# the same two processes do not converge; new processes per run do (docs/benchmarks.md).
#
# Env:
#   OUTPOST_BIN       "after" (default target/release/outpost)   OUTPOST_BASE_BIN "before" (required)
#   AB_RUNS           process pairs (6)                          BENCH_ROUNDS     rounds per pair (3)
#   BENCH_CASES       ("1k random")                              BENCH_DURATION   seconds per run (8)
#   (other scripts/bench.sh variables pass through)
# Output: table on stdout and .scratch/bench-ab/summary.md; raw runs in .scratch/bench-ab/runs.tsv
# (run, case, who, round, req/CPU-s, foreign % of a core). Runs with foreign load over 25% of a
# core are left out. Exit status: 0; 2 on setup errors (as scripts/bench.sh).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=SCRIPTDIR/lib/common.sh
. "$HERE/lib/common.sh"

AFTER="${OUTPOST_BIN:-$REPO/target/release/outpost}"
BEFORE="${OUTPOST_BASE_BIN:-}"
RUNS_N="${AB_RUNS:-6}"
[ -x "$AFTER" ] || die "no outpost binary at $AFTER (build it or set OUTPOST_BIN)"
[ -x "$BEFORE" ] || die "set OUTPOST_BASE_BIN to the binary to compare against"
case "$RUNS_N" in ''|*[!0-9]*|0) die "AB_RUNS must be a positive whole number" ;; esac
command -v python3 >/dev/null || die "python3 is needed for the summary"

OUT="$SCRATCH/bench-ab"
mkdir -p "$OUT"
RAW="$OUT/runs.tsv"
printf 'run\tcase\twho\tround\treq_cpu_s\tforeign_pct\n' >"$RAW"

for i in $(seq 1 "$RUNS_N"); do
  if [ $((i % 2)) -eq 1 ]; then first="$AFTER" second="$BEFORE" who1=after who2=before
  else first="$BEFORE" second="$AFTER" who1=before who2=after; fi
  log "pair $i of $RUNS_N: $who1 runs as contender outpost, $who2 as outpost-base"
  BENCH_CONTENDERS="outpost outpost-base" OUTPOST_BIN="$first" OUTPOST_BASE_BIN="$second" \
    BENCH_CASES="${BENCH_CASES:-1k random}" BENCH_ROUNDS="${BENCH_ROUNDS:-3}" \
    BENCH_DURATION="${BENCH_DURATION:-8}" BENCH_COLD_N=0 \
    bash "$HERE/bench.sh" >"$OUT/pair-$i.log" 2>&1
  rc=$?
  [ "$rc" -eq 0 ] || { tail -n 20 "$OUT/pair-$i.log" >&2; die "scripts/bench.sh failed (exit $rc) in pair $i"; }
  tck="$(getconf CLK_TCK)"
  awk -F'\t' -v run="$i" -v w1="$who1" -v w2="$who2" -v hz="$tck" \
    'NR > 1 && $7 > 0 { who = ($2 == "outpost") ? w1 : w2;
       printf "%s\t%s\t%s\t%s\t%.0f\t%s\n", run, $1, who, $3, $6 / ($7 / hz), $11 }' \
    "$SCRATCH/bench/runs.tsv" >>"$RAW"
done

python3 - "$RAW" "$AFTER" "$BEFORE" <<'EOF' | tee "$OUT/summary.md"
import sys, statistics as st
from collections import defaultdict
raw, after, before = sys.argv[1:4]
runs = defaultdict(list)
with open(raw) as f:
    next(f)
    for line in f:
        run, case, who, _rnd, rate, foreign = line.rstrip("\n").split("\t")
        if float(foreign) <= 25:
            runs[(case, int(run), who)].append(float(rate))
print(f"after: {after}\nbefore: {before}\n")
print("| case | pairs | after/before, median of the pairs' ratios | min | max | pairs after won | after req/CPU-s | before req/CPU-s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for case in sorted({k[0] for k in runs}):
    ratios, a_all, b_all = [], [], []
    for run in sorted({k[1] for k in runs if k[0] == case}):
        a, b = runs.get((case, run, "after")), runs.get((case, run, "before"))
        if not a or not b:
            continue
        ratios.append(st.median(a) / st.median(b))
        a_all += a
        b_all += b
    if not ratios:
        print(f"| {case} | 0 | n/a | | | | | |")
        continue
    won = sum(r > 1 for r in ratios)
    print(f"| {case} | {len(ratios)} | {st.median(ratios):.3f} | {min(ratios):.3f} | {max(ratios):.3f} "
          f"| {won} of {len(ratios)} | {st.median(a_all):,.0f} | {st.median(b_all):,.0f} |")
EOF
