"""``kpbench backends``: which backends run here, and why the others do not."""
from __future__ import annotations

from kpbench.cli import add_verb


def add_parser(subparsers) -> None:
    add_verb(subparsers, "backends", run, help="list backends and their availability")


def run(args) -> int:
    from kpbench.backends import availability

    for name, (ok, why) in availability().items():
        state = ("available" + (f" ({why})" if why else "")) if ok else "unavailable: " + why
        print(f"{name:8s} {state}")
    return 0
