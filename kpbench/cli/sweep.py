"""``kpbench sweep``: speed, memory and accuracy sweeps from flags or a TOML file.

    kpbench sweep speed --backends numpy,torch,keops --N 1e2..1e5 --M same --D 3 \\
        --blur 0.05,0.1 --dtype float32
    kpbench sweep --config suite.toml           # a file, or a shipped preset by name
    kpbench sweep --list-presets

A TOML file holds one or more ``[[sweep]]`` tables (keys: the fields of
:class:`kpbench.bench.plan.SweepSpec`, values as on the command line or as TOML lists)
and optionally a ``[run]`` table (executor, out, cpus_per_point, ...). Flags given on
the command line override the file for every sweep in it. What a [run] table sets is
printed before the sweep starts (``preset kernel_speed.toml: [run] out = 'x' ...``);
``--address`` and ``--out`` on the command line win over it.

One sweep at a time writes into a results folder: a second one exits 2 naming the pid of
the first, or with ``--wait`` waits for it and then skips the points it stored.
"""
from __future__ import annotations

import argparse
import pathlib

from kpbench.cli import add_verb

PRESETS_DIR = pathlib.Path(__file__).resolve().parents[1] / "bench" / "presets"

# flag -> SweepSpec field (values parsed by kpbench.bench.parse)
SPEC_FLAGS = {
    "ops": "ops", "backends": "backends", "kernels": "kernels", "losses": "losses",
    "N": "N", "M": "M", "D": "D", "blur": "blur", "p": "p", "reach": "reach",
    "dtype": "dtype", "device": "device", "seed": "seed", "iters": "iters",
    "scaling": "scaling", "tol": "tol", "offset": "offsets", "scale": "scales", "data": "data",
    "repeats": "repeats", "warmup": "warmup", "timeout": "timeout_s", "memory_budget": "memory_budget",
}
RUN_FLAGS = ("executor", "out", "address", "num_cpus", "cpus_per_point", "gpus_per_point",
             "threads", "resume", "retry_failed", "wait")


