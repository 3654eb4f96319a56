#!/usr/bin/env bash
# Cross-checks the Outpost simulator (crates/outpost-sim, driving the store's own policy code)
# against an independent implementation, the PyPI package libcachesim 0.3.5, on the same CSV trace.
#
#   scripts/sim-crosscheck.sh                 # Zipf 0.8 + 20% scan bursts, 0.1% / 1% / 10% caches
#   SIM_REQUESTS=200000 scripts/sim-crosscheck.sh   # smaller, quicker
#   scripts/sim-crosscheck.sh --update-docs   # also copy the plot into docs/
#
# Env:
#   SIM_KEYS      Zipf catalogue size (100000)       SIM_REQUESTS  requests (1000000)
#   SIM_ZIPF      Zipf alpha (0.8)                   SIM_SCAN      scan share (0.2)
#   SIM_BURST     requests per scan burst (1000)     SIM_SEED      generator seed (1)
#   SIM_SIZES     cache sizes (0.1%,1%,10% of unique keys)
#   SIM_BIN       a prebuilt outpost-sim binary (default: cargo build --release -p outpost-sim)
#   SIM_JOBS      parallel simulations on our side (2)
#
# Steps: pip install libcachesim==0.3.5 if it is missing; generate the trace with our generator
# (object sizes "small": libCacheSim is told to ignore sizes, we weigh every object 1, so both
# compare object hit ratios of count-based caches); replay it through ours (lru, s3-fifo,
# w-tinylfu, belady, belady-admit) and through libCacheSim (scripts/sim/crosscheck.py: LRU,
# S3FIFO, WTinyLFU, Belady); print the side-by-side table.
# Output: .scratch/sim/{trace.csv,ours.csv,ours.svg,ours.txt,crosscheck.md}
# Exit status: 0 pass; 1 a check failed (see crosscheck.py: per policy and size within 1 point,
# w-tinylfu >= lru + 8 points at 1%, w-tinylfu >= libCacheSim's best online policy at every size;
# then the workload classes of scripts/sim-classes.sh at 50,000 requests with SIM_CHECK=1 and
# scripts/sim/known-gaps-ci.txt);
# 2 setup error; 3 libcachesim could not be installed (no pip or no network).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=SCRIPTDIR/lib/common.sh
. "$HERE/lib/common.sh"

UPDATE_DOCS=0
for arg in "$@"; do
  case "$arg" in
    --update-docs) UPDATE_DOCS=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) die "unknown argument $arg" ;;
  esac
done

KEYS="${SIM_KEYS:-100000}"
REQUESTS="${SIM_REQUESTS:-1000000}"
ZIPF="${SIM_ZIPF:-0.8}"
SCAN="${SIM_SCAN:-0.2}"
BURST="${SIM_BURST:-1000}"
SEED="${SIM_SEED:-1}"
SIZES="${SIM_SIZES:-0.1%,1%,10%}"
JOBS="${SIM_JOBS:-2}"
OUT="$SCRATCH/sim"
mkdir -p "$OUT" || die "cannot create $OUT"
START=$(date +%s)

# --- libcachesim -------------------------------------------------------------
PY="${PYTHON:-python3}"
have_lcs() {
  "$PY" - <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
import libcachesim  # noqa: F401
sys.exit(0 if version("libcachesim") == "0.3.5" else 1)
PYEOF
}
if ! have_lcs; then
  log "installing libcachesim==0.3.5 (pip)"
  timeout 900 "$PY" -m pip install --quiet "libcachesim==0.3.5" >&2 \
    || { log "error: pip install libcachesim==0.3.5 failed (see the pip output above)"; exit 3; }
  have_lcs || { log "error: libcachesim 0.3.5 installed but cannot be imported"; exit 3; }
fi

# --- our simulator -----------------------------------------------------------
if [ -n "${SIM_BIN:-}" ]; then
  BIN="$SIM_BIN"
else
  log "building outpost-sim (release)"
  (cd "$REPO" && cargo build --quiet --release -p outpost-sim --bin outpost-sim) \
    || die "cargo build -p outpost-sim failed"
  BIN="$REPO/target/release/outpost-sim"
fi
[ -x "$BIN" ] || die "no simulator binary at $BIN"

T0=$(date +%s)
log "generating the trace: zipf $ZIPF, $KEYS keys, $REQUESTS requests, ${SCAN} scan in bursts of $BURST"
"$BIN" gen --zipf "$ZIPF" --keys "$KEYS" --requests "$REQUESTS" --scan-fraction "$SCAN" \
  --scan-burst "$BURST" --sizes small --seed "$SEED" --out "$OUT/trace.csv" \
  || die "trace generation failed"

log "replaying through Outpost's policies"
"$BIN" run --trace "$OUT/trace.csv" --sizes "$SIZES" \
  --policies lru,s3-fifo,w-tinylfu,belady,belady-admit --jobs "$JOBS" \
  --csv "$OUT/ours.csv" --svg "$OUT/ours.svg" \
  --title "Zipf $ZIPF + $(awk "BEGIN{print $SCAN*100}")% scan: object hit ratio vs cache size" \
  | tee "$OUT/ours.txt" || die "outpost-sim run failed"
T1=$(date +%s)

log "replaying through libCacheSim"
"$PY" "$HERE/sim/crosscheck.py" --trace "$OUT/trace.csv" --ours "$OUT/ours.csv" \
  --markdown "$OUT/crosscheck.md"
RC=$?
T2=$(date +%s)
log "timings: ours (gen + run) $((T1 - T0)) s, libCacheSim $((T2 - T1)) s, total $((T2 - START)) s"

# Issue 11: every workload class at every size, the default policy against libCacheSim's best
# online policy in object hit ratio and (byte budget) byte hit ratio; the cells still open are
# listed with their floors in scripts/sim/known-gaps-ci.txt; and size-aware at least GDSF and LHD
# in object hit ratio on onehit and video (~2 min on 2 cores).
log "workload classes at ${SIM_CLASS_REQUESTS:-50000} requests (scripts/sim-classes.sh)"
SIM_REQUESTS="${SIM_CLASS_REQUESTS:-50000}" SIM_SIZES="0.1%,1%,10%" SIM_CHECK=1 SIM_TIMEOUT=20 \
  SIM_KNOWN_GAPS="$HERE/sim/known-gaps-ci.txt" SIM_BIN="$BIN" SIM_JOBS="$JOBS" \
  bash "$HERE/sim-classes.sh" >"$OUT/classes.txt" 2>&1
CRC=$?
grep -v 'WARN\|^.\[0m' "$OUT/classes.txt" | tail -20 >&2
[ "$CRC" -eq 0 ] || { log "workload classes: check failed (exit $CRC; $OUT/classes.txt)"; RC=1; }
log "timings: classes $(($(date +%s) - T2)) s"

if [ "$UPDATE_DOCS" -eq 1 ]; then
  cp "$OUT/ours.svg" "$REPO/docs/sim-zipf08-scan20.svg"
  log "copied the plot to docs/sim-zipf08-scan20.svg (the table in docs/simulator.md is edited by hand from $OUT/crosscheck.md)"
fi
exit "$RC"
