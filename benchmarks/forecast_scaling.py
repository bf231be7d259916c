"""Forecast backtest time against the number of series: how the whole backtest grows.

    python benchmarks/forecast_scaling.py                          # 10, 100 and 1,000 series
    python benchmarks/forecast_scaling.py --sizes 10,100 --epochs 2 --days 365

Generated daily demand (10 items × stores, so every size has the same share of intermittent
series) goes through the backtest as the platform runs it (the `demand_backtests` asset): the
panel is built from the mart rows; every model kind (the baselines, Theta, and the global TiDE
model) is backtested on the regular series over rolling origins (3 folds of 28 days, refit at
every origin), the fallback model on the intermittent ones; then the regular series are scored.
Each step is timed on its own. TiDE is one model trained on every series at once, so its work
per epoch grows with the number of training windows: it runs with small settings (--epochs,
--batch-size), printed with the results. A tiny untimed warm-up run first pays for imports and
first calls.

Prints seconds per step and size, and the growth exponent of each step: the least-squares slope
of log(seconds) against log(series) over the sizes (1 = linear; target ≤ 1.1 for the total).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.demand.backtesting import backtest, mase_scales, score_backtests
from ml.demand.forecaster import FALLBACK
from ml.demand.models import GLOBAL_KINDS, LOCAL_KINDS, GlobalModelSettings
from ml.demand.panel import ForecastSettings, build_panel
from ml.synthetic.demand import generate_demand

KINDS = (*LOCAL_KINDS, *GLOBAL_KINDS)
STEPS = ("panel", *KINDS, "fallback", "score")
TARGET_EXPONENT = 1.1
ITEMS = 10
START = date(2023, 1, 2)


def demand_mart(series: int, days: int, seed: int = 7) -> tuple[pl.DataFrame, int, int]:
    """`series` store × item series of `days` daily rows, in the mart's column types."""
    items = ITEMS if series % ITEMS == 0 else series
    stores = series // items
    frame = generate_demand(
        stores=stores, items=items, start=START, end=START + timedelta(days=days - 1), seed=seed
    )
    mart = frame.with_columns(
        pl.col("period_start").cast(pl.Date), pl.col("units").cast(pl.Float64)
    )
    return mart, stores, items


@dataclass
class Run:
    series: int
    rows: int
    seconds: dict[str, float] = field(default_factory=dict)
    regular: int = 0
    scored_points: int = 0

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def run_once(mart: pl.DataFrame, model: GlobalModelSettings, progress: bool = True) -> Run:
    run = Run(series=mart.select("store", "item").n_unique(), rows=mart.height)

    def step(name: str, fn):
        started = time.perf_counter()
        result = fn()
        run.seconds[name] = time.perf_counter() - started
        if progress:
            print(f"    {name:<15}{run.seconds[name]:>9.2f} s", flush=True)
        return result

    panel = step("panel", lambda: build_panel(mart, ForecastSettings(folds=3)))
    regular, intermittent = panel.index("regular"), panel.index("intermittent")
    run.regular = len(regular)
    results = [step(kind, lambda k=kind: backtest(panel, k, regular, model)) for kind in KINDS]
    results.append(step("fallback", lambda: backtest(panel, FALLBACK, intermittent)))
    combined = pl.concat([r for r in results if not r.is_empty()], how="vertical_relaxed")

    def score() -> dict[str, pl.DataFrame]:
        keys = pl.DataFrame(
            [panel.keys[i] for i in regular], schema=["store", "item"], orient="row"
        )
        return score_backtests(combined.join(keys, on=["store", "item"]), mase_scales(panel))

    scores = step("score", score)
    run.scored_points = int(scores["overall"]["points"].sum())
    return run


def exponent(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) on log(series)."""
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="numbers of series, comma-separated")
    parser.add_argument("--days", type=int, default=365, help="daily periods per series")
    parser.add_argument("--epochs", type=int, default=2, help="TiDE epochs per fold")
    parser.add_argument("--batch-size", type=int, default=1024, help="TiDE batch size")
    parser.add_argument("--no-warm-up", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # lightning's and darts' chatter on a CPU
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})

    model = GlobalModelSettings(epochs=args.epochs, batch_size=args.batch_size)
    device = "cuda" if torch.cuda.is_available() and model.accelerator == "auto" else "cpu"
    print(
        f"{args.days} daily periods per series, 3 folds × 28 days, kinds {', '.join(KINDS)}\n"
        f"TiDE: epochs {model.epochs}, batch {model.batch_size}, hidden {model.hidden_size}, "
        f"input {model.input_multiple}× horizon, on {device} "
        f"({torch.get_num_threads()} torch threads)",
        flush=True,
    )
    if not args.no_warm_up:
        print("warm-up (untimed) on 2 series …", flush=True)
        run_once(demand_mart(2, args.days)[0], model, progress=False)

    runs: list[Run] = []
    for series in sizes:
        mart, stores, items = demand_mart(series, args.days)
        print(
            f"{series:,} series (stores × items {stores} × {items}, {mart.height:,} rows) …",
            flush=True,
        )
        runs.append(run_once(mart, model))
        print(f"    {'total':<15}{runs[-1].total:>9.2f} s", flush=True)

    widths = {name: max(len(name) + 2, 9) for name in (*STEPS, "total")}
    header = f"{'series':>8}" + "".join(f"{name + ' s':>{widths[name] + 2}}" for name in widths)
    print(f"\n{header}")
    for run in runs:
        cells = [*(run.seconds[name] for name in STEPS), run.total]
        print(
            f"{run.series:>8,}"
            + "".join(f"{v:>{widths[n] + 2}.2f}" for n, v in zip(widths, cells, strict=True))
        )
    for run in runs:
        print(
            f"  {run.series:,} series ({run.regular:,} regular): "
            f"{1000 * run.total / run.series:,.1f} ms per series, "
            f"{run.scored_points:,} scored forecast points"
        )

    if len(runs) < 2:
        print("\none size only: no growth exponent")
        return 0
    counts = [run.series for run in runs]
    print(f"\ngrowth exponent (slope of log seconds on log series, {', '.join(map(str, counts))}):")
    for name in (*STEPS, "total"):
        seconds = [run.total if name == "total" else run.seconds[name] for run in runs]
        print(f"  {name:<15}{exponent(counts, seconds):>6.2f}")
    total = exponent(counts, [run.total for run in runs])
    verdict = "meets" if total <= TARGET_EXPONENT else "misses"
    print(f"total {total:.2f}: {verdict} the target ≤ {TARGET_EXPONENT} (1 = linear in series)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
