"""Draw the two density images of the 2D gradient-flow reproduction, procedurally.

    python scripts/make_density_images.py [--size 64] [--out kpbench/datasets/images]

Dark = dense (the sampler uses darkness 1 - value/255). Deterministic: re-running it
rewrites identical PNGs.
  crescent.png   a crescent (a disk minus a shifted disk), the source
  blob_pair.png  two soft Gaussian blobs of unequal mass, the target
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SUPERSAMPLE = 4  # anti-aliased edges: draw at 4x, average down


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    n = size * SUPERSAMPLE
    c = (np.arange(n) + 0.5) / n
    x, y = np.meshgrid(c, c[::-1])  # row 0 = top = y close to 1
    return x, y


def _downsample(img: np.ndarray, size: int) -> np.ndarray:
    return img.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))


def crescent(size: int) -> np.ndarray:
    x, y = _grid(size)
    outer = (x - 0.38) ** 2 + (y - 0.5) ** 2 < 0.3 ** 2
    inner = (x - 0.5) ** 2 + (y - 0.56) ** 2 < 0.24 ** 2
    return _downsample((outer & ~inner).astype(float), size)


def blob_pair(size: int) -> np.ndarray:
    x, y = _grid(size)
    blob = lambda cx, cy, r: np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r ** 2))
    density = blob(0.74, 0.68, 0.08) + 0.6 * blob(0.74, 0.3, 0.06)
    return _downsample(density / density.max(), size)


def save(darkness: np.ndarray, path: Path) -> None:
    pixels = np.round(255 * (1 - np.clip(darkness, 0, 1))).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "kpbench" / "datasets" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in (("crescent", crescent), ("blob_pair", blob_pair)):
        path = args.out / f"{name}.png"
        save(draw(args.size), path)
        print(path)


if __name__ == "__main__":
    main()
