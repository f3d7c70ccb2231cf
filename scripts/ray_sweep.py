"""Run a kpbench sweep on an existing Ray cluster (the driver for ``ray submit``).

    ray submit cluster.yaml scripts/ray_sweep.py -- speed --backends numpy,torch,keops --N 1e2..1e5
    ray submit cluster.yaml scripts/ray_sweep.py -- --config kernel_speed

Takes the arguments of ``kpbench sweep`` and runs the same sweep; it connects to the
running cluster (``address="auto"`` unless ``--address`` is given) instead of starting
one, so the points are spread over every node. The rows are written on the node that
runs this script (the head node), under ``--out`` (default ``results``).
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    from kpbench.cli import sweep
    from kpbench.cli.main import run_command   # loads KPBENCH_PLUGINS, as the kpbench command does

    parser = argparse.ArgumentParser(prog="ray_sweep.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_arguments(parser)
    parser.set_defaults(command="sweep", func=sweep.run)   # errors said as by `kpbench sweep`
    args = parser.parse_args(argv)
    if args.executor not in (None, "ray"):
        parser.error("ray_sweep.py runs sweeps on a Ray cluster; use `kpbench sweep` for --executor inline")
    args.executor = "ray"
    args.address = args.address or os.environ.get("RAY_ADDRESS") or "auto"
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