def add_parser(subparsers) -> None:
    add_arguments(add_verb(subparsers, "sweep", run, doc=__doc__,
                           help="run a speed/memory/accuracy sweep (Ray or inline) into Parquet"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", choices=("speed", "memory", "accuracy"),
                        help="what to measure (default: the file's, else speed)")
    parser.add_argument("--config", help="TOML file, or the name of a shipped preset")
    parser.add_argument("--list-presets", action="store_true", help="list shipped presets and exit")
    from kpbench.bench.limits import LIMITS_HELP, MAX_POINTS, MAX_VALUES

    axes = parser.add_argument_group("sweep axes (comma lists; sizes also as ranges 1e2..1e5[:n])",
                                     LIMITS_HELP)
    axes.add_argument("--ops", help="kernel_product,kernel_product_grad,softmin,sinkhorn,"
                                    "sinkhorn_grad,flow_step")
    axes.add_argument("--backends", help="numpy,torch,keops,cuda")
    axes.add_argument("--kernels", help="gaussian,laplacian,energy (kernel ops)")
    axes.add_argument("--losses", help="loss of flow_step: sinkhorn,mmd,energy,hausdorff,log_likelihood")
    axes.add_argument("--N", help=f"source sizes, e.g. 1e2..1e5 or 1e2..1e5:7 (1 to 2**31-1; n at most "
                                  f"{MAX_VALUES}; at most {MAX_POINTS} points per sweep)")
    axes.add_argument("--M", help="target sizes, or 'same' (M = N)")
    axes.add_argument("--D", help="dimensions")
    axes.add_argument("--blur", help="blur scales sigma (eps = blur**p)")
    axes.add_argument("--p", help="cost exponents 1,2 (softmin/Sinkhorn)")
    axes.add_argument("--reach", help="unbalanced reach values, 'none' = balanced")
    axes.add_argument("--dtype", help="float32,float64")
    axes.add_argument("--device", help="cpu,cuda")
    axes.add_argument("--seed", help="seeds, from 0 to 2**32-1")
    axes.add_argument("--iters", help="Sinkhorn iteration counts at the final eps; 'scaling' = the eps-scaling "
                                        "schedule (one iteration per eps, diameter -> blur)")
    axes.add_argument("--scaling", help="eps-scaling factors (for iters=scaling)")
    axes.add_argument("--tol", help="Sinkhorn tolerances (for iters=scaling): after the schedule, iterate at "
                                    "the final eps until the potentials move less than tol (at most 1000 "
                                    "iterations; the row's `converged` says which); 'none' = no such phase")
    axes.add_argument("--offset", help="accuracy sweeps: move both clouds by offset*(1,...,1), e.g. "
                                       "0,1e2,5e2,1e4 (inputs rounded to dtype, the float64 truth on the "
                                       "same numbers); 'none' = not moved; negative: --offset=-100,...")
    axes.add_argument("--scale", help="accuracy sweeps: multiply coordinates, blur and reach alike (the "
                                      "same problem at another scale); 'none' = not scaled")
    axes.add_argument("--data", help="data sources of the pair (x, y): default (x uniform cube, y Gaussian "
                                     "blobs), cube, blobs, sphere, swiss_roll, intervals_1d, image_2d, digits, "
                                     "breast_cancer (and _raw), or file:PATH (.npy .npz .csv .ply .xyz); a "
                                     "real data set or a file fixes D")
    how = parser.add_argument_group("measurement")
    how.add_argument("--repeats", type=int, help="timed samples per point (default 10)")
    how.add_argument("--warmup", type=int, help="untimed calls after the first (default 1)")
    how.add_argument("--timeout", type=float, help="seconds per point (default 600)")
    how.add_argument("--memory-budget", help="dense pre-flight budget, e.g. 4GiB (default: the backend's)")
    where = parser.add_argument_group("execution")
    where.add_argument("--executor", choices=("ray", "inline"), help="default ray")
    where.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, a running "
                                         "cluster, else a new local one)")
    where.add_argument("--num-cpus", type=int, help="CPUs of a local Ray cluster started here")
    where.add_argument("--cpus-per-point", type=float, help="Ray num_cpus per point: a fraction in (0, 1] or a "
                                                            "whole number up to the CPUs of a node (default 1)")
    where.add_argument("--gpus-per-point", type=float, help="Ray num_gpus per CUDA point (default 1)")
    where.add_argument("--threads", type=int,
                       help="torch/OpenMP/BLAS threads per point, >= 1 (default: cpus per point)")
    where.add_argument("--out", help="results folder, checked writable before anything runs (default results)")
    where.add_argument("--resume", action=argparse.BooleanOptionalAction, default=None,
                       help="skip points already stored (default on)")
    where.add_argument("--retry-failed", action="store_true", default=None,
                       help="with resume: measure again stored points whose status depended on "
                            "this machine or moment (timeout, error, oom, backend unavailable, "
                            "skipped by free memory)")
    where.add_argument("--wait", action="store_true", default=None,
                       help="another sweep writing into --out: wait for it, then skip what it "
                            "stored (default: exit 2 naming its pid)")
    where.add_argument("--interleave", action="append", metavar="NAME[=PATH[:VAR=VALUE,...]]",
                       help="measure the speed sweep in two or more variants at once, their samples "
                            "alternating (a kpbench checkout PATH, environment variables); rows go "
                            "to OUT/NAME; compare pairs them (kpbench.bench.interleave)")
    where.add_argument("--dry-run", action="store_true", help="list the points, run nothing")
    where.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    if args.list_presets:
        for path in sorted(PRESETS_DIR.glob("*.toml")):
            print(f"{path.stem:20s} {_first_comment(path)}")
        return 0
    sweeps, run_options = build(args)
    for line in config_notes(args, run_options):
        print(line, flush=True)
    if args.dry_run:
        return _dry_run([spec for spec, _ in sweeps])
    if args.interleave:
        return run_interleaved_specs(sweeps, args.interleave)
    return run_specs(sweeps)


def run_specs(specs) -> int:
    """Run the sweeps ((SweepSpec, Settings) pairs) one after another as one run (one run_id)."""
    import uuid

    from kpbench.bench.sweep import run_sweep

    run_id = uuid.uuid4().hex
    for i, (spec, settings) in enumerate(specs, 1):
        if len(specs) > 1:
            print(f"[{i}/{len(specs)}] {spec.kind}: {', '.join(spec.ops)} on "
                  f"{', '.join(spec.backends)}", flush=True)
        print(run_sweep(spec, settings, run_id=run_id).summary(), flush=True)
    return 0


