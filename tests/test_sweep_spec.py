"""Sweep specs: ranges, the cartesian product and its collapsing, keys, config files, CLI flags."""
from __future__ import annotations

import argparse

import pytest

from kpbench.errors import KPBenchError
from kpbench.bench.parse import parse_bytes, parse_floats, parse_ints, parse_sizes, sweep_from_dict
from kpbench.bench.plan import Point, SweepSpec, count_points, expand, point_key
from kpbench.cli import sweep as sweep_cli


@pytest.mark.parametrize("text, expected", [
    ("1e2..1e5", [100, 1000, 10000, 100000]),
    ("1e2..1e4:5", [100, 316, 1000, 3162, 10000]),
    ("1e2..1e5:7", [100, 316, 1000, 3162, 10000, 31623, 100000]),
    ("100,300,1e3", [100, 300, 1000]),
    ("1e2..1e3,5000", [100, 1000, 5000]),
    ("7..7", [7]),
    ([100, "1e3"], [100, 1000]),
])
def test_parse_sizes(text, expected):
    assert parse_sizes(text) == expected


@pytest.mark.parametrize("text", ["0", "1e3..1e2", "abc", "1.5", "1e2..1e3:0", "-5"])
def test_parse_sizes_rejects_bad_input(text):
    with pytest.raises(KPBenchError):
        parse_sizes(text)


def test_parse_iters_and_bytes():
    from kpbench.bench.parse import _PARSERS

    assert _PARSERS["iters"]("10,conv") == [10, None] == _PARSERS["iters"]("10, scaling")
    with pytest.raises(KPBenchError):
        parse_ints("conv")
    # the schedule's words mean "none" for iters only: no budget, no reach is never "conv"
    for word in ("conv", "scaling", "converge"):
        with pytest.raises(KPBenchError):
            parse_bytes(word)
        with pytest.raises(KPBenchError):
            parse_floats(word, allow_none=True)
    assert parse_bytes("2GiB") == 2 * 1024**3
    assert parse_bytes("512MB") == 512 * 10**6
    assert parse_bytes("1e9") == 10**9 and parse_bytes("none") is None
    with pytest.raises(KPBenchError):
        parse_bytes("lots")


def test_expand_collapses_the_axes_an_op_does_not_use():
    spec = SweepSpec(ops=["kernel_product", "softmin", "sinkhorn"], backends=["torch"],
                     kernels=["gaussian", "energy"], N=[100, 1000], p=[1, 2],
                     reach=[None, 1.0], iters=[10, None], scaling=[0.5, 0.9])
    points = expand(spec)
    kp = [pt for pt in points if pt.op == "kernel_product"]
    assert len(kp) == 2 * 2   # kernels x N; no p, reach, iters or scaling
    assert {(pt.p, pt.reach, pt.iters, pt.scaling) for pt in kp} == {(None, None, None, None)}
    softmin = [pt for pt in points if pt.op == "softmin"]
    assert {pt.kernel for pt in softmin} == {"softmin"} and len(softmin) == 2 * 2   # p x N
    sink = [pt for pt in points if pt.op == "sinkhorn"]
    assert {pt.kernel for pt in sink} == {"sinkhorn"}
    # per (N, p, reach): iters=10 (no scaling) + convergence at 2 scalings = 3
    assert len(sink) == 2 * 2 * 2 * 3
    assert all(pt.scaling is None for pt in sink if pt.iters == 10)
    assert all(pt.M == pt.N for pt in points)
    assert len(set(points)) == len(points)


def test_count_points_is_the_number_of_points_expand_builds():
    specs = [SweepSpec(ops=["kernel_product", "softmin", "sinkhorn", "flow_step", "sinkhorn"],
                       backends=["numpy", "torch", "keops"], kernels=["gaussian", "energy", "gaussian"],
                       losses=["sinkhorn", "mmd", "hausdorff"], N=[100, 1000, 100], M=[5, 7],
                       p=[1, 2], reach=[None, 1.0], iters=[10, None, 10], scaling=[0.5, 0.9],
                       tol=[None, 1e-6], dtype=["float32", "float64"], seed=[0, 1])]
    for path in sorted(sweep_cli.PRESETS_DIR.glob("*.toml")):
        specs += [spec for spec, _ in sweep_cli.build(_parse(["--config", path.stem]))[0]]
    assert [count_points(spec) for spec in specs] == [len(expand(spec)) for spec in specs]


