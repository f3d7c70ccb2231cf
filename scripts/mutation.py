"""Mutation testing of the measurement, results and validation code (run by scripts/mutation.sh).

For each module of scripts/mutation.toml: a copy of the checkout in a work folder, mutmut
(https://github.com/boxed/mutmut) run there on the module's functions, each mutant against
only the module's test files that ran its function (mutmut's per-function map), then one
report: per module the mutants killed, the score, the survivors with their diff, and the
equivalent survivors (scripts/mutation_equivalent.toml) with the reason each is harmless.

    score = killed / (mutants - equivalent)      (a timeout counts as killed)

A survivor listed as equivalent is shown in the report, never dropped silently; an entry of
that list that no longer survives is reported as stale. Exit 1 when a module's score is
below its floor, 2 on bad usage.

    python scripts/mutation.py [--modules measure,compare] [--report FILE] [--workdir DIR]
                               [--tests-from REV]    # the tests as they were at REV ("before")
                               [--sample 05]         # one mutant in five
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / "scripts" / "mutation.toml"
EQUIVALENT = ROOT / "scripts" / "mutation_equivalent.toml"
KILLED, SURVIVED, NO_TESTS, TIMEOUT = "killed", "survived", "no tests", "timeout"
# mutmut's exit codes per mutant (mutmut/stats.py); anything else is "suspicious"
STATUS_BY_EXIT = {1: KILLED, 3: KILLED, 0: SURVIVED, 5: NO_TESTS, 33: NO_TESTS, 34: "skipped",
                  36: TIMEOUT, 24: TIMEOUT, -24: TIMEOUT, 152: TIMEOUT, 255: TIMEOUT}


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.sample.isdigit() and args.sample:
        print(f"mutation: --sample takes digits (e.g. 05), got {args.sample!r}", file=sys.stderr)
        return 2
    config = tomllib.loads(CONFIG.read_text())
    modules = config["module"]
    if args.modules:
        wanted = args.modules.split(",")
        unknown = sorted(set(wanted) - {m["name"] for m in modules})
        if unknown:
            print(f"mutation: unknown module(s) {', '.join(unknown)}; known: "
                  + ", ".join(m["name"] for m in modules), file=sys.stderr)
            return 2
        modules = [m for m in modules if m["name"] in wanted]
    equivalent = tomllib.loads(EQUIVALENT.read_text()).get("equivalent", {})
    results = [run_module(m, config.get("mutmut", {}), args) for m in modules]
    report = format_report(results, equivalent, args.tests_from, args.sample)
    pathlib.Path(args.report).write_text(report)
    statuses = {r["name"]: {n: m["status"] for n, m in r["mutants"].items()} for r in results}
    pathlib.Path(args.report).with_suffix(".json").write_text(json.dumps(statuses, indent=1))
    print(report.split("\n## ")[0])
    print(f"mutation: report written to {args.report}")
    return 1 if any(r["score"] < r["floor"] for r in scored(results, equivalent)) else 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", help="comma-separated module names of mutation.toml (default: all)")
    parser.add_argument("--report", default="mutation-report.md", help="where the report goes")
    parser.add_argument("--workdir", default=os.environ.get("KPBENCH_MUTATION_WORKDIR",
                                                             "/tmp/kpbench-mutation"))
    parser.add_argument("--tests-from", metavar="REV",
                        help="run the tests/ of this git revision (the score before a change)")
    parser.add_argument("--max-children", type=int, default=1, help="mutants run at once")
    parser.add_argument("--sample", metavar="DIGITS", default="",
                        help="only the mutants whose number ends in one of DIGITS (\"0\": one in "
                             "ten, \"05\": one in five), the same ones on every run")
    return parser.parse_args(argv)


# -- one module ------------------------------------------------------------------------------
def run_module(module: dict, mutmut: dict, args) -> dict:
    work = pathlib.Path(args.workdir) / module["name"]
    copy_checkout(work, args.tests_from)
    tests = [t for t in module["tests"] if (work / t).exists()]
    write_mutmut_config(work, module, tests, mutmut)
    started = time.monotonic()
    cpu_before = os.times()
    run = subprocess.run([*mutmut_command(), "run", "--max-children",
                          str(args.max_children), *mutant_patterns(module, args.sample)],
                         cwd=work, env=mutmut_env(work), capture_output=True, text=True)
    cpu_after = os.times()
    seconds = time.monotonic() - started
    cpu = (cpu_after.children_user - cpu_before.children_user
           + cpu_after.children_system - cpu_before.children_system)
    if run.returncode != 0:
        tail = (run.stdout + run.stderr)[-3000:]
        raise SystemExit(f"mutation: mutmut failed on {module['name']} (exit {run.returncode}):\n{tail}")
    mutants = collect(work, module, args.sample)
    return dict(name=module["name"], path=module["path"], floor=float(module["floor"]),
                tests=tests, mutants=mutants, seconds=seconds, cpu_seconds=cpu)


def copy_checkout(work: pathlib.Path, tests_from: str | None) -> None:
    """The tracked and untracked (not ignored) files of the checkout, copied to ``work``;
    with ``tests_from``, tests/ as it was at that revision."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name)
    if tests_from:
        shutil.rmtree(work / "tests")
        archive = subprocess.run(["git", "archive", tests_from, "tests"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)


def write_mutmut_config(work: pathlib.Path, module: dict, tests: list, mutmut: dict) -> None:
    settings = {"source_paths": ["kpbench"], "only_mutate": [module["path"]],
                "pytest_add_cli_args": ["-p", "no:cacheprovider"],
                "pytest_add_cli_args_test_selection": tests, **mutmut}
    lines = ["", "[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    with open(work / "pyproject.toml", "a") as f:
        f.write("\n".join(lines) + "\n")


def mutant_patterns(module: dict, sample: str = "") -> list[str]:
    """mutmut's names of the mutants of the module's ``functions`` (none listed: all):
    ``pkg.mod.x_func__mutmut_3``, methods ``pkg.mod.xǁClassǁmethod__mutmut_3``; with
    ``sample``, those whose number ends in one of its digits."""
    dotted = module["path"].removesuffix(".py").replace("/", ".")
    ending = f"*[{sample}]" if sample else "*"
    functions = module.get("functions", [])
    if not functions:
        return [f"{dotted}.*__mutmut_{ending}"] if sample else []
    patterns = []
    for function in functions:
        cls, _, name = function.rpartition(".")
        patterns.append(f"{dotted}.x\u01c1{cls}\u01c1{name}__mutmut_{ending}" if cls
                        else f"{dotted}.x_{function}__mutmut_{ending}")
    return patterns


def mutmut_command() -> list[str]:
    """mutmut's own script beside this interpreter (``python -m mutmut`` re-imports its
    __main__, which mutmut warns about)."""
    script = pathlib.Path(sys.executable).with_name("mutmut")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mutmut"]


def mutmut_env(work: pathlib.Path) -> dict:
    """The mutated copy first on the path, for the tests and any process they start (the
    folder made now: Python caches a path entry that does not exist yet as importing nothing)."""
    (work / "mutants").mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(work / "mutants"))
    env.setdefault("KPBENCH_BUILD_DIR", "/tmp/kpbench-build")
    return env


COLLECT = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.mutation.data import SourceFileMutationData
from pathlib import Path
data = SourceFileMutationData(path=Path(sys.argv[1]))
data.load()
wanted = set(sys.argv[2:])
print(json.dumps({name: {"exit": code, "diff": get_diff_for_mutant(name, path=Path(sys.argv[1]))
                                      if code not in (1, 3) else ""}
                  for name, code in data.exit_code_by_key.items() if name in wanted or not wanted}))
"""


def collect(work: pathlib.Path, module: dict, sample: str = "") -> dict:
    """name -> {status, diff (survivors only)} of the mutants that were run."""
    import fnmatch

    meta = json.loads((work / "mutants" / (module["path"] + ".meta")).read_text())
    patterns = mutant_patterns(module, sample) or ["*"]
    names = [n for n, code in meta["exit_code_by_key"].items()
             if code is not None and any(fnmatch.fnmatch(n, p) for p in patterns)]
    out = subprocess.run([sys.executable, "-c", COLLECT, module["path"], *names], cwd=work,
                         env=mutmut_env(work), check=True, capture_output=True, text=True).stdout
    found = json.loads(out.strip().splitlines()[-1])
    return {name: {"status": STATUS_BY_EXIT.get(v["exit"], "suspicious"), "diff": v["diff"]}
            for name, v in found.items()}


# -- the report ------------------------------------------------------------------------------
def scored(results: list, equivalent: dict) -> list:
    for r in results:
        statuses = {n: m["status"] for n, m in r["mutants"].items()}
        killed = sum(s in (KILLED, TIMEOUT) for s in statuses.values())
        r["equivalent"] = sorted(n for n, s in statuses.items() if n in equivalent and s not in (KILLED, TIMEOUT))
        r["stale"] = sorted(n for n in equivalent if n in statuses and statuses[n] in (KILLED, TIMEOUT))
        r["survivors"] = sorted((n for n, s in statuses.items()
                                 if s not in (KILLED, TIMEOUT) and n not in equivalent), key=natural)
        counted = len(statuses) - len(r["equivalent"])
        r["killed"], r["counted"] = killed, counted
        r["score"] = 100.0 * killed / counted if counted else 100.0
    return results


def natural(name: str):
    head, _, number = name.rpartition("__mutmut_")
    return head, int(number) if number.isdigit() else 0


def format_report(results: list, equivalent: dict, tests_from: str | None, sample: str = "") -> str:
    lines = ["# Mutation testing (mutmut)", "",
             f"tests: {'as of ' + tests_from if tests_from else 'this checkout'}; "
             + (f"mutants numbered ...[{sample}] only; " if sample else "")
             + "score = killed / (mutants - equivalent)", "",
             "| module | mutants | killed | equivalent | survived | score | floor | wall s | cpu s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in scored(results, equivalent):
        verdict = "" if r["score"] >= r["floor"] else " BELOW"
        lines.append(f"| {r['name']} ({r['path']}) | {len(r['mutants'])} | {r['killed']} | "
                     f"{len(r['equivalent'])} | {len(r['survivors'])} | {r['score']:.1f}%{verdict} | "
                     f"{r['floor']:.0f}% | {r['seconds']:.0f} | {r['cpu_seconds']:.0f} |")
    for r in results:
        lines += ["", f"## {r['name']}: {r['path']}", "", "tests: " + " ".join(r["tests"])]
        for title, names in (("survivors", r["survivors"]), ("equivalent (not counted)", r["equivalent"])):
            lines += ["", f"### {title}: {len(names)}"]
            for name in names:
                why = f" -- {equivalent[name]}" if name in equivalent else ""
                lines += ["", f"{name} ({r['mutants'][name]['status']}){why}", "```diff",
                          r["mutants"][name]["diff"].strip(), "```"]
        if r["stale"]:
            lines += ["", "### listed as equivalent but killed now (remove from mutation_equivalent.toml)"]
            lines += [f"- {name}" for name in r["stale"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
