"""The float64 NumPy reference: the judge of every other backend.

Independent code paths: its own primitives (:mod:`.primitives`: direct coordinate
differences, chunked rows), its own kernel losses (:mod:`.losses`), and a Sinkhorn
written from the mathematics (:mod:`.sinkhorn`: plain log-domain iterations to an
optimality residual of 1e-12, primal and dual values) that shares nothing with the
solver it judges. Inputs may be NumPy arrays or torch tensors; results are float64
NumPy arrays / Python floats. No autograd.
"""
from __future__ import annotations

from kpbench.backends.base import Backend, Capabilities
from kpbench.backends.sinkhorn_types import SinkhornOptions, SinkhornResult

from .losses import np_hausdorff, np_log_likelihood, np_mmd, np_sinkhorn_multiplicative
from .primitives import np_kernel_product, np_kernel_product_grad, np_softmin
from .sinkhorn import np_sinkhorn


def _sinkhorn(bk, a, x, b, y, *, options: SinkhornOptions) -> SinkhornResult:
    # ``scaling`` and ``schedule`` are options of the annealed solver: not used here
    value, f, g, info = np_sinkhorn(a, x, b, y, p=options.p, blur=options.blur,
                                    reach=options.reach, debias=options.debias,
                                    iters=options.iters, tol=options.tol,
                                    max_iter=options.max_iter)
    return SinkhornResult(value=value, potentials=(f, g) if options.potentials else None,
                          iterations=info["iterations"], marginal_err=info["marginal_err"],
                          converged=info["converged"], primal=info["primal"])


def _own(function):
    return lambda bk, a, x, b, y, **params: function(a, x, b, y, **params)


class NumpyBackend(Backend):
    name = "numpy"
    array_module = "numpy"
    capabilities = Capabilities(autograd=False, cuda=False, float32=False, float64=True,
                                dense=False)
    own_losses = {
        "mmd": _own(np_mmd),
        "hausdorff": _own(np_hausdorff),
        "log_likelihood": _own(np_log_likelihood),
        "sinkhorn": _sinkhorn,
        "sinkhorn_multiplicative": _own(np_sinkhorn_multiplicative),
    }

    def computing_dtype(self, x) -> str:
        return "float64"

    def _kernel_product(self, x, y, b, *, kernel, blur):
        return np_kernel_product(x, y, b, kernel, blur)

    def _softmin(self, x, y, h, *, eps, p):
        return np_softmin(x, y, h, eps, p)


__all__ = ["NumpyBackend", "np_kernel_product", "np_kernel_product_grad", "np_softmin", "np_sinkhorn", "np_mmd",
           "np_hausdorff", "np_log_likelihood", "np_sinkhorn_multiplicative"]
