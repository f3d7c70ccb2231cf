"""The ``kpbench`` command. Each sub-command lives in its own module, which exposes
``add_parser(subparsers)``; the parser it adds sets ``func(args) -> exit code``."""
from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> module providing add_parser(subparsers)
COMMANDS = {
    "backends": "kpbench.bench.backends_cli",
    "sweep": "kpbench.bench.sweep_cli",
    "demo": "kpbench.bench.demo",
    "reproduce": "kpbench.bench.reproduce_cli",
    "report": "kpbench.results.report_cli",
    "compare": "kpbench.results.compare_cli",
    "calibrate": "kpbench.bench.calibrate",
    "rerun": "kpbench.bench.rerun",
    "store": "kpbench.results.store_cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpbench",
        description="Benchmarks and reproductions for kernel products and Sinkhorn divergences.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMANDS.values():
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from kpbench import plugins

    plugins.load()   # KPBENCH_PLUGINS: their backends and ops before any flag is checked
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
