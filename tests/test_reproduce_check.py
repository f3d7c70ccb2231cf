"""``kpbench reproduce NAME --check`` against the reference values shipped in the package."""
from __future__ import annotations

import json
import pathlib
import subprocess

import pytest

import kpbench

from kpbench.errors import KPBenchError
from kpbench.cli.main import main
from kpbench.reproductions import REPRODUCTIONS
from kpbench.reproductions import check as chk


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reproduce(tmp_path, name, *flags):
    return main(["reproduce", name, "--check", "--no-figures", "--out", str(tmp_path), *flags])


def edited_reference(tmp_path, name, loss, quantity, change):
    """A copy of the shipped reference of ``name`` with one value passed through ``change``."""
    reference = json.loads(chk.reference_path(name).read_text())
    entry = next(v for v in reference["values"] if (v["loss"], v["quantity"]) == (loss, quantity))
    entry["value"] = change(entry)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(reference))
    return path


# -- the shipped references ---------------------------------------------------------------
@pytest.mark.parametrize("name", list(REPRODUCTIONS))
def test_every_reproduction_ships_references_that_say_how_they_were_made(name):
    reference = chk.load_reference(chk.reference_path(name))
    assert reference["reproduction"] == name
    made = reference["how_made"]
    assert made["command"] == f"python scripts/make_references.py {name}"
    assert len(made["git_commit"]) == 40 and "host CPU" in made["machine"]
    quantities = {v["quantity"] for v in reference["values"]}
    assert "status" in quantities
    assert quantities & {"w2_final", "distance_to_truth"}
    for value in reference["values"]:
        assert value["rtol"] >= 0 and value["reason"], value


INSTRUCTION_SET_MOVES = {"MKL AVX2", "ATen avx2", "ATen default", "NumPy no AVX-512",
                         "an AVX2 machine"}


@pytest.mark.parametrize("name", list(REPRODUCTIONS))
def test_references_measure_the_instruction_set_moves_and_say_so(name):
    """Float64 results move by ~1e-13 between AVX2 and AVX-512 kernels (MKL, ATen, NumPy):
    a tolerance that saw only threads and input noise fails on the next CI machine."""
    made = chk.load_reference(chk.reference_path(name))["how_made"]
    assert INSTRUCTION_SET_MOVES <= set(made["moves_measured"])
    assert made["instruction_sets"]["an AVX2 machine"]["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    for value in chk.load_reference(chk.reference_path(name))["values"]:
        if value["reason"].startswith(("smooth", "chaotic")):
            assert all(m in value["reason"] for m in INSTRUCTION_SET_MOVES), value


@pytest.mark.parametrize("name", list(REPRODUCTIONS))
def test_references_were_made_at_a_commit_of_this_history(name):
    commit = chk.load_reference(chk.reference_path(name))["how_made"]["git_commit"]
    root = pathlib.Path(kpbench.__file__).resolve().parents[1]   # the checkout holding the package
    if not (root / ".git").exists():
        pytest.skip("not a git checkout (an installed kpbench): no history to look the commit up in")
    shallow = subprocess.run(["git", "-C", str(root), "rev-parse", "--is-shallow-repository"],
                             capture_output=True, text=True).stdout.strip()
    if shallow == "true":
        pytest.skip("a shallow clone: the history that holds the commit was not fetched")
    ancestor = subprocess.run(["git", "-C", str(root), "merge-base", "--is-ancestor", commit, "HEAD"],
                              capture_output=True, text=True)
    assert ancestor.returncode == 0, f"{name}: made at {commit}, not in this history: {ancestor.stderr}"


def test_chaotic_1d_trajectories_get_wider_tolerances_than_smooth_ones():
    values = {(v["loss"], v["quantity"]): v
              for v in chk.load_reference(chk.reference_path("gradient-flow-1d"))["values"]}
    chaotic = values["sinkhorn_p1_blur0.01", "w2_final"]
    smooth = values["sinkhorn_p2_blur0.01", "w2_final"]
    assert chaotic["reason"].startswith("chaotic") and chaotic["rtol"] > 1e-6
    assert smooth["rtol"] < 1e-10


# -- the check ---------------------------------------------------------------------------
def test_2d_flows_match_their_references(tmp_path, capsys):
    assert reproduce(tmp_path, "gradient-flow-2d") == 0
    out = capsys.readouterr().out
    total = len(chk.load_reference(chk.reference_path("gradient-flow-2d"))["values"])
    assert f"{total} of {total} numbers match" in out and "check passed" in out


def test_1d_check_of_some_losses_chaotic_ones_included(tmp_path, capsys):
    assert reproduce(tmp_path, "gradient-flow-1d", "--losses", "energy,laplacian_blur0.1") == 0
    assert "6 of 6 numbers match" in capsys.readouterr().out


def test_model_fitting_multiplicative_sinkhorn_is_nan_at_once_as_referenced(tmp_path, capsys):
    assert reproduce(tmp_path, "model-fitting", "--losses", "sinkhorn_multiplicative") == 0
    assert "check passed" in capsys.readouterr().out


def test_a_changed_reference_fails_the_check_and_names_the_number(tmp_path, capsys):
    path = edited_reference(tmp_path, "gradient-flow-2d", "energy", "w2_final",
                            lambda v: v["value"] * (1 + 3 * v["rtol"]))
    assert reproduce(tmp_path, "gradient-flow-2d", "--reference", str(path),
                     "--losses", "energy") == 1
    out = capsys.readouterr().out
    assert "2 of 3 numbers match" in out and "CHECK FAILED" in out
    (moved,) = [line for line in out.splitlines() if "MOVED" in line]
    assert moved.startswith("  MOVED energy w2_final: got 0.2118642") and "tolerance because" in moved


def test_a_changed_status_fails_the_check(tmp_path, capsys):
    path = edited_reference(tmp_path, "model-fitting", "sinkhorn_multiplicative", "status",
                            lambda v: "ok")
    assert reproduce(tmp_path, "model-fitting", "--reference", str(path),
                     "--losses", "sinkhorn_multiplicative") == 1
    assert "MOVED sinkhorn_multiplicative status: got 'nan', reference 'ok'" in capsys.readouterr().out


def test_settings_other_than_the_references_are_refused(tmp_path, capsys):
    assert reproduce(tmp_path, "gradient-flow-1d", "--N", "50") == 2
    assert "made with N=20; got N=50" in capsys.readouterr().err
    assert reproduce(tmp_path, "gradient-flow-1d", "--reference", str(tmp_path / "none.json")) == 2
    assert "no reference values at" in capsys.readouterr().err


def test_matches_and_bad_reference_files(tmp_path):
    assert chk.matches(1.0 + 1e-10, 1.0, rtol=1e-9, atol=0)
    assert not chk.matches(1.0 + 1e-8, 1.0, rtol=1e-9, atol=0)
    assert not chk.matches(float("nan"), 1.0, rtol=1.0, atol=1.0)
    assert not chk.matches(None, 1.0, rtol=1.0, atol=1.0)
    assert chk.matches("nan", "nan", 0, 0) and not chk.matches("ok", "nan", 0, 0)
    assert chk.matches(0, 0, 0, 0) and not chk.matches(1, 0, 0, 0)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"reproduction": "x", "how_made": {}, "settings": {},
                               "values": [{"loss": "a", "quantity": "w2_final", "value": 1}]}))
    with pytest.raises(KPBenchError, match="value 0 lacks rtol, atol, reason"):
        chk.load_reference(bad)
    bad.write_text("{")
    with pytest.raises(KPBenchError, match="not valid JSON"):
        chk.load_reference(bad)
