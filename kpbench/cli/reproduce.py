"""``kpbench reproduce``: the classic experiments (1D/2D gradient flows, model fitting) on any
autograd backend; rows to Parquet (tables flow_1d, flow_2d, model_fitting), figures to PNG.

With ``--check`` the run uses the settings of the reference values shipped with kpbench
(kpbench/reproductions/references/NAME.json, or ``--reference FILE``), compares its
numbers with them (each with its own tolerance and the reason for it), prints the numbers
that moved and exits 1 if any did."""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys

from kpbench.cli import add_verb
from kpbench.reproductions import REPRODUCTIONS
from kpbench.results import layout

DEFAULTS_MARK = "%(reproduction defaults)s"     # filled from the modules when --help asks
# the flags that are keyword arguments of a reproduction's run (those its run takes)
SETTING_FLAGS = ("backend", "dtype", "device", "N", "M", "seed", "t_max", "iterations")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Fills the epilog with the reproductions' own defaults, read from their modules only
    when the help is shown (importing them imports torch: not for every ``kpbench``)."""

    def _format_text(self, text: str) -> str:
        if DEFAULTS_MARK in text:
            text = text.replace(DEFAULTS_MARK, "; ".join(
                f"{name}: N={module.DEFAULT_N}, {_run_defaults(module)['dtype']}"
                for name, module in ((name, _module(name)) for name in REPRODUCTIONS)))
        return super()._format_text(text)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


# the flags (not given: None, and the reproduction's run uses its own default)
ARGUMENTS = (
    ("--backend", dict(help="torch | keops | cuda (an autograd backend; default torch)")),
    ("--N", dict(type=_positive, help="source points (model points for model-fitting)")),
    ("--M", dict(type=_positive, help="target points (default: N; 200 for model-fitting)")),
    ("--out", dict(default="results", help="result store root (default results)")),
    ("--dtype", dict(choices=["float64", "float32"],
                     help="default float64 for the flows, float32 for model-fitting")),
    ("--seed", dict(type=int, help="default 0")),
    ("--device", dict(help="auto | cpu | cuda[:k] (default auto)")),
    ("--losses", dict(help="comma-separated loss/fidelity labels to run (default: all)")),
    ("--t-max", dict(type=float, help="flows: integrate t in [0, t-max] (default 5)")),
    ("--iterations", dict(type=_positive,
                          help="model-fitting: iterations per fidelity (default: 1000/500/500/500)")),
    ("--no-figures", dict(action="store_true", help="skip the PNG figures")),
    ("--check", dict(action="store_true", help="run with the shipped reference's settings and "
                                               "compare; exit 1 when a number moved beyond its tolerance")),
    ("--reference", dict(help="with --check: this reference file instead of the shipped one")),
)


def add_parser(subparsers) -> None:
    parser = add_verb(subparsers, "reproduce", run, doc=__doc__, formatter_class=_HelpFormatter,
                      epilog="defaults: " + DEFAULTS_MARK,
                      help="run a classic experiment (gradient flows, model fitting)")
    parser.add_argument("which", choices=list(REPRODUCTIONS), help="the reproduction to run")
    for flag, options in ARGUMENTS:
        parser.add_argument(flag, **options)


def run(args) -> int:
    module = _module(args.which)
    reference, settings = _settings(args, module)
    summaries = module.run(out=args.out, figures=not args.no_figures, **settings,
                           losses=[s.strip() for s in args.losses.split(",")] if args.losses else None)
    checked = None if reference is None else _check(reference, summaries)
    module.report(summaries)
    print(f"rows: {layout.table_dir(args.out, module.TABLE)}/   "
          f"figures: {layout.figures_dir(args.out, module.FIGURES)}/")
    failed = [s for s in summaries if s.get("status") in ("error", "oom")]
    for s in failed:
        print(f"{s.get('loss') or s.get('fidelity')}: {s['status']}: {s.get('error')}",
              file=sys.stderr)
    if checked is not None:
        from kpbench.reproductions.check import format_check

        print(format_check(checked, reference))
        return 1 if failed or not all(c.ok for c in checked) else 0
    return 1 if failed else 0


def _module(name: str):
    return importlib.import_module(REPRODUCTIONS[name])


def _run_defaults(module) -> dict:
    """The keyword defaults of the reproduction's ``run``: the one place they are written."""
    return {name: p.default for name, p in inspect.signature(module.run).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _settings(args, module) -> tuple[dict | None, dict]:
    """(the reference or None, the keyword arguments given to the reproduction's run: the
    flags given, or the reference's settings; the run's own defaults fill the others)."""
    accepted = _run_defaults(module)
    given = {name: getattr(args, name) for name in SETTING_FLAGS if name in accepted}
    reference = None
    if args.check or args.reference:
        from kpbench.reproductions import check

        reference = check.load_reference(args.reference or check.reference_path(args.which))
        given = check.run_settings(reference, given)
    return reference, {name: value for name, value in given.items() if value is not None}


def _check(reference: dict, summaries: list[dict]):
    from kpbench.reproductions.check import check

    return check(reference, summaries)
