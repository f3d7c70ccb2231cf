"""Lagrangian gradient flows x <- x - lr * grad_x(Loss) / a, shared by the 1D and 2D reproductions.

``euler_step`` is also the "flow_step" workload of the sweeps.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np
import torch

from kpbench import losses
from kpbench.errors import KPBenchError
from kpbench.reproductions.common import Setup, Stopwatch, finite, nan_to_none, run_meta

SNAPSHOT_TIMES = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0)


def euler_step(loss_fn, x, a, y, b, lr):
    """One explicit Euler step of the flow x' = -grad_x(Loss)/a: returns (new_x, loss value).

    ``loss_fn(a, x, b, y)`` returns a 0-dim tensor; ``a`` (N,) are the weights of x (None:
    uniform, i.e. the step is lr * N * grad). Dividing by a_i turns the gradient w.r.t. a
    point into the velocity of its mass, so the flow does not depend on N.
    """
    x = x.detach().requires_grad_(True)
    loss = loss_fn(a, x, b, y)
    (grad,) = torch.autograd.grad(loss, [x])
    weights = a if a is not None else torch.full((x.shape[0],), 1.0 / x.shape[0],
                                                  dtype=x.dtype, device=x.device)
    new_x = (x - lr * grad / weights[:, None]).detach()
    return new_x, float(loss.detach())


def labeled_l2(a, x, b, y, backend=None):
    """The spring energy 1/2 sum_k a_k |x_k - y_k|^2 of the labeled pairing x_k <-> y_k."""
    if x.shape != y.shape:
        raise KPBenchError(f"labeled L2 pairs x_k with y_k: needs N = M, got {tuple(x.shape)} "
                           f"and {tuple(y.shape)}")
    if a is None:
        a = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=x.dtype, device=x.device)
    return 0.5 * (a * ((x - y) ** 2).sum(1)).sum()


@dataclass(frozen=True)
class LossSpec:
    """A named loss with its parameters: ``name`` is a kpbench.losses.make_loss name, or
    "labeled_l2" (backend-independent, plain torch)."""

    label: str
    name: str
    params: tuple = ()   # sorted (key, value) pairs, so the spec is hashable

    @classmethod
    def of(cls, label: str, name: str, **params) -> "LossSpec":
        return cls(label, name, tuple(sorted(params.items())))

    def param(self, key, default=None):
        return dict(self.params).get(key, default)

    def loss_fn(self, backend: str):
        """loss(a, x, b, y) -> 0-dim tensor on ``backend``."""
        if self.name == "labeled_l2":
            return labeled_l2
        bound = losses.make_loss(self.name, **dict(self.params))
        return lambda a, x, b, y: bound(a, x, b, y, backend=backend)

    def columns(self) -> dict:
        """The loss's identity as row columns."""
        kernel = self.param("kernel", "energy" if self.name == "energy" else None)
        return {"loss": self.label, "loss_name": self.name, "kernel": kernel,
                "blur": nan_to_none(self.param("blur")), "p": self.param("p"),
                "reach": nan_to_none(self.param("reach"))}


@dataclass
class Snapshot:
    step: int
    t: float
    x: np.ndarray            # positions (N, D), float64
    velocity: np.ndarray     # -grad/a at x (N, D); NaN where the step failed
    loss: float
    time_per_iter_s: float   # mean wall time of the steps since the previous snapshot
    nan: bool


@dataclass
class FlowTrace:
    spec: LossSpec
    snapshots: list[Snapshot] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    status: str = "ok"       # ok | nan | error | oom
    error: str = ""

    @property
    def time_per_iter_s(self) -> float:
        """Median step time, the first (compilation, caches) excluded when there are others."""
        times = self.step_times[1:] or self.step_times
        return statistics.median(times) if times else float("nan")


def snapshot_steps(times, lr: float) -> list[int]:
    return sorted({int(round(t / lr)) for t in times})


