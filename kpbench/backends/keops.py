"""KeOps backend: symbolic N x M matrices (pykeops LazyTensors), never materialised.

KeOps generates and compiles one C++ (CPU, g++) or CUDA (GPU, nvrtc) routine per
formula at first use and caches it in a build folder. Compiler flags change what
is measured, so the build folder is keyed by the pykeops version and CXXFLAGS,
and the flags are recorded with every result (see ``build_flags``).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch

from .base import Backend, Capabilities, Pair, check_p

_configured_folder: str | None = None


def build_flags() -> str:
    return os.environ.get("CXXFLAGS", "")


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
