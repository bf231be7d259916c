"""Image drift: served cell images are measured (brightness, contrast, sharpness, size, distance
from the training images' centroid), profiled with whylogs and compared with a reference of
training images; cells like the training ones raise no alarm, brighter or blurred cells do."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from ml.defects.images import decode, image_pixels
from ml.monitoring.drift import DatasetProfileView, DriftReport, compare_profiles, profile
from ml.monitoring.image_features import (
    IMAGE_FEATURES,
    ImageReference,
    build_image_reference,
    image_feature_frame,
)
from ml.synthetic.defect_images import generate_cell_images, png_bytes

SIZE = 64


def cells(count: int, seed: int) -> list[np.ndarray]:
    return [decode(c.png)[1] for c in generate_cell_images(count, seed=seed, size=SIZE)]


def brighter(images: list[np.ndarray], gain: float = 1.2) -> list[np.ndarray]:
    return [np.clip(p.astype(np.float32) * gain, 0, 255).astype(np.uint8) for p in images]


def blurred(images: list[np.ndarray], radius: float = 1.5) -> list[np.ndarray]:
    return [np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(radius))) for p in images]


@pytest.fixture(scope="module")
def training() -> list[np.ndarray]:
    return cells(300, seed=1)


@pytest.fixture(scope="module")
def reference(training: list[np.ndarray]) -> ImageReference:
    return build_image_reference(training)


@pytest.fixture(scope="module")
def reference_profile(training: list[np.ndarray], reference: ImageReference) -> DatasetProfileView:
    return profile(image_feature_frame(training, reference))


def judged(
    images: list[np.ndarray], reference: ImageReference, reference_profile: DatasetProfileView
) -> DriftReport:
    return compare_profiles(reference_profile, profile(image_feature_frame(images, reference)))


def test_each_image_is_measured_and_a_typical_training_image_lies_at_distance_one(
    training: list[np.ndarray], reference: ImageReference
) -> None:
    features = image_feature_frame(training[:5], reference)
    assert features.columns == list(IMAGE_FEATURES) and features.height == 5
    assert features["width"].to_list() == [SIZE] * 5
    distances = image_feature_frame(training, reference)["embedding_distance"]
    assert distances.median() == pytest.approx(1.0)
    unlike = image_feature_frame(blurred(training[:50], radius=3), reference)
    assert unlike["embedding_distance"].median() > 1.5 * distances.quantile(0.9)
    assert image_feature_frame([], reference).height == 0


def test_cells_like_the_training_ones_do_not_drift(
    reference: ImageReference, reference_profile: DatasetProfileView
) -> None:
    for seed in (2, 3, 4):
        report = judged(cells(120, seed=seed), reference, reference_profile)
        assert not report.drifted, (seed, report.reasons())
        assert {c.column for c in report.columns} == set(IMAGE_FEATURES)


@pytest.mark.parametrize(
    ("shift", "drifted"),
    [
        (brighter, {"brightness"}),
        (blurred, {"sharpness", "embedding_distance"}),
    ],
)
def test_brighter_or_blurred_cells_drift_in_what_changed(
    reference: ImageReference, reference_profile: DatasetProfileView, shift, drifted: set[str]
) -> None:
    shifted = shift(cells(120, seed=2))
    for pixels in shifted:  # still images the service accepts: intake's rules hold
        image_pixels(png_bytes(pixels))
    report = judged(shifted, reference, reference_profile)
    assert report.drifted
    assert drifted <= set(report.drifted_columns), report.reasons()
    assert not {"width", "height"} & set(report.drifted_columns)


def test_cells_of_another_size_drift_in_width_and_height(
    reference: ImageReference, reference_profile: DatasetProfileView
) -> None:
    larger = [decode(c.png)[1] for c in generate_cell_images(80, seed=2, size=96)]
    report = judged(larger, reference, reference_profile)
    assert {"width", "height"} <= set(report.drifted_columns)


def test_the_reference_round_trips_through_json(
    tmp_path: Path, training: list[np.ndarray], reference: ImageReference
) -> None:
    reference.save(tmp_path / "reference")
    loaded = ImageReference.load(tmp_path / "reference")
    assert loaded.images == 300 and loaded.typical_distance == reference.typical_distance
    np.testing.assert_array_equal(
        loaded.distances(training[:20]), reference.distances(training[:20])
    )
    with pytest.raises(FileNotFoundError, match="holds no image reference"):
        ImageReference.load(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="at least 2"):
        build_image_reference(training[:1])
