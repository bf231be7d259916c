"""Drift monitoring: serving traffic against what the champion was trained on, and realized
forecast error against its threshold.

Request texts become a few numeric and categorical features (`REQUEST_FEATURES`), whylogs profiles
them, and whylogs' drift algorithms (KS, chi-square, Hellinger) compare two profiles. This is the
one module that imports whylogs: the rest of the project takes whylogs things from here.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal, get_args

import matplotlib

matplotlib.use("Agg")
import numpy as np
import polars as pl
from scipy.stats import chi2_contingency

from ml.data.ingestion import write_bytes_atomically, write_text_atomically
from ml.metrics import wape_expr
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

REQUEST_FEATURES = (
    "text_length",
    "token_count",
    "oov_rate",
    "embedding_distance",
    "predicted_intent",
    "confidence",
)
"""The monitored request columns; all numeric but `predicted_intent` (categorical)."""

TOKEN = re.compile(r"\w+")
REFERENCE_FILE = "text_reference.json"
CENTROID_FILE = "centroid.npy"

DriftAlgorithm = Literal["ks", "chi-square", "hellinger"]
"""whylogs' own names for its drift algorithms."""
DRIFT_CATEGORY = "DRIFT"
"""whylogs' category of a drifted column (the others: NO_DRIFT)."""
MIN_EXPECTED_COUNT = 5
"""Categories the reference expects fewer target rows of are pooled before chi-square."""
RARE_CATEGORIES = "(rare)"


# --- request features --------------------------------------------------------------------------


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens: what the vocabulary and `token_count` count."""
    return TOKEN.findall(text.lower())


@dataclass(frozen=True)
class TextReference:
    """What serving texts are compared with, built from the champion's training texts."""

    vocabulary: frozenset[str]
    centroid: np.ndarray
    """Unit-norm mean of the training texts' unit-norm sentence embeddings."""

    def save(self, folder: Path) -> None:
        meta = {"vocabulary": sorted(self.vocabulary), "dimensions": int(self.centroid.shape[0])}
        centroid = io.BytesIO()
        np.save(centroid, self.centroid)
        write_bytes_atomically(folder / CENTROID_FILE, centroid.getvalue())
        write_text_atomically(folder / REFERENCE_FILE, json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: Path) -> TextReference:
        path = folder / REFERENCE_FILE
        if not path.exists():
            raise FileNotFoundError(f"{folder} holds no text reference ({REFERENCE_FILE} missing)")
        meta = json.loads(path.read_text(encoding="utf-8"))
        centroid = np.load(folder / CENTROID_FILE)
        if centroid.shape != (meta["dimensions"],):
            raise ValueError(
                f"{folder / CENTROID_FILE} holds shape {centroid.shape}; "
                f"expected ({meta['dimensions']},)"
            )
        return cls(vocabulary=frozenset(meta["vocabulary"]), centroid=centroid)


def build_text_reference(
    texts: Sequence[str], embed: Callable[[Sequence[str]], np.ndarray]
) -> TextReference:
    """The vocabulary and centroid embedding of `texts` (the champion's training texts).

    Profile the reference traffic on other texts (validation or test split): on the texts that
    built the vocabulary `oov_rate` is 0 by construction, and every serving batch would drift.
    """
    if len(texts) == 0:
        raise ValueError("no texts to build a text reference from")
    vocabulary = frozenset(token for text in texts for token in tokens(text))
    mean = embed(texts).mean(axis=0)
    return TextReference(vocabulary=vocabulary, centroid=mean / np.linalg.norm(mean))


