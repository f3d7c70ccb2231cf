#!/usr/bin/env python
"""The one-screen summary of scripts/gpu_check.sh, from what its folder holds now (so a
run cut short still says what it measured).

    python scripts/gpu_check_summary.py OUT SECONDS DRY_RUN

Prints: each step's status and time; the machine's limits; per speed point (op, backend,
N, device) the median time and limit_frac, or the status and its reason; the CUDA kernels'
predicted (SASS model, N = M = 1e6) over measured time; the refused points' reasons.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# SASS instance label -> (op, kernel or p) of the speed rows it predicts (N = M = 1e6, D = 3)
SASS_ROWS = {"gaussian KP": ("kernel_product", "gaussian"), "softmin p=2": ("softmin", 2)}
SASS_N = 10**6


def steps(out: Path) -> list[str]:
    path = out / "steps.tsv"
    if not path.is_file():
        return ["(no step finished)"]
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        name, status, seconds, note = (line.split("\t") + ["", "", ""])[:4]
        lines.append(f"  {name:11s} {status:14s} {seconds:>4s}s  {note[:80]}")
    return lines


def speed_lines(frame) -> list[str]:
    """The timed points one a line; the others one line per (op, backend, device, status)."""
    rows = frame[frame["sweep"] == "speed"].sort_values(["op", "device", "backend", "N"])
    lines = [f"  {'op':15s} {'backend':20s} {'device':6s} {'N':>8s} {'median s':>10s} {'% limit':>8s}"]
    refused: dict[tuple, list] = {}
    for r in rows.to_dict("records"):
        if r["status"] != "ok":
            key = (r["op"], r["backend"], r["device"], r["status"], str(r.get("error") or "")[:70])
            refused.setdefault(key, []).append(r["N"])
            continue
        frac = r.get("limit_frac")
        pct = f"{100 * frac:.3g}" if frac is not None and frac == frac else "-"
        lines.append(f"  {r['op']:15s} {r['backend']:20s} {r['device']:6s} {r['N']:8d} "
                     f"{r['time_median_s']:10.4g} {pct:>8s}")
    if refused:
        lines.append("  not timed:")
        for (op, backend, device, status, reason), ns in sorted(refused.items()):
            lines.append(f"    {op} {backend} {device} N={','.join(str(n) for n in sorted(set(ns)))}: "
                         f"{status}: {reason}")
    return lines


def sass_lines(out: Path, frame) -> list[str]:
    path = out / "sass.json"
    if not path.is_file():
        return ["  no SASS prediction (see sass.log)"]
    predicted = {row["inst"]["label"]: row["predicted_s"] for row in json.loads(path.read_text())
                 if row.get("arch") == 90}
    lines = []
    for label, (op, what) in SASS_ROWS.items():
        rows = frame[(frame["sweep"] == "speed") & (frame["backend"] == "cuda") & (frame["op"] == op)
                     & (frame["N"] == SASS_N) & (frame["device"] == "cuda") & (frame["status"] == "ok")]
        rows = rows[rows["kernel"] == what] if op == "kernel_product" else rows[rows["p"] == what]
        if label not in predicted:
            continue
        if rows.empty:
            lines.append(f"  {label}: predicted {predicted[label]:.4g} s, not measured")
            continue
        measured = float(rows["time_median_s"].median())
        lines.append(f"  {label}: predicted {predicted[label]:.4g} s, measured {measured:.4g} s, "
                     f"predicted/measured {predicted[label] / measured:.2f}")
    return lines or ["  nothing to compare"]


def main(argv=None) -> int:
    out, seconds, dry = Path(argv[0]), argv[1], argv[2] == "1"
    print("=" * 78)
    print(f"gpu_check {'DRY RUN (CPU; CUDA kernels on the host: no GPU figure)' if dry else ''}"
          f" in {seconds}s; folder {out}")
    print("steps:")
    print("\n".join(steps(out)))
    limits = out / "limits.log"
    if limits.is_file():
        print("limits:")
        print("\n".join("  " + line for line in limits.read_text(errors="replace").splitlines()[1:4]))
    try:
        from kpbench.results.selection import load_sweeps

        frame = load_sweeps(str(out / "results"))
    except Exception as exc:   # a summary never fails: it says what it could not read
        print(f"results: not readable ({type(exc).__name__}: {exc})")
        return 0
    if frame.empty:
        print("results: no rows yet")
        return 0
    print("speed (limit_frac: the time the machine's limits allow / the median time):")
    print("\n".join(speed_lines(frame)))
    print("CUDA kernels, SASS prediction vs measured (N = M = 1e6):")
    print("\n".join(sass_lines(out, frame)))
    print(f"report: {out / 'report' / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
