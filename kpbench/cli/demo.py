"""``kpbench demo``: the main job. A small sweep on a local Ray cluster, then the report.

Runs the sweeps of the ``demo`` preset (kpbench/bench/presets/demo.toml: kernel product
and Sinkhorn on numpy/torch/keops for N up to 1e4, speed, memory and an accuracy pass;
a few minutes on 2 CPU cores, most of it KeOps compiling its formulas the first time)
into ``--out`` (default ``results``), then writes the report (Markdown + HTML) next to
it. Rerunning resumes: points already stored are not measured again.
"""
from __future__ import annotations

import argparse

from kpbench.cli import add_verb

DEMO_PRESET = "demo"


def add_parser(subparsers) -> None:
    parser = add_verb(subparsers, "demo", run, doc=__doc__,
                      help="run the demo sweep on a local Ray cluster and write the report")
    parser.add_argument("--out", default="results", help="results folder (default results)")
    parser.add_argument("--report-dir", help="where the report goes (default <out>/report)")
    parser.add_argument("--executor", choices=("ray", "inline"), default="ray")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster (default all)")
    parser.add_argument("--config", default=DEMO_PRESET,
                        help="another preset or TOML file instead of the demo's")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="skip points already stored (default on)")


def run(args) -> int:
    from kpbench.bench.parse import sweep_from_dict
    from kpbench.bench.settings import Settings
    from kpbench.cli.sweep import load_config, run_specs
    from kpbench.results.report import write_report

    settings = Settings(executor=args.executor, out=args.out, resume=args.resume,
                        num_cpus=args.num_cpus)
    tables, _ = load_config(args.config)
    sweeps = [sweep_from_dict(t, where=f"sweep {i + 1} of {args.config}") for i, t in enumerate(tables)]
    run_specs([(spec, settings.replace(**measured)) for spec, measured in sweeps])
    report = write_report(args.out, args.report_dir)
    print(f"report: {report} (and report.md beside it)")
    return 0
