"""``kpbench backends``: which backends run here, and why the others do not."""
from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("backends", help="list backends and their availability")
    parser.set_defaults(func=run)


def run(args) -> int:
    from kpbench.backends import availability

    for name, (ok, why) in availability().items():
        state = ("available" + (f" ({why})" if why else "")) if ok else "unavailable: " + why
        print(f"{name:8s} {state}")
    return 0
