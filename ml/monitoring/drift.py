"""Drift of served traffic against what the champion was trained on: whylogs profiles of the
request features (ml/monitoring/request_features.py), and whylogs' drift algorithms (KS,
chi-square, Hellinger) comparing two profiles against per-column thresholds.

This is the one module that imports whylogs: the rest of the project takes whylogs things from
here. Demand drift (realized forecast error) is ml/monitoring/forecast_error.py.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

import matplotlib

matplotlib.use("Agg")
import numpy as np
import polars as pl
from scipy.stats import binomtest, chi2_contingency

from ml.settings import set_environment_defaults

# whylogs 1.6.4 (its last release) checks string types against `np.unicode_`, which numpy 2
# removed; restore the alias before whylogs is imported. whylogs also posts usage statistics
# unless this variable is set; ml/ makes no network calls.
if not hasattr(np, "unicode_"):
    np.unicode_ = np.str_
set_environment_defaults(WHYLOGS_NO_ANALYTICS="True")

import whylogs as why  # noqa: E402
from whylogs.core.view.column_profile_view import ColumnProfileView  # noqa: E402
from whylogs.core.view.dataset_profile_view import DatasetProfileView  # noqa: E402
from whylogs.viz.drift.column_drift_algorithms import (  # noqa: E402
    KS,
    ChiSquare,
    ColumnDriftAlgorithm,
    DriftAlgorithmScore,
    Hellinger,
    calculate_drift_scores,
)
from whylogs.viz.drift.configs import (  # noqa: E402
    ChiSquareConfig,
    HellingerConfig,
    KSTestConfig,
)
from whylogs.viz.drift.configs import DriftThresholds as WhylogsThresholds  # noqa: E402
from whylogs.viz.utils.frequent_items_calculations import (  # noqa: E402
    FrequentStats,
    get_frequent_stats,
)

DriftAlgorithm = Literal["ks", "chi-square", "hellinger"]
"""whylogs' own names for its drift algorithms."""
DRIFT_CATEGORY, NO_DRIFT_CATEGORY = "DRIFT", "NO_DRIFT"
"""whylogs' categories of a drifted column and of one that is not."""
TAIL_SHARE = 0.01
"""The tails of a numeric column's reference (below its 1st, above its 99th percentile) whose
share of a window is tested beside KS: a shift that moves a share of the rows far out (an
unseen topic's out-of-vocabulary rate, its distance from the usual meaning) fills a tail long
before it moves the whole distribution enough for KS."""
MIN_EXPECTED_COUNT = 5
"""Categories the reference expects fewer target rows of are pooled before chi-square."""
RARE_CATEGORIES = "(rare)"


# --- whylogs profiles --------------------------------------------------------------------------


def profile(frame: pl.DataFrame) -> DatasetProfileView:
    """A whylogs profile of `frame`. Arrow-backed pandas columns keep integers with nulls integral
    (frequent items, ints) and strings as strings, as pandas 3 would hand them to whylogs."""
    return why.log(pandas=frame.to_pandas(use_pyarrow_extension_array=True)).view()


def profile_rows(view: DatasetProfileView) -> int:
    """How many rows a profile counted."""
    counts = [c.get_metric("counts") for c in view.get_columns().values()]
    return max((int(c.n.value) for c in counts if c is not None), default=0)


def serialize_profile(view: DatasetProfileView) -> bytes:
    return view.serialize()


def deserialize_profile(data: bytes) -> DatasetProfileView:
    return DatasetProfileView.deserialize(data)


# --- drift between two profiles ----------------------------------------------------------------


Correction = Literal["holm", "bonferroni", "none"]
"""How the p-values of the columns tested at once are corrected so that `alpha` bounds the
chance that calm traffic drifts in any of them (Holm: as strict as Bonferroni for the smallest
p-value, less for the next; both hold whatever the columns' dependence)."""


