#!/usr/bin/env bash
# Validate the control API's OpenAPI document with a standard validator
# (openapi-spec-validator from PyPI, installed into .scratch/pylib when missing).
# Exit codes: 0 valid; 1 invalid; 3 the validator could not be installed (no pip or no network).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib/common.sh
. "$HERE/lib/common.sh"
BIN="${OUTPOST_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/debug/outpost}"
LIB="$SCRATCH/pylib"
mkdir -p "$SCRATCH"
if ! PYTHONPATH="$LIB" python3 -c 'import openapi_spec_validator' 2>/dev/null; then
  log "installing openapi-spec-validator (pip, into $LIB)"
  timeout 600 python3 -m pip install --quiet --target "$LIB" "openapi-spec-validator==0.7.1" >&2 \
    || { log "error: pip install openapi-spec-validator failed"; exit 3; }
fi
"$BIN" control --openapi > "$SCRATCH/openapi.json" || die "outpost control --openapi failed"
PYTHONPATH="$LIB" python3 - "$SCRATCH/openapi.json" <<'PY' || exit 1
import json, sys
from openapi_spec_validator import validate
with open(sys.argv[1]) as f:
    doc = json.load(f)
validate(doc)
print(f"OpenAPI {doc['openapi']}: {len(doc['paths'])} paths valid")
PY
