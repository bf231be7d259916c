"""Seeded daily retail demand for `make demo` and the tests: deterministic, and imperfect as real
feeds are: missing days, outliers, holidays, promotions and an intermittent item.
"""

from __future__ import annotations

from datetime import date, timedelta

import holidays
import numpy as np
import polars as pl

MISSING_RATE = 0.02
OUTLIER_RATE = 0.0005
PROMO_SEGMENT_DAYS = 28
PROMO_PROBABILITY = 0.35

# --------------------------------------------------------------------------------------------
# Demand: multiplicative structure (level × trend × week × year × holidays × price × feature)
# with negative-binomial noise, computed on a (series, day) grid in numpy.
# --------------------------------------------------------------------------------------------

WEEKLY_PROFILE = np.array([0.88, 0.85, 0.90, 0.95, 1.08, 1.32, 1.22])  # Monday .. Sunday
HOLIDAY_EFFECTS: dict[str, dict[int, float]] = {
    "Thanksgiving": {-3: 1.25, -2: 1.45, -1: 1.6, 0: 0.55, 1: 1.9, 2: 1.35},
    "Christmas": {-7: 1.2, -6: 1.25, -5: 1.3, -4: 1.4, -3: 1.5, -2: 1.6, -1: 1.75, 0: 0.2, 1: 1.3},
    "New Year": {-1: 1.35, 0: 0.6},
    "Independence Day": {-2: 1.2, -1: 1.4, 0: 1.15},
}
DEFAULT_HOLIDAY_EFFECT = {-1: 1.1, 0: 1.15}


def _holiday_multiplier(first: date, n_days: int) -> np.ndarray:
    """Per-day demand multiplier from US holidays: run-ups, closures and the Black Friday spike."""
    multiplier = np.ones(n_days)
    last = first + timedelta(days=n_days - 1)
    calendar = holidays.US(years=range(first.year, last.year + 2))
    for day, name in calendar.items():
        if "(observed)" in name:
            continue
        effect = next(
            (value for key, value in HOLIDAY_EFFECTS.items() if name.startswith(key)),
            DEFAULT_HOLIDAY_EFFECT,
        )
        anchor = (day - first).days
        for offset, factor in effect.items():
            if 0 <= anchor + offset < n_days:
                multiplier[anchor + offset] *= factor
    return multiplier


