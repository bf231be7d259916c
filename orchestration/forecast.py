"""Forecast demand from the registered champion, for any future periods, with the planned prices
and promotions you know (a CSV with store, item, period_start and any of price, deal, feature):

    .venv/bin/python -m orchestration.forecast --store 2 --item 5 --horizon 12
    .venv/bin/python -m orchestration.forecast --plan planned_promotions.csv --horizon 4
    .venv/bin/python -m orchestration.forecast --totals          # per item, its stores summed
"""

import argparse
import sys
from pathlib import Path

import polars as pl

from ml.demand.forecaster import forecast_from_champion
from ml.demand.panel import ForecastingError
from ml.lifecycle.registry import Registry
from ml.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="with --item: one series (else every series)")
    parser.add_argument("--item")
    parser.add_argument("--horizon", type=int, help="periods ahead (default: the model's)")
    parser.add_argument("--plan", type=Path, help="CSV of planned covariates per period")
    parser.add_argument(
        "--totals", action="store_true", help="item totals over the stores forecast instead"
    )
    parser.add_argument("--output", type=Path, help="write the forecast here (CSV)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    planned = None
    if args.plan:
        planned = pl.read_csv(args.plan, schema_overrides={"store": pl.Utf8, "item": pl.Utf8})
        planned = planned.with_columns(pl.col("period_start").str.to_date())
    series = [(args.store, args.item)] if args.store and args.item else None
    try:
        answer = forecast_from_champion(
            Registry(settings.tracking_uri, settings.artifact_root), series, args.horizon, planned
        )
    except ForecastingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    forecast = answer.totals if args.totals else answer.series
    print(f"demand_forecaster champion v{answer.version}")
    with pl.Config(tbl_rows=50, tbl_cols=10, tbl_width_chars=140):
        print(forecast)
    if args.output:
        forecast.write_csv(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
