"""Speed on paper: the kernels' machine code (SASS) counted, and an H100 time predicted.

No GPU is needed: ``nvcc -cubin`` compiles the instances the launcher would ask for (with
its options, plus ``-ftz=true`` as CuPy adds it), ``ptxas -v`` gives registers and spills,
``cuobjdump -sass`` the listing. In each kernel the inner per-pair loop is found (of the
backward branches inside a tile, i.e. without a barrier, around a MUFU, the one that reads
most from shared memory), its instructions
are counted by pipe and divided by the pairs one iteration handles (the unrolling
kernels.cu asks for). For the run-time-D path the pair loop (groups of 8 pairs) holds inner
loops over the D-chunks: per pair = (the group loop's own instructions + each inner loop's
x ceil(D / DCHUNK)) / 8.

The prediction is per SM: each pipe p takes count_p / rate_p clocks per warp of 32 pairs,
issue takes total / 4; the largest is the time (no latency, perfect occupancy assumed), at
H100 SXM rates (SMs, clock and arithmetic lanes from the device table, kpbench.devices):
132 SMs, 1.98 GHz boost, per SM per clock 4 warp-instructions issued, 128 FP32 lanes
(4 warp-FFMA), 16 MUFU lanes (0.5 warp-MUFU), 64 FP64 and 64 INT32 lanes, one
shared-memory wavefront (a broadcast LDS.128 is one). The physical limit is the larger of
the FP32-bound and MUFU-bound times at the minimal operation count of the formula.
Used by scripts/cuda_sass_report.py and tests/test_cuda_sass.py. The float32 instances
only: float64's exp2 is a libdevice polynomial, not one MUFU.
"""
from __future__ import annotations

import glob
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kpbench.devices import DEVICES

from kpbench.backends.cuda import launcher

H100 = DEVICES["H100"]     # SMs, clock and lanes: the one device table (kpbench.devices)
SMS, CLOCK_HZ = H100.sms, H100.clock_hz
GROUP = 8                  # pairs per group: softmin_lse and the run-time-D path (kernels.cu)
# warp-instructions per SM per clock: the arithmetic pipes from the device's lanes
RATES = {"issue": 4.0, "fp32": H100.fp32_lanes / 32, "mufu": H100.mufu_lanes / 32,
         "fp64": H100.fp64_lanes / 32, "alu": 2.0, "lds": 1.0, "gmem": 1.0}
PIPES = ("fp32", "mufu", "lds", "fp64", "gmem", "alu")
NVCC_OPTIONS = (*launcher.NVRTC_OPTIONS, "-ftz=true")
REGISTERS_PER_SM, MAX_THREADS_PER_SM, SMEM_PER_SM = 65536, 2048, 228 * 1024


@dataclass(frozen=True)
class Instance:
    """One kernel instance as the launcher would build it for N = M = 1e6."""
    label: str
    op: str             # kp_forward | kp_grad | softmin_lse | softmin_grad
    variant: int        # kernel id, or p
    d: int
    columns: int = 1
    dtype: str = "float32"

    @property
    def extras(self) -> int:
        return {"softmin_lse": 1, "softmin_grad": 2}.get(self.op, self.columns)

    @property
    def geometry(self) -> launcher.Geometry:
        itemsize = 4 if self.dtype == "float32" else 8
        return launcher.geometry(10**6, 10**6, self.d, self.extras, itemsize, SMS)

    @property
    def expression(self) -> str:
        columns = self.columns if self.op.startswith("kp_") else None
        return launcher.kernel_name(self.op, self.dtype, self.variant, self.geometry, columns)


GAUSSIAN_KP = Instance("gaussian KP", "kp_forward", 0, 3)
SOFTMIN = Instance("softmin p=2", "softmin_lse", 2, 3)
INSTANCES = (
    GAUSSIAN_KP, SOFTMIN,
    Instance("laplacian KP", "kp_forward", 1, 3), Instance("energy KP", "kp_forward", 2, 3),
    Instance("gaussian KP grad", "kp_grad", 0, 3), Instance("softmin p=1", "softmin_lse", 1, 3),
    Instance("softmin p=2 grad", "softmin_grad", 2, 3),
    Instance("gaussian KP D=40", "kp_forward", 0, 40),
    Instance("gaussian KP grad D=40", "kp_grad", 0, 40),
    Instance("softmin p=2 D=40", "softmin_lse", 2, 40),
    Instance("gaussian KP D=100", "kp_forward", 0, 100),
    Instance("gaussian KP grad D=100", "kp_grad", 0, 100),
    Instance("softmin p=2 D=100", "softmin_lse", 2, 100),
)
# Instructions per pair (all pipes) of the inner loops on sm_90 with nvcc 13.0, as counted
# when last changed: tests/test_cuda_sass.py fails when a loop grows beyond its budget.
BUDGET = {
    "gaussian KP": 9.625, "softmin p=2": 12.25, "laplacian KP": 24.625, "energy KP": 22.625,
    "gaussian KP grad": 14.25, "softmin p=1": 27.0, "softmin p=2 grad": 17.5,
    "gaussian KP D=40": 157.75, "gaussian KP grad D=40": 316.5, "softmin p=2 D=40": 153.75,
    "gaussian KP D=100": 387.75, "gaussian KP grad D=100": 790.5, "softmin p=2 D=100": 377.75,
}


