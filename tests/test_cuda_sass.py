"""The kernels' machine code: inner loops within their instruction budgets (scripts/cuda_sass.py,
scripts/cuda_sass_report.py). Needs nvcc and cuobjdump (+ nvdisasm; the
nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm wheels of the test extra), no GPU; the tests
that compile skip only where those tools are absent."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import cuda_sass as sass  # noqa: E402  (an offline tool of scripts/, not of the package)

needs_tools = pytest.mark.skipif(sass.nvcc() is None or sass.cuobjdump() is None,
                                 reason="nvcc or cuobjdump not found (pip install "
                                        "nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")


@pytest.fixture(scope="module")
def rows():
    return {row.inst.label: row for row in sass.analyse(arch=90)}


@needs_tools
def test_every_inner_loop_is_within_its_instruction_budget(rows):
    assert set(rows) == set(sass.BUDGET)
    over = {label: (row.count.per_pair["total"], sass.BUDGET[label])
            for label, row in rows.items()
            if row.count.per_pair["total"] > sass.BUDGET[label] + 1e-9}
    assert not over, f"instructions per pair above budget (counted, budget): {over}"


@needs_tools
def test_gaussian_kernel_product_is_within_1_4x_of_the_exp_limit(rows):
    row = rows["gaussian KP"]
    c = row.count.per_pair
    assert (c["mufu"], c["lds"], c["fp32"]) == (1.0, 1.0, 7.0)   # no extra negation per pair
    assert row.limit_s == pytest.approx(1e12 / (132 * 16 * 1.98e9))
    assert row.predicted_s / row.limit_s <= 1.4


@needs_tools
def test_no_spilled_register_in_any_inner_loop_and_full_occupancy_at_d3(rows):
    """ptxas reports a few spill bytes where sqrtf's slow-path subroutine is called (p=1,
    once per thread, outside the loop); inside the pair loops there must be none."""
    assert all(row.count.local_accesses == 0 for row in rows.values())
    assert rows["gaussian KP"].spill_bytes == 0 and rows["softmin p=2"].spill_bytes == 0
    assert rows["gaussian KP"].registers <= 32 and rows["gaussian KP"].occupancy == 1.0


@needs_tools
def test_report_script_prints_the_table(tmp_path):
    out = tmp_path / "sass.json"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "cuda_sass_report.py"),
                             "--arch", "80", "--json", str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gaussian KP" in result.stdout and " 80 " in result.stdout and out.exists()


# -- the counter itself, on a hand-written listing (no tools needed) ------------------------
LISTING = """
        Function : _ZN3kpb10kp_forwardIfLi0ELi3ELi4ELi1EEEvPKT_
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   LDS.128 R4, [UR8] ;
        /*0020*/                   FADD R4, R0, -R4 ;
        /*0030*/                   FFMA R4, R4, R4, RZ ;
        /*0040*/                   MUFU.EX2 R4, -R4 ;
        /*0050*/                   FFMA R18, R7, R4, R18 ;
        /*0060*/                   NOP ;
        /*0070*/               @P2 BRA 0x10 ;
        /*0080*/                   EXIT ;
"""


def test_counter_finds_the_loop_and_counts_by_pipe():
    code = sass.parse_sass(LISTING)["_ZN3kpb10kp_forwardIfLi0ELi3ELi4ELi1EEEvPKT_"]
    assert sass.loops(code) == [(0x10, 0x70)]
    count = sass.count_pair_loop(code, sass.GAUSSIAN_KP)       # unrolled by 8 in kernels.cu
    assert count.pairs_per_iteration == 8
    assert count.per_pair == pytest.approx({"total": 6 / 8, "lds": 1 / 8, "fp32": 3 / 8,
                                            "mufu": 1 / 8, "alu": 1 / 8})


def test_prediction_takes_the_binding_pipe():
    clocks, bound = sass.clocks_per_pair_warp({"total": 9.0, "fp32": 7.0, "mufu": 1.0})
    assert (clocks, bound) == (2.25, "issue")
    clocks, bound = sass.clocks_per_pair_warp({"total": 6.0, "fp32": 4.0, "mufu": 1.0})
    assert (clocks, bound) == (2.0, "mufu")
    assert sass.occupancy(32, 4096) == 1.0 and sass.occupancy(128, 4096) == 0.25


@needs_tools
@pytest.mark.parametrize("d", [40, 100])
def test_run_time_d_path_reads_global_memory_once_per_group_and_chunk(rows, d):
    """Issue 16 item 4: x_i and the gradient accumulator were read from (and written to)
    global memory once per pair and dimension (1 and 4 accesses per pair-dimension);
    chunks in registers, loaded once per group of 8 pairs: 1/8 and 1/2."""
    assert rows[f"gaussian KP D={d}"].count.per_pair["gmem"] <= d / 8 + 1
    assert rows[f"gaussian KP grad D={d}"].count.per_pair["gmem"] <= d / 2 + 2
    assert rows[f"gaussian KP D={d}"].count.per_pair["fp32"] <= 2.25 * d + 2
