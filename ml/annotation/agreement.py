"""Inter-annotator agreement: Cohen's kappa over the first two annotations of each task by two
distinct annotators (in time order), per-class agreement, the annotators' confusion matrix, and
kappa per annotator pair.

What does not count is counted: skipped annotations, a third annotation, a second annotation by
the same person, a label outside the taxonomy. Nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np


@dataclass(frozen=True)
class Annotation:
    task: str
    annotator: str
    label: str | None
    """None when the result was empty."""
    created_at: datetime
    cancelled: bool = False
    annotation_id: int | None = None
    """The annotation tool's own id, when it has one (to withdraw an invalid answer)."""
    lead_seconds: float | None = None
    """How long the annotator spent on it, as the annotation tool measured (what it cost)."""


@dataclass(frozen=True)
class AnnotationPair:
    task: str
    first: Annotation
    second: Annotation


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa of two label sequences; None when there is nothing to compare.

    When both annotators used one and the same label throughout, chance agreement is 1 and the
    formula is 0/0: that is perfect agreement, reported as 1.0 (sklearn's `replace_undefined_by`).
    """
    if len(first) != len(second):
        raise ValueError(f"kappa needs equal lengths, got {len(first)} and {len(second)}")
    if not first:
        return None
    labels = sorted(set(first) | set(second))
    matrix = confusion_matrix(first, second, labels)
    total = matrix.sum()
    observed = np.trace(matrix) / total
    expected = float((matrix.sum(axis=1) * matrix.sum(axis=0)).sum()) / total**2
    if expected == 1.0:
        return 1.0
    return float((observed - expected) / (1.0 - expected))


def confusion_matrix(
    first: Sequence[str], second: Sequence[str], labels: Sequence[str]
) -> np.ndarray:
    """Rows: the first annotation's label; columns: the second's."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for a, b in zip(first, second, strict=True):
        matrix[index[a], index[b]] += 1
    return matrix


def per_class_agreement(first: Sequence[str], second: Sequence[str]) -> dict[str, float]:
    """Specific agreement per label: 2·both / (first used it + second used it)."""
    labels = sorted(set(first) | set(second))
    matrix = confusion_matrix(first, second, labels)
    used = matrix.sum(axis=1) + matrix.sum(axis=0)
    return {label: float(2 * matrix[i, i] / used[i]) for i, label in enumerate(labels)}


@dataclass
class AgreementReport:
    pairs: list[AnnotationPair]
    kappa: float | None
    observed_agreement: float | None
    per_class: dict[str, float]
    labels: list[str]
    confusion: np.ndarray
    per_annotator_pair: dict[tuple[str, str], float | None]
    excluded: Counter = field(default_factory=Counter)
    """Why annotations did not count: cancelled, empty, unknown label, repeat, beyond two."""
    single_tasks: list[str] = field(default_factory=list)
    """Tasks with fewer than two usable annotations."""

    @property
    def disagreements(self) -> list[AnnotationPair]:
        return [pair for pair in self.pairs if pair.first.label != pair.second.label]


def first_two_by_distinct_annotators(
    annotations: Iterable[Annotation], allowed: set[str]
) -> tuple[list[AnnotationPair], list[str], Counter]:
    """Per task, the first two usable annotations by two different people, in time order."""
    by_task: dict[str, list[Annotation]] = defaultdict(list)
    for annotation in annotations:
        by_task[annotation.task].append(annotation)
    pairs, singles, excluded = [], [], Counter()
    for task, items in sorted(by_task.items()):
        usable: list[Annotation] = []
        for annotation in sorted(items, key=lambda a: a.created_at):
            if annotation.cancelled:
                excluded["cancelled"] += 1
            elif annotation.label is None:
                excluded["empty result"] += 1
            elif annotation.label not in allowed:
                excluded["label not in taxonomy"] += 1
            elif any(a.annotator == annotation.annotator for a in usable):
                excluded["same annotator again"] += 1
            elif len(usable) == 2:
                excluded["beyond the first two"] += 1
            else:
                usable.append(annotation)
        if len(usable) == 2:
            pairs.append(AnnotationPair(task, usable[0], usable[1]))
        else:
            singles.append(task)
    return pairs, singles, excluded


def batch_agreement(annotations: Iterable[Annotation], taxonomy: Sequence[str]) -> AgreementReport:
    """Everything a lead annotator looks at for one batch."""
    pairs, singles, excluded = first_two_by_distinct_annotators(annotations, set(taxonomy))
    first = [pair.first.label for pair in pairs]
    second = [pair.second.label for pair in pairs]
    labels = sorted(set(first) | set(second))
    by_annotators: dict[tuple[str, str], tuple[list[str], list[str]]] = defaultdict(
        lambda: ([], [])
    )
    for pair in pairs:
        # Per pair of people, always in the same order, whoever annotated first.
        ordered = sorted((pair.first, pair.second), key=lambda a: a.annotator)
        people = (ordered[0].annotator, ordered[1].annotator)
        by_annotators[people][0].append(ordered[0].label)
        by_annotators[people][1].append(ordered[1].label)
    return AgreementReport(
        pairs=pairs,
        kappa=cohen_kappa(first, second),
        observed_agreement=(sum(a == b for a, b in zip(first, second, strict=True)) / len(pairs))
        if pairs
        else None,
        per_class=per_class_agreement(first, second) if pairs else {},
        labels=labels,
        confusion=confusion_matrix(first, second, labels),
        per_annotator_pair={
            people: cohen_kappa(a, b) for people, (a, b) in sorted(by_annotators.items())
        },
        excluded=excluded,
        single_tasks=singles,
    )


def doubly_annotated(annotations: Iterable[Annotation]) -> bool:
    """Two different people have answered (skips do not count): the task is done."""
    return len({a.annotator for a in annotations if not a.cancelled}) >= 2


@dataclass(frozen=True)
class FinalLabel:
    item: str
    intent: str
    annotators: tuple[str, str]
    adjudicated: bool
    adjudicator: str | None


@dataclass
class Resolution:
    labels: list[FinalLabel]
    pending: list[str]
    """Disagreements without a valid review yet: not labeled until someone reviews them."""
    invalid_reviews: list[tuple[Annotation, str]]
    """Reviews that cannot count, with why (to withdraw, so the task returns to the queue)."""


def resolve_labels(
    pairs: dict[str, AnnotationPair], reviews: dict[str, list[Annotation]], allowed: set[str]
) -> Resolution:
    """The label of each item: the two annotators' when they agree, else the first valid review
    by a third person (the adjudicated label wins). Nothing is guessed."""
    labels, pending, invalid = [], [], []
    for item, pair in sorted(pairs.items()):
        people = (pair.first.annotator, pair.second.annotator)
        if pair.first.label == pair.second.label:
            labels.append(FinalLabel(item, pair.first.label, people, False, None))
            continue
        chosen = None
        for review in sorted(reviews.get(item, []), key=lambda a: a.created_at):
            if review.cancelled:
                continue
            if review.annotator in people:
                invalid.append((review, "the reviewer annotated this item"))
            elif review.label not in allowed:
                invalid.append((review, f"label {review.label!r} is not in the taxonomy"))
            elif chosen is None:
                chosen = review
        if chosen is None:
            pending.append(item)
        else:
            labels.append(FinalLabel(item, chosen.label, people, True, chosen.annotator))
    return Resolution(labels, pending, invalid)
