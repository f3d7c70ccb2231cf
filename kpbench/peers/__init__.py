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
* ``flash-sinkhorn`` / ``flash-sinkhorn-no-tf32``: FlashSinkhorn's Triton ``SamplesLoss``
  with TF32 dot products on / off; without a GPU through Triton's interpreter, for
  accuracy only (:mod:`.flash_sinkhorn`).
* ``ott`` / ``ott-online``: OTT-JAX's ``sinkhorn_divergence`` on a ``PointCloud``, jit-compiled,
  with the cost matrices / ``batch_size`` rows at a time (:mod:`.ott`).
"""
