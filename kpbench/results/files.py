"""The files a report reads from a results folder and writes into it, safely.

A results folder is data from elsewhere (copied, unpacked, shared): a figure in it may be a
link to a file outside it (``figures/flow/plot.png -> ~/.ssh/id_rsa``), and a link may sit
where the report writes (``report/report.html -> ~/.bashrc``). So the report embeds only
regular files whose real path is inside the folder (:func:`figures`), and writes each output
by replacing whatever is at its name, never through it (:func:`replace_file`).
"""
from __future__ import annotations

import io
import os
import pathlib
import tempfile

from kpbench.results.layout import figures_dir


def figures(results_dir: pathlib.Path, skip: pathlib.Path | None = None
            ) -> tuple[list[tuple[pathlib.Path, str]], list[str]]:
    """The PNG files under ``results_dir/figures`` a report may embed, as (path, name under
    ``results_dir``), and one line per file or folder it refuses, saying why. Links to
    folders are not followed; ``skip`` (the report's own output folder) is left out."""
    root = results_dir.resolve()
    skip = skip.resolve() if skip is not None else None
    found, refused = [], []
    for top, dirs, names in os.walk(figures_dir(results_dir)):   # not into links to folders
        top = pathlib.Path(top)
        if skip is not None and (top.resolve() == skip or skip in top.resolve().parents):
            continue
        for name in dirs:
            if (top / name).is_symlink():
                refused.append(f"{(top / name).relative_to(results_dir)}: a link to a folder (not followed)")
        for path in (top / name for name in names if name.endswith(".png")):
            reason = _refusal(path, root)
            if reason is None:
                found.append((path, str(path.relative_to(results_dir))))
            else:
                refused.append(f"{path.relative_to(results_dir)}: {reason}")
    return sorted(found, key=lambda f: f[1]), sorted(refused)


def _refusal(path: pathlib.Path, root: pathlib.Path) -> str | None:
    try:
        real = path.resolve()
    except (OSError, RuntimeError):   # a loop of links
        return "a link that leads nowhere"
    if root not in real.parents:
        return "a link to a file outside the results folder"
    if not real.is_file():
        return "not a regular file"
    return None


def replace_file(path: pathlib.Path, data: bytes) -> pathlib.Path:
    """Write ``data`` to a new file and move it to ``path``: a link (or anything) there is
    replaced, never written through; a reader never sees a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_figure(fig, path, dpi: int = 100) -> pathlib.Path:
    """A matplotlib figure as a PNG at ``path``, written by :func:`replace_file`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=dpi)
    return replace_file(path, png.getvalue())


__all__ = ["figures", "replace_file", "save_figure"]
