"""Drift monitoring: serving requests are turned into features, profiled with whylogs and compared
with the champion's reference traffic; unshifted traffic raises no alarm, off-topic requests and a
new class mix do, and the demand forecaster's realized error is checked against its threshold."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.colors import to_hex

from ml.monitoring.drift import (
    DatasetProfileView,
    DriftReport,
    DriftThresholds,
    adjust_p_values,
    compare_profiles,
    deserialize_profile,
    profile,
    serialize_profile,
)
from ml.monitoring.drift_power import (
    DEMAND_SHIFTS,
    alarm_rate,
    calm_windows,
    shift_demand,
    shifted_windows,
    surge_windows,
    wilson_interval,
)
from ml.monitoring.forecast_error import (
    FORECAST_RESIDUALS,
    forecast_error_drift,
    forecast_residuals,
    residual_drift,
)
from ml.monitoring.request_features import (
    REQUEST_FEATURES,
    TextReference,
    build_text_reference,
    request_feature_frame,
    sentence_embedder,
)
from ml.plots import drift_figure
from ml.requests.classifiers import BaselineClassifier, LabeledTexts, train_baseline
from ml.requests.taxonomy import synthetic_taxonomy
from ml.synthetic.request_shifts import INTENT_MIX, SHIFT_SHARES, TEXT_SHIFTS, shift_texts
from ml.synthetic.requests import generate_requests

START, END = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 31, tzinfo=UTC)
BATCH = 300
REFERENCE_BATCHES = 6
"""generate_requests places every intent at least once per call, so a 300-row call is not a
sample of a 3,000-row one; the reference traffic is made of serving-sized batches."""

SUBJECTS = (
    "sourdough bread",
    "the football match",
    "my tomato plants",
    "the weather tomorrow",
    "a hiking trail",
    "the new sci-fi movie",
    "my cat",
    "a pasta recipe",
    "the guitar solo",
    "the marathon",
)
ASKS = (
    "What do you think about {}?",
    "Can you recommend something like {}?",
    "I love {} so much!",
    "Tell me more about {} please.",
    "Is {} worth it this weekend?",
    "my friend keeps talking about {}",
)


def requests(rows: int, seed: int) -> pl.DataFrame:
    return generate_requests(rows, seed=seed, start=START, end=END)


def off_topic_texts(rows: int, seed: int) -> list[str]:
    """Requests about things a bank's classifier never saw."""
    rng = np.random.default_rng(seed)
    return [
        ASKS[rng.integers(len(ASKS))].format(SUBJECTS[rng.integers(len(SUBJECTS))])
        for _ in range(rows)
    ]


@dataclass(frozen=True)
class Champion:
    """A trained classifier and the text reference built from its training texts."""

    classifier: BaselineClassifier
    reference: TextReference
    embed: Callable[[Sequence[str]], np.ndarray]

    def features(self, texts: list[str]) -> pl.DataFrame:
        probabilities = self.classifier.predict_proba(texts)
        predicted = [self.classifier.classes[i] for i in probabilities.argmax(axis=1)]
        return request_feature_frame(
            texts, predicted, probabilities.max(axis=1), self.reference, self.embed
        )

    def profile_of(self, texts: list[str]) -> DatasetProfileView:
        return profile(self.features(texts))


@pytest.fixture(scope="module")
def champion() -> Champion:
    train, validation = requests(800, seed=1), requests(BATCH, seed=2)
    classifier = train_baseline(
        LabeledTexts(train["text"].to_list(), train["intent"].to_list()),
        LabeledTexts(validation["text"].to_list(), validation["intent"].to_list()),
        synthetic_taxonomy().intents,
    )
    embed = sentence_embedder()
    return Champion(classifier, build_text_reference(train["text"].to_list(), embed), embed)


@pytest.fixture(scope="module")
def reference_profile(champion: Champion) -> DatasetProfileView:
    """The champion's predictions on held-out requests: what serving traffic is compared with."""
    held_out = pl.concat([requests(BATCH, seed=100 + k) for k in range(REFERENCE_BATCHES)])
    return champion.profile_of(held_out["text"].to_list())


