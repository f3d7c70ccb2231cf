"""Sweeps written as text: command-line values and TOML tables, parsed and checked.

Ranges are written as in the command line::

    "1e2..1e5"      -> 100, 1000, 10000, 100000   (one value per decade)
    "1e2..1e5:7"    -> 7 log-spaced integers from 100 to 100000
    "100,300,1000"  -> a plain list (items may themselves be ranges)

A ``[[sweep]]`` table (or the flags) gives the axes of a :class:`SweepSpec` and, under the
keys of :data:`kpbench.bench.settings.MEASURE_KEYS`, how its points are measured:
:func:`sweep_from_dict` returns the two apart. TOML values must have the key's type (a
list of words, or of numbers, or a comma string; no booleans).
"""
from __future__ import annotations

import functools
import math
import os
import re
from typing import Any, Callable

from kpbench.errors import KPBenchError
from kpbench.bench.checks import (AXIS_CHECKS, AXIS_TYPES, SCALAR_TYPES, SETTING_CHECKS, bound, check_fields,
                                  check_type, finite, whole_numbers)
from kpbench.bench.limits import MAX_BYTES, MAX_SIZE, MAX_VALUES
from kpbench.bench.plan import SweepSpec
from kpbench.bench.settings import MEASURE_KEYS, split_measure

NONE_WORDS = ("none", "null", "")   # an axis or setting without a value
# iters only: the eps-scaling schedule instead of a fixed count (conv: its old name). Elsewhere
# these words are errors, not "none": `--memory-budget conv` must not mean "no budget".
SCHEDULE_WORDS = NONE_WORDS + ("scaling", "eps-scaling", "conv", "converge")

_RANGE = re.compile(r"^\s*([0-9.eE+]+)\s*\.\.\s*([0-9.eE+]+)\s*(?::\s*(\d+))?\s*$")


def parse_sizes(text: str | int | float | list, name: str = "sizes") -> list[int]:
    """Sizes like "1e2..1e5", "1e2..1e5:7", "100,1000", or a list of those; 1..MAX_SIZE."""
    values: list[int] = []
    for item in _items(text):
        if isinstance(item, (int, float)):
            values.append(_as_int(item, text))
            continue
        match = _RANGE.match(item)
        if match:
            values.extend(_log_range(_number(match[1], text), _number(match[2], text), match[3], item))
        else:
            values.append(_as_int(_number(item, text), text))
    whole_numbers(name, values, 1, MAX_SIZE)
    return list(dict.fromkeys(values))


def _log_range(lo: float, hi: float, count: str | None, item: str) -> list[int]:
    if not 1 <= lo <= hi <= MAX_SIZE:
        raise KPBenchError(f"bad range {item!r}: need 1 <= start <= end <= {bound(MAX_SIZE)}")
    n = _range_count(count, item) if count else max(1, int(round(math.log10(hi / lo))) + 1)
    if n == 1:
        return [int(round(lo))]
    return [int(round(lo * (hi / lo) ** (k / (n - 1)))) for k in range(n)]


def _range_count(count: str, item: str) -> int:
    """The n of "a..b:n", from 1 to MAX_VALUES (checked on the digits: nothing is built)."""
    digits = count.lstrip("0")
    if not digits or len(digits) > len(str(MAX_VALUES)) or int(digits) > MAX_VALUES:
        raise KPBenchError(f"bad range {item!r}: the count after ':' must be from 1 to {MAX_VALUES}, "
                           f"got {count}")
    return int(digits)


def parse_floats(text, allow_none: bool = False) -> list[float | None]:
    """Numbers like "0.05,0.1" (and "none" where allowed)."""
    return [_maybe_none(item, float, allow_none, text) for item in _items(text)]


def parse_ints(text, allow_none: bool = False, none_words=NONE_WORDS) -> list[int | None]:
    """Integers like "1,2" (or ``none_words`` for None, where allowed: "10,scaling" for iters)."""
    return [_maybe_none(item, lambda v: _as_int(_number(v, text), text), allow_none, text, none_words)
            for item in _items(text)]


def parse_words(text) -> list[str]:
    return [str(item).strip() for item in _items(text) if str(item).strip()]


def parse_bytes(text) -> int | None:
    """"2GiB", "512MB", "1e9", "none" -> bytes (None for none); at most MAX_BYTES."""
    if text is None or (isinstance(text, str) and text.strip().lower() in NONE_WORDS):
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        amount = text
    else:
        match = re.match(r"^\s*([0-9.eE+]+)\s*([KMGT]?)(i?)B?\s*$", str(text), re.IGNORECASE)
        if not match:
            raise KPBenchError(f"cannot read a memory size from {text!r} (e.g. 2GiB, 512MB, 1e9)")
        base = 1024 if match[3] or match[2] == "" else 1000
        power = "KMGT".find(match[2].upper()) + 1 if match[2] else 0
        amount = _number(match[1], text) * base ** power
    if not finite(amount) or not 1 <= amount <= MAX_BYTES:
        raise KPBenchError(f"a memory size must be from 1 to {bound(MAX_BYTES)} bytes, got {text!r}")
    return int(amount)


