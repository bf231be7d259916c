"""What is measured on a cell image: the statistics monitoring profiles (brightness, contrast,
sharpness, size) and the simple features the baseline classifies on (intensity and gradient
histograms, a coarse grid of local brightness, dark and edge shares): numpy and Pillow only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
from PIL import Image

FEATURE_SIZE = 96
"""Images are resized to this square before the baseline's features are computed."""
GRID = 6
IMAGE_STATISTICS = ("brightness", "contrast", "sharpness", "width", "height")
"""The monitored image columns (all numeric)."""


def _laplacian(pixels: np.ndarray) -> np.ndarray:
    p = pixels.astype(np.float32)
    return -4 * p[1:-1, 1:-1] + p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:]


def image_statistics(pixels: np.ndarray) -> dict[str, float]:
    """Brightness and contrast (mean and standard deviation, 0..1), sharpness (variance of the
    Laplacian, in squared 0..1 units) and size."""
    scaled = pixels.astype(np.float32) / 255.0
    return {
        "brightness": float(scaled.mean()),
        "contrast": float(scaled.std()),
        "sharpness": float((_laplacian(pixels) / 255.0).var()) if min(pixels.shape) > 2 else 0.0,
        "width": float(pixels.shape[1]),
        "height": float(pixels.shape[0]),
    }


def statistics_frame(images: Sequence[np.ndarray]) -> pl.DataFrame:
    return pl.DataFrame(
        [image_statistics(p) for p in images], schema=dict.fromkeys(IMAGE_STATISTICS, pl.Float64)
    )


def resized(pixels: np.ndarray, size: int) -> np.ndarray:
    """`pixels` as a `size`×`size` float image in 0..1 (bilinear)."""
    image = Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def baseline_features(pixels: np.ndarray) -> np.ndarray:
    """One image's feature vector: what a crack (dark thin lines, strong local gradients) and an
    inactive region (a dark block) change, relative to the cell's own median brightness."""
    image = resized(pixels, FEATURE_SIZE)
    median = float(np.median(image)) + 1e-3
    relative = image / median
    gy, gx = np.gradient(image)
    gradient = np.hypot(gx, gy) / median
    lap = np.abs(_laplacian((image * 255).astype(np.uint8))) / 255.0 / median
    cells = relative.reshape(GRID, FEATURE_SIZE // GRID, GRID, FEATURE_SIZE // GRID)
    cell_means = np.sort(cells.mean(axis=(1, 3)).ravel())
    cell_lows = np.sort(
        np.percentile(cells.transpose(0, 2, 1, 3).reshape(GRID * GRID, -1), 5, axis=1)
    )
    features = [
        np.histogram(relative, bins=16, range=(0.0, 2.0))[0] / relative.size,
        np.percentile(relative, [1, 5, 10, 25, 50, 75, 95, 99]),
        np.histogram(gradient, bins=12, range=(0.0, 0.6))[0] / gradient.size,
        np.percentile(gradient, [50, 90, 99, 99.9]),
        np.percentile(lap, [50, 90, 99, 99.9]),
        cell_means,
        cell_lows,
        [
            float((relative < 0.5).mean()),
            float((relative < 0.7).mean()),
            float((gradient > 0.2).mean()),
            float(image.mean()),
            float(image.std()),
        ],
    ]
    return np.concatenate([np.asarray(f, dtype=np.float32).ravel() for f in features])


def feature_matrix(images: Sequence[np.ndarray]) -> np.ndarray:
    return np.stack([baseline_features(p) for p in images]) if images else np.zeros((0, 0))
