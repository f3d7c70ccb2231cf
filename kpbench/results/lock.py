"""One sweep at a time per results folder: an exclusive lock (``fcntl.flock``) on
``<root>/.sweep.lock``.

A sweep reads the stored keys when it starts and measures the others; two sweeps writing
into one folder at once would each measure every point the other has not stored yet --
every point twice, each run slowing the other. So a sweep holds this lock from before it
reads the stored keys until its last row is stored; a second one is refused
(:class:`StoreBusy`, naming the holder's pid) or, with ``wait``, waits and then skips what
the first stored. The kernel drops the lock when its process ends, killed or not, so a
lock file left behind never blocks; the file's text (pid, host, command) only names the
holder in the message, and is read as untrusted data.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import pathlib
import socket
import sys

from kpbench.errors import KPBenchError
from kpbench.results.layout import lock_path



class StoreBusy(KPBenchError):
    """Another process is writing sweep rows into this results folder."""


@contextlib.contextmanager
def store_lock(root, wait: bool = False):
    """Hold the sweep lock of the results folder ``root`` (created if need be)."""
    try:
        import fcntl
    except ImportError:        # no flock (Windows): no lock
        yield
        return
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(lock_path(root), "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(lock_path(root))
            if not wait:
                raise StoreBusy(
                    f"{root} is being written by another sweep ({holder}); two sweeps into one "
                    "results folder would measure every point twice. Wait for it to finish "
                    "(kpbench sweep --wait does), or choose another --out") from None
            print(f"waiting for the sweep of {holder} to finish writing {root} ...",
                  file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            _write_holder(handle)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_holder(handle) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(),
        "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv)[:200]}))
    handle.flush()


def describe_holder(path: pathlib.Path) -> str:
    """"pid 123 on host h since T (command)" from a lock file; its text is data: only an
    integer pid and printable, shortened strings come out."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        pid = int(info["pid"])
    except (OSError, ValueError, TypeError, KeyError):
        return "a process that has not written its pid yet"
    host, since, command = (_printable(info.get(k)) for k in ("host", "since", "command"))
    return f"pid {pid} on host {host} since {since}" + (f": {command}" if command else "")


def _printable(value, width: int = 120) -> str:
    text = "".join(c for c in str(value or "") if c.isprintable())
    return text if len(text) <= width else text[:width - 3] + "..."
