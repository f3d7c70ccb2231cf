"""Which backends give the same bits run after run on one machine (a backend fact, read by
the sweep's measure into each row's ``deterministic``).

Measured by ``scripts/determinism.py`` (two runs in two fresh processes, same machine,
same inputs, every op of the sweeps; max difference of the outputs per backend, dtype and
device). The table below holds what it found; a (backend, device) pair not measured
is *not* claimed deterministic (``False``): a claim needs a measurement.

Measured 2026-12-02 on the 2-core AMD EPYC host CPU (torch 2.13 CPU, pykeops 2.3, NumPy
2.4 with OpenBLAS 0.3.31), N = M = 500 and 2000, D = 3, kernel product (+grad), softmin,
Sinkhorn to convergence (+grad): runs A and B (2 threads each) agree to the bit for
numpy float64, torch float32/float64 and keops float32/float64 (max difference 0).
With 1 thread instead of 2, torch and keops still give the same bits; numpy float64
moves by 5.3e-16 relative at N = 2000 (OpenBLAS splits its products over threads).

Why the CPU entries are what they are:

* ``numpy`` (float64 reference): chunked NumPy, a fixed reduction order per chunk size,
  BLAS with the process's thread count: bit-identical run to run with the same count.
* ``torch`` CPU with a fixed ``torch.set_num_threads`` (the sweep always sets it): the
  reductions' split over threads is fixed, so bit-identical. Another thread count
  changes the split and the last bits (see the script's "threads 1 vs 2" line).
* ``keops`` CPU: one OpenMP thread per output row, each reducing its row sequentially:
  the order does not depend on scheduling, so bit-identical with fixed flags (other
  ``CXXFLAGS``, e.g. ``-ffast-math``, are another build and another result).
* CUDA (torch, keops, the custom kernels): not measured here (no GPU on the machine that
  made this table), so not claimed.
"""
from __future__ import annotations

# (backend, device) -> {dtype: bit-reproducible across runs on one machine}
DETERMINISTIC: dict[tuple[str, str], dict[str, bool]] = {
    ("numpy", "cpu"): {"float64": True},
    ("torch", "cpu"): {"float32": True, "float64": True},
    ("keops", "cpu"): {"float32": True, "float64": True},
}


def deterministic(backend: str, dtype: str, device: str) -> bool:
    """Whether ``backend`` in ``dtype`` on ``device`` gives the same bits run after run here."""
    return DETERMINISTIC.get((backend, _device_kind(device)), {}).get(dtype, False)


def _device_kind(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else str(device)


__all__ = ["DETERMINISTIC", "deterministic"]
