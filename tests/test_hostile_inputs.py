"""Stored strings and config files are data: build flags from a row, the environment or an
interleave variant reach a compiler (through a shell) only when they are plain compiler flags;
a preset says what it changes."""
from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kpbench.backends.cxxflags import bad_token, check_cxxflags
from kpbench.errors import BackendUnavailable, KPBenchError
from kpbench.results.store import SWEEPS, ResultStore
from kpbench.bench.plan import SweepSpec
from kpbench.bench.settings import Settings
from kpbench.bench.sweep import run_sweep
from kpbench.cli.main import main

PLAIN_FLAGS = ["-O3", "-march=native -ffast-math", "-O2 -mtune=skylake -mno-avx512f",
               "-DNAME=VALUE -UOTHER", "-ffp-contract=fast -funroll-loops", "-std=c++17 -g -Wall", ""]
# (payload, the token the refusal names): shell syntax, and flags dangerous without a shell
# (load a plugin, run another program, read flags from a file, write elsewhere)
PAYLOADS = [("-O3 $(touch {mark})", "$(touch"), ("-O3; touch {mark}", "-O3;"),
            ("-O3 `touch {mark}`", "`touch"), ("-O3\ntouch {mark}", "-O3\ntouch"),
            ("-fplugin=/tmp/x.so", "-fplugin=/tmp/x.so"), ("-fplugin=x.so", "-fplugin=x.so"),
            ("-B/tmp", "-B/tmp"), ("@file", "@file"), ("-wrapper gdb", "-wrapper"),
            ("-specs=x", "-specs=x"), ("-O3 -o {mark}", "-o"), ("-Wl,-rpath,/tmp", "-Wl,-rpath,/tmp"),
            ("-I/tmp", "-I/tmp"), ("-fdump-tree-all", "-fdump-tree-all"), ("-DX=$(id)", "-DX=$(id)")]


@pytest.mark.parametrize("flags", PLAIN_FLAGS)
def test_plain_compiler_flags_are_accepted(flags):
    assert check_cxxflags(flags, "test") == flags


@pytest.mark.parametrize("payload, token", PAYLOADS)
def test_everything_else_is_refused_naming_the_token(payload, token):
    flags = payload.format(mark="MARK")
    assert bad_token(flags) == token
    with pytest.raises(KPBenchError, match="here: .* is not an allowed compiler flag"):
        check_cxxflags(flags, "here")


# -- rerun: the row's flags never reach a compiler ---------------------------------------
@pytest.fixture(scope="module")
def one_point_store(tmp_path_factory):
    """A store with one measured accuracy point (numpy kernel_product)."""
    out = tmp_path_factory.mktemp("one")
    spec = SweepSpec(kind="accuracy", ops=["kernel_product"], backends=["numpy"], N=[20],
                     dtype=["float64"])
    assert run_sweep(spec, Settings(executor="inline", out=str(out), progress=False,
                                    threads=1, warmup=0, timeout_s=120.0)).counts == {"ok": 1}
    return out


def keops_row_store(src, dst, cxxflags: str):
    """``src``'s row made a KeOps point (its key recomputed) whose stored flags are ``cxxflags``:
    rerunning it as kpbench did before would compile a KeOps formula with them."""
    from kpbench.bench.rerun import point_from_row

    rows = pa.concat_tables([pq.read_table(p) for p in ResultStore(src).parts(SWEEPS)]).to_pylist()
    for row in rows:
        point = dataclasses.replace(point_from_row(row, row["sweep"]), backend="keops", dtype="float32")
        row.update(backend="keops", dtype="float32", cxxflags=cxxflags, key=point.key(row["sweep"]))
    ResultStore(dst).append(SWEEPS, rows)
    return dst, rows[0]["key"]


