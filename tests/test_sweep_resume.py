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


def test_rows_stored_before_the_loss_column_resume_and_rerun(tmp_path):
    """A store written by kpbench before the loss column (a flow_step row: its loss in
    kernel, no loss column): its points are skipped on resume and rerun reads them back."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kpbench.results.schema import SWEEP_SCHEMA
    from kpbench.bench import rerun
    from kpbench.bench.parse import sweep_from_dict
    from kpbench.bench.plan import expand, legacy_fields

    spec, measured = sweep_from_dict({"kind": "accuracy", "ops": "flow_step,kernel_product",
                                      "losses": "sinkhorn,mmd", "backends": "numpy", "N": "20",
                                      "iters": "5", "warmup": 0})
    points = expand(spec)
    rows = [{**legacy_fields(p), "key": p.key("accuracy"), "status": "ok", "sweep": "accuracy",
             "run_id": "old", "warmup": 0, "threads": 1, "timeout_s": 600.0, "cxxflags": ""}
            for p in points]
    (tmp_path / SWEEPS).mkdir()
    old_schema = pa.schema([f for f in SWEEP_SCHEMA if f.name != "loss"])
    pq.write_table(pa.Table.from_pylist(rows, schema=old_schema), tmp_path / SWEEPS / "part-old.parquet")
    assert "loss" not in pq.read_schema(tmp_path / SWEEPS / "part-old.parquet").names
    again = run_sweep(spec, Settings(executor="inline", out=str(tmp_path), progress=False, **measured))
    assert again.already_stored == len(points) == 3 and again.counts == {}
    (group,) = rerun.plan(ResultStore(tmp_path).read(SWEEPS), "old")
    assert sorted(group.points, key=str) == sorted(points, key=str)
    assert {p.loss for p in group.points if p.op == "flow_step"} == {"sinkhorn", "mmd"}
