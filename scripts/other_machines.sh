#!/usr/bin/env bash
# What a user on another machine gets, checked on this one (part of the README's test command):
#  1. the reproduction checks as this machine runs them, then as an AVX2 machine runs them
#     (MKL's and torch's AVX2 kernels, NumPy without its AVX-512 targets): a reference must
#     give the same verdict on any x86-64 machine;
#  2. the package as pip installs it (a wheel, no -e) run from outside the checkout
#     (scripts/wheel_smoke.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

reproduction_checks() {   # $1: a label for this pass
    for name in gradient-flow-1d gradient-flow-2d model-fitting; do
        python -m kpbench reproduce "$name" --check --no-figures --out "$out/$1/$name" \
            | grep -E "^check against|MOVED|^check passed|^CHECK FAILED"
    done
}

capability() { python -c 'import torch; print(torch.backends.cpu.get_cpu_capability())'; }

echo "== reproduction checks, this machine as it is (torch kernels: $(capability))"
reproduction_checks machine

AVX2_MACHINE=(MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2
              NPY_DISABLE_CPU_FEATURES="AVX512_SPR AVX512_ICL X86_V4")
echo "== reproduction checks as an AVX2 machine runs them: ${AVX2_MACHINE[*]}" \
     "(torch kernels: $(env "${AVX2_MACHINE[@]}" bash -c "$(declare -f capability); capability"))"
export "${AVX2_MACHINE[@]}"
reproduction_checks avx2
python -m pytest -q -p no:cacheprovider tests/test_reproduce_check.py
unset MKL_ENABLE_INSTRUCTIONS ATEN_CPU_CAPABILITY NPY_DISABLE_CPU_FEATURES

echo "== the installed wheel"
bash scripts/wheel_smoke.sh
