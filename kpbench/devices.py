"""The GPUs kpbench knows on paper: one table, used by the SASS predictor
(scripts/cuda_sass.py) and by the machine limits of GPU speed rows
(:mod:`kpbench.bench.machine`). Imports nothing of kpbench.

Per device: streaming multiprocessors, boost clock, and per SM per clock the FP32 lanes
(one FMA each), special-function lanes (MUFU: ex2, lg2, rsqrt; one exp = one ex2 and one
multiply), FP64 lanes; DRAM bandwidth. Sources (vendor documents, boost clocks):

* H100 SXM5 80 GB: NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022) and the H100
  datasheet: 132 SMs, 1.98 GHz (67 TFLOPS FP32 = 132 x 128 x 2 x 1.98e9), 3.35 TB/s HBM3.
* H200 SXM 141 GB: NVIDIA H200 datasheet (2024): the same GH100 (132 SMs, 67 TFLOPS FP32),
  4.8 TB/s HBM3e.
* A100 SXM4 80 GB: NVIDIA A100 Tensor Core GPU Architecture whitepaper (2020) and the A100
  datasheet: 108 SMs, 1.41 GHz, 64 FP32 lanes per SM (19.5 TFLOPS), 2.039 TB/s HBM2e.
* L4: NVIDIA Ada GPU Architecture whitepaper and the L4 datasheet: 58 SMs, 2.04 GHz,
  128 FP32 lanes per SM (30.3 TFLOPS), FP64 at 1/64 rate, 300 GB/s GDDR6.
Sixteen MUFU lanes per SM (four per sub-partition) on all four (CUDA C Programming Guide,
"Arithmetic Instructions" throughput table, compute capabilities 8.0, 8.9, 9.0).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    name: str            # the table's key, as limit_source names it ("device table H100")
    match: tuple         # lower-case substrings of torch.cuda.get_device_name() that mean it
    sms: int
    clock_hz: float      # boost clock
    fp32_lanes: int      # per SM per clock (FFMA)
    mufu_lanes: int      # per SM per clock (ex2, lg2, rsqrt, sqrt)
    fp64_lanes: int      # per SM per clock (DFMA)
    bandwidth: float     # DRAM bytes/s

    @property
    def fma_per_s(self) -> float:
        return self.sms * self.fp32_lanes * self.clock_hz

    @property
    def fma64_per_s(self) -> float:
        return self.sms * self.fp64_lanes * self.clock_hz

    @property
    def exp_per_s(self) -> float:
        return self.sms * self.mufu_lanes * self.clock_hz


DEVICES = {d.name: d for d in (
    Device("H100", ("h100",), 132, 1.98e9, 128, 16, 64, 3.35e12),
    Device("H200", ("h200",), 132, 1.98e9, 128, 16, 64, 4.8e12),
    Device("A100", ("a100",), 108, 1.41e9, 64, 16, 32, 2.039e12),
    Device("L4", ("l4",), 58, 2.04e9, 128, 16, 2, 300e9),
)}


# other boards of the same chips have other clocks, SM counts and memories
OTHER_BOARDS = ("pcie", "nvl")


def find(gpu_name: str | None) -> Device | None:
    """The table's entry for a GPU name as torch reports it ("NVIDIA H100 80GB HBM3"), or
    None (not in the table, or a PCIe/NVL board of a chip the table knows as SXM)."""
    words = str(gpu_name or "").lower().replace("-", " ").split()
    if any(board in word for word in words for board in OTHER_BOARDS):
        return None
    for device in DEVICES.values():
        if any(m in words for m in device.match):
            return device
    return None
