"""Money from measurements: the brief's worked example, the cost bookkeeping and the case file."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ml.lifecycle.economics import (
    DEFAULT_BUSINESS_CASE,
    OWN_TRAINING,
    Return,
    TrainedVersion,
    cost_effect_curve,
    defect_benefit_per_month,
    demand_benefit_per_month,
    load_business_case,
    predictions_per_second,
    priced_training_seconds,
    rent_or_own,
    request_benefit_per_month,
    serving_cost,
    version_costs,
)

CASE = load_business_case()
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_the_briefs_defect_example_saves_97_200_a_month() -> None:
    # 6,000 units a day; 2% defective; misses cut from 0.4% of units to 2% × (1 − 0.95) = 0.1%.
    assert defect_benefit_per_month(CASE.defects, recall=0.95, false_positive_rate=0.0) == (
        pytest.approx(97_200.0)
    )
    # False alarms cost re-checks: 6,000 × 30 × 98% × 1% × 2.0 = 3,528 less.
    assert defect_benefit_per_month(CASE.defects, 0.95, 0.01) == pytest.approx(97_200 - 3_528)
    # A model that misses more than people do loses money.
    assert defect_benefit_per_month(CASE.defects, recall=0.5, false_positive_rate=0.0) < 0


def test_request_and_demand_benefits_follow_their_measurements() -> None:
    # 50,000 × 0.8 routed; right ones save 2.0, wrong ones cost 6.0.
    assert request_benefit_per_month(CASE.requests, 0.9) == pytest.approx(
        40_000 * (0.9 * 2.0 - 0.1 * 6.0)
    )
    assert request_benefit_per_month(CASE.requests, 1.0) > request_benefit_per_month(
        CASE.requests, 0.9
    )
    # WAPE 0.40 → 0.30 on 10,000 units a month: 1,000 units of error avoided at 0.25 each.
    assert demand_benefit_per_month(CASE.demand, 0.30, 0.40, 10_000) == pytest.approx(250.0)
    assert demand_benefit_per_month(CASE.demand, 0.45, 0.40, 10_000) < 0


def trained(version: str, minutes: float, metric: float, device: str = "cpu") -> TrainedVersion:
    started = T0 + timedelta(hours=int(version))
    return TrainedVersion(version, "kind", started, minutes * 60, device, metric)


def test_annotation_is_charged_to_the_first_version_trained_after_it() -> None:
    versions = [trained("1", 30, 0.7), trained("3", 60, 0.8, "cuda:0"), trained("2", 6, 0.75)]
    answers = [
        (T0 + timedelta(minutes=10), 1800.0),  # before v1 (hour 1)
        (T0 + timedelta(hours=2, minutes=30), 3600.0),  # after v2 (hour 2), before v3
        (T0 + timedelta(hours=5), 900.0),  # after every version: not used yet
    ]
    costs, pending_hours = version_costs(versions, answers, CASE.prices)
    assert [c.trained.version for c in costs] == ["1", "2", "3"]
    assert [c.annotation_hours for c in costs] == [0.5, 0.0, 1.0]
    assert pending_hours == 0.25
    assert costs[0].training_cost == pytest.approx(0.5 * CASE.prices.cpu_hour)
    assert costs[2].training_cost == pytest.approx(1.0 * CASE.prices.gpu_hour)
    assert costs[2].annotation_cost == pytest.approx(CASE.prices.annotator_hour)
    curve = cost_effect_curve(costs)
    assert [v for v, _, _ in curve] == ["1", "2", "3"]
    assert curve[-1][1] == pytest.approx(sum(c.total for c in costs))
    assert [m for _, _, m in curve] == [0.7, 0.75, 0.8]


def test_an_ensemble_adds_only_its_own_time_its_members_being_versions_of_their_own() -> None:
    assert priced_training_seconds({"training_seconds": 600.0, OWN_TRAINING: 4.0}) == 4.0
    assert priced_training_seconds({"training_seconds": 600.0}) == 600.0
    assert priced_training_seconds({"latency_per_sample_ms": 3.0}) is None


def test_serving_cost_comes_from_the_measured_throughput() -> None:
    assert predictions_per_second(
        {"latency_per_sample_ms": 5.0, "latency_per_batch32_ms": 80.0}
    ) == (pytest.approx(400.0))
    assert predictions_per_second({"training_seconds": 3.0}) is None
    small = serving_cost(50_000, 400.0, CASE.prices)
    assert small.instances == 1  # one always-on instance, however little traffic
    assert small.per_month == pytest.approx(0.10 * 730)
    assert small.per_1000 == pytest.approx(0.10 / (400 * 3600) * 1000)
    # One instance answers 400 × 3,600 × 730 × 50% = 525.6 million a month as planned.
    assert serving_cost(2e9, 400.0, CASE.prices).instances == 4
    unmeasured = serving_cost(1_000, None, CASE.prices)
    assert (unmeasured.instances, unmeasured.per_1000) == (1, None)


def test_roi_and_payback() -> None:
    made = Return(
        benefit_per_month=1_000.0, spent=500.0, serving_per_month=100.0, horizon_months=12
    )
    assert made.cost == 500 + 1_200
    assert made.roi == pytest.approx((12_000 - 1_700) / 1_700)
    assert made.payback_months == pytest.approx(500 / 900)
    assert made.payback_text() == "17 days"
    lost = Return(benefit_per_month=50.0, spent=500.0, serving_per_month=100.0, horizon_months=12)
    assert lost.roi < 0 and lost.payback_months is None
    assert lost.payback_text().startswith("never")


def test_renting_wins_at_low_use_and_owning_past_the_break_even() -> None:
    prices = CASE.prices
    low = rent_or_own(2.0, prices)
    assert low.verdict().startswith("rent")
    break_even = low.break_even_hours
    assert break_even == pytest.approx(
        prices.gpu_purchase / prices.gpu_lifetime_months / (prices.gpu_hour - prices.gpu_owned_hour)
    )
    assert rent_or_own(break_even + 50, prices).verdict().startswith("own")
    assert rent_or_own(10, replace(prices, gpu_owned_hour=prices.gpu_hour)).break_even_hours is None


def test_the_default_case_is_the_documented_file() -> None:
    assert CASE.source == str(DEFAULT_BUSINESS_CASE)
    assert CASE.prices.horizon_months == 12


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("cpu_hour = 0.40", "cpu_hour = -1"), "[prices] cpu_hour = -1 is negative"),
        (("automated_share = 0.8", "automated_share = 80"), "is a share"),
        (("handling_cost = 2.0", "handling_cost = 2.0\nhandling_costs = 3"), "unknown key"),
        (("misroute_cost = 6.0", ""), "[requests] lacks ['misroute_cost']"),
        (("horizon_months = 12", "horizon_months = 0"), "must be above 0"),
        (("cpu_hour = 0.40", 'cpu_hour = "cheap"'), "is not a number"),
        (("[demand]", "[demnd]"), "unknown section"),
    ],
)
def test_a_wrong_business_case_names_what_is_wrong(
    tmp_path: Path, change: tuple[str, str], complaint: str
) -> None:
    text = DEFAULT_BUSINESS_CASE.read_text(encoding="utf-8")
    assert change[0] in text
    path = tmp_path / "case.toml"
    path.write_text(text.replace(change[0], change[1], 1), encoding="utf-8")
    with pytest.raises(ValueError, match="business case") as raised:
        load_business_case(path)
    assert complaint in str(raised.value)
