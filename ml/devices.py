"""Where torch trains and predicts, the same for every domain: CUDA (this process's local rank
under torchrun), then MPS, then the CPU; and one seed for every random source."""

from __future__ import annotations

import random

import numpy as np
import torch

from ml.settings import DistributedProcess


def pick_device(preference: str = "auto") -> torch.device:
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda", DistributedProcess.from_env().local_rank)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
