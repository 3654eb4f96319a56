#!/usr/bin/env bash
# TLS scan of the edge's HTTPS listener with Debian's testssl.sh: protocols, ciphers per
# protocol, server defaults, renegotiation and the known vulnerabilities (Heartbleed, ROBOT,
# CRIME, BREACH, POODLE, SWEET32, FREAK, DROWN, LOGJAM, BEAST, LUCKY13, ...).
#
#   scripts/tls-scan.sh            # exit 0 when no finding is MEDIUM or worse
#   TLS_EARLY_DATA=16K scripts/tls-scan.sh   # the same with 0-RTT on (node.tls_early_data)
#
# The certificate is a fresh self-signed ECDSA P-256 one (openssl), so trust-chain findings
# ("self signed", no OCSP/CT/CAA) are about the test certificate, not the server, and the
# "security_headers" check is about the origin application's headers (CSP, X-Frame-Options);
# both are listed but not counted. Everything binds 127.0.0.1. Output: .scratch/tls-scan/ (JSON + log).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
# shellcheck source=SCRIPTDIR/lib/common.sh
. "$HERE/lib/common.sh"

OUT="$SCRATCH/tls-scan"
rm -rf "$OUT"; mkdir -p "$OUT"
trap cleanup_all EXIT
trap 'exit 130' INT TERM
OUTPOST_BIN="${OUTPOST_BIN:-$REPO/target/debug/outpost}"
if [ ! -x "$OUTPOST_BIN" ]; then
  (cd "$REPO" && cargo build -p outpost --bin outpost) || die "cargo build failed"
fi
ensure_cmds testssl:testssl.sh openssl:openssl curl:curl

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj "/CN=scan.test" -addext "subjectAltName=DNS:scan.test" \
  -keyout "$OUT/key.pem" -out "$OUT/cert.pem" 2>/dev/null || die "openssl req failed"
ORIGIN_PORT=$(free_port); HTTP_PORT=$(free_port); TLS_PORT=$(free_port)
spawn origin "$OUT/origin.log" python3 -m http.server "$ORIGIN_PORT" --bind 127.0.0.1 --directory "$OUT"
wait_port "$ORIGIN_PORT" "$SPAWNED_PID" origin 20 || exit 2
cat >"$OUT/node.toml" <<EOF
[node]
name = "scan"
listen = "127.0.0.1:$HTTP_PORT"
metrics = ""
tls_listen = "127.0.0.1:$TLS_PORT"
tls_default_cert = "$OUT/cert.pem"
tls_default_key = "$OUT/key.pem"
tls_early_data = "${TLS_EARLY_DATA:-0}"

[[tenant]]
name = "scan"
hostnames = ["scan.test", "127.0.0.1"]
origins = ["http://127.0.0.1:$ORIGIN_PORT"]
[tenant.tls]
cert = "$OUT/cert.pem"
key = "$OUT/key.pem"
hsts_max_age = "365d"
EOF
spawn outpost "$OUT/outpost.log" "$OUTPOST_BIN" node --config "$OUT/node.toml"
wait_port "$TLS_PORT" "$SPAWNED_PID" outpost 30 || exit 2

log "testssl.sh against 127.0.0.1:$TLS_PORT (a few minutes)"
testssl --quiet --color 0 --warnings off --openssl-timeout 5 --connect-timeout 5 \
  --ip 127.0.0.1 -p -e -S -R -U -h \
  --jsonfile "$OUT/testssl.json" "https://scan.test:$TLS_PORT/" >"$OUT/testssl.log" 2>&1
log "testssl.sh exit $? (log: $OUT/testssl.log)"
[ -s "$OUT/testssl.json" ] || die "no JSON from testssl.sh"

python3 - "$OUT/testssl.json" <<'PY'
import json, sys
findings = json.load(open(sys.argv[1]))
# Trust findings of the throwaway self-signed certificate, not of the server.
CERT_ONLY = ("cert_", "DNS_CAArecord", "OCSP", "intermediate", "chain_of_trust")
# Headers the origin's application sets (X-Frame-Options, CSP, ...): not TLS.
APP_ONLY = ("security_headers",)
bad, cert = [], []
for f in findings:
    sev = f.get("severity", "")
    if sev not in ("MEDIUM", "HIGH", "CRITICAL"):
        continue
    if f.get("id", "").startswith(APP_ONLY):
        cert.append(f)
        continue
    (cert if f.get("id", "").startswith(CERT_ONLY) else bad).append(f)
print("protocols and ciphers offered:")
for f in findings:
    if f.get("id", "") in ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3") or f.get("id", "").startswith("cipherorder_"):
        print(f"  {f['id']:<24} {f.get('finding', '')}")
for f in findings:
    if f.get("id") in ("secure_renego", "secure_client_renego", "HSTS", "ALPN_HTTP2", "session_ticket", "sessionresumption_ticket", "sessionresumption_ID"):
        print(f"  {f['id']:<24} {f.get('finding', '')}")
if cert:
    print("certificate and application findings (self-signed test certificate; the origin's own headers), not counted:")
    for f in cert:
        print(f"  [{f['severity']}] {f['id']}: {f.get('finding', '')}")
if bad:
    print("FINDINGS (MEDIUM or worse):")
    for f in bad:
        print(f"  [{f['severity']}] {f['id']}: {f.get('finding', '')}")
    sys.exit(1)
print("no weak protocol, cipher, renegotiation or vulnerability finding (MEDIUM or worse)")
PY
