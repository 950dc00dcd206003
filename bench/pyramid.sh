#!/usr/bin/env bash
# The "Pyramids" table of bench/README.md: `overdrive pyramid` on one process (1 and 2 workers)
# and under `mpirun -n 2` (1 worker each, dynamic and static schedules), then static vs dynamic on
# a region of uneven tiles; each row with wall time, tiles/s, speed-up over the first row of its
# block and a digest over every tile file (the -n 1 and -n 2 pyramids must be byte-identical).
# Usage: bench/pyramid.sh [BUILD_DIR]   (default build/; ZOOM=0-7 and UNEVEN=... override)
set -euo pipefail
bin=$(realpath "${1:-build}/bin/overdrive")
zoom=${ZOOM:-0-7}
# Uneven: the seahorse valley and its neighbourhood at 2048 iterations, where a boundary tile
# costs 10-100x a tile outside the set (interior tiles are cheap: the cardioid test skips them).
uneven=${UNEVEN:---zoom 6-9 --bbox -0.9,-0.1,-0.6,0.2 --iter 2048}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [[ $EUID == 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
mpi=(mpirun -n 2 --oversubscribe --bind-to none)

field() { sed -n "s/^  \"$1\": \(.*\)$/\1/p" "$out/p/pyramid.json" | sed 's/,$//' | tr -d '"[]'; }
digest() { (cd "$out/p" && find . -name '*.png' | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16; }
base=""
row() { # row LABEL command...
  local label=$1
  shift
  rm -rf "$out/p"
  "$@" --out "$out/p" >/dev/null
  local wall rate
  wall=$(field wall_seconds)
  rate=$(field tiles_per_second)
  [[ -z "$base" ]] && base=$rate
  printf '| %-34s | %6s | %8s | %7s | %8s | %s | %s |\n' "$label" "$(field tiles)" "$wall" "$rate" \
    "$(awk -v a="$rate" -v b="$base" 'BEGIN { printf "%.2fx", a / b }')" \
    "$(field rank_share_percent)" "$(digest)"
}
header() {
  echo
  echo "$1"
  echo
  echo '| run                                | tiles  | wall s   | tiles/s | speed-up | rank share % | tile digest |'
  echo '|------------------------------------|--------|----------|---------|----------|--------------|-------------|'
  base=""
}

header "Zoom $zoom, whole plane, 256 px, iter 512 (\`overdrive pyramid --zoom $zoom\`)"
row "1 process, 1 worker" "$bin" pyramid --zoom "$zoom" --workers 1
row "1 process, 2 workers" "$bin" pyramid --zoom "$zoom" --workers 2
row "mpirun -n 2, 1 worker each, dynamic" "${mpi[@]}" "$bin" pyramid --zoom "$zoom" --workers 1 --schedule dynamic
row "mpirun -n 2, 1 worker each, static" "${mpi[@]}" "$bin" pyramid --zoom "$zoom" --workers 1 --schedule static

# shellcheck disable=SC2086 # $uneven is a list of flags
{
  header "Uneven region: \`$uneven\`"
  row "1 process, 1 worker" "$bin" pyramid $uneven --workers 1
  row "mpirun -n 2, 1 worker each, dynamic" "${mpi[@]}" "$bin" pyramid $uneven --workers 1 --schedule dynamic
  row "mpirun -n 2, 1 worker each, static" "${mpi[@]}" "$bin" pyramid $uneven --workers 1 --schedule static
}
