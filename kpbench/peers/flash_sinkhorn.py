"""FlashSinkhorn (``flash-sinkhorn``, Triton kernels) as kpbench backends.

``flash-sinkhorn``: its ``SamplesLoss`` with its default TF32 dot products
(``allow_tf32=True``: the centred coordinates rounded to TF32, 10 mantissa bits);
``flash-sinkhorn-no-tf32``: the same with ``allow_tf32=False`` (FP32 dot products). Two
settings of one peer, two rows: the TF32 error is a finding users need.

What FlashSinkhorn's options mean next to ours (its ``samples_loss.py``, 0.4.1):

* cost: its default is |x - y|^2 (``half_cost=False``); ours is |x - y|^2 / 2:
  ``half_cost=True`` (cost_scale 0.5), eps = blur^2 as ours. p = 1: not offered (refused).
* schedule: it takes an explicit ``eps_list``: it is given ours
  (:func:`kpbench.sinkhorn.epsilon_schedule` of the point's ``schedule``, or ``iters``
  times blur^2), run by its symmetric solver (one averaged update per eps, as ours),
  then its last extrapolation step (``last_extrapolation=True``, as ours).
* debias: passed through (its default is ``debias=False``).
* unbalanced: ``reach`` -> rho = reach^2 (cost_scale applies to C, not rho: ours); its
  value is GeomLoss's, (rho + eps/2) <a, 1 - e^{-f/rho}> + ... (``_dual_cost``).
* weights: ``normalize=False`` (it would rescale them to sum 1); it assumes probability
  weights, so totals other than 1 are refused.
* precision: it centres the clouds and computes in float32 whatever the input: float64
  points are refused (``capabilities.float64=False``).
* not wired: ``tol`` (its ``threshold`` tests the change of its shifted potentials
  inside the eps list and never adds iterations), ``potentials=True`` (its potentials
  are those of OT(a, b), not debiased).

Without a CUDA device it runs through Triton's interpreter (see :func:`_interpreted`):
the right numbers, slowly, so speed and memory points are refused ("interpreted:
correctness only"). The interpreter computes the dot products in float32 NumPy: with
TF32 on, the coordinates are rounded as on a GPU, but tensor-core TF32 products are not
reproduced.
"""
from __future__ import annotations

import os
import sys

import torch

from kpbench.backends.base import Backend, Capabilities
from kpbench.backends.sinkhorn_types import SinkhornOptions, SinkhornResult
from kpbench.errors import BackendUnavailable

from .common import refuse

LABEL = "interpreted: correctness only"
INTERPRET_ENV = "TRITON_INTERPRET"
MASS_TOL = 1e-6     # |sum(weights) - 1| accepted (it computes with probability weights)


def gpu_visible() -> bool:
    return torch.cuda.is_available()


# -- the Triton interpreter: the one place that makes FlashSinkhorn run without a GPU ------
class _HostAsCuda(torch.Tensor):
    """A CPU tensor that answers ``is_cuda`` True, and so do the tensors computed from it.

    FlashSinkhorn refuses CPU tensors by ``is_cuda`` checks (``SamplesLoss.forward``, its
    gradient kernel); under Triton's interpreter its kernels do run on CPU tensors. This
    bypasses those checks only: the tensors stay on the host, nothing else is faked."""

    @property
    def is_cuda(self):
        return True


def _interpreted() -> bool:
    """Enable Triton's interpreter for FlashSinkhorn when no CUDA device is visible (True).

    ``TRITON_INTERPRET=1`` must be set before ``flash_sinkhorn`` is imported (its
    ``triton.jit`` kernels become interpreted functions then) and stay set while they run
    (Triton re-reads it, in the backward too), so it is set for the rest of this process:
    a process without a GPU, where no compiled Triton kernel could run anyway. It is never
    set where a GPU is visible, never read from stored data. Kernels are launched with
    ``autotune=False`` (its default block sizes: autotuning needs a GPU driver)."""
    if gpu_visible():
        return False
    if os.environ.get(INTERPRET_ENV) != "1":
        if "triton" in sys.modules:   # its standard library is then compiled-only
            raise BackendUnavailable(
                f"triton was imported before kpbench could set {INTERPRET_ENV}=1 (no CUDA "
                f"device here): run with {INTERPRET_ENV}=1 in the environment")
        os.environ[INTERPRET_ENV] = "1"
    return True


