"""Image drops through the real graph: a ZIP (images + labels.csv) and a Parquet of encoded
images are registered, validated (bad files quarantined with their reasons, nothing lost), kept
by content id, and split by dbt, stratified and once; a drop that is mostly bad is blocked."""

import io
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from ml.data.objects import exists, read_bytes
from ml.defects.images import decode
from ml.settings import Settings
from ml.synthetic.defect_images import generate_cell_images, labels_frame, png_bytes
from tests.conftest import ingest_and_build_warehouse


def drop(settings: Settings, source: str, name: str, data: bytes) -> Path:
    path = Path(settings.defect_drops_uri) / source / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_image_drops_land_valid_quarantine_bad_files_and_split_once(settings: Settings) -> None:
    cells = generate_cell_images(90, seed=4, size=64)
    first, second = cells[:60], cells[60:]
    rgb = io.BytesIO()
    Image.fromarray(decode(first[0].png)[1]).convert("RGB").save(rgb, format="PNG")
    bad = {
        "images/cut.png": first[1].png[: len(first[1].png) // 3],
        "images/colour.png": rgb.getvalue(),
        "images/empty.png": b"",
        "images/z-again.png": first[2].png,
    }
    labels = labels_frame(first).with_columns(
        (pl.lit("images/") + pl.col("file_name")).alias("file_name")
    )
    drop(
        settings,
        "line1",
        "batch-1.zip",
        zipped(
            {
                **{f"images/{c.file_name}": c.png for c in first},
                **bad,
                "labels.csv": labels.write_csv().encode(),
            }
        ),
    )
    encoded = labels_frame(second).with_columns(pl.Series("image", [c.png for c in second]))
    buffer = io.BytesIO()
    encoded.write_parquet(buffer)
    drop(settings, "line2", "batch-2.parquet", buffer.getvalue())

    warehouse = ingest_and_build_warehouse(settings)
    valid = warehouse.query("select * from validated_defect_images order by file_name")
    quarantine = warehouse.query("select * from quarantine_defect_images order by file_name")
    assert valid.height == 90 and valid["published"].all()
    reasons = dict(zip(quarantine["file_name"], quarantine["reasons"], strict=True))
    assert set(reasons) == set(bad)
    assert reasons["images/cut.png"].startswith("truncated: ")
    assert reasons["images/colour.png"].startswith("wrong mode: RGB")
    assert reasons["images/empty.png"] == "empty: 0 bytes"
    assert reasons["images/z-again.png"].startswith(f"duplicate: of images/{first[2].file_name}")
    expected = {f"images/{c.file_name}": c.defect_probability >= 0.5 for c in first}
    expected |= {c.file_name: c.defect_probability >= 0.5 for c in second}
    assert dict(zip(valid["file_name"], valid["defective"], strict=True)) == expected
    stored = valid.filter(pl.col("file_name") == f"images/{first[5].file_name}")
    assert read_bytes(stored["image_uri"].item()) == first[5].png, "kept as dropped"
    assert stored["image_uri"].item().endswith(f"{stored['image_id'].item()}.png")
    assert (valid["brightness"] > 0).all() and (valid["sharpness"] > 0).all()

    splits = warehouse.query("select image_id, split, defective from defect_image_splits")
    assert splits.height == 90 and set(splits["split"]) == {"train", "validation", "test"}
    train = splits.filter(pl.col("split") == "train")
    assert 0.7 <= train.height / 90 <= 0.9
    assert train["defective"].mean() == pytest.approx(splits["defective"].mean(), abs=0.08)
    before = dict(splits.select("image_id", "split").iter_rows())

    # Mostly bad: blocked as a whole; re-ingesting the good drops changes nothing.
    blank = png_bytes(np.full((64, 64), 128, np.uint8))
    drop(
        settings,
        "line3",
        "batch-3.zip",
        zipped(
            {
                "a.png": generate_cell_images(1, seed=99, size=64)[0].png,
                **{f"blank{i}.png": blank for i in range(3)},
            }
        ),
    )
    warehouse = ingest_and_build_warehouse(settings, blocked=("defects line3",))
    blocked = warehouse.query(
        "select published from validated_defect_images where source = 'line3'"
    )
    assert blocked["published"].to_list() == [False]
    again = warehouse.query("select image_id, split from defect_image_splits")
    assert dict(again.iter_rows()) == before, "no image moved split, none added or lost"
    assert warehouse.query("select count(*) as n from validated_defect_images")["n"].item() == 91
    assert all(exists(uri) for uri in valid["image_uri"])
