"""F1-macro of the baseline and the transformer on a labeled split (e.g. banking77 as the
platform split it): learning rates tuned on the validation split, the test split touched once,
for the chosen one only.

    python benchmarks/request_classifier_quality.py --splits splits.csv [--epochs 8]

`splits.csv` has `text`, `intent` and `split` (train / validation / test) columns; without it
the platform's own `request_splits` is read from the warehouse (MLOPS_WAREHOUSE_PATH). Needs
only `ml/`, torch, transformers and scikit-learn, so it runs on a bare GPU machine too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.metrics import score_classification
from ml.requests import train_transformer
from ml.requests.classifiers import LabeledTexts, train_baseline
from ml.requests.training import TransformerConfig, fine_tune


def read_splits(path: Path | None) -> dict[str, LabeledTexts]:
    if path is not None:
        return train_transformer.read_splits(path)
    import duckdb

    warehouse = os.environ.get("MLOPS_WAREHOUSE_PATH", ".data/real/warehouse.duckdb")
    with duckdb.connect(warehouse, read_only=True) as con:
        rows = con.execute(
            "select text, intent, split from request_splits "
            "where intent is not null order by request_id"
        ).fetchall()
    return train_transformer.labeled_splits(
        {"text": t, "intent": i, "split": s} for t, i, s in rows
    )


def report(name: str, model, parts: dict[str, LabeledTexts], classes, seconds: float) -> None:
    scores = {
        split: score_classification(
            parts[split].intents, model.predict_proba(parts[split].texts), classes
        )
        for split in ("validation", "test")
    }
    print(
        f"{name:<34} validation F1-macro {scores['validation'].f1_macro:.4f}   "
        f"test F1-macro {scores['test'].f1_macro:.4f}   accuracy {scores['test'].accuracy:.4f}   "
        f"ECE {scores['test'].expected_calibration_error:.4f}   ({seconds:.0f} s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=Path)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rates", default="5e-5,1e-4,2e-4")
    parser.add_argument("--checkpoint", default="")
    args = parser.parse_args()
    parts = read_splits(args.splits)
    classes = sorted(set(parts["train"].intents))
    print(
        f"{len(classes)} intents; train {len(parts['train'])}, validation "
        f"{len(parts['validation'])}, test {len(parts['test'])}"
    )
    started = time.perf_counter()
    baseline = train_baseline(parts["train"], parts["validation"], classes)
    report(
        "baseline (TF-IDF + linear SVM)", baseline, parts, classes, time.perf_counter() - started
    )

    best = None
    for rate in (float(r) for r in args.learning_rates.split(",")):
        started = time.perf_counter()
        run = fine_tune(
            parts["train"],
            parts["validation"],
            classes,
            TransformerConfig(
                checkpoint=args.checkpoint,
                epochs=args.epochs,
                batch_size=args.batch_size,
                learning_rate=rate,
                patience=3,
            ),
        )
        seconds = time.perf_counter() - started
        validation = max(r.validation_f1_macro for r in run.history)
        speed = sum(r.samples_per_second for r in run.history) / len(run.history)
        print(
            f"  lr {rate:g}: best validation F1-macro {validation:.4f} at epoch {run.best_epoch} "
            f"of {len(run.history)} ({seconds:.0f} s, {speed:,.0f} samples/s, {run.device})"
        )
        if best is None or validation > best[0]:
            best = (validation, rate, run, seconds)
    _, rate, run, seconds = best
    report(f"transformer (lr {rate:g}, chosen on val)", run.classifier, parts, classes, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