def _promotions(
    rng: np.random.Generator, n_series: int, n_days: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-day promo windows per series, at most one per 4-week segment (so never overlapping).

    Returns the (series, day) discount, deal mask and feature mask.
    """
    segments = -(-n_days // PROMO_SEGMENT_DAYS)
    active = rng.random((n_series, segments)) < PROMO_PROBABILITY
    lengths = rng.integers(3, 15, size=(n_series, segments))
    offsets = (rng.random((n_series, segments)) * (PROMO_SEGMENT_DAYS - lengths + 1)).astype(int)
    starts = np.arange(segments) * PROMO_SEGMENT_DAYS + offsets
    discounts = rng.uniform(0.10, 0.35, size=(n_series, segments))
    featured = rng.random((n_series, segments)) < 0.45
    active &= starts < n_days
    ends = np.minimum(starts + lengths, n_days)

    series, segment = np.nonzero(active)
    window_id = np.zeros((n_series, n_days + 1), dtype=np.int64)
    window_id[series, starts[series, segment]] += segment + 1
    window_id[series, ends[series, segment]] -= segment + 1
    window = np.cumsum(window_id, axis=1)[:, :n_days]
    deal = window > 0
    segment_of_day = np.maximum(window - 1, 0)
    discount = np.where(deal, np.take_along_axis(discounts, segment_of_day, axis=1), 0.0)
    feature = deal & np.take_along_axis(featured, segment_of_day, axis=1)
    return discount, deal, feature


def generate_demand(
    *, stores: int = 5, items: int = 8, start: date, end: date, seed: int = 7
) -> pl.DataFrame:
    """Daily units per store × item from `start` to `end` (inclusive), sorted by the key.

    About 2% of store-item days are missing (never a whole day), ~0.05% are 4–8× outliers, and
    when there are at least two items the last one is intermittent (mostly zero days).
    """
    if stores < 1 or items < 1:
        raise ValueError(f"stores and items must be >= 1, got stores={stores} items={items}")
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    rng = np.random.default_rng(seed)
    n_days = (end - start).days + 1
    n_series = stores * items
    store_of = np.repeat(np.arange(stores), items)
    item_of = np.tile(np.arange(items), stores)
    days = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + np.timedelta64(1, "D"))
    day_number = days.astype(np.int64)
    weekday = (day_number + 3) % 7
    day_of_year = (days - days.astype("datetime64[Y]")).astype(np.int64)
    years = np.arange(n_days) / 365.25

    store_size = rng.lognormal(0.0, 0.4, stores)
    item_popularity = rng.lognormal(np.log(12.0), 0.8, items)
    level = store_size[store_of] * item_popularity[item_of] * rng.lognormal(0.0, 0.25, n_series)
    slope = rng.normal(0.03, 0.06, stores)[store_of] + rng.normal(0.0, 0.08, items)[item_of]
    trend = np.exp(slope[:, None] * years[None, :])
    weekend_strength = rng.uniform(0.7, 1.3, stores)
    weekly = WEEKLY_PROFILE[None, :] ** weekend_strength[:, None]
    amplitude = rng.uniform(0.05, 0.30, items)
    phase = rng.uniform(0.0, 2 * np.pi, items)
    yearly = 1.0 + amplitude[:, None] * np.sin(
        2 * np.pi * day_of_year[None, :] / 365.25 + phase[:, None]
    )
    seasonal = weekly[store_of][:, weekday] * yearly[item_of]
    seasonal *= _holiday_multiplier(start, n_days)[None, :]

    discount, deal, feature = _promotions(rng, n_series, n_days)
    base_price = (
        rng.lognormal(np.log(4.0), 0.6, items)[item_of] * rng.uniform(0.95, 1.08, stores)[store_of]
    )
    quarters = np.arange(n_days) // 91
    steps = np.cumprod(rng.lognormal(0.0, 0.04, (n_series, int(quarters[-1]) + 1)), axis=1)
    reference = base_price[:, None] * np.exp(0.025 * years)[None, :]
    regular = np.maximum(np.round(reference * steps[:, quarters], 1) - 0.01, 0.29)  # x.x9 prices
    promo_price = np.floor(regular * (1.0 - discount) * 10.0) / 10.0 + 0.09
    price = np.round(np.where(deal, np.minimum(promo_price, regular - 0.05), regular), 2)
    elasticity = rng.uniform(-2.5, -1.2, items)[item_of]
    feature_lift = rng.uniform(1.2, 1.6, items)[item_of]
    mean = level[:, None] * trend * seasonal * (price / reference) ** elasticity[:, None]
    mean *= np.where(feature, feature_lift[:, None], 1.0)

    dispersion = rng.uniform(4.0, 15.0, items)[item_of][:, None]
    units = rng.negative_binomial(dispersion, dispersion / (dispersion + mean)).astype(np.float64)
    if items >= 2:
        sparse = item_of == items - 1
        relative = mean[sparse] / mean[sparse].mean(axis=1, keepdims=True)
        occurs = rng.random(relative.shape) < np.minimum(0.2 * relative, 0.9)
        sizes = 1.0 + rng.poisson(np.minimum(relative, 4.0))
        units[sparse] = np.where(occurs, sizes, 0.0)

    flat_units = units.ravel()
    outliers = rng.choice(flat_units.size, size=max(1, round(OUTLIER_RATE * flat_units.size)))
    flat_units[outliers] = np.round(
        np.maximum(flat_units[outliers], mean.ravel()[outliers]) * rng.uniform(4, 8, outliers.size)
    )

    missing = rng.random((n_series, n_days)) < MISSING_RATE
    whole_day = np.nonzero(missing.all(axis=0))[0]
    missing[rng.integers(0, n_series, whole_day.size), whole_day] = False
    keep = ~missing.ravel()

    row_series = np.repeat(np.arange(n_series), n_days)[keep]
    row_day = np.tile(np.arange(n_days), n_series)[keep]
    store_width = max(2, len(str(stores)))
    item_width = max(3, len(str(items)))
    store_names = pl.Series([f"S{k + 1:0{store_width}d}" for k in range(stores)], dtype=pl.Utf8)
    item_names = pl.Series([f"I{k + 1:0{item_width}d}" for k in range(items)], dtype=pl.Utf8)
    return pl.DataFrame(
        {
            "store": store_names.gather(store_of[row_series]),
            "item": item_names.gather(item_of[row_series]),
            "period_start": pl.Series(days[row_day], dtype=pl.Date),
            "freq": pl.repeat("D", row_day.size, dtype=pl.Utf8, eager=True),
            "units": pl.Series(flat_units[keep], dtype=pl.Float64),
            "price": pl.Series(price.ravel()[keep], dtype=pl.Float64),
            "deal": pl.Series(deal.ravel()[keep].astype(np.int8), dtype=pl.Int8),
            "feature": pl.Series(feature.ravel()[keep].astype(np.int8), dtype=pl.Int8),
        }
    )
