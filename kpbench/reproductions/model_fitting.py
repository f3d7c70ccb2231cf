"""Fitting a generative model by minimum-divergence estimation (the classic notebook).

The model (kpbench.datasets.polygmm_model): class -1 with probability P = sigmoid(p),
latent t = -1 + sigma_- z or +1 + sigma_+ z, mapped to the plane by a polynomial curve
[x(t), y(t)]. Sampling is reparameterised with fixed standard normal draws z, and the class
masses are carried by the weights (N/2 points per class, weighted P/cut and (1-P)/(N-cut)),
so every fidelity below is differentiable in p, the sigmas and the coefficients.

The target: 200 samples of the degree-3 ground truth plus 0.05 Gaussian noise. A degree-2
model (p=0, sigma=(.1, .1), coefficients .1) is fitted with Adam (lr .1, eps 1e-2) under:

* kernel distance, energy kernel (blur .25 recorded, the energy kernel has no scale), 1000 its
* negative log-likelihood of the target under the model's Gaussian KDE (blur .25), 500 its
* multiplicative Sinkhorn (blur .15): in float32 exp(-C/eps) underflows, K v = 0 and the
  cost is NaN from the first iterations. That is a finding: the iteration is recorded with
  nan=True and that fidelity stops; the others go on
* log-domain Sinkhorn (blur .15), 500 its

Rows (one per iteration) go to the table ``model_fitting``; the figure to
``figures/model_fitting/model_fitting.png``.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np
import torch

from kpbench import datasets
from kpbench.errors import KPBenchError
from kpbench.results.files import save_figure
from kpbench.results.store import ResultStore
from kpbench.reproductions.common import (
                                          Setup, Stopwatch, finite, make_setup, nan_to_none, print_table, pyplot, run_meta,
                                          select_specs,
                                          )
from kpbench.reproductions.flows import LossSpec
from kpbench.reproductions.metrics import energy_to_target

TABLE = "model_fitting"
FIGURES = "model_fitting"
DEFAULT_N = 200          # model points (N/2 per class)
DEFAULT_M = 200          # target samples
NOISE = 0.05
DEGREE = 2
INIT = {"p": 0.0, "sigma": (0.1, 0.1), "coef": 0.1}
ADAM = {"lr": 0.1, "eps": 1e-2}
EVAL_POINTS = 2000       # latent draws for the final distance between fitted model and truth


@dataclass(frozen=True)
class Fidelity:
    spec: LossSpec
    iterations: int

    @property
    def label(self) -> str:
        return self.spec.label


# inner iterations of the multiplicative Sinkhorn: enough to show the float32 NaN, cheap
# enough to run the whole fit in float64 too (it backpropagates through the loop)
FIDELITIES = (
    Fidelity(LossSpec.of("kernel_energy", "mmd", kernel="energy", blur=0.25), 1000),
    Fidelity(LossSpec.of("nll_gaussian", "log_likelihood", blur=0.25), 500),
    Fidelity(LossSpec.of("sinkhorn_multiplicative", "sinkhorn_multiplicative", p=2, blur=0.15,
                         iters=100), 500),
    Fidelity(LossSpec.of("sinkhorn_log", "sinkhorn", p=2, blur=0.15), 500),
)


# ------------------------------------------------------------------------ the model
def init_params(setup: Setup, degree: int = DEGREE) -> dict[str, torch.Tensor]:
    """The trainable parameters, as leaf tensors: p, sigma (2,), coef_x, coef_y (degree+1,)."""
    def leaf(values):
        return torch.tensor(values, dtype=setup.torch_dtype, device=setup.device,
                            requires_grad=True)

    coef = [INIT["coef"]] * (degree + 1)
    return {"p": leaf(INIT["p"]), "sigma": leaf(list(INIT["sigma"])),
            "coef_x": leaf(coef), "coef_y": leaf(list(coef))}


def model_cloud(params: dict, s: torch.Tensor, z: torch.Tensor):
    """The weighted model cloud (a (N,), X (N, 2)), differentiable in the parameters."""
    a, px, py = datasets.polygmm_model(torch.sigmoid(params["p"]), params["sigma"][0],
                                       params["sigma"][1], params["coef_x"],
                                       params["coef_y"], s, z)
    return a, torch.stack([px, py], dim=1)


def as_gmm_params(params: dict) -> datasets.PolyGMMParams:
    """Plain floats of the current parameters (sigma as |sigma|: z is symmetric)."""
    value = {k: v.detach().cpu().double().numpy() for k, v in params.items()}
    return datasets.PolyGMMParams(p=float(value["p"]),
                                  sigma=tuple(float(abs(s)) for s in value["sigma"]),
                                  coef_x=tuple(map(float, value["coef_x"])),
                                  coef_y=tuple(map(float, value["coef_y"])))


def curve_points(params: datasets.PolyGMMParams, n: int = 100) -> np.ndarray:
    """The model's curve, sampled evenly in t over mean +- 2 sigma of each class (2n, 2)."""
    t = np.concatenate([np.linspace(-1 - 2 * params.sigma[0], -1 + 2 * params.sigma[0], n),
                        np.linspace(1 - 2 * params.sigma[1], 1 + 2 * params.sigma[1], n)])
    return np.stack([datasets.poly_eval(np.asarray(params.coef_x), t),
                     datasets.poly_eval(np.asarray(params.coef_y), t)], axis=1)


