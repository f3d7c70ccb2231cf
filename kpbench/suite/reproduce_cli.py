"""``kpbench reproduce``: the classic experiments (1D/2D gradient flows, model fitting) on any
autograd backend; rows to Parquet (tables flow_1d, flow_2d, model_fitting), figures to PNG."""
from __future__ import annotations

import argparse
import sys

# reproduction -> (default N, default dtype); mirrors the modules' defaults for --help
DEFAULTS = {
    "gradient-flow-1d": (50, "float64"),
    "gradient-flow-2d": (300, "float64"),
    "model-fitting": (200, "float32"),
}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce", help="run a classic experiment (gradient flows, model fitting)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="defaults: " + "; ".join(f"{k}: N={n}, {d}" for k, (n, d) in DEFAULTS.items()),
    )
    parser.add_argument("which", choices=list(DEFAULTS), help="the reproduction to run")
    parser.add_argument("--backend", default="torch",
                        help="torch | keops | cuda (an autograd backend; default torch)")
    parser.add_argument("--N", type=_positive, default=None,
                        help="source points (model points for model-fitting)")
    parser.add_argument("--M", type=_positive, default=None,
                        help="target points (default: N; 200 for model-fitting)")
    parser.add_argument("--out", default="results", help="result store root (default results)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default=None,
                        help="default float64 for the flows, float32 for model-fitting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:k] (default auto)")
    parser.add_argument("--losses", default=None,
                        help="comma-separated loss/fidelity labels to run (default: all)")
    parser.add_argument("--t-max", type=float, default=5.0,
                        help="flows: integrate t in [0, t-max] (default 5)")
    parser.add_argument("--iterations", type=_positive, default=None,
                        help="model-fitting: iterations per fidelity (default: 1000/500/500/500)")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.set_defaults(func=run)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def run(args) -> int:
    import importlib

    from kpbench.backends.base import BackendUnavailable, KPBenchError
    from kpbench.suite.reproductions import REPRODUCTIONS

    module = importlib.import_module(REPRODUCTIONS[args.which])
    kwargs = dict(backend=args.backend, N=args.N, M=args.M, device=args.device,
                  seed=args.seed, out=args.out, figures=not args.no_figures,
                  dtype=args.dtype or DEFAULTS[args.which][1],
                  losses=[s.strip() for s in args.losses.split(",")] if args.losses else None)
    if args.which == "model-fitting":
        kwargs["iterations"] = args.iterations
    else:
        kwargs["t_max"] = args.t_max
    try:
        summaries = module.run(**kwargs)
    except (KPBenchError, BackendUnavailable) as exc:
        print(f"kpbench reproduce: error: {exc}", file=sys.stderr)
        return 2
    module.report(summaries)
    print(f"rows: {args.out}/{module.TABLE}/   figures: {args.out}/figures/{module.FIGURES}/")
    failed = [s for s in summaries if s.get("status") in ("error", "oom")]
    for s in failed:
        print(f"{s.get('loss') or s.get('fidelity')}: {s['status']}: {s.get('error')}",
              file=sys.stderr)
    return 1 if failed else 0