def test_the_numpy_reference_is_always_float64():
    points = expand(SweepSpec(backends=["numpy", "torch"], N=[10], dtype=["float32"]))
    assert {(pt.backend, pt.dtype) for pt in points} == {("numpy", "float64"), ("torch", "float32")}
    points = expand(SweepSpec(backends=["numpy", "keops"], N=[10], dtype=["float32", "float64"]))
    assert len(points) == 3


def test_explicit_M_gives_the_product():
    points = expand(SweepSpec(backends=["numpy"], N=[10, 20], M=[5, 7]))
    assert {(pt.N, pt.M) for pt in points} == {(10, 5), (10, 7), (20, 5), (20, 7)}


def test_keys_are_stable_and_depend_on_kind_and_fields():
    point = Point(op="kernel_product", backend="torch", kernel="gaussian", N=1000, M=1000, D=3,
                  blur=0.05, p=None, reach=None, dtype="float32", device="cpu", seed=0,
                  iters=None, scaling=None)
    # pinned: changing how keys are computed would break resuming existing result stores
    assert point.key("speed") == "6008ef0db25691a84286"
    assert point.key("speed") == point_key("speed", point.as_row())
    assert point.key("memory") != point.key("speed")
    other = Point(**{**point.as_row(), "blur": 0.1})
    assert other.key("speed") != point.key("speed")


def test_the_tolerance_axis_goes_with_the_eps_scaling_schedule_and_keeps_older_keys():
    spec, measured = sweep_from_dict({"ops": "sinkhorn,softmin", "backends": "torch", "N": "100",
                                      "iters": "10,scaling", "scaling": "0.5,0.9", "tol": "none,1e-6"})
    sink = {(pt.iters, pt.scaling, pt.tol) for pt in expand(spec) if pt.op == "sinkhorn"}
    assert sink == {(10, None, None), (None, 0.5, None), (None, 0.5, 1e-6), (None, 0.9, None),
                    (None, 0.9, 1e-6)}
    assert {pt.tol for pt in expand(spec) if pt.op == "softmin"} == {None}
    point = Point(op="sinkhorn", backend="torch", kernel="sinkhorn", N=100, M=100, D=3,
                  blur=0.05, p=2, reach=None, dtype="float32", device="cpu", seed=0,
                  iters=None, scaling=0.5)
    # pinned from before the tol column existed: rows stored then keep resuming
    assert point.key("speed") == "5e74a3fe32b2f7483ca4"
    with_tol = Point(**{**point.as_row(), "tol": 1e-6})
    assert with_tol.key("speed") not in (point.key("speed"),
                                         Point(**{**point.as_row(), "tol": 1e-8}).key("speed"))
    with pytest.raises(KPBenchError, match="tol must be"):
        sweep_from_dict({"ops": "sinkhorn", "tol": "0"})


@pytest.mark.parametrize("values, message", [
    ({"backends": "numpy,tensorflow"}, "unknown backend 'tensorflow'"),
    ({"ops": "kernel_prod"}, "unknown op"),
    ({"dtype": "float16"}, "unknown dtype"),
    ({"device": "tpu"}, "unknown device"),
    ({"p": "3"}, "unknown p"),
    ({"blur": "-0.1"}, "blur must be"),
    ({"scaling": "1.5"}, "scaling must be in"),
    ({"repeats": 0}, "repeats"),
    ({"colour": "red"}, "unknown key"),
])
def test_bad_specs_are_refused_with_a_clear_message(values, message):
    with pytest.raises(KPBenchError, match=message):
        sweep_from_dict(values)


def _parse(argv):
    parser = argparse.ArgumentParser()
    sweep_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_flags_build_the_spec_and_run_options():
    sweeps, run = sweep_cli.build(_parse([
        "memory", "--backends", "numpy,torch", "--N", "1e2..1e4", "--M", "same", "--D", "3",
        "--blur", "0.05,0.1", "--dtype", "float32", "--iters", "5,conv", "--executor", "inline",
        "--no-resume", "--memory-budget", "1GiB", "--out", "elsewhere"]))
    ((spec, settings),) = sweeps
    assert spec.kind == "memory" and spec.N == [100, 1000, 10000] and spec.blur == [0.05, 0.1]
    assert spec.iters == [5, None] and settings.memory_budget == 1024**3
    assert run.executor == "inline" and run.resume is False and run.out == "elsewhere"


