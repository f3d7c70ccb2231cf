"""Gradient accuracy: autograd's directional derivatives vs central finite differences
of the converged float64 value (the reference backend, :mod:`kpbench.reference`).

:func:`fd_gradient_errors` differentiates ``loss(a, x, b, y, backend=backend)`` with
torch autograd and compares <grad, d> with (L(z + h d) - L(z - h d)) / 2h computed by
the reference, for a random direction d of each of x, y and a direction of each of a, b
(mass-preserving -- two entries +1/-1 -- when the loss needs equal masses, else random).
The reference solves Sinkhorn to convergence whatever the solver options say, so this
measures the gradient a backend returns against the derivative of the quantity it
approximates (e.g. GeomLoss's unbalanced weight gradient: (rho + eps/2)/(rho + eps) of it).
"""
from __future__ import annotations

import numpy as np
import torch

POSITION_STEP = 1e-5
WEIGHT_STEP = 1e-6


def _directions(arrays, mass_preserving: bool, rng):
    out = []
    for k, t in enumerate(arrays):
        if k in (0, 2) and mass_preserving:   # weights a, b
            d = np.zeros(t.shape)
            i, j = rng.choice(t.shape[0], size=2, replace=False)
            d[i], d[j] = 1.0, -1.0
        else:
            d = rng.normal(size=t.shape)
        out.append(d)
    return out


def fd_gradient_errors(loss, a, x, b, y, *, backend, balanced: bool = True, seed: int = 0,
                       reference: str = "numpy", reference_loss=None) -> dict:
    """{"a", "x", "b", "y"}: |<grad, d> - fd| / |fd| for one direction d of each input.
    ``balanced``: weight directions keep the masses (balanced OT needs equal masses).
    ``reference_loss`` (default ``loss``) is what the finite differences evaluate, on
    backend ``reference``: e.g. the loss without the iteration count the point ran."""
    reference_loss = reference_loss or loss
    arrays = [np.asarray(t.detach().cpu().double() if isinstance(t, torch.Tensor) else t,
                         dtype=np.float64) for t in (a, x, b, y)]
    like = x if isinstance(x, torch.Tensor) else torch.zeros((), dtype=torch.float64)
    tensors = [torch.tensor(v, dtype=like.dtype, device=like.device, requires_grad=True)
               for v in arrays]
    grads = torch.autograd.grad(loss(*tensors, backend=backend), tensors)
    directions = _directions(arrays, balanced, np.random.default_rng(seed))
    errors = {}
    for k, name in enumerate("axby"):
        step = WEIGHT_STEP if name in "ab" else POSITION_STEP
        plus, minus = list(arrays), list(arrays)
        plus[k] = arrays[k] + step * directions[k]
        minus[k] = arrays[k] - step * directions[k]
        fd = (float(reference_loss(*plus, backend=reference))
              - float(reference_loss(*minus, backend=reference))) / (2 * step)
        autograd = float((grads[k].detach().cpu().double().numpy() * directions[k]).sum())
        errors[name] = abs(autograd - fd) / max(abs(fd), 1e-300)
    return errors


def fd_gradient_error(loss, a, x, b, y, **options) -> float:
    """The largest of :func:`fd_gradient_errors` (the sweep's ``grad_fd_rel_err``)."""
    return max(fd_gradient_errors(loss, a, x, b, y, **options).values())
