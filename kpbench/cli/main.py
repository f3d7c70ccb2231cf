"""The ``kpbench`` command: the parser of every verb, the plugins, and the one error policy.

Each verb module (``kpbench.cli.<verb>``) exposes ``add_parser(subparsers)``; the parser it
adds sets ``func(args) -> exit code``. Bad input (:class:`kpbench.errors.KPBenchError`, a
backend that cannot run here, a Ray address that does not answer) is said on stderr as
``kpbench <verb>: <message>`` with exit status 2; anything else is a bug and propagates.
"""
from __future__ import annotations

import argparse
import sys

from kpbench.cli import backends, calibrate, compare, demo, reproduce, report, rerun, store, sweep
from kpbench.errors import BackendUnavailable, KPBenchError

VERBS = (backends, sweep, demo, reproduce, report, compare, calibrate, rerun, store)
# what the error policy turns into "kpbench <verb>: <message>" and exit 2
BAD_INPUT = (KPBenchError, BackendUnavailable, ConnectionError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kpbench",
        description="Benchmarks and reproductions for kernel products and Sinkhorn divergences.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for verb in VERBS:
        verb.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    """``args.func(args)`` after loading the plugins (``KPBENCH_PLUGINS``), under the error
    policy (see the module doc)."""
    from kpbench import plugins

    try:
        plugins.load()
        return int(args.func(args) or 0)
    except BAD_INPUT as exc:
        print(f"{command_name(args)}: {exc}", file=sys.stderr)
        return 2


def command_name(args: argparse.Namespace) -> str:
    """``kpbench sweep``, ``kpbench store compact``: the words that named the command (the
    dests of the sub-command parsers: ``command``, and ``verb`` for ``store``)."""
    words = (getattr(args, "command", None), getattr(args, "verb", None))
    return " ".join(["kpbench", *(w for w in words if w)])


if __name__ == "__main__":
    sys.exit(main())
