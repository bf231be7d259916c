"""How often the drift alarm is right: the false-alarm rate on calm windows and the detection
rate on shifted ones, each with a Wilson interval. Windows are drawn as rows of a feature pool
(every text's features computed once), so thousands of windows cost thousands of whylogs
profiles, not thousands of embedding runs. benchmarks/drift_power.py prints the table;
tests/unit/test_drift.py runs the same draws small.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from ml.monitoring.drift import DatasetProfileView, DriftThresholds, compare_profiles, profile
from ml.monitoring.request_features import REQUEST_FEATURES


def wilson_interval(hits: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a rate of `hits` in `trials`."""
    if trials == 0:
        return 0.0, 1.0
    rate = hits / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials**2))
    half /= 1 + z * z / trials
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class AlarmRate:
    """How many of `windows` drifted, with the rate's 95% interval."""

    kind: str
    """"calm", or the kind of shift."""
    rows: int
    windows: int
    drifted: int
    columns: dict[str, int]
    """How often each column drifted."""

    @property
    def rate(self) -> float:
        return self.drifted / self.windows if self.windows else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.drifted, self.windows)


def alarm_rate(
    kind: str,
    reference: DatasetProfileView,
    windows: Sequence[pl.DataFrame],
    thresholds: DriftThresholds | None = None,
    features: Sequence[str] = REQUEST_FEATURES,
) -> AlarmRate:
    """Judge each window (rows of `features`) against `reference` as the drift report does;
    how many drifted, and in which columns."""
    drifted, columns = 0, dict.fromkeys(features, 0)
    for window in windows:
        target = profile(window.select(list(features)))
        report = compare_profiles(reference, target, thresholds or DriftThresholds())
        drifted += report.drifted
        for column in report.drifted_columns:
            columns[column] += 1
    return AlarmRate(kind, windows[0].height if windows else 0, len(windows), drifted, columns)


def calm_windows(
    pool: pl.DataFrame, rows: int, count: int, rng: np.random.Generator
) -> list[pl.DataFrame]:
    """`count` windows of `rows` rows drawn without replacement from `pool` (each window on its
    own; windows may share rows, never with the reference, which is not in the pool)."""
    return [pool[rng.choice(pool.height, size=rows, replace=False).tolist()] for _ in range(count)]


def shifted_windows(
    calm: pl.DataFrame,
    shifted: pl.DataFrame,
    rows: int,
    count: int,
    share: float,
    rng: np.random.Generator,
) -> list[pl.DataFrame]:
    """Windows in which each row is, with probability `share`, taken from `shifted` (the same
    pool rows with a shift applied, row for row), else from `calm`."""
    windows = []
    for _ in range(count):
        chosen = rng.choice(calm.height, size=rows, replace=False)
        from_shifted = rng.random(rows) < share
        kept, changed = chosen[~from_shifted].tolist(), chosen[from_shifted].tolist()
        windows.append(pl.concat([calm[kept], shifted[changed]]))
    return windows


def surge_windows(
    calm: pl.DataFrame,
    rows: int,
    count: int,
    share: float,
    rng: np.random.Generator,
    by: str = "true_intent",
    surging: int = 3,
) -> list[pl.DataFrame]:
    """Windows in which `share` of the rows ask one of `surging` intents drawn anew for each
    window (a campaign, an outage), the rest calm."""
    intents = sorted(calm[by].unique().to_list())
    windows = []
    for _ in range(count):
        hot = rng.choice(intents, size=surging, replace=False).tolist()
        candidates = np.flatnonzero(calm[by].is_in(hot).to_numpy())
        surge = round(share * rows)
        picked = rng.choice(candidates, size=surge, replace=surge > len(candidates))
        rest = rng.choice(calm.height, size=rows - surge, replace=False)
        windows.append(calm[np.concatenate([rest, picked]).tolist()])
    return windows


LEVEL_SHIFT, PROMOTION_LIFT = "level shift", "promotion lift"
DEMAND_SHIFTS = {LEVEL_SHIFT: (1.0, 1.25), PROMOTION_LIFT: (0.25, 1.8)}
"""Kinds of demand shift as (share of rows, factor on their actuals): demand up 25% everywhere
(a competitor closed), or a quarter of the rows selling 1.8× (promotions the model did not plan,
or a lift it never learned). The forecasts stay as they were."""


def shift_demand(kind: str, window: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """`window` (forecast rows with an `actual`) with the `kind` of DEMAND_SHIFTS applied."""
    share, factor = DEMAND_SHIFTS[kind]
    hit = rng.random(window.height) < share
    return window.with_columns(
        pl.when(pl.Series(hit)).then(pl.col("actual") * factor).otherwise(pl.col("actual"))
    )


Featurize = Callable[[Sequence[str]], pl.DataFrame]
"""Texts → one row of REQUEST_FEATURES each (the champion's answers and the text features)."""
