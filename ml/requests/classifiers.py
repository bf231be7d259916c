"""Intent classifiers: the TF-IDF + linear SVM baseline and the fine-tuned transformer, both
calibrated by temperature scaling, saved without pickles (skops, safetensors) and loaded back."""

from __future__ import annotations

import abc
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline, make_union
from sklearn.svm import LinearSVC

from ml.lifecycle.registry import Registry
from ml.metrics import score_classification
from ml.requests.backbone import pad_batch, pick_device, quiet_transformers

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


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, true_index: np.ndarray) -> float:
    """The softmax temperature that minimizes validation log-loss (temperature scaling)."""
    if len(true_index) == 0:
        return 1.0
    best, best_loss = 1.0, math.inf
    for temperature in np.geomspace(0.02, 50.0, 240):
        chosen = softmax(logits, temperature)[np.arange(len(true_index)), true_index]
        loss = float(-np.log(np.clip(chosen, 1e-12, None)).mean())
        if loss < best_loss:
            best, best_loss = float(temperature), loss
    return best


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


def train_baseline(
    train: LabeledTexts, validation: LabeledTexts, classes: Sequence[str], c: float = 0.5
) -> BaselineClassifier:
    """Fit the baseline on `train`, calibrate it on `validation` (when there is one)."""
    features = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    pipeline = Pipeline([("features", features), ("svm", LinearSVC(C=c, random_state=0))])
    pipeline.fit(train.texts, train.intents)
    model = BaselineClassifier(classes, pipeline)
    if len(validation):
        model.calibrate(validation)
    return model


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


def load_classifier(folder: Path) -> IntentClassifier:
    """Whichever classifier was saved in `folder`."""
    meta_path = folder / META_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} holds no saved classifier ({META_FILE} missing)")
    kind = json.loads(meta_path.read_text(encoding="utf-8"))["kind"]
    loaders = {
        BaselineClassifier.kind: BaselineClassifier.load,
        TransformerClassifier.kind: TransformerClassifier.load,
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
