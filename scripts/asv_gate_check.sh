#!/usr/bin/env bash
# Proves the asv regression gate (.ci/benchmarks) on this machine, in a scratch clone of
# this checkout's HEAD (committed state; nothing here is touched):
#   1-3. HEAD = its parent plus a README line (identical code), three runs: each must exit 0;
#   4.   HEAD = the same parent plus a commit that makes torch's kernel product and softmin
#        2x slower (a busy wait after each call): must exit 1, numpy not flagged.
# Prints each run's verdict, time and asv's ratio per benchmark (the noise), then a summary.
#
#   scripts/asv_gate_check.sh            # ~4 runs of .ci/benchmarks (minutes each)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/kpb-gate.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
git clone -q "$ROOT" "$WORK/repo"
cd "$WORK/repo"
git config user.email gate-check@kpbench.invalid && git config user.name "asv gate check"
parent=$(git rev-parse HEAD)
failures=0

run_gate() {   # name, expected exit
    local name=$1 expected=$2 start=$SECONDS rc=0
    KPBENCH_BENCH_BASE=$parent .ci/benchmarks >"$WORK/$name.log" 2>&1 || rc=$?
    echo "== $name: exit $rc (expected $expected) in $((SECONDS - start)) s"
    # asv compare's rows (change mark, before, after, ratio, benchmark)
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/$name.log" | grep -F "bench_ci." | grep -F "|" | sort -u || true
    [ "$rc" = "$expected" ] || { failures=$((failures + 1)); tail -30 "$WORK/$name.log"; }
}

echo "kpbench: identical code (README only)" >>README.md
git commit -qam "gate check: README only (identical code)"
for i in 1 2 3; do run_gate "identical_$i" 0; done

git checkout -q -b slowed "$parent"
cat >>kpbench/backends/torch_dense.py <<'PY'


# -- asv gate check: a deliberate 2x slowdown of torch's primitives (busy wait) --
import time as _gate_time  # noqa: E402


def _gate_slowed(method):
    def slowed(self, *args, **kwargs):
        start = _gate_time.perf_counter()
        out = method(self, *args, **kwargs)
        until = _gate_time.perf_counter() + (_gate_time.perf_counter() - start)
        while _gate_time.perf_counter() < until:
            pass
        return out
    return slowed


TorchBackend._kernel_product = _gate_slowed(TorchBackend._kernel_product)
TorchBackend._softmin = _gate_slowed(TorchBackend._softmin)
PY
git commit -qam "gate check: torch kernel product and softmin 2x slower"
run_gate slowed 1
if sed 's/\x1b\[[0-9;]*m//g' "$WORK/slowed.log" | grep -E "^\|? *\+" | grep -q "'numpy'"; then
    echo "numpy was flagged though only torch was slowed"; failures=$((failures + 1))
fi
echo "== gate check: $failures unexpected verdict(s)"
exit $((failures > 0))
