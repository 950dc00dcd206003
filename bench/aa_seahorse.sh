#!/usr/bin/env bash
# Adaptive AA cost on issue 15's seahorse view (1024x1024, 20000 iterations, whole process,
# --workers 1, PNG written): aa=1 and aa=N alternating, medians and the ratio.
# Usage: bench/aa_seahorse.sh [BINARY (default build/bin/overdrive)] [N (default 3)] [REPS (5)]
set -euo pipefail
bin=${1:-build/bin/overdrive} n=${2:-3} reps=${3:-5}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
run() { # aa -> seconds
  local t0 t1
  t0=$(date +%s%N)
  "$bin" render --center -0.743643887037151,0.131825904205330 --width 1e-5 --size 1024 \
    --iter 20000 --workers 1 --aa "$1" --out "$out/aa$1.png" 2>/dev/null
  t1=$(date +%s%N)
  echo "$(( (t1 - t0) / 1000000 ))"
}
plain=() aa=()
for _ in $(seq "$reps"); do plain+=("$(run 1)"); aa+=("$(run "$n")"); done
python3 - "${plain[*]}" "${aa[*]}" "$n" <<'PY'
import statistics, sys
p = statistics.median(float(x) for x in sys.argv[1].split())
a = statistics.median(float(x) for x in sys.argv[2].split())
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"CPU: {cpu}; seahorse 1024^2, 20000 it, 1 worker: aa=1 {p:.0f} ms, aa={sys.argv[3]} {a:.0f} ms, ratio {a / p:.2f}x")
PY