def _library():
    """The ``flash_sinkhorn`` module, imported under the interpreter where there is no GPU."""
    imported_before = "flash_sinkhorn" in sys.modules
    interpreted = _interpreted()
    import flash_sinkhorn
    from flash_sinkhorn.kernels import sinkhorn_flashstyle_sqeuclid as kernels
    from triton.runtime.interpreter import InterpretedFunction

    kernel = kernels._flashsinkhorn_symmetric_step_kernel.fn   # under triton.heuristics
    if interpreted and not isinstance(kernel, InterpretedFunction):
        raise BackendUnavailable(
            "flash_sinkhorn was imported " + ("before kpbench " if imported_before else "")
            + f"without Triton's interpreter ({INTERPRET_ENV}=1) and there is no CUDA device")
    return flash_sinkhorn


def _on_host(tensors):
    return [t.as_subclass(_HostAsCuda) for t in tensors]


# -- the loss ---------------------------------------------------------------------------
def _sinkhorn(bk, a, x, b, y, *, options: SinkhornOptions) -> SinkhornResult:
    from kpbench.sinkhorn import diameter, epsilon_schedule, fixed_schedule

    o = options
    refuse(o.p != 2, bk, "p=1 (squared Euclidean cost only)")
    refuse(o.potentials, bk, "potentials=True (its potentials are OT(a, b)'s, not debiased)")
    refuse(o.tol is not None or o.max_iter is not None, bk, "a tolerance (tol=, max_iter=)")
    refuse(bk.interpreted and x.is_cuda, bk, "CUDA tensors without a visible CUDA device")
    refuse(not bk.interpreted and not x.is_cuda, bk,
           "CPU tensors where a GPU is visible (its kernels run on CUDA tensors: --device cuda)")
    for name, w in (("a", a), ("b", b)):
        refuse(abs(float(w.detach().sum()) - 1.0) > MASS_TOL, bk,
               f"weights {name} of total {float(w.detach().sum()):.6g} (probability weights only)")
    eps_list = (epsilon_schedule(diameter(x, y, o.blur, o.p), o.blur, o.p, o.scaling, o.schedule)
                if o.iters is None else fixed_schedule(o.blur, o.p, o.iters))
    loss = _library().SamplesLoss(
        "sinkhorn", p=2, blur=o.blur, reach=o.reach, scaling=o.scaling, debias=o.debias,
        half_cost=True, eps_list=eps_list, normalize=False, allow_tf32=bk.tf32,
        autotune=not bk.interpreted)
    if bk.interpreted:
        value = loss(*_on_host((a, x, b, y))).as_subclass(torch.Tensor)
    else:
        value = loss(a, x, b, y)
    return SinkhornResult(value=value.to(x.dtype), iterations=len(eps_list),
                          eps_schedule=eps_list)


class FlashSinkhorn(Backend):
    """FlashSinkhorn's ``SamplesLoss`` (symmetric solver), see the module docstring."""

    name = "flash-sinkhorn"
    tf32 = True
    array_module = "torch"
    capabilities = Capabilities(autograd=True, cuda=True, float32=True, float64=False,
                                dense=False, primitives=False)
    own_losses = {"sinkhorn": _sinkhorn}

    @property
    def interpreted(self) -> bool:
        return not gpu_visible()

    def available(self):
        try:   # not package_available: the first import must be under the interpreter
            _library()
        except ImportError as exc:
            return False, f"flash-sinkhorn not installed (pip install 'kpbench[peers]'): {exc}"
        except BackendUnavailable as exc:
            return False, str(exc)
        return True, LABEL if self.interpreted else ""

    def timing_refusal(self) -> str | None:
        if self.interpreted:
            return f"{self.name} {LABEL} (Triton's interpreter on the host, no CUDA device)"
        return None

    def settings(self) -> dict:
        import triton

        flash_sinkhorn = _library()
        return {"library": "flash-sinkhorn", "version": flash_sinkhorn.__version__,
                "triton": triton.__version__, "backend": "symmetric",
                "execution": (f"Triton interpreter on the host ({INTERPRET_ENV}=1, "
                              "autotune=False): correctness only") if self.interpreted
                             else "CUDA (autotuned)",
                "cost": "half_cost=True: |x-y|^2/2 (= ours; its default |x-y|^2)",
                "eps_mapping": "eps_list = kpbench's schedule (eps = blur^2), symmetric "
                               "updates, last extrapolation",
                "debias": "as asked (its default False)",
                "allow_tf32": self.tf32, "truncate_tf32": self.tf32,
                "use_exp2": True, "normalize": False, "centring": "joint centroid, float32",
                "stopping": "none: one iteration per eps of the list (tol refused)",
                "unbalanced": "rho = reach^2, GeomLoss's value formula",
                "grad": "its analytic gradients (no backprop through the loop)"}


class FlashSinkhornNoTF32(FlashSinkhorn):
    name = "flash-sinkhorn-no-tf32"
    tf32 = False
