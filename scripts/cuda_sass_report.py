#!/usr/bin/env python
"""Predicted H100 speed of the cuda backend's kernels, from their machine code (no GPU needed).

    python scripts/cuda_sass_report.py                  # sm_80 and sm_90
    python scripts/cuda_sass_report.py --arch 90 --json sass.json

Compiles kernels.cu for each sm_XX with nvcc (-ftz=true, as CuPy compiles it), counts the
instructions per pair of each kernel's inner loop by pipe (cuobjdump -sass, from the
nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm wheels if not on PATH), and prints the
predicted time at N = M = 1e6, float32, on an H100 SXM next to the physical limit, with
registers (ptxas -v) and the occupancy they allow. A prediction, not a measurement: see
scripts/cuda_sass.py for the model and NOTES.md for what it cannot see.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cuda_sass as sass  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90])
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    if sass.nvcc() is None or sass.cuobjdump() is None:
        print("cuda_sass_report: nvcc and cuobjdump are needed "
              "(pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)", file=sys.stderr)
        return 2
    rows = [row for arch in args.arch for row in sass.analyse(arch=arch)]
    print(f"H100 SXM model: {sass.SMS} SMs at {sass.CLOCK_HZ / 1e9:.2f} GHz; N = M = 1e6, "
          "float32; counts are instructions per pair; predicted = max over pipes and issue")
    print(sass.table(rows))
    if args.json:
        args.json.write_text(json.dumps([_plain(r) for r in rows], indent=1))
    return 0


def _plain(row) -> dict:
    out = dataclasses.asdict(row)
    out["inst"] = {**out["inst"], "expression": row.inst.expression}
    return out


if __name__ == "__main__":
    sys.exit(main())