def _items(text) -> list:
    if isinstance(text, (list, tuple)):
        out = []
        for item in text:
            out.extend(_items(item) if isinstance(item, str) else [item])
        return out
    if isinstance(text, str):
        return [part.strip() for part in text.split(",")]
    return [text]


def _maybe_none(item, convert: Callable, allow_none: bool, text, none_words=NONE_WORDS):
    if item is None or (isinstance(item, str) and item.strip().lower() in none_words):
        if not allow_none:
            raise KPBenchError(f"'none' is not allowed in {text!r}")
        return None
    if isinstance(item, str):
        item = _number(item, text)
    return convert(item)


def _number(item: str, text) -> float:
    try:
        return float(item)
    except ValueError:
        raise KPBenchError(f"not a number: {item!r} in {text!r}") from None


def _as_int(value: float, text) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, bool) or not float(value).is_integer():
        raise KPBenchError(f"not an integer: {value!r} in {text!r}")
    return int(value)




def _data_words(text) -> list[str]:
    """Data sources: a TOML list keeps each item whole (a path may hold a comma); a string
    is split at commas like every other axis."""
    return [item.strip() for item in _items(text)] if isinstance(text, str) else \
        [str(item).strip() for item in text]


def _data_value(word: str) -> str | None:
    """None for the default pair (out of the key); a file's path made absolute, so that
    every worker, whatever its working folder, reads the same file."""
    from kpbench.datasets.sources import DEFAULT, FILE_PREFIX

    if word == DEFAULT:
        return None
    if word.startswith(FILE_PREFIX) and word[len(FILE_PREFIX):]:
        return FILE_PREFIX + os.path.abspath(word[len(FILE_PREFIX):])
    return word



_PARSERS: dict[str, Callable[[Any], Any]] = {
    "ops": parse_words, "backends": parse_words, "kernels": parse_words, "losses": parse_words,
    "N": lambda v: parse_sizes(v, "N"), "D": lambda v: parse_sizes(v, "D"), "blur": parse_floats,
    "p": parse_ints,
    "reach": lambda v: parse_floats(v, allow_none=True), "dtype": parse_words,
    "device": parse_words, "seed": parse_ints,
    "iters": lambda v: parse_ints(v, allow_none=True, none_words=SCHEDULE_WORDS), "scaling": parse_floats,
    "tol": lambda v: parse_floats(v, allow_none=True),
    "offsets": lambda v: parse_floats(v, allow_none=True),
    "scales": lambda v: parse_floats(v, allow_none=True),
    "data": lambda v: [_data_value(w) for w in _data_words(v)],
    "M": lambda v: "same" if isinstance(v, str) and v.strip().lower() == "same" else parse_sizes(v, "M"),
    "repeats": lambda v: _single(parse_ints(v)), "warmup": lambda v: _single(parse_ints(v)),
    "timeout_s": lambda v: _single(parse_floats(v)), "memory_budget": parse_bytes, "kind": str,
}


def _single(values: list):
    if len(values) != 1:
        raise KPBenchError(f"one value, got {len(values)}")
    return values[0]

def sweep_from_dict(values: dict, where: str = "sweep spec",
                    labels: dict | None = None) -> tuple[SweepSpec, dict]:
    """(the SweepSpec, the measurement settings given) from loosely typed values (a TOML
    [[sweep]] table, parsed command-line strings), each checked for its type and limits;
    ``labels``: field -> the flag that gave it. The settings (keys of MEASURE_KEYS) go to
    :class:`kpbench.bench.settings.Settings`."""
    parsed = {}

    def parse(name, value):
        check_type(value, AXIS_TYPES.get(name) or SCALAR_TYPES[name], axis=name in AXIS_TYPES)
        parsed[name] = _PARSERS[name](value)
        (SETTING_CHECKS if name in MEASURE_KEYS else AXIS_CHECKS)[name](parsed[name])

    check_fields(values, {name: functools.partial(parse, name) for name in _PARSERS}, where, labels)
    axes, measured = split_measure(parsed)
    return SweepSpec(**axes), measured


def config_tables(data: dict, where) -> tuple[list[dict], dict]:
    """The [[sweep]] tables and the [run] table of a parsed TOML file, their shapes checked."""
    unknown = sorted(set(data) - {"sweep", "run"})
    if unknown:
        raise KPBenchError(f"{where}: unknown table(s) {', '.join(unknown)}; use [[sweep]] and [run]")
    sweeps = data.get("sweep", [])
    if isinstance(sweeps, dict):
        sweeps = [sweeps]
    if not isinstance(sweeps, list) or not all(isinstance(t, dict) for t in sweeps):
        raise KPBenchError(f"{where}: 'sweep' must be [[sweep]] tables (keys: "
                           f"{', '.join(_PARSERS)}), got {sweeps!r}")
    if not sweeps:
        raise KPBenchError(f"{where}: no [[sweep]] table")
    run = data.get("run", {})
    if not isinstance(run, dict):
        raise KPBenchError(f"{where}: 'run' must be a [run] table, got {run!r}")
    return sweeps, run

