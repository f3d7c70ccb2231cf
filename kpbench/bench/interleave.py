"""Interleaved sweeps: several variants of kpbench measured in alternation, sample by sample.

On a shared machine the speed of the CPU changes over seconds (this project's 2-core VM:
half-second windows of one computation vary 0.75-1.4x, states last ~1 s), so two sweeps
measured at different moments differ by more than a 1.1x gate whatever the number of
samples. asv's answer is ``continuous``: the two commits' benchmarks run interleaved.
This module does it at the finest grain: each variant (a kpbench checkout, a Python
environment, environment variables such as a plugin) runs in a worker process of its
own; for each point every worker prepares it (first call, warm-up, calibration), then
the driver lets them take their timed samples in turns -- one sample each per round, in
a random order per round -- so the i-th samples of all variants are taken within a few
tens of milliseconds of each other, in the same state of the machine. Only one worker
computes at any time (the others wait on their pipe, outside any timed region).

Each variant's rows go to a store of its own (``OUT/<variant>``), ordinary sweep rows
plus ``interleave_id`` (the same for the rows of one point's session) and
``interleave_variants``. :mod:`kpbench.results.compare` recognises two rows of one
session and compares them *paired*: the per-round ratios of their samples (see there).

The variants' kpbench must have this module (it is the worker); speed sweeps only. This
module holds the variants' workers and their pacing; the sweep around them is the ordinary
one (:func:`kpbench.bench.sweep.run_sweep` with ``variants``, through the executor
:mod:`kpbench.bench.executors.interleaved`).

    kpbench sweep speed --ops kernel_product --backends torch --N 1e3 \\
        --interleave main=../kpbench-main --interleave mine=. --out results/ab
    kpbench compare results/ab/main results/ab/mine
"""
from __future__ import annotations

import json
import os
import random
import re
import select
import subprocess
import sys
import uuid
from dataclasses import dataclass, field

from kpbench.backends.cxxflags import check_cxxflags
from kpbench.errors import KPBenchError



@dataclass(frozen=True)
class Variant:
    """One side of an interleaved sweep: its name (and store folder), the kpbench it
    imports (``path``: a checkout put first on PYTHONPATH; None: the installed one), the
    Python that runs it and extra environment variables."""

    name: str
    path: str | None = None
    python: str = sys.executable
    env: dict = field(default_factory=dict)


def parse_variant(text: str) -> Variant:
    """``NAME``, ``NAME=PATH`` or ``NAME=PATH:VAR=VALUE,VAR=VALUE`` (PATH may be empty)."""
    name, _, rest = text.partition("=")
    path, _, assignments = rest.partition(":")
    if not name.isidentifier():
        raise KPBenchError(f"--interleave {text!r}: the variant name must be a word (it names its store)")
    env = {}
    for item in filter(None, assignments.split(",")):
        var, eq, val = item.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var) or "\0" in val:
            raise KPBenchError(f"--interleave {text!r}: {item!r} is not VAR=VALUE "
                               "(VAR a name of letters, digits and _)")
        if var == "CXXFLAGS":      # KeOps hands them to a shell: the one check of kpbench
            check_cxxflags(val, f"--interleave {text!r}: CXXFLAGS")
        env[var] = val
    if path and not os.path.isdir(path):
        raise KPBenchError(f"--interleave {text!r}: {path} is not a folder (a kpbench checkout)")
    return Variant(name, os.path.abspath(path) if path else None, env=env)


# -- the worker (python -m kpbench.bench.interleave --worker) ---------------------------
def _jsonable(value):
    if hasattr(value, "item"):          # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def worker_main() -> None:
    """Measure the points the driver sends; before each timed sample say "ready" and
    wait for "go". The protocol uses the original stdout; library output goes to stderr."""
    from kpbench import plugins
    from kpbench.bench import measure
    from kpbench.bench.plan import point_from_fields
    from kpbench.bench.settings import Settings

    plugins.load()          # the variant's own KPBENCH_PLUGINS
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def send(message: dict) -> None:
        channel.write(json.dumps(message, default=_jsonable) + "\n")

    def receive() -> dict:
        line = sys.stdin.readline()
        if not line:
            sys.exit(0)
        return json.loads(line)

    def pace(number: int) -> int:
        send({"ready": True, "number": number})
        return int(receive()["number"])

    measure.set_pacer(pace)
    while True:
        request = receive()
        if request.get("exit"):
            return
        row = measure.run_point(point_from_fields(request["point"]), request["kind"],
                                Settings(**request["settings"]))
        send({"row": row})


