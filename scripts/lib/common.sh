# shellcheck shell=bash
# Shared helpers for scripts/*.sh: package installs, process bookkeeping, ports.
# Source it; it defines functions and the REPO/SCRATCH variables, and runs nothing else.
# Everything here binds and targets 127.0.0.1 only, and every wait is bounded.

REPO="${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
SCRATCH="${SCRATCH:-$REPO/.scratch}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 2; }

# --- packages ---------------------------------------------------------------

_APT_UPDATED=0
# ensure_cmds CMD:PKG ... — installs PKG with apt-get when CMD is not on PATH.
# apt-get update runs at most once per script, and only when something is missing.
ensure_cmds() {
  local want=() pair cmd pkg
  for pair in "$@"; do
    cmd="${pair%%:*}"; pkg="${pair#*:}"
    command -v "$cmd" >/dev/null 2>&1 || want+=("$pkg")
  done
  [ "${#want[@]}" -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing ${want[*]}; run as root or install them"
  log "installing ${want[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$_APT_UPDATED" -eq 0 ]; then
    timeout 300 apt-get update -qq >&2 || die "apt-get update failed"
    _APT_UPDATED=1
  fi
  # Keep package post-install scripts from starting system services (nginx on
  # 0.0.0.0:80, varnish on :6081): a policy-rc.d that says "no" while we install.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  timeout 600 apt-get install -y -qq --no-install-recommends "${want[@]}" >&2
  local rc=$?
  [ "$made_policy" -eq 1 ] && rm -f "$policy"
  [ "$rc" -eq 0 ] || die "apt-get install ${want[*]} failed"
}

# --- processes --------------------------------------------------------------

PIDS=()
# spawn NAME LOGFILE CMD... — runs CMD in the background (own process group), records its pid
# in SPAWNED_PID and in PIDS for cleanup.
spawn() {
  local name="$1" logf="$2"; shift 2
  setsid "$@" >"$logf" 2>&1 </dev/null &
  SPAWNED_PID=$!
  PIDS+=("$SPAWNED_PID")
  log "started $name (pid $SPAWNED_PID): $*"
}

# stop_pid PID — TERM the process group we created, wait up to 5 s, then KILL.
stop_pid() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup_all() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  PIDS=()
}

# --- ports ------------------------------------------------------------------

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# free_port — prints a port on 127.0.0.1 that nothing listens on, chosen below the kernel's
# ephemeral range (outgoing connections take ports from that range, and a listener on a port some
# connection already uses fails with EADDRINUSE): random in 20000..(range start - 1).
free_port() {
  local p lo=32768 span
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
  span=$(( lo - 20000 )); [ "$span" -gt 1000 ] || span=10000
  for _ in $(seq 200); do
    p=$(( 20000 + RANDOM % span ))
    case " ${_USED_PORTS:-} " in *" $p "*) continue ;; esac
    if ! port_open "$p"; then _USED_PORTS="${_USED_PORTS:-} $p"; echo "$p"; return 0; fi
  done
  die "no free port found"
}

# wait_port PORT PID NAME [SECONDS] — poll until 127.0.0.1:PORT accepts, the process dies, or time runs out.
wait_port() {
  local port="$1" pid="$2" name="$3" secs="${4:-30}" deadline
  deadline=$(( $(date +%s) + secs ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    if port_open "$port"; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then log "$name (pid $pid) exited before opening port $port"; return 1; fi
    sleep 0.2
  done
  log "$name did not open 127.0.0.1:$port within ${secs}s"
  return 1
}
