"""Model quality figures shared by every domain: classification scores with calibration, forecast
errors (WAPE, MAPE, sMAPE, MASE, P10–P90 coverage), and the latency of a predict function.
numpy, polars and scikit-learn only (the GPU machine runs this too)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

CALIBRATION_BINS = 15


@dataclass(frozen=True)
class ClassificationScores:
    """How well predicted probabilities over `classes` match the true labels."""

    classes: tuple[str, ...]
    f1_macro: float
    accuracy: float
    expected_calibration_error: float
    per_class_f1: dict[str, float]
    support: dict[str, int]
    confusion: np.ndarray
    """Rows: true class, columns: predicted class, both in `classes` order."""

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """The headline figures, named for a tracking server (`test_f1_macro`, …)."""
        return {
            f"{prefix}_f1_macro": self.f1_macro,
            f"{prefix}_accuracy": self.accuracy,
            f"{prefix}_ece": self.expected_calibration_error,
        }

    def report_markdown(self) -> str:
        """Per-class F1 and support, worst classes first: what a reviewer reads."""
        lines = ["| intent | F1 | support |", "|---|---|---|"]
        for name, f1 in sorted(self.per_class_f1.items(), key=lambda item: item[1]):
            lines.append(f"| {name} | {f1:.3f} | {self.support[name]} |")
        return "\n".join(lines)

    def closest_confusions(self, top: int = 10) -> list[tuple[str, str, int, int]]:
        """The pairs of classes mistaken for each other most often, either way round:
        (a, b, texts of a predicted b, texts of b predicted a), most confused first."""
        both = self.confusion + self.confusion.T
        pairs = [
            (int(both[i, j]), i, j)
            for i in range(len(self.classes))
            for j in range(i + 1, len(self.classes))
            if both[i, j] > 0
        ]
        return [
            (self.classes[i], self.classes[j], int(self.confusion[i, j]), int(self.confusion[j, i]))
            for _, i, j in sorted(pairs, key=lambda p: (-p[0], p[1], p[2]))[:top]
        ]

    def confusions_markdown(self, top: int = 10) -> str:
        """The closest classes as a table: where a person looks first for label or model
        trouble."""
        pairs = self.closest_confusions(top)
        if not pairs:
            return "No two classes were confused."
        lines = [
            "| intent a | intent b | a predicted as b | b predicted as a |",
            "|---|---|---|---|",
        ]
        lines += [f"| {a} | {b} | {ab} | {ba} |" for a, b, ab, ba in pairs]
        return "\n".join(lines)


def expected_calibration_error(
    probabilities: np.ndarray, true_index: np.ndarray, bins: int = CALIBRATION_BINS
) -> float:
    """Weighted gap between confidence and accuracy over equal-width confidence bins."""
    if len(true_index) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == true_index
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(gap)


def score_classification(
    true_labels: Sequence[str], probabilities: np.ndarray, classes: Sequence[str]
) -> ClassificationScores:
    """Scores of probabilities (rows: samples, columns: `classes`) against true labels.

    A true label outside `classes` is an error, not a silent miss: the model cannot predict it.
    """
    classes = tuple(classes)
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({label for label in true_labels if label not in index})
    if unknown:
        raise ValueError(f"labels not among the model's {len(classes)} classes: {unknown[:10]}")
    if probabilities.shape != (len(true_labels), len(classes)):
        raise ValueError(
            f"probabilities of shape {probabilities.shape}; expected "
            f"({len(true_labels)}, {len(classes)})"
        )
    true_index = np.array([index[label] for label in true_labels], dtype=np.int64)
    predicted = probabilities.argmax(axis=1)
    present = sorted(set(true_index.tolist()))
    per_class = f1_score(true_index, predicted, labels=present, average=None, zero_division=0)
    return ClassificationScores(
        classes=classes,
        f1_macro=float(
            f1_score(true_index, predicted, labels=present, average="macro", zero_division=0)
        ),
        accuracy=float(accuracy_score(true_index, predicted)),
        expected_calibration_error=expected_calibration_error(probabilities, true_index),
        per_class_f1={classes[i]: float(f1) for i, f1 in zip(present, per_class, strict=True)},
        support={classes[i]: int((true_index == i).sum()) for i in present},
        confusion=confusion_matrix(true_index, predicted, labels=list(range(len(classes)))),
    )


@dataclass(frozen=True)
class Latency:
    per_sample_ms: float
    """One text per call: what a single interactive request waits."""
    per_batch_ms: float
    batch_size: int

    def as_metrics(self) -> dict[str, float]:
        return {
            "latency_per_sample_ms": self.per_sample_ms,
            f"latency_per_batch{self.batch_size}_ms": self.per_batch_ms,
        }


def measure_latency(
    predict: Callable[[list[str]], object],
    texts: Sequence[str],
    batch_size: int = 32,
    samples: int = 32,
) -> Latency:
    """Median wall time of `predict` on one text and on a batch (after one warm-up call)."""
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to time the model on")
    batch = (texts * (batch_size // len(texts) + 1))[:batch_size]
    predict(batch)

    def median_ms(inputs: list[list[str]]) -> float:
        timings = []
        for item in inputs:
            started = time.perf_counter()
            predict(item)
            timings.append((time.perf_counter() - started) * 1000)
        return float(np.median(timings))

    singles = [[text] for text in (texts * (samples // len(texts) + 1))[:samples]]
    return Latency(
        per_sample_ms=median_ms(singles),
        per_batch_ms=median_ms([batch] * 5),
        batch_size=batch_size,
    )


FORECAST_METRICS = ("wape", "mape", "smape", "mase", "coverage")


def wape_expr(actual: str = "actual", forecast: str = "p50") -> pl.Expr:
    """WAPE = Σ|actual − forecast| / Σ|actual| over the rows aggregated; null where no demand
    (all actuals 0) leaves it undefined."""
    total = pl.col(actual).abs().sum()
    return pl.when(total > 0).then((pl.col(actual) - pl.col(forecast)).abs().sum() / total)


def forecast_errors(frame: pl.DataFrame) -> pl.DataFrame:
    """Per scored row (columns actual, p10, p50, p90): absolute error, APE (where actual > 0),
    symmetric APE, and whether the actual fell inside P10–P90."""
    error = (pl.col("actual") - pl.col("p50")).abs()
    return frame.with_columns(
        error.alias("abs_error"),
        pl.when(pl.col("actual") > 0).then(error / pl.col("actual")).alias("ape"),
        pl.when((pl.col("actual") + pl.col("p50")) > 0)
        .then(2 * error / (pl.col("actual").abs() + pl.col("p50").abs()))
        .otherwise(0.0)
        .alias("sape"),
        ((pl.col("actual") >= pl.col("p10")) & (pl.col("actual") <= pl.col("p90")))
        .cast(pl.Float64)
        .alias("covered"),
    )


def forecast_scores(errors: pl.DataFrame, by: Sequence[str]) -> pl.DataFrame:
    """The forecast metrics of `forecast_errors` rows per group; MASE where the rows carry their
    series' `mase_scale`."""
    mase = (
        (pl.col("abs_error") / pl.col("mase_scale")).mean()
        if "mase_scale" in errors.columns
        else pl.lit(None, pl.Float64)
    )
    return errors.group_by(*by).agg(
        wape_expr().alias("wape"),
        pl.col("ape").mean().alias("mape"),
        pl.col("sape").mean().alias("smape"),
        mase.alias("mase"),
        pl.col("covered").mean().alias("coverage"),
        pl.len().alias("points"),
    )
