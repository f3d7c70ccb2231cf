"""Resuming a sweep: what is stored is skipped; --retry-failed measures again only what
failed because of the machine or the moment."""
from __future__ import annotations

from kpbench.results.store import SWEEPS, ResultStore
from kpbench.bench.parse import sweep_from_dict
from kpbench.bench.settings import Settings
from kpbench.bench.sweep import run_sweep


def rows_per_op(out) -> dict:
    frame = ResultStore(out).read(SWEEPS)
    return frame.groupby(["op", "backend", "dtype"]).size().to_dict()


def test_retry_failed_redoes_failures_not_refusals_by_design(tmp_path, test_ops):
    spec, measured = sweep_from_dict({"kind": "speed", "ops": "_test_raise,kernel_product,kernel_product_grad",
                                      "backends": "numpy", "dtype": "float64", "N": "20",
                                      "repeats": 1, "warmup": 0})
    options = dict(executor="inline", out=str(tmp_path), progress=False)
    first = run_sweep(spec, Settings(**measured, **options))
    assert first.counts == {"error": 1, "ok": 1, "unsupported": 1}   # numpy has no autograd
    again = run_sweep(spec, Settings(**measured, **options))
    assert again.already_stored == 3 and sum(again.counts.values()) == 0
    retried = run_sweep(spec, Settings(**measured, retry_failed=True, **options))
    assert retried.counts == {"error": 1}   # the error again; the refusal by design stays
    counts = rows_per_op(tmp_path)
    assert counts[("_test_raise", "numpy", "float64")] == 2
    assert counts[("kernel_product_grad", "numpy", "float64")] == 1
    assert counts[("kernel_product", "numpy", "float64")] == 1
