"""KeOps backend: symbolic N x M matrices (pykeops LazyTensors), never materialised.

KeOps generates and compiles one C++ (CPU, g++) or CUDA (GPU, nvrtc) routine per
formula at first use and caches it in a build folder. Compiler flags change what
is measured, so the build folder is keyed by the pykeops version and CXXFLAGS,
and the flags are recorded with every result (see ``build_flags``). KeOps pastes
CXXFLAGS into a shell command: flags outside the allow-list of
:mod:`kpbench.backends.cxxflags` make the backend unavailable, nothing is compiled.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from kpbench.errors import KPBenchError

from .base import Backend, Capabilities, Pair, check_p
from .cxxflags import check_cxxflags

_configured_folder: str | None = None


def build_flags() -> str:
    """The CXXFLAGS KeOps compiles with, checked (KPBenchError naming the token otherwise).

    keopscore reads the variable once, when first imported, and compiles with that copy,
    while every row records the variable: the two must agree."""
    flags = check_cxxflags(os.environ.get("CXXFLAGS", ""), "the environment variable CXXFLAGS")
    loaded = _loaded_flags()
    if loaded is not None and loaded != flags:
        check_cxxflags(loaded, "CXXFLAGS as KeOps read it when first imported")
        raise KPBenchError(f"KeOps compiles with CXXFLAGS={loaded!r} (read when pykeops was first "
                           f"imported) but the environment now says {flags!r}, which the rows "
                           "would record: set CXXFLAGS before the process imports pykeops")
    return flags


def _loaded_flags() -> str | None:
    try:
        from keopscore.config import config
    except ImportError:
        return None
    return getattr(config, "cpp_env_flags", None) or ""


def build_root() -> Path:
    """KPBENCH_BUILD_DIR, else build/ of a source checkout, else ~/.cache/kpbench."""
    if os.environ.get("KPBENCH_BUILD_DIR"):
        return Path(os.environ["KPBENCH_BUILD_DIR"])
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").exists():
        return checkout / "build"
    return Path.home() / ".cache" / "kpbench"


def _configure_build_folder() -> None:
    global _configured_folder
    import pykeops

    tag = hashlib.sha1(build_flags().encode()).hexdigest()[:8]
    folder = build_root() / f"keops-{pykeops.__version__}-{tag}"
    if _configured_folder != str(folder):
        folder.mkdir(parents=True, exist_ok=True)
        pykeops.set_verbose(False)
        pykeops.set_build_folder(str(folder))
        _configured_folder = str(folder)
        _lock_compiles()


@contextmanager
def _formula_lock(formula: str):
    """An exclusive lock, across processes, on one formula's files in the build folder."""
    try:
        import fcntl
    except ImportError:       # no flock (Windows, which pykeops does not support anyway)
        yield
        return
    locks = Path(_configured_folder) / "locks"
    locks.mkdir(exist_ok=True)
    name = hashlib.sha1(formula.encode()).hexdigest()[:16] + ".lock"
    with open(locks / name, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_compiles() -> None:
    """pykeops has no lock: two processes compiling one formula into one build folder (two
    Ray workers of a sweep on one machine, two pytest-xdist workers) truncate each other's
    source or import a half-written library. pykeops writes the folder only when its
    in-process routine cache misses, by constructing the routine's loader class: that
    constructor runs here under a lock on the formula, so the second process waits and
    then finds the library built. Cache hits (every timed call) never see the lock."""
    from pykeops.common.keops_io import keops_binder

    for cache in keops_binder.values():
        loader = cache.cls
        if getattr(loader, "kpbench_locked", False):
            continue

        class Locked(loader):
            kpbench_locked = True

            def __init__(self, *args, fast_init=False):
                # a full init's formula is args[5]; a fast init (from pickled params) imports
                # a library some process finished building: lock on its formula as well
                formula = args[0].red_formula_string if fast_init else args[5]
                with _formula_lock(str(formula)):
                    super().__init__(*args, fast_init=fast_init)

        Locked.__name__ = Locked.__qualname__ = loader.__name__
        cache.cls = Locked


def _lazy(x, y):
    from pykeops.torch import LazyTensor

    return LazyTensor(x[:, None, :].contiguous()), LazyTensor(y[None, :, :].contiguous())


# the exponent h_j - C_ij / eps of the softmin, with P = 1 / (p eps): one routine per
# (p, D), eps a run-time parameter (no recompilation along the eps schedule)
_SOFTMIN_FORMULAS = {2: "B - P * SqDist(X, Y)", 1: "B - P * Norm2(X - Y)"}
_routines: dict = {}


def _softmin_routine(p: int, D: int):
    from pykeops.torch import Genred

    _configure_build_folder()
    if (p, D) not in _routines:
        aliases = [f"X = Vi({D})", f"Y = Vj({D})", "B = Vj(1)", "P = Pm(1)"]
        _routines[p, D] = Genred(_SOFTMIN_FORMULAS[p], aliases, reduction_op="LogSumExp", axis=1)
    return _routines[p, D]


class KeOpsPair(Pair):
    """Contiguous copies of both clouds and the compiled log-sum-exp reduction, made once."""

    def __init__(self, bk, x, y, p):
        super().__init__(bk, x, y, p)
        self._x, self._y = x.contiguous(), y.contiguous()
        self._routine = _softmin_routine(p, x.shape[1])

    def _lse(self, u, v, h, eps):
        scale = torch.tensor([1.0 / (self.p * eps)], dtype=u.dtype, device=u.device)
        return -eps * self._routine(u, v, h.reshape(-1, 1).contiguous(), scale).reshape(-1)

    def softmin(self, h, eps):
        return self._lse(self._x, self._y, h, eps)

    def softmin_t(self, h, eps):
        return self._lse(self._y, self._x, h, eps)


class KeOpsBackend(Backend):
    name = "keops"
    array_module = "torch"
    capabilities = Capabilities(autograd=True, cuda=True, float32=True, float64=True,
                                dense=False)

    def available(self):
        try:
            import pykeops  # noqa: F401
        except ImportError:
            return False, "pykeops not installed (pip install 'kpbench[keops]')"
        import torch

        try:
            build_flags()
        except KPBenchError as exc:
            return False, str(exc)

        if not torch.cuda.is_available() and shutil.which(os.environ.get("CXX", "g++")) is None:
            return False, "no CUDA device and no C++ compiler (g++) for KeOps' CPU mode"
        return True, ""

    def prepare_pair(self, x, y, p, reuse=None):
        return KeOpsPair(self, x, y, check_p(p))

    def _kernel_product(self, x, y, b, *, kernel, blur):
        from pykeops.torch import LazyTensor

        _configure_build_folder()
        X, Y = _lazy(x, y)
        d2 = X.sqdist(Y)
        if kernel == "gaussian":
            K = (d2 / (-2 * blur**2)).exp()
        elif kernel == "laplacian":
            K = (d2.sqrt() / -blur).exp()
        else:
            K = -d2.sqrt()
        columns = b.reshape(b.shape[0], -1).contiguous()
        out = (K * LazyTensor(columns[None, :, :])).sum(dim=1)
        return out.reshape((x.shape[0],) + tuple(b.shape[1:]))

    def _softmin(self, x, y, h, *, eps, p):
        from pykeops.torch import LazyTensor

        _configure_build_folder()
        X, Y = _lazy(x, y)
        d2 = X.sqdist(Y)
        cost = d2 / 2 if p == 2 else d2.sqrt()
        H = LazyTensor(h.reshape(1, -1, 1).contiguous())
        return -eps * (H - cost / eps).logsumexp(dim=1).reshape(-1)
