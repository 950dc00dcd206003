#!/usr/bin/env bash
# Posters: `overdrive render` of two builds side by side (peak RSS from /usr/bin/time -v, wall
# time), alternating runs, medians and the old/new ratio; then checks that both files decode to
# the same pixels (Python's zlib; both are 8-bit RGB PNGs with filter "none" on every row).
#   bench/poster_compare.sh OLD_BIN NEW_BIN [RUNS] [-- RENDER ARGS]
# Default render args: --size 8192 --workers 2 (the issue's goal: RSS <= 64 MB, >= 1.5x faster).
# The old binary: git archive 169362d | tar -x -C /tmp/poster-old, then a Release build there.
set -euo pipefail
old=$1 new=$2 runs=${3:-3}
shift $(($# < 3 ? $# : 3))
[[ ${1:-} == -- ]] && shift
args=("$@")
((${#args[@]})) || args=(--size 8192 --workers 2)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

measure() { # BIN OUT -> "wall_s rss_mb cpu_s"
  /usr/bin/time -f '%e %M %U %S' -o "$dir/time" "$1" render "${args[@]}" --out "$2" >/dev/null 2>&1
  awk '{printf "%.2f %.1f %.2f\n", $1, $2 / 1024, $3 + $4}' "$dir/time"
}
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

: >"$dir/old" && : >"$dir/new"
for ((i = 0; i < runs; ++i)); do
  measure "$old" "$dir/old.png" >>"$dir/old"
  measure "$new" "$dir/new.png" >>"$dir/new"
done
ow=$(cut -d' ' -f1 "$dir/old" | median) nw=$(cut -d' ' -f1 "$dir/new" | median)
orss=$(cut -d' ' -f2 "$dir/old" | median) nrss=$(cut -d' ' -f2 "$dir/new" | median)
ocpu=$(cut -d' ' -f3 "$dir/old" | median) ncpu=$(cut -d' ' -f3 "$dir/new" | median)
echo "render ${args[*]}, $runs runs each, medians, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| build | peak RSS (MB) | wall (s) | CPU user+sys (s) | PNG bytes |"
echo "|---|---|---|---|---|"
echo "| old | $orss | $ow | $ocpu | $(stat -c %s "$dir/old.png") |"
echo "| new | $nrss | $nw | $ncpu | $(stat -c %s "$dir/new.png") |"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }
echo "old/new: RSS $(ratio "$orss" "$nrss"), wall $(ratio "$ow" "$nw"), CPU $(ratio "$ocpu" "$ncpu")"

python3 - "$dir/old.png" "$dir/new.png" <<'EOF'
import struct, sys, zlib
def pixels(path):
    d = open(path, 'rb').read()
    i, z = 8, []
    while i < len(d):
        n, t = struct.unpack('>I4s', d[i:i + 8])
        body = d[i + 8:i + 8 + n]
        assert zlib.crc32(t + body) == struct.unpack('>I', d[i + 8 + n:i + 12 + n])[0], t
        if t == b'IHDR': w, h, depth, colour = struct.unpack('>IIBB', body[:10])
        if t == b'IDAT': z.append(body)
        i += 12 + n
    assert (depth, colour) == (8, 2)
    raw, row = zlib.decompress(b''.join(z)), 1 + 3 * w  # decompress checks the Adler-32
    assert len(raw) == h * row and all(raw[r * row] == 0 for r in range(h)), 'filter none only'
    return w, h, b''.join(raw[r * row + 1:(r + 1) * row] for r in range(h))
a, b = pixels(sys.argv[1]), pixels(sys.argv[2])
print('pixels identical' if a == b else 'PIXELS DIFFER')
sys.exit(a != b)
EOF