def run_interleaved_specs(specs, variant_texts: list[str]) -> int:
    """The sweeps measured in every variant, interleaved, one after another (one run_id)."""
    import uuid

    from kpbench.bench.interleave import parse_variant
    from kpbench.bench.sweep import run_sweep

    variants = [parse_variant(text) for text in variant_texts]
    run_id = uuid.uuid4().hex
    for spec, settings in specs:
        print(run_sweep(spec, settings, run_id=run_id, variants=variants).summary(), flush=True)
    return 0


def build(args):
    """([(SweepSpec, Settings)], the run's Settings) from the flags and the optional config file."""
    from kpbench.errors import KPBenchError
    from kpbench.bench.checks import check_settings
    from kpbench.bench.parse import sweep_from_dict
    from kpbench.bench.settings import RUN_KEYS, Settings

    tables, run_table = ([{}], {})
    if args.config:
        tables, run_table = load_config(args.config)
    overrides = {field: getattr(args, flag) for flag, field in SPEC_FLAGS.items()
                 if getattr(args, flag) is not None}
    if args.kind:
        overrides["kind"] = args.kind
    labels = {field: _flag(flag) for flag, field in SPEC_FLAGS.items() if field in overrides}
    sweeps = [sweep_from_dict({**table, **overrides}, where=f"sweep {i + 1} of {args.config or 'flags'}",
                            labels=labels)
             for i, table in enumerate(tables)]
    known = set(RUN_KEYS)
    unknown = sorted(set(run_table) - known)
    if unknown:
        raise KPBenchError(f"unknown key(s) in [run] of {args.config}: {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(known))}")
    flags = {flag: getattr(args, flag) for flag in RUN_FLAGS if getattr(args, flag) is not None}
    run_values = {**run_table, **flags}
    if args.no_progress:
        run_values["progress"] = False
    check_settings(run_values, f"[run] of {args.config}", {flag: _flag(flag) for flag in flags})
    run = Settings(**run_values)
    return [(spec, run.replace(**measured)) for spec, measured in sweeps], run


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_notes(args, run_options) -> list[str]:
    """Lines saying what the [run] table of ``--config`` changes (values as repr: they are
    the file's data), and where a command-line flag wins over it."""
    if not args.config:
        return []
    name = resolve_config(args.config).name
    notes = []
    for key, value in load_config(args.config)[1].items():
        flag = getattr(args, key, None) if key in RUN_FLAGS else None
        if flag is not None and flag != value:
            notes.append(f"preset {name}: [run] {key} = {value!r} overridden by "
                         f"{_flag(key)} {flag!r}")
        elif key == "address":
            unused = " (unused by the inline executor)" if run_options.executor == "inline" else ""
            notes.append(f"preset {name}: connecting to the Ray cluster at {value!r}{unused} "
                         "([run] address; --address overrides)")
        elif key == "out":
            notes.append(f"preset {name}: writing results to {value!r} ([run] out; --out overrides)")
        else:
            notes.append(f"preset {name}: [run] {key} = {value!r}")
    return notes


def load_config(name: str) -> tuple[list[dict], dict]:
    """The [[sweep]] tables and the [run] table of a TOML file or shipped preset."""
    import tomllib

    from kpbench.errors import KPBenchError
    from kpbench.bench.parse import config_tables

    path = resolve_config(name)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise KPBenchError(f"{path}: not valid TOML: {exc}") from exc
    return config_tables(data, path)


def resolve_config(name: str) -> pathlib.Path:
    from kpbench.errors import KPBenchError

    path = pathlib.Path(name)
    if path.is_file():
        return path
    preset = PRESETS_DIR / f"{name.removesuffix('.toml')}.toml"
    if preset.is_file():
        return preset
    presets = ", ".join(p.stem for p in sorted(PRESETS_DIR.glob("*.toml")))
    raise KPBenchError(f"no config file {name!r} and no preset of that name (presets: {presets})")


def _first_comment(path: pathlib.Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ")
    return ""


def _dry_run(specs) -> int:
    from kpbench.bench.plan import expand

    for spec in specs:
        points = expand(spec)
        print(f"# sweep {spec.kind}: {len(points)} points")
        for point in points:
            print(point.key(spec.kind), point)
    return 0
