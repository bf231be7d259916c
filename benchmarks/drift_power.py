"""Drift alarms measured: the false-alarm rate on calm windows and the detection rate per kind
of shift, at window sizes 50, 200 and 1,000, with 95% Wilson intervals, from one run.

    python benchmarks/drift_power.py                      # ~10 min on 2 CPU cores
    python benchmarks/drift_power.py --calm 200 --shifted 50 --sizes 200
    python benchmarks/drift_power.py --data-home .data --hours 10   # the demo's calm hour x10

Requests: one draw of the seeded generator is split into the champion's training texts (a
baseline classifier and the vocabulary and centroid of the text reference), the reference
(held-out answers of that model, as reference_profiles builds it) and a disjoint pool that calm
windows are drawn from. Shifted windows take a share of their rows from the same pool rows with
a shift applied (ml/synthetic/request_shifts.py: new vocabulary, longer texts, an unseen topic)
or from three surging intents (intent mix). Every window is profiled with whylogs and judged by
the drift report's own comparison (ml.monitoring.drift.compare_profiles, default thresholds:
Holm across the six columns, α 0.01).

Demand: the seeded demand generator (10 stores × 10 items, three years of days) is backtested
with one model kind (Theta by default) over 12 origins of 28 days, as demand_backtests does.
Each window is the realized forecasts of one origin: the reference is the three origins before
it (as the champion's backtest is to its first live forecast), calm windows are rows of that
origin, shifted windows the same rows with a shift applied (ml.monitoring.drift_power
.DEMAND_SHIFTS: a level shift, a promotion lift). Judged as demand_forecast_drift judges
(ml.monitoring.forecast_error.residual_drift). Windows of one origin share its weather, so the
intervals are narrower than the nine origins justify.

Targets (DESIGN): false alarms ≤ 1% of calm windows at 200 rows and above; detection ≥ 95% for
each kind of shift at 200 rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.monitoring.drift import profile
from ml.monitoring.drift_power import (
    AlarmRate,
    alarm_rate,
    calm_windows,
    shifted_windows,
    surge_windows,
)
from ml.monitoring.request_features import (
    build_text_reference,
    request_feature_frame,
    sentence_embedder,
)
from ml.requests.classifiers import LabeledTexts, train_baseline
from ml.requests.taxonomy import synthetic_taxonomy
from ml.synthetic.request_shifts import INTENT_MIX, SHIFT_SHARES, TEXT_SHIFTS, shift_texts
from ml.synthetic.requests import generate_requests

TRAIN_ROWS, REFERENCE_ROWS, POOL_ROWS = 3000, 2000, 4000
TARGET_FALSE_ALARMS = 0.01
TARGET_DETECTION = 0.95


def request_pools(seed: int) -> tuple[object, pl.DataFrame, dict[str, pl.DataFrame], str]:
    """(reference profile, calm pool, shifted pool per kind, what the model was)."""
    now = datetime.now(UTC)
    draw = generate_requests(
        TRAIN_ROWS + REFERENCE_ROWS + POOL_ROWS, seed=seed, start=now - timedelta(days=30), end=now
    ).sample(fraction=1.0, shuffle=True, seed=seed)
    train = draw[:TRAIN_ROWS]
    reference_rows = draw[TRAIN_ROWS : TRAIN_ROWS + REFERENCE_ROWS]
    pool = draw[TRAIN_ROWS + REFERENCE_ROWS :]
    fit, calibrate = train[: TRAIN_ROWS * 5 // 6], train[TRAIN_ROWS * 5 // 6 :]
    started = time.perf_counter()
    classifier = train_baseline(
        LabeledTexts(fit["text"].to_list(), fit["intent"].to_list()),
        LabeledTexts(calibrate["text"].to_list(), calibrate["intent"].to_list()),
        synthetic_taxonomy().intents,
    )
    embed = sentence_embedder()
    text_reference = build_text_reference(train["text"].to_list(), embed)

    def features(texts: list[str]) -> pl.DataFrame:
        probabilities = classifier.predict_proba(texts)
        predicted = [classifier.classes[i] for i in probabilities.argmax(axis=1)]
        return request_feature_frame(
            texts, predicted, probabilities.max(axis=1), text_reference, embed
        )

    reference = profile(features(reference_rows["text"].to_list()))
    texts = pool["text"].to_list()
    true_intent = pool.select(pl.col("intent").alias("true_intent"))
    calm = pl.concat([features(texts), true_intent], how="horizontal")
    shifted = {}
    for number, kind in enumerate(tqdm(TEXT_SHIFTS, desc="shifted pools", leave=False)):
        changed = shift_texts(kind, texts, seed=seed + number)
        shifted[kind] = pl.concat([features(changed), true_intent], how="horizontal")
    model = (
        f"baseline (TF-IDF + linear SVM) on {fit.height:,} texts; reference {REFERENCE_ROWS:,} "
        f"held-out answers, pool {POOL_ROWS:,}; features in {time.perf_counter() - started:.0f} s"
    )
    return reference, calm, shifted, model


def request_rates(
    sizes: list[int], calm_count: int, shifted_count: int, seed: int
) -> tuple[list[AlarmRate], str]:
    reference, calm, shifted, model = request_pools(seed)
    rng = np.random.default_rng(seed + 1000)
    rates = []
    for rows in tqdm(sizes, desc="window sizes", leave=False):
        rates.append(alarm_rate("calm", reference, calm_windows(calm, rows, calm_count, rng)))
        for kind, pool in shifted.items():
            windows = shifted_windows(calm, pool, rows, shifted_count, SHIFT_SHARES[kind], rng)
            rates.append(alarm_rate(kind, reference, windows))
        surges = surge_windows(calm, rows, shifted_count, SHIFT_SHARES[INTENT_MIX], rng)
        rates.append(alarm_rate(INTENT_MIX, reference, surges))
    return rates, model


DEMAND_FOLDS, DEMAND_REFERENCE_FOLDS = 12, 3


def demand_origins(seed: int, kind: str) -> tuple[list[tuple[object, pl.DataFrame]], str]:
    """Per origin after the first three: (reference profile, that origin's backtest rows)."""
    from datetime import date

    from ml.demand.backtesting import backtest
    from ml.demand.intervals import served_intervals
    from ml.demand.panel import ForecastSettings, build_panel
    from ml.monitoring.forecast_error import forecast_residuals
    from ml.synthetic.demand import generate_demand

    started = time.perf_counter()
    mart = generate_demand(
        stores=10, items=10, start=date(2023, 1, 1), end=date(2025, 12, 31), seed=seed + 7
    )
    panel = build_panel(mart, ForecastSettings(folds=DEMAND_FOLDS))
    series = panel.index("regular")
    rows = served_intervals(backtest(panel, kind, series))
    origins, calm_moves = [], []
    for fold in range(DEMAND_REFERENCE_FOLDS + 1, DEMAND_FOLDS + 1):
        before = rows.filter(pl.col("fold").is_between(fold - DEMAND_REFERENCE_FOLDS, fold - 1))
        realized = rows.filter(pl.col("fold") == fold)
        origins.append((profile(forecast_residuals(before)), realized))
        calm_moves.append(
            forecast_residuals(realized)["log_error"].median()
            - forecast_residuals(before)["log_error"].median()
        )
    spread = forecast_residuals(rows)["log_error"].std()
    model = (
        f"{kind} on {len(series)} regular series × {DEMAND_FOLDS} origins of "
        f"{panel.settings.horizon} days; reference the {DEMAND_REFERENCE_FOLDS} origins before "
        f"each window's ({before.height:,} rows); backtest in {time.perf_counter() - started:.0f} s"
        f"\n  what a window has to stand out from: a row's log error has sd {spread:.2f}; whole "
        f"calm origins' median log error differs from their reference's by "
        f"{min(calm_moves):+.3f} to {max(calm_moves):+.3f}"
    )
    return origins, model


def demand_rates(
    sizes: list[int], calm_count: int, shifted_count: int, seed: int, kind: str
) -> tuple[list[AlarmRate], str]:
    from ml.monitoring.drift_power import DEMAND_SHIFTS, shift_demand
    from ml.monitoring.forecast_error import (
        FORECAST_RESIDUALS,
        forecast_residuals,
        residual_thresholds,
    )

    origins, model = demand_origins(seed, kind)
    rng = np.random.default_rng(seed + 2000)
    rates = []
    for rows in tqdm(sizes, desc="demand window sizes", leave=False):
        for name, count in (("calm", calm_count), *((k, shifted_count) for k in DEMAND_SHIFTS)):
            drifted, columns = 0, dict.fromkeys(FORECAST_RESIDUALS, 0)
            for _ in range(count):
                reference, realized = origins[rng.integers(len(origins))]
                window = realized[rng.choice(realized.height, size=rows, replace=False).tolist()]
                if name != "calm":
                    window = shift_demand(name, window, rng)
                rate = alarm_rate(
                    name,
                    reference,
                    [forecast_residuals(window)],
                    residual_thresholds(),
                    FORECAST_RESIDUALS,
                )
                drifted += rate.drifted
                for column, n in rate.columns.items():
                    columns[column] += n
            rates.append(AlarmRate(name, rows, count, drifted, columns))
    return rates, model


def show(rate: AlarmRate) -> str:
    low, high = rate.interval
    return f"{rate.rate:6.1%} [{low:5.1%}, {high:5.1%}] ({rate.drifted}/{rate.windows})"


def print_table(domain: str, rates: list[AlarmRate]) -> None:
    kinds = list(dict.fromkeys(r.kind for r in rates))
    print(f"\n{domain}: share of windows with a drift verdict, 95% Wilson interval")
    print(f"{'rows':>5} | " + " | ".join(f"{kind:<32}" for kind in kinds))
    for rows in sorted({r.rows for r in rates}):
        by_kind = {r.kind: r for r in rates if r.rows == rows}
        print(f"{rows:>5} | " + " | ".join(f"{show(by_kind[k]):<32}" for k in kinds))
    for rate in rates:
        if rate.kind == "calm" and rate.drifted:
            which = ", ".join(f"{c} {n}" for c, n in rate.columns.items() if n)
            print(f"  false alarms at {rate.rows} rows came from: {which}")


def print_targets(domain: str, rates: list[AlarmRate]) -> None:
    for rate in rates:
        if rate.rows < 200:
            continue
        if rate.kind == "calm":
            ok = rate.rate <= TARGET_FALSE_ALARMS
            print(
                f"{domain} {rate.rows} rows: false alarms {rate.rate:.1%} (upper 95% bound "
                f"{rate.interval[1]:.1%}; target ≤ {TARGET_FALSE_ALARMS:.0%}): "
                f"{'met' if ok else 'MISSED'}"
            )
        elif rate.rows == 200:
            ok = rate.rate >= TARGET_DETECTION
            print(
                f"{domain} {rate.rows} rows: {rate.kind} detected {rate.rate:.1%} (lower 95% "
                f"bound {rate.interval[0]:.1%}; target ≥ {TARGET_DETECTION:.0%}): "
                f"{'met' if ok else 'MISSED'}"
            )


def deployed_calm_hours(data_home: Path, hours: int, rows: int, reference_ratio: float) -> None:
    """The demo's calm hour again and again, against a deployment's own reference: `rows`
    requests sampled from a draw ten times larger (as `make demo` sends them, seed 10 + k),
    answered by the registry's champion, judged as drift_report judges an hour (a sample of
    reference rows / `reference_ratio` of them when there are more)."""
    import json

    import pandas as pd

    from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
    from ml.lifecycle.registry import Registry
    from ml.monitoring.drift import compare_profiles, deserialize_profile, judged_sample
    from ml.monitoring.request_features import TextReference
    from ml.security.encryption import generated_keys_into_environment
    from ml.settings import Settings

    settings = Settings.from_env().moved_to(data_home)
    # The deployment's own keys: its registered artifacts are encrypted at rest.
    generated_keys_into_environment(settings.secrets_dir)
    pointer = json.loads((data_home / "profiles" / "reference" / "current.json").read_text())
    folder = Path(pointer["folder"])
    reference = deserialize_profile((folder / "profile.bin").read_bytes())
    reference_rows = int(pointer["rows"])
    text_reference = TextReference.load(folder)
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    model = registry.load(REQUEST_CLASSIFIER, str(pointer["version"]))
    embed = sentence_embedder()
    drifted = 0
    now = datetime.now(UTC)
    for k in tqdm(range(hours), desc="calm hours", leave=False):
        texts = (
            generate_requests(10 * rows, seed=10 + k, start=now, end=now)
            .sample(rows, seed=k)["text"]
            .to_list()
        )
        answers = model.predict(pd.DataFrame({"text": texts}))
        features = request_feature_frame(
            texts, answers["intent"], answers["confidence"], text_reference, embed
        )
        judged, _ = judged_sample(features, int(reference_rows / reference_ratio), str(k))
        report = compare_profiles(reference, profile(judged))
        drifted += report.drifted
        verdict = "; ".join(report.reasons()) or "no drift"
        print(f"  hour {k + 1} (seed {10 + k}): {verdict}", flush=True)
    print(
        f"{data_home}: request_classifier v{pointer['version']}, reference "
        f"{reference_rows} answers; {drifted} of {hours} calm hours of {rows} requests "
        f"(judged on {min(rows, int(reference_rows / reference_ratio))}) drifted"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-home",
        type=Path,
        help="only replay calm hours against this deployment's reference (after make demo)",
    )
    parser.add_argument("--hours", type=int, default=10, help="with --data-home")
    parser.add_argument(
        "--reference-ratio", type=float, default=2.0, help="the monitoring resource's default"
    )
    parser.add_argument("--calm", type=int, default=500, help="calm windows per size")
    parser.add_argument("--shifted", type=int, default=100, help="windows per kind of shift")
    parser.add_argument("--sizes", default="50,200,1000", help="window sizes (rows)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demand-model", default="theta", help="the model kind backtested")
    parser.add_argument("--domains", default="requests,demand")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    if args.data_home:
        deployed_calm_hours(args.data_home.resolve(), args.hours, 1000, args.reference_ratio)
        return 0
    domains = args.domains.split(",")
    tables = []
    if "requests" in domains:
        rates, model = request_rates(sizes, args.calm, args.shifted, args.seed)
        print(f"requests: {model}")
        print(f"shift shares: {', '.join(f'{k} {v:.0%}' for k, v in SHIFT_SHARES.items())}")
        tables.append(("requests", rates))
    if "demand" in domains:
        rates, model = demand_rates(sizes, args.calm, args.shifted, args.seed, args.demand_model)
        print(f"demand: {model}")
        tables.append(("demand", rates))
    for domain, rates in tables:
        print_table(domain, rates)
    print()
    for domain, rates in tables:
        print_targets(domain, rates)
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
