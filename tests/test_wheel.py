"""The wheel users install holds the package's data: every file under kpbench/ that is not
Python (the CUDA sources and the host shim, presets, images, references, the page's script)
is in it, at the same path. Built from a copy of the tracked files (the checkout gets no
build/ or egg-info), with the installed setuptools, no download."""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tracked(*paths: str) -> list[str]:
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--", *paths],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"not a git checkout: {out.stderr.strip()}")
    return out.stdout.split()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    source = tmp_path_factory.mktemp("source")
    for name in tracked("pyproject.toml", "README.md", "kpbench"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(out), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (built,) = out.glob("kpbench-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def test_every_data_file_of_the_package_is_in_the_wheel(wheel):
    data = {name for name in tracked("kpbench") if not name.endswith(".py")}
    assert "kpbench/backends/cuda/host_shim.h" in data and len(data) >= 10
    missing = data - set(wheel.namelist())
    assert not missing, f"not in the wheel: {sorted(missing)}"


def test_the_wheel_says_what_python_and_pyarrow_it_needs(wheel):
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    lines = wheel.read(metadata).decode().splitlines()
    assert "Requires-Python: >=3.11" in lines           # tomllib (the presets)
    assert any(line.startswith("Requires-Dist: pyarrow>=14.0.1") for line in lines)   # CVE-2023-47248
