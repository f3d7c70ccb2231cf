"""Named sources of the (x, y) pair a sweep point measures: the ``data`` axis.

A source turns (N, M, D, seed) into :class:`Clouds`: x (N, D), y (M, D) in float64,
optional weights a, b, and what the row must say about where they came from.

* generators (D from the point): ``default`` (the sweep's historical pair: x uniform in
  the unit cube, y Gaussian blobs), ``cube``, ``blobs``, ``sphere`` (surface of the unit
  sphere S^{D-1}); with a fixed D: ``swiss_roll`` (D=3), ``intervals_1d`` (the 1D flow's
  [0, .2] -> [.6, 1]), ``image_2d`` (the 2D flow's crescent -> blob pair);
* real data shipped inside scikit-learn (no download): ``digits`` (D=64; x: digits 0-4,
  y: digits 5-9), ``breast_cancer`` (D=30; x: malignant, y: benign), standardised per
  feature over the whole set, or raw with the ``_raw`` suffix (pixel values 0..16, features
  spanning five decades: a conditioning test of its own);
* files, ``file:PATH``: ``.npy`` (one cloud, K x D), ``.npz`` (arrays ``x``, ``y``, optional
  weights ``a``, ``b``; or one array ``x``), ``.csv`` (numbers, one point a line, an optional
  header line), ``.ply`` (the vertices' x, y, z, read with plyfile) and ``.xyz`` (x y z a line).
  A file fixes D.

Sampling: a cloud larger than needed is sampled with the point's seed, without replacement
(one cloud serves both x and y: two disjoint samples where it holds N + M points); a cloud
too small is sampled with replacement and ``Clouds.replaced`` says so. A weighted cloud
(a, b given) is never resampled with replacement: too few points is then an error.

A file's path is data (from a preset, a command line or a stored row): it is only ever
opened and parsed here (``numpy.load`` with ``allow_pickle=False``), never handed to a
shell, an import or a page. Every problem with a file is a :class:`KPBenchError` naming
the file and what is wrong.

Plugins add sources with :func:`register_dataset`.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from kpbench.errors import KPBenchError

DEFAULT = "default"
FILE_PREFIX = "file:"
FILE_SUFFIXES = (".npy", ".npz", ".csv", ".ply", ".xyz")
HASH_CHARS = 16
MAX_FILE_BYTES = 2**31     # a point cloud file larger than 2 GiB is refused before reading


@dataclass(frozen=True)
class Clouds:
    """The pair of one point, float64, and what its row records about its origin."""

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray | None = None      # weights (sum 1), None: uniform
    b: np.ndarray | None = None
    replaced: bool = False           # some cloud was sampled with replacement (too few points)
    file_hash: str | None = None     # sha256 of the file's bytes (first HASH_CHARS hex digits)
    file_size: int | None = None     # bytes


@dataclass(frozen=True)
class DatasetSource:
    """``make(N, M, D, seed) -> Clouds``; ``dim``: the D it fixes (None: the point's)."""

    name: str
    make: Callable[[int, int, int, int], Clouds]
    dim: int | None = None
    description: str = ""


_SOURCES: dict[str, DatasetSource] = {}


def register_dataset(source: DatasetSource) -> None:
    """Add a named source (for plugins); names are words without ':' (``file:`` is taken)."""
    if not source.name or ":" in source.name or source.name != source.name.strip():
        raise KPBenchError(f"a dataset name is a word without ':', got {source.name!r}")
    _SOURCES[source.name] = source


def dataset_names() -> list[str]:
    return list(_SOURCES)


def get_source(name: str) -> DatasetSource:
    """The source a ``data`` value names (``file:PATH`` is read, checked and cached)."""
    if not isinstance(name, str):
        raise KPBenchError(f"a data source is a string, got {type(name).__name__} {name!r}")
    if name.startswith(FILE_PREFIX):
        return _file_source(name[len(FILE_PREFIX):])
    if name not in _SOURCES:
        raise KPBenchError(f"unknown data source {name!r}; choose from {', '.join(_SOURCES)}, "
                           f"or {FILE_PREFIX}PATH ({', '.join(FILE_SUFFIXES)})")
    return _SOURCES[name]


def check_name(name) -> None:
    """A known name or ``file:PATH`` with a known suffix (the file itself is read later)."""
    if isinstance(name, str) and name.startswith(FILE_PREFIX):
        _suffix(name[len(FILE_PREFIX):])
        return
    get_source(name)


def fixed_dim(name: str) -> int | None:
    """The D a source fixes (None: the point's D; also None for a file that cannot be read
    now: its points then fail one by one, with the file's error)."""
    try:
        return get_source(name).dim
    except KPBenchError:
        if isinstance(name, str) and name.startswith(FILE_PREFIX):
            return None
        raise


def make_clouds(name: str | None, N: int, M: int, D: int, seed: int) -> Clouds:
    """The pair of a point; a source with a fixed D refuses a point of another D."""
    source = get_source(name or DEFAULT)
    if source.dim is not None and source.dim != D:
        raise KPBenchError(f"data {name!r} has D={source.dim}; the point asks D={D}")
    return source.make(N, M, D, seed)


# -- sampling ------------------------------------------------------------------------
def sample_rows(cloud: np.ndarray, n: int, rng, weights=None, what: str = "cloud"):
    """(rows, weights or None, replaced): n rows of ``cloud``, without replacement where it
    has n rows or more; weights are renormalised over the rows taken."""
    count = len(cloud)
    if count >= n:
        index = np.sort(rng.choice(count, size=n, replace=False))
        replaced = False
    elif weights is not None:
        raise KPBenchError(f"{what}: too few points ({count}) for {n} without replacement "
                           "(a weighted cloud is never resampled with replacement)")
    else:
        index, replaced = rng.integers(0, count, size=n), True
    if weights is None:
        return cloud[index], None, replaced
    w = weights[index]
    if not w.sum() > 0:
        raise KPBenchError(f"{what}: the {n} points drawn have zero total weight")
    return cloud[index], w / w.sum(), replaced


def split_one_cloud(cloud: np.ndarray, N: int, M: int, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """x and y drawn from one cloud: disjoint where it holds N + M points, else independently
    (without replacement where each fits, with where not)."""
    rng = np.random.default_rng([seed, 27])
    if len(cloud) >= N + M:
        order = rng.permutation(len(cloud))
        return cloud[np.sort(order[:N])], cloud[np.sort(order[N:N + M])], False
    x, _, rx = sample_rows(cloud, N, rng)
    y, _, ry = sample_rows(cloud, M, rng)
    return x, y, rx or ry


# -- generators ------------------------------------------------------------------------
def _default(N, M, D, seed) -> Clouds:
    from kpbench.datasets import gaussian_blobs, uniform_cube

    return Clouds(uniform_cube(N, D, seed=seed), gaussian_blobs(M, D, seed=seed + 1))


def _cube(N, M, D, seed) -> Clouds:
    from kpbench.datasets import uniform_cube

    return Clouds(uniform_cube(N, D, seed=seed), uniform_cube(M, D, seed=seed + 1))


def _blobs(N, M, D, seed) -> Clouds:
    from kpbench.datasets import gaussian_blobs

    return Clouds(gaussian_blobs(N, D, seed=seed), gaussian_blobs(M, D, seed=seed + 1))


def sphere_surface(N: int, D: int, seed: int) -> np.ndarray:
    """N points uniform on the unit sphere S^{D-1} (normalised Gaussians)."""
    g = np.random.default_rng([seed, 5]).standard_normal((N, D))
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    return g / np.where(norms > 0, norms, 1.0)


def swiss_roll(N: int, seed: int) -> np.ndarray:
    """N points on the Swiss roll surface in 3D: (t cos t, h, t sin t) / 4pi, t in
    [1.5pi, 4.5pi], h in [0, 1] (scikit-learn's parametrisation, scaled to about a unit box)."""
    rng = np.random.default_rng([seed, 6])
    t = 1.5 * np.pi * (1 + 2 * rng.random(N))
    h = rng.random(N)
    return np.stack([t * np.cos(t), 4.5 * np.pi * h, t * np.sin(t)], axis=1) / (4.5 * np.pi)


FLOW_1D_INTERVALS = ((0.0, 0.2), (0.6, 1.0))      # the 1D gradient flow's source and target
FLOW_2D_IMAGES = ("crescent", "blob_pair")         # the 2D gradient flow's source and target


def _intervals_1d(N, M, D, seed) -> Clouds:
    from kpbench.datasets import interval_1d

    return Clouds(interval_1d(N, *FLOW_1D_INTERVALS[0]), interval_1d(M, *FLOW_1D_INTERVALS[1]))


def _image_2d(N, M, D, seed) -> Clouds:
    from kpbench.datasets import image_path, sample_from_image

    source, target = (image_path(name) for name in FLOW_2D_IMAGES)
    return Clouds(sample_from_image(source, N, seed), sample_from_image(target, M, seed + 1))


# -- real data shipped with scikit-learn ----------------------------------------------
def _sklearn_pair(loader: str, first_class: Callable[[np.ndarray], np.ndarray], raw: bool):
    """(x cloud, y cloud) of a scikit-learn data set split by class, standardised or raw."""
    try:
        import sklearn.datasets as skd
    except ImportError as exc:
        raise KPBenchError("the real data sets need scikit-learn (pip install 'kpbench[data]')") from exc
    bunch = getattr(skd, loader)()
    data = np.asarray(bunch.data, dtype=np.float64)
    if not raw:
        std = data.std(axis=0)
        data = (data - data.mean(axis=0)) / np.where(std > 0, std, 1.0)
    mask = first_class(np.asarray(bunch.target))
    return data[mask], data[~mask]


def _real(loader: str, first_class, raw: bool):
    def make(N, M, D, seed) -> Clouds:
        xs, ys = _sklearn_pair(loader, first_class, raw)
        rng = np.random.default_rng([seed, 27])
        x, _, rx = sample_rows(xs, N, rng)
        y, _, ry = sample_rows(ys, M, rng)
        return Clouds(x, y, replaced=rx or ry)
    return make


REAL_DATA = {   # name: (loader, D, x = the rows where this holds, description)
    "digits": ("load_digits", 64, lambda t: t < 5, "scikit-learn digits 8x8: x digits 0-4 (901), y 5-9 (896)"),
    "breast_cancer": ("load_breast_cancer", 30, lambda t: t == 0,
                      "scikit-learn breast cancer: x malignant (212), y benign (357)"),
}


def _register_builtins() -> None:
    for name, make, dim, text in (
            (DEFAULT, _default, None, "x uniform in the unit cube, y Gaussian blobs (the sweep's pair)"),
            ("cube", _cube, None, "x, y uniform in the unit cube"),
            ("blobs", _blobs, None, "x, y Gaussian blobs (3 blobs, std .05, centres in the unit cube)"),
            ("sphere", lambda N, M, D, s: Clouds(sphere_surface(N, D, s), sphere_surface(M, D, s + 1)),
             None, "x, y uniform on the unit sphere surface"),
            ("swiss_roll", lambda N, M, D, s: Clouds(swiss_roll(N, s), swiss_roll(M, s + 1)), 3,
             "x, y on a Swiss roll (D=3)"),
            ("intervals_1d", _intervals_1d, 1, "the 1D flow: x evenly on [0, .2], y on [.6, 1] (D=1)"),
            ("image_2d", _image_2d, 2, "the 2D flow: x from the crescent image, y from the blob pair (D=2)")):
        register_dataset(DatasetSource(name, make, dim, text))
    for name, (loader, dim, first, text) in REAL_DATA.items():
        register_dataset(DatasetSource(name, _real(loader, first, raw=False), dim, text + ", standardised"))
        register_dataset(DatasetSource(f"{name}_raw", _real(loader, first, raw=True), dim, text + ", raw"))


_register_builtins()


# -- files --------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileClouds:
    """What a file holds: one cloud (y None) or two, optional weights; its hash and size."""

    x: np.ndarray
    y: np.ndarray | None
    a: np.ndarray | None
    b: np.ndarray | None
    file_hash: str
    file_size: int


_FILE_CACHE: dict[tuple, FileClouds] = {}
FILE_CACHE_KEPT = 8


def file_hash(path: str | os.PathLike) -> tuple[str, int]:
    """(sha256 of the file's bytes, first HASH_CHARS hex digits; its size in bytes)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest()[:HASH_CHARS], size


def checked_stat(path_text: str) -> os.stat_result:
    """The stat of a data file that exists, is regular, not empty and not too large (a path
    is data: /dev/zero or a FIFO is refused before anything reads it)."""
    where = f"data file {path_text!r}"
    try:
        stat = os.stat(path_text)
    except FileNotFoundError:
        raise KPBenchError(f"{where}: no such file") from None
    except OSError as exc:
        raise KPBenchError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if not Path(path_text).is_file():
        raise KPBenchError(f"{where}: not a regular file")
    if stat.st_size == 0:
        raise KPBenchError(f"{where}: the file is empty")
    if stat.st_size > MAX_FILE_BYTES:
        raise KPBenchError(f"{where}: {stat.st_size} bytes, more than the {MAX_FILE_BYTES} allowed")
    return stat


def read_file(path_text: str) -> FileClouds:
    """The clouds of ``file:PATH``, checked (cached per path, size and modification time)."""
    path = Path(path_text)
    where = f"data file {path_text!r}"
    _suffix(path_text)
    stat = checked_stat(path_text)
    cache_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if cache_key not in _FILE_CACHE:
        if len(_FILE_CACHE) >= FILE_CACHE_KEPT:
            _FILE_CACHE.pop(next(iter(_FILE_CACHE)))
        _FILE_CACHE[cache_key] = _read_checked(path, where)
    return _FILE_CACHE[cache_key]


def _suffix(path_text: str) -> str:
    suffix = Path(path_text).suffix.lower()
    if not path_text or suffix not in FILE_SUFFIXES:
        raise KPBenchError(f"data file {path_text!r}: unknown type {suffix or '(no suffix)'!r}; "
                           f"use {', '.join(FILE_SUFFIXES)}")
    return suffix


def _read_checked(path: Path, where: str) -> FileClouds:
    try:
        digest, size = file_hash(path)
        arrays = _READERS[path.suffix.lower()](path, where)
    except KPBenchError:
        raise
    except (OSError, ValueError, EOFError, KeyError, IndexError, TypeError) as exc:
        raise KPBenchError(f"{where}: unreadable ({type(exc).__name__}: {exc})") from None
    x = _cloud(arrays.get("x"), f"{where}, x")
    y = None if arrays.get("y") is None else _cloud(arrays["y"], f"{where}, y")
    if y is not None and y.shape[1] != x.shape[1]:
        raise KPBenchError(f"{where}: x has D={x.shape[1]} but y has D={y.shape[1]}")
    a = _weights(arrays.get("a"), len(x), f"{where}, a")
    b = _weights(arrays.get("b"), len(x) if y is None else len(y), f"{where}, b")
    return FileClouds(x, y, a, b, digest, size)


def _cloud(array, where: str) -> np.ndarray:
    if array is None:
        raise KPBenchError(f"{where}: missing (an .npz needs an array named 'x')")
    array = np.asarray(array)
    if array.dtype.kind not in "iuf":
        raise KPBenchError(f"{where}: wrong type {array.dtype} (numbers needed)")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise KPBenchError(f"{where}: wrong shape {array.shape}; need (points, D)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise KPBenchError(f"{where}: empty (shape {array.shape})")
    array = array.astype(np.float64)
    bad = ~np.isfinite(array)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise KPBenchError(f"{where}: {int(bad.sum())} NaN/inf value(s), first in point {row}")
    return array


def _weights(array, count: int, where: str) -> np.ndarray | None:
    if array is None:
        return None
    w = np.asarray(array)
    if w.dtype.kind not in "iuf" or w.shape != (count,):
        raise KPBenchError(f"{where}: weights must be {count} numbers (shape ({count},)), "
                           f"got {w.dtype} {w.shape}")
    w = w.astype(np.float64)
    if not np.isfinite(w).all() or (w < 0).any() or not w.sum() > 0:
        raise KPBenchError(f"{where}: weights must be finite, >= 0, with a positive sum")
    return w / w.sum()


def _read_npy(path: Path, where: str) -> dict:
    return {"x": np.load(path, allow_pickle=False)}


def _read_npz(path: Path, where: str) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        unknown = sorted(set(npz.files) - {"x", "y", "a", "b"})
        if unknown:
            raise KPBenchError(f"{where}: unknown array(s) {', '.join(map(repr, unknown))}; "
                               "an .npz holds x, and optionally y, a, b")
        return {name: npz[name] for name in npz.files}


def _read_text(path: Path, where: str, delimiter) -> dict:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # numpy warns on an empty text file; we say it below
        try:
            table = np.loadtxt(path, delimiter=delimiter, ndmin=2, comments="#")
        except ValueError:
            table = np.loadtxt(path, delimiter=delimiter, ndmin=2, comments="#", skiprows=1)  # a header
    if table.size == 0:
        raise KPBenchError(f"{where}: no points in the file")
    return {"x": table}


def _read_ply(path: Path, where: str) -> dict:
    from plyfile import PlyData, PlyParseError

    try:
        ply = PlyData.read(str(path))
    except PlyParseError as exc:
        raise KPBenchError(f"{where}: not a valid PLY file ({exc})") from None
    names = [element.name for element in ply.elements]
    if "vertex" not in names:
        raise KPBenchError(f"{where}: a .ply without vertices (elements: {', '.join(names) or 'none'})")
    vertex = ply["vertex"]
    missing = [c for c in "xyz" if c not in vertex.data.dtype.names]
    if missing:
        raise KPBenchError(f"{where}: the vertices have no {', '.join(missing)} coordinate")
    if vertex.count == 0:
        raise KPBenchError(f"{where}: a .ply without vertices (0 vertices)")
    return {"x": np.stack([np.asarray(vertex[c], dtype=np.float64) for c in "xyz"], axis=1)}


_READERS = {
    ".npy": _read_npy, ".npz": _read_npz, ".ply": _read_ply,
    ".csv": lambda path, where: _read_text(path, where, ","),
    ".xyz": lambda path, where: _read_text(path, where, None),
}


def _file_source(path_text: str) -> DatasetSource:
    content = read_file(path_text)
    where = f"data file {path_text!r}"

    def make(N, M, D, seed) -> Clouds:
        if content.y is None and content.a is None:
            x, y, replaced = split_one_cloud(content.x, N, M, seed)
            a = b = None
        else:
            rng = np.random.default_rng([seed, 27])
            x, a, rx = sample_rows(content.x, N, rng, content.a, f"{where}, x")
            y_cloud = content.x if content.y is None else content.y
            y, b, ry = sample_rows(y_cloud, M, rng, content.b, f"{where}, y")
            replaced = rx or ry
        return Clouds(x, y, a, b, replaced, content.file_hash, content.file_size)

    return DatasetSource(FILE_PREFIX + path_text, make, content.x.shape[1], f"the file {path_text}")


__all__ = ["Clouds", "DatasetSource", "DEFAULT", "FILE_PREFIX", "check_name", "dataset_names",
           "file_hash", "fixed_dim", "get_source", "make_clouds", "read_file", "register_dataset",
           "sample_rows", "sphere_surface", "swiss_roll"]
