"""Peers: the libraries people use today, run as kpbench backends (extra ``peers``).

Each peer is a :class:`kpbench.backends.Backend` with ``capabilities.primitives=False``
(it serves losses, not kernel products or softmins: sweeps mark those points
``unsupported``) and ``own_losses`` for what it computes -- ``sinkhorn`` and ``mmd``
where it has them -- called through :mod:`kpbench.losses` with the same validated
inputs as ours. A combination a peer lacks (``tol`` for GeomLoss, unbalanced for POT, ...) raises :class:`kpbench.backends.base.UnsupportedCombination`, recorded as
``unsupported`` with its reason. ``settings()`` returns the peer's own options as run,
and how they relate to ours (stored with every row).

* ``geomloss-tensorized`` / ``geomloss-online`` / ``geomloss-multiscale``: GeomLoss's
  ``SamplesLoss`` on dense torch tensors / KeOps / KeOps with clustering (:mod:`.geomloss`).
* ``pot``: POT's ``ot.solve_sample`` (log-domain Sinkhorn on the dense cost, its torch
  backend), :mod:`.pot`.
"""
