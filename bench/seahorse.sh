#!/usr/bin/env bash
# Issue 15's headline: the seahorse valley (centre -0.743643887037151+0.131825904205330i, width
# 1e-5), 1024x1024, 20000 iterations, as a whole process (`overdrive render --workers 1`, PNG
# written), against the textbook scalar loop (kernel_reference, the same escape counts up to the
# stated periodicity bound) in the same run, on every ISA this CPU offers (OVERDRIVE_ISA caps the
# choice). The reference is timed as the kernel alone (bench_render Kernel/seahorse1024/reference),
# which only flatters it: the ratios printed are lower bounds of the whole-process ones.
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
  python3 -c 'import json,sys; b=json.load(sys.stdin)["benchmarks"][0]; print(b["real_time"])')
printf 'textbook scalar loop (kernel_reference, kernel only): %.0f ms\n' "$ref_ms"

isas=(avx2)
grep -qw avx512f /proc/cpuinfo && isas+=(avx512)
for isa in "${isas[@]}"; do
  best=
  for _ in $(seq "$runs"); do
    t0=$(date +%s%N)
    msg=$(OVERDRIVE_ISA=$isa "$bin/overdrive" render --center=-0.743643887037151,0.131825904205330 \
      --width 1e-5 --size 1024 --iter 20000 --workers 1 --out "$out/seahorse.png")
    t1=$(date +%s%N)
    ms=$(((t1 - t0) / 1000000))
    if [[ -z $best || $ms -lt $best ]]; then best=$ms last=$msg; fi
  done
  python3 -c "print(f'OVERDRIVE_ISA=$isa overdrive render --workers 1: $best ms (best of $runs), ' \
    f'{$ref_ms / $best:.1f}x the textbook loop')"
  echo "  (${last#wrote *(})"
done
