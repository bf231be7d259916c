"""The promotion gate: never worse than the baseline, better than the champion by a margin."""

import pytest

from ml.lifecycle.aliases import CHALLENGER, CHAMPION
from ml.lifecycle.promotion import GateScores, decide_promotion

BASELINE = GateScores("1", 0.70)


def test_without_a_champion_a_candidate_as_good_as_the_baseline_is_promoted() -> None:
    for score in (0.70, 0.82):
        decision = decide_promotion(GateScores("2", score), BASELINE, None, "test_f1_macro", 0.01)
        assert decision.promote and decision.alias == CHAMPION
        assert "no champion yet" in decision.reason and "v1" in decision.reason


def test_a_candidate_worse_than_the_baseline_is_never_promoted() -> None:
    worse = GateScores("3", 0.69)
    without_champion = decide_promotion(worse, BASELINE, None, "test_f1_macro", 0.01)
    assert not without_champion.promote and without_champion.alias == CHALLENGER
    assert "loses to the baseline" in without_champion.reason
    assert "v3 test_f1_macro 0.6900" in without_champion.reason
    assert "v1 test_f1_macro 0.7000" in without_champion.reason
    # Even when it beats a (weaker) champion by far more than the margin.
    weak_champion = GateScores("2", 0.40)
    assert not decide_promotion(worse, BASELINE, weak_champion, "test_f1_macro", 0.01).promote


def test_a_candidate_beating_the_champion_by_the_margin_is_promoted() -> None:
    champion = GateScores("2", 0.80)
    for score in (0.85, 0.90):  # exactly the margin (0.85 - 0.80 is 0.0499… in floats), more
        decision = decide_promotion(GateScores("3", score), BASELINE, champion, "f1", 0.05)
        assert decision.promote, decision.reason
        assert decision.alias == CHAMPION
        assert "beats the champion v2" in decision.reason and "margin 0.05" in decision.reason


def test_a_better_challenger_below_the_margin_stays_a_challenger() -> None:
    champion = GateScores("2", 0.80)
    decision = decide_promotion(GateScores("3", 0.84), BASELINE, champion, "test_f1_macro", 0.05)
    assert not decision.promote and decision.alias == CHALLENGER
    assert decision.reason == (
        "v3 test_f1_macro 0.8400 does not beat the champion v2 test_f1_macro 0.8000 "
        "by the margin 0.05"
    )


def test_a_worse_challenger_is_not_promoted_even_with_no_margin() -> None:
    champion = GateScores("2", 0.80)
    assert not decide_promotion(GateScores("3", 0.79), BASELINE, champion, "f1", 0.0).promote
    assert decide_promotion(GateScores("3", 0.80), BASELINE, champion, "f1", 0.0).promote


def test_for_an_error_metric_lower_is_better() -> None:
    baseline = GateScores("1", 0.30)  # WAPE
    champion = GateScores("2", 0.20)

    def decide(score: float, champ: GateScores | None = champion) -> bool:
        return decide_promotion(
            GateScores("3", score), baseline, champ, "test_wape", 0.02, higher_is_better=False
        ).promote

    assert decide(0.25, None)  # below the baseline's error
    assert not decide(0.35, None)  # more error than the baseline
    assert decide(0.17)  # 0.03 less error than the champion
    assert decide(0.18)  # exactly the margin
    assert not decide(0.19)  # better, but by less than the margin
    assert not decide(0.22)  # worse than the champion


def test_a_negative_margin_is_refused() -> None:
    with pytest.raises(ValueError, match=r"margin must be ≥ 0, got -0\.01"):
        decide_promotion(GateScores("2", 0.9), BASELINE, None, "f1", -0.01)
