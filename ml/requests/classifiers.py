"""Intent classifiers: the TF-IDF + linear SVM baseline, the fine-tuned transformer and an
ensemble of calibrated members, all calibrated by temperature scaling, saved without pickles
(skops, safetensors, JSON) and loaded back."""

from __future__ import annotations

import abc
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline, make_union
from sklearn.svm import LinearSVC

from ml.calibration import fit_temperature, softmax
from ml.devices import pick_device
from ml.lifecycle.registry import Registry
from ml.metrics import score_classification
from ml.requests.backbone import pad_batch, quiet_transformers

META_FILE = "classifier.json"
PIPELINE_FILE = "pipeline.skops"


class TrainingDataError(ValueError):
    """The labeled data cannot train or fairly score a model."""


@dataclass(frozen=True)
class LabeledTexts:
    texts: list[str]
    intents: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.intents):
            raise ValueError(f"{len(self.texts)} texts but {len(self.intents)} intents")

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, rows: int | None) -> LabeledTexts:
        return self if rows is None else LabeledTexts(self.texts[:rows], self.intents[:rows])


def check_training_data(
    train: LabeledTexts, validation: LabeledTexts, test: LabeledTexts, classes: Sequence[str]
) -> None:
    """Refuse data that cannot train a classifier or would score it unfairly, naming the problem."""
    if len(train) == 0:
        raise TrainingDataError("the training set is empty: label requests before training")
    seen = set(train.intents)
    if len(seen) < 2:
        raise TrainingDataError(
            f"the training set holds a single class ({next(iter(seen))!r}, {len(train)} rows): "
            "a classifier needs at least two"
        )
    known = set(classes)
    for name, part in (("training", train), ("validation", validation), ("test", test)):
        outside = sorted(set(part.intents) - known)
        if outside:
            raise TrainingDataError(f"{name} labels not in the taxonomy: {outside[:10]}")
    for name, part in (("validation", validation), ("test", test)):
        unseen = sorted(set(part.intents) - seen)
        if unseen:
            raise TrainingDataError(
                f"{name} labels never seen in training: {unseen[:10]}; the model cannot predict "
                "them (label training examples for them first)"
            )


