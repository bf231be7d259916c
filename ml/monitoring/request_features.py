"""What drift is measured on for requests: a few numeric and categorical features of each text
(`REQUEST_FEATURES`), some against a reference built from the champion's training texts."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ml.data import objects

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

    def save(self, folder: str | Path) -> None:
        """Into `folder` (a folder or an object-store prefix), the centroid before the
        vocabulary that `load` looks for first."""
        meta = {"vocabulary": sorted(self.vocabulary), "dimensions": int(self.centroid.shape[0])}
        centroid = io.BytesIO()
        np.save(centroid, self.centroid)
        objects.write_bytes(objects.join(folder, CENTROID_FILE), centroid.getvalue())
        objects.write_json(objects.join(folder, REFERENCE_FILE), meta)

    @classmethod
    def load(cls, folder: str | Path) -> TextReference:
        path = objects.join(folder, REFERENCE_FILE)
        if not objects.exists(path):
            raise FileNotFoundError(f"{folder} holds no text reference ({REFERENCE_FILE} missing)")
        meta = objects.read_json(path)
        centroid_file = objects.join(folder, CENTROID_FILE)
        centroid = np.load(io.BytesIO(objects.read_bytes(centroid_file)))
        if centroid.shape != (meta["dimensions"],):
            raise ValueError(
                f"{centroid_file} holds shape {centroid.shape}; expected ({meta['dimensions']},)"
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
