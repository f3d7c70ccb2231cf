#!/usr/bin/env bash
# Compile every .cu file of the repository with nvcc, so that CI (which has no GPU) catches
# syntax and template errors in the CUDA sources. Files are compiled with -DKPB_INSTANTIATE,
# which makes each file instantiate a representative set of its templates (so that the
# bodies are compiled, not only parsed), down to machine code (-cubin) for each arch.
#
#   scripts/check_cuda_sources.sh              # sm_90
#   KPB_CUDA_ARCHS="80 90" scripts/check_cuda_sources.sh
# Exit status: 0 all compiled, 1 a compilation failed, 2 nvcc not found.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
nvcc="${NVCC:-nvcc}"
archs="${KPB_CUDA_ARCHS:-90}"

if ! command -v "$nvcc" >/dev/null 2>&1; then
    echo "check_cuda_sources: nvcc not found (set NVCC=/path/to/nvcc)" >&2
    exit 2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mapfile -t sources < <(cd "$root" && find kpbench scripts -name '*.cu' -not -path '*/_build/*' | sort)
if [ "${#sources[@]}" -eq 0 ]; then
    echo "check_cuda_sources: no .cu files found under $root" >&2
    exit 1
fi

passed=0
failed=0
for src in "${sources[@]}"; do
    for arch in $archs; do
        if "$nvcc" -std=c++17 -DKPB_INSTANTIATE -Werror all-warnings -arch="sm_$arch" -cubin \
                -o "$work/out.cubin" "$root/$src" 2>"$work/log"; then
            echo "ok      $src (sm_$arch)"
            passed=$((passed + 1))
        else
            echo "FAILED  $src (sm_$arch)"
            sed 's/^/    /' "$work/log"
            failed=$((failed + 1))
        fi
    done
done
echo "check_cuda_sources: $passed compiled, $failed failed ($("$nvcc" --version | tail -1))"
[ "$failed" -eq 0 ]