@dataclass(frozen=True)
class DriftThresholds:
    """Which whylogs algorithm compares each column, and when a window drifts.

    KS and chi-square give p-values, each combined with a test that sees what they dilute (KS
    with the share of rows in the reference's tails, chi-square with each category's count;
    the smaller p-value, Bonferroni-corrected for the two); the window drifts when a column's
    p-value, corrected for the number of columns tested (Holm), is below `alpha`: calm traffic
    drifts in at most `alpha` of windows, whatever column it is (benchmarks/drift_power.py
    measures it). Hellinger
    has no p-value: a column it scores drifts at `hellinger_distance` or more, uncorrected.
    KS and the pooled chi-square are two-sample tests, so the reference's own noise is counted;
    each answer must be one draw, though: repeated texts in a window make any test too eager.
    """

    alpha: float = 0.01
    correction: Correction = "holm"
    hellinger_distance: float = 0.4
    numeric_algorithm: DriftAlgorithm = "ks"
    categorical_algorithm: DriftAlgorithm = "chi-square"
    column_algorithms: Mapping[str, DriftAlgorithm] = field(default_factory=dict)
    """Per-column choices over the two defaults, e.g. {"confidence": "hellinger"}."""
    min_effect: Mapping[str, float] = field(default_factory=dict)
    """Per column, the smallest move worth an alarm: of the median (numbers) or of the share of
    the category that moved most (categories). A significant move below it is not drift: with
    many rows a test finds differences nobody would act on."""

    def __post_init__(self) -> None:
        for name in ("alpha", "hellinger_distance"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(
                    f"{name} must lie strictly between 0 and 1, got {getattr(self, name)}"
                )
        for column, effect in self.min_effect.items():
            if effect < 0:
                raise ValueError(f"min_effect[{column!r}] must be >= 0, got {effect}")
        if self.correction not in get_args(Correction):
            raise ValueError(
                f"correction is {self.correction!r}; expected one of {get_args(Correction)}"
            )
        chosen = {
            "numeric_algorithm": self.numeric_algorithm,
            "categorical_algorithm": self.categorical_algorithm,
            **{f"column_algorithms[{c!r}]": a for c, a in self.column_algorithms.items()},
        }
        for where, algorithm in chosen.items():
            if algorithm not in get_args(DriftAlgorithm):
                raise ValueError(
                    f"{where} is {algorithm!r}; expected one of {get_args(DriftAlgorithm)}"
                )

    def algorithm(self, column: str, numeric: bool) -> DriftAlgorithm:
        default = self.numeric_algorithm if numeric else self.categorical_algorithm
        return self.column_algorithms.get(column, default)

    def threshold(self, algorithm: DriftAlgorithm) -> float:
        """What a column's score is compared with: `alpha` for a (corrected) p-value."""
        return self.hellinger_distance if algorithm == "hellinger" else self.alpha


def adjust_p_values(p_values: Sequence[float], correction: Correction) -> list[float]:
    """The p-values corrected for testing them all at once (same order): Holm's step-down,
    Bonferroni's m × p, or as they are."""
    m = len(p_values)
    if correction == "none":
        return [float(p) for p in p_values]
    if correction == "bonferroni":
        return [min(1.0, m * float(p)) for p in p_values]
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda k: p_values[k])):
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class ColumnDrift:
    """One column's whylogs drift score and verdict."""

    column: str
    algorithm: DriftAlgorithm
    statistic: float
    """KS: largest CDF gap; chi-square: the statistic; Hellinger: the distance, in [0, 1]."""
    p_value: float | None
    """KS and chi-square only: the column's own p-value."""
    threshold: float
    drifted: bool
    category: str
    """DRIFT or NO_DRIFT (whylogs' names), after the correction across columns."""
    adjusted_p_value: float | None = None
    """The p-value corrected for the columns tested with it: what `threshold` applies to."""
    reference_value: str = ""
    target_value: str = ""
    """What moved, in words: the median (numbers) or the category whose share moved most."""
    moved: float | None = None
    """How far: the medians' difference, or the change of that category's share."""
    min_effect: float = 0.0
    """The smallest move that counts as drift (DriftThresholds.min_effect)."""

    @property
    def score(self) -> float:
        """What the threshold applies to: the corrected p-value, or Hellinger's distance."""
        if self.p_value is None:
            return self.statistic
        return self.p_value if self.adjusted_p_value is None else self.adjusted_p_value

    @property
    def severity(self) -> float:
        """The score relative to its threshold, larger is worse: 1 at the threshold, above 1 drift
        (p-values compare on a log scale, so 1e-6 against 0.01 is 3)."""
        if self.p_value is None:
            return self.statistic / self.threshold
        if self.score <= 0.0:
            return math.inf
        return math.log(self.score) / math.log(self.threshold)

    def explanation(self) -> str:
        """Why this column drifted (or not), in one line a person reads."""
        moved = (
            f"{self.target_value} in this window vs {self.reference_value} in the reference; "
            if self.target_value
            else ""
        )
        if self.p_value is None:
            test = (
                f"Hellinger distance {self.statistic:.3f} "
                f"{'≥' if self.statistic >= self.threshold else '<'} {self.threshold:g}"
            )
        else:
            test = (
                f"{self.algorithm} p = {self.p_value:.2g}, corrected for the columns tested "
                f"{self.score:.2g} {'<' if self.score < self.threshold else '≥'} α "
                f"{self.threshold:g}"
            )
        if self.min_effect and self.moved is not None:
            test += (
                f"; moved {self.moved:.3g} {'≥' if self.moved >= self.min_effect else '<'} "
                f"the {self.min_effect:g} that counts"
            )
        return f"{self.column}: {moved}{test}"


