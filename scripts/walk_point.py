"""Follow one sweep point from the ``kpbench`` command line to its timed call.

    python scripts/walk_point.py [--op sinkhorn] [--backend torch] [--until time_one]

Runs ``kpbench sweep speed`` on one point with the inline executor (into a temporary
folder) under a profiler and prints:

* the walk: the package files, in order, of every function that receives the point (a
  ``Point`` argument, the ``SweepSpec`` or a list of points), consecutive stays in one file merged, until the first call of
  ``--until`` (the timer's first call);
* rooms entered (distinct files) and returns (entering a file the walk had already left),
  telling apart the stays made only of the point's own methods (``Point.key``, ``as_row``);
* backend lookups (outermost calls of ``get_backend``) and memory pre-flights (outermost
  calls of the functions named by ``--preflight``) on the way.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "kpbench"


def _relative(filename: str) -> str | None:
    path = pathlib.Path(filename).resolve()
    try:
        return str(path.relative_to(PACKAGE.parent)) if path.is_relative_to(PACKAGE) else None
    except ValueError:
        return None


def _carries_the_point(value) -> bool:
    """A Point, the spec it is expanded from, or a list of points."""
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    return type(value).__name__ in ("Point", "SweepSpec")


class Walk:
    def __init__(self, until: str, lookups: set[str], preflights: set[str]):
        self.until, self.lookups, self.preflights = until, lookups, preflights
        self.files: list[str] = []
        self.own: list[bool] = []   # a stay made only of the point's (or spec's) own methods
        self.counts = {"lookups": 0, "preflights": 0}
        self.depth = {"lookups": 0, "preflights": 0}
        self.done = False

    def __call__(self, frame, event, arg):
        if self.done or event not in ("call", "return"):
            return
        name = frame.f_code.co_name
        where = _relative(frame.f_code.co_filename)
        if where is None:
            return
        for counter, names in (("lookups", self.lookups), ("preflights", self.preflights)):
            if name in names:
                if event == "call":
                    self.counts[counter] += self.depth[counter] == 0
                    self.depth[counter] += 1
                else:
                    self.depth[counter] -= 1
        if event != "call":
            return
        if name == self.until:
            self.done = True
            self._enter(where)
            sys.setprofile(None)
            return
        if any(_carries_the_point(v) for v in frame.f_locals.values()):
            self._enter(where, own_method=_carries_the_point(frame.f_locals.get("self")))

    def _enter(self, where: str, own_method: bool = False) -> None:
        if not self.files or self.files[-1] != where:
            self.files.append(where)
            self.own.append(own_method)
        elif not own_method:
            self.own[-1] = False

    def report(self) -> str:
        returns = [f for i, f in enumerate(self.files) if f in self.files[:i]]
        by_methods = [f for i, f in enumerate(self.files) if f in self.files[:i] and self.own[i]]
        lines = [" -> ".join(f + ("*" if own else "") for f, own in zip(self.files, self.own)),
                 f"stays: {len(self.files)}; rooms entered: {len(set(self.files))}; "
                 f"returns to a room already left: {len(returns)} ({', '.join(returns) or 'none'}), "
                 f"of which {len(by_methods)} only to call the point's own methods (* above)",
                 f"backend lookups: {self.counts['lookups']}; memory pre-flights: {self.counts['preflights']}"]
        if not self.done:
            lines.append(f"(the walk never reached {self.until!r})")
        return "\n".join(lines)


def _command():
    """The ``kpbench`` command's main, in today's layout or the earlier ones (kpbench.suite
    before the sweep engine's rebuild, kpbench.bench.cli for a few commits during it)."""
    import importlib

    for name in ("kpbench.cli.main", "kpbench.bench.cli", "kpbench.suite.cli"):
        try:
            return importlib.import_module(name).main
        except ImportError:
            continue
    raise SystemExit("walk_point: no kpbench command found on the path")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op", default="sinkhorn")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--until", default="time_one", help="the timer's first call")
    parser.add_argument("--lookup", default="get_backend")
    parser.add_argument("--preflight", default="check_memory,check_budget,preflight")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(PACKAGE.parent))
    kpbench_main = _command()
    walk = Walk(args.until, set(args.lookup.split(",")), set(args.preflight.split(",")))
    with tempfile.TemporaryDirectory() as out:
        command = ["sweep", "speed", "--ops", args.op, "--backends", args.backend, "--N", "100",
                   "--M", "100", "--D", "2", "--dtype", "float32", "--p", "2", "--blur", "0.1", "--executor", "inline", "--repeats", "1",
                   "--no-progress", "--out", out]
        walk._enter(_relative(kpbench_main.__code__.co_filename))
        sys.setprofile(walk)
        try:
            kpbench_main(command)
        finally:
            sys.setprofile(None)
    print(walk.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
