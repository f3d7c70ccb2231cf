#!/usr/bin/env bash
# The package users install, tested as they get it: build the wheel from the tracked files,
# install it (no -e) into a fresh venv WITHOUT system site packages (the system site holds
# the checkout's editable kpbench, which would be imported instead), then, from a folder
# outside the checkout and with no PYTHONPATH:
#   kpbench is imported from the venv; `kpbench backends`; a small inline sweep and its
#   report; the CUDA kernels run on the host (KPBENCH_CUDA_HOST=1: kernels.cu + host_shim.h
#   from the installed package) against the NumPy reference; `kpbench reproduce
#   gradient-flow-1d --losses energy --check` (the shipped reference values).
#
#   scripts/wheel_smoke.sh [--keep]      # --keep: leave the work folder (printed) behind
#
# Dependencies come through pip's configured indexes (torch==2.13.0, the CPU wheel, first,
# as README says); the core dependencies only: the smoke needs no Ray, KeOps or peers.
# Exit status: 0 when every step passed, else the failing step's.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
KEEP=0
[ "${1-}" = "--keep" ] && KEEP=1
WORK=$(mktemp -d /tmp/kpb-wheel-XXXXXX)
cleanup() { if [ "$KEEP" = 1 ]; then echo "work folder kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
started=$SECONDS
log() { echo "[wheel_smoke +$((SECONDS - started))s] $*"; }

log "copy the tracked files, build the wheel (no download: the installed setuptools)"
mkdir -p "$WORK/source" "$WORK/dist" "$WORK/run"
git -C "$ROOT" ls-files -z -- pyproject.toml README.md kpbench |
    (cd "$ROOT" && xargs -0 cp --parents -t "$WORK/source")
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$WORK/dist" "$WORK/source"
WHEEL=$(ls "$WORK"/dist/kpbench-*.whl)

log "fresh venv, torch==2.13.0 first, then the wheel and its dependencies"
"$PYTHON" -m venv "$WORK/venv"
VENV_PY="$WORK/venv/bin/python"
"$VENV_PY" -m pip install -q torch==2.13.0
"$VENV_PY" -m pip install -q "$WHEEL"
log "installed"

cd "$WORK/run"   # outside the checkout: nothing of it on the path
unset PYTHONPATH
export PATH="$WORK/venv/bin:$PATH" KPBENCH_BUILD_DIR="$WORK/build" KPBENCH_CUDA_HOST_BUILD="$WORK/cuda_host"

log "kpbench comes from the venv"
"$VENV_PY" - "$WORK/venv" <<'EOF'
import pathlib, sys
import kpbench
where = pathlib.Path(kpbench.__file__).resolve()
assert where.is_relative_to(pathlib.Path(sys.argv[1]).resolve()), f"kpbench imported from {where}"
print("kpbench from", where.parent)
EOF

log "kpbench backends"
kpbench backends

log "a small inline sweep, then its report"
kpbench sweep accuracy --ops kernel_product --backends numpy,torch --kernels gaussian \
    --N 100 --dtype float64 --executor inline --out results
kpbench report results --out report
test -s report/report.html && test -s report/report.md

log "the CUDA kernels on the host (KPBENCH_CUDA_HOST=1), against the NumPy reference"
KPBENCH_CUDA_HOST=1 "$VENV_PY" - <<'EOF'
import numpy as np
import torch
from kpbench.backends import get_backend
g = torch.Generator().manual_seed(0)
x, y, b = torch.rand(64, 3, generator=g), torch.rand(48, 3, generator=g), torch.rand(48, generator=g)
out = get_backend("cuda").kernel_product(x, y, b, kernel="gaussian", blur=0.3)
ref = get_backend("numpy").kernel_product(x.double().numpy(), y.double().numpy(), b.double().numpy(),
                                          kernel="gaussian", blur=0.3)
err = float(np.max(np.abs(np.asarray(out, dtype=np.float64).ravel() - np.asarray(ref).ravel())))
assert err < 1e-5, err
print(f"cuda (host) kernel product: max |error| {err:.1e}")
EOF

log "kpbench reproduce gradient-flow-1d --losses energy --check"
kpbench reproduce gradient-flow-1d --losses energy --check --out reproductions

log "wheel smoke passed"
