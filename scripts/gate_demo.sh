#!/usr/bin/env bash
# The regression gate on real measurements (issue 14): three identical variants and one
# whose torch is 1.3x slower (tests/plugins/slowdown.py), measured as ONE interleaved
# sweep (their samples alternate round by round), then compared pairwise.
# Expected: the identical pairs exit 0; every torch point of "slowed" is flagged (exit 1).
#   bash scripts/gate_demo.sh [OUT]        (about 1 min on 2 cores)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)/gate}
slow="slowed=:KPBENCH_PLUGINS=$PWD/tests/plugins/slowdown.py,KPBENCH_SLOWDOWN=torch=1.3"
kpbench sweep speed --ops kernel_product --backends numpy,torch --dtype float32 --blur 0.1 \
    --N 150,300 --repeats 30 --warmup 2 --out "$out" --no-progress \
    --interleave same0 --interleave same1 --interleave same2 --interleave "$slow" || exit 2
status=0
for pair in "same0 same1 0" "same1 same2 0" "same0 same2 0" "same0 slowed 1"; do
    set -- $pair
    echo "== kpbench compare $1 $2 (expected exit $3)"
    kpbench compare "$out/$1" "$out/$2" --no-page | grep -v "^inputs\|^values\|^environment"
    code=${PIPESTATUS[0]}
    echo "exit $code"
    [ "$code" = "$3" ] || status=1
done
exit $status
