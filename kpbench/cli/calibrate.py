"""``kpbench calibrate``: the flags; the table and what it holds are :mod:`kpbench.bench.calibrate`'s
(its doc is this command's description)."""
from __future__ import annotations

import pathlib

from kpbench.backends import auto
from kpbench.bench import calibrate as calibration
from kpbench.bench.calibrate import DEFAULT_N, DEFAULT_OPS, STORE_COPY
from kpbench.cli import add_verb


def add_parser(subparsers) -> None:
    parser = add_verb(subparsers, "calibrate", run, doc=calibration.__doc__,
                      help="time the backends on this machine; backend='auto' picks from it")
    parser.add_argument("--out", default="results", help="results store for the sweep rows (default results)")
    parser.add_argument("--table", default=None, help=f"where the table goes (default {auto.table_path()})")
    parser.add_argument("--ops", default=",".join(DEFAULT_OPS), help="ops to time (default kernel_product,softmin)")
    parser.add_argument("--backends", default=None, help="default: the available ones of torch,keops,cuda")
    parser.add_argument("--N", default=DEFAULT_N, help=f"sizes, M = N (default {DEFAULT_N})")
    parser.add_argument("--D", default="3", help="dimensions (default 3)")
    parser.add_argument("--dtype", default="float32", help="dtypes (default float32)")
    parser.add_argument("--device", default="cpu", help="devices (default cpu)")
    parser.add_argument("--repeats", default="5", help="timed samples per point (default 5)")
    parser.add_argument("--executor", choices=("inline", "ray"), default="inline")
    parser.add_argument("--limits", action="store_true",
                        help="instead: measure this machine's limits (exp/s, FMA/s, GB/s; 1 thread "
                             "and all threads; a few seconds), cache them per host (speed rows' "
                             "limit_s reads them) and print them with the GPU's device table entry")


def run(args) -> int:
    if args.limits:
        return run_limits()
    from kpbench.bench.parse import sweep_from_dict
    from kpbench.bench.settings import Settings
    from kpbench.bench.sweep import run_sweep
    from kpbench.results.selection import load_run

    backends = args.backends or ",".join(auto.available_candidates("kernel_product", "float32", "cpu"))
    spec, measured = sweep_from_dict(dict(kind="speed", ops=args.ops, backends=backends, N=args.N,
                                          D=args.D, dtype=args.dtype, device=args.device,
                                          repeats=args.repeats, blur="0.1", p="2"),
                                     where="kpbench calibrate")
    result = run_sweep(spec, Settings(executor=args.executor, out=args.out, resume=False, **measured))
    table = calibration.build_table(load_run(args.out, result.run_id))
    path = pathlib.Path(args.table).expanduser() if args.table else auto.table_path()
    calibration.write_table(table, path, pathlib.Path(args.out) / STORE_COPY)
    print(result.summary())
    print("\n".join(calibration.crossover_lines(table)))
    print(f"calibration table: {path} (copy in {pathlib.Path(args.out) / STORE_COPY})")
    return 0


def run_limits() -> int:
    from kpbench import devices
    from kpbench.bench import machine
    from kpbench.errors import KPBenchError
    from kpbench.results.meta import gpu_name

    limits = machine.measure()
    try:
        path = machine.save(limits)
    except OSError as exc:
        raise KPBenchError(f"cannot cache the limits ({exc})") from exc
    print("\n".join(machine.lines(limits)))
    gpu = gpu_name()
    if gpu:
        device = devices.find(gpu)
        print(f"GPU {gpu}: " + (f"device table {device.name}: {device.sms} SMs at "
                                f"{device.clock_hz / 1e9:.2f} GHz, FMA {device.fma_per_s:.3g}/s, "
                                f"exp {device.exp_per_s:.3g}/s, {device.bandwidth / 1e9:.0f} GB/s"
                                if device else "not in the device table (no limit for its rows)"))
    print(f"machine limits: {path}")
    return 0
