"""Compile ``kernels.cu`` at first use (NVRTC through CuPy), cache it, launch on torch's stream.

The four raw operations below take and return contiguous CUDA torch tensors of one dtype,
in natural units (the scalings that put the exponentials in base 2 stay in here):

* ``kernel_product(x, y, b, kernel, blur)``    (N, K):  sum_j k(x_i, y_j) b_jk
* ``kp_grad(x, y, g, b, kernel, blur)``        (N, D):  sum_j (g_i . b_j) grad_x k(x_i, y_j)
* ``softmin_lse(x, y, h, eps, p)``             (N,):    log sum_j exp(h_j - C(x_i, y_j) / eps)
* ``softmin_grad(x, y, alpha, beta, v, eps, p)``  ((N, D), (N,)):  with
  P_ij = exp(alpha_i + beta_j - C_ij / eps):  (sum_j v_j P_ij grad_x C_ij,  sum_j v_j P_ij)
  (v None: v_j = 1)

Every launch streams y through shared memory; the j range may be split over grid.y
(``geometry``) and the partial results reduced here with torch.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

from kpbench.errors import KPBenchError

from ..base import check_p
from . import host

SOURCE = Path(__file__).with_name("kernels.cu")
BLOCK = 256                # threads per block, one x_i per thread (KPB_BLOCK in kernels.cu)
STATIC_DIM_MAX = 32        # D up to this is a compile-time constant (registers, unrolled loops)
DCHUNK = 8                 # run-time D: coordinates per chunk (DCHUNK in kernels.cu)
MAX_COLUMNS = 16           # columns of b per launch; wider b is processed in chunks
SMEM_BUDGET = 48 * 1024    # dynamic shared memory per block without an opt-in
TARGET_BLOCKS_PER_SM = 8   # split the j range until the grid has about this many blocks per SM
MIN_TILES_PER_SPLIT = 4    # ... but never into chunks of fewer tiles than this
MAX_SPLITS = 64
# Rows of x or y: i = blockIdx.x * BLOCK + threadIdx.x and j0 + tile stay below 2^31.
MAX_ROWS = 2**31 - 1 - 2 * BLOCK
NVRTC_OPTIONS = ("--std=c++17", f"-DKPB_BLOCK={BLOCK}")
KERNEL_IDS = {"gaussian": 0, "laplacian": 1, "energy": 2}
LOG2E = math.log2(math.e)


# -- launch geometry (pure Python) -------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    dim: int        # template DIM: D, or 0 for a run-time D
    row: int        # template ROW: padded row length, or 0 for a run-time row
    rowlen: int     # elements per tile row (y_j's coordinates, then the extras)
    tile: int       # rows of y per shared-memory tile
    blocks: int     # grid.x: blocks of BLOCK rows of x
    splits: int     # grid.y: chunks of the j range
    split_len: int  # j's per chunk (a multiple of tile)
    smem: int       # dynamic shared memory per block, bytes


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def geometry(n: int, m: int, d: int, extras: int, itemsize: int, sm_count: int) -> Geometry:
    """How to launch a reduction of N rows over M columns in dimension D.

    ``extras`` values ride along with each y_j in the tile (columns of b, h, ...).
    """
    static = d <= STATIC_DIM_MAX
    lanes = 16 // itemsize                      # rows are read with 16-byte loads
    coords = d if static else _ceil_div(d, DCHUNK) * DCHUNK
    rowlen = _ceil_div(coords + extras, lanes) * lanes
    tile = min(BLOCK, SMEM_BUDGET // (rowlen * itemsize))
    if tile < 1:
        raise KPBenchError(
            f"D={d} is too large for the cuda backend: one point needs {rowlen * itemsize} bytes "
            f"of shared memory, at most {SMEM_BUDGET} are available")
    blocks = _ceil_div(n, BLOCK)
    wanted = _ceil_div(TARGET_BLOCKS_PER_SM * sm_count, blocks)
    affordable = max(1, m // (MIN_TILES_PER_SPLIT * tile))
    splits = max(1, min(wanted, affordable, MAX_SPLITS))
    split_len = _ceil_div(_ceil_div(m, splits), tile) * tile
    splits = _ceil_div(m, split_len)            # no empty chunk
    return Geometry(dim=d if static else 0, row=rowlen if static else 0, rowlen=rowlen,
                    tile=tile, blocks=blocks, splits=splits, split_len=split_len,
                    smem=tile * rowlen * itemsize)


def kernel_scales(kernel: str, blur: float, dtype_name: str) -> tuple[float, float]:
    """(s, gfactor) of kernels.cu's Kern<>: coordinates are multiplied by s so that
    k = 2^(-|s x - s y|^2) (gaussian), 2^(-|s x - s y|) (laplacian), -|x - y| (energy),
    and grad_x k = gfactor * phi * (s x - s y)."""
    if kernel == "gaussian":      # only this kernel's scale: blur**2 may be 0 for the others
        s = _rounded(math.sqrt(LOG2E / (2 * blur**2)), dtype_name)
        return s, -1 / (s * blur**2)
    if kernel == "laplacian":
        return _rounded(LOG2E / blur, dtype_name), -1 / blur
    return _rounded(1.0, dtype_name), -1.0


def cost_scales(p: int, eps: float, dtype_name: str) -> tuple[float, float]:
    """(s, gfactor) of kernels.cu's Cost<>: C(x, y) log2(e) / eps = |s x - s y|^2 (p=2)
    or |s x - s y| (p=1), and grad_x C = gfactor * psi * (s x - s y)."""
    s = _rounded(math.sqrt(LOG2E / (2 * eps)) if p == 2 else LOG2E / eps, dtype_name)
    return s, (1 / s if p == 2 else 1.0)


def _rounded(value: float, dtype_name: str) -> float:
    """The scale as the kernel will see it, so that gfactor matches it exactly."""
    if not math.isfinite(value) or value == 0:
        raise KPBenchError(f"blur/eps out of range: the kernel scale would be {value}")
    if dtype_name == "float32":
        import numpy as np

        if abs(value) > float(np.finfo(np.float32).max):
            raise KPBenchError(f"blur/eps out of the float32 range (scale {value:g})")
        rounded = float(np.float32(value))
        if rounded == 0:
            raise KPBenchError(f"blur/eps out of the float32 range (scale {value:g})")
        return rounded
    return value


# -- compilation and launch ---------------------------------------------------------
_C_TYPES = {"float32": "float", "float64": "double"}


def kernel_name(op: str, dtype_name: str, variant: int, geom: Geometry,
                columns: int | None = None) -> str:
    """The template instance of kernels.cu for one launch, e.g. kpb::kp_forward<float, 0, 3, 4, 1>.
    ``variant``: the kernel id (KERNEL_IDS) for kp_*, the power p for softmin_*."""
    args = [_C_TYPES[dtype_name], str(variant), str(geom.dim), str(geom.row)]
    if columns is not None:
        args.append(str(columns))
    return f"kpb::{op}<{', '.join(args)}>"


def _dtype_name(t) -> str:
    return str(t.dtype).replace("torch.", "")


@functools.lru_cache(maxsize=None)
def _source() -> str:
    return SOURCE.read_text()


@functools.lru_cache(maxsize=None)
def _function(device_index: int, expression: str):
    """One kernel instance, compiled by NVRTC for this device at first use. CuPy also
    keeps the binary in its on-disk cache (~/.cupy/kernel_cache, CUPY_CACHE_DIR), so
    later processes skip the compilation."""
    import cupy

    with cupy.cuda.Device(device_index):
        module = cupy.RawModule(code=_source(), options=NVRTC_OPTIONS,
                                name_expressions=(expression,))
        return module.get_function(expression)


def _sm_count(device) -> int:
    if host.enabled():
        return host.SM_COUNT
    import torch

    return torch.cuda.get_device_properties(device).multi_processor_count


def _packed(args, like) -> list[tuple[str, object]]:
    """The kernel arguments as (kind, value): device pointers of tensors (each checked to
    be on the executing device, contiguous, of the launch dtype), 32-bit ints, scalars."""
    import torch

    scalar = _dtype_name(like)
    packed = []
    for a in args:
        if isinstance(a, torch.Tensor):
            if a.device != like.device or not a.is_contiguous() or a.dtype != like.dtype:
                raise KPBenchError(f"kernel argument on {a.device} ({a.dtype}, contiguous="
                                   f"{a.is_contiguous()}); the launch needs {like.device}, "
                                   f"{like.dtype}, contiguous")
            packed.append(("ptr", a.data_ptr()))
        elif a is None:
            packed.append(("ptr", 0))
        elif isinstance(a, int):
            if not -2**31 <= a < 2**31:
                raise KPBenchError(f"kernel argument {a} does not fit the kernels' 32-bit ints")
            packed.append(("int", a))
        else:
            packed.append((scalar, float(a)))
    return packed


_NUMPY_KINDS = {"ptr": "uint64", "int": "int32", "float32": "float32", "float64": "float64"}


def _launch(expression: str, geom: Geometry, like, args) -> None:
    """Every launch of the backend: on the GPU through NVRTC/CuPy, or, when
    KPBENCH_CUDA_HOST=1, the same instance compiled for and executed on the host."""
    grid, block = (geom.blocks, geom.splits, 1), (BLOCK, 1, 1)
    packed = _packed(args, like)
    if host.enabled():
        if like.device.type != "cpu":
            raise KPBenchError(f"{host.ENV}=1 executes the kernels on the host: CPU tensors "
                               f"needed, got {like.device}")
        host.launch(expression, grid, block, geom.smem, packed)
        return
    import cupy
    import numpy as np
    import torch

    index = like.device.index if like.device.index is not None else torch.cuda.current_device()
    kernel = _function(index, expression)
    values = tuple(getattr(np, _NUMPY_KINDS[kind])(value) for kind, value in packed)
    with cupy.cuda.Device(index), _torch_stream(cupy, like.device):
        kernel(grid, block, values, shared_mem=geom.smem)


def _torch_stream(cupy, device):
    """torch's current stream as a CuPy stream: ``Stream.from_external`` takes the torch
    stream itself (CUDA stream protocol; CuPy >= 14, where ``ExternalStream`` is deprecated
    with a warning per call; the cuda extra pins >= 14.1)."""
    import torch

    return cupy.cuda.Stream.from_external(torch.cuda.current_stream(device))


def _plan(x, y, extras: int) -> tuple[int, int, int, Geometry]:
    n, d = x.shape
    m = y.shape[0]
    if max(n, m) > MAX_ROWS:
        raise KPBenchError(f"N={n}, M={m} is too large for the cuda backend: at most {MAX_ROWS} "
                           "rows (the kernels index rows with 32-bit ints)")
    return n, m, d, geometry(n, m, d, extras, x.element_size(), _sm_count(x.device))


def _common_args(n, m, d, geom):
    return [n, m, d, geom.rowlen, geom.split_len, geom.tile]


def _reduce_splits(partial):
    return partial[0] if partial.shape[0] == 1 else partial.sum(0)


def _column_chunks(k: int):
    return [(c, min(k, c + MAX_COLUMNS)) for c in range(0, k, MAX_COLUMNS)]


# -- the four raw operations ---------------------------------------------------------
def kernel_product(x, y, b, kernel: str, blur: float):
    """(N, K); K = 0 gives an empty (N, 0) result without a launch."""
    import torch

    outs = []
    for c0, c1 in _column_chunks(b.shape[1]):
        bc = b[:, c0:c1].contiguous()
        n, m, d, geom = _plan(x, y, c1 - c0)
        s, _ = kernel_scales(kernel, blur, _dtype_name(x))
        out = torch.empty((geom.splits, n, c1 - c0), dtype=x.dtype, device=x.device)
        expr = kernel_name("kp_forward", _dtype_name(x), KERNEL_IDS[kernel], geom, c1 - c0)
        _launch(expr, geom, x, [x, y, bc, out, *_common_args(n, m, d, geom), s])
        outs.append(_reduce_splits(out))
    if not outs:
        return torch.empty((x.shape[0], 0), dtype=x.dtype, device=x.device)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


def kp_grad(x, y, g, b, kernel: str, blur: float):
    """(N, D); K = 0 columns give zeros (nothing depends on x)."""
    import torch

    total = torch.zeros_like(x)
    for c0, c1 in _column_chunks(b.shape[1]):
        gc, bc = g[:, c0:c1].contiguous(), b[:, c0:c1].contiguous()
        n, m, d, geom = _plan(x, y, c1 - c0)
        s, gfactor = kernel_scales(kernel, blur, _dtype_name(x))
        out = torch.empty((geom.splits, n, d), dtype=x.dtype, device=x.device)
        expr = kernel_name("kp_grad", _dtype_name(x), KERNEL_IDS[kernel], geom, c1 - c0)
        _launch(expr, geom, x, [x, y, gc, bc, out, *_common_args(n, m, d, geom), s, gfactor])
        total += _reduce_splits(out)
    return total


def softmin_lse(x, y, h, eps: float, p: int):
    import torch

    p = check_p(p)     # the int the template needs (2.0 -> 2)
    n, m, d, geom = _plan(x, y, 1)
    s, _ = cost_scales(p, eps, _dtype_name(x))
    out = torch.empty((geom.splits, n), dtype=x.dtype, device=x.device)
    expr = kernel_name("softmin_lse", _dtype_name(x), p, geom)
    _launch(expr, geom, x, [x, y, h, out, *_common_args(n, m, d, geom), s])
    return out[0] if geom.splits == 1 else torch.logsumexp(out, dim=0)


def softmin_grad(x, y, alpha, beta, v, eps: float, p: int):
    import torch

    p = check_p(p)     # the int the template needs (2.0 -> 2)
    n, m, d, geom = _plan(x, y, 2)
    s, gfactor = cost_scales(p, eps, _dtype_name(x))
    out_g = torch.empty((geom.splits, n, d), dtype=x.dtype, device=x.device)
    out_s = torch.empty((geom.splits, n), dtype=x.dtype, device=x.device)
    expr = kernel_name("softmin_grad", _dtype_name(x), p, geom)
    _launch(expr, geom, x, [x, y, alpha, beta, v, out_g, out_s,
                            *_common_args(n, m, d, geom), s, gfactor])
    return _reduce_splits(out_g), _reduce_splits(out_s)