def minimal_ops(inst: Instance) -> dict[str, int] | None:
    """Minimal operations per pair of the Gaussian KP (D differences, D squares summed, K
    multiply-adds; the gradient adds K + 1 products and D multiply-adds reusing the
    differences) and of the p=2 softmin (h - C in 2D, the shift by the running maximum,
    the running sum); one exp2 each. None for the others."""
    d, k = inst.d, inst.columns
    if inst.op == "kp_forward" and inst.variant == 0:
        return {"fp32": 2 * d + k, "mufu": 1}
    if inst.op == "kp_grad" and inst.variant == 0:
        return {"fp32": 3 * d + k + 1, "mufu": 1}
    if inst.op == "softmin_lse" and inst.variant == 2:
        return {"fp32": 2 * d + 2, "mufu": 1}
    return None


# -- tools ----------------------------------------------------------------------------
def nvcc() -> str | None:
    return shutil.which(os.environ.get("NVCC", "nvcc"))


def cuobjdump() -> str | None:
    """cuobjdump on PATH, else the one of the nvidia-cuda-cuobjdump wheel."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    for entry in sys.path:
        for path in sorted(glob.glob(os.path.join(entry, "nvidia", "*", "bin", "cuobjdump"))):
            return path
    return None


def _tool_env(dump: str) -> dict:
    """cuobjdump runs nvdisasm (the nvidia-cuda-nvdisasm wheel puts it beside it)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(dump).parent), env.get("PATH", "")])
    return env


@dataclass
class Compiled:
    sass: dict[str, list[tuple[int, str]]]      # mangled name -> [(address, instruction)]
    resources: dict[str, dict[str, int]]        # mangled name -> registers, spill bytes


def compile_instances(instances, arch: int) -> dict[Instance, tuple[list, dict]]:
    """{instance: (SASS instructions, ptxas resources)} for one sm_XX."""
    compiler, dump = nvcc(), cuobjdump()
    if compiler is None or dump is None:
        raise FileNotFoundError("nvcc and cuobjdump are needed (pip install nvidia-cuda-cuobjdump "
                                "nvidia-cuda-nvdisasm)")
    with tempfile.TemporaryDirectory() as tmp:
        src, cubin = Path(tmp) / "sass.cu", Path(tmp) / "sass.cubin"
        src.write_text(f'#include "{launcher.SOURCE}"\nvoid* kpb_sass[] = {{\n'
                       + ",\n".join(f"  (void*)&{i.expression}" for i in instances) + "\n};\n")
        result = subprocess.run([compiler, *NVCC_OPTIONS, f"-arch=sm_{arch}", "-cubin",
                                 "-Xptxas", "-v", "-o", str(cubin), str(src)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-4000:])
        listing = subprocess.run([dump, "-sass", str(cubin)], capture_output=True, text=True,
                                 env=_tool_env(dump), check=True).stdout
    functions = parse_sass(listing)
    resources = parse_ptxas(result.stderr)
    out = {}
    for inst in instances:
        name = _mangled(inst, functions)
        out[inst] = (functions[name], resources.get(name, {}))
    return out


def _mangled(inst: Instance, functions) -> str:
    """The mangled name of an instance: kp_forward<float, 0, 3, 4, 1> -> ...IfLi0ELi3ELi4ELi1EE..."""
    args = inst.expression.split("<", 1)[1].rstrip(">").split(", ")
    code = {"float": "f", "double": "d"}[args[0]] + "".join(f"Li{a}E" for a in args[1:])
    op = inst.op
    matches = [n for n in functions if f"{len(op)}{op}I{code}E" in n]
    if len(matches) != 1:
        raise LookupError(f"{inst.expression}: {len(matches)} functions match in the SASS")
    return matches[0]


