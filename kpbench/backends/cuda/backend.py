"""The ``cuda`` backend object: input checks, availability, autograd wrapping.

With ``KPBENCH_CUDA_HOST=1`` the same kernels run on the host (see :mod:`.host`): the
backend then takes CPU tensors, says "host execution: correctness only" and refuses to be
timed.
"""
from __future__ import annotations

from kpbench.errors import KPBenchError

from ..base import Backend, Capabilities
from . import host

SUPPORTED_DTYPES = ("float32", "float64")


class CudaBackend(Backend):
    name = "cuda"
    array_module = "torch"
    capabilities = Capabilities(autograd=True, cuda=True, float32=True, float64=True,
                                dense=False)

    def available(self) -> tuple[bool, str]:
        if host.enabled():
            if host.compiler() is None:
                return False, f"{host.ENV}=1 but no host C++ compiler (g++/c++, or CXX)"
            return True, host.LABEL
        return self._gpu_available()

    def settings(self) -> dict:
        """Where the kernels ran, recorded with each row (backend_settings)."""
        return {"execution": f"{host.LABEL} ({host.ENV}=1)" if host.enabled() else "gpu"}

    def timing_refusal(self) -> str | None:
        """Why speed/memory figures of this backend would be meaningless, or None."""
        if host.enabled():
            return f"cuda {host.LABEL} ({host.ENV}=1): no GPU timing or memory figures"
        return None

    def _gpu_available(self) -> tuple[bool, str]:
        try:
            import torch
        except ImportError:
            return False, "torch is not installed"
        if getattr(torch.version, "hip", None):
            return False, f"torch {torch.__version__} is a ROCm build; these kernels need CUDA"
        if not torch.cuda.is_available():
            if torch.version.cuda is None:
                return False, f"no CUDA device (torch {torch.__version__} is a CPU-only build)"
            return False, "no CUDA device (torch.cuda.is_available() is False)"
        try:
            import cupy
        except ImportError:
            return False, "cupy not installed (pip install 'kpbench[cuda]', i.e. cupy-cuda13x)"
        except Exception as exc:  # a broken CUDA install surfaces here, not as a crash
            return False, f"cupy cannot be imported: {type(exc).__name__}: {exc}"
        try:
            cupy.cuda.nvrtc.getVersion()
        except Exception as exc:
            return False, f"nvrtc not found (CuPy compiles the kernels with it): {exc}"
        return True, ""

    def check_scaled_distances(self, diameter, kernel, blur, dtype):
        """kernels.cu multiplies the centred coordinates by s ~ 1/blur (launcher.kernel_scales)
        and subtracts them: s x diameter must be finite, or inf - inf gives NaN (float32,
        laplacian, blur 1e-30, span 1e9: NaN where torch and the reference give 0)."""
        import numpy as np

        from . import launcher

        s, _ = launcher.kernel_scales(kernel, blur, dtype)
        if not s * diameter <= float(np.finfo(dtype).max):
            raise KPBenchError(f"the cuda kernels scale the coordinates by {s:.3g} ({kernel} "
                               f"kernel, blur={blur!r}): differences across the clouds' span "
                               f"{diameter:.3g} reach {s * diameter:.3g} and overflow {dtype}; "
                               "raise the blur or rescale the coordinates")

    def _kernel_product(self, x, y, b, *, kernel, blur):
        from ..torch_dense import centred
        from . import launcher
        from .autograd import KernelProduct

        x, y, b = self._prepare(x, y, b)
        x, y = centred(x, y)
        out = KernelProduct.apply(x, y, b.reshape(b.shape[0], -1), kernel, blur, launcher)
        return out.reshape((x.shape[0],) + tuple(b.shape[1:]))

    def _softmin(self, x, y, h, *, eps, p):
        from ..torch_dense import centred
        from . import launcher
        from .autograd import Softmin

        x, y, h = self._prepare(x, y, h)
        x, y = centred(x, y)
        return Softmin.apply(x, y, h, eps, p, launcher)

    def _prepare(self, x, *others):
        """Tensors of one float dtype on one device (CUDA; CPU for host execution), contiguous
        (b/h cast to x's dtype)."""
        import torch

        tensors = (x, *others)
        if not all(isinstance(t, torch.Tensor) for t in tensors):
            raise KPBenchError("the cuda backend takes torch tensors")
        device = "cpu" if host.enabled() else "cuda"
        if x.device.type != device:
            raise KPBenchError(
                f"the cuda backend computes on CUDA tensors; x is on {x.device} "
                "(move the data with .cuda(), or use the torch/keops backend)"
                if device == "cuda" else
                f"the cuda backend in {host.LABEL} ({host.ENV}=1) computes on CPU tensors; "
                f"x is on {x.device}")
        dtype = str(x.dtype).replace("torch.", "")
        if dtype not in SUPPORTED_DTYPES:
            raise KPBenchError(f"the cuda backend supports float32 and float64, got {dtype}")
        for t in others:
            if t.device != x.device:
                raise KPBenchError(f"all inputs must be on {x.device}; got one on {t.device}")
        self.require_available()
        return (x.contiguous(), *(t.to(x.dtype).contiguous() for t in others))
