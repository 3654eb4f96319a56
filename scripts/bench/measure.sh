# shellcheck shell=bash
# CPU accounting for scripts/bench.sh, all in clock ticks (getconf CLK_TCK) read from /proc.

CLK_TCK=$(getconf CLK_TCK)
export CLK_TCK

# tree_ticks PID — utime+stime of PID and every live descendant (all threads: /proc/PID/stat
# reports the whole thread group). Covers nginx's master + workers and varnishd's manager + child.
tree_ticks() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v root="$1" '
    {
      close_paren = 0
      for (i = length($0); i > 0; i--) if (substr($0, i, 1) == ")") { close_paren = i; break }
      pid = $1 + 0
      n = split(substr($0, close_paren + 2), f, " ")
      # after "comm) ": f[1]=state f[2]=ppid ... f[12]=utime f[13]=stime
      parent[pid] = f[2] + 0
      ticks[pid] = f[12] + f[13]
    }
    END {
      total = 0
      for (p in ticks) {
        q = p + 0
        for (depth = 0; depth < 64 && q > 1; depth++) {
          if (q == root) { total += ticks[p]; break }
          q = parent[q]
        }
      }
      print total
    }'
}

# host_busy_ticks — busy ticks of the whole machine (user+nice+system+irq+softirq+steal).
host_busy_ticks() {
  awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# child_ticks_of_stat_line "LINE" — cutime+cstime from a /proc/PID/stat line.
child_ticks_of_stat_line() {
  printf '%s\n' "$1" | awk '{
    for (i = length($0); i > 0; i--) if (substr($0, i, 1) == ")") { c = i; break }
    split(substr($0, c + 2), f, " ")
    print f[14] + f[15]
  }'
}

now_ns() { date +%s%N; }

# median — of the numbers on stdin (one per line); empty input prints nothing.
median() {
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# to_ms VALUE — wrk latency ("850.00us", "1.23ms", "1.02s") in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "nan"
  }'
}
