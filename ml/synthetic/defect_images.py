"""Seeded electroluminescence-like images of solar cells for `make demo` and the tests: a
grey cell with its busbars and texture (mono cells have dark cut corners, poly cells a grain),
and on defective cells dark cracks and inactive (dark) regions. Labelled as the packaged
dataset is: a defect probability of 0, 1/3, 2/3 or 1, and the module type.

Deterministic: the same seed gives the same bytes.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np
import polars as pl

from ml.defects.images import png_bytes

PROBABILITIES = (0.0, 1 / 3, 2 / 3, 1.0)
PROBABILITY_SHARES = (0.55, 0.12, 0.08, 0.25)
"""Roughly the packaged dataset's mix (most cells are functional; a quarter surely defective)."""
MODULE_TYPES = ("mono", "poly")


@dataclass(frozen=True)
class CellImage:
    file_name: str
    png: bytes
    defect_probability: float
    module_type: str


def _cell(rng: np.random.Generator, size: int, module_type: str) -> np.ndarray:
    """A defect-free cell: bright, slightly uneven, busbars, and the type's texture."""
    y, x = np.mgrid[0:size, 0:size] / size
    level = rng.uniform(150, 190)
    vignette = 1 - 0.12 * ((x - 0.5) ** 2 + (y - 0.5) ** 2) * 4
    image = level * vignette + rng.normal(0, 6, (size, size))
    if module_type == "poly":  # grains: a few smooth blotches of another brightness
        for _ in range(rng.integers(6, 12)):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.2)
            grain = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r)))
            image += rng.uniform(-18, 18) * grain
    else:  # the cut corners of a monocrystalline wafer
        corner = size // 7
        for cy, cx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            yy = y if cy == 0 else 1 - y
            xx = x if cx == 0 else 1 - x
            image[(yy + xx) * size < corner] = rng.uniform(10, 30)
    for position in (0.25, 0.5, 0.75):  # busbars
        row = int(position * size)
        width = max(1, size // 60)
        image[row : row + width, :] *= 0.55
    return image


def _crack(rng: np.random.Generator, image: np.ndarray, strength: float) -> None:
    """A dark crack: a random walk across part of the cell, a few pixels wide."""
    size = image.shape[0]
    y, x = rng.uniform(0.1, 0.9) * size, rng.uniform(0.1, 0.9) * size
    angle = rng.uniform(0, 2 * np.pi)
    width = max(1, size // 100)
    for _ in range(int(rng.uniform(0.3, 0.9) * size)):
        angle += rng.normal(0, 0.15)
        y, x = y + np.sin(angle), x + np.cos(angle)
        if not (0 <= y < size and 0 <= x < size):
            break
        iy, ix = int(y), int(x)
        image[max(0, iy - width) : iy + width, max(0, ix - width) : ix + width] *= 1 - strength


def _dark_region(rng: np.random.Generator, image: np.ndarray, strength: float) -> None:
    """An inactive area: a dark region cut off by a crack, from an edge inward."""
    size = image.shape[0]
    y, x = np.mgrid[0:size, 0:size] / size
    normal = rng.normal(size=2)
    normal /= np.linalg.norm(normal)
    cut = rng.uniform(0.15, 0.35)
    side = (x - 0.5) * normal[0] + (y - 0.5) * normal[1]
    image[side > 0.5 - cut] *= 1 - strength


def _draw(rng: np.random.Generator, size: int, probability: float, module_type: str) -> np.ndarray:
    image = _cell(rng, size, module_type)
    if probability >= 1:
        _crack(rng, image, rng.uniform(0.55, 0.8))
        if rng.random() < 0.6:
            _dark_region(rng, image, rng.uniform(0.5, 0.8))
        else:
            _crack(rng, image, rng.uniform(0.5, 0.75))
    elif probability > 0.5:
        _crack(rng, image, rng.uniform(0.35, 0.55))
    elif probability > 0:  # a faint mark an expert would call unlikely a defect
        _crack(rng, image, rng.uniform(0.12, 0.25))
    return np.clip(image, 0, 255).astype(np.uint8)


def generate_cell_images(n: int, *, seed: int = 7, size: int = 96) -> list[CellImage]:
    """`n` cells of `size`×`size` pixels, 8-bit grayscale PNG, labelled."""
    rng = np.random.default_rng(seed)
    probabilities = rng.choice(len(PROBABILITIES), size=n, p=PROBABILITY_SHARES)
    types = rng.choice(len(MODULE_TYPES), size=n, p=(0.45, 0.55))
    cells = []
    for i, (p, t) in enumerate(zip(probabilities, types, strict=True)):
        probability, module_type = PROBABILITIES[p], MODULE_TYPES[t]
        pixels = _draw(rng, size, probability, module_type)
        cells.append(CellImage(f"cell{i + 1:05d}.png", png_bytes(pixels), probability, module_type))
    return cells


def labels_frame(cells: list[CellImage]) -> pl.DataFrame:
    """The labels CSV of a drop of `cells`: file name, defect probability, module type."""
    return pl.DataFrame(
        {
            "file_name": [c.file_name for c in cells],
            "defect_probability": [round(c.defect_probability, 4) for c in cells],
            "module_type": [c.module_type for c in cells],
        }
    )


def image_drop_zip(cells: list[CellImage], folder: str = "") -> bytes:
    """`cells` as one ZIP image drop: the PNGs (under `folder`) and their labels.csv."""
    prefix = f"{folder.strip('/')}/" if folder else ""
    labels = labels_frame(cells).with_columns(
        (pl.lit(prefix) + pl.col("file_name")).alias("file_name")
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in [
            *((prefix + cell.file_name, cell.png) for cell in cells),
            ("labels.csv", labels.write_csv().encode()),
        ]:
            # A fixed time stamp: the same cells, the same bytes (the same drop id).
            archive.writestr(zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()