@pytest.fixture(scope="module")
def unshifted(champion: Champion) -> DatasetProfileView:
    return champion.profile_of(requests(BATCH, seed=500)["text"].to_list())


@pytest.fixture(scope="module")
def off_topic(champion: Champion) -> DatasetProfileView:
    """A third of the traffic about unrelated topics, the rest business as usual."""
    usual = requests(BATCH, seed=501)["text"].to_list()
    return champion.profile_of(off_topic_texts(BATCH // 3, seed=0) + usual[BATCH // 3 :])


# --- profiles ----------------------------------------------------------------------------------


def test_a_string_column_profiles_on_numpy_2():
    assert np.unicode_ is np.str_  # the alias whylogs 1.6.4 checks string types against
    view = profile(
        pl.DataFrame({"predicted_intent": ["card_declined", "card_declined", None, "atm_fee"]})
    )
    summary = view.get_column("predicted_intent").to_summary_dict()
    assert summary["counts/n"] == 4
    assert summary["counts/null"] == 1
    assert summary["types/string"] == 3
    frequent = {item.value: item.est for item in summary["frequent_items/frequent_strings"]}
    assert frequent == {"card_declined": 2, "atm_fee": 1}


def test_request_features_measure_length_words_novelty_and_meaning(champion: Champion):
    known = "my card was declined"
    reference = TextReference(frozenset(known.split()), champion.embed([known])[0])
    frame = request_feature_frame(
        ["My card was declined", "Zebras eat grass!"],
        ["card_declined", "card_declined"],
        [0.9, 0.2],
        reference,
        champion.embed,
    )
    assert frame.columns == list(REQUEST_FEATURES)
    assert frame["text_length"].to_list() == [20, 17]
    assert frame["token_count"].to_list() == [4, 3]
    assert frame["oov_rate"].to_list() == [0.0, 1.0]
    near, far = frame["embedding_distance"].to_list()
    assert near < 1e-5 < 0.5 < far  # the embedder lower-cases


def test_the_text_reference_is_saved_and_loaded_back(champion: Champion, tmp_path: Path):
    assert np.linalg.norm(champion.reference.centroid) == pytest.approx(1.0, abs=1e-5)
    champion.reference.save(tmp_path / "reference")
    loaded = TextReference.load(tmp_path / "reference")
    assert loaded.vocabulary == champion.reference.vocabulary
    np.testing.assert_array_equal(loaded.centroid, champion.reference.centroid)
    with pytest.raises(FileNotFoundError, match=r"text_reference\.json"):
        TextReference.load(tmp_path / "nothing here")


# --- drift between profiles ----------------------------------------------------------------------


def test_unshifted_traffic_drifts_nowhere(
    reference_profile: DatasetProfileView, unshifted: DatasetProfileView
):
    report = compare_profiles(reference_profile, unshifted)
    assert {c.column for c in report.columns} == set(REQUEST_FEATURES)
    assert report.column("predicted_intent").algorithm == "chi-square"
    assert {report.column(c).algorithm for c in REQUEST_FEATURES if c != "predicted_intent"} == {
        "ks"
    }
    assert not report.drifted, report.as_frame()
    assert report.drifted_columns == ()


def test_off_topic_requests_drift_in_vocabulary_and_meaning(
    reference_profile: DatasetProfileView, off_topic: DatasetProfileView
):
    report = compare_profiles(reference_profile, off_topic)
    assert {"oov_rate", "embedding_distance"} <= set(report.drifted_columns)
    assert report.column("embedding_distance").score < DriftThresholds().alpha
    assert report.drifted


def test_a_new_class_mix_drifts_in_predicted_intent(
    champion: Champion, reference_profile: DatasetProfileView
):
    cards = requests(3000, seed=502).filter(pl.col("intent").str.starts_with("card_"))
    report = compare_profiles(
        reference_profile, champion.profile_of(cards["text"].head(BATCH).to_list())
    )
    intent = report.column("predicted_intent")
    assert intent.algorithm == "chi-square"
    assert intent.drifted
    assert intent.category == "DRIFT"


def test_an_intent_rare_in_the_reference_seen_once_is_not_drift():
    """whylogs alone scores any category it expects under one time as infinitely surprising."""
    reference = profile(pl.DataFrame({"predicted_intent": ["a"] * 600 + ["b"] * 398 + ["c"] * 2}))
    usual = profile(pl.DataFrame({"predicted_intent": ["a"] * 180 + ["b"] * 119 + ["c"]}))
    unseen = profile(pl.DataFrame({"predicted_intent": ["a"] * 120 + ["b"] * 80 + ["d"] * 100}))
    assert not compare_profiles(reference, usual).drifted
    assert compare_profiles(reference, unseen).drifted_columns == ("predicted_intent",)


def test_hellinger_is_selectable_for_every_column_and_is_a_distance(
    reference_profile: DatasetProfileView,
    unshifted: DatasetProfileView,
    off_topic: DatasetProfileView,
):
    hellinger = DriftThresholds(numeric_algorithm="hellinger", categorical_algorithm="hellinger")
    calm = compare_profiles(reference_profile, unshifted, hellinger)
    shifted = compare_profiles(reference_profile, off_topic, hellinger)
    for report in (calm, shifted):
        for column in report.columns:
            assert column.algorithm == "hellinger"
            assert column.p_value is None
            assert 0.0 <= column.statistic <= 1.0
    assert not calm.drifted
    for name in ("oov_rate", "embedding_distance"):
        assert shifted.column(name).statistic > 2 * calm.column(name).statistic

    one = DriftThresholds(column_algorithms={"confidence": "hellinger"})
    report = compare_profiles(reference_profile, unshifted, one)
    assert report.column("confidence").algorithm == "hellinger"
    assert report.column("text_length").algorithm == "ks"


def test_a_column_missing_from_either_profile_is_named(
    reference_profile: DatasetProfileView, unshifted: DatasetProfileView
):
    partial = profile(pl.DataFrame({"text_length": [10, 20, 30]}))
    with pytest.raises(ValueError, match=r"'confidence' is not in the target profile"):
        compare_profiles(reference_profile, partial)
    with pytest.raises(ValueError, match=r"'confidence' is not in the reference profile"):
        compare_profiles(partial, reference_profile)
    with pytest.raises(ValueError, match=r"'latency_ms' is not in the reference"):
        compare_profiles(reference_profile, unshifted, columns=["latency_ms"])


def test_an_algorithm_that_cannot_score_a_column_is_named(
    reference_profile: DatasetProfileView, unshifted: DatasetProfileView
):
    with pytest.raises(ValueError, match=r"'predicted_intent': whylogs' ks"):
        compare_profiles(
            reference_profile,
            unshifted,
            DriftThresholds(column_algorithms={"predicted_intent": "ks"}),
        )
    with pytest.raises(ValueError, match="numeric_algorithm is 'wasserstein'"):
        DriftThresholds(numeric_algorithm="wasserstein")


def test_stored_profiles_and_reports_give_the_same_verdicts(
    reference_profile: DatasetProfileView, off_topic: DatasetProfileView
):
    report = compare_profiles(reference_profile, off_topic)
    restored = compare_profiles(
        deserialize_profile(serialize_profile(reference_profile)),
        deserialize_profile(serialize_profile(off_topic)),
    )
    assert restored == report
    assert DriftReport.from_json(report.to_json()) == report
    table = report.as_frame()
    assert table.height == len(REQUEST_FEATURES)
    assert table["drifted"].head(len(report.drifted_columns)).all()


def test_the_drift_figure_has_one_bar_per_column_drifted_ones_in_orange(
    reference_profile: DatasetProfileView, off_topic: DatasetProfileView
):
    report = compare_profiles(reference_profile, off_topic)
    figure = drift_figure(report)
    bars = figure.axes[0].patches
    assert len(bars) == len(report.columns)
    colours = {
        c.column: to_hex(bar.get_facecolor()) for c, bar in zip(report.columns, bars, strict=True)
    }
    assert colours["oov_rate"] == to_hex("tab:orange")
    assert {colours[c.column] for c in report.columns if not c.drifted} <= {to_hex("tab:blue")}
    assert "oov_rate" in figure.axes[0].get_title()


# --- the verdict across columns, and how often it is right ----------------------------------------


def test_holm_corrects_for_the_six_columns_tested_at_once():
    """One of six columns just under the raw α (0.009 < 0.01) is what six calm columns give
    one window in twenty: no drift. A p-value of 1e-4 is drift however many columns."""
    calm = [0.009, 0.5, 0.6, 0.7, 0.8, 0.9]
    holm = adjust_p_values(calm, "holm")
    assert holm[0] == pytest.approx(6 * 0.009) and holm[0] > DriftThresholds().alpha
    assert adjust_p_values(calm, "none")[0] == 0.009 < DriftThresholds().alpha
    assert adjust_p_values([1e-4, 0.02, 0.5], "holm") == pytest.approx([3e-4, 0.04, 0.5])
    assert adjust_p_values([0.3, 0.4], "bonferroni") == pytest.approx([0.6, 0.8])
    # Holm's step-down never lets a larger p-value get a smaller corrected one.
    assert adjust_p_values([0.01, 0.011], "holm") == pytest.approx([0.02, 0.02])


def test_the_report_applies_the_correction_and_says_why_in_words(
    reference_profile: DatasetProfileView, off_topic: DatasetProfileView
):
    raw = compare_profiles(reference_profile, off_topic, DriftThresholds(correction="none"))
    corrected = compare_profiles(reference_profile, off_topic)
    smallest = min(c.p_value for c in raw.columns)
    worst = min(corrected.columns, key=lambda c: c.p_value)
    assert worst.adjusted_p_value == pytest.approx(min(1.0, len(REQUEST_FEATURES) * smallest))
    assert {c.column: c.p_value for c in raw.columns} == {
        c.column: c.p_value for c in corrected.columns
    }
    reasons = corrected.reasons()
    assert len(reasons) == len(corrected.drifted_columns)
    distance = next(r for r in reasons if r.startswith("embedding_distance"))
    assert "median" in distance and "in the reference" in distance and "α 0.01" in distance


@dataclass(frozen=True)
class Pools:
    """Features of held-out requests: the reference, and a disjoint pool calm windows are drawn
    from, with each pool text shifted by each kind (row for row)."""

    reference: DatasetProfileView
    calm: pl.DataFrame
    shifted: dict[str, pl.DataFrame]


@pytest.fixture(scope="module")
def pools(champion: Champion) -> Pools:
    draw = requests(1800, seed=900).sample(fraction=1.0, shuffle=True, seed=0)
    reference, pool = draw[:900], draw[900:]
    texts = pool["text"].to_list()
    intents = pool.select(pl.col("intent").alias("true_intent"))

    def features(batch: list[str]) -> pl.DataFrame:
        return pl.concat([champion.features(batch), intents], how="horizontal")

    return Pools(
        champion.profile_of(reference["text"].to_list()),
        features(texts),
        {kind: features(shift_texts(kind, texts, seed=k)) for k, kind in enumerate(TEXT_SHIFTS)},
    )


def test_fresh_calm_windows_raise_no_more_alarms_than_the_target_rate_allows(pools: Pools):
    """40 windows of 200 drawn anew on every run (no fixed sample): at a false-alarm rate of 1%
    three or more alarms happen in under 1% of runs."""
    windows = calm_windows(pools.calm, 200, 40, np.random.default_rng())
    rate = alarm_rate("calm", pools.reference, windows)
    assert rate.windows == 40 and rate.rows == 200
    assert rate.drifted <= 2, rate.columns


def test_every_kind_of_shift_drifts_at_200_rows(pools: Pools):
    rng = np.random.default_rng(7)
    for kind, shifted in pools.shifted.items():
        windows = shifted_windows(pools.calm, shifted, 200, 5, SHIFT_SHARES[kind], rng)
        assert alarm_rate(kind, pools.reference, windows).drifted == 5, kind
    surges = surge_windows(pools.calm, 200, 5, SHIFT_SHARES[INTENT_MIX], rng)
    assert alarm_rate(INTENT_MIX, pools.reference, surges).drifted == 5


def test_the_wilson_interval_brackets_the_rate():
    low, high = wilson_interval(0, 500)
    assert low == 0.0 and 0.005 < high < 0.008
    low, high = wilson_interval(98, 100)
    assert low < 0.98 < high <= 1.0


# --- demand: realized forecast error -------------------------------------------------------------


def forecast_errors(actual: list[float | None], p50: list[float]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "period_start": [date(2024, 5, day) for day in range(1, len(actual) + 1)],
            "actual": actual,
            "p50": p50,
        },
        schema_overrides={"actual": pl.Float64, "p50": pl.Float64},
    )


def test_forecast_error_above_its_threshold_is_drift():
    drift = forecast_error_drift(forecast_errors([10, 20, 10, None], [15, 10, 10, 12]), 0.3)
    assert drift.wape == pytest.approx(15 / 40)
    assert drift.drifted
    assert drift.rows == 3  # the period whose actual has not arrived is not scored
    assert drift.window == (date(2024, 5, 1), date(2024, 5, 3))


def test_forecast_error_within_its_threshold_is_not_drift():
    drift = forecast_error_drift(forecast_errors([10, 20, 10], [11, 19, 10]), 0.3)
    assert drift.wape == pytest.approx(2 / 40)
    assert not drift.drifted


def test_no_arrived_actuals_is_no_drift():
    for errors in (forecast_errors([], []), forecast_errors([None], [3]), pl.DataFrame()):
        drift = forecast_error_drift(errors, 0.3)
        assert (drift.rows, drift.drifted, drift.window) == (0, False, None)


def test_all_zero_actuals_leave_the_error_undefined():
    with pytest.raises(ValueError, match="'actual' is 0 in all 2 scored rows"):
        forecast_error_drift(forecast_errors([0, 0], [1, 2]), 0.3)
    with pytest.raises(ValueError, match=r"\['p50'\]"):
        forecast_error_drift(pl.DataFrame({"actual": [1.0]}), 0.3)


def forecasts_with_actuals(rows: int, rng: np.random.Generator) -> pl.DataFrame:
    """Calibrated forecasts: the actual is a negative-binomial draw whose mean is p50 and whose
    10% and 90% quantiles are p10 and p90."""
    from scipy.stats import nbinom

    p50 = rng.uniform(3, 60, rows)
    size = 6.0
    chance = size / (size + p50)
    return pl.DataFrame(
        {
            "actual": rng.negative_binomial(size, chance).astype(float),
            "p10": nbinom.ppf(0.1, size, chance),
            "p50": p50,
            "p90": nbinom.ppf(0.9, size, chance),
        }
    )


def test_forecast_residuals_are_log_errors_and_where_the_actual_fell():
    forecasts = pl.DataFrame(
        {
            "actual": [0.0, 10.0, 30.0, None],
            "p10": [1.0, 5.0, 5.0, 1.0],
            "p50": [2.0, 9.0, 10.0, 2.0],
            "p90": [4.0, 15.0, 20.0, 4.0],
        }
    )
    residuals = forecast_residuals(forecasts)
    assert residuals.columns == list(FORECAST_RESIDUALS)
    assert residuals["log_error"].to_list() == pytest.approx(
        [np.log(1 / 3), np.log(11 / 10), np.log(31 / 11)]
    )
    assert residuals["interval"].to_list() == ["below P10", "within P10-P90", "above P90"]
    with pytest.raises(ValueError, match=r"\['p10', 'p90'\]"):
        forecast_residuals(forecasts.drop("p10", "p90"))


def test_fresh_calm_forecast_windows_do_not_drift_and_each_demand_shift_does():
    rng = np.random.default_rng()
    backtest = forecasts_with_actuals(4000, rng)
    calm = [residual_drift(backtest, forecasts_with_actuals(200, rng)) for _ in range(30)]
    assert sum(report.drifted for report in calm) <= 2, [r.reasons() for r in calm if r.drifted]
    for kind in DEMAND_SHIFTS:  # 500 rows: at 200 a promotion lift is missed now and then
        shifted = [
            residual_drift(backtest, shift_demand(kind, forecasts_with_actuals(500, rng), rng))
            for _ in range(5)
        ]
        assert all(report.drifted for report in shifted), kind


def test_a_level_shift_is_explained_by_the_log_error_and_a_promotion_lift_by_the_interval():
    rng = np.random.default_rng(3)
    backtest = forecasts_with_actuals(4000, rng)
    window = forecasts_with_actuals(400, rng)
    level = residual_drift(backtest, window.with_columns(pl.col("actual") * 1.5))
    assert level.drifted and "log_error" in level.drifted_columns
    assert any(reason.startswith("log_error: median 0.") for reason in level.reasons())
    promoted = residual_drift(backtest, shift_demand("promotion lift", window, rng))
    assert "interval" in promoted.drifted_columns
    with pytest.raises(ValueError, match="the realized forecasts have no row with an actual"):
        residual_drift(backtest, window.with_columns(pl.lit(None, pl.Float64).alias("actual")))


def test_a_significant_move_smaller_than_the_minimum_effect_is_not_drift():
    rng = np.random.default_rng(5)
    backtest = forecasts_with_actuals(20000, rng)
    window = forecasts_with_actuals(8000, rng).with_columns(pl.col("p50") * 0.95)
    floored = residual_drift(backtest, window).column("log_error")
    assert floored.score < 0.01, "the move is significant at this many rows"
    assert not floored.drifted
    assert floored.moved < 0.1
    assert "< the 0.1 that counts" in floored.explanation()
    unfloored = residual_drift(backtest, window, DriftThresholds(min_effect={"log_error": 0.0}))
    assert unfloored.column("log_error").drifted


def test_a_surge_of_a_few_intents_among_many_rare_ones_is_drift_and_calm_traffic_is_not():
    """With 77 intents a 200-row window expects under 3 rows of each: the chi-square pools them
    all away, so each intent's count is tested too (Bonferroni across the intents)."""
    intents = [f"intent_{i:02d}" for i in range(77)]
    rng = np.random.default_rng(3)
    reference = profile(pl.DataFrame({"predicted_intent": rng.choice(intents, 2000).tolist()}))
    calm = rng.choice(intents, 200).tolist()
    surge = rng.choice(intents, 140).tolist() + ["intent_05", "intent_17", "intent_60"] * 20
    assert not compare_profiles(
        reference, profile(pl.DataFrame({"predicted_intent": calm}))
    ).drifted
    surged = compare_profiles(reference, profile(pl.DataFrame({"predicted_intent": surge})))
    assert surged.drifted_columns == ("predicted_intent",)


def test_a_share_of_rows_far_in_a_tail_is_drift_before_the_whole_distribution_moves():
    """10% of the rows far out (an unseen topic's distance from the usual meaning) move KS's
    statistic by at most 0.10 (KS alone: p about 0.02, no drift at α 0.01); the reference's 1%
    tail then holds 11% of the window."""
    rng = np.random.default_rng(4)
    reference = profile(pl.DataFrame({"embedding_distance": rng.normal(0.5, 0.1, 2000)}))
    calm = rng.normal(0.5, 0.1, 200)
    shifted = np.concatenate([rng.normal(0.5, 0.1, 180), rng.normal(0.9, 0.02, 20)])
    for window, drifts in ((calm, False), (shifted, True)):
        report = compare_profiles(reference, profile(pl.DataFrame({"embedding_distance": window})))
        assert report.drifted is drifts, report.reasons()
