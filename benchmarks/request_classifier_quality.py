"""Every request-classifier candidate side by side: validation and frozen-test F1-macro,
accuracy, ECE, training time and p50 latency per text, and which one the promotion gate chose.

    python benchmarks/request_classifier_quality.py                 # what make demo-real registered
    python benchmarks/request_classifier_quality.py --splits splits.csv [--learning-rates 2e-4]

Without `--splits` it reads the versions a deployment registered (default: `make demo-real`'s data
home, `$MLOPS_DATA_HOME/real`): the latest version of each kind scored on the latest frozen test
version, each loaded through the registry (digests verified) and scored again here, with the
gate's own decision. With `--splits` (a CSV of `text`, `intent`, `split` = train / validation /
test) it trains every candidate itself — the baseline, the tuned linear model, the transformer
(learning rates tried on validation) and their ensemble — and applies the gate's rule to them in
that order; it needs only `ml/`, torch, transformers and scikit-learn, so it runs on a bare GPU
machine too. Either way the test split is only scored, never chosen on.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.metrics import measure_latency, score_classification
from ml.requests import train_transformer
from ml.requests.classifiers import (
    IntentClassifier,
    LabeledTexts,
    fit_ensemble,
    search_linear,
    train_baseline,
)

TARGET_F1 = 0.93
TARGET_P50_MS = 20.0
LATENCY_TEXTS = 200
"""Single texts timed per candidate (after a warm-up): the p50 is over these."""


@dataclass
class Row:
    name: str
    version: str
    validation_f1: float
    test_f1: float
    accuracy: float
    ece: float
    training_seconds: float
    p50_ms: float
    gate: str = ""


def score_row(
    name: str,
    version: str,
    classifier: IntentClassifier,
    validation: LabeledTexts,
    test: LabeledTexts,
    training_seconds: float,
) -> Row:
    classes = classifier.classes
    on_validation = score_classification(
        validation.intents, classifier.predict_proba(validation.texts), classes
    )
    on_test = score_classification(test.intents, classifier.predict_proba(test.texts), classes)
    latency = measure_latency(classifier.predict_proba, test.texts[:LATENCY_TEXTS], samples=200)
    return Row(
        name,
        version,
        on_validation.f1_macro,
        on_test.f1_macro,
        on_test.accuracy,
        on_test.expected_calibration_error,
        training_seconds,
        latency.per_sample_ms,
    )


def print_table(rows: list[Row]) -> None:
    print(
        f"{'candidate':<14} {'version':>7} {'val F1':>7} {'test F1':>7} {'acc':>6} {'ECE':>6} "
        f"{'training':>9} {'p50 ms':>7}  gate"
    )
    for r in rows:
        print(
            f"{r.name:<14} {r.version:>7} {r.validation_f1:>7.4f} {r.test_f1:>7.4f} "
            f"{r.accuracy:>6.4f} {r.ece:>6.4f} {r.training_seconds:>8.0f}s {r.p50_ms:>7.1f}  "
            f"{r.gate}"
        )


def verdict(row: Row) -> str:
    f1 = "met" if row.test_f1 >= TARGET_F1 else "missed"
    p50 = "met" if row.p50_ms <= TARGET_P50_MS else "missed"
    return (
        f"targets for the chosen one: test F1-macro ≥ {TARGET_F1} {f1} ({row.test_f1:.4f}), "
        f"p50 ≤ {TARGET_P50_MS:g} ms per text {p50} ({row.p50_ms:.1f} ms)"
    )


# --- the versions a deployment registered -------------------------------------------------------


def registered_candidates(data_home: Path | None) -> int:
    import duckdb

    from ml.lifecycle.aliases import GATE_DECISION, GATE_REASON
    from ml.lifecycle.registered_models import REQUEST_CLASSIFIER
    from ml.lifecycle.registry import Registry
    from ml.security.encryption import generated_keys_into_environment
    from ml.settings import Settings

    settings = Settings.from_env()
    settings = settings.moved_to(data_home or settings.data_home / "real")
    generated_keys_into_environment(settings.secrets_dir)  # the deployment's, to read its models
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        test_version = con.execute("select max(test_version) from request_test_sets").fetchone()[0]
        test_rows = con.execute(
            "select text, intent from request_test_sets where test_version = ? order by request_id",
            [test_version],
        ).fetchall()
        validation_rows = con.execute(
            "select text, intent from request_splits where split = 'validation' "
            "and intent is not null order by request_id"
        ).fetchall()
    test = LabeledTexts([t for t, _ in test_rows], [i for _, i in test_rows])
    validation = LabeledTexts([t for t, _ in validation_rows], [i for _, i in validation_rows])
    registry = Registry(settings.tracking_uri, settings.artifact_root)
    latest = {}
    for version in registry.versions(REQUEST_CLASSIFIER):
        if version.tags.get("test_version") == str(test_version):
            latest[version.tags.get("kind", "")] = version
    if not latest:
        print(
            f"no {REQUEST_CLASSIFIER} version scored on test version {test_version} in "
            f"{settings.tracking_uri}: run make demo-real first"
        )
        return 1
    print(
        f"{REQUEST_CLASSIFIER} in {settings.tracking_uri}; validation {len(validation)} rows, "
        f"frozen test version {test_version} ({len(test)} rows)"
    )
    rows = []
    for kind, version in sorted(latest.items(), key=lambda item: int(item[1].version)):
        classifier = registry.load(REQUEST_CLASSIFIER, version.version).unwrap_python_model()
        metrics = registry.client.get_run(version.run_id).data.metrics
        row = score_row(
            kind,
            f"v{version.version}",
            classifier.classifier,
            validation,
            test,
            metrics.get("training_seconds", float("nan")),
        )
        row.gate = version.tags.get(GATE_DECISION, "not gated yet")
        rows.append(row)
    print_table(rows)
    champion = registry.champion(REQUEST_CLASSIFIER)
    if champion is None:
        print("no champion yet")
        return 0
    print(
        f"the gate's choice: v{champion.version} ({champion.tags.get('kind', '')}): "
        f"{champion.tags.get(GATE_REASON, '')}"
    )
    chosen = [r for r in rows if r.version == f"v{champion.version}"]
    if chosen:
        print(verdict(chosen[0]))
    return 0


# --- every candidate trained here ---------------------------------------------------------------


def trained_candidates(splits: Path, learning_rates: list[float], epochs: int, margin: float):
    from ml.lifecycle.promotion import GateScores, decide_promotion
    from ml.requests.training import TransformerConfig, fine_tune

    parts = train_transformer.read_splits(splits)
    train, validation, test = parts["train"], parts["validation"], parts["test"]
    classes = sorted(set(train.intents))
    print(
        f"{len(classes)} intents; train {len(train)}, validation {len(validation)}, "
        f"test {len(test)}"
    )
    rows, models = [], {}
    started = time.perf_counter()
    models["baseline"] = train_baseline(train, validation, classes)
    rows.append(
        score_row(
            "baseline", "-", models["baseline"], validation, test, time.perf_counter() - started
        )
    )
    started = time.perf_counter()
    searched = search_linear(train, validation, classes)
    models["tuned_linear"] = searched.classifier
    rows.append(
        score_row(
            "tuned_linear",
            "-",
            searched.classifier,
            validation,
            test,
            time.perf_counter() - started,
        )
    )
    print(f"  tuned linear: {searched.settings.params()} of {len(searched.trials)} on validation")
    best = None
    started = time.perf_counter()
    for rate in learning_rates:
        run = fine_tune(
            train,
            validation,
            classes,
            TransformerConfig(epochs=epochs, learning_rate=rate),
            show_progress=True,
        )
        f1 = max(r.validation_f1_macro for r in run.history)
        speed = sum(r.samples_per_second for r in run.history) / len(run.history)
        print(
            f"  transformer lr {rate:g}: validation F1-macro {f1:.4f} at epoch {run.best_epoch} "
            f"of {len(run.history)} ({speed:,.0f} samples/s, {run.device}, bf16 {run.bf16})"
        )
        if best is None or f1 > best[0]:
            best = (f1, run)
    transformer_seconds = time.perf_counter() - started
    models["transformer"] = best[1].classifier
    rows.append(
        score_row("transformer", "-", models["transformer"], validation, test, transformer_seconds)
    )
    started = time.perf_counter()
    ensemble, _ = fit_ensemble(models["tuned_linear"], models["transformer"], validation)
    print(f"  ensemble: linear weight {ensemble.weights[0]:.1f} chosen on validation")
    rows.append(
        score_row(
            "ensemble",
            "-",
            ensemble,
            validation,
            test,
            rows[1].training_seconds + transformer_seconds + time.perf_counter() - started,
        )
    )
    champion = None
    for row in rows:  # the gate's rule, in the order the platform registers them
        decision = decide_promotion(
            GateScores(row.name, row.test_f1),
            GateScores("baseline", rows[0].test_f1),
            GateScores(champion.name, champion.test_f1) if champion else None,
            "test_f1_macro",
            margin,
        )
        row.gate = "champion" if decision.promote else "challenger"
        if decision.promote:
            champion = row
    print_table(rows)
    print(f"the gate's choice (margin {margin:g}): {champion.name}")
    print(verdict(champion))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", type=Path, help="a deployment's data home (registry mode)")
    parser.add_argument("--splits", type=Path, help="train every candidate on this CSV")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--learning-rates", default="2e-4")
    parser.add_argument("--margin", type=float, default=0.005)
    args = parser.parse_args()
    if args.splits is None:
        return registered_candidates(args.data_home)
    rates = [float(rate) for rate in args.learning_rates.split(",")]
    return trained_candidates(args.splits, rates, args.epochs, args.margin)


if __name__ == "__main__":
    sys.exit(main())
