"""Image drops checked before anything reads them: each file decoded whole, its size and mode
checked, blank and saturated frames refused, repeated content found; its labels (a CSV beside
the images, optional) checked too. Every file ends valid or quarantined with its reasons, and
every label row names an image or is quarantined itself: rows in = valid + quarantined. Each
reason reads `kind: detail` (`wrong mode: RGB, expected L (8-bit grayscale)`).

An image's id is a hash of its decoded pixels (and mode and size), so the same picture saved
twice, or re-encoded, is the same image."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from PIL import Image

from ml.data import objects

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LABELS_FILE = "labels.csv"
MODULE_TYPES = ("mono", "poly")
DEFECT_THRESHOLD = 0.5
"""A cell is defective when its defect probability is at least this (the packaged dataset's
binary protocol: 2/3 and 1 defective, 0 and 1/3 functional)."""


@dataclass(frozen=True)
class ImageRules:
    """What a valid cell image is."""

    mode: str = "L"
    """8-bit grayscale, as electroluminescence cameras give."""
    min_side: int = 32
    max_side: int = 4096
    """Checked from the header, before the pixels are decoded (no decompression bomb)."""
    min_contrast: float = 2.0
    """Standard deviation of the pixels below this: a blank frame."""
    max_clipped_share: float = 0.25
    """More of the pixels at 0 or 255 than this: saturated (the packaged cells: at most 2.3%)."""


@dataclass(frozen=True)
class ImageFile:
    """One file of a drop, as read."""

    file_name: str
    data: bytes


@dataclass(frozen=True)
class CheckedImage:
    file_name: str
    bytes_sha256: str
    size_bytes: int
    image_id: str | None
    """None when the file does not decode."""
    width: int | None
    height: int | None
    mode: str | None
    reasons: tuple[str, ...]
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)


def image_id_of(pixels: np.ndarray, mode: str = "L") -> str:
    """The content id of decoded pixels: the same picture, however encoded, the same id."""
    height, width = pixels.shape[:2]
    digest = hashlib.sha256(f"{mode}:{width}x{height}:".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return f"img-{digest.hexdigest()[:24]}"


def decode(data: bytes) -> tuple[Image.Image, np.ndarray]:
    """The image and its pixels, decoded whole (a truncated file raises)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
        image.load()
    return image, np.asarray(image)


