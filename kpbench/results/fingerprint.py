"""Same problem, provably: a short hash of a point's generated inputs.

``input_hash(arrays, dtype)`` hashes each array's dtype, shape and bytes (C order), after
casting to the point's dtype, so two rows with the same hash solved the same numbers. The
hash is computed on the host copy (NumPy), so a CPU and a CUDA run of one point agree.

A changed generator, another NumPy with another random stream, another seed: another
hash. :func:`hash_mismatches` lists the points whose stored hashes differ between two
runs (rerun and compare print them).

The generator of sweep inputs is fixed per op (kpbench.bench.inputs.make_data:
uniform cube x, Gaussian blobs y, seeded signals); :data:`DATA_GENERATOR` names its
version and is bumped whenever make_data changes what it draws.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:      # pandas only where frames are compared (sweep workers only hash)
    import pandas as pd

DATA_GENERATOR = "kpbench.workloads.make_data/v1"
HASH_CHARS = 16


def input_hash(arrays: list, dtype: str | None = None) -> str:
    """Short hex hash of ``arrays`` (NumPy arrays or torch tensors), cast to ``dtype`` first."""
    digest = hashlib.sha256(DATA_GENERATOR.encode())
    for array in arrays:
        values = _host_array(array)
        if dtype is not None:
            values = values.astype(dtype, copy=False)
        values = np.ascontiguousarray(values)
        digest.update(f"|{values.dtype.str}|{values.shape}|".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()[:HASH_CHARS]


def _host_array(array) -> np.ndarray:
    if hasattr(array, "detach"):          # a torch tensor, maybe on a GPU
        return array.detach().cpu().numpy()
    return np.asarray(array)


def hash_mismatches(base: "pd.DataFrame", new: "pd.DataFrame", limit: int = 10) -> list[str]:
    """Lines naming the points (same key on both sides) whose ``input_hash`` differ.

    Rows without a hash on either side are not compared; one summary line ends the list
    when anything was compared ("inputs: N points with matching hashes" or the mismatches).
    """
    pairs = _hash_pairs(base, new)
    if pairs.empty:
        return []
    differ = pairs[pairs["input_hash_base"] != pairs["input_hash_new"]]
    if differ.empty:
        return [f"inputs: {len(pairs)} points with matching input hashes (same generated data)"]
    lines = [f"inputs DIFFER: {len(differ)} of {len(pairs)} points have other input hashes "
             "(another data generator, NumPy or seed: these points did not solve the same problem)"]
    for row in differ.head(limit).itertuples():
        lines.append(f"  {row.label}: {row.input_hash_base} -> {row.input_hash_new}")
    if len(differ) > limit:
        lines.append(f"  ... and {len(differ) - limit} more")
    return lines


def _hash_pairs(base: "pd.DataFrame", new: "pd.DataFrame") -> "pd.DataFrame":
    import pandas as pd

    columns = ["key", "input_hash"]
    if any(c not in frame for frame in (base, new) for c in columns):
        return pd.DataFrame()
    from kpbench.results.format import point_label

    left = base.dropna(subset=["input_hash"])
    right = new[columns].dropna(subset=["input_hash"])
    pairs = left.merge(right, on="key", suffixes=("_base", "_new"))
    pairs["label"] = [point_label(r) for r in pairs.to_dict("records")]
    return pairs




# What reproducibility_notes reads of a row besides its label (compare.LABEL_COLUMNS): kept
# beside it, so that a column it starts reading is added here (compare reads only these)
NOTES_COLUMNS = ["key", "status", "run_id", "input_hash", "value", "host", "deterministic"]


def reproducibility_notes(base_path, base: "pd.DataFrame", new_path, new: "pd.DataFrame") -> list[str]:
    """What a comparison of two runs adds about reproducibility: do the inputs match (hashes),
    did the values stay within their tolerance (kpbench.results.determinism), and how do the
    stored environments of the two runs differ (one run per side; kpbench.results.meta)."""
    from kpbench.results.determinism import value_changes
    from kpbench.results.meta import env_diff, load_environment

    lines = hash_mismatches(base, new) + value_changes(base, new)
    runs = [frame["run_id"].dropna().unique() if "run_id" in frame else [] for frame in (base, new)]
    if all(len(r) == 1 for r in runs):
        envs = [load_environment(path, str(r[0])) for path, r in zip((base_path, new_path), runs)]
        diff = env_diff(*envs)
        lines += ["environment: the same (stored environments of both runs)"] if not diff else (
            ["environment differences (baseline -> new):"] + [f"  {line}" for line in diff])
    return lines


__all__ = ["DATA_GENERATOR", "NOTES_COLUMNS", "input_hash", "hash_mismatches", "reproducibility_notes"]
