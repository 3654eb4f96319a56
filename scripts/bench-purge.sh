#!/usr/bin/env bash
# Purge propagation (issue 10, proof 1): 20 nodes (4 PoPs of 4 edge boxes, a shield set of 4)
# in front of the demo origin, with the control plane; each round tags 1,000 objects (stored by
# the PoP owners, the shields and the edges), purges the tag through the API and measures the
# time until every node has applied it; then checks through every PoP that no purged object is
# served from a copy made before the purge (the example exits non-zero if one is). Twice: every
# node in one process over the in-process bus, and every node its own `outpost node --bus`
# process over NATS JetStream (Debian's nats-server, started on 127.0.0.1).
#
#   scripts/bench-purge.sh                 # 20 nodes, 1,000 objects, 20 rounds per mode
#   BENCH_ROUNDS=5 scripts/bench-purge.sh
#
# Output: one table row per mode on stdout and in .scratch/bench-purge/results.md.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib/common.sh
. "$HERE/lib/common.sh"
cd "$REPO"
NODES="${BENCH_NODES:-20}"
OBJECTS="${BENCH_OBJECTS:-1000}"
ROUNDS="${BENCH_ROUNDS:-20}"
OUT="$SCRATCH/bench-purge"
mkdir -p "$OUT"
PATH="$PATH:/usr/sbin" ensure_cmds nats-server:nats-server
log "building release outpost and the purge_bench example"
cargo build --release -p outpost --bin outpost
cargo build --release -p outpost-control --example purge_bench
{
  echo "| mode | nodes | objects | rounds | until every node applied (client) | last node's ack after acceptance | check |"
  echo "|---|---|---|---|---|---|---|"
} > "$OUT/results.md"
for mode in inprocess nats; do
  log "mode $mode"
  target/release/examples/purge_bench "$mode" "$NODES" "$OBJECTS" "$ROUNDS" target/release/outpost \
    | tee -a "$OUT/results.md"
done
cat "$OUT/results.md"
