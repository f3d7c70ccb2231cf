"""The ``kpbench`` command as a whole: one error policy for every verb, plugins loaded by the
command, defaults read where they are defined, the store's paths spelled in one module."""
from __future__ import annotations

import ast
import dataclasses
import os
import pathlib
import subprocess
import sys

import pytest

from kpbench.cli.main import main
from test_report import sweep_row, write_sweeps

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_python_m_kpbench_is_the_command():
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "kpbench", "--help"], env=env, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: kpbench ") and "reproduce" in done.stdout


@pytest.mark.parametrize("argv, command, message", [
    (["report", "{tmp}/nowhere"], "kpbench report", "no results directory"),
    (["compare", "{tmp}/a", "{tmp}/b", "--no-page"], "kpbench compare", "{tmp}/a"),
    (["rerun", "{tmp}/nowhere", "--dry-run"], "kpbench rerun", "{tmp}/nowhere"),
    (["store", "check", "{tmp}/nowhere"], "kpbench store check", "no results directory"),
    (["store", "compact", "{tmp}/nowhere"], "kpbench store compact", "no results directory"),
    (["sweep", "speed", "--N", "0", "--dry-run"], "kpbench sweep", "N must be whole numbers"),
    (["demo", "--config", "no_such_preset", "--out", "{tmp}/out"], "kpbench demo", "no config file"),
    (["reproduce", "gradient-flow-1d", "--check", "--reference", "{tmp}/none.json"],
     "kpbench reproduce", "no reference values"),
])
def test_every_verb_says_bad_input_one_way(tmp_path, capsys, argv, command, message):
    """Exit 2 and one line 'kpbench <verb>: <message>' (no second 'error:' prefix)."""
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"{command}: ") and not err.startswith(f"{command}: error:"), err
    assert message.format(tmp=tmp_path) in err


def test_the_command_loads_the_plugins(tmp_path, monkeypatch, capsys):
    """KPBENCH_PLUGINS is read by the command itself, not by an import that ran earlier."""
    monkeypatch.setenv("KPBENCH_PLUGINS", str(tmp_path / "missing_plugin.py"))
    assert main(["backends"]) == 2
    assert "kpbench backends: plugin" in capsys.readouterr().err


def test_compare_flags_left_out_take_the_gate_settings_defaults(tmp_path, monkeypatch, capsys):
    from kpbench.results import compare

    write_sweeps(tmp_path / "base", [sweep_row(time=1.0)], run_id="base-run")
    write_sweeps(tmp_path / "new", [sweep_row(time=1.2)], run_id="new-run")
    argv = ["compare", str(tmp_path / "base"), str(tmp_path / "new"), "--no-page"]
    assert main(argv) == 1                                  # 1.2 > GateSettings().threshold 1.1
    looser = dataclasses.make_dataclass("Looser", [("threshold", float, 1.3)],
                                        bases=(compare.GateSettings,), frozen=True)
    monkeypatch.setattr(compare, "GateSettings", looser)
    assert main(argv) == 0                                  # the CLI has no default of its own
    assert main([*argv, "--threshold", "1.1"]) == 1


def test_reproduce_help_shows_the_modules_own_defaults(monkeypatch, capsys):
    from kpbench.reproductions import gradient_flow_1d

    monkeypatch.setattr(gradient_flow_1d, "DEFAULT_N", 77)
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    assert "gradient-flow-1d: N=77, float64" in capsys.readouterr().out


LAYOUT_WORDS = {"sweeps", "runs", "figures", ".sweep.lock", ".compacting"}
LAYOUT_PREFIXES = ("run-", "part-", ".part-")


def test_only_the_layout_module_spells_the_store_paths():
    spelled = []
    for path in sorted((ROOT / "kpbench").rglob("*.py")):
        if path.name == "layout.py" and path.parent.name == "results":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exported = {id(c) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                    and any(getattr(t, "id", None) == "__all__" for t in node.targets)
                    for c in ast.walk(node.value)}                   # names, not paths
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in exported and (
                    node.value in LAYOUT_WORDS or node.value.startswith(LAYOUT_PREFIXES)):
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert spelled == []
