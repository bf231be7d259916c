"""How well a defect classifier does: the defect class's F1 (the business target), precision
and recall (missed defects cost most), accuracy (the published figures' terms), ROC AUC, the
calibration error, the confusion matrix, and the same per module type (mono, poly)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from ml.metrics import expected_calibration_error


@dataclass(frozen=True)
class DefectScores:
    images: int
    defective: int
    defect_f1: float
    precision: float
    recall: float
    accuracy: float
    roc_auc: float | None
    """None when the images are all of one class."""
    expected_calibration_error: float
    threshold: float
    confusion: np.ndarray
    """Rows: true class, columns: predicted, both in `CLASSES` order (functional, defective)."""
    per_module_type: dict[str, DefectScores] = field(default_factory=dict)

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """The headline figures named for a tracking server (`test_defect_f1`, …)."""
        metrics = {
            f"{prefix}_defect_f1": self.defect_f1,
            f"{prefix}_defect_precision": self.precision,
            f"{prefix}_defect_recall": self.recall,
            f"{prefix}_accuracy": self.accuracy,
            f"{prefix}_ece": self.expected_calibration_error,
        }
        if self.roc_auc is not None:
            metrics[f"{prefix}_roc_auc"] = self.roc_auc
        metrics[f"{prefix}_false_positive_rate"] = self.false_positive_rate
        return metrics

    @property
    def false_positive_rate(self) -> float:
        """Share of functional cells flagged defective: the false alarms someone re-checks."""
        false_alarms, functional = int(self.confusion[0, 1]), int(self.confusion[0].sum())
        return false_alarms / functional if functional else 0.0

    def markdown(self) -> str:
        """All images, then each module type: what a reviewer reads."""
        lines = [
            "| images | n | defective | defect F1 | precision | recall | accuracy | ROC AUC |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, s in [("all", self), *sorted(self.per_module_type.items())]:
            auc = "–" if s.roc_auc is None else f"{s.roc_auc:.3f}"
            lines.append(
                f"| {name} | {s.images} | {s.defective} | {s.defect_f1:.3f} | {s.precision:.3f} "
                f"| {s.recall:.3f} | {s.accuracy:.3f} | {auc} |"
            )
        return "\n".join(lines)


def score_defects(
    defective: Sequence[bool] | np.ndarray,
    probability: np.ndarray,
    threshold: float,
    module_types: Sequence[str | None] | None = None,
) -> DefectScores:
    """Scores of defect probabilities against the true labels at the model's own threshold."""
    truth = np.asarray(defective, dtype=bool)
    probability = np.asarray(probability, dtype=np.float64)
    if truth.shape != probability.shape:
        raise ValueError(f"{len(truth)} labels but {len(probability)} probabilities")
    predicted = probability >= threshold
    both = np.stack([1 - probability, probability], axis=1)
    per_type: dict[str, DefectScores] = {}
    if module_types is not None:
        types = np.asarray([t or "unknown" for t in module_types], dtype=object)
        for name in sorted(set(types.tolist())):
            chosen = types == name
            per_type[name] = score_defects(truth[chosen], probability[chosen], threshold)
    return DefectScores(
        images=len(truth),
        defective=int(truth.sum()),
        defect_f1=float(f1_score(truth, predicted, zero_division=0)),
        precision=float(precision_score(truth, predicted, zero_division=0)),
        recall=float(recall_score(truth, predicted, zero_division=0)),
        accuracy=float(accuracy_score(truth, predicted)) if len(truth) else 0.0,
        roc_auc=float(roc_auc_score(truth, probability)) if len(set(truth.tolist())) == 2 else None,
        expected_calibration_error=expected_calibration_error(both, truth.astype(np.int64)),
        threshold=float(threshold),
        confusion=confusion_matrix(truth, predicted, labels=[False, True]),
        per_module_type=per_type,
    )
