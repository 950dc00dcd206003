#!/usr/bin/env bash
# Full view f64 without skipping as a fraction of the FMA ceiling, per ISA, in the same run:
# ratio = Kernel/full1024/<isa>/f64/noskip/rows it/s / Ceiling/<isa>_fma ceiling_it/s (both
# measured by one bench_render process). Usage: bench/kernel_ceiling.sh [runs] BENCH_RENDER...
# Several binaries (e.g. before and after a change) run alternately; prints each run and the
# median ratio per binary and ISA.
set -euo pipefail
runs=${1:-3}
shift || true
[ $# -gt 0 ] || set -- build/bin/bench_render
filter='^(Kernel/full1024/(avx2|avx512)/f64/noskip/rows|Ceiling/(avx2|avx512)_fma)$'
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for ((r = 1; r <= runs; r++)); do
  i=0
  for b in "$@"; do
    "$b" --benchmark_filter="$filter" --benchmark_format=json >"$dir/$i.$r.json" 2>/dev/null
    i=$((i + 1))
  done
done
python3 - "$dir" "$runs" "$@" <<'PY'
import json, statistics, sys
d, runs, bins = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
for i, b in enumerate(bins):
    for isa in ("avx2", "avx512"):
        ratios = []
        for r in range(1, runs + 1):
            res = {x["name"]: x for x in json.load(open(f"{d}/{i}.{r}.json"))["benchmarks"]}
            k = res.get(f"Kernel/full1024/{isa}/f64/noskip/rows")
            c = res.get(f"Ceiling/{isa}_fma")
            if not k or not c:
                continue
            ratios.append(k["it/s"] / c["ceiling_it/s"])
            print(f"{b} run {r} {isa}: kernel {k['it/s'] / 1e9:.3f} G it/s, ceiling "
                  f"{c['ceiling_it/s'] / 1e9:.3f} G it/s, {100 * ratios[-1]:.1f}%")
        if ratios:
            print(f"median {b} {isa}: {100 * statistics.median(ratios):.1f}% of the ceiling")
PY
