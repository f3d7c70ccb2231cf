"""``kpbench reproduce NAME --check``: the run's numbers against reference values shipped here.

A reference file (``references/<name>.json``) says how it was made (command, commit,
machine, library versions), the settings of that run (backend, dtype, device, N, M, seed,
t_max or iterations) and, per loss, the numbers to reproduce, each with its tolerance
and the reason for that tolerance::

    {"loss": "energy", "quantity": "w2_final", "value": 0.198, "rtol": 1e-9, "atol": 0.0,
     "reason": "smooth: ..."}

Quantities: ``status`` (exact), for the flows ``w2_final`` and ``energy_final`` (W2 and
energy distance to the target at the end), for model fitting ``distance_to_truth``, the
fitted parameters ``P``, ``sigma_minus``, ``sigma_plus``, ``coef_x[k]``, ``coef_y[k]`` and
``first_nan_iteration`` (exact). A number matches when |got - ref| <= atol + rtol |ref|.
``scripts/make_references.py`` writes these files and derives each tolerance from how far
the number moves under a tiny perturbation of the inputs and another thread count.
"""
from __future__ import annotations

import json
import math
import pathlib
from dataclasses import dataclass

from kpbench.errors import KPBenchError

REFERENCES_DIR = pathlib.Path(__file__).resolve().parent / "references"
EXACT = ("status", "first_nan_iteration")


@dataclass
class Checked:
    label: str
    quantity: str
    reference: object
    got: object
    rtol: float
    atol: float
    reason: str

    @property
    def ok(self) -> bool:
        return matches(self.got, self.reference, self.rtol, self.atol)

    @property
    def deviation(self) -> str:
        if not isinstance(self.reference, (int, float)) or not isinstance(self.got, (int, float)):
            return "-"
        scale = abs(self.reference) or 1.0
        return f"{abs(self.got - self.reference) / scale:.2g}"


def matches(got, reference, rtol: float, atol: float) -> bool:
    if isinstance(reference, bool) or not isinstance(reference, (int, float)) or reference is None:
        return got == reference
    if not isinstance(got, (int, float)) or not math.isfinite(got):
        return False
    return abs(got - reference) <= atol + rtol * abs(reference)


def reference_path(name: str) -> pathlib.Path:
    return REFERENCES_DIR / f"{name}.json"


def load_reference(path) -> dict:
    """A reference file, checked for the fields the check needs."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise KPBenchError(f"no reference values at {path}")
    try:
        reference = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise KPBenchError(f"{path}: not valid JSON: {exc}") from exc
    for name in ("reproduction", "how_made", "settings", "values"):
        if name not in reference:
            raise KPBenchError(f"{path}: reference file without {name!r}")
    for i, entry in enumerate(reference["values"]):
        missing = [k for k in ("loss", "quantity", "value", "rtol", "atol", "reason") if k not in entry]
        if missing:
            raise KPBenchError(f"{path}: value {i} lacks {', '.join(missing)}")
    return reference


def run_settings(reference: dict, given: dict) -> dict:
    """The reference run's settings; a different value given on the command line is an error
    (the numbers would not be comparable)."""
    settings = dict(reference["settings"])
    for name, value in given.items():
        if value is not None and name in settings and settings[name] != value:
            raise KPBenchError(
                f"--check compares with a run made with {name}={settings[name]!r}; got "
                f"{name}={value!r} (leave it out, or pass another --reference)")
    return settings


def quantities(summary: dict) -> dict:
    """The checkable numbers of one loss's summary, by quantity name."""
    values = {"status": summary.get("status")}
    for name in ("w2_final", "energy_final", "distance_to_truth", "first_nan_iteration", "P",
                 "sigma_minus", "sigma_plus"):
        if name in summary:
            values[name] = summary[name]
    for name in ("coef_x", "coef_y"):
        for k, value in enumerate(summary.get(name) or ()):
            values[f"{name}[{k}]"] = value
    return values


def summary_label(summary: dict) -> str:
    return summary.get("loss") or summary.get("fidelity")


def check(reference: dict, summaries: list[dict]) -> list[Checked]:
    """Every reference number of the losses that ran, against the run's."""
    got = {summary_label(s): quantities(s) for s in summaries}
    checked = []
    for entry in reference["values"]:
        if entry["loss"] not in got:
            continue
        checked.append(Checked(entry["loss"], entry["quantity"], entry["value"],
                               got[entry["loss"]].get(entry["quantity"]), float(entry["rtol"]),
                               float(entry["atol"]), entry["reason"]))
    if not checked:
        raise KPBenchError("no reference value for the losses run: nothing was checked")
    return checked


def format_check(checked: list[Checked], reference: dict) -> str:
    moved = [c for c in checked if not c.ok]
    lines = [f"check against {reference['reproduction']} references "
             f"(made {reference['how_made'].get('date', '?')} at commit "
             f"{str(reference['how_made'].get('git_commit', '?'))[:10]}): "
             f"{len(checked) - len(moved)} of {len(checked)} numbers match"]
    for c in moved:
        lines.append(f"  MOVED {c.label} {c.quantity}: got {_fmt(c.got)}, reference "
                     f"{_fmt(c.reference)} (rtol {c.rtol:g}, atol {c.atol:g}; relative "
                     f"deviation {c.deviation}) -- tolerance because: {c.reason}")
    lines.append("CHECK FAILED" if moved else "check passed")
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.10g}" if isinstance(value, float) else repr(value)


__all__ = ["REFERENCES_DIR", "load_reference", "reference_path", "run_settings", "check",
           "format_check", "quantities", "matches", "Checked"]
