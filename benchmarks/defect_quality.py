"""Defect classification on the packaged solar-cell images (elpv-dataset, 2,624 cells): the
feature baseline and the CNN fine-tuned from packaged ImageNet weights, side by side with the
published figures, on a frozen stratified test split.

    python benchmarks/defect_quality.py                      # both models, the CNN at 224 px
    python benchmarks/defect_quality.py --input-size 160 --epochs 8
    python benchmarks/defect_quality.py --skip-cnn           # the baseline alone (a minute)

The protocol is the paper's binary one: a cell is defective when its defect probability is at
least 0.5; 25% of the cells are the test split, stratified by defect probability and module
type, drawn once with a fixed seed (the same cells every run). 20% of the rest is the validation
split: early stopping, temperature and the decision threshold are chosen there, the test split
is only scored. Every image goes through the intake rules first. Needs only `ml/`, torch,
scikit-learn and Pillow: it runs on a bare GPU machine too (bf16 autocast there).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.model_selection import train_test_split

from ml.defects.classifiers import DefectClassifier, train_baseline
from ml.defects.evaluation import DefectScores, score_defects
from ml.defects.images import ImageFile, validate_image_drop
from ml.defects.packaged import LICENCE, PUBLISHED, elpv_cells
from ml.defects.training import CnnConfig, fine_tune_cnn

TARGET_F1 = 0.85
TARGET_ACCURACY = 0.884
SEED = 42


def splits(labels: np.ndarray, strata: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) indices: 25% test, then 20% of the rest validation, each
    stratified by defect probability and module type."""
    everything = np.arange(len(labels))
    rest, test = train_test_split(everything, test_size=0.25, stratify=strata, random_state=SEED)
    train, validation = train_test_split(
        rest, test_size=0.2, stratify=strata[rest], random_state=SEED
    )
    return np.sort(train), np.sort(validation), np.sort(test)


def scored(
    classifier: DefectClassifier, pixels: list, defective: np.ndarray, types: list
) -> DefectScores:
    return score_defects(
        defective, classifier.defect_probability(pixels), classifier.threshold, types
    )


def row(name: str, s: DefectScores, seconds: float) -> str:
    mono, poly = s.per_module_type.get("mono"), s.per_module_type.get("poly")
    return (
        f"| {name} | {s.defect_f1:.3f} | {s.precision:.3f} | {s.recall:.3f} | {s.accuracy:.3f} "
        f"| {s.roc_auc:.3f} | {mono.defect_f1:.3f} / {mono.accuracy:.3f} "
        f"| {poly.defect_f1:.3f} / {poly.accuracy:.3f} | {s.threshold:.3f} | {seconds:.0f} s |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-size", type=int, default=CnnConfig.input_size)
    parser.add_argument("--epochs", type=int, default=CnnConfig.epochs)
    parser.add_argument("--patience", type=int, default=CnnConfig.patience)
    parser.add_argument("--batch-size", type=int, default=CnnConfig.batch_size)
    parser.add_argument("--learning-rate", type=float, default=CnnConfig.learning_rate)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-cnn", action="store_true")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    cells = elpv_cells()
    files = [ImageFile(n, b) for n, b in zip(cells["file_name"], cells["image"], strict=True)]
    intake = validate_image_drop(files, cells.drop("image"))
    print(
        f"intake: {len(files)} images in, {intake.valid.height} valid, "
        f"{intake.quarantine.height} quarantined ({intake.reason_counts() or 'no reasons'}) "
        f"in {time.perf_counter() - started:.0f} s; licence {LICENCE}"
    )
    valid = intake.valid
    pixels = [intake.pixels[i] for i in valid["image_id"]]
    defective = valid["defective"].to_numpy().astype(bool)
    types = valid["module_type"].to_list()
    strata = np.array(
        [f"{p:.2f}:{t}" for p, t in zip(valid["defect_probability"], types, strict=True)]
    )
    train, validation, test = splits(defective, strata)

    def part(index: np.ndarray) -> tuple[list, np.ndarray, list]:
        return [pixels[i] for i in index], defective[index], [types[i] for i in index]

    (tr_x, tr_y, _), (va_x, va_y, _), (te_x, te_y, te_t) = (
        part(train),
        part(validation),
        part(test),
    )
    print(
        f"splits: train {len(train)} ({tr_y.mean():.1%} defective), validation "
        f"{len(validation)}, test {len(test)} ({te_y.mean():.1%} defective; frozen, seed {SEED})"
    )
    rows = []
    began = time.perf_counter()
    baseline = train_baseline(tr_x, tr_y)
    baseline.calibrate(va_x, va_y)
    rows.append(
        row("baseline: image features + logistic regression", scored(baseline, te_x, te_y, te_t),
            time.perf_counter() - began)
    )  # fmt: skip
    print(rows[-1], flush=True)
    cnn_device = "–"
    if not args.skip_cnn:
        config = CnnConfig(
            input_size=args.input_size,
            epochs=args.epochs,
            patience=args.patience,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            device=args.device,
        )
        began = time.perf_counter()

        def said(epoch) -> None:
            print(
                f"  epoch {epoch.epoch}: loss {epoch.train_loss:.4f}, validation defect F1 "
                f"{epoch.validation_defect_f1:.4f}, {epoch.samples_per_second:.1f} images/s, "
                f"{epoch.seconds:.0f} s",
                flush=True,
            )

        result = fine_tune_cnn(tr_x, tr_y, va_x, va_y, config, said, show_progress=True)
        cnn_device = f"{result.device}{' bf16' if result.bf16 else ''}"
        rows.append(
            row(
                f"CNN: EfficientNet-Lite0 from ImageNet, {args.input_size} px, best epoch "
                f"{result.best_epoch}/{len(result.history)}",
                scored(result.classifier, te_x, te_y, te_t),
                time.perf_counter() - began,
            )
        )
        print(rows[-1], flush=True)
    print(f"\nTest split: {len(test)} cells; CNN device {cnn_device}; targets: defect F1 ≥ "
          f"{TARGET_F1}, accuracy > {TARGET_ACCURACY}")  # fmt: skip
    print(
        "| model | defect F1 | precision | recall | accuracy | ROC AUC | mono F1 / acc "
        "| poly F1 / acc | threshold | train time |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for line in rows:
        print(line)
    for name, accuracy in PUBLISHED.items():
        print(f"| published (Deitsch et al. 2019): {name} | – | – | – | {accuracy:.3f} | – | – | "
              "– | – | – |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
