"""Image drops as files: a ZIP of images with an optional `labels.csv` beside them (a folder,
zipped: one file, so the drops folder never holds half of one), or a Parquet of encoded images
(`file_name`, `image` bytes, optional label columns). Both become the same raw table: one row
per image file as read, plus the label rows."""

from __future__ import annotations

import io
import posixpath
import zipfile
from pathlib import Path

import polars as pl

from ml.data.ingestion import IngestionError, file_suffix
from ml.defects.images import IMAGE_SUFFIXES, LABELS_FILE, ImageFile

IMAGE_DROP_SUFFIXES = (".zip", ".parquet", ".pq")
LABEL_COLUMNS = ("defect_probability", "module_type")
RAW_COLUMNS = {"file_name": pl.String, "image": pl.Binary}


def _zip_drop(uri: str, data: bytes) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise IngestionError(f"{uri}: not a readable ZIP archive ({error})") from error
    images, labels = [], None
    with archive:
        for entry in sorted(archive.infolist(), key=lambda e: e.filename):
            name = entry.filename
            base = posixpath.basename(name)
            if entry.is_dir() or base.startswith(".") or "__MACOSX" in name:
                continue
            if base == LABELS_FILE:
                if labels is not None:
                    raise IngestionError(f"{uri}: more than one {LABELS_FILE}")
                labels = pl.read_csv(archive.read(entry), infer_schema=False)
            elif base.lower().endswith(IMAGE_SUFFIXES):
                images.append({"file_name": name, "image": archive.read(entry)})
    if not images:
        raise IngestionError(f"{uri}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the archive")
    return pl.DataFrame(images, schema=RAW_COLUMNS), labels


def _parquet_drop(uri: str, data: bytes) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    try:
        frame = pl.read_parquet(io.BytesIO(data))
    except Exception as error:
        raise IngestionError(f"{uri}: not a readable Parquet file ({error})") from error
    missing = [c for c in RAW_COLUMNS if c not in frame.columns]
    if missing or frame.schema.get("image") != pl.Binary:
        raise IngestionError(
            f"{uri}: expected a `file_name` text column and an `image` binary column (the encoded "
            f"file); got {dict(frame.schema)}"
        )
    labels = None
    if any(c in frame.columns for c in LABEL_COLUMNS):
        present = ["file_name", *[c for c in LABEL_COLUMNS if c in frame.columns]]
        labels = frame.select(present).cast(pl.String)
    return frame.select(list(RAW_COLUMNS)).cast(RAW_COLUMNS), labels


def read_image_drop(uri: str, data: bytes) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """(images: file_name and bytes, labels as text or None) of a drop file's bytes."""
    suffix = file_suffix(uri)
    if suffix == ".zip":
        return _zip_drop(uri, data)
    if suffix in (".parquet", ".pq"):
        return _parquet_drop(uri, data)
    raise IngestionError(f"{uri}: an image drop is a .zip or a .parquet file")


def raw_image_table(images: pl.DataFrame, labels: pl.DataFrame | None) -> pl.DataFrame:
    """One table for the raw copy: a row per image (`kind` image) and per label row (`kind`
    label, its columns as text): everything the drop held, as read."""
    rows = images.with_columns(pl.lit("image").alias("kind"))
    if labels is None:
        return rows
    as_rows = labels.with_columns(
        pl.lit("label").alias("kind"), pl.lit(None, pl.Binary).alias("image")
    )
    return pl.concat([rows, as_rows], how="diagonal_relaxed")


def split_raw_table(raw: pl.DataFrame) -> tuple[list[ImageFile], pl.DataFrame | None]:
    """The raw copy back as the drop's files and labels."""
    images = raw.filter(pl.col("kind") == "image")
    files = [ImageFile(n, b) for n, b in zip(images["file_name"], images["image"], strict=True)]
    labels = raw.filter(pl.col("kind") == "label")
    if labels.is_empty():
        return files, None
    return files, labels.drop("kind", "image")


def zip_folder(folder: Path) -> bytes:
    """A folder of images (and its labels.csv) as one ZIP drop."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()