_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def parse_sass(listing: str) -> dict[str, list[tuple[int, str]]]:
    functions, current = {}, None
    for line in listing.splitlines():
        head = re.search(r"Function : (\S+)", line)
        if head:
            current = functions.setdefault(head.group(1), [])
            continue
        m = _LINE.search(line)
        if m and current is not None:
            current.append((int(m.group(1), 16), m.group(2)))
    return functions


def parse_ptxas(log: str) -> dict[str, dict[str, int]]:
    out, name = {}, None
    for line in log.splitlines():
        m = re.search(r"(?:Compiling entry function|Function properties for) '?([\w$]+)'?", line)
        if m:
            name = m.group(1)
            out.setdefault(name, {})
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and name:
            out[name]["spill_bytes"] = int(m.group(1)) + int(m.group(2))
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            out[name]["registers"] = int(m.group(1))
    return out


# -- counting -----------------------------------------------------------------------------
def opcode(instruction: str) -> str:
    return re.sub(r"^@!?U?P[T\d]+\s+", "", instruction).split()[0]


def pipe(op: str) -> str | None:
    """The pipe an opcode runs on; None for what costs no issue slot of the loop (NOP)."""
    base = op.split(".")[0]
    if base in ("FFMA", "FADD", "FMUL", "FFMA32I", "FADD32I", "FMUL32I"):
        return "fp32"
    if base in ("DFMA", "DADD", "DMUL"):
        return "fp64"
    if base == "MUFU":
        return "mufu"
    if base in ("LDS", "STS"):
        return "lds"
    if base in ("LDG", "STG", "LD", "ST", "LDL", "STL", "RED", "ATOM", "ATOMG"):
        return "gmem"
    if base == "NOP":
        return None
    return "alu"


def loops(code) -> list[tuple[int, int]]:
    """(first, last) address of each loop: a branch backwards to ``first``."""
    found = []
    for addr, ins in code:
        m = re.match(r"BRA\s+(?:`\()?0x([0-9a-f]+)", re.sub(r"^@!?U?P[T\d]+\s+", "", ins))
        if m and int(m.group(1), 16) <= addr:
            found.append((int(m.group(1), 16), addr))
    return found


def _inside(code, lo, hi):
    return [(a, i) for a, i in code if lo <= a <= hi]


def _lds_bytes(code) -> int:
    total = 0
    for _, ins in code:
        op = opcode(ins)
        if op.startswith("LDS"):
            width = re.search(r"\.(32|64|128)\b", op)
            total += int(width.group(1)) // 8 if width else 4
    return total


@dataclass
class LoopCount:
    per_pair: dict[str, float]        # pipe -> instructions per pair (and "total")
    pairs_per_iteration: float
    chunk: int = 0                    # run-time D: dimensions per inner-loop iteration
    local_accesses: int = 0           # LDL/STL (spilled registers) inside the pair loop
    notes: list[str] = field(default_factory=list)


def pairs_per_iteration(inst: Instance) -> int:
    """The pairs one iteration of the pair loop handles: the unrolling kernels.cu asks for
    (unroll_by_row there: by 8 / 4 for rows of <= 16 bytes, ...; softmin_lse: groups of 8;
    run-time rows: 1)."""
    row_bytes = inst.geometry.row * (4 if inst.dtype == "float32" else 8)
    if inst.op == "softmin_lse" or row_bytes == 0:
        return GROUP
    small = 8 if inst.op == "kp_forward" else 4
    if row_bytes <= 16:
        return small
    if row_bytes <= 32:
        return small // 2 if small > 2 else 1
    return 2 if row_bytes <= 96 else 1


def count_pair_loop(code, inst: Instance) -> LoopCount:
    """Instructions per pair of the inner per-pair loop of one kernel's SASS."""
    candidates = [(lo, hi) for lo, hi in loops(code)
                  if any(opcode(i).startswith("MUFU") for _, i in _inside(code, lo, hi))
                  and not any(opcode(i).startswith("BAR") for _, i in _inside(code, lo, hi))
                  and _lds_bytes(_inside(code, lo, hi)) > 0]
    if not candidates:
        raise LookupError(f"{inst.expression}: no loop with MUFU and LDS inside a tile")
    # inside the tile loop (no barrier), the one reading most from the tile: not the
    # copies the compiler specialises for edge cases (fewer loads)
    lo, hi = max(candidates, key=lambda c: (_lds_bytes(_inside(code, *c)), c[0] - c[1]))
    inner = [(a, b) for a, b in loops(code) if lo <= a and b < hi]
    body = _inside(code, lo, hi)
    own = [(a, i) for a, i in body if not any(x <= a <= y for x, y in inner)]
    pairs = pairs_per_iteration(inst)
    per_pair = _by_pipe(own, 1 / pairs)
    notes, trips = [], math.ceil(inst.d / launcher.DCHUNK)
    for a, b in inner:          # run-time D: loops over the D-chunks inside the group loop
        for key, value in _by_pipe(_inside(code, a, b), trips / pairs).items():
            per_pair[key] = per_pair.get(key, 0.0) + value
        notes = [f"inner chunk loops run ceil(D / {launcher.DCHUNK}) = {trips} times"]
    local = sum(opcode(i).split(".")[0] in ("LDL", "STL") for _, i in body)
    return LoopCount(per_pair, pairs, launcher.DCHUNK if inner else 0, local, notes)