def test_every_preset_loads_and_expands():
    presets = sorted(sweep_cli.PRESETS_DIR.glob("*.toml"))
    assert {"demo", "kernel_speed", "sinkhorn_speed", "memory", "accuracy", "gpu"} <= {p.stem for p in presets}
    for path in presets:
        sweeps, _ = sweep_cli.build(_parse(["--config", path.stem]))
        assert all(expand(spec) for spec, _ in sweeps), path


def test_config_file_with_run_table_and_flag_override(tmp_path):
    config = tmp_path / "suite.toml"
    config.write_text(
        '[run]\nexecutor = "inline"\n\n'
        '[[sweep]]\nkind = "speed"\nbackends = ["torch"]\nN = "1e2..1e3"\n\n'
        '[[sweep]]\nkind = "accuracy"\nops = ["sinkhorn"]\nbackends = ["keops"]\nN = [50]\n')
    sweeps, run = sweep_cli.build(_parse(["--config", str(config), "--dtype", "float64"]))
    specs = [spec for spec, _ in sweeps]
    assert [s.kind for s in specs] == ["speed", "accuracy"] and run.executor == "inline"
    assert specs[0].N == [100, 1000] and all(s.dtype == ["float64"] for s in specs)
    config.write_text("[sweeps]\nN = 1\n")
    with pytest.raises(KPBenchError, match="unknown table"):
        sweep_cli.build(_parse(["--config", str(config)]))
    with pytest.raises(KPBenchError, match="no config file"):
        sweep_cli.build(_parse(["--config", "no_such_preset"]))


def test_dry_run_lists_points_without_running(capsys):
    args = _parse(["speed", "--backends", "torch", "--N", "10,20", "--dry-run"])
    assert sweep_cli.run(args) == 0
    out = capsys.readouterr().out
    assert "# sweep speed: 2 points" in out and "N=20" in out


def _pinned_point(op: str, **fields) -> Point:
    base = dict(op=op, backend="torch", kernel=None, N=100, M=100, D=3, blur=0.05, p=None, reach=None,
                dtype="float32", device="cpu", seed=0, iters=None, scaling=None)
    return Point(**{**base, **fields})


@pytest.mark.parametrize("point, keys", [
    (_pinned_point("kernel_product", kernel="gaussian"),
     ("61bccab964cc711e351a", "9bf913603a2d083627f5", "99fcfc496a9d326df0f3")),
    (_pinned_point("sinkhorn", kernel="sinkhorn", p=2, scaling=0.5, tol=1e-3),
     ("1ad5d28c8c4d9065a105", "a976cf49936bb7fe431b", "61ef20badccc040b3b1d")),
    # the loss column: flow_step's loss moved out of kernel, its key did not
    (_pinned_point("flow_step", loss="sinkhorn", p=2, iters=10),
     ("babdaa51c45557d68381", "44dacb44e14786a1ac83", "ed1479b5d097d7052b5f")),
])
def test_point_keys_are_those_of_the_stores_written_before(point, keys):
    """Keys computed by main cf2321a (kernel_product, sinkhorn, and flow_step with kernel="sinkhorn"):
    stored rows keep resuming."""
    assert tuple(point.key(kind) for kind in ("speed", "memory", "accuracy")) == keys


def test_a_flow_step_row_stored_before_the_loss_column_reads_back_with_its_loss():
    from kpbench.bench.plan import legacy_fields, point_from_fields
    from kpbench.results.format import row_config

    point = _pinned_point("flow_step", loss="mmd")
    old_row = {**legacy_fields(point), "key": point.key("speed")}   # kernel="mmd", no loss column
    assert old_row["kernel"] == "mmd" and "loss" not in old_row
    assert point_from_fields(old_row) == point and point_from_fields(point.as_row()) == point
    # the report groups old and new rows alike
    assert row_config(old_row) == row_config(point.as_row())
    assert (row_config(old_row)["kernel"], row_config(old_row)["loss"]) == (None, "mmd")
    # a kernel op keeps its kernel
    kp = _pinned_point("kernel_product", kernel="energy")
    assert point_from_fields(kp.as_row()) == kp and row_config(kp.as_row())["kernel"] == "energy"
