"""Cohen's kappa as sklearn computes it, and what happens at the edges."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from ml.annotation.agreement import (
    Annotation,
    batch_agreement,
    cohen_kappa,
    per_class_agreement,
    resolve_labels,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("seed", range(5))
def test_kappa_matches_sklearn_on_random_labelings(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = ["card", "loan", "fraud", "atm"]
    first = list(rng.choice(labels, 200))
    second = [a if rng.random() < 0.7 else str(rng.choice(labels)) for a in first]
    assert cohen_kappa(first, second) == pytest.approx(cohen_kappa_score(first, second))


def test_perfect_agreement_and_perfect_disagreement() -> None:
    assert cohen_kappa(["a", "b", "c"], ["a", "b", "c"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(
        cohen_kappa_score(["a", "b"], ["b", "a"])
    )


def test_one_class_only_is_perfect_agreement_not_nan() -> None:
    assert cohen_kappa(["a"] * 5, ["a"] * 5) == 1.0
    assert cohen_kappa_score(["a"] * 5, ["a"] * 5, replace_undefined_by=1.0) == 1.0


def test_nothing_to_compare_is_none_and_unequal_lengths_are_refused() -> None:
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError, match="equal lengths"):
        cohen_kappa(["a"], [])


def test_per_class_agreement_is_specific_agreement() -> None:
    agreement = per_class_agreement(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert agreement == {"a": pytest.approx(2 * 1 / 3), "b": pytest.approx(2 * 2 / 5)}


def annotation(task: str, who: str, label: str | None, minute: int, cancelled: bool = False):
    return Annotation(task, who, label, T0 + timedelta(minutes=minute), cancelled)


def test_a_batch_uses_the_first_two_annotations_by_distinct_people() -> None:
    report = batch_agreement(
        [
            annotation("t1", "ann", "card", 1),
            annotation("t1", "bob", "card", 2),
            annotation("t1", "cid", "loan", 3),  # a third annotation does not count
            annotation("t2", "bob", "loan", 1),
            annotation("t2", "bob", "card", 2),  # the same person twice does not count
            annotation("t2", "ann", "loan", 3),
            annotation("t3", "ann", "card", 1),
            annotation("t3", "bob", None, 2, cancelled=True),  # skipped
            annotation("t4", "ann", "nonsense", 1),  # not in the taxonomy
            annotation("t4", "bob", "card", 2),
            annotation("t5", "bob", "fraud", 5),
            annotation("t5", "ann", "loan", 4),
        ],
        taxonomy=["card", "loan", "fraud"],
    )
    assert [(p.task, p.first.annotator, p.second.annotator) for p in report.pairs] == [
        ("t1", "ann", "bob"),
        ("t2", "bob", "ann"),
        ("t5", "ann", "bob"),
    ]
    assert report.single_tasks == ["t3", "t4"]
    assert report.excluded == {
        "beyond the first two": 1,
        "same annotator again": 1,
        "cancelled": 1,
        "label not in taxonomy": 1,
    }
    first, second = ["card", "loan", "loan"], ["card", "loan", "fraud"]
    assert report.kappa == pytest.approx(cohen_kappa_score(first, second))
    assert [p.task for p in report.disagreements] == ["t5"]
    assert report.labels == ["card", "fraud", "loan"]
    assert report.confusion.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
    assert report.per_annotator_pair[("ann", "bob")] == pytest.approx(
        cohen_kappa_score(["card", "loan", "loan"], ["card", "loan", "fraud"])
    )


def test_a_batch_without_any_doubly_annotated_task_has_no_kappa() -> None:
    report = batch_agreement([annotation("t1", "ann", "card", 1)], taxonomy=["card"])
    assert report.kappa is None and report.pairs == [] and report.single_tasks == ["t1"]


def pair(item: str, a: str, b: str):
    return batch_agreement(
        [annotation(item, "ann", a, 1), annotation(item, "bob", b, 2)], ["card", "loan", "fraud"]
    ).pairs[0]


def test_agreement_stands_and_a_third_persons_review_wins_a_disagreement() -> None:
    pairs = {
        "r1": pair("r1", "card", "card"),
        "r2": pair("r2", "card", "loan"),
        "r3": pair("r3", "loan", "fraud"),
    }
    reviews = {
        "r2": [
            annotation("r2", "ann", "card", 5),  # one of the pair: discarded
            annotation("r2", "cid", "nonsense", 6),  # not in the taxonomy: discarded
            annotation("r2", "dan", "loan", 7),
        ],
    }
    result = resolve_labels(pairs, reviews, {"card", "loan", "fraud"})
    assert [(f.item, f.intent, f.adjudicated, f.adjudicator) for f in result.labels] == [
        ("r1", "card", False, None),
        ("r2", "loan", True, "dan"),
    ]
    assert result.pending == ["r3"]
    assert [(r.annotator, why) for r, why in result.invalid_reviews] == [
        ("ann", "the reviewer annotated this item"),
        ("cid", "label 'nonsense' is not in the taxonomy"),
    ]
