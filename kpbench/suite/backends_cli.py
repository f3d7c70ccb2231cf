"""``kpbench backends``: which backends run here, and why the others do not."""
from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("backends", help="list backends and their availability")
    parser.set_defaults(func=run)


def run(args) -> int:
    from kpbench.backends import availability

    for name, (ok, why) in availability().items():
        print(f"{name:8s} {'available' if ok else 'unavailable: ' + why}")
    return 0
