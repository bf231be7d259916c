"""What a model costs and what it earns, in money, from what the platform measured.

Costs per version: training (its wall time × the hour price of the device it ran on), annotation
(the annotators' own time per answer as Label Studio measured it, × their hourly rate, charged to
the first version trained after the answers) and serving (the champion's measured throughput →
cost per 1,000 answers and the instances its volume needs, at least one always on). Benefit per
domain from the business case (`business_case.toml`, documented defaults) and the champion's own
test scores. ROI = (benefit − cost) / cost over the case's horizon, as the business brief asks.
Nothing here is typed in: every figure is a price from the case times a measurement.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path

HOURS_PER_MONTH = 730.0
"""An always-on instance's hours in an average month (8,760 / 12)."""
DAYS_PER_MONTH = 30.4
DEFAULT_BUSINESS_CASE = Path(__file__).with_name("business_case.toml")


@dataclass(frozen=True)
class Prices:
    cpu_hour: float
    """One CPU machine hour (training without a GPU)."""
    gpu_hour: float
    """One rented GPU hour (training on CUDA)."""
    annotator_hour: float
    serving_instance_hour: float
    """One serving instance hour (what the throughput is measured on)."""
    serving_utilization: float
    """The share of an instance's capacity planned for (headroom for peaks)."""
    gpu_purchase: float
    """Owning a GPU instead: its price, spread over its lifetime."""
    gpu_lifetime_months: float
    gpu_owned_hour: float
    """Power, hosting and upkeep per hour an owned GPU runs."""
    horizon_months: float
    """The period ROI and the serving cost are counted over."""


@dataclass(frozen=True)
class DefectCase:
    units_per_day: float
    defective_share: float
    """Share of inspected units that are defective."""
    manual_miss_rate: float
    """Share of all units shipped defective today, without the model (the brief: 0.4%)."""
    loss_per_missed_unit: float
    false_alarm_cost: float
    """Re-checking a functional unit the model flagged."""
    days_per_month: float


@dataclass(frozen=True)
class RequestCase:
    requests_per_month: float
    automated_share: float
    """Share of requests routed by the model alone, without a person reading them first."""
    handling_cost: float
    """A person's cost to read and route one request (saved when the model routes it right)."""
    misroute_cost: float
    """What a wrongly routed request costs (re-routing, a slower answer)."""


@dataclass(frozen=True)
class DemandCase:
    cost_per_unit_error: float
    """Stock-out or overstock cost per unit of absolute forecast error."""


@dataclass(frozen=True)
class BusinessCase:
    prices: Prices
    defects: DefectCase
    requests: RequestCase
    demand: DemandCase
    source: str


SECTIONS: dict[str, type] = {
    "prices": Prices,
    "defects": DefectCase,
    "requests": RequestCase,
    "demand": DemandCase,
}
SHARES = {"serving_utilization", "defective_share", "manual_miss_rate", "automated_share"}
POSITIVE = {"serving_utilization", "gpu_lifetime_months", "horizon_months", "days_per_month"}
"""Divisors: zero would make every figure meaningless."""


