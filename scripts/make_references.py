"""Write the reference values of ``kpbench reproduce NAME --check``, with a tolerance per number.

    python scripts/make_references.py gradient-flow-1d       # -> kpbench/reproductions/references/
    python scripts/make_references.py all

Make them from committed code (the file records the commit; a dirty tree is refused).
Each reproduction runs at the small settings of SETTINGS below, on the torch CPU backend,
each run in a fresh process (the instruction-set variables act only at start-up):

* the base run: torch 1 thread, the machine as it is (no instruction-set variable set) --
  the reference values;
* one run per move of MOVES: torch 2 threads (another split of the reductions); the inputs
  moved by DELTA_ULPS ulps of the dtype (seeded Gaussian noise on the source points of the
  flows, on the target samples of model fitting); MKL's AVX2 kernels
  (MKL_ENABLE_INSTRUCTIONS=AVX2), torch's own kernels at AVX2 and at their portable default
  (ATEN_CPU_CAPABILITY), NumPy without its AVX-512 targets (NPY_DISABLE_CPU_FEATURES), and
  all of these together (what an AVX2 machine runs). Float64 results move by ~1e-13 between
  instruction sets: a reference made on one x86-64 machine must hold on the next.

A number's shift is its largest move over all runs. Its tolerance is rtol = max(floor,
SAFETY x shift / |value|), the floor being FLOOR_ULPS ulps of the dtype; the reason
written with it lists every measured move, and says "chaotic" where the inputs'
perturbation is amplified more than CHAOS_GAIN times (trajectories in 1D with |x - y|
kinks: points cross, the flow is not a smooth function of the data). Statuses and NaN
iterations are exact. The file lists the moves measured and the instruction sets each run
actually used (a move that cannot act on this machine, say AVX-512 kernels on an AVX2
machine, shows as the same capability as the base).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from unittest import mock

import numpy as np
import torch

from kpbench.results.meta import cpu_name, git_commit
from kpbench.reproductions import REPRODUCTIONS
from kpbench.reproductions.check import EXACT, quantities, reference_path, summary_label

SETTINGS = {
    "gradient-flow-1d": dict(backend="torch", dtype="float64", device="cpu", N=20, M=None,
                             seed=0, t_max=1.0),
    "gradient-flow-2d": dict(backend="torch", dtype="float64", device="cpu", N=40, M=None,
                             seed=0, t_max=0.5),
    "model-fitting": dict(backend="torch", dtype="float32", device="cpu", N=200, M=200,
                          seed=0, iterations=100),
}
DELTA_ULPS = 10
FLOOR_ULPS = 1000
SAFETY = 10
CHAOS_GAIN = 1e4
INPUTS_MOVE = f"inputs + {DELTA_ULPS} ulps"   # the move that measures the amplification


@dataclass(frozen=True)
class Move:
    """One way the same computation runs differently: threads, inputs, instruction sets."""

    name: str
    threads: int = 1
    delta_ulps: int = 0
    env: dict = field(default_factory=dict)


NPY_NO_AVX512 = "AVX512_SPR AVX512_ICL X86_V4"   # NumPy 2.x dispatch targets above AVX2
AVX2_MACHINE = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                "NPY_DISABLE_CPU_FEATURES": NPY_NO_AVX512}
ISA_VARIABLES = tuple(AVX2_MACHINE) + ("MKL_CBWR",)   # cleared for the base run
MOVES = (
    Move("threads 1 -> 2", threads=2),
    Move(INPUTS_MOVE, delta_ulps=DELTA_ULPS),
    Move("MKL AVX2", env={"MKL_ENABLE_INSTRUCTIONS": "AVX2"}),
    Move("ATen avx2", env={"ATEN_CPU_CAPABILITY": "avx2"}),
    Move("ATen default", env={"ATEN_CPU_CAPABILITY": "default"}),
    Move("NumPy no AVX-512", env={"NPY_DISABLE_CPU_FEATURES": NPY_NO_AVX512}),
    Move("an AVX2 machine", env=AVX2_MACHINE),
)


# -- one run, in a process of its own ------------------------------------------------------
def run_here(name: str, threads: int, delta: float) -> dict:
    """The summaries of one run in this process, and the instruction sets it used."""
    module = importlib.import_module(REPRODUCTIONS[name])
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out, perturbed_inputs(module, name, delta):
        summaries = module.run(out=out, figures=False, **SETTINGS[name])
    return {"summaries": summaries, "isa": instruction_sets()}


def instruction_sets() -> dict:
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return {"torch": torch.backends.cpu.get_cpu_capability(),
            "numpy": [t for t in __cpu_dispatch__ if __cpu_features__.get(t)],
            **{v: os.environ[v] for v in ISA_VARIABLES if v in os.environ}}


def run(name: str, move: Move | None) -> dict:
    """One run in a fresh process (``move`` None: the base run, the machine as it is)."""
    move = move or Move("base")
    env = {k: v for k, v in os.environ.items() if k not in ISA_VARIABLES}
    env.update(move.env)
    eps = float(np.finfo(SETTINGS[name]["dtype"]).eps)
    command = [sys.executable, __file__, name, "--one-run", "--threads", str(move.threads),
               "--delta", repr(move.delta_ulps * eps)]
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{move.name}: {' '.join(command)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def perturbed_inputs(module, name: str, delta: float):
    rng = np.random.default_rng(12345)

    def noisy(array):
        return array + delta * rng.standard_normal(np.shape(array))

    if name == "model-fitting":
        sample = module.datasets.polygmm_sample
        return mock.patch.object(module.datasets, "polygmm_sample",
                                 lambda *a, **k: noisy(sample(*a, **k)))
    inputs = module.inputs
    return mock.patch.object(module, "inputs",
                             lambda *a: (lambda x0, y: (noisy(x0), y))(*inputs(*a)))


# -- tolerances ----------------------------------------------------------------------------
def entries(name: str) -> tuple[list[dict], dict]:
    """The reference entries of ``name`` and the instruction sets of each run."""
    eps = float(np.finfo(SETTINGS[name]["dtype"]).eps)
    base = run(name, None)
    moved = {m.name: run(name, m) for m in MOVES}
    others = {m: {summary_label(s): quantities(s) for s in r["summaries"]}
              for m, r in moved.items()}
    values = []
    for summary in base["summaries"]:
        label = summary_label(summary)
        for quantity, value in quantities(summary).items():
            if value is None:
                continue
            alt = {m: o[label].get(quantity) for m, o in others.items()}
            values.append(entry(label, quantity, value, alt, eps))
    isa = {"base": base["isa"], **{m: r["isa"] for m, r in moved.items()}}
    return values, isa


def entry(label: str, quantity: str, value, alternatives: dict, eps: float) -> dict:
    """One number with its tolerance; ``alternatives``: its value under each move."""
    out = {"loss": label, "quantity": quantity, "value": value, "rtol": 0.0, "atol": 0.0}
    if quantity in EXACT or not isinstance(value, float):
        return {**out, "reason": "exact: a status / an iteration index does not round"}
    if any(a is None or not math.isfinite(a) for a in alternatives.values()):
        return {**out, "rtol": 1.0, "reason": f"unstable: another run gave {alternatives}"}
    scale = abs(value) or 1.0
    shifts = {m: abs(a - value) / scale for m, a in alternatives.items()}
    largest = max(shifts.values())
    floor = FLOOR_ULPS * eps
    measured = ", ".join(f"{m}: {s:.1e}" for m, s in shifts.items())
    if largest == 0:
        return {**out, "rtol": float(f"{floor:.2g}"),
                "reason": f"bit-identical under every move ({', '.join(shifts)}); "
                          f"rtol = the floor of {FLOOR_ULPS} ulps ({floor:.1e}) for other machines"}
    gain = shifts[INPUTS_MOVE] / (DELTA_ULPS * eps)
    kind = ("chaotic (the input perturbation is amplified {:.0e} x: |x - y| kinks or near ties "
            "make the trajectory a non-smooth function of the data)".format(gain)
            if gain > CHAOS_GAIN else f"smooth (amplification {gain:.2g} x)")
    reason = (f"{kind}; measured moves (relative): {measured}; rtol = max({FLOOR_ULPS} ulps = "
              f"{floor:.1e}, {SAFETY} x largest move)")
    return {**out, "rtol": float(f"{max(floor, SAFETY * largest):.2g}"), "reason": reason}


def committed_head() -> str:
    """HEAD, refusing a tree with uncommitted changes (the file would name the wrong code)."""
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True).stdout.strip()
    if dirty:
        raise SystemExit(f"commit first: references record the commit they were made at\n{dirty}")
    return git_commit()


def write(name: str, commit: str) -> None:
    values, isa = entries(name)
    reference = {
        "reproduction": name,
        "how_made": {
            "command": f"python scripts/make_references.py {name}",
            "git_commit": commit, "date": _dt.date.today().isoformat(),
            "machine": cpu_name() + " (host CPU)", "torch": torch.__version__,
            "numpy": np.__version__, "method": __doc__.strip().split("\n\n", 2)[2],
            "moves_measured": {m.name: {"threads": m.threads, "delta_ulps": m.delta_ulps,
                                        "env": m.env} for m in MOVES},
            "instruction_sets": isa,
        },
        "settings": SETTINGS[name],
        "values": values,
    }
    path = reference_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"{path}: {len(values)} values")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=[*REPRODUCTIONS, "all"])
    parser.add_argument("--one-run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--delta", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_run:
        print(json.dumps(run_here(args.name, args.threads, args.delta)))
        return 0
    commit = committed_head()
    for name in (REPRODUCTIONS if args.name == "all" else [args.name]):
        write(name, commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