class IntentClassifier(abc.ABC):
    """What every classifier offers: logits over `classes`, calibrated probabilities, labels."""

    kind: str
    classes: tuple[str, ...]
    temperature: float

    @abc.abstractmethod
    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Unnormalized scores, one column per class of `classes`."""

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.logits(texts), self.temperature)

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.classes[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def calibrate(self, validation: LabeledTexts) -> None:
        index = {name: i for i, name in enumerate(self.classes)}
        self.temperature = fit_temperature(
            self.logits(validation.texts), np.array([index[i] for i in validation.intents])
        )

    @abc.abstractmethod
    def save(self, folder: Path) -> None:
        """Everything `load_classifier` needs, in `folder`."""


def _write_meta(folder: Path, **meta: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


class BaselineClassifier(IntentClassifier):
    """TF-IDF over words (1-2 grams) and characters (2-5 grams) + a linear SVM; decision values
    become probabilities by temperature scaling on the validation split."""

    kind = "tfidf_linear_svm"

    def __init__(self, classes: Sequence[str], pipeline: Pipeline, temperature: float = 1.0):
        self.classes = tuple(classes)
        self.pipeline = pipeline
        self.temperature = temperature

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        scores = self.pipeline.decision_function(list(texts))
        trained = list(self.pipeline.classes_)
        if scores.ndim == 1:  # two classes: sklearn gives one column
            scores = np.stack([-scores, scores], axis=1)
        full = np.full((len(texts), len(self.classes)), -np.inf)
        full[:, [self.classes.index(name) for name in trained]] = scores
        return full

    def save(self, folder: Path) -> None:
        _write_meta(folder, kind=self.kind, classes=self.classes, temperature=self.temperature)
        skops.io.dump(self.pipeline, folder / PIPELINE_FILE)

    @classmethod
    def load(cls, folder: Path) -> BaselineClassifier:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        path = folder / PIPELINE_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: baselines are saved with skops (a pickled pipeline.joblib "
                "from an older version is not loaded; retrain it)"
            )
        untrusted = skops.io.get_untrusted_types(file=path)
        if untrusted:
            raise ValueError(f"{path} holds types outside skops' trusted set: {untrusted[:10]}")
        return cls(meta["classes"], skops.io.load(path), meta["temperature"])


@dataclass(frozen=True)
class LinearSettings:
    """The TF-IDF + linear SVM's settings: the baseline's defaults, or what a search chose."""

    c: float = 0.5
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)

    def params(self) -> dict[str, object]:
        return {
            "svm_c": self.c,
            "word_ngrams": f"{self.word_ngrams[0]}-{self.word_ngrams[1]}",
            "char_ngrams": f"{self.char_ngrams[0]}-{self.char_ngrams[1]}",
        }


LINEAR_SEARCH = tuple(
    LinearSettings(c, words, chars)
    for c in (0.25, 0.5, 1.0, 2.0)
    for words in ((1, 2), (1, 3))
    for chars in ((2, 5), (1, 6))
)
"""The grid the tuned linear model searches on validation (16 settings)."""


def train_baseline(
    train: LabeledTexts,
    validation: LabeledTexts,
    classes: Sequence[str],
    c: float = 0.5,
    settings: LinearSettings | None = None,
) -> BaselineClassifier:
    """Fit the TF-IDF + linear SVM on `train` (`settings`, else the baseline's with `c`),
    calibrate it on `validation` (when there is one)."""
    settings = settings or LinearSettings(c)
    features = make_union(
        TfidfVectorizer(ngram_range=settings.word_ngrams, sublinear_tf=True),
        TfidfVectorizer(
            analyzer="char_wb", ngram_range=settings.char_ngrams, sublinear_tf=True, min_df=2
        ),
    )
    pipeline = Pipeline([("features", features), ("svm", LinearSVC(C=settings.c, random_state=0))])
    pipeline.fit(train.texts, train.intents)
    model = BaselineClassifier(classes, pipeline)
    if len(validation):
        model.calibrate(validation)
    return model


@dataclass(frozen=True)
class SearchedLinear:
    classifier: BaselineClassifier
    settings: LinearSettings
    trials: list[tuple[LinearSettings, float]]
    """Each setting tried and its validation F1-macro, in the order tried."""


def search_linear(
    train: LabeledTexts,
    validation: LabeledTexts,
    classes: Sequence[str],
    grid: Sequence[LinearSettings] = LINEAR_SEARCH,
    on_trial: Callable[[int, LinearSettings, float], None] | None = None,
) -> SearchedLinear:
    """Every setting of `grid` fitted on train and scored on validation only (the test split
    is never seen); the best by validation F1-macro (ties: the first, the simpler) is kept."""
    if len(validation) == 0:
        raise TrainingDataError("the linear search scores settings on validation: it is empty")
    best: tuple[float, BaselineClassifier, LinearSettings] | None = None
    trials = []
    for n, settings in enumerate(grid, start=1):
        model = train_baseline(train, validation, classes, settings=settings)
        f1 = score_classification(
            validation.intents, model.predict_proba(validation.texts), classes
        ).f1_macro
        trials.append((settings, f1))
        if on_trial is not None:
            on_trial(n, settings, f1)
        if best is None or f1 > best[0]:
            best = (f1, model, settings)
    return SearchedLinear(best[1], best[2], trials)


class TransformerClassifier(IntentClassifier):
    """A fine-tuned sequence classifier with its tokenizer and calibration temperature."""

    kind = "transformer"

    def __init__(
        self,
        model,
        tokenizer,
        classes: Sequence[str],
        max_length: int,
        temperature: float = 1.0,
        device: torch.device | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.classes = tuple(classes)
        self.max_length = max_length
        self.temperature = temperature
        self.device = device or pick_device()
        self.model.to(self.device).eval()

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]

    @torch.inference_mode()
    def logits(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Logits in input order, computed in length-sorted batches."""
        token_ids = self.tokenize(texts)
        order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
        out = np.zeros((len(token_ids), len(self.classes)), dtype=np.float32)
        self.model.eval()
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = pad_batch([token_ids[i] for i in chosen], self.tokenizer.pad_token_id)
            batch = {key: value.to(self.device) for key, value in batch.items()}
            with torch.autocast(
                self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
            ):
                logits = self.model(**batch).logits
            out[chosen] = logits.float().cpu().numpy()
        return out

    def save(self, folder: Path) -> None:
        _write_meta(
            folder,
            kind=self.kind,
            classes=self.classes,
            temperature=self.temperature,
            max_length=self.max_length,
        )
        model = getattr(self.model, "module", self.model)
        model.save_pretrained(folder / "model", safe_serialization=True)
        self.tokenizer.save_pretrained(folder / "model")

    @classmethod
    def load(cls, folder: Path, device: str = "auto") -> TransformerClassifier:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                folder / "model", local_files_only=True, use_safetensors=True
            )
            tokenizer = AutoTokenizer.from_pretrained(folder / "model", local_files_only=True)
        return cls(
            model,
            tokenizer,
            meta["classes"],
            meta["max_length"],
            meta["temperature"],
            pick_device(device),
        )