def load_business_case(path: Path = DEFAULT_BUSINESS_CASE) -> BusinessCase:
    """The business case at `path`; a missing, unknown, negative or out-of-range setting is an
    error naming the file, the section and the key (a price is never guessed)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"business case {path}: cannot be read ({error})") from error
    if unknown := sorted(set(raw) - set(SECTIONS)):
        raise ValueError(f"business case {path}: unknown section(s) {unknown}")
    parts = {}
    for section, kind in SECTIONS.items():
        values = raw.get(section)
        if not isinstance(values, dict):
            raise ValueError(f"business case {path}: section [{section}] is missing")
        names = {f.name for f in fields(kind)}
        if unknown := sorted(set(values) - names):
            raise ValueError(f"business case {path}: [{section}] has unknown key(s) {unknown}")
        if missing := sorted(names - set(values)):
            raise ValueError(f"business case {path}: [{section}] lacks {missing}")
        for key, value in values.items():
            where = f"business case {path}: [{section}] {key} = {value!r}"
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{where} is not a number")
            if value < 0:
                raise ValueError(f"{where} is negative")
            if key in SHARES and value > 1:
                raise ValueError(f"{where} is a share: it must lie in [0, 1]")
            if key in POSITIVE and value == 0:
                raise ValueError(f"{where} must be above 0")
        parts[section] = kind(**{k: float(v) for k, v in values.items()})
    return BusinessCase(**parts, source=str(path))


# --- benefit ------------------------------------------------------------------------------------


def defect_benefit_per_month(case: DefectCase, recall: float, false_positive_rate: float) -> float:
    """Losses avoided: today's misses minus the model's (defective units it does not flag),
    less the cost of re-checking the functional units it flags. Negative when it does worse."""
    units = case.units_per_day * case.days_per_month
    missed_with_model = case.defective_share * (1 - recall)
    avoided = (case.manual_miss_rate - missed_with_model) * case.loss_per_missed_unit
    false_alarms = (1 - case.defective_share) * false_positive_rate * case.false_alarm_cost
    return units * (avoided - false_alarms)


def request_benefit_per_month(case: RequestCase, accuracy: float) -> float:
    """Handling saved on the requests the model routes right, less the misroutes' cost."""
    routed = case.requests_per_month * case.automated_share
    return routed * (accuracy * case.handling_cost - (1 - accuracy) * case.misroute_cost)


def demand_benefit_per_month(
    case: DemandCase, model_wape: float, baseline_wape: float, units_per_month: float
) -> float:
    """Units of forecast error avoided against the naive baseline (WAPE × volume is the error
    in units), each at the configured stock-out / overstock cost."""
    return units_per_month * (baseline_wape - model_wape) * case.cost_per_unit_error


# --- cost ---------------------------------------------------------------------------------------


OWN_TRAINING = "own_training_seconds"
"""Run metric of a version built from other versions (an ensemble): its own share of the
training time; `training_seconds` there counts its members too, which are priced on their own."""


def priced_training_seconds(run_metrics: Mapping[str, float]) -> float | None:
    """The training seconds a version adds to what was spent (None: not recorded)."""
    return run_metrics.get(OWN_TRAINING, run_metrics.get("training_seconds"))


@dataclass(frozen=True)
class TrainedVersion:
    """What the registry recorded about one version: when and how long it trained, on what."""

    version: str
    kind: str
    started_at: datetime
    training_seconds: float
    device: str
    metric: float | None
    """The domain's test metric of this version (for the cost-effect curve)."""


@dataclass(frozen=True)
class VersionCost:
    trained: TrainedVersion
    training_cost: float
    annotation_hours: float
    annotation_cost: float

    @property
    def total(self) -> float:
        return self.training_cost + self.annotation_cost


def training_cost(trained: TrainedVersion, prices: Prices) -> float:
    hour = prices.gpu_hour if trained.device.startswith("cuda") else prices.cpu_hour
    return trained.training_seconds / 3600 * hour


def version_costs(
    versions: Sequence[TrainedVersion],
    annotations: Sequence[tuple[datetime, float]],
    prices: Prices,
) -> tuple[list[VersionCost], float]:
    """Each version's one-off cost, oldest first, and the annotator hours no version has used
    yet. An answer (created at, seconds spent) is charged to the first version trained after
    it: the labels it made are what that version paid for."""
    ordered = sorted(versions, key=lambda v: v.started_at)
    seconds = [0.0] * len(ordered)
    pending = 0.0
    for created_at, spent in annotations:
        first_after = next((i for i, v in enumerate(ordered) if v.started_at >= created_at), None)
        if first_after is None:
            pending += spent
        else:
            seconds[first_after] += spent
    costs = [
        VersionCost(
            trained,
            training_cost(trained, prices),
            spent / 3600,
            spent / 3600 * prices.annotator_hour,
        )
        for trained, spent in zip(ordered, seconds, strict=True)
    ]
    return costs, pending / 3600


BATCH_LATENCY = re.compile(r"^latency_per_batch(\d+)_ms$")


def predictions_per_second(run_metrics: Mapping[str, float]) -> float | None:
    """One instance's throughput, from the batch latency the training run measured."""
    for key, value in run_metrics.items():
        if (match := BATCH_LATENCY.match(key)) and value > 0:
            return int(match.group(1)) / (value / 1000)
    return None


