"""Model quality figures: calibration error, classification scores, latency of a predict call."""

import time

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from ml.metrics import expected_calibration_error, measure_latency, score_classification


def test_calibration_error_matches_a_hand_computation() -> None:
    probabilities = np.array(
        [
            [0.90, 0.05, 0.05],  # confidence 0.90, right
            [0.85, 0.10, 0.05],  # confidence 0.85, wrong (truth 1)
            [0.20, 0.70, 0.10],  # confidence 0.70, right
            [0.10, 0.25, 0.65],  # confidence 0.65, right
            [0.50, 0.30, 0.20],  # confidence 0.50, wrong (truth 1)
        ]
    )
    truth = np.array([0, 1, 1, 2, 1])
    # Five bins of width 0.2:
    #   (0.8, 1.0]: 2 samples, accuracy 1/2, mean confidence 0.875 -> gap 0.375
    #   (0.6, 0.8]: 2 samples, accuracy 2/2, mean confidence 0.675 -> gap 0.325
    #   (0.4, 0.6]: 1 sample,  accuracy 0/1, mean confidence 0.500 -> gap 0.500
    hand = 2 / 5 * 0.375 + 2 / 5 * 0.325 + 1 / 5 * 0.5
    assert expected_calibration_error(probabilities, truth, bins=5) == pytest.approx(hand)
    assert hand == pytest.approx(0.38)


def test_calibration_error_with_the_default_bins() -> None:
    # Every sample 0.75 sure: right 3 times in 4 is calibrated, right once in 4 is 0.5 off.
    sure = np.tile([0.75, 0.25], (4, 1))
    assert expected_calibration_error(sure, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    assert expected_calibration_error(sure, np.array([0, 1, 1, 1])) == pytest.approx(0.5)


def test_certain_and_right_is_perfectly_calibrated_certain_and_wrong_is_not() -> None:
    one_hot = np.eye(4)[[0, 1, 2, 3, 2, 1]]
    truth = np.array([0, 1, 2, 3, 2, 1])
    assert expected_calibration_error(one_hot, truth) == 0.0
    assert expected_calibration_error(one_hot, (truth + 1) % 4) == pytest.approx(1.0)
    assert expected_calibration_error(np.zeros((0, 4)), np.array([], dtype=int)) == 0.0


def test_scores_agree_with_sklearn_on_random_predictions() -> None:
    rng = np.random.default_rng(7)
    classes = ["balance", "card_lost", "pin", "refund", "transfer"]
    probabilities = rng.dirichlet(np.ones(len(classes)), size=300)
    # Right about half the time: lift the true class of a random half of the rows.
    truth_index = rng.integers(0, len(classes), size=300)
    lifted = rng.random(300) < 0.5
    probabilities[lifted, truth_index[lifted]] += 1.0
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    truth = [classes[i] for i in truth_index]
    predicted = [classes[i] for i in probabilities.argmax(axis=1)]
    assert set(truth) == set(predicted) == set(classes)

    scores = score_classification(truth, probabilities, classes)

    assert scores.f1_macro == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert scores.accuracy == pytest.approx(accuracy_score(truth, predicted))
    assert 0.4 < scores.accuracy < 0.9  # neither trivial nor hopeless: the check means something
    per_class = f1_score(truth, predicted, labels=classes, average=None)
    assert scores.per_class_f1 == pytest.approx(dict(zip(classes, per_class, strict=True)))
    assert scores.support == {name: truth.count(name) for name in classes}
    np.testing.assert_array_equal(
        scores.confusion, confusion_matrix(truth, predicted, labels=classes)
    )
    assert scores.as_metrics("test") == {
        "test_f1_macro": scores.f1_macro,
        "test_accuracy": scores.accuracy,
        "test_ece": scores.expected_calibration_error,
    }
    report = scores.report_markdown().splitlines()
    worst = min(scores.per_class_f1, key=scores.per_class_f1.__getitem__)
    assert report[2].startswith(f"| {worst} |")


def test_an_intent_missing_from_the_test_set_is_not_counted_as_a_failure() -> None:
    classes = ["balance", "pin", "refund"]
    probabilities = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1]])
    scores = score_classification(["balance", "pin", "pin"], probabilities, classes)
    assert scores.f1_macro == 1.0
    assert set(scores.per_class_f1) == {"balance", "pin"}
    assert scores.confusion.shape == (3, 3)


def test_a_true_label_the_model_does_not_know_is_named() -> None:
    probabilities = np.full((2, 2), 0.5)
    with pytest.raises(ValueError, match=r"not among the model's 2 classes: \['refund'\]"):
        score_classification(["pin", "refund"], probabilities, ["balance", "pin"])


def test_probabilities_of_the_wrong_shape_are_refused() -> None:
    with pytest.raises(ValueError, match=r"shape \(2, 3\); expected \(2, 2\)"):
        score_classification(["pin", "balance"], np.full((2, 3), 1 / 3), ["balance", "pin"])
    with pytest.raises(ValueError, match=r"shape \(3, 2\); expected \(2, 2\)"):
        score_classification(["pin", "balance"], np.full((3, 2), 0.5), ["balance", "pin"])


def test_latency_times_one_text_and_one_batch() -> None:
    calls: list[int] = []

    def predict(texts: list[str]) -> list[str]:
        calls.append(len(texts))
        time.sleep(0.002 * len(texts))  # 2 ms a text
        return texts

    latency = measure_latency(predict, ["a", "b", "c"], batch_size=5, samples=6)

    assert calls == [5] + [1] * 6 + [5] * 5  # one warm-up batch, the singles, then the batches
    assert 2.0 <= latency.per_sample_ms < latency.per_batch_ms
    assert latency.per_batch_ms >= 10.0
    assert latency.as_metrics() == {
        "latency_per_sample_ms": latency.per_sample_ms,
        "latency_per_batch5_ms": latency.per_batch_ms,
    }


def test_latency_needs_texts_to_time() -> None:
    with pytest.raises(ValueError, match="no texts"):
        measure_latency(lambda texts: texts, [])


def test_the_closest_classes_are_the_pairs_confused_most_either_way_round() -> None:
    classes = ["card_arrival", "card_delivery", "pin", "top_up"]
    truth = ["card_arrival"] * 5 + ["card_delivery"] * 5 + ["pin"] * 3 + ["top_up"] * 3
    predicted = (
        ["card_arrival"] * 2
        + ["card_delivery"] * 3  # arrival → delivery 3 times
        + ["card_arrival"] * 2
        + ["card_delivery"] * 3  # delivery → arrival 2 times
        + ["pin", "pin", "top_up"]  # pin → top_up once
        + ["top_up"] * 3
    )
    probabilities = np.eye(len(classes))[[classes.index(p) for p in predicted]]

    scores = score_classification(truth, probabilities, classes)

    assert scores.closest_confusions() == [
        ("card_arrival", "card_delivery", 3, 2),
        ("pin", "top_up", 1, 0),
    ]
    assert scores.closest_confusions(top=1) == [("card_arrival", "card_delivery", 3, 2)]
    assert "| card_arrival | card_delivery | 3 | 2 |" in scores.confusions_markdown()
    perfect = score_classification(
        truth, np.eye(len(classes))[[classes.index(t) for t in truth]], classes
    )
    assert perfect.confusions_markdown() == "No two classes were confused."