class EnsembleClassifier(IntentClassifier):
    """The weighted mean of its members' calibrated probabilities, temperature-scaled again on
    validation: members that err on different texts (character n-grams and a transformer)
    outvote part of each other's mistakes."""

    kind = "ensemble"

    def __init__(
        self,
        members: Sequence[IntentClassifier],
        weights: Sequence[float],
        temperature: float = 1.0,
    ):
        if len(members) < 2 or len(members) != len(weights):
            raise ValueError(f"an ensemble needs ≥ 2 members, one weight each: {len(weights)}")
        if any(w < 0 for w in weights) or not math.isclose(sum(weights), 1.0):
            raise ValueError(f"ensemble weights must be ≥ 0 and sum to 1, got {list(weights)}")
        classes = {tuple(m.classes) for m in members}
        if len(classes) != 1:
            raise ValueError("ensemble members must share their classes, in the same order")
        self.members = list(members)
        self.weights = [float(w) for w in weights]
        self.classes = tuple(members[0].classes)
        self.temperature = temperature

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """log of the weighted mean probability (softmax at temperature 1 gives it back)."""
        mean = sum(
            w * m.predict_proba(texts)
            for m, w in zip(self.members, self.weights, strict=True)
            if w > 0
        )
        return np.log(np.clip(mean, 1e-12, None))

    def save(self, folder: Path) -> None:
        names = [f"member_{i}" for i in range(len(self.members))]
        _write_meta(
            folder,
            kind=self.kind,
            classes=self.classes,
            temperature=self.temperature,
            weights=self.weights,
            members=names,
        )
        for name, member in zip(names, self.members, strict=True):
            member.save(folder / name)

    @classmethod
    def load(cls, folder: Path) -> EnsembleClassifier:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        members = [load_classifier(folder / name) for name in meta["members"]]
        return cls(members, meta["weights"], meta["temperature"])


ENSEMBLE_WEIGHTS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))
"""The first member's weights tried on validation (the second gets the rest)."""


def fit_ensemble(
    first: IntentClassifier,
    second: IntentClassifier,
    validation: LabeledTexts,
    weight: float | None = None,
) -> tuple[EnsembleClassifier, dict[float, float]]:
    """The weight of `first` (against `second`) with the best validation F1-macro, ties to the
    lower validation log-loss (or the `weight` given), then calibrated on validation; and
    F1-macro per weight tried. Weights 0 and 1 are the members alone, so on validation the
    chosen ensemble never loses to either."""
    if len(validation) == 0:
        raise TrainingDataError("an ensemble's weights are chosen on validation: it is empty")
    index = {name: i for i, name in enumerate(first.classes)}
    truth = np.array([index[i] for i in validation.intents])
    probabilities = [first.predict_proba(validation.texts), second.predict_proba(validation.texts)]
    tried: dict[float, tuple[float, float]] = {}
    for tried_weight in ENSEMBLE_WEIGHTS:
        mean = tried_weight * probabilities[0] + (1 - tried_weight) * probabilities[1]
        f1 = score_classification(validation.intents, mean, first.classes).f1_macro
        loss = float(-np.log(np.clip(mean[np.arange(len(truth)), truth], 1e-12, None)).mean())
        tried[float(tried_weight)] = (f1, loss)
    if weight is None:
        weight = max(tried, key=lambda w: (tried[w][0], -tried[w][1]))
    ensemble = EnsembleClassifier([first, second], [weight, 1.0 - weight])
    ensemble.calibrate(validation)
    return ensemble, {w: f1 for w, (f1, _) in tried.items()}


def load_classifier(folder: Path) -> IntentClassifier:
    """Whichever classifier was saved in `folder`."""
    meta_path = folder / META_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} holds no saved classifier ({META_FILE} missing)")
    kind = json.loads(meta_path.read_text(encoding="utf-8"))["kind"]
    loaders = {
        BaselineClassifier.kind: BaselineClassifier.load,
        TransformerClassifier.kind: TransformerClassifier.load,
        EnsembleClassifier.kind: EnsembleClassifier.load,
    }
    if kind not in loaders:
        raise ValueError(f"{meta_path}: unknown classifier kind {kind!r}")
    return loaders[kind](folder)


def registered_f1_macro(
    registry: Registry, model_name: str, version: str, test: LabeledTexts
) -> float:
    """F1-macro on `test` of a registered classifier version, loaded through the registry (its
    digests verified): the score the promotion gate decides on, never a tag."""
    model = registry.load(model_name, version)
    predicted = model.predict(pd.DataFrame({"text": test.texts}))
    return score_classification(
        test.intents,
        np.array(predicted["probabilities"].tolist()),
        model.metadata.metadata["classes"],
    ).f1_macro
