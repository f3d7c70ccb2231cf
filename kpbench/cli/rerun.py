"""``kpbench rerun STORE``: the flags; what a rerun does is :mod:`kpbench.bench.rerun`'s
(its doc is this command's description)."""
from __future__ import annotations

from kpbench.bench import rerun as rerun_logic
from kpbench.cli import add_verb


def add_parser(subparsers) -> None:
    parser = add_verb(subparsers, "rerun", run, doc=rerun_logic.__doc__,
                      help="measure the points of a stored run again (then: kpbench compare)")
    parser.add_argument("store", metavar="STORE", help="results dir (or its sweeps dir)")
    parser.add_argument("--run-id", default=None, help="run to rerun (id or unique prefix; "
                                                       "default: the latest)")
    parser.add_argument("--out", default=None, help="results dir of the rerun (default: STORE)")
    parser.add_argument("--executor", choices=("ray", "inline"), default=None,
                        help="default: the stored run's")
    parser.add_argument("--address", default=None, help="Ray cluster address")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray cluster")
    parser.add_argument("--wait", action="store_true",
                        help="another sweep writing into --out: wait for it (default: exit 2)")
    parser.add_argument("--dry-run", action="store_true", help="list the points, run nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from kpbench.results.store import store_root

    if args.dry_run:
        return _dry_run(args.store, args.run_id)
    old_id, new_id, _ = rerun_logic.rerun(args.store, args.run_id, args.out, args.executor,
                                          args.address, args.num_cpus,
                                          progress=not args.no_progress, wait=args.wait)
    out = args.out or str(store_root(args.store))
    lines, differ = rerun_logic.check_rerun(args.store, old_id, out, new_id)
    print("\n".join(lines))
    print(f"rerun of {old_id} -> {new_id}; compare them with:\n"
          f"  kpbench compare {args.store} {out} --run-id {old_id} {new_id}")
    return 1 if differ else 0


def _dry_run(store, run_id) -> int:
    old_id, rows = rerun_logic.load_run(store, run_id)
    for group in rerun_logic.plan(rows, old_id):
        print(f"# {group.kind}: {len(group.points)} points, settings {group.settings}")
        for point in group.points:
            print(point.key(group.kind), point)
    return 0
