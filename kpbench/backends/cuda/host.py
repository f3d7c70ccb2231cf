"""Host execution of ``kernels.cu``: correctness only, chosen by ``KPBENCH_CUDA_HOST=1``.

Each kernel instance the launcher asks for (e.g. ``kpb::kp_forward<float, 0, 3, 4, 1>``)
is compiled by the host C++ compiler from the unmodified source, with ``host_shim.h``
force-included (one fiber per CUDA thread, ``__syncthreads`` a true barrier, shared memory
per block: see the header), into a shared library of its own, loaded with ctypes. The
libraries are cached by a hash of everything that goes into them (sources, flags,
compiler) under ``build/cuda_host`` of the checkout (see ``build_dir``), so a second
process loads them directly.

Nothing here is ever used unless the variable is set: without a GPU and without it, the
backend is unavailable, it never falls back to the host silently. Timings of this path say
nothing about a GPU; the backend refuses speed and memory measures in this mode.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

ENV = "KPBENCH_CUDA_HOST"
BUILD_ENV = "KPBENCH_CUDA_HOST_BUILD"
LABEL = "host execution: correctness only"
HERE = Path(__file__).resolve().parent
SOURCE = HERE / "kernels.cu"
SHIM = HERE / "host_shim.h"
SM_COUNT = 132             # the launch geometry of an H100 SXM (grid.y splits included)
SHARED_CAPACITY = 48 * 1024
CXX_FLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-ffp-contract=off",
             "-fno-strict-aliasing", "-Wall", "-Wno-unknown-pragmas", "-Wno-unused-variable")
_ERR_BYTES = 512
_LOCK = threading.Lock()   # the shim's scheduler state is per library, one launch at a time


class HostBuildError(RuntimeError):
    """The host compiler rejected a kernel instance, or a host launch failed."""


def enabled() -> bool:
    """True when KPBENCH_CUDA_HOST=1; any other non-empty value but 0 is an error."""
    value = os.environ.get(ENV, "").strip()
    if value in ("", "0"):
        return False
    if value == "1":
        return True
    from kpbench.errors import KPBenchError

    raise KPBenchError(f"{ENV} must be 1 (host execution) or 0/unset, got {value!r}")


def compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


def build_dir() -> Path:
    """$KPBENCH_CUDA_HOST_BUILD, else build/cuda_host of the checkout, else (an installed
    package) ~/.cache/kpbench/cuda_host."""
    configured = os.environ.get(BUILD_ENV)
    if configured:
        return Path(configured)
    root = HERE.parents[2]
    if (root / "pyproject.toml").exists():
        return root / "build" / "cuda_host"
    return Path.home() / ".cache" / "kpbench" / "cuda_host"


def wrapper_source(expression: str, block: int, source: Path = SOURCE) -> str:
    """The one translation unit of an instance: the source (kernels.cu, or a test's file
    that includes it), the shared-memory buffer, and the entry point."""
    return (f'#define KPB_BLOCK {block}\n#include "{source}"\n'
            f"namespace kpb {{ __attribute__((aligned(16))) unsigned char "
            f"kpb_smem[{SHARED_CAPACITY}]; }}\n"
            'extern "C" int kpb_host_launch(const unsigned* grid, const unsigned* block,\n'
            "    size_t smem, void** params, char* err, size_t errlen) {\n"
            f"  return kpb_host::launch(&{expression}, grid, block, smem, kpb::kpb_smem,\n"
            "                          sizeof kpb::kpb_smem, params, err, errlen);\n}\n")


@functools.lru_cache(maxsize=None)
def _compiler_version(cxx: str) -> str:
    return subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout


def library_path(expression: str, block: int, source: Path = SOURCE) -> Path:
    cxx = compiler() or "c++"
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), Path(source).read_bytes(), SHIM.read_bytes(),
                 wrapper_source(expression, block, source).encode(), " ".join(CXX_FLAGS).encode(),
                 _compiler_version(cxx).encode()):
        digest.update(part)
    stem = "".join(c if c.isalnum() else "_" for c in expression.replace("kpb::", ""))
    return build_dir() / f"{stem.strip('_')}-{digest.hexdigest()[:16]}.so"


def build(expression: str, block: int, source: Path = SOURCE) -> Path:
    """Compile the instance unless its library is cached; returns the library's path."""
    path = library_path(expression, block, source)
    if path.exists():
        return path
    cxx = compiler()
    if cxx is None:
        raise HostBuildError("no host C++ compiler (g++ or c++; set CXX) for KPBENCH_CUDA_HOST=1")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src = Path(tmp) / "instance.cpp"
        src.write_text(wrapper_source(expression, block, source))
        out = Path(tmp) / path.name
        result = subprocess.run([cxx, *CXX_FLAGS, "-include", str(SHIM), str(src), "-o", str(out)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise HostBuildError(f"host build of {expression} failed:\n{result.stderr[-4000:]}")
        os.replace(out, path)     # atomic: concurrent processes never load a partial file
    return path


@functools.lru_cache(maxsize=None)
def _entry(expression: str, block: int, source: Path):
    fn = ctypes.CDLL(str(build(expression, block, source))).kpb_host_launch
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint), ctypes.c_size_t,
                   ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_size_t]
    return fn


C_TYPES = {"ptr": ctypes.c_void_p, "int": ctypes.c_int32, "float32": ctypes.c_float,
           "float64": ctypes.c_double}


def launch(expression: str, grid, block, smem: int, args, source: Path = SOURCE) -> None:
    """Run one launch on the host: ``args`` as (kind, value) pairs, kind in C_TYPES,
    passed like cuLaunchKernel's kernelParams (an array of pointers to the values)."""
    fn = _entry(expression, int(block[0]), Path(source))
    values = [C_TYPES[kind](value) for kind, value in args]
    params = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p)
                                               for v in values])
    err = ctypes.create_string_buffer(_ERR_BYTES)
    with _LOCK:
        rc = fn((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), smem, params, err,
                _ERR_BYTES)
    if rc != 0:
        raise HostBuildError(f"host execution of {expression} failed: {err.value.decode()}")
