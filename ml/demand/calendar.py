"""Calendar features with real public holidays, for the demand mart."""

from __future__ import annotations

from datetime import date

import holidays
import polars as pl


def calendar_days(start: date, end: date, country: str = "US") -> pl.DataFrame:
    """One row per day in [start, end] with the features a demand model needs."""
    days = pl.date_range(start, end, interval="1d", eager=True).alias("date")
    names = holidays.country_holidays(country, years=range(start.year, end.year + 1))
    holiday = pl.Series("holiday_name", [names.get(d) for d in days.to_list()], dtype=pl.Utf8)
    return pl.DataFrame([days, holiday]).select(
        "date",
        pl.col("date").dt.weekday().cast(pl.Int8).alias("day_of_week"),
        pl.col("date").dt.week().cast(pl.Int8).alias("iso_week"),
        pl.col("date").dt.month().cast(pl.Int8).alias("month"),
        pl.col("date").dt.year().cast(pl.Int16).alias("year"),
        pl.col("date").dt.ordinal_day().cast(pl.Int16).alias("day_of_year"),
        (pl.col("date").dt.weekday() >= 6).alias("is_weekend"),
        pl.col("holiday_name").is_not_null().alias("is_holiday"),
        "holiday_name",
    )