# -- the driver ----------------------------------------------------------------------
class WorkerFailed(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


# the worker's module in the variant's checkout: today's layout, or the one before the sweep
# engine's rebuild (kpbench.suite, before cf2321a), whose worker speaks the same protocol
WORKER_MODULES = ("kpbench.bench.interleave", "kpbench.suite.interleave")
# ``python -c LAUNCH PATH MODULE...``: PATH (the variant's checkout, "" for none) goes before
# the current directory, which -c and -m put first on sys.path: a sweep started inside a
# checkout would otherwise run that checkout's kpbench for every variant
WORKER_LAUNCH = """
import importlib.util, os, runpy, sys

variant_path, modules = sys.argv[1], sys.argv[2:]
if variant_path:
    sys.path.insert(0, os.path.abspath(variant_path))

def found(name):
    if variant_path:   # its own files: an installed kpbench's finder would answer for it
        return os.path.isfile(os.path.join(variant_path, *name.split(".")) + ".py")
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False

name = next((n for n in modules if found(n)), None)
if name is None:
    sys.exit("this kpbench has no interleave worker (" + ", ".join(modules) + ")")
sys.argv = [name, "--worker"]
runpy.run_module(name, run_name="__main__", alter_sys=True)
"""


class VariantWorker:
    """A variant's worker process and its line protocol."""

    def __init__(self, variant: Variant):
        self.variant = variant
        self.process: subprocess.Popen | None = None

    def _start(self) -> None:
        env = {**os.environ, **self.variant.env}
        if self.variant.path:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [self.variant.path, env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [self.variant.python, "-c", WORKER_LAUNCH, self.variant.path or "", *WORKER_MODULES], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def send(self, message: dict) -> None:
        if self.process is None or self.process.poll() is not None:
            self._start()
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def receive(self, timeout_s: float) -> dict:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        if not ready:
            self.stop(kill=True)
            raise WorkerFailed("timeout", f"exceeded the timeout of {timeout_s:g} s")
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            self.process = None
            raise WorkerFailed("error", f"the {self.variant.name} worker exited (code {code})")
        return json.loads(line)

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            try:
                self.send({"exit": True})
            except (BrokenPipeError, OSError):
                pass
        self.process.wait()
        self.process = None


def measure_interleaved(point, kind: str, settings, workers: list[VariantWorker],
                        rng: random.Random) -> dict[str, dict]:
    """The rows of ``point`` for every variant, their timed samples taken in alternation."""
    from kpbench.bench.executors.base import failure_row
    from kpbench.bench.plan import legacy_fields

    # the point and settings as every kpbench with this module reads them (a variant may be older)
    request = {"point": legacy_fields(point), "kind": kind, "settings": settings.measurement()}
    rows: dict[str, dict] = {}
    sampling: list[VariantWorker] = []
    numbers: list[int] = []

    def step(worker: VariantWorker, message: dict) -> None:
        try:
            worker.send(message)
            reply = worker.receive(settings.timeout_s)
        except (WorkerFailed, OSError) as exc:   # OSError: its Python could not be started
            status = getattr(exc, "status", "error")
            rows[worker.variant.name] = {**failure_row(point, kind, status, f"{exc}"), "retryable": True}
            return
        if "row" in reply:
            rows[worker.variant.name] = reply["row"]
        else:
            sampling.append(worker)
            numbers.append(reply["number"])

    for worker in workers:          # prepare: each runs up to its first timed sample
        step(worker, request)
    # every variant's sample: the same number of calls, enough for the longest-calibrated
    go = {"go": True, "number": max(numbers, default=1)}
    while sampling:                 # one round: every variant takes one sample
        order, sampling[:] = list(sampling), []
        rng.shuffle(order)
        for worker in order:
            step(worker, go)
    session = uuid.uuid4().hex[:16]
    names = ",".join(w.variant.name for w in workers)
    for row in rows.values():
        row.update(interleave_id=session, interleave_variants=names)
    return rows


def check_variants(kind: str, variants: list[Variant]) -> None:
    """Speed only, two or more variants with distinct names (KPBenchError if not)."""
    if kind != "speed":
        raise KPBenchError(f"an interleaved sweep measures speed only (got {kind!r}): "
                           "memory and accuracy do not drift with the machine's load")
    names = [v.name for v in variants]
    if len(variants) < 2 or len(set(names)) != len(names):
        raise KPBenchError(f"an interleaved sweep needs two or more variants with distinct names, got {names}")


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    worker_main()
