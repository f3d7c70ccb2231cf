"""GeomLoss (``SamplesLoss``) as kpbench backends: tensorized, online (KeOps), multiscale.

What GeomLoss's options mean next to ours:

* ``scaling``: the same thing -- the ratio of successive blurs of the eps-scaling
  annealing; its schedule runs the first eps (diameter**p) twice (ours:
  ``schedule="geomloss"`` reproduces it, see :func:`kpbench.sinkhorn.epsilon_schedule`);
  one symmetric iteration per eps, then one extrapolation step -- as ours without ``tol``.
* no ``tol`` / ``max_iter`` / fixed ``iters``: refused (``unsupported``).
* unbalanced (``reach``): its value is (rho + eps/2) <a, e^{-f_aa/rho} - e^{-f_ba/rho}> + ...
  and its ``UnbalancedWeight`` backward is never called by autograd, so its gradient is
  (rho + eps/2)/(rho + eps) times the true one along mass-preserving directions
  (kpbench.bench.measure.gradcheck shows it); run as is, on purpose.
* tensorized p=1: squared distances clamped at 1e-8 (distances >= 1e-4), so S(a, a) != 0.
* online float64: 1/eps is passed as a float32 tensor (``torch.Tensor([1 / eps])``),
  hence ~1e-9 relative differences from its tensorized backend in float64.
"""
from __future__ import annotations

from kpbench.backends.base import Backend, Capabilities
from kpbench.backends.sinkhorn_types import SinkhornOptions, SinkhornResult

from .common import DenseMemory, package_available, refuse


def _sinkhorn(bk, a, x, b, y, *, options: SinkhornOptions) -> SinkhornResult:
    refuse(options.iters is not None, bk, "a fixed iteration count (iters=)")
    refuse(options.tol is not None or options.max_iter is not None, bk,
           "a tolerance (tol=, max_iter=)")
    from geomloss import SamplesLoss

    o = options
    loss = SamplesLoss("sinkhorn", p=o.p, blur=o.blur, reach=o.reach, scaling=o.scaling,
                       debias=o.debias, potentials=o.potentials, backend=bk.geomloss_backend,
                       **bk.extra)
    out = loss(a, x, b, y)
    eps_list = geomloss_eps_list(x, y, o.p, o.blur, o.reach, o.scaling)
    return SinkhornResult(value=None if o.potentials else out,
                          potentials=out if o.potentials else None,
                          iterations=len(eps_list), eps_schedule=eps_list)


def geomloss_eps_list(x, y, p, blur, reach, scaling) -> list[float]:
    """The eps schedule GeomLoss runs on these clouds, from GeomLoss itself."""
    from geomloss._legacy.sinkhorn_divergence import scaling_parameters

    return [float(e) for e in scaling_parameters(x, y, p, blur, reach, None, scaling)[2]]


def _mmd(bk, a, x, b, y, *, kernel, blur):
    from geomloss import SamplesLoss

    return SamplesLoss(kernel, blur=blur, backend=bk.geomloss_backend, **bk.extra)(a, x, b, y)


class GeomLossBackend(Backend):
    """GeomLoss's ``SamplesLoss`` on one of its backends (see the module docstring)."""

    geomloss_backend = "tensorized"
    needs_keops = False
    extra: dict = {}
    array_module = "torch"
    own_losses = {"sinkhorn": _sinkhorn, "mmd": _mmd}

    def available(self):
        ok, why = package_available("geomloss")
        if ok and self.needs_keops:
            ok, why = package_available("pykeops", extra="keops")
        return ok, why

    def settings(self) -> dict:
        import geomloss

        return {"library": "geomloss", "version": geomloss.__version__,
                "backend": self.geomloss_backend, **self.extra,
                "schedule": "geomloss: [d^p] + exp(arange(p log d, p log blur, p log scaling))"
                            " + [blur^p], d = bounding-box diagonal (first eps twice)",
                "scaling": "ratio of successive blurs, as ours",
                "stopping": "none: one iteration per eps, then one extrapolation step"}


class GeomLossTensorized(DenseMemory, GeomLossBackend):
    name = "geomloss-tensorized"
    capabilities = Capabilities(autograd=True, cuda=True, float32=True, float64=True,
                                dense=True, primitives=False)
    # C_xy, C_yx, C_xx, C_yy kept for the whole solve, plus temporaries per softmin;
    # measured (float32 Sinkhorn, N = M = 1000 and 1500, scripts/peer_memory.py, five runs):
    # 6.0 to 13.0 N x M buffers (what is still alive from the previous call varies from
    # run to run), 8.0 to 18.0 with backward
    BUFFERS = {False: 16, True: 20}


class GeomLossOnline(GeomLossBackend):
    name = "geomloss-online"
    geomloss_backend = "online"
    needs_keops = True
    capabilities = Capabilities(autograd=True, cuda=True, float32=True, float64=True,
                                dense=False, primitives=False)


class GeomLossMultiscale(GeomLossBackend):
    name = "geomloss-multiscale"
    geomloss_backend = "multiscale"
    needs_keops = True
    extra = {"truncate": 5}
    capabilities = Capabilities(autograd=True, cuda=True, float32=True, float64=True,
                                dense=False, primitives=False)
