"""`ray up` / `ray submit` / `ray rsync-down` / `kpbench report` / `ray down` on a loopback
cluster reached over real SSH: scripts/cluster_smoke.sh, start to finish (a few minutes).

As root with apt-get (CI's machine), the script installs openssh-server and rsync if they
are missing; elsewhere, or when that fails, the test is skipped with the script's reason."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SKIP = 77

pytestmark = pytest.mark.slow


@pytest.mark.skipif(os.environ.get("KPBENCH_CLUSTER_SMOKE") != "1",
                    reason="the SSH cluster smoke takes ~4 min: set KPBENCH_CLUSTER_SMOKE=1 to run it")
def test_ray_submit_on_a_cluster_reached_over_ssh():
    pytest.importorskip("ray")
    may_install = os.geteuid() == 0 and shutil.which("apt-get") is not None
    cmd = ["bash", str(ROOT / "scripts" / "cluster_smoke.sh")] + (["--install"] if may_install else [])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    if done.returncode == SKIP:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    for step in ("ray up", "ray submit", "ray rsync-down", "kpbench report", "ray down",
                 "all steps passed"):
        assert f"== {step}" in out, out
    assert "8 rows, 8 ok" in out and "'127.0.0.3'" in out   # the head node ran the points
    # not asserted: the worker on 127.0.0.2 (Ray 2.60's autoscaler did not launch it here)
    assert "left after ray down: 0" in out