def png_bytes(pixels: np.ndarray) -> bytes:
    """8-bit grayscale pixels as a PNG file: lossless, so it decodes to the same image id."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def served_image_uri(image_uri: str, image_id: str) -> str:
    """Where an image /inspect answered is kept: the intake's place for a PNG of that id (the
    service writes it, monitoring reads it back)."""
    return objects.join(image_uri, f"{image_id}.png")


def check_image(file: ImageFile, rules: ImageRules = ImageRules()) -> CheckedImage:
    """Decode `file` and say everything wrong with it (nothing: it is valid)."""
    sha = hashlib.sha256(file.data).hexdigest()
    plain = CheckedImage(file.file_name, sha, len(file.data), None, None, None, None, ())
    if not file.data:
        return _with(plain, "empty: 0 bytes")
    try:
        header = Image.open(io.BytesIO(file.data))
    except Exception as error:  # any bytes may come in: whatever Pillow raises, it is unreadable
        return _with(plain, f"unreadable: not an image ({error.__class__.__name__})")
    width, height = header.size
    sized = CheckedImage(file.file_name, sha, len(file.data), None, width, height, header.mode, ())
    if max(width, height) > rules.max_side:
        return _with(sized, f"too large: {width}x{height}, at most {rules.max_side} a side")
    try:
        image, pixels = decode(file.data)
    except Exception as error:  # a plugin's own error on corrupt data is the same finding
        return _with(sized, f"truncated: does not decode whole ({error})")
    reasons = []
    if image.mode != rules.mode:
        reasons.append(f"wrong mode: {image.mode}, expected {rules.mode} (8-bit grayscale)")
    if min(width, height) < rules.min_side:
        reasons.append(f"too small: {width}x{height}, at least {rules.min_side} a side")
    if not reasons:
        contrast = float(pixels.std())
        clipped = float(((pixels == 0) | (pixels == 255)).mean())
        if contrast < rules.min_contrast:
            reasons.append(f"blank: pixel standard deviation {contrast:.2f}")
        elif clipped > rules.max_clipped_share:
            reasons.append(f"saturated: {clipped:.0%} of pixels at 0 or 255")
    return CheckedImage(
        file.file_name,
        sha,
        len(file.data),
        image_id_of(pixels, image.mode),
        width,
        height,
        image.mode,
        tuple(reasons),
        pixels,
    )


def _with(checked: CheckedImage, reason: str) -> CheckedImage:
    return CheckedImage(
        checked.file_name,
        checked.bytes_sha256,
        checked.size_bytes,
        checked.image_id,
        checked.width,
        checked.height,
        checked.mode,
        (*checked.reasons, reason),
    )


# --- labels ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageLabel:
    defect_probability: float | None
    module_type: str | None
    problems: tuple[str, ...] = ()


def _probability(value: object) -> tuple[float | None, str | None]:
    if value is None or str(value).strip() == "":
        return None, None
    text = str(value).strip().lower()
    named = {"defective": 1.0, "functional": 0.0}
    if text in named:
        return named[text], None
    try:
        number = float(text)
    except ValueError:
        return None, f"bad label: defect_probability {value!r} is not a number"
    if not (0.0 <= number <= 1.0) or math.isnan(number):
        return None, f"bad label: defect_probability {value!r} outside [0, 1]"
    return number, None


def parse_labels(labels: pl.DataFrame, source: str = LABELS_FILE) -> dict[str, ImageLabel]:
    """Per file name, its label (problems named, never raised for one row). A labels file
    without a `file_name` column is wrong as a whole: that raises."""
    if "file_name" not in labels.columns:
        raise ValueError(
            f"{source}: no file_name column (columns: {labels.columns}); expected file_name, "
            "defect_probability (0..1, or defective / functional), module_type (mono / poly)"
        )
    parsed: dict[str, ImageLabel] = {}
    for row in labels.cast(pl.String).iter_rows(named=True):
        name = (row["file_name"] or "").strip()
        problems = []
        probability, problem = _probability(row.get("defect_probability", row.get("label")))
        if problem:
            problems.append(problem)
        module_type = (row.get("module_type") or "").strip().lower() or None
        if module_type is not None and module_type not in MODULE_TYPES:
            problems.append(
                f"bad label: module_type {module_type!r} is not one of {list(MODULE_TYPES)}"
            )
            module_type = None
        if name in parsed:
            problems.append(f"bad label: a second label row for {name}")
            parsed[name] = ImageLabel(None, None, (*parsed[name].problems, *problems))
            continue
        parsed[name] = ImageLabel(probability, module_type, tuple(problems))
    return parsed


# --- a drop ------------------------------------------------------------------------------------

VALID_COLUMNS = {
    "image_id": pl.String,
    "file_name": pl.String,
    "bytes_sha256": pl.String,
    "size_bytes": pl.Int64,
    "width": pl.Int64,
    "height": pl.Int64,
    "mode": pl.String,
    "defect_probability": pl.Float64,
    "defective": pl.Boolean,
    "module_type": pl.String,
}
QUARANTINE_COLUMNS = {
    "file_name": pl.String,
    "kind": pl.String,
    "image_id": pl.String,
    "bytes_sha256": pl.String,
    "size_bytes": pl.Int64,
    "reasons": pl.String,
    "duplicate_of": pl.String,
}


@dataclass(frozen=True)
class ImageValidation:
    valid: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int
    """Image files plus label rows that name no image."""
    pixels: dict[str, np.ndarray] = field(repr=False)
    """The valid images' pixels by image id (what the features are computed from)."""

    @property
    def reconciles(self) -> bool:
        return self.rows_in == self.valid.height + self.quarantine.height

    def reason_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for reasons in self.quarantine["reasons"]:
            for reason in reasons.split("; "):
                kind = reason.split(":")[0]
                counts[kind] = counts.get(kind, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))