@dataclass(frozen=True)
class DriftReport:
    columns: tuple[ColumnDrift, ...]
    alpha: float = DriftThresholds.alpha
    correction: str = DriftThresholds.correction

    @property
    def drifted(self) -> bool:
        return any(column.drifted for column in self.columns)

    @property
    def drifted_columns(self) -> tuple[str, ...]:
        return tuple(column.column for column in self.columns if column.drifted)

    def column(self, name: str) -> ColumnDrift:
        for column in self.columns:
            if column.column == name:
                return column
        raise KeyError(
            f"no column {name!r} in this drift report: {[c.column for c in self.columns]}"
        )

    def reasons(self) -> list[str]:
        """Each drifted column, worst first, in words (empty: no drift)."""
        drifted = sorted((c for c in self.columns if c.drifted), key=lambda c: -c.severity)
        return [column.explanation() for column in drifted]

    def as_frame(self) -> pl.DataFrame:
        """One row per column, drifted first: what `assets.metadata.markdown_table` shows."""
        return pl.DataFrame(
            [asdict(column) for column in self.columns],
            schema={
                "column": pl.Utf8,
                "algorithm": pl.Utf8,
                "statistic": pl.Float64,
                "p_value": pl.Float64,
                "threshold": pl.Float64,
                "drifted": pl.Boolean,
                "category": pl.Utf8,
                "adjusted_p_value": pl.Float64,
                "reference_value": pl.Utf8,
                "target_value": pl.Utf8,
                "moved": pl.Float64,
                "min_effect": pl.Float64,
            },
        ).sort("drifted", "column", descending=[True, False])

    def to_json(self) -> str:
        return json.dumps(
            {
                "alpha": self.alpha,
                "correction": self.correction,
                "columns": [asdict(column) for column in self.columns],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> DriftReport:
        data = json.loads(text)
        if isinstance(data, list):  # written before the correction across columns
            return cls(tuple(ColumnDrift(**column) for column in data))
        columns = tuple(ColumnDrift(**column) for column in data["columns"])
        return cls(columns, data["alpha"], data["correction"])


def _frequent_stats(
    target: ColumnProfileView, reference: ColumnProfileView
) -> tuple[FrequentStats, FrequentStats] | None:
    """whylogs' frequent items and counts of both columns; None where either has no rows."""
    stats = get_frequent_stats(target, config=None), get_frequent_stats(reference, config=None)
    if any(side is None or side["total_count"] <= 0 for side in stats):
        return None
    return stats


def _frequencies(stats: FrequentStats) -> dict[str, float]:
    return {item["value"]: float(item["estimate"]) for item in stats["frequent_items"]}


def _pool_rare_categories(
    target: FrequentStats, reference: FrequentStats
) -> tuple[FrequentStats, FrequentStats]:
    """Both sides with the categories the reference expects fewer than `MIN_EXPECTED_COUNT`
    target rows of pooled into one (smallest first, until the pool expects that many too).

    whylogs' chi-square truncates each expected count to an integer and scores an observed
    category expected 0 times as infinite: with 77 intents, a rare intent seen once in a few
    hundred requests would otherwise be "drift" in unshifted traffic.
    """
    observed, seen = _frequencies(target), _frequencies(reference)
    scale = target["total_count"] / reference["total_count"]
    expected = {name: seen.get(name, 0.0) * scale for name in {*observed, *seen}}
    pooled: set[str] = set()
    pooled_expected = 0.0
    for name in sorted(expected, key=lambda n: (expected[n], n)):
        if expected[name] >= MIN_EXPECTED_COUNT and (
            not pooled or pooled_expected >= MIN_EXPECTED_COUNT
        ):
            break
        pooled.add(name)
        pooled_expected += expected[name]

    def pool(frequencies: dict[str, float], stats: FrequentStats, unique: int) -> FrequentStats:
        kept = [{"value": n, "estimate": e} for n, e in frequencies.items() if n not in pooled]
        rare = sum(e for n, e in frequencies.items() if n in pooled)
        if pooled:
            kept.append({"value": RARE_CATEGORIES, "estimate": rare})
        return {"frequent_items": kept, "total_count": stats["total_count"], "unique_count": unique}

    categories = len(expected) - len(pooled) + (1 if pooled else 0)
    return pool(observed, target, categories), pool(seen, reference, reference["unique_count"])


def count_p_value(
    target: float, reference: float, target_rows: float, reference_rows: float
) -> float:
    """Two-sided p-value that a count of rows (of a category, or beyond a tail) is as common in
    the window as in the reference: given both counts' sum, the window's is binomial with the
    window's share of all rows (exact for two Poisson counts, valid at any size)."""
    trials = round(target) + round(reference)
    if trials == 0:
        return 1.0
    share = target_rows / (target_rows + reference_rows)
    return float(binomtest(round(target), trials, share).pvalue)


def combined_p_value(*p_values: float) -> float:
    """The smallest of several tests' p-values, Bonferroni-corrected for taking the smallest."""
    return min(1.0, len(p_values) * min(p_values))


def tail_p_value(target: ColumnProfileView, reference: ColumnProfileView) -> float:
    """Whether a window has more (or fewer) rows in the reference's tails than the reference:
    the rows below its TAIL_SHARE and above its 1 - TAIL_SHARE quantile, each tail tested by
    `count_p_value`, the two combined."""
    seen = reference.get_metric("distribution").kll.value
    now = target.get_metric("distribution").kll.value
    m, n = seen.get_n(), now.get_n()
    if not m or not n:
        return 1.0
    low, high = seen.get_quantiles([TAIL_SHARE, 1.0 - TAIL_SHARE])
    below = [kll.get_cdf([low])[0] for kll in (now, seen)]
    above = [1.0 - kll.get_cdf([high])[0] for kll in (now, seen)]
    return combined_p_value(
        count_p_value(below[0] * n, below[1] * m, n, m),
        count_p_value(above[0] * n, above[1] * m, n, m),
    )


def _p_value_score(
    algorithm: ColumnDriftAlgorithm, statistic: float, p_value: float, with_thresholds: bool
) -> DriftAlgorithmScore:
    """A p-value test's score as whylogs reports it (its category only when asked)."""
    return DriftAlgorithmScore(
        algorithm=algorithm.name,
        pvalue=p_value,
        statistic=statistic,
        thresholds=algorithm._parameter_config.thresholds,
        drift_category=(
            algorithm._get_drift_category(measure=p_value) if with_thresholds else None
        ),
    )


class TailedKS(KS):
    """whylogs' KS, and beside it a test of the reference's tails (`tail_p_value`): the
    column's p-value is the smaller of the two, Bonferroni-corrected (so calm traffic still
    drifts in at most α of windows)."""

    def calculate(
        self,
        target_column_view: ColumnProfileView,
        reference_column_view: ColumnProfileView,
        with_thresholds: bool = False,
    ) -> DriftAlgorithmScore | None:
        score = super().calculate(target_column_view, reference_column_view, with_thresholds)
        if score is None:
            return None
        p_value = combined_p_value(
            float(score.pvalue), tail_p_value(target_column_view, reference_column_view)
        )
        return _p_value_score(self, float(score.statistic), p_value, with_thresholds)


def category_p_value(observed: dict[str, float], seen: dict[str, float]) -> float:
    """Whether any one category's count moved (a surge of a few intents among 77, which the
    chi-square over all of them dilutes): each category by `count_p_value`, Bonferroni over
    the categories."""
    target_rows, reference_rows = sum(observed.values()), sum(seen.values())
    categories = [c for c in {*observed, *seen} if observed.get(c, 0.0) + seen.get(c, 0.0) > 0]
    if not categories or not target_rows or not reference_rows:
        return 1.0
    smallest = min(
        count_p_value(observed.get(c, 0.0), seen.get(c, 0.0), target_rows, reference_rows)
        for c in categories
    )
    return min(1.0, len(categories) * smallest)


class PooledChiSquare(ChiSquare):
    """Chi-square test of homogeneity over the two profiles' frequent-item counts (a 2 × k
    table, rare categories pooled first), scored and categorized as whylogs' ChiSquare.

    whylogs' own ChiSquare is a one-sample test: it takes the reference proportions as exact
    and truncates each expected count to an integer, so with a reference of a few hundred
    requests over 77 intents calm traffic scored p < 1e-5 (measured on the demo). The reference
    is a sample too; the homogeneity test counts both samples' noise. Beside it, each
    category's own count (`category_p_value`): pooling leaves a 200-row window over 77 intents
    nothing to test, and a surge of three intents is exactly what it pools away.
    """

    def calculate(
        self,
        target_column_view: ColumnProfileView,
        reference_column_view: ColumnProfileView,
        with_thresholds: bool = False,
    ) -> DriftAlgorithmScore | None:
        stats = _frequent_stats(target_column_view, reference_column_view)
        if stats is None:
            return None
        observed, seen = (_frequencies(side) for side in _pool_rare_categories(*stats))
        categories = sorted({*observed, *seen})
        table = np.array(
            [[observed.get(c, 0.0) for c in categories], [seen.get(c, 0.0) for c in categories]]
        )
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            statistic, p_value = 0.0, 1.0
        else:
            statistic, p_value, _, _ = chi2_contingency(table, correction=False)
        p_value = combined_p_value(
            float(p_value), category_p_value(*(_frequencies(side) for side in stats))
        )
        return _p_value_score(self, float(statistic), p_value, with_thresholds)


class CategoricalHellinger(Hellinger):
    """whylogs' Hellinger distance; over frequent items where a column has no numeric
    distribution (whylogs' own Hellinger needs one, so it skips string columns)."""

    def calculate(
        self,
        target_column_view: ColumnProfileView,
        reference_column_view: ColumnProfileView,
        with_thresholds: bool = False,
    ) -> DriftAlgorithmScore | None:
        if _is_numeric(target_column_view) and _is_numeric(reference_column_view):
            return super().calculate(target_column_view, reference_column_view, with_thresholds)
        stats = _frequent_stats(target_column_view, reference_column_view)
        if stats is None:
            return None
        observed, seen = (_frequencies(side) for side in stats)
        categories = sorted({*observed, *seen})
        target_total, reference_total = sum(observed.values()), sum(seen.values())
        if target_total == 0 or reference_total == 0:
            return None
        distance = self._calculate_hellinger_score(
            target_pmf=[observed.get(c, 0.0) / target_total for c in categories],
            reference_pmf=[seen.get(c, 0.0) / reference_total for c in categories],
        )
        distance = min(float(distance), 1.0)  # disjoint categories: 1 up to rounding
        return DriftAlgorithmScore(
            algorithm=self.name,
            statistic=distance,
            thresholds=self._parameter_config.thresholds,
            drift_category=self._get_drift_category(distance) if with_thresholds else None,
        )


def _is_numeric(view: ColumnProfileView) -> bool:
    distribution = view.get_metric("distribution")
    return distribution is not None and not distribution.kll.value.is_empty()


def _whylogs_algorithm(algorithm: DriftAlgorithm, threshold: float) -> ColumnDriftAlgorithm:
    """whylogs' algorithm with two categories: DRIFT beyond `threshold`, NO_DRIFT otherwise."""
    if algorithm == "hellinger":
        bands = WhylogsThresholds(NO_DRIFT=(0.0, threshold), DRIFT=(threshold, 1.0))
        return CategoricalHellinger(HellingerConfig(thresholds=bands))
    bands = WhylogsThresholds(NO_DRIFT=(threshold, 1.0), DRIFT=(0.0, threshold))
    if algorithm == "ks":
        return TailedKS(KSTestConfig(thresholds=bands))
    return PooledChiSquare(ChiSquareConfig(thresholds=bands))


def compare_profiles(
    reference: DatasetProfileView,
    target: DatasetProfileView,
    thresholds: DriftThresholds = DriftThresholds(),
    columns: Sequence[str] | None = None,
) -> DriftReport:
    """Per-column drift of `target` from `reference` by whylogs' drift algorithms.

    `columns` defaults to every column of either profile, by name. A column missing from one
    profile, or one its algorithm cannot score (KS on strings, an empty column), is an error.
    """
    reference_columns, target_columns = reference.get_columns(), target.get_columns()
    names = list(columns) if columns is not None else sorted({*reference_columns, *target_columns})
    for name in names:
        for side, present in (("reference", reference_columns), ("target", target_columns)):
            if name not in present:
                raise ValueError(
                    f"column {name!r} is not in the {side} profile; it has {sorted(present)}"
                )
    chosen: dict[str, tuple[DriftAlgorithm, float]] = {}
    for name in names:
        algorithm = thresholds.algorithm(name, numeric=_is_numeric(reference_columns[name]))
        chosen[name] = (algorithm, thresholds.threshold(algorithm))
    scores = calculate_drift_scores(
        target_view=target,
        reference_view=reference,
        drift_map={name: _whylogs_algorithm(*chosen[name]) for name in names},
        with_thresholds=True,
    )
    for name in names:
        if scores.get(name) is None:
            algorithm = chosen[name][0]
            raise ValueError(
                f"column {name!r}: whylogs' {algorithm} could not score it (needs "
                f"{'a numeric distribution' if algorithm == 'ks' else 'values'} in both profiles)"
            )
    tested = [name for name in names if scores[name]["pvalue"] is not None]
    adjusted = dict(
        zip(
            tested,
            adjust_p_values([float(scores[n]["pvalue"]) for n in tested], thresholds.correction),
            strict=True,
        )
    )
    report = []
    for name in names:
        algorithm, threshold = chosen[name]
        score = scores[name]
        if name in adjusted:
            drifted = adjusted[name] < threshold
        else:
            drifted = score["drift_category"] == DRIFT_CATEGORY
        was, now, moved = _typical_values(reference_columns[name], target_columns[name])
        floor = thresholds.min_effect.get(name, 0.0)
        drifted = drifted and (moved is None or moved >= floor)
        report.append(
            ColumnDrift(
                column=name,
                algorithm=algorithm,
                statistic=float(score["statistic"]),
                p_value=None if name not in adjusted else float(score["pvalue"]),
                threshold=threshold,
                drifted=drifted,
                category=DRIFT_CATEGORY if drifted else NO_DRIFT_CATEGORY,
                adjusted_p_value=adjusted.get(name),
                reference_value=was,
                target_value=now,
                moved=moved,
                min_effect=floor,
            )
        )
    return DriftReport(tuple(report), thresholds.alpha, thresholds.correction)


def _typical_values(
    reference: ColumnProfileView, target: ColumnProfileView
) -> tuple[str, str, float | None]:
    """What a person compares, and how far it moved: a numeric column's median and 90th
    percentile on each side (moved: the medians' difference); for a categorical one, the
    category whose share moved most, with its share on each side."""
    if _is_numeric(reference) and _is_numeric(target):
        distributions = [view.get_metric("distribution") for view in (reference, target)]
        was, now = (d.median for d in distributions)
        # The 90th percentile too: a shift of a share of the rows moves the tail first.
        words = tuple(
            f"median {d.median:.4g}, p90 {d.q_90:.4g}" if d.median is not None else "–"
            for d in distributions
        )
        return *words, None if was is None or now is None else abs(now - was)
    stats = _frequent_stats(target, reference)
    if stats is None:
        return "", "", None
    observed, seen = (_frequencies(side) for side in stats)
    target_total, reference_total = sum(observed.values()), sum(seen.values())
    if not target_total or not reference_total:
        return "", "", None
    share = {
        c: (seen.get(c, 0.0) / reference_total, observed.get(c, 0.0) / target_total)
        for c in {*observed, *seen}
    }
    moved = max(sorted(share), key=lambda c: abs(share[c][1] - share[c][0]))
    was, now = share[moved]
    return f"{moved} {was:.0%}", f"{moved} {now:.0%}", abs(now - was)


def judged_sample(served: pl.DataFrame, at_most: int, window_key: str) -> tuple[pl.DataFrame, bool]:
    """The answers a window is judged on: all of them, or a sample seeded by the window (the
    same window, the same sample) when the reference is too small for all."""
    if served.height <= at_most:
        return served, False
    seed = int(hashlib.sha256(window_key.encode()).hexdigest()[:8], 16)
    return served.sample(at_most, seed=seed), True
