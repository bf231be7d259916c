"""Calibrated probabilities for every classifier: temperature scaling, fitted on validation."""

from __future__ import annotations

import math

import numpy as np


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
