"""The data axis (kpbench.datasets.sources): named sources, shipped real data, the user's
files (.npy .npz .csv .ply .xyz), sampling, bad files, the axis in specs and keys, the
row's record of the data, rerun on a changed file, the report's view across data sets."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from kpbench.datasets import sources
from kpbench.errors import KPBenchError
from kpbench.bench import ops
from kpbench.bench.inputs import make_data
from kpbench.bench.parse import sweep_from_dict
from kpbench.bench.plan import Point, SweepSpec, expand


def write_ply(path, points=None, with_vertices=True):
    from plyfile import PlyData, PlyElement

    if with_vertices:
        rows = np.array([tuple(p) for p in points], dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
        element = PlyElement.describe(rows, "vertex")
    else:
        element = PlyElement.describe(np.array([(1,)], dtype=[("v", "i4")]), "face_count")
    PlyData([element], text=True).write(str(path))
    return path


def cloud(n=60, d=3, seed=0):
    return np.random.default_rng(seed).random((n, d))


# -- sources -----------------------------------------------------------------------------
def test_default_source_is_the_historical_pair_bit_for_bit():
    from kpbench.datasets import gaussian_blobs, uniform_cube

    point = Point("sinkhorn", "torch", "sinkhorn", 40, 30, 3, 0.05, 2, None, "float32", "cpu", 4, None, 0.5)
    data = make_data(point)
    assert np.array_equal(data.x, uniform_cube(40, 3, seed=4))
    assert np.array_equal(data.y, gaussian_blobs(30, 3, seed=5))


@pytest.mark.parametrize("name, D", [("cube", 4), ("blobs", 2), ("sphere", 5), ("swiss_roll", 3),
                                     ("intervals_1d", 1), ("image_2d", 2), ("digits", 64),
                                     ("digits_raw", 64), ("breast_cancer", 30), ("breast_cancer_raw", 30)])
def test_each_named_source_gives_seeded_clouds_of_its_shape(name, D):
    clouds = sources.make_clouds(name, 50, 40, D, seed=3)
    assert clouds.x.shape == (50, D) and clouds.y.shape == (40, D)
    assert np.isfinite(clouds.x).all() and np.isfinite(clouds.y).all()
    again = sources.make_clouds(name, 50, 40, D, seed=3)
    assert np.array_equal(clouds.x, again.x) and np.array_equal(clouds.y, again.y)
    if name == "sphere":
        assert np.allclose(np.linalg.norm(clouds.x, axis=1), 1.0)


def test_real_data_split_by_class_standardised_or_raw():
    std = sources.make_clouds("digits", 900, 896, 64, seed=0)
    raw = sources.make_clouds("digits_raw", 900, 896, 64, seed=0)
    assert raw.x.min() >= 0 and raw.x.max() <= 16 and np.array_equal(raw.x, np.round(raw.x))
    assert abs(np.vstack([std.x, std.y]).mean()) < 0.05   # about the standardised mean
    assert not std.replaced and not raw.replaced
    # 212 malignant: N = 300 cannot be drawn without replacement, and the clouds say so
    assert sources.make_clouds("breast_cancer", 300, 100, 30, seed=0).replaced


def test_a_source_with_a_fixed_D_refuses_another():
    with pytest.raises(KPBenchError, match="'digits' has D=64; the point asks D=3"):
        sources.make_clouds("digits", 10, 10, 3, seed=0)


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(KPBenchError, match="unknown data source 'moon'.*cube.*file:PATH"):
        sources.get_source("moon")


def test_a_plugin_registers_a_dataset():
    source = sources.DatasetSource("twin_points", lambda N, M, D, s: sources.Clouds(
        np.zeros((N, D)), np.ones((M, D))), None, "test")
    sources.register_dataset(source)
    try:
        spec = SweepSpec(ops=["kernel_product"], backends=["torch"], N=[5], data=["twin_points"])
        (point,) = expand(spec)
        assert point.data == "twin_points" and make_data(point).y.sum() == 5 * 3
    finally:
        sources._SOURCES.pop("twin_points")
    with pytest.raises(KPBenchError, match="without ':'"):
        sources.register_dataset(dataclasses.replace(source, name="file:x"))


# -- files -------------------------------------------------------------------------------
def test_each_file_type_reads_the_same_points(tmp_path):
    points = np.round(cloud(40), 4).astype(np.float32).astype(np.float64)
    np.save(tmp_path / "c.npy", points)
    np.savez(tmp_path / "c.npz", x=points)
    np.savetxt(tmp_path / "c.csv", points, delimiter=",", header="x,y,z", comments="")
    np.savetxt(tmp_path / "c.xyz", points)
    write_ply(tmp_path / "c.ply", points)
    for suffix in ("npy", "npz", "csv", "xyz", "ply"):
        content = sources.read_file(str(tmp_path / f"c.{suffix}"))
        assert np.allclose(content.x, points, atol=1e-6), suffix
        assert content.file_size == (tmp_path / f"c.{suffix}").stat().st_size


def test_one_cloud_gives_disjoint_samples_without_replacement(tmp_path):
    points = cloud(100)
    np.save(tmp_path / "c.npy", points)
    name = f"file:{tmp_path / 'c.npy'}"
    clouds = sources.make_clouds(name, 60, 40, 3, seed=1)
    rows = {tuple(r) for r in np.vstack([clouds.x, clouds.y])}
    assert len(rows) == 100 and not clouds.replaced          # all 100 points, each once
    assert clouds.file_hash == sources.file_hash(tmp_path / "c.npy")[0]
    bigger = sources.make_clouds(name, 150, 40, 3, seed=1)
    assert bigger.replaced and bigger.x.shape == (150, 3)      # too few: with replacement, said


def test_npz_pair_with_weights_feeds_sinkhorn(tmp_path):
    x, y = cloud(30, 2, 1), cloud(20, 2, 2)
    a = np.arange(1.0, 31.0)
    np.savez(tmp_path / "w.npz", x=x, y=y, a=a)
    clouds = sources.make_clouds(f"file:{tmp_path / 'w.npz'}", 30, 20, 2, seed=0)
    assert np.allclose(clouds.a.sum(), 1) and clouds.b is None
    assert np.allclose(np.sort(clouds.a), np.sort(a / a.sum()))
    with pytest.raises(KPBenchError, match=r"too few points \(30\) for 40 without replacement"):
        sources.make_clouds(f"file:{tmp_path / 'w.npz'}", 40, 20, 2, seed=0)


BAD_FILES = {
    "missing": (lambda p: None, "no such file"),
    "empty": (lambda p: p.write_bytes(b""), "the file is empty"),
    "unreadable": (lambda p: p.write_bytes(b"\x93NUMPY garbage"), "unreadable"),
    "nan": (lambda p: np.save(p, np.array([[0.0, 1.0, np.nan]] * 5)), "NaN/inf value"),
    "inf": (lambda p: np.save(p, np.array([[0.0, np.inf, 2.0]] * 5)), "NaN/inf value"),
    "shape": (lambda p: np.save(p, np.zeros((4, 3, 2))), r"wrong shape \(4, 3, 2\)"),
    "no points": (lambda p: np.save(p, np.zeros((0, 3))), r"empty \(shape \(0, 3\)\)"),
    "strings": (lambda p: np.save(p, np.array([["a", "b"]])), "wrong type"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_npy_files_are_errors_naming_the_file(tmp_path, case):
    path = tmp_path / f"bad_{case.replace(' ', '_')}.npy"
    make, message = BAD_FILES[case]
    make(path)
    with pytest.raises(KPBenchError, match=message) as info:
        sources.make_clouds(f"file:{path}", 3, 3, 3, seed=0)
    assert str(path) in str(info.value)


def test_bad_files_of_the_other_types(tmp_path):
    write_ply(tmp_path / "faces.ply", with_vertices=False)
    (tmp_path / "text.ply").write_text("not a ply\n")
    (tmp_path / "words.csv").write_text("a,b\nc,d\n")
    (tmp_path / "blank.xyz").write_text("# only a comment\n")
    np.savez(tmp_path / "extra.npz", x=cloud(), z=cloud())
    np.savez(tmp_path / "noxy.npz", y=cloud())
    np.savez(tmp_path / "mixed.npz", x=cloud(10, 3), y=cloud(10, 2))
    (tmp_path / "c.txt").write_text("1 2 3\n")
    (tmp_path / "dir.npy").mkdir()
    os.mkfifo(tmp_path / "pipe.xyz")   # would block a reader: refused unread
    for name, message in (("faces.ply", "a .ply without vertices"), ("text.ply", "not a valid PLY"),
                          ("words.csv", "unreadable"), ("blank.xyz", "no points"),
                          ("extra.npz", "unknown array"), ("noxy.npz", "x: missing"),
                          ("mixed.npz", "x has D=3 but y has D=2"), ("c.txt", "unknown type '.txt'"),
                          ("dir.npy", "not a regular file"), ("pipe.xyz", "not a regular file")):
        with pytest.raises(KPBenchError, match=message) as info:
            sources.read_file(str(tmp_path / name))
        assert name in str(info.value)


def test_npy_with_a_pickled_object_is_refused_not_loaded(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(KPBenchError, match="unreadable.*pickle"):
        sources.read_file(str(tmp_path / "obj.npy"))


# -- the axis -----------------------------------------------------------------------------
def test_a_point_without_data_keeps_its_old_key():
    point = Point("sinkhorn", "torch", "sinkhorn", 100, 100, 3, 0.05, 2, None, "float32", "cpu", 0, None, 0.5)
    # the key of this point before the data axis existed (kpbench main 3e4e9dc)
    assert point.key("speed") == "5e74a3fe32b2f7483ca4"
    assert dataclasses.replace(point, data="cube").key("speed") != point.key("speed")
    (expanded,) = expand(SweepSpec(ops=["sinkhorn"], backends=["torch"], N=[100], iters=[None],
                                   data=[None]))
    assert expanded.data is None and expanded.key("speed") == point.key("speed")


def test_data_axis_from_toml_and_flags_and_the_D_a_source_fixes(tmp_path):
    np.save(tmp_path / "c.npy", cloud(50, 5))
    spec, measured = sweep_from_dict({"ops": ["kernel_product"], "backends": ["torch"], "N": [10],
                                      "data": ["default", "digits", f"file:{tmp_path / 'c.npy'}", "cube"]})
    dims = {(p.data or "default").split("/")[-1]: p.D for p in expand(spec)}
    assert dims == {"default": 3, "digits": 64, "c.npy": 5, "cube": 3}
    assert spec.data[0] is None                        # 'default' is the keyless default pair
    with pytest.raises(KPBenchError, match=r"has D=5 \(fixed by the data\); D = \[3\] disagrees"):
        sweep_from_dict({"ops": "kernel_product", "N": "10", "D": "3",
                        "data": f"file:{tmp_path / 'c.npy'}"})
    with pytest.raises(KPBenchError, match="--data 'moon': unknown data source"):
        sweep_from_dict({"data": "moon"}, labels={"data": "--data"})


def test_a_relative_file_path_is_made_absolute(tmp_path, monkeypatch):
    np.save(tmp_path / "c.npy", cloud(20))
    monkeypatch.chdir(tmp_path)
    spec, measured = sweep_from_dict({"ops": "kernel_product", "backends": "torch", "N": "10", "data": "file:c.npy"})
    assert spec.data == [f"file:{tmp_path / 'c.npy'}"]


# -- sweeps, rows, rerun ---------------------------------------------------------------------
def run(spec_values, out):
    from kpbench.bench.settings import Settings, split_measure
    from kpbench.bench.sweep import run_sweep

    base = dict(kind="accuracy", ops=["sinkhorn"], backends=["torch"], dtype=["float32"],
                iters=[5], blur=[0.5], warmup=0, timeout_s=120.0)
    axes, measured = split_measure({**base, **spec_values})
    return run_sweep(SweepSpec(**axes),
                     Settings(executor="inline", out=str(out), progress=False, threads=1, **measured))


def test_sweep_on_user_files_records_the_data_then_rerun_refuses_a_changed_file(tmp_path, capsys):
    from kpbench.results.selection import load_sweeps
    from kpbench.cli.main import main

    ply = write_ply(tmp_path / "cloud.ply", cloud(40, 3, 7))
    npy = tmp_path / "cloud.npy"
    np.save(npy, cloud(15, 3, 8))   # fewer than N: sampled with replacement
    out = tmp_path / "store"
    result = run({"N": [20], "data": [f"file:{ply}", f"file:{npy}", f"file:{tmp_path / 'gone.npy'}"]}, out)
    assert result.counts == {"ok": 2, "error": 1}      # the missing file: one error row, the sweep went on
    rows = load_sweeps(out).set_index("data")
    assert rows.loc[f"file:{ply}", "data_hash"] == sources.file_hash(ply)[0]
    assert rows.loc[f"file:{npy}", "data_size_bytes"] == npy.stat().st_size
    assert not rows.loc[f"file:{ply}", "data_replaced"] and rows.loc[f"file:{npy}", "data_replaced"]
    assert "gone.npy': no such file" in rows.loc[f"file:{tmp_path / 'gone.npy'}", "error"]

    old = sources.file_hash(npy)[0]
    np.save(npy, cloud(15, 3, 9))
    assert main(["rerun", str(out), "--out", str(tmp_path / "again"), "--no-progress"]) == 2
    message = capsys.readouterr().err
    assert f"data file {str(npy)!r} changed: stored hash {old}, now {sources.file_hash(npy)[0]}" in message
    npy.unlink()
    assert main(["rerun", str(out), "--out", str(tmp_path / "again"), "--no-progress"]) == 2
    assert f"data file {str(npy)!r}: no such file (stored hash {old})" in capsys.readouterr().err


def test_a_bad_file_in_a_sweep_is_an_error_row_naming_it(tmp_path):
    from kpbench.results.selection import load_sweeps

    np.save(tmp_path / "nan.npy", np.array([[np.nan, 0.0, 0.0]] * 30))
    result = run({"N": [10], "data": [f"file:{tmp_path / 'nan.npy'}", "cube"]}, tmp_path / "s")
    assert result.counts == {"ok": 1, "error": 1}
    rows = load_sweeps(tmp_path / "s")
    error = rows.loc[rows["status"] == "error", "error"].iloc[0]
    assert "KPBenchError: data file" in error and "nan.npy" in error and "NaN/inf" in error


def test_weights_of_a_file_reach_the_sinkhorn_op_and_its_truth(tmp_path):
    x, y = cloud(12, 2, 1), cloud(12, 2, 2)
    np.savez(tmp_path / "w.npz", x=x, y=y, a=np.linspace(1, 3, 12), b=np.linspace(3, 1, 12))
    point = Point("sinkhorn", "numpy", "sinkhorn", 12, 12, 2, 0.1, 2, None, "float64", "cpu", 0,
                  None, None, data=f"file:{tmp_path / 'w.npz'}")
    data = make_data(point)
    weighted = ops.prepare(point, data)
    value = weighted.summarize(weighted.call()).value
    uniform = ops.prepare(point, dataclasses.replace(data))   # a copy without the weights
    assert abs(value - uniform.summarize(uniform.call()).value) > 1e-3 * abs(value)


# -- the report --------------------------------------------------------------------------------
def test_report_view_across_data_sets():
    import pandas as pd

    from kpbench.results import datasets_view
    from kpbench.results.schema import COLUMNS

    def row(data, backend, err, iterations, time):
        r = {c: None for c in COLUMNS}
        r.update(op="sinkhorn", backend=backend, kernel="sinkhorn", N=100, M=100, D=3, blur=0.05, p=2,
                 dtype="float32", device="cpu", seed=0, scaling=0.5, tol=1e-3, data=data, status="ok",
                 sweep="accuracy", rel_err=err, iterations=iterations, time_median_s=time,
                 key=f"{data}{backend}")
        return r

    frame = pd.DataFrame([row(None, "torch", 1e-6, 20, 0.01), row("sphere", "torch", 4e-4, 80, 0.02),
                          row("<b>x</b>", "torch", 2e-6, 30, 0.01)])
    assert datasets_view.pick_op(frame) == "sinkhorn"
    table = datasets_view.across_data(frame, "sinkhorn")
    assert [r[0] for r in table] == ["<b>x</b>", "default", "sphere"]
    (line,) = datasets_view.worst_lines(frame, "sinkhorn")
    assert "error worst on sphere (4.0e-04; 400x the best, default 1.0e-06)" in line
    assert "iterations worst on sphere (80; 4x the best, default 20)" in line
    assert len(datasets_view.filter_data(frame, ["default", "sphere"])) == 2
    assert datasets_view.blocks(frame[frame["data"].isna()]) == []   # one source: no view


def test_a_hostile_data_name_reaches_the_page_escaped(tmp_path):
    import pandas as pd

    from kpbench.results import datasets_view
    from kpbench.results.document import Document, render_html, render_markdown
    from kpbench.results.schema import COLUMNS

    rows = []
    for data in (None, "file:/tmp/<script>alert(1)</script>.npy"):
        r = {c: None for c in COLUMNS}
        r.update(op="sinkhorn", backend="torch", kernel="sinkhorn", N=10, M=10, D=3, blur=0.05, p=2,
                 dtype="float32", device="cpu", seed=0, data=data, status="ok", sweep="accuracy",
                 rel_err=1e-6, key=str(data))
        rows.append(r)
    doc = Document("t", datasets_view.blocks(pd.DataFrame(rows)))
    assert "<script>alert" not in render_html(doc) and "&lt;script&gt;alert" in render_html(doc)
    assert "<script>" not in render_markdown(doc, tmp_path)


def test_the_page_filters_by_data_source_the_default_pair_included():
    import pandas as pd

    from kpbench.results import interactive
    from kpbench.results.schema import COLUMNS

    rows = [{**{c: None for c in COLUMNS}, "op": "kernel_product", "backend": "torch", "kernel": "gaussian",
             "N": 10, "M": 10, "D": 3, "blur": 0.1, "dtype": "float32", "device": "cpu", "seed": 0,
             "data": data, "status": "ok", "time_median_s": 0.1, "key": str(data)} for data in (None, "cube")]
    payload = interactive.payload_of(pd.DataFrame(rows))
    assert "data" in payload["filters"]
    assert sorted(r["data"] for r in payload["rows"]) == ["cube", "default"]
