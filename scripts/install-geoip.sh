#!/usr/bin/env bash
# Install the free GeoIP country database the dns role uses by default: the CC0-licensed
# `@ip-location-db/geo-whois-asn-country-mmdb` npm package (MaxMind DB format, IPv4 and IPv6,
# a `country_code` per network), copied to ~/.outpost/geoip/country.mmdb (or $OUTPOST_GEOIP).
# Skips the download when the file is already there. Exit 3: npm or the registry is unavailable.
set -euo pipefail
# shellcheck source=lib/common.sh
source "$(dirname "$0")/lib/common.sh"

dest="${OUTPOST_GEOIP:-$HOME/.outpost/geoip/country.mmdb}"
if [ -s "$dest" ]; then
  log "GeoIP database present: $dest"
  echo "$dest"
  exit 0
fi
command -v npm >/dev/null 2>&1 || { log "npm not found: cannot install the GeoIP database"; exit 3; }
work="$SCRATCH/geoip-npm"
mkdir -p "$work" "$(dirname "$dest")"
log "installing @ip-location-db/geo-whois-asn-country-mmdb (CC0) with npm into $work"
if ! (cd "$work" && timeout 300 npm install --no-audit --no-fund --silent \
      @ip-location-db/geo-whois-asn-country-mmdb >&2); then
  log "npm install failed"
  exit 3
fi
src="$work/node_modules/@ip-location-db/geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb"
[ -s "$src" ] || die "the package has no geo-whois-asn-country.mmdb"
cp "$src" "$dest.tmp"
mv "$dest.tmp" "$dest"
log "GeoIP database installed: $dest ($(wc -c <"$dest") bytes, license CC0-1.0)"
echo "$dest"