def sentence_embedder(
    checkpoint_dir: Path | None = None, batch_size: int = 64
) -> Callable[[Sequence[str]], np.ndarray]:
    """Mean-pooled, L2-normalized sentence embeddings (one row per text) from a transformers
    checkpoint folder, loaded once; the default is the offline all-MiniLM-L6-v2."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    from ml.requests.backbone import default_checkpoint_dir, quiet_transformers

    folder = checkpoint_dir or default_checkpoint_dir()
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()

    @torch.inference_mode()
    def embed(texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in chosen],
                padding=True,
                truncation=True,
                max_length=64,
                return_tensors="pt",
            ).to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            out[chosen] = F.normalize(pooled, dim=1).float().cpu().numpy()
        return out

    return embed


def request_feature_frame(
    texts: Sequence[str],
    predicted_intents: Sequence[str],
    confidences: Sequence[float],
    reference: TextReference,
    embed: Callable[[Sequence[str]], np.ndarray],
) -> pl.DataFrame:
    """The `REQUEST_FEATURES` of each request, in input order.

    `oov_rate` is the share of a text's tokens outside the reference vocabulary (0 for a text
    without words); `embedding_distance` is the cosine distance to the reference centroid.
    """
    if not len(texts) == len(predicted_intents) == len(confidences):
        raise ValueError(
            f"{len(texts)} texts, {len(predicted_intents)} predicted intents and "
            f"{len(confidences)} confidences: expected one of each per request"
        )
    split = [tokens(text) for text in texts]
    embeddings = embed(texts) if len(texts) else np.zeros((0, reference.centroid.shape[0]))
    if embeddings.shape != (len(texts), reference.centroid.shape[0]):
        raise ValueError(
            f"embeddings of shape {embeddings.shape}; expected ({len(texts)}, "
            f"{reference.centroid.shape[0]}) (the reference's embedder?)"
        )
    return pl.DataFrame(
        {
            "text_length": [len(text) for text in texts],
            "token_count": [len(words) for words in split],
            "oov_rate": [
                sum(w not in reference.vocabulary for w in words) / len(words) if words else 0.0
                for words in split
            ],
            "embedding_distance": (1.0 - embeddings @ reference.centroid).astype(np.float64),
            "predicted_intent": list(predicted_intents),
            "confidence": [float(c) for c in confidences],
        },
        schema={
            "text_length": pl.Int64,
            "token_count": pl.Int64,
            "oov_rate": pl.Float64,
            "embedding_distance": pl.Float64,
            "predicted_intent": pl.Utf8,
            "confidence": pl.Float64,
        },
    )


# --- whylogs profiles --------------------------------------------------------------------------


def profile(frame: pl.DataFrame) -> DatasetProfileView:
    """A whylogs profile of `frame`. Arrow-backed pandas columns keep integers with nulls integral
    (frequent items, ints) and strings as strings, as pandas 3 would hand them to whylogs."""
    return why.log(pandas=frame.to_pandas(use_pyarrow_extension_array=True)).view()


def serialize_profile(view: DatasetProfileView) -> bytes:
    return view.serialize()


def deserialize_profile(data: bytes) -> DatasetProfileView:
    return DatasetProfileView.deserialize(data)


# --- drift between two profiles ----------------------------------------------------------------


@dataclass(frozen=True)
class DriftThresholds:
    """Which whylogs algorithm compares each column, and where each calls it drift.

    whylogs' semantics: KS and chi-square drift when their p-value is below the threshold (the
    test rejects "same distribution"), Hellinger when its distance is at or above it. The p-value
    thresholds are 0.001, not whylogs' 0.05: six columns are tested per batch, and of 100 unshifted
    batches of 300 requests against a 3,000-request reference, some column fell below 0.05 in 18,
    below 0.01 in 6 and below 0.001 in none, while a sixth of the traffic going off topic gave
    1e-5 to 1e-9. Hellinger keeps whylogs' 0.4 (those unshifted batches: 0.23 at most).
    KS compares two samples, but whylogs' chi-square takes the reference shares as exact: keep the
    reference profile several times the size of a batch (ten times above, six in the tests).
    """

    ks_p_value: float = 0.001
    chi_square_p_value: float = 0.001
    hellinger_distance: float = 0.4
    numeric_algorithm: DriftAlgorithm = "ks"
    categorical_algorithm: DriftAlgorithm = "chi-square"
    column_algorithms: Mapping[str, DriftAlgorithm] = field(default_factory=dict)
    """Per-column choices over the two defaults, e.g. {"confidence": "hellinger"}."""

    def __post_init__(self) -> None:
        for name in ("ks_p_value", "chi_square_p_value", "hellinger_distance"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(
                    f"{name} must lie strictly between 0 and 1, got {getattr(self, name)}"
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
        return {
            "ks": self.ks_p_value,
            "chi-square": self.chi_square_p_value,
            "hellinger": self.hellinger_distance,
        }[algorithm]


@dataclass(frozen=True)
class ColumnDrift:
    """One column's whylogs drift score and verdict."""

    column: str
    algorithm: DriftAlgorithm
    statistic: float
    """KS: largest CDF gap; chi-square: the statistic; Hellinger: the distance, in [0, 1]."""
    p_value: float | None
    """KS and chi-square only."""
    threshold: float
    drifted: bool
    category: str
    """whylogs' drift category: DRIFT or NO_DRIFT."""

    @property
    def score(self) -> float:
        """What the threshold applies to: the p-value, or Hellinger's distance."""
        return self.statistic if self.p_value is None else self.p_value

    @property
    def severity(self) -> float:
        """The score relative to its threshold, larger is worse: 1 at the threshold, above 1 drift
        (p-values compare on a log scale, so 1e-6 against 0.01 is 3)."""
        if self.p_value is None:
            return self.statistic / self.threshold
        if self.p_value <= 0.0:
            return math.inf
        return math.log(self.p_value) / math.log(self.threshold)


