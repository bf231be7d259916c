"""The multi-GPU path (torchrun + DDP) exercised on CPU: two processes over gloo, a tiny model."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer, BertConfig, BertModel

from ml.requests.backbone import default_checkpoint_dir
from ml.requests.classifiers import LabeledTexts
from ml.requests.train_transformer import fine_tune_with_torchrun
from ml.requests.training import TransformerConfig

WORDS = {
    "card_lost": ["card", "lost", "stolen", "blocked"],
    "loan_rate": ["loan", "mortgage", "interest", "rate"],
    "app_login": ["app", "login", "password", "crash"],
}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-layer BERT with random weights and the real tokenizer: the DDP plumbing, fast."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(default_checkpoint_dir(), local_files_only=True)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def separable(rows: int) -> LabeledTexts:
    texts, intents = [], []
    for i in range(rows):
        intent = list(WORDS)[i % len(WORDS)]
        words = WORDS[intent]
        texts.append(f"my {words[i % 4]} and {words[(i + 1) % 4]} please")
        intents.append(intent)
    return LabeledTexts(texts, intents)


def test_torchrun_trains_in_two_processes_and_hands_back_one_classifier(
    tiny_checkpoint: Path,
) -> None:
    train, validation = separable(48), separable(12)
    result = fine_tune_with_torchrun(
        train,
        validation,
        sorted(WORDS),
        TransformerConfig(checkpoint=str(tiny_checkpoint), epochs=2, batch_size=8, max_length=16),
        processes=2,
    )
    assert result.world_size == 2
    assert result.device == "cpu"
    assert [record.epoch for record in result.history] == [1, 2]
    assert all(record.samples_per_second > 0 for record in result.history)
    probabilities = result.classifier.predict_proba(["my card is lost"])
    assert probabilities.shape == (1, 3)
    assert probabilities.sum() == pytest.approx(1.0)


def test_a_failing_distributed_run_says_why(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="torchrun training in 2 processes failed"):
        fine_tune_with_torchrun(
            separable(12),
            separable(6),
            sorted(WORDS),
            TransformerConfig(checkpoint=str(tmp_path / "missing"), epochs=1),
            processes=2,
        )
