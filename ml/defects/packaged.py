"""The packaged solar-cell images: 2,624 electroluminescence images of cells (300×300, 8-bit
grayscale) with a defect probability (0, 1/3, 2/3, 1) and the module type, from the
`elpv-dataset` wheel (Deitsch et al., "Automatic classification of defective photovoltaic
module cells in electroluminescence images", 2019; CC BY-NC-SA 4.0). Read where the wheel
installed them, never copied into the repository."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ml.data.ingestion import IngestionError

LICENCE = "CC BY-NC-SA 4.0 (elpv-dataset, Deitsch et al. 2019)"
PUBLISHED = {"CNN (VGG19, fine-tuned)": 0.884, "SVM (KAZE/VGG features)": 0.824}
"""The paper's accuracies on its binary protocol (defective = probability ≥ 0.5; 25% test)."""


def elpv_folder() -> Path:
    try:
        import elpv_dataset
    except ImportError as error:
        raise IngestionError(
            "the packaged solar-cell images are not installed: pip install elpv-dataset "
            "(it is in requirements.lock)"
        ) from error
    folder = Path(elpv_dataset.__file__).parent / "data"
    if not (folder / "labels.csv").exists():
        raise IngestionError(f"{folder / 'labels.csv'}: file not found in the elpv-dataset wheel")
    return folder


def elpv_cells(limit: int | None = None) -> pl.DataFrame:
    """`file_name`, `image` (the PNG's bytes as shipped), `defect_probability`, `module_type`:
    the columns of a Parquet image drop."""
    folder = elpv_folder()
    rows = []
    for number, line in enumerate((folder / "labels.csv").read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            name, probability, module_type = line.split()
            rows.append((name, float(probability), module_type))
        except ValueError as error:
            raise IngestionError(
                f"{folder / 'labels.csv'} line {number}: expected 'path probability type', "
                f"got {line!r}"
            ) from error
    if limit is not None:
        rows = rows[:limit]
    return pl.DataFrame(
        {
            "file_name": [name for name, _, _ in rows],
            "image": [(folder / name).read_bytes() for name, _, _ in rows],
            "defect_probability": [p for _, p, _ in rows],
            "module_type": [t for _, _, t in rows],
        },
        schema={
            "file_name": pl.String,
            "image": pl.Binary,
            "defect_probability": pl.Float64,
            "module_type": pl.String,
        },
    )
