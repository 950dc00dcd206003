#!/usr/bin/env bash
# Tile server speed, two builds side by side (issue 15, goal 5). For each round, each binary in
# turn (alternating, same machine): `overdrive serve --workers 2 --cache-mb 0` (tile cache OFF),
#   1. wrk -t1 -c8 -d8s /tile/2/1/1.png?iter=512        -> requests/s, and the server's CPU
#      seconds (utime + stime of the process, /proc/PID/stat) per request served: robust to load
#   2. the 16 tiles of zoom 2 at iter 2048 requested at once (curl --parallel, 16 connections),
#      time to the last tile, median of 7 bursts            -> ms, and the server's CPU
#      (/proc/PID/stat) over the 8 bursts (warm-up included) / 8 -> ms of CPU per burst
#   3. the same 16 tiles one at a time (3 passes): the server's own Server-Timing cpu (render
#      CPU time) + encode per tile, summed over the 16 (minimum per tile), a load-robust
#      measure of the work per burst               -> ms of CPU
# then medians over rounds and the ratios NEW/OLD. Usage:
#   bench/server_speed.sh OLD_BINARY NEW_BINARY [ROUNDS (default 3)] [WRK_SECONDS (default 8)]
# e.g. bench/server_speed.sh /work/old-build/bin/overdrive build/bin/overdrive
set -euo pipefail
old=$1 new=$2 rounds=${3:-3} secs=${4:-8}
for t in wrk curl python3; do command -v $t >/dev/null || { echo "need $t" >&2; exit 1; }; done
port=$((20000 + RANDOM % 20000))
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; } # server's utime + stime, clock ticks
pid=
stop() { if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=; fi; }
trap stop EXIT

start() { # binary
  "$1" serve --port "$port" --workers 2 --cache-mb 0 >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/tile/0/0/0.png?size=16&iter=1" && return 0
    sleep 0.1
  done
  echo "server $1 did not start" >&2; exit 1
}

urls=()
for y in 0 1 2 3; do for x in 0 1 2 3; do
  urls+=("http://127.0.0.1:$port/tile/2/$x/$y.png?iter=2048" -o /dev/null)
done; done

burst_ms() { # median of 7 bursts of the 16 tiles at once
  local samples=()
  curl -s --no-progress-meter --parallel --parallel-max 16 "${urls[@]}" # warm-up
  for _ in 1 2 3 4 5 6 7; do
    local t0 t1
    t0=$(date +%s%N)
    curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max 16 "${urls[@]}"
    t1=$(date +%s%N)
    samples+=("$(( (t1 - t0) / 1000 ))")
  done
  printf '%s\n' "${samples[@]}" | sort -n | sed -n 4p
}

cpu_ms() { # sum over the 16 tiles of min over 3 passes of Server-Timing cpu + encode
  for pass in 1 2 3; do
    for y in 0 1 2 3; do for x in 0 1 2 3; do
      curl -s -D - -o /dev/null "http://127.0.0.1:$port/tile/2/$x/$y.png?iter=2048" |
        tr -d '\r' | awk -v t="$x/$y" '/^[Ss]erver-[Tt]iming/ {
          c = $0; sub(/.*cpu;dur=/, "", c); sub(/[;,].*/, "", c)
          e = $0; sub(/.*encode;dur=/, "", e); sub(/[;,].*/, "", e); print t, c + e }'
    done; done
  done | sort -k1,1 -k2,2n | awk '!seen[$1]++ { s += $2 } END { printf "%.3f", s }'
}

declare -A rps ms cpu upr bcpu
for r in $(seq "$rounds"); do
  for which in old new; do
    bin=${!which}
    start "$bin"
    wrk -t1 -c8 -d2s "http://127.0.0.1:$port/tile/2/1/1.png?iter=512" >/dev/null # warm-up
    t0=$(ticks)
    out=$(wrk -t1 -c8 -d"${secs}s" "http://127.0.0.1:$port/tile/2/1/1.png?iter=512")
    t1=$(ticks)
    v=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    u=$(python3 -c "print(f'{($t1 - $t0) / $hz / $n * 1e6:.1f}')") # CPU us per request
    t0=$(ticks)
    b=$(burst_ms)
    t1=$(ticks)
    bc=$(python3 -c "print(f'{($t1 - $t0) / $hz / 8 * 1e3:.1f}')") # CPU ms per burst
    c=$(cpu_ms)
    stop
    cpu[$which]+="$c "
    rps[$which]+="$v "
    upr[$which]+="$u "
    bcpu[$which]+="$bc "
    ms[$which]+="$b "
    echo "round $r $which: wrk $v req/s, $u us CPU/req, burst $(python3 -c "print(f'{$b/1000:.2f}')") ms ($bc ms CPU), cpu $c ms" >&2
  done
done

python3 - "${rps[old]}" "${rps[new]}" "${ms[old]}" "${ms[new]}" "${cpu[old]}" "${cpu[new]}" \
  "${upr[old]}" "${upr[new]}" "${bcpu[old]}" "${bcpu[new]}" <<'PY'
import statistics, sys, platform
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
ro, rn, mo, mn, co, cn, uo, un, bo, bn = ([float(x) for x in a.split()] for a in sys.argv[1:])
mo = [x / 1000 for x in mo]; mn = [x / 1000 for x in mn]
m = statistics.median
print(f"CPU: {cpu}")
print(f"{'':34}{'old':>10}{'new':>10}{'new/old':>10}")
print(f"{'wrk 2/1/1 iter=512 (req/s)':34}{m(ro):10.0f}{m(rn):10.0f}{m(rn)/m(ro):10.2f}x")
print(f"{'  server CPU per request (us)':34}{m(uo):10.0f}{m(un):10.0f}{m(uo)/m(un):10.2f}x less")
print(f"{'16 tiles z2 iter=2048 (ms, last)':34}{m(mo):10.2f}{m(mn):10.2f}{m(mo)/m(mn):10.2f}x faster")
print(f"{'  server CPU per burst (ms)':34}{m(bo):10.1f}{m(bn):10.1f}{m(bo)/m(bn):10.2f}x less")
print(f"{'  their render+encode CPU (ms)':34}{m(co):10.2f}{m(cn):10.2f}{m(co)/m(cn):10.2f}x less")
load = open("/proc/loadavg").read().split()[0]
print(f"load average at the end: {load} (other processes share the cores: only ratios mean much)")
PY