def _by_pipe(code, factor: float) -> dict[str, float]:
    counts = {"total": 0.0}
    for _, ins in code:
        p = pipe(opcode(ins))
        if p is None:
            continue
        counts[p] = counts.get(p, 0.0) + factor
        counts["total"] += factor
    return counts


# -- prediction ---------------------------------------------------------------------------
def clocks_per_pair_warp(per_pair: dict[str, float]) -> tuple[float, str]:
    """Clocks per SM for one warp of 32 pairs, and the binding pipe."""
    times = {"issue": per_pair.get("total", 0.0) / RATES["issue"]}
    for p in PIPES:
        times[p] = per_pair.get(p, 0.0) / RATES[p]
    bound = max(times, key=times.get)
    return times[bound], bound


def seconds(clocks: float, pairs: float = 1e12) -> float:
    return pairs / 32 / SMS * clocks / CLOCK_HZ


def limit_seconds(inst: Instance, pairs: float = 1e12) -> float | None:
    minimal = minimal_ops(inst)
    if minimal is None:
        return None
    return seconds(max(minimal["fp32"] / RATES["fp32"], minimal["mufu"] / RATES["mufu"]), pairs)


def occupancy(registers: int, smem: int, block: int = launcher.BLOCK) -> float:
    """Resident warps / 64 on an H100 SM (registers allocated per warp in units of 256)."""
    warp_regs = math.ceil(registers * 32 / 256) * 256
    by_regs = REGISTERS_PER_SM // (warp_regs * (block // 32)) if registers else 32
    by_smem = SMEM_PER_SM // (smem + 1024)
    blocks = min(by_regs, by_smem, MAX_THREADS_PER_SM // block, 32)
    return blocks * block / MAX_THREADS_PER_SM


@dataclass
class Row:
    inst: Instance
    arch: int
    count: LoopCount
    registers: int
    spill_bytes: int
    occupancy: float
    clocks: float
    bound: str
    predicted_s: float
    limit_s: float | None


def analyse(instances=INSTANCES, arch: int = 90) -> list[Row]:
    rows = []
    for inst, (code, res) in compile_instances(instances, arch).items():
        count = count_pair_loop(code, inst)
        clocks, bound = clocks_per_pair_warp(count.per_pair)
        regs = res.get("registers", 0)
        rows.append(Row(inst, arch, count, regs, res.get("spill_bytes", 0),
                        occupancy(regs, inst.geometry.smem), clocks, bound, seconds(clocks),
                        limit_seconds(inst)))
    return rows


def table(rows: list[Row]) -> str:
    head = (f"{'instance':24s} {'sm':>3s} {'regs':>4s} {'occ':>5s} {'pairs/it':>8s} "
            f"{'total':>6s} {'fp32':>5s} {'mufu':>5s} {'lds':>5s} {'gmem':>5s} {'alu':>5s} "
            f"{'bound':>6s} {'pred. s':>8s} {'limit s':>8s} {'ratio':>5s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        c = r.count.per_pair
        limit = f"{r.limit_s:8.3f}" if r.limit_s else f"{'':8s}"
        ratio = f"{r.predicted_s / r.limit_s:5.2f}" if r.limit_s else f"{'':5s}"
        lines.append(
            f"{r.inst.label:24s} {r.arch:3d} {r.registers:4d} {r.occupancy:5.0%} "
            f"{r.count.pairs_per_iteration:8.1f} {c.get('total', 0):6.2f} {c.get('fp32', 0):5.2f} "
            f"{c.get('mufu', 0):5.2f} {c.get('lds', 0):5.2f} {c.get('gmem', 0):5.2f} "
            f"{c.get('alu', 0):5.2f} {r.bound:>6s} {r.predicted_s:8.3f} {limit} {ratio}")
    return "\n".join(lines)
