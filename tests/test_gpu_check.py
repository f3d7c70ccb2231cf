"""scripts/gpu_check.sh --dry-run: the first GPU hour's script keeps working on a CPU machine
(the CUDA kernels on the host, tiny N, GPU points refused with their reason), and its
summary says what it measured."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    env.pop("KPBENCH_LIMITS", None)
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--quick",
                             "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = (out / "summary.txt").read_text()
    assert "DRY RUN" in summary and summary in result.stdout
    steps = dict(line.split("\t")[:2] for line in (out / "steps.tsv").read_text().splitlines())
    assert set(steps) == {"env", "limits", "sass", "speed", "sinkhorn", "speed-cpu", "report"}
    assert all(status == "ok" or (name == "sass" and status.startswith("failed"))
               for name, status in steps.items()), steps
    # GPU points refused with their reason; the CPU points timed against the measured limits
    assert "no CUDA device is visible here" in summary
    assert "cuda host execution: correctness only" in summary   # refuses to be timed
    cpu_rows = [line.split() for line in summary.splitlines() if line.split()[2:3] == ["cpu"]]
    assert cpu_rows and all(0 < float(row[-2]) < 100 for row in cpu_rows), summary
    assert (out / "limits.json").is_file() and (out / "report" / "report.html").is_file()
    assert (out / "report" / "time_vs_n_limit.png").is_file()   # the limit line drawn


def test_gpu_check_refuses_a_bad_flag(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--budget", "ten"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--budget takes whole seconds" in result.stderr