@pytest.mark.parametrize("payload, token", PAYLOADS)
def test_rerun_refuses_stored_flags_that_are_not_plain_and_runs_nothing(
        one_point_store, tmp_path, capsys, payload, token):
    mark = tmp_path / "MARK"
    store, key = keops_row_store(one_point_store, tmp_path / "old", payload.format(mark=mark))
    new = tmp_path / "new"
    assert main(["rerun", str(store), "--out", str(new), "--executor", "inline", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"row {key}, column 'cxxflags': {token.format(mark=mark)!r} is not an allowed compiler flag" in err
    assert not mark.exists() and not new.exists()          # nothing compiled, no row measured
    assert main(["rerun", str(store), "--dry-run"]) == 2    # not even listed as rerunnable


# -- the user's own environment, and interleave variants -----------------------------------
def test_keops_is_unavailable_while_cxxflags_are_not_plain(monkeypatch):
    pytest.importorskip("pykeops")
    from keopscore.config import config

    from kpbench.backends import get_backend
    from kpbench.backends.keops import KeOpsBackend, build_flags

    keops = KeOpsBackend()
    monkeypatch.setenv("CXXFLAGS", "-O3 $(touch /tmp/kpbench-never)")
    ok, why = keops.available()
    assert not ok and "the environment variable CXXFLAGS: '$(touch' is not an allowed" in why
    with pytest.raises(KPBenchError, match="CXXFLAGS"):
        build_flags()
    with pytest.raises(BackendUnavailable, match=r"\$\(touch"):
        get_backend("keops")
    # keopscore compiles with the copy it read when first imported: that one is checked too ...
    monkeypatch.setenv("CXXFLAGS", "-O3")
    monkeypatch.setattr(config, "cpp_env_flags", "-O3 -B/tmp")
    ok, why = keops.available()
    assert not ok and "as KeOps read it when first imported: '-B/tmp'" in why
    # ... and must be the variable the rows record
    monkeypatch.setattr(config, "cpp_env_flags", "-O2")
    ok, why = keops.available()
    assert not ok and "KeOps compiles with CXXFLAGS='-O2' (read when pykeops was first imported) " \
                      "but the environment now says '-O3'" in why


def test_interleave_variants_take_only_plain_flags_and_variable_names():
    from kpbench.bench.interleave import parse_variant

    assert parse_variant("fast=:CXXFLAGS=-O3 -ffast-math").env == {"CXXFLAGS": "-O3 -ffast-math"}
    with pytest.raises(KPBenchError, match=r"CXXFLAGS: '\$\(touch' is not an allowed"):
        parse_variant("evil=:CXXFLAGS=-O3 $(touch /tmp/kpbench-never)")
    for text in ("evil=:BAD-NAME=1", "evil=:X\0Y=1", "evil=:X=a\0b"):
        with pytest.raises(KPBenchError, match="is not VAR=VALUE"):
            parse_variant(text)


# -- presets say what they change ----------------------------------------------------------
PRESET = """
[[sweep]]
kind = "accuracy"
ops = "kernel_product"
backends = "numpy"
N = "20"
dtype = "float64"
warmup = 0

[run]
executor = "inline"
address = "ray://127.0.0.1:1"
out = "{out}"
"""


def test_a_preset_says_what_it_changes_and_the_command_line_wins(tmp_path, capsys):
    preset = tmp_path / "kernel_speed.toml"
    preset.write_text(PRESET.format(out=tmp_path / "from_preset"))
    assert main(["sweep", "--config", str(preset), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        "preset kernel_speed.toml: [run] executor = 'inline'",
        "preset kernel_speed.toml: connecting to the Ray cluster at 'ray://127.0.0.1:1' "
        "(unused by the inline executor) ([run] address; --address overrides)",
        f"preset kernel_speed.toml: writing results to {str(tmp_path / 'from_preset')!r} "
        "([run] out; --out overrides)"]
    mine = tmp_path / "mine"
    assert main(["sweep", "--config", str(preset), "--out", str(mine), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert (f"preset kernel_speed.toml: [run] out = {str(tmp_path / 'from_preset')!r} "
            f"overridden by --out {str(mine)!r}") in printed
    assert len(ResultStore(mine).read(SWEEPS)) == 1 and not (tmp_path / "from_preset").exists()


def test_a_preset_value_is_printed_as_data(tmp_path, capsys):
    preset = tmp_path / "p.toml"
    preset.write_text(PRESET.replace('out = "{out}"', 'out = "x\\u001b[2Jy"'))
    assert main(["sweep", "--config", str(preset), "--dry-run"]) == 0
    assert "writing results to 'x\\x1b[2Jy'" in capsys.readouterr().out
