#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ for a fixed time (DESIGN.md §7: fuzz targets for every parser).
#
#   scripts/fuzz.sh            # each target for 30 s
#   scripts/fuzz.sh 300        # each target for 300 s
#   FUZZ_TARGETS="range canonical_url" scripts/fuzz.sh 20
#
# Only the stable toolchain is installed; cargo-fuzz passes nightly-only flags (-Zsanitizer,
# -Cpasses=sancov-module, ...), which stable accepts with RUSTC_BOOTSTRAP=1. fuzz/ is its own
# workspace with its own target dir (fuzz/target), so this never touches the main build.
#
# Corpus: fuzz/corpus/TARGET (gitignored, grows across runs) plus the committed seeds in
# fuzz/seeds/TARGET (read-only input). Crashes land in fuzz/artifacts/TARGET/ (gitignored);
# reproduce one with:  RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...
#
# Env:
#   FUZZ_TARGETS     space-separated subset (default: all of `cargo fuzz list`)
#   FUZZ_SANITIZER   address (default) | none — none is ~2x faster; the crates forbid unsafe code
#   CARGO_BUILD_JOBS cargo's own knob, e.g. 1 on a shared machine
# Exit status: 0 when no target found a crash, 1 when at least one did, 2 on setup errors.
set -uo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-30}"
case "$SECONDS_PER_TARGET" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
SANITIZER="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked || { log "error: cargo install cargo-fuzz failed"; exit 2; }
fi

if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  mapfile -t targets < <(cargo fuzz list)
fi
[ "${#targets[@]}" -gt 0 ] || { log "error: no fuzz targets found"; exit 2; }

log "building ${targets[*]} (sanitizer: $SANITIZER)"
for t in "${targets[@]}"; do
  cargo fuzz build --sanitizer "$SANITIZER" "$t" || { log "error: build of $t failed"; exit 2; }
done

logdir="fuzz/target/logs"
mkdir -p "$logdir"
failed=()
summary=()
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  seeds="fuzz/seeds/$t"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  dirs=("$corpus")
  [ -d "$seeds" ] && dirs+=("$seeds")
  log "fuzzing $t for ${SECONDS_PER_TARGET}s (log: $logdir/$t.log)"
  cargo fuzz run --sanitizer "$SANITIZER" "$t" "${dirs[@]}" -- \
    -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 >"$logdir/$t.log" 2>&1
  rc=$?
  # libFuzzer's final stats: stat::number_of_executed_units and stat::average_exec_per_sec.
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logdir/$t.log" | tail -n1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logdir/$t.log" | tail -n1)
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    summary+=("$t: CRASH (exit $rc) after ${runs:-?} runs")
    log "$t found a crash:"
    grep -m1 -A3 "panicked at" "$logdir/$t.log" >&2
    grep -E "^==[0-9]+==ERROR|^SUMMARY:|Test unit written to" "$logdir/$t.log" | head -n 4 >&2
  else
    summary+=("$t: ok, ${runs:-?} runs, ${eps:-?} exec/s")
  fi
done

echo "== fuzz summary (${SECONDS_PER_TARGET}s per target)"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "crashing targets: ${failed[*]} (artifacts in fuzz/artifacts/)"
  exit 1
fi
