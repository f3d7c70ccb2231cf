"""Write the reference values of ``kpbench reproduce NAME --check``, with a tolerance per number.

    python scripts/make_references.py gradient-flow-1d       # -> kpbench/suite/reproductions/references/
    python scripts/make_references.py all

Each reproduction runs three times, at the small settings of SETTINGS below, on the
torch CPU backend:

* A: torch 1 thread -- the reference values;
* B: torch 2 threads (another split of the reductions: other roundings);
* C: 1 thread, the inputs moved by DELTA_ULPS ulps of the dtype (seeded Gaussian noise on
  the source points of the flows, on the target samples of model fitting).

A number's shift is its largest move in B and C. Its tolerance is rtol = max(floor,
SAFETY x shift / |value|), the floor being FLOOR_ULPS ulps of the dtype; the reason
written with it says what was measured, and "chaotic" where the inputs' perturbation is
amplified more than CHAOS_GAIN times (trajectories in 1D with |x - y| kinks: points
cross, the flow is not a smooth function of the data). Statuses and NaN iterations are
exact.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import math
import sys
import tempfile
from unittest import mock

import numpy as np
import torch

from kpbench.results.meta import cpu_name, git_commit
from kpbench.suite.reproductions import REPRODUCTIONS
from kpbench.suite.reproductions.check import EXACT, quantities, reference_path, summary_label

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


def run(name: str, threads: int, delta: float = 0.0) -> list[dict]:
    module = importlib.import_module(REPRODUCTIONS[name])
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out, perturbed_inputs(module, name, delta):
        return module.run(out=out, figures=False, **SETTINGS[name])


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


def entries(name: str) -> list[dict]:
    eps = float(np.finfo(SETTINGS[name]["dtype"]).eps)
    delta = DELTA_ULPS * eps
    base, threads, moved = run(name, 1), run(name, 2), run(name, 1, delta)
    others = [{summary_label(s): quantities(s) for s in runs} for runs in (threads, moved)]
    values = []
    for summary in base:
        label = summary_label(summary)
        for quantity, value in quantities(summary).items():
            if value is None:
                continue
            alt = [o[label].get(quantity) for o in others]
            values.append(entry(label, quantity, value, alt, eps, delta))
    return values


def entry(label: str, quantity: str, value, alternatives: list, eps: float, delta: float) -> dict:
    out = {"loss": label, "quantity": quantity, "value": value, "rtol": 0.0, "atol": 0.0}
    if quantity in EXACT or not isinstance(value, float):
        return {**out, "reason": "exact: a status / an iteration index does not round"}
    if any(a is None or not math.isfinite(a) for a in alternatives):
        return {**out, "rtol": 1.0, "reason": f"unstable: another run gave {alternatives}"}
    scale = abs(value) or 1.0
    shifts = [abs(a - value) / scale for a in alternatives]
    floor = FLOOR_ULPS * eps
    rtol = max(floor, SAFETY * max(shifts))
    if max(shifts) == 0:
        return {**out, "rtol": float(f"{floor:.2g}"),
                "reason": f"bit-identical under threads 1 -> 2 and inputs + {DELTA_ULPS} ulps; "
                          f"rtol = the floor of {FLOOR_ULPS} ulps ({floor:.1e}) for other machines"}
    gain = shifts[1] / delta
    kind = ("chaotic (the input perturbation is amplified {:.0e} x: |x - y| kinks or near ties "
            "make the trajectory a non-smooth function of the data)".format(gain)
            if gain > CHAOS_GAIN else f"smooth (amplification {gain:.2g} x)")
    reason = (f"{kind}; measured moves: threads 1 -> 2: {shifts[0]:.1e}, inputs + {DELTA_ULPS} ulps: "
              f"{shifts[1]:.1e} (relative); rtol = max({FLOOR_ULPS} ulps = {floor:.1e}, "
              f"{SAFETY} x largest move)")
    return {**out, "rtol": float(f"{rtol:.2g}"), "reason": reason}


def write(name: str) -> None:
    values = entries(name)
    reference = {
        "reproduction": name,
        "how_made": {
            "command": f"python scripts/make_references.py {name}",
            "git_commit": git_commit(), "date": _dt.date.today().isoformat(),
            "machine": cpu_name() + " (host CPU)", "torch": torch.__version__,
            "numpy": np.__version__, "method": __doc__.strip().split("\n\n", 2)[2],
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
    args = parser.parse_args()
    for name in (REPRODUCTIONS if args.name == "all" else [args.name]):
        write(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
