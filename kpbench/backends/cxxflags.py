"""Compiler flags that may reach a compiler: a strict allow-list (``check_cxxflags``).

KeOps compiles each formula with ``CXXFLAGS`` pasted into a command that a shell runs
(keopscore: ``subprocess.run(command, shell=True)``), so a flag string is code: ``$(...)``,
``;``, backticks or a newline run commands. Even without a shell, some compiler flags run or
load other programs or read and write files: ``-fplugin=`` (loads a shared object),
``-B``/``-wrapper``/``-specs=`` (run other programs), ``@file`` (reads more flags), ``-o``,
``-I``/``-include`` (compile someone else's code), ``-Wl,``/``-Wa,``/``-Wp,`` (pass anything
on), ``-fdump-*``/``-fprofile-*`` (write files). So flags are accepted only when every
space-separated token has one of the forms below, with values made of letters, digits and
``_ . + -`` (no paths, quotes or shell characters):

    -O -O0..-O3 -Os -Og -Oz -Ofast     optimisation level
    -m[no-]NAME[=VALUE]                 target: -march=native, -mtune=..., -mavx2, -mno-fma
    -f[no-]NAME[=VALUE]                 code generation: -ffast-math, -funroll-loops, -ffp-contract=fast
                                        (not the file-writing or program-loading ones, FORBIDDEN_F)
    -DNAME[=VALUE] -UNAME               macros
    -std=c++17 -std=gnu++17             language standard
    -g -g0..-g3 -pthread                debug information, threads
    -W[no-]NAME[=VALUE]                 warnings (no commas: -Wl, -Wa, -Wp are refused)
"""
from __future__ import annotations

import re

from kpbench.errors import KPBenchError

_VALUE = r"[A-Za-z0-9_.+-]+"
_NAME = r"[a-z0-9][a-z0-9-]*"
ALLOWED_TOKEN = re.compile(
    rf"-O[0-3sgz]?|-Ofast"
    rf"|-m(?:no-)?{_NAME}(?:={_VALUE})?"
    rf"|-f(?:no-)?(?P<f>{_NAME})(?:={_VALUE})?"
    rf"|-D[A-Za-z_][A-Za-z0-9_]*(?:=[A-Za-z0-9_.+-]*)?|-U[A-Za-z_][A-Za-z0-9_]*"
    rf"|-std=(?:c|gnu)\+\+[0-9a-z]+"
    rf"|-g[0-3]?|-pthread"
    rf"|-W(?:no-)?[a-z][a-z0-9-]*(?:={_VALUE})?")
# -f flags of the allowed shape that load or run programs, or write files
FORBIDDEN_F = ("plugin", "dump", "profile", "auto-profile", "opt-info", "save-optimization-record",
               "stack-usage", "callgraph-info", "self-test", "compare-debug", "lto", "use-ld",
               "use-linker-plugin", "test-coverage", "diagnostics", "debug-prefix-map",
               "file-prefix-map", "macro-prefix-map", "record-gcc-switches")
ALLOWED_FORMS = ("-O<level>, -m[no-]NAME[=VALUE] (-march=native), -f[no-]NAME[=VALUE] (-ffast-math; "
                 "not -fplugin, -fdump-*, -fprofile-*, -flto, -fuse-ld), -DNAME[=VALUE], -UNAME, "
                 "-std=c++NN, -g, -pthread, -W[no-]NAME; values of letters, digits and _.+- only")


def bad_token(flags: str) -> str | None:
    """The first token of ``flags`` that is not an allowed compiler flag (None: all are)."""
    for token in flags.split(" "):
        if token and not _allowed(token):
            return token
    return None


def _allowed(token: str) -> bool:
    match = ALLOWED_TOKEN.fullmatch(token)
    if match is None:
        return False
    f_name = match.group("f")
    return f_name is None or not f_name.startswith(FORBIDDEN_F)


def check_cxxflags(flags, where: str) -> str:
    """``flags`` when every token is an allowed compiler flag, else KPBenchError naming
    ``where`` (the row and column, or the variable) and the offending token."""
    if not isinstance(flags, str):
        raise KPBenchError(f"{where}: compiler flags must be text, got {type(flags).__name__}")
    token = bad_token(flags)
    if token is not None:
        raise KPBenchError(f"{where}: {token!r} is not an allowed compiler flag (allowed: "
                           f"{ALLOWED_FORMS}); nothing was compiled or run")
    return flags