def run_flow(spec: LossSpec, x0, a, y, b, setup: Setup, *, lr: float, t_max: float = 5.0,
             times=SNAPSHOT_TIMES) -> FlowTrace:
    """Integrate the flow of ``spec`` from x0 for t in [0, t_max] (t_max/lr + 1 steps).

    A non-finite loss or step stops the flow with status "nan" (recorded, not raised); a
    KPBenchError/MemoryError/RuntimeError stops it with status "error"/"oom".
    """
    loss_fn = spec.loss_fn(setup.backend)
    n_steps = int(round(t_max / lr)) + 1
    keep = set(snapshot_steps([t for t in times if t <= t_max + 1e-12] + [t_max], lr))
    trace, x, since_snapshot = FlowTrace(spec), x0, []
    for step in range(n_steps):
        try:
            with Stopwatch(setup) as watch:
                new_x, value = euler_step(loss_fn, x, a, y, b, lr)
        except (KPBenchError, MemoryError, RuntimeError) as exc:
            trace.status = "oom" if isinstance(exc, MemoryError) else "error"
            trace.error = f"step {step}: {type(exc).__name__}: {exc}"
            break
        trace.step_times.append(watch.seconds)
        since_snapshot.append(watch.seconds)
        bad = not (np.isfinite(value) and finite(new_x))
        if step in keep or bad:
            velocity = ((new_x - x) / lr).cpu().double().numpy()
            trace.snapshots.append(Snapshot(
                step=step, t=step * lr, x=x.cpu().double().numpy(), velocity=velocity,
                loss=value, time_per_iter_s=float(np.mean(since_snapshot)), nan=bad))
            since_snapshot = []
        if bad:
            trace.status, trace.error = "nan", f"non-finite loss or step at step {step}"
            break
        x = new_x
    return trace


def flow_rows(trace: FlowTrace, setup: Setup, meta: dict, distances: dict, *, y_np,
              lr: float, extra: dict) -> list[dict]:
    """One row per snapshot: the loss identity, the step, the distances to the target
    (one row with step null when the flow failed before its first step)."""
    base = setup.row(**trace.spec.columns(), **extra, lr=lr, status=trace.status,
                     error=trace.error, **meta)
    key = (f"{meta.get('sweep')}:{base['loss']}:{setup.backend}:{setup.dtype}:"
           f"{base.get('N')}:{base.get('M')}:{setup.seed}")
    rows = []
    for snap in trace.snapshots:
        dist = {name: (None if snap.nan else nan_to_none(fn(snap.x, y_np)))
                for name, fn in distances.items()}
        rows.append({**base, "key": f"{key}:{snap.step}", "step": snap.step, "t": snap.t,
                     "loss_value": nan_to_none(snap.loss), "nan": snap.nan,
                     "time_per_iter_s": snap.time_per_iter_s, **dist})
    if not rows:
        rows.append({**base, "key": f"{key}:failed", "step": None, "t": None,
                     "loss_value": None, "nan": False, "time_per_iter_s": None,
                     **{name: None for name in distances}})
    return rows


SUMMARY_COLUMNS = ["loss", "status", "t_final", "w2_start", "w2_final", "energy_final",
                   "loss_final", "time_per_iter_s", "figure"]


def summary(trace: FlowTrace, rows: list[dict], figure) -> dict:
    """The last snapshot's numbers, for the printed table."""
    last = rows[-1] if rows else {}
    return {"loss": trace.spec.label, "status": trace.status, "t_final": last.get("t"),
            "loss_final": last.get("loss_value"), "w2_final": last.get("w2"),
            "energy_final": last.get("energy"),
            "w2_start": rows[0].get("w2") if rows else None,
            "time_per_iter_s": trace.time_per_iter_s,
            "figure": str(figure) if figure else None, "error": trace.error}


def run_suite(specs, x0_np, y_np, setup: Setup, *, store, table: str, lr: float, t_max: float,
              distances: dict, draw=None, figures_name: str, a_np=None, b_np=None,
              extra: dict | None = None) -> list[dict]:
    """Run every loss of ``specs`` on the same inputs; each loss's rows are one Parquet part
    (written as soon as it ends), its figure one PNG. Returns one summary per loss."""
    meta = run_meta(table, store)
    x0, y = setup.tensor(x0_np), setup.tensor(y_np)
    a = setup.tensor(a_np if a_np is not None else np.full(len(x0_np), 1.0 / len(x0_np)))
    b = setup.tensor(b_np if b_np is not None else np.full(len(y_np), 1.0 / len(y_np)))
    extra = {"N": len(x0_np), "M": len(y_np), "D": x0_np.shape[1], **(extra or {})}
    summaries = []
    for spec in specs:
        trace = run_flow(spec, x0, a, y, b, setup, lr=lr, t_max=t_max)
        rows = flow_rows(trace, setup, meta, distances, y_np=y_np, lr=lr, extra=extra)
        if rows:
            store.append(table, rows)
        figure = None
        if draw is not None and trace.snapshots:
            figure = store.figures_dir(figures_name) / f"{spec.label}.png"
            draw(trace, y_np, figure)
        summaries.append(summary(trace, rows, figure))
    return summaries
