"""Fine-tuning the CNN on cell images: augmentation (flips, small rotations, brightness and
contrast), class-weighted loss, bf16 autocast on CUDA, early stopping on the validation
defect-class F1, then temperature and threshold calibrated on validation."""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from tqdm.auto import tqdm

from ml.defects.classifiers import (
    CnnDefectClassifier,
    choose_threshold,
    efficientnet_lite0,
    normalized,
)
from ml.defects.features import resized
from ml.devices import pick_device, seed_everything


@dataclass(frozen=True)
class CnnConfig:
    input_size: int = 224
    """EfficientNet-Lite0's own resolution; the cells are 300² pixels."""
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 12
    patience: int = 3
    """Stop after this many epochs without a better validation defect F1."""
    augment: bool = True
    max_rotation_degrees: float = 4.0
    brightness: float = 0.2
    """Each training image's brightness and contrast scaled by up to ±this share."""
    pretrained: bool = True
    """Start from the packaged ImageNet weights (False: from scratch, for comparison only)."""
    seed: int = 13
    device: str = "auto"
    autocast: str = "auto"
    """'auto': bf16 autocast on CUDA only; 'bf16': everywhere; 'off'."""


@dataclass(frozen=True)
class CnnEpoch:
    epoch: int
    train_loss: float
    validation_defect_f1: float
    """At the threshold that is best on validation this epoch."""
    samples_per_second: float
    seconds: float


@dataclass
class CnnFineTuneResult:
    classifier: CnnDefectClassifier
    history: list[CnnEpoch] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    device: str = "cpu"
    bf16: bool = False

    def params(self) -> dict[str, object]:
        return {"device": self.device, "bf16_autocast": self.bf16}


def augment(batch: torch.Tensor, config: CnnConfig, generator: torch.Generator) -> torch.Tensor:
    """Random flips, a small rotation and a brightness/contrast change per image: (n, s, s) gray
    in 0..1 → the same shape."""
    n = batch.shape[0]
    flips = torch.rand(n, 2, generator=generator) < 0.5
    batch = torch.where(flips[:, 0, None, None], batch.flip(-1), batch)
    batch = torch.where(flips[:, 1, None, None], batch.flip(-2), batch)
    angles = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(
        config.max_rotation_degrees
    )
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.stack(
        [torch.stack([cos, -sin, torch.zeros(n)], 1), torch.stack([sin, cos, torch.zeros(n)], 1)], 1
    )
    grid = F.affine_grid(theta, (n, 1, *batch.shape[-2:]), align_corners=False)
    batch = F.grid_sample(batch.unsqueeze(1), grid, padding_mode="border", align_corners=False)
    batch = batch.squeeze(1)
    scale = 1 + (torch.rand(n, 1, 1, generator=generator) * 2 - 1) * config.brightness
    contrast = 1 + (torch.rand(n, 1, 1, generator=generator) * 2 - 1) * config.brightness
    mean = batch.mean(dim=(1, 2), keepdim=True)
    return ((batch - mean) * contrast + mean * scale).clamp(0, 1)


def _uses_bf16(config: CnnConfig, device: torch.device) -> bool:
    return config.autocast == "bf16" or (config.autocast == "auto" and device.type == "cuda")


def fine_tune_cnn(
    train_images: Sequence[np.ndarray],
    train_defective: np.ndarray,
    validation_images: Sequence[np.ndarray],
    validation_defective: np.ndarray,
    config: CnnConfig = CnnConfig(),
    on_epoch: Callable[[CnnEpoch], None] | None = None,
    show_progress: bool = False,
) -> CnnFineTuneResult:
    """Fine-tune EfficientNet-Lite0 on the training cells; keep the epoch with the best
    validation defect F1, stop after `patience` epochs without one, then calibrate."""
    train_y = torch.as_tensor(np.asarray(train_defective, dtype=np.int64))
    if len(set(train_y.tolist())) < 2:
        raise ValueError(
            f"{len(train_y)} training images of one class only: the CNN needs defective and "
            "functional cells"
        )
    validation_defective = np.asarray(validation_defective, dtype=bool)
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = pick_device(config.device)
    bf16 = _uses_bf16(config, device)
    model = efficientnet_lite0(config.pretrained).to(device)
    classifier = CnnDefectClassifier(model, config.input_size, device=device)
    gray = torch.from_numpy(np.stack([resized(p, config.input_size) for p in train_images]))
    counts = torch.bincount(train_y, minlength=2).float()
    class_weights = (counts.sum() / (2 * counts)).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    batches_per_epoch = math.ceil(len(train_y) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.learning_rate,
        total_steps=max(1, batches_per_epoch * config.epochs),
        pct_start=0.15,
    )
    result = CnnFineTuneResult(classifier, device=str(device), bf16=bf16)
    best_f1, best_state, stale = -1.0, None, 0
    progress = tqdm(
        total=batches_per_epoch * config.epochs,
        desc="fine-tuning the CNN",
        unit="batch",
        file=sys.__stderr__,
        disable=not show_progress,
    )
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(train_y), generator=generator)
        started, loss_sum = time.perf_counter(), torch.zeros((), device=device)
        for start in range(0, len(order), config.batch_size):
            chosen = order[start : start + config.batch_size]
            batch = gray[chosen]
            if config.augment:
                batch = augment(batch, config, generator)
            inputs = normalized(batch).to(device, non_blocking=True)
            target = train_y[chosen].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(inputs)
            loss = F.cross_entropy(logits.float(), target, weight=class_weights)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach() * len(chosen)
            progress.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        f1 = _validation_f1(classifier, validation_images, validation_defective)
        record = CnnEpoch(
            epoch, loss_sum.item() / len(train_y), f1, len(train_y) / seconds, seconds
        )
        result.history.append(record)
        progress.set_postfix(validation_defect_f1=f"{f1:.4f}")
        if on_epoch:
            on_epoch(record)
        if not len(validation_defective):
            result.best_epoch = epoch
        elif f1 > best_f1:
            best_f1, stale, result.best_epoch = f1, 0, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            stale += 1
            if stale >= config.patience and epoch < config.epochs:
                result.stopped_early = True
                break
    progress.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    if len(validation_defective):
        classifier.calibrate(validation_images, validation_defective)
    return result


def _validation_f1(
    classifier: CnnDefectClassifier, images: Sequence[np.ndarray], defective: np.ndarray
) -> float:
    if not len(defective):
        return 0.0
    probability = classifier.predict_proba(images)[:, 1]
    cut = choose_threshold(probability, defective)
    return float(f1_score(defective, probability >= cut, zero_division=0))


def cnn_params(config: CnnConfig) -> dict[str, object]:
    return {f"cnn_{key}": value for key, value in asdict(config).items()}
