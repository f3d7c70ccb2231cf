"""``kpbench reproduce``: the classic experiments (1D/2D gradient flows, model fitting) on any
autograd backend; rows to Parquet (tables flow_1d, flow_2d, model_fitting), figures to PNG.

With ``--check`` the run uses the settings of the reference values shipped with kpbench
(kpbench/reproductions/references/NAME.json, or ``--reference FILE``), compares its
numbers with them (each with its own tolerance and the reason for it), prints the numbers
that moved and exits 1 if any did."""
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
    parser.add_argument("--backend", default=None,
                        help="torch | keops | cuda (an autograd backend; default torch)")
    parser.add_argument("--N", type=_positive, default=None,
                        help="source points (model points for model-fitting)")
    parser.add_argument("--M", type=_positive, default=None,
                        help="target points (default: N; 200 for model-fitting)")
    parser.add_argument("--out", default="results", help="result store root (default results)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default=None,
                        help="default float64 for the flows, float32 for model-fitting")
    parser.add_argument("--seed", type=int, default=None, help="default 0")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda[:k] (default auto)")
    parser.add_argument("--losses", default=None,
                        help="comma-separated loss/fidelity labels to run (default: all)")
    parser.add_argument("--t-max", type=float, default=None,
                        help="flows: integrate t in [0, t-max] (default 5)")
    parser.add_argument("--iterations", type=_positive, default=None,
                        help="model-fitting: iterations per fidelity (default: 1000/500/500/500)")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument("--check", action="store_true",
                        help="run with the shipped reference's settings and compare; exit 1 "
                             "when a number moved beyond its tolerance")
    parser.add_argument("--reference", default=None,
                        help="with --check: this reference file instead of the shipped one")
    parser.set_defaults(func=run)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def run(args) -> int:
    import importlib

    from kpbench.errors import BackendUnavailable, KPBenchError
    from kpbench.reproductions import REPRODUCTIONS

    module = importlib.import_module(REPRODUCTIONS[args.which])
    try:
        reference, settings = _settings(args)
        kwargs = dict(out=args.out, figures=not args.no_figures, **settings,
                      losses=[s.strip() for s in args.losses.split(",")] if args.losses else None)
        summaries = module.run(**kwargs)
        checked = _check(reference, summaries)
    except (KPBenchError, BackendUnavailable) as exc:
        print(f"kpbench reproduce: error: {exc}", file=sys.stderr)
        return 2
    module.report(summaries)
    print(f"rows: {args.out}/{module.TABLE}/   figures: {args.out}/figures/{module.FIGURES}/")
    failed = [s for s in summaries if s.get("status") in ("error", "oom")]
    for s in failed:
        print(f"{s.get('loss') or s.get('fidelity')}: {s['status']}: {s.get('error')}",
              file=sys.stderr)
    if checked is not None:
        from kpbench.reproductions.check import format_check

        print(format_check(checked, reference))
        return 1 if failed or not all(c.ok for c in checked) else 0
    return 1 if failed else 0


def _settings(args) -> tuple[dict | None, dict]:
    """(the reference or None, the keyword arguments of the reproduction's run)."""
    given = dict(backend=args.backend, dtype=args.dtype, device=args.device, N=args.N, M=args.M,
                 seed=args.seed, **_length_arg(args.which, args))
    reference = None
    if args.check or args.reference:
        from kpbench.reproductions import check

        reference = check.load_reference(args.reference or check.reference_path(args.which))
        given = check.run_settings(reference, given)
    defaults = dict(backend="torch", dtype=DEFAULTS[args.which][1], device="auto", seed=0,
                    **_length_arg(args.which, None))
    return reference, {name: value if value is not None else defaults.get(name)
                       for name, value in {**defaults, **given}.items()}


def _length_arg(which: str, args) -> dict:
    """How long the reproduction runs: iterations (model fitting) or t_max (flows)."""
    if which == "model-fitting":
        return {"iterations": None if args is None else args.iterations}
    return {"t_max": 5.0 if args is None else args.t_max}


def _check(reference: dict | None, summaries: list[dict]):
    if reference is None:
        return None
    from kpbench.reproductions.check import check

    return check(reference, summaries)
