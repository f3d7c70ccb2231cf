"""The interleaved executor: every point measured in every variant, their timed samples taken
in alternation (:mod:`kpbench.bench.interleave`); each row goes to its variant's store."""
from __future__ import annotations

import random

from kpbench.bench.interleave import VariantWorker, measure_interleaved


def run(points, kind, settings, on_row, on_final=None, *, variants, seed: int = 0) -> None:
    """``on_row(row, store=variant name)`` for each variant's row of each point."""
    workers = [VariantWorker(v) for v in variants]
    rng = random.Random(seed)
    try:
        for point in points:
            rows = measure_interleaved(point, kind, settings, workers, rng)
            for name, row in rows.items():
                on_row(row, store=name)
    finally:
        for worker in workers:
            worker.stop()