def curve_gap(fitted: datasets.PolyGMMParams,
              truth: datasets.PolyGMMParams = datasets.POLY_GMM_TRUTH) -> float:
    """Symmetric mean nearest-point distance between the fitted and the true curves.

    Geometric, not parametric: a degree-2 fit cannot share the truth's parameterisation
    (a different speed along the curve is compensated by a different sigma), so the two
    curves are compared as sets of points, each on its own latent support."""
    from scipy.spatial.distance import cdist

    d = cdist(curve_points(fitted), curve_points(truth))
    return float(0.5 * (d.min(axis=1).mean() + d.min(axis=0).mean()))


def distance_to_truth(fitted: datasets.PolyGMMParams, seed: int) -> float | None:
    """Energy distance between the fitted and the true (noise-free) model distributions."""
    a, x = datasets.polygmm_weighted(fitted, EVAL_POINTS, seed + 2)
    b, y = datasets.polygmm_weighted(datasets.POLY_GMM_TRUTH, EVAL_POINTS, seed + 3)
    return energy_to_target(x, y, a, b)


# ----------------------------------------------------------------------- the fit
@dataclass
class FitTrace:
    fidelity: Fidelity
    records: list[dict] = field(default_factory=list)   # one per iteration
    status: str = "ok"                                  # ok | nan | error | oom
    error: str = ""
    params: datasets.PolyGMMParams | None = None        # the last finite parameters

    @property
    def first_nan_iteration(self):
        return next((r["iteration"] for r in self.records if r["nan"]), None)

    @property
    def time_per_iter_s(self) -> float:
        times = [r["time_s"] for r in self.records[1:] or self.records]
        return statistics.median(times) if times else float("nan")


def fit(fidelity: Fidelity, target, setup: Setup, *, N: int, iterations: int | None = None,
        degree: int = DEGREE) -> FitTrace:
    """Adam on the model parameters under ``fidelity``; stops (recorded) at the first
    non-finite cost or gradient, or at a KPBenchError (e.g. the input check on NaN points)."""
    b, y = target
    s_np, z_np = datasets.polygmm_latent(N, setup.seed)
    s, z = setup.tensor(s_np), setup.tensor(z_np)
    params = init_params(setup, degree)
    optimizer = torch.optim.Adam(params.values(), **ADAM)
    loss_fn = fidelity.spec.loss_fn(setup.backend)
    trace = FitTrace(fidelity, params=as_gmm_params(params))
    for it in range(fidelity.iterations if iterations is None else iterations):
        current = trace.params
        record = {"iteration": it, "P": datasets.sigmoid(current.p), "p": current.p,
                  "sigma_minus": current.sigma[0], "sigma_plus": current.sigma[1],
                  "coef_x": list(current.coef_x), "coef_y": list(current.coef_y),
                  "curve_gap": curve_gap(current)}
        try:
            with Stopwatch(setup) as watch:
                optimizer.zero_grad()
                a, x = model_cloud(params, s, z)
                cost = loss_fn(a, x, b, y)
                bad = not finite(cost)
                if not bad:
                    cost.backward()
                    bad = not all(finite(p.grad) for p in params.values())
        except (KPBenchError, MemoryError, RuntimeError) as exc:
            trace.status = "oom" if isinstance(exc, MemoryError) else (
                "nan" if "NaN" in str(exc) else "error")
            trace.error = f"iteration {it}: {type(exc).__name__}: {exc}"
            trace.records.append({**record, "cost": None, "nan": trace.status == "nan",
                                  "time_s": None})
            break
        trace.records.append({**record, "cost": nan_to_none(cost.detach()), "nan": bad,
                              "time_s": watch.seconds})
        if bad:
            trace.status = "nan"
            trace.error = f"non-finite cost or gradient at iteration {it} ({setup.dtype})"
            break
        optimizer.step()
        trace.params = as_gmm_params(params)
    return trace


def fit_rows(trace: FitTrace, setup: Setup, meta: dict, extra: dict,
             final_distance) -> list[dict]:
    spec = trace.fidelity.spec
    base = setup.row(fidelity=spec.label, **spec.columns(), **extra, status=trace.status,
                     error=trace.error, **meta)
    key = (f"{TABLE}:{spec.label}:{setup.backend}:{setup.dtype}:{extra['N']}:{extra['M']}:"
           f"{setup.seed}")
    rows = [{**base, **r, "key": f"{key}:{r['iteration']}", "distance_to_truth": None}
            for r in trace.records]
    if rows:
        rows[-1]["distance_to_truth"] = final_distance
    return rows


