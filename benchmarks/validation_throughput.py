"""Validation throughput on 1M generated demand rows, measured side by side in one run.

Three ways over the same rows, each from the same text frame (the source mapped onto the
contract's columns, every value still text, as the platform reads files):
  scan      a plain polars scan of the rows (the floor: read, nothing checked)
  polars    the contract's checks written by hand as plain polars expressions
  platform  the platform's validation: parse, pandera on polars, duplicates, quarantine reasons
Prints rows/s for each and the ratios platform/polars (target ≥ 0.5) and platform/scan.
"""

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from ml.data.contracts import DEMAND_CONTRACT
from ml.data.sources import DemandSource, map_demand_rows
from ml.data.validation import validate_against_contract
from ml.synthetic.demand import generate_demand

BAD_ROW_EVERY = 1000
"""One row in a thousand is broken (negative units, unreadable price, or a repeated row)."""


def raw_rows(rows: int) -> pl.DataFrame:
    """Generated demand as the platform reads it: every column text, with line numbers."""
    stores, items = 100, 20
    days = rows // (stores * items) + 12  # the generator leaves ~2% of store-item-days missing
    start = date(2024, 1, 1)
    frame = generate_demand(stores=stores, items=items, start=start, end=start + timedelta(days))
    frame = frame.head(rows).select(pl.all().cast(pl.Utf8))
    index = pl.int_range(pl.len())
    broken = frame.with_columns(
        pl.when(index % (3 * BAD_ROW_EVERY) == 0)
        .then(pl.lit("-1"))
        .otherwise("units")
        .alias("units"),
        pl.when(index % (3 * BAD_ROW_EVERY) == BAD_ROW_EVERY)
        .then(pl.lit("n/a"))
        .otherwise("price")
        .alias("price"),
    )
    repeats = broken.gather_every(3 * BAD_ROW_EVERY, offset=2 * BAD_ROW_EVERY)
    raw = pl.concat([broken.head(rows - repeats.height), repeats])
    return raw.with_columns(
        pl.int_range(2, raw.height + 2, dtype=pl.Int64).alias("_row"),
        pl.lit("demand.csv").alias("_file"),
        pl.col("period_start").str.to_date().alias("_period_start"),
    )


def plain_polars_checks(raw: pl.DataFrame) -> tuple[int, int]:
    """The same contract as hand-written polars: parse, check, drop repeated keys."""
    number = pl.col("units").str.strip_chars().cast(pl.Float64, strict=False)
    price = pl.col("price").str.strip_chars().cast(pl.Float64, strict=False)
    typed = raw.with_columns(
        pl.col("period_start").str.strip_chars().str.to_date("%Y-%m-%d", strict=False),
        number.alias("units"),
        price.alias("price_value"),
        pl.col("deal").str.strip_chars().cast(pl.Float64, strict=False),
        pl.col("feature").str.strip_chars().cast(pl.Float64, strict=False),
    )
    ok = (
        pl.col("store").str.len_chars().is_between(1, 64)
        & pl.col("item").str.len_chars().is_between(1, 64)
        & pl.col("period_start").is_not_null()
        & pl.col("freq").is_in(["D", "W"])
        & pl.col("units").is_between(0, 1e9)
        & (pl.col("price").is_null() | (pl.col("price_value") > 0))
        & pl.col("deal").is_between(0, 1)
        & pl.col("feature").is_between(0, 1)
    )
    checked = typed.with_columns(ok.fill_null(False).alias("ok"))
    first = pl.struct("store", "item", "period_start").is_first_distinct()
    valid = checked.filter(pl.col("ok")).filter(first)
    return valid.height, raw.height - valid.height


def platform_validation(mapped: pl.DataFrame) -> tuple[int, int]:
    outcome = validate_against_contract(mapped, DEMAND_CONTRACT, carry=("extra_covariates",))
    assert outcome.reconciles
    return outcome.valid.height, outcome.quarantine.height


def timed_side_by_side(
    ways: dict[str, Callable[[], object]], rounds: int
) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds per way, the ways interleaved round by round so that the machine's drift
    falls on all of them alike."""
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    outcomes: dict[str, object] = {}
    for _ in range(rounds):
        for name, fn in ways.items():
            started = time.perf_counter()
            outcomes[name] = fn()
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in seconds.items()}, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    print(f"generating {args.rows:,} demand rows …", flush=True)
    raw = raw_rows(args.rows)
    source = DemandSource("bench", "demand.csv", "contract", "D", date(2024, 1, 1))
    mapped = map_demand_rows(raw, source)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "demand.parquet"
        mapped.drop("raw_record").write_parquet(path)
        ways = {
            "scan": lambda: pl.scan_parquet(path).collect().height,
            "polars": lambda: plain_polars_checks(mapped),
            "platform": lambda: platform_validation(mapped),
        }
        print(f"timing {', '.join(ways)} side by side, {args.rounds} rounds …", flush=True)
        timings, outcomes = timed_side_by_side(ways, args.rounds)

    print(f"\n{'way':<10}{'seconds':>10}{'rows/s':>14}   valid / quarantined")
    for name, seconds in timings.items():
        print(f"{name:<10}{seconds:>10.3f}{raw.height / seconds:>14,.0f}   {outcomes[name]}")
    print(
        f"\nplatform / polars checks: {timings['polars'] / timings['platform']:.2f}× throughput"
        f" (target ≥ 0.5×)\nplatform / plain scan:    {timings['scan'] / timings['platform']:.3f}×"
    )
    if outcomes["polars"] != outcomes["platform"]:
        raise SystemExit(
            f"the two validations disagree: {outcomes['polars']} vs {outcomes['platform']}"
        )


if __name__ == "__main__":
    main()
