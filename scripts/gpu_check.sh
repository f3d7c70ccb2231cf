#!/usr/bin/env bash
# The first GPU hour in one command: everything kpbench should answer on one NVIDIA GPU
# (H100 / H200), cheapest evidence first, each step's output written as it finishes, a
# one-screen summary at the end (also when the run is cut short).
#
#   scripts/gpu_check.sh [--out DIR] [--wheels DIR] [--budget S]   # on the GPU machine
#   scripts/gpu_check.sh --dry-run [--quick] [--out DIR] [--wheels DIR]   # on a CPU machine
#   scripts/gpu_check.sh --fetch-wheels DIR                        # where an index is reachable
#
# Steps (OUT, default gpu_check/: one log per step, steps.tsv, summary.txt):
#   env        python, torch (its version and CUDA build), the GPU, nvcc
#   limits     kpbench calibrate --limits: the CPU's measured rates, the GPU's device table
#   cuda-tests tests/test_cuda*.py on the device (the NVRTC/CuPy launch path; -rs lists skips)
#   sass       scripts/cuda_sass_report.py --arch 90: the kernels' predicted H100 times
#   speed      kernel_product (gaussian) and softmin at N = M = 1e4, 1e5, 1e6 (D=3, float32):
#              cuda, keops, torch (dense where it fits: the pre-flight refuses the rest)
#   sinkhorn   Sinkhorn (10 iterations) at N = M = 1e4, 1e5: cuda, keops, torch, the peers present
#   memory     peak memory, kernel_product and sinkhorn at 1e4, 1e5
#   accuracy   kernel_product at 1e4 against the float64 reference (on the CPU)
#   report     kpbench report OUT/results
# Every sweep runs inline (no Ray), with a per-point timeout; a step the remaining budget
# cannot hold is skipped and says so. --budget (default 480 s) bounds the whole run; its
# last 60 s are kept for the report.
#
# --wheels DIR: what the GPU machine lacks (pykeops, keopscore, geomloss, POT, plotly,
# flash-sinkhorn), installed with pip --no-index --no-deps --target OUT/site; the torch
# already there is used as it is. --fetch-wheels DIR prepares that folder (and prints its
# size). --dry-run: on a CPU machine, the same steps with the CUDA kernels executed on the
# host (KPBENCH_CUDA_HOST=1: correctness only), tiny N, GPU points refused with their
# reason; --quick leaves out the CUDA tests, memory and accuracy (tests/test_gpu_check.py).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
OUT=gpu_check
WHEELS=""
DRY=0
QUICK=0
BUDGET=480
FETCH=""
usage() { sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu_check: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT=$2; shift 2 ;;
        --wheels) [ $# -ge 2 ] || die "--wheels needs a folder"; WHEELS=$2; shift 2 ;;
        --fetch-wheels) [ $# -ge 2 ] || die "--fetch-wheels needs a folder"; FETCH=$2; shift 2 ;;
        --budget) [[ ${2-} =~ ^[0-9]+$ ]] && [ "$2" -ge 60 ] || die "--budget takes whole seconds >= 60, got '${2-}'"
                  BUDGET=$2; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        --quick) QUICK=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (allowed: --out DIR, --wheels DIR, --fetch-wheels DIR, --budget S, --dry-run, --quick)" ;;
    esac
done

# -- the wheel folder ------------------------------------------------------------------
if [ -n "$FETCH" ]; then
    mkdir -p "$FETCH" || die "cannot create $FETCH"
    # source-only on the index: built here into pure-Python wheels
    "$PYTHON" -m pip wheel -q --no-deps -w "$FETCH" pykeops==2.3 keopscore==2.3 || exit 1
    # the versions installed here (those the CPU suite ran with), else the index's newest
    specs=$("$PYTHON" -c 'import importlib.metadata as m, sys
for name in sys.argv[1:]:
    try: print(f"{name}=={m.version(name)}")
    except m.PackageNotFoundError: print(name)' geomloss pot plotly flash-sinkhorn pybind11)
    # shellcheck disable=SC2086  # one requirement per word
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_28_x86_64 -d "$FETCH" $specs || exit 1
    ls -l "$FETCH"
    code=$(git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 du -cb) | tail -1 | cut -f1)
    wheels=$(du -sb "$FETCH" | cut -f1)
    echo "wheels: $((wheels / 1024)) KiB; tracked code: $((code / 1024)) KiB;" \
         "together $(((wheels + code) / 1048576)) MiB (the GPU machine takes 64 MiB in all)"
    exit 0
fi

mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
: > "$OUT/steps.tsv"
started=$SECONDS
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export KPBENCH_BUILD_DIR=${KPBENCH_BUILD_DIR:-$OUT/keops-build}
export KPBENCH_LIMITS=${KPBENCH_LIMITS:-$OUT/limits.json}   # this run's own measurement
if [ -n "$WHEELS" ]; then
    ls "$WHEELS"/*.whl > /dev/null 2>&1 || die "--wheels $WHEELS holds no .whl"
    "$PYTHON" -m pip install -q --no-index --no-deps --target "$OUT/site" "$WHEELS"/*.whl \
        > "$OUT/wheels.log" 2>&1 || die "installing the wheels failed (see $OUT/wheels.log)"
    export PYTHONPATH="$ROOT:$OUT/site"
fi
if [ "$DRY" = 1 ]; then
    export KPBENCH_CUDA_HOST=1 KPBENCH_CUDA_HOST_BUILD=${KPBENCH_CUDA_HOST_BUILD:-$OUT/cuda-host}
    N_KP=200,500; N_SH=200; N_CPU=200,500
else
    N_KP=1e4,1e5,1e6; N_SH=1e4,1e5; N_CPU=""
fi
KPB=("$PYTHON" -m kpbench)
REPORT_S=60   # kept back from the budget for the report, which runs last whatever happened
SWEEP=(--executor inline --no-progress --out "$OUT/results" --D 3 --dtype float32 --repeats 5)

summary() {
    "$PYTHON" "$ROOT/scripts/gpu_check_summary.py" "$OUT" "$((SECONDS - started))" "$DRY" \
        | tee "$OUT/summary.txt"
}
trap summary EXIT

# step NAME MAX_SECONDS COMMAND...: run it under what is left of the budget, logged
step() {
    local name=$1 max=$2; shift 2
    local left=$((BUDGET - ${RESERVE:-$REPORT_S} - (SECONDS - started))) t0=$SECONDS rc
    if [ "$left" -lt 20 ]; then
        printf '%s\tskipped\t0\tbudget spent (%ss of %ss, %ss kept for the report)\n' "$name" "$((SECONDS - started))" "$BUDGET" "${RESERVE:-$REPORT_S}" >> "$OUT/steps.tsv"
        return
    fi
    [ "$max" -gt "$left" ] && max=$left
    echo "[gpu_check +$((SECONDS - started))s] $name (at most ${max}s)"
    timeout -k 10 "$max" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    local status=ok
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && status="timeout"
    [ "$status" = ok ] && [ "$rc" != 0 ] && status="failed(rc=$rc)"
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" "$(tail -1 "$OUT/$name.log" | tr '\t' ' ' | cut -c1-150)" >> "$OUT/steps.tsv"
}

environment() {
    "$PYTHON" - <<'EOF'
import platform, shutil, subprocess
import torch
import kpbench
print("python", platform.python_version(), "kpbench from", kpbench.__file__)
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.multi_processor_count} SMs", f"{p.total_memory / 2**30:.0f} GiB")
from kpbench.backends import availability
for name, (ok, why) in availability().items():
    print(f"backend {name}: {'available' if ok else 'unavailable: ' + why}")
nvcc = shutil.which("nvcc")
print("nvcc", subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.splitlines()[-1] if nvcc else None)
EOF
}

present() {   # the available backends among "$@", comma-separated
    "$PYTHON" - "$@" <<'EOF'
import sys
from kpbench.backends import availability
found = availability()
print(",".join(b for b in sys.argv[1:] if found.get(b, (False,))[0]))
EOF
}

export PYTHON
export -f environment
step env 60 bash -c environment
step limits 60 "${KPB[@]}" calibrate --limits
if [ "$DRY" = 1 ]; then   # the host execution of test_cuda*.py takes minutes here: CI runs it
    CUDA_TESTS=("$ROOT/tests/test_cuda_sass.py" "$ROOT/tests/test_cuda.py::test_gpu_runs_on_the_current_torch_stream")
else
    CUDA_TESTS=("$ROOT/tests/test_cuda.py" "$ROOT/tests/test_cuda_host.py" "$ROOT/tests/test_cuda_sass.py")
fi
if [ "$QUICK" = 0 ]; then
    step cuda-tests 180 "$PYTHON" -m pytest -q -p no:cacheprovider -rs "${CUDA_TESTS[@]}"
fi
step sass 90 "$PYTHON" "$ROOT/scripts/cuda_sass_report.py" --arch 90 --json "$OUT/sass.json"
step speed 200 "${KPB[@]}" sweep speed "${SWEEP[@]}" --device cuda --backends cuda,keops,torch \
    --ops kernel_product,softmin --kernels gaussian --p 2 --blur 0.1 --N "$N_KP" --timeout 60
PEERS=$(present geomloss-tensorized geomloss-online pot 2> /dev/null | tail -1)   # KeOps may warn first
# a fixed iteration count (kernel speed, the same work for every solver; FlashSinkhorn's way)
step sinkhorn 200 "${KPB[@]}" sweep speed "${SWEEP[@]}" --device cuda --iters 10 \
    --backends "cuda,keops,torch${PEERS:+,$PEERS}" --ops sinkhorn --p 2 --blur 0.05 --N "$N_SH" --timeout 60
if [ -n "$N_CPU" ]; then   # dry run: the same ops on the CPU, timed (limit_frac from measured rates)
    step speed-cpu 120 "${KPB[@]}" sweep speed "${SWEEP[@]}" --device cpu --backends torch \
        --ops kernel_product,sinkhorn --kernels gaussian --p 2 --blur 0.1 --N "$N_CPU" --threads 1 --timeout 60
fi
if [ "$QUICK" = 1 ]; then   # the same sweep command as speed's, other kinds: left to the full run
    RESERVE=0 step report "$REPORT_S" "${KPB[@]}" report "$OUT/results" --out "$OUT/report"
    exit 0
fi
step memory 90 "${KPB[@]}" sweep memory "${SWEEP[@]}" --device cuda --backends cuda,keops,torch \
    --ops kernel_product,sinkhorn --kernels gaussian --p 2 --blur 0.1 --N "${N_SH}" --timeout 60
step accuracy 90 "${KPB[@]}" sweep accuracy "${SWEEP[@]}" --device cuda --backends cuda,keops,torch \
    --ops kernel_product --kernels gaussian --blur 0.1 --N "${N_KP%%,*}" --timeout 60
RESERVE=0 step report "$REPORT_S" "${KPB[@]}" report "$OUT/results" --out "$OUT/report"
