"""Plugins: modules that register extra backends or sweep ops (tests, third parties).

A plugin is a module name (``package.module``) or a path to a ``.py`` file; importing
it registers what it offers (``kpbench.backends.register_backend``,
``kpbench.bench.ops.register_op``). ``KPBENCH_PLUGINS`` (comma-separated) names
the plugins of a process; :func:`use` adds one here and to that variable, so that the
processes started afterwards (sweep workers, subprocesses) load it too.

Nothing loads them as a side effect of an import: the ``kpbench`` command calls
:func:`load` at start (their backends and ops exist before a flag is checked), and a sweep
sends the active plugins with its Settings, so every worker (of an already running Ray
cluster too) loads them before it measures (``measure.run_point``).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pathlib
import sys

from kpbench.errors import KPBenchError

PLUGINS_ENV = "KPBENCH_PLUGINS"
_loaded: dict[str, object] = {}


def active() -> tuple[str, ...]:
    """The plugins named in ``KPBENCH_PLUGINS``."""
    return tuple(p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(",") if p.strip())


def load(names=None) -> None:
    """Import each plugin once (default: the active ones)."""
    for name in active() if names is None else names:
        if name not in _loaded:
            _loaded[name] = None   # set first: a plugin importing kpbench must not recurse
            _loaded[name] = _import(name)


def use(name: str) -> None:
    """Load ``name`` here and make it active for the processes started from now on."""
    name = str(name)
    if name not in active():
        os.environ[PLUGINS_ENV] = ",".join(active() + (name,))
    load([name])


def _import(name: str):
    if name.endswith(".py"):
        path = pathlib.Path(name)
        if not path.is_file():
            raise KPBenchError(f"plugin {name!r}: no such file")
        module_name = f"kpbench_plugin_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module   # so that "module:Class" targets resolve
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise KPBenchError(f"plugin {name!r} cannot be imported: {exc}") from exc
