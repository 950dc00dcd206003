#!/usr/bin/env bash
# Issue 15's headline: the seahorse valley (centre -0.743643887037151+0.131825904205330i, width
# 1e-5), 1024x1024, 20000 iterations, as a whole process (`overdrive render --workers 1`, PNG
# written), against the textbook scalar loop (kernel_reference, the same escape counts up to the
# stated periodicity bound) in the same run, on every ISA this CPU offers (OVERDRIVE_ISA caps the
# choice). The reference is timed as the kernel alone (bench_render Kernel/seahorse1024/reference),
# which only flatters it: the ratios printed are lower bounds of the whole-process ones. Times are
# CPU seconds (user + sys of the process; the benchmark's cpu_time), which a loaded machine
# distorts far less than wall time.
# Usage: bench/seahorse.sh [BUILD_DIR] [RUNS]   (default build, best of 3 renders per ISA)
set -euo pipefail
build=${1:-build}
runs=${2:-3}
bin=$build/bin
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

field() { grep -m1 "^$1" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'; }
echo "CPU: $(field 'model name') (family $(field 'cpu family') model $(field 'model'))"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"

ref_ms=$("$bin/bench_render" --benchmark_filter='^Kernel/seahorse1024/reference$' \
  --benchmark_format=json 2>/dev/null |
  python3 -c 'import json,sys; b=json.load(sys.stdin)["benchmarks"][0]; print(b["cpu_time"])')
printf 'textbook scalar loop (kernel_reference, kernel only): %.0f ms CPU\n' "$ref_ms"

isas=(avx2)
grep -qw avx512f /proc/cpuinfo && isas+=(avx512)
TIMEFORMAT='%U %S'
for isa in "${isas[@]}"; do
  best= last=
  for _ in $(seq "$runs"); do
    { time OVERDRIVE_ISA=$isa "$bin/overdrive" render \
      --center=-0.743643887037151,0.131825904205330 --width 1e-5 --size 1024 --iter 20000 \
      --workers 1 --out "$out/seahorse.png" >"$out/msg" 2>&1; } 2>"$out/time"
    ms=$(awk '{printf "%d", ($1 + $2) * 1000}' "$out/time")
    if [[ -z $best || $ms -lt $best ]]; then
      best=$ms
      last=$(cat "$out/msg")
    fi
  done
  python3 -c "print(f'OVERDRIVE_ISA=$isa overdrive render --workers 1: $best ms CPU (best of $runs), ' \
    f'{$ref_ms / $best:.1f}x the textbook loop')"
  echo "  $last"
done
