"""What the reproductions share: backend/dtype/device set-up, timing, row metadata, figures."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from kpbench.backends import get_backend
from kpbench.errors import KPBenchError
from kpbench.results.files import save_figure
from kpbench.results.meta import record_environment, run_metadata

AUTOGRAD_ERROR = "reproductions need an autograd backend (torch, keops, cuda)"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Setup:
    """Where and how a reproduction computes: backend name, dtype name, torch device, seed."""

    backend: str
    dtype: str
    device: str
    seed: int

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def tensor(self, array) -> torch.Tensor:
        """A NumPy array (float64 from kpbench.datasets) cast to this set-up's dtype/device."""
        return torch.as_tensor(np.asarray(array), dtype=self.torch_dtype, device=self.device)

    def sync(self) -> None:
        """Wait for queued GPU work, so that wall-clock timings mean something."""
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)

    def row(self, **fields) -> dict:
        return {"backend": self.backend, "dtype": self.dtype, "device": self.device,
                "seed": self.seed, **fields}


def make_setup(backend: str = "torch", dtype: str = "float64", device: str = "auto",
               seed: int = 0) -> Setup:
    """Check the backend can run a reproduction here (autograd, dtype, device) and pick the device."""
    bk = get_backend(backend)  # unknown/unavailable backends raise with the reason
    if not bk.capabilities.autograd:
        raise KPBenchError(f"{AUTOGRAD_ERROR}; backend {bk.name!r} has none")
    if dtype not in DTYPES:
        raise KPBenchError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not getattr(bk.capabilities, dtype):
        raise KPBenchError(f"backend {bk.name!r} does not support {dtype}")
    if device == "auto":
        device = "cuda" if bk.capabilities.cuda and torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise KPBenchError(f"device {device!r} requested but torch sees no CUDA device")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise KPBenchError(f"device must be 'auto', 'cpu' or 'cuda[:k]', got {device!r}")
    if bk.name == "cuda" and device == "cpu":
        raise KPBenchError("backend 'cuda' computes on a CUDA device; device='cpu' makes no sense")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise KPBenchError(f"seed must be an integer, got {seed!r}")
    return Setup(backend=bk.name, dtype=dtype, device=device, seed=int(seed))


def select_specs(specs, names):
    """The specs (anything with a ``label``) named in ``names`` (None: all), in their order."""
    if not names:
        return list(specs)
    labels = [s.label for s in specs]
    unknown = [n for n in names if n not in labels]
    if unknown:
        raise KPBenchError(f"unknown loss(es) {', '.join(unknown)}; choose among {', '.join(labels)}")
    return [s for s in specs if s.label in names]


def run_meta(table: str, store) -> dict:
    """Run metadata (one run_id) shared by every row of one reproduction run; the run's
    environment goes to the store's ``runs`` table (kpbench.results.meta)."""
    meta = run_metadata(sweep=table, executor="inline")
    record_environment(store, meta["run_id"])
    return meta


class Stopwatch:
    """Wall-clock time of a block, GPU work included."""

    def __init__(self, setup: Setup):
        self.setup = setup
        self.seconds = math.nan

    def __enter__(self):
        self.setup.sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.setup.sync()
        self.seconds = time.perf_counter() - self._start
        return False


def finite(value) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    return bool(np.isfinite(np.asarray(value)).all())


def nan_to_none(value):
    """NaN/inf floats stored as null (the nan column says what happened)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported only when drawing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_snapshot_figure(fig, axes, n_snapshots: int, title: str, path) -> None:
    """Blank the panels left over after the snapshots, title, save and close."""
    for ax in axes.ravel()[n_snapshots:]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
    pyplot().close(fig)


def print_table(summaries: list[dict], columns: list[str]) -> None:
    """A plain-text table of the per-loss summaries."""
    cells = [[_fmt(s.get(c)) for c in columns] for s in summaries]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)
