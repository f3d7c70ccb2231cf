"""Conditioning as a sweep axis (issue 23): offsets and scales of accuracy points, their keys,
their inputs and truths, the relations they must keep, the report's error-vs-offset view, rerun."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kpbench.errors import KPBenchError
from kpbench.results.report import write_report
from kpbench.results.selection import load_sweeps
from kpbench.bench import measure, ops
from kpbench.bench.inputs import make_data
from kpbench.bench import rerun as rr
from kpbench.bench.parse import sweep_from_dict
from kpbench.bench.plan import Point, SweepSpec, count_points, expand
from kpbench.bench.settings import Settings
from kpbench.bench.sweep import run_sweep
from kpbench.cli.main import main

KP = Point(op="kernel_product", backend="torch", kernel="gaussian", N=40, M=30, D=2, blur=0.1,
           p=None, reach=None, dtype="float32", device="cpu", seed=3, iters=None, scaling=None)
UNBALANCED = Point(op="sinkhorn", backend="keops", kernel="sinkhorn", N=40, M=30, D=2, blur=0.05,
                   p=2, reach=0.5, dtype="float32", device="cpu", seed=0, iters=None, scaling=0.5,
                   tol=1e-6)


def moved(point, **fields):
    return dataclasses.replace(point, **fields)


def test_a_point_without_offset_or_scale_keeps_its_old_key():
    # pinned from main 3e4e9dc, before the offset and scale columns existed
    assert KP.key("accuracy") == "7e458f569534ac92eaa4"
    assert UNBALANCED.key("accuracy") == "2abba9a90b430de2d564"
    keys = {moved(KP, offset=0.0).key("accuracy"), moved(KP, scale=1.0).key("accuracy"),
            moved(KP, offset=1e2).key("accuracy"), moved(KP, offset=0.0, scale=1.0).key("accuracy")}
    assert len(keys) == 4 and KP.key("accuracy") not in keys


def test_offsets_and_scales_expand_into_points_and_are_counted():
    spec, measured = sweep_from_dict({"kind": "accuracy", "ops": "kernel_product,sinkhorn", "backends": "numpy,torch",
                                      "N": "10", "offsets": "none,0,1e2", "scales": [2, "none"], "iters": "scaling"})
    points = expand(spec)
    assert len(points) == count_points(spec) == 2 * 2 * 3 * 2
    assert {(pt.offset, pt.scale) for pt in points} == {
        (o, s) for o in (None, 0.0, 100.0) for s in (2.0, None)}
    assert len({pt.key("accuracy") for pt in points}) == len(points)


@pytest.mark.parametrize("values, message", [
    ({"offsets": "nan"}, "offsets must be finite numbers from -1e\\+30 to 1e\\+30"),
    ({"offsets": "inf"}, "offsets must be"),
    ({"offsets": "-1e31"}, "offsets must be"),
    ({"offsets": [True]}, "must be a number or a string"),
    ({"scales": "0"}, "scales must be numbers from 1e-30 to 1e\\+30"),
    ({"scales": "-2"}, "scales must be"),
    ({"scales": "1e31"}, "scales must be"),
    ({"scales": "1e-31"}, "scales must be"),
    ({"blur": "1e300", "scales": "1e30"}, "blur 1e\\+300 times scale 1e\\+30 is inf"),
    ({"reach": "1e-300", "scales": "1e-30"}, "reach 1e-300 times scale 1e-30 is 0.0"),
    ({"kind": "speed", "offsets": "0"}, "apply to accuracy sweeps only, got kind 'speed'"),
    ({"kind": "memory", "scales": "2"}, "apply to accuracy sweeps only, got kind 'memory'"),
])
def test_bad_offsets_and_scales_are_refused(values, message):
    with pytest.raises(KPBenchError, match=message):
        sweep_from_dict({"kind": "accuracy", **values})


def test_the_cli_refuses_an_offset_on_a_speed_sweep_naming_the_flag(capsys):
    assert main(["sweep", "speed", "--offset", "1e2", "--dry-run"]) == 2
    assert "accuracy sweeps only" in capsys.readouterr().err
    assert main(["sweep", "accuracy", "--scale", "0", "--dry-run"]) == 2
    assert "--scale '0': scales must be" in capsys.readouterr().err


def test_make_data_moves_and_rounds_the_inputs_of_a_moved_point_only():
    plain = make_data(KP)
    data = make_data(moved(KP, offset=1e4, scale=2.0))
    for name in ("x", "y"):
        expected = (2.0 * getattr(plain, name) + 1e4).astype(np.float32).astype(np.float64)
        np.testing.assert_array_equal(getattr(data, name), expected)
    for name in ("b", "h", "c"):   # the other inputs: rounded to float32 alike
        np.testing.assert_array_equal(getattr(data, name), getattr(plain, name).astype(np.float32))
    assert plain.x.astype(np.float32).astype(np.float64).tolist() != plain.x.tolist()   # unmoved: as made


def _reference_value(point, scale):
    point = moved(point, backend="numpy", dtype="float64", scale=scale)
    summary = ops.reference(point, make_data(point))
    return summary.vector if summary.vector is not None else summary.value


@pytest.mark.parametrize("op, p, reach, power", [
    ("kernel_product", None, None, 0), ("kernel_product_grad", None, None, -1), ("softmin", 2, None, 2),
    ("sinkhorn", 2, 0.5, 2), ("sinkhorn", 1, None, 1), ("sinkhorn_grad", 2, None, 1),
])
def test_a_scale_is_the_same_problem_at_another_scale(op, p, reach, power):
    """Coordinates, blur and reach times 4 (a power of two: no rounding): kernel products
    unchanged, their x-gradient / 4, softmin and S_eps times 4**p, S_eps's x-gradient 4**(p-1)."""
    point = Point(op=op, backend="numpy", kernel="gaussian" if p is None else op.split("_")[0], N=30,
                  M=20, D=2, blur=0.2, p=p, reach=reach, dtype="float64", device="cpu", seed=1,
                  iters=None, scaling=None)
    np.testing.assert_allclose(_reference_value(point, 4.0), 4.0**power * _reference_value(point, None),
                               rtol=1e-10)


