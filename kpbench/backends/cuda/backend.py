"""The ``cuda`` backend object: input checks, availability, autograd wrapping."""
from __future__ import annotations

from ..base import Backend, Capabilities, KPBenchError

SUPPORTED_DTYPES = ("float32", "float64")


class CudaBackend(Backend):
    name = "cuda"
    array_module = "torch"
    capabilities = Capabilities(autograd=True, cuda=True, float32=True, float64=True,
                                dense=False)

    def available(self) -> tuple[bool, str]:
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

    def _kernel_product(self, x, y, b, *, kernel, blur):
        from . import launcher
        from .autograd import KernelProduct

        x, y, b = self._prepare(x, y, b)
        out = KernelProduct.apply(x, y, b.reshape(b.shape[0], -1), kernel, blur, launcher)
        return out.reshape((x.shape[0],) + tuple(b.shape[1:]))

    def _softmin(self, x, y, h, *, eps, p):
        from . import launcher
        from .autograd import Softmin

        x, y, h = self._prepare(x, y, h)
        return Softmin.apply(x, y, h, eps, p, launcher)

    def _prepare(self, x, *others):
        """CUDA tensors of one float dtype on one device, contiguous (b/h cast to x's dtype)."""
        import torch

        tensors = (x, *others)
        if not all(isinstance(t, torch.Tensor) for t in tensors):
            raise KPBenchError("the cuda backend takes torch tensors")
        if x.device.type != "cuda":
            raise KPBenchError(
                f"the cuda backend computes on CUDA tensors; x is on {x.device} "
                "(move the data with .cuda(), or use the torch/keops backend)")
        dtype = str(x.dtype).replace("torch.", "")
        if dtype not in SUPPORTED_DTYPES:
            raise KPBenchError(f"the cuda backend supports float32 and float64, got {dtype}")
        for t in others:
            if t.device != x.device:
                raise KPBenchError(f"all inputs must be on {x.device}; got one on {t.device}")
        self.require_available()
        return (x.contiguous(), *(t.to(x.dtype).contiguous() for t in others))
