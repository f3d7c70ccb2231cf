#!/usr/bin/env bash
# Time and peak RSS of the results layer on a synthetic store of ROWS rows (issue 28):
#   scripts/store_scale.sh ROWS [WORKDIR] [ROWS_PER_PART]   (from the repository root; nice'd)
# Makes WORKDIR/s<ROWS> with scripts/make_store.py unless it exists, then measures, each in a
# fresh process under /usr/bin/time -v: kpbench report, kpbench compare (the store against
# itself, every run: all keys matched; then one run against another), a sweep that finds its
# one point stored (resume-skip),
# and, when the command exists, kpbench store compact followed by the same three again.
set -euo pipefail
rows=${1:?usage: store_scale.sh ROWS [WORKDIR]}
work=${2:-/tmp/kpbench-scale}
per_part=${3:-8}
store="$work/s$rows"
export PYTHONPATH=${PYTHONPATH:-$PWD}
mkdir -p "$work"
[ -d "$store" ] || nice python scripts/make_store.py --rows "$rows" --out "$store" --rows-per-part "$per_part"

measure() {   # NAME CMD...: one line "NAME rows=... wall=... cpu_s=... max_rss_mb=... rc=..."
  # cpu_s (user + system) is the figure to compare on a shared machine: wall time there
  # includes the waits for the other processes' turns
  local name=$1; shift
  local log="$work/time-$name.log" rc=0
  nice /usr/bin/time -v "$@" >"$work/out-$name.log" 2>"$log" || rc=$?
  local wall rss cpu
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
  cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.1f", s}' "$log")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$log")
  echo "$name rows=$rows wall=$wall cpu_s=$cpu max_rss_mb=$rss rc=$rc"
}

three() {     # SUFFIX
  measure "report$1" kpbench report "$store" --out "$work/report-$rows$1"
  measure "compare$1" kpbench compare "$store" "$store" --run-id all all --allow-env-mismatch --no-page
  # one run against the next (runs 0 and 1 of make_store.py share their seed, so most keys)
  local first second
  first=$(ls "$store/sweeps" | sed -n 's/^run-\(.*0000000000000000\)$/\1/p' | head -1)
  second=$(ls "$store/sweeps" | sed -n 's/^run-\(.*0000000000000001\)$/\1/p' | head -1)
  measure "compare-runs$1" kpbench compare "$store" "$store" --run-id "$first" "$second" \
    --allow-env-mismatch --no-page
  measure "resume$1" kpbench sweep speed --ops kernel_product --backends numpy --N 100 --D 3 \
    --blur 0.05 --dtype float64 --seed 0 --executor inline --out "$store"
}

echo "parts before: $(find "$store/sweeps" -name 'part-*.parquet' | wc -l)"
three ""
if kpbench store compact --help >/dev/null 2>&1; then
  measure compact kpbench store compact "$store"
  echo "parts after: $(find "$store/sweeps" -name 'part-*.parquet' | wc -l)"
  three "-compacted"
fi
ls -l "$work/report-$rows/report.html" | awk '{print "report.html bytes=" $5}'
