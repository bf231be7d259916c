"""What drift is measured on for cell images (`IMAGE_FEATURES`): the intake's statistics of each
image (brightness, contrast, sharpness, size) and how far its baseline feature vector lies from
the reference images' centroid. Cheap (numpy and Pillow, no model), so every served image of
an hour can be measured."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ml.data import objects
from ml.defects.features import IMAGE_STATISTICS, feature_matrix, statistics_frame

IMAGE_FEATURES = (*IMAGE_STATISTICS, "embedding_distance")
"""The monitored image columns (all numeric)."""
REFERENCE_FILE = "image_reference.json"
MIN_SCALE = 0.01
"""A feature that barely varies among the reference images (a histogram bin nearly always
empty) is measured in units of at least this, so that one such feature cannot swamp the
distance of an image that is otherwise typical."""


@dataclass(frozen=True)
class ImageReference:
    """What served images are compared with, built from training images: the mean (the
    centroid) and spread of their baseline feature vectors, and their median distance from it.

    An image's embedding is its feature vector standardized by the mean and spread; its
    `embedding_distance` is the embedding's length in units of the reference's median, so a
    typical training image lies at about 1."""

    mean: np.ndarray
    scale: np.ndarray
    typical_distance: float
    images: int
    """How many images built it."""

    def __post_init__(self) -> None:
        if self.mean.shape != self.scale.shape or self.mean.ndim != 1:
            raise ValueError(
                f"mean {self.mean.shape} and scale {self.scale.shape}: expected two vectors of "
                "one length (one value per baseline feature)"
            )
        if not self.typical_distance > 0:
            raise ValueError(f"typical_distance must be > 0, got {self.typical_distance}")

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The images' standardized feature vectors, one row per image."""
        if not len(images):
            return np.zeros((0, self.mean.shape[0]))
        features = feature_matrix(images)
        if features.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"{features.shape[1]} baseline features per image, the reference has "
                f"{self.mean.shape[0]}: rebuild the reference (the features changed)"
            )
        return (features - self.mean) / self.scale

    def distances(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Each image's distance from the centroid, in units of the reference's median."""
        return np.linalg.norm(self.embed(images), axis=1) / self.typical_distance

    def to_json(self) -> dict[str, object]:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "typical_distance": self.typical_distance,
            "images": self.images,
        }

    @classmethod
    def from_json(cls, value: dict[str, object]) -> ImageReference:
        return cls(
            mean=np.asarray(value["mean"], dtype=np.float64),
            scale=np.asarray(value["scale"], dtype=np.float64),
            typical_distance=float(value["typical_distance"]),
            images=int(value["images"]),
        )

    def save(self, folder: str | Path) -> str:
        """As JSON in `folder` (a folder or an object-store prefix); the file's URI."""
        return objects.write_json(objects.join(folder, REFERENCE_FILE), self.to_json())

    @classmethod
    def load(cls, folder: str | Path) -> ImageReference:
        path = objects.join(folder, REFERENCE_FILE)
        if not objects.exists(path):
            raise FileNotFoundError(f"{folder} holds no image reference ({REFERENCE_FILE} missing)")
        return cls.from_json(objects.read_json(path))


def build_image_reference(images: Sequence[np.ndarray]) -> ImageReference:
    """The centroid, spread and median distance of `images` (training images of the model)."""
    if len(images) < 2:
        raise ValueError(f"{len(images)} images: an image reference needs at least 2")
    features = feature_matrix(images).astype(np.float64)
    mean = features.mean(axis=0)
    scale = np.maximum(features.std(axis=0), MIN_SCALE)
    typical = float(np.median(np.linalg.norm((features - mean) / scale, axis=1)))
    return ImageReference(mean, scale, typical, len(images))


def image_feature_frame(images: Sequence[np.ndarray], reference: ImageReference) -> pl.DataFrame:
    """The `IMAGE_FEATURES` of each image (decoded pixels), in input order."""
    return statistics_frame(images).with_columns(
        pl.Series("embedding_distance", reference.distances(images), dtype=pl.Float64)
    )