def validate_image_drop(
    files: Sequence[ImageFile],
    labels: pl.DataFrame | None = None,
    rules: ImageRules = ImageRules(),
    earlier: Mapping[str, str] | None = None,
) -> ImageValidation:
    """Every file checked, its label attached; repeated content quarantined as a duplicate of
    the first file that has it (in file-name order), or of the image already published
    (`earlier`: image id → where it came from)."""
    parsed = parse_labels(labels) if labels is not None else {}
    valid, quarantined, pixels = [], [], {}
    first_of: dict[str, str] = dict(earlier or {})
    for file in sorted(files, key=lambda f: f.file_name):
        checked = check_image(file, rules)
        label = parsed.get(file.file_name, ImageLabel(None, None))
        reasons = [*checked.reasons, *label.problems]
        duplicate_of = None
        if checked.image_id is not None and not checked.reasons:
            duplicate_of = first_of.get(checked.image_id)
            if duplicate_of is not None:
                reasons.append(f"duplicate: of {duplicate_of} ({checked.image_id})")
            else:
                first_of[checked.image_id] = file.file_name
        if reasons:
            quarantined.append(
                {
                    "file_name": file.file_name,
                    "kind": "image",
                    "image_id": checked.image_id,
                    "bytes_sha256": checked.bytes_sha256,
                    "size_bytes": checked.size_bytes,
                    "reasons": "; ".join(reasons),
                    "duplicate_of": duplicate_of,
                }
            )
            continue
        probability = label.defect_probability
        valid.append(
            {
                "image_id": checked.image_id,
                "file_name": file.file_name,
                "bytes_sha256": checked.bytes_sha256,
                "size_bytes": checked.size_bytes,
                "width": checked.width,
                "height": checked.height,
                "mode": checked.mode,
                "defect_probability": probability,
                "defective": None if probability is None else probability >= DEFECT_THRESHOLD,
                "module_type": label.module_type,
            }
        )
        pixels[checked.image_id] = checked.pixels
    named = {f.file_name for f in files}
    for name in sorted(set(parsed) - named):
        quarantined.append(
            {
                "file_name": name,
                "kind": "label",
                "image_id": None,
                "bytes_sha256": None,
                "size_bytes": None,
                "reasons": "orphan label: names no image in the drop",
                "duplicate_of": None,
            }
        )
    return ImageValidation(
        valid=pl.DataFrame(valid, schema=VALID_COLUMNS),
        quarantine=pl.DataFrame(quarantined, schema=QUARANTINE_COLUMNS),
        rows_in=len(files) + len(set(parsed) - named),
        pixels=pixels,
    )


# --- images to predict on ----------------------------------------------------------------------


class BadImage(ValueError):
    """An image sent for prediction that fails the intake rules; the message names why."""


def image_pixels(data: bytes | str, name: str = "image", rules: ImageRules = ImageRules()):
    """The pixels of one image sent for prediction (bytes, or base64 text), checked by the same
    rules as intake (a duplicate is no problem here)."""
    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as error:
            raise BadImage(f"{name}: not base64 ({error})") from error
    checked = check_image(ImageFile(name, bytes(data)), rules)
    if checked.reasons:
        raise BadImage(f"{name}: {'; '.join(checked.reasons)}")
    return checked.pixels


def images_of(model_input: object) -> list[np.ndarray]:
    """Pixels from a frame with an `image` column (bytes or base64 text), or a list of them."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if "image" not in model_input.columns:
            raise ValueError("input frame needs an 'image' column (encoded image, bytes or base64)")
        values = model_input["image"].tolist()
    elif isinstance(model_input, (list, tuple, pd.Series)):
        values = list(model_input)
    else:
        raise TypeError(f"expected images as a frame or list, got {type(model_input).__name__}")
    return [image_pixels(v, f"image {i}") for i, v in enumerate(values)]