@dataclass(frozen=True)
class DriftReport:
    columns: tuple[ColumnDrift, ...]

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
            },
        ).sort("drifted", "column", descending=[True, False])

    def to_json(self) -> str:
        return json.dumps([asdict(column) for column in self.columns], indent=1)

    @classmethod
    def from_json(cls, text: str) -> DriftReport:
        return cls(tuple(ColumnDrift(**column) for column in json.loads(text)))


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


class PooledChiSquare(ChiSquare):
    """Chi-square test of homogeneity over the two profiles' frequent-item counts (a 2 × k
    table, rare categories pooled first), scored and categorized as whylogs' ChiSquare.

    whylogs' own ChiSquare is a one-sample test: it takes the reference proportions as exact
    and truncates each expected count to an integer, so with a reference of a few hundred
    requests over 77 intents calm traffic scored p < 1e-5 (measured on the demo). The reference
    is a sample too; the homogeneity test counts both samples' noise.
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
        return DriftAlgorithmScore(
            algorithm=self.name,
            pvalue=float(p_value),
            statistic=float(statistic),
            thresholds=self._parameter_config.thresholds,
            drift_category=self._get_drift_category(measure=p_value) if with_thresholds else None,
        )


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
        return KS(KSTestConfig(thresholds=bands))
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
    report = []
    for name in names:
        algorithm, threshold = chosen[name]
        score = scores.get(name)
        if score is None:
            raise ValueError(
                f"column {name!r}: whylogs' {algorithm} could not score it (needs "
                f"{'a numeric distribution' if algorithm == 'ks' else 'values'} in both profiles)"
            )
        p_value = score["pvalue"]
        report.append(
            ColumnDrift(
                column=name,
                algorithm=algorithm,
                statistic=float(score["statistic"]),
                p_value=None if p_value is None else float(p_value),
                threshold=threshold,
                drifted=score["drift_category"] == DRIFT_CATEGORY,
                category=score["drift_category"],
            )
        )
    return DriftReport(tuple(report))


# --- demand: realized forecast error -----------------------------------------------------------


@dataclass(frozen=True)
class ForecastErrorDrift:
    """The champion forecaster's WAPE on the actuals that have arrived, against its threshold."""

    window: tuple[date, date] | None
    """First and last period scored (None without a `period_start` column or rows)."""
    wape: float
    threshold: float
    drifted: bool
    rows: int


def forecast_error_drift(
    errors: pl.DataFrame, threshold: float, period_column: str = "period_start"
) -> ForecastErrorDrift:
    """WAPE = sum|actual - p50| / sum|actual| over the rows whose actual has arrived (not null);
    drift when it exceeds `threshold`.

    No scored rows yet is no evidence of drift: drifted is False, wape 0 and rows 0. Actuals that
    are all zero leave WAPE undefined and raise.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    nothing = ForecastErrorDrift(window=None, wape=0.0, threshold=threshold, drifted=False, rows=0)
    if errors.is_empty():
        return nothing
    missing = [c for c in ("actual", "p50") if c not in errors.columns]
    if missing:
        raise ValueError(f"forecast errors lack column(s) {missing}; they have {errors.columns}")
    scored = errors.drop_nulls(["actual", "p50"])
    if scored.is_empty():
        return nothing
    wape = scored.select(wape_expr("actual", "p50")).item()
    if wape is None:
        raise ValueError(
            f"column 'actual' is 0 in all {scored.height} scored rows: WAPE is undefined"
        )
    window = None
    if period_column in scored.columns:
        window = (scored[period_column].min(), scored[period_column].max())
    return ForecastErrorDrift(
        window=window, wape=wape, threshold=threshold, drifted=wape > threshold, rows=scored.height
    )