def run(backend: str = "torch", N: int | None = None, M: int | None = None,
        dtype: str = "float32", device: str = "auto", seed: int = 0, out="results",
        losses=None, iterations: int | None = None, figures: bool = True) -> list[dict]:
    """Fit the model under each fidelity (labels; None = all four). ``iterations`` overrides
    every fidelity's iteration count. Returns one summary per fidelity."""
    setup = make_setup(backend, dtype, device, seed)
    N, M = N or DEFAULT_N, M or DEFAULT_M
    store = ResultStore(out)
    meta = run_meta(TABLE, store)
    y_np = datasets.polygmm_sample(datasets.POLY_GMM_TRUTH, M, seed, noise=NOISE)
    target = (setup.tensor(np.full(M, 1.0 / M)), setup.tensor(y_np))
    extra = {"N": N, "M": M, "D": 2, "degree": DEGREE, "adam_lr": ADAM["lr"],
             "adam_eps": ADAM["eps"], "noise": NOISE}
    traces, summaries = [], []
    for fidelity in select_fidelities(losses):
        trace = fit(fidelity, target, setup, N=N, iterations=iterations)
        final = distance_to_truth(trace.params, seed)
        store.append(TABLE, fit_rows(trace, setup, meta, extra, final))
        traces.append(trace)
        summaries.append(summary(trace, final))
    if figures and traces:
        path = store.figures_dir(FIGURES) / "model_fitting.png"
        draw(traces, y_np, path, seed)
        for s in summaries:
            s["figure"] = str(path)
    return summaries


def select_fidelities(names) -> list[Fidelity]:
    return select_specs(FIDELITIES, names)


def summary(trace: FitTrace, final_distance) -> dict:
    finite_costs = [r["cost"] for r in trace.records if r["cost"] is not None]
    p = trace.params
    return {"fidelity": trace.fidelity.label, "status": trace.status,
            "iterations": len(trace.records), "first_nan_iteration": trace.first_nan_iteration,
            "cost_final": finite_costs[-1] if finite_costs else None,
            "P": datasets.sigmoid(p.p), "sigma": f"({p.sigma[0]:.3f}, {p.sigma[1]:.3f})",
            "curve_gap": curve_gap(p), "distance_to_truth": final_distance,
            "time_per_iter_s": trace.time_per_iter_s, "error": trace.error,
            "sigma_minus": p.sigma[0], "sigma_plus": p.sigma[1], "coef_x": list(p.coef_x),
            "coef_y": list(p.coef_y)}


SUMMARY_COLUMNS = ["fidelity", "status", "iterations", "first_nan_iteration", "cost_final",
                   "P", "sigma", "curve_gap", "distance_to_truth", "time_per_iter_s"]


def report(summaries: list[dict]) -> None:
    print_table(summaries, SUMMARY_COLUMNS)
    print(f"ground truth: P = {datasets.sigmoid(datasets.POLY_GMM_TRUTH.p):.3f}, "
          f"sigma = {datasets.POLY_GMM_TRUTH.sigma}")
    if summaries and summaries[0].get("figure"):
        print(f"figure: {summaries[0]['figure']}")


# ---------------------------------------------------------------------- the figure
def _curve(ax, params: datasets.PolyGMMParams, **style) -> None:
    for sign, sigma in ((-1, params.sigma[0]), (1, params.sigma[1])):
        t = np.linspace(sign - 2 * sigma, sign + 2 * sigma, 100)
        ax.plot(datasets.poly_eval(np.asarray(params.coef_x), t),
                datasets.poly_eval(np.asarray(params.coef_y), t), **style)
        style.pop("label", None)


def draw(traces: list[FitTrace], y_np: np.ndarray, path, seed: int) -> None:
    """Top: the fitted model (red, dot size ∝ weight) vs the target samples (blue) and the
    true curve (black, dashed). Bottom: the cost per iteration."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(traces), figsize=(4 * len(traces), 8), squeeze=False)
    for col, trace in enumerate(traces):
        top, bottom = axes[0, col], axes[1, col]
        a, x = datasets.polygmm_weighted(trace.params, DEFAULT_N, seed)
        top.scatter(y_np[:, 0], y_np[:, 1], s=6, c="tab:blue", alpha=0.6, lw=0, label="target")
        top.scatter(x[:, 0], x[:, 1], s=8 * a * len(a), c="tab:red", alpha=0.7, lw=0,
                    label="model samples")
        _curve(top, datasets.POLY_GMM_TRUTH, color="k", ls="--", lw=1, label="truth")
        _curve(top, trace.params, color="darkred", lw=1, label="fitted curve")
        status = "" if trace.status == "ok" else (
            f" — NaN at it. {trace.first_nan_iteration}" if trace.status == "nan" else f" — {trace.status}")
        top.set_title(f"{trace.fidelity.label}{status}", fontsize=10)
        top.set_aspect("equal")
        top.legend(fontsize=7, loc="upper left")
        iters = [r["iteration"] for r in trace.records]
        costs = [np.nan if r["cost"] is None else r["cost"] for r in trace.records]
        bottom.plot(iters, costs, color="tab:red")
        for r in trace.records:
            if r["nan"]:
                bottom.axvline(r["iteration"], color="k", ls=":", label="NaN")
        bottom.set_xlabel("iteration")
        bottom.set_ylabel("cost")
        bottom.set_title(f"cost ({trace.fidelity.spec.name})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    plt.close(fig)