@dataclass(frozen=True)
class Serving:
    predictions_per_month: float
    predictions_per_second: float | None
    """None when the model's throughput was not measured: one instance is assumed to suffice."""
    instances: int
    per_month: float
    per_1000: float | None
    """Compute cost of 1,000 answers at full use of an instance (None without a throughput)."""


def serving_cost(predictions_per_month: float, throughput: float | None, prices: Prices) -> Serving:
    """Instances the volume needs at the planned utilization (at least one, always on) and what
    they cost a month; the marginal cost per 1,000 answers from the measured throughput."""
    if throughput is None:
        return Serving(
            predictions_per_month, None, 1, prices.serving_instance_hour * HOURS_PER_MONTH, None
        )
    per_instance = throughput * 3600 * HOURS_PER_MONTH * prices.serving_utilization
    instances = max(1, math.ceil(predictions_per_month / per_instance))
    return Serving(
        predictions_per_month,
        throughput,
        instances,
        instances * prices.serving_instance_hour * HOURS_PER_MONTH,
        prices.serving_instance_hour / (throughput * 3600) * 1000,
    )


# --- return -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Return:
    benefit_per_month: float
    spent: float
    """One-off: every version's training and annotation so far (the losing ones too)."""
    serving_per_month: float
    horizon_months: float

    @property
    def cost(self) -> float:
        return self.spent + self.serving_per_month * self.horizon_months

    @property
    def benefit(self) -> float:
        return self.benefit_per_month * self.horizon_months

    @property
    def roi(self) -> float | None:
        """(benefit − cost) / cost over the horizon; None when nothing was spent."""
        return (self.benefit - self.cost) / self.cost if self.cost > 0 else None

    @property
    def payback_months(self) -> float | None:
        """Months until the net monthly benefit repays what was spent; None if it never does."""
        net = self.benefit_per_month - self.serving_per_month
        if net <= 0:
            return None
        return self.spent / net

    def payback_text(self) -> str:
        months = self.payback_months
        if months is None:
            return "never: the monthly benefit does not cover serving"
        if months < 1 / DAYS_PER_MONTH:
            return "within a day"
        if months < 1:
            return f"{months * DAYS_PER_MONTH:.0f} days"
        return f"{months:.1f} months"


@dataclass(frozen=True)
class RentOrOwn:
    gpu_hours_per_month: float
    rent_per_month: float
    own_per_month: float
    break_even_hours: float | None
    """GPU hours a month above which owning is cheaper (None: renting always is)."""

    def verdict(self) -> str:
        cheaper = "rent" if self.rent_per_month <= self.own_per_month else "own"
        if self.break_even_hours is None:
            beyond = "renting is cheaper at any use"
        else:
            beyond = f"owning pays from {self.break_even_hours:,.0f} GPU hours a month"
        return (
            f"{cheaper}: at {self.gpu_hours_per_month:,.2f} GPU hours a month renting costs "
            f"{self.rent_per_month:,.2f} and owning {self.own_per_month:,.2f}; {beyond}"
        )


def rent_or_own(gpu_hours_per_month: float, prices: Prices) -> RentOrOwn:
    """Renting GPU hours against owning a GPU (its price over its lifetime, plus upkeep per hour
    of use), at the training hours this deployment actually used."""
    fixed = prices.gpu_purchase / prices.gpu_lifetime_months
    saving_per_hour = prices.gpu_hour - prices.gpu_owned_hour
    return RentOrOwn(
        gpu_hours_per_month,
        gpu_hours_per_month * prices.gpu_hour,
        fixed + gpu_hours_per_month * prices.gpu_owned_hour,
        fixed / saving_per_hour if saving_per_hour > 0 else None,
    )


def cost_effect_curve(costs: Sequence[VersionCost]) -> list[tuple[str, float, float]]:
    """(version, cumulative cost, test metric) of each scored version, oldest first: what each
    further unit of money bought in quality."""
    curve, spent = [], 0.0
    for cost in costs:
        spent += cost.total
        if cost.trained.metric is not None:
            curve.append((cost.trained.version, spent, cost.trained.metric))
    return curve


def money(value: float) -> str:
    return f"{value:,.2f}"