def test_the_float64_truth_of_a_moved_point_is_on_its_own_rounded_inputs():
    """float32 at offset 1e4: judged on the float32 coordinates (rounding them moves the kernel
    product by ~1e-2 at blur .1, which is not the backend's error); float64 right after it at
    the same offset: its own truth, not the float32 one kept for the first."""
    errors = {}
    for name, point in (("float32", moved(KP, offset=1e4)),
                        ("float64", moved(KP, dtype="float64", offset=1e4)),
                        ("scaled", moved(KP, dtype="float64", scale=4.0))):
        row = measure.run_point(point, "accuracy")
        assert row["status"] == "ok", row["error"]
        errors[name] = row["rel_err"]
    # the scaled point: the backend scales its blur as the truth does
    assert errors["float32"] < 1e-5 and errors["float64"] < 1e-12 and errors["scaled"] < 1e-12


def _sweep(out, offsets):
    spec = SweepSpec(kind="accuracy", ops=["kernel_product"], backends=["numpy", "torch"], N=[20],
                     D=[2], blur=[0.5], dtype=["float32"], offsets=offsets)
    result = run_sweep(spec, Settings(executor="inline", out=str(out), progress=False, threads=1))
    assert result.counts == {"ok": 2 * len(offsets)}
    return result


def test_the_report_draws_and_tabulates_error_vs_offset(tmp_path):
    _sweep(tmp_path / "one", [1e2])
    write_report(tmp_path / "one", interactive=False)
    assert not (tmp_path / "one" / "report" / "error_vs_offset.png").exists()
    assert "Error vs offset" not in (tmp_path / "one" / "report" / "report.md").read_text()

    _sweep(tmp_path / "many", [0, 1e2, 1e4])
    html = write_report(tmp_path / "many", interactive=False)
    assert (html.parent / "error_vs_offset.png").stat().st_size > 0
    assert 'alt="Max. relative error vs the float64 truth on the same (rounded) inputs, vs the offset' \
        in html.read_text()
    markdown = (html.parent / "report.md").read_text()
    header = "| op | setting | backend | dtype | device | offset 0 | offset 100 | offset 10000 |"
    table = markdown[markdown.index(header):].splitlines()
    row = table[2]
    assert row.startswith("| kernel_product | - | torch | float32 | cpu |") and not table[3]   # numpy: truth
    errors = [float(cell) for cell in row.strip("| ").split(" | ")[5:]]
    assert len(errors) == 3 and all(0 < e < 1e-5 for e in errors)


def test_rerun_reproduces_a_moved_point(tmp_path, capsys):
    result = _sweep(tmp_path / "a", [5e2])
    rows = load_sweeps(tmp_path / "a")
    points = [pt for group in rr.plan(rows, result.run_id) for pt in group.points]
    assert {(pt.backend, pt.offset, pt.scale) for pt in points} == {("numpy", 500.0, None),
                                                                    ("torch", 500.0, None)}
    assert main(["rerun", str(tmp_path / "a"), "--out", str(tmp_path / "b"), "--executor", "inline",
                 "--no-progress"]) == 0
    assert "inputs: 2 points with matching input hashes" in capsys.readouterr().out
    again = load_sweeps(tmp_path / "b").set_index("key").sort_index()
    assert again["offset"].tolist() == [500.0, 500.0]
    assert again["value"].tolist() == rows.set_index("key").sort_index()["value"].tolist()


def test_cuda_host_execution_is_labelled_in_rows_and_tables(monkeypatch):
    from kpbench.backends.cuda.backend import CudaBackend
    from kpbench.results.format import backend_label

    monkeypatch.setenv("KPBENCH_CUDA_HOST", "1")
    assert CudaBackend().settings() == {"execution": "host execution: correctness only (KPBENCH_CUDA_HOST=1)"}
    monkeypatch.delenv("KPBENCH_CUDA_HOST")
    assert CudaBackend().settings() == {"execution": "gpu"}
    assert backend_label("cuda", "cpu") == "cuda (host execution)"
    assert backend_label("cuda", "cuda") == "cuda" and backend_label("torch", "cpu") == "torch"
