"""The prediction log and the models' artifact folders are encrypted at rest: no plaintext on
disk, a rotated key still reads old files, a wrong key or a changed file fails with an error
naming the file; a model folder saved without keys loads as it is."""

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from ml.monitoring.prediction_log import (
    PredictionLogWriter,
    log_files,
    prediction_record,
    read_predictions,
)
from ml.security.encryption import (
    KEYS_VARIABLE,
    EncryptionError,
    at_rest_cipher,
    decrypted_folder,
    encrypt_folder,
    rotate,
)
from ml.settings import environment_set

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()
SERVED = datetime(2026, 12, 1, 10, tzinfo=UTC)
HOUR = (SERVED - timedelta(hours=1), SERVED + timedelta(hours=1))


def write_one(root: Path, text: str) -> list[Path]:
    writer = PredictionLogWriter(root, "w", flush_seconds=60)
    writer.log(
        [
            prediction_record(
                "classify",
                "request_classifier",
                "1",
                {"text": text},
                None,
                text=text,
                served_at=SERVED,
            )
        ]
    )
    writer.close()
    return [Path(uri) for uri in log_files(root, *HOUR)]


def test_files_on_disk_are_not_plaintext_and_read_back_with_the_key(tmp_path: Path) -> None:
    with environment_set(**{KEYS_VARIABLE: OLD}):
        files = write_one(tmp_path, "where is my card?")
        assert [p.name.endswith(".jsonl.enc") for p in files] == [True]
        raw = files[0].read_bytes()
        assert b"where is my card" not in raw and b"request_id" not in raw
        assert read_predictions(tmp_path, *HOUR)["text"].to_list() == ["where is my card?"]


def test_a_rotated_key_still_reads_old_files_and_rotation_moves_them_to_the_new_key(
    tmp_path: Path,
) -> None:
    with environment_set(**{KEYS_VARIABLE: OLD}):
        [path] = write_one(tmp_path, "old traffic")
    with environment_set(**{KEYS_VARIABLE: f"{NEW},{OLD}"}):
        assert read_predictions(tmp_path, *HOUR)["text"].to_list() == ["old traffic"]
        path.write_bytes(rotate(at_rest_cipher(), path.read_bytes(), str(path)))
    with environment_set(**{KEYS_VARIABLE: NEW}):
        assert read_predictions(tmp_path, *HOUR)["text"].to_list() == ["old traffic"]


def test_a_wrong_key_a_changed_file_or_no_key_fail_clearly(tmp_path: Path) -> None:
    with environment_set(**{KEYS_VARIABLE: OLD}):
        [path] = write_one(tmp_path, "private")
    with environment_set(**{KEYS_VARIABLE: NEW}), pytest.raises(EncryptionError, match=path.name):
        read_predictions(tmp_path, *HOUR)
    with (
        environment_set(**{KEYS_VARIABLE: ""}),
        pytest.raises(EncryptionError, match=KEYS_VARIABLE),
    ):
        read_predictions(tmp_path, *HOUR)
    data = bytearray(path.read_bytes())
    data[40] ^= 1
    path.write_bytes(bytes(data))
    with environment_set(**{KEYS_VARIABLE: OLD}), pytest.raises(EncryptionError, match="changed"):
        read_predictions(tmp_path, *HOUR)
    with pytest.raises(EncryptionError, match="not a Fernet key"):
        at_rest_cipher({KEYS_VARIABLE: "not-a-key"})


SAVED = {
    "classifier.json": b'{"kind": "transformer", "classes": ["card_arrival", "top_up"]}',
    "model/model.safetensors": os.urandom(64) + b"bert.encoder.layer.0.attention" * 200,
    "model/tokenizer.json": b'{"model": {"vocab": {"[PAD]": 0, "card": 1}}}',
}
"""What a classifier's `save` writes: metadata, weights in a subfolder, the tokenizer."""


def saved_model(folder: Path) -> Path:
    for name, data in SAVED.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def contents(folder: Path) -> dict[str, bytes]:
    files = (path for path in folder.rglob("*") if path.is_file())
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in files}


def test_a_model_folder_is_ciphertext_on_disk_and_decrypts_into_a_private_copy_while_loading(
    tmp_path: Path,
) -> None:
    folder = saved_model(tmp_path / "classifier")
    encrypt_folder(at_rest_cipher({KEYS_VARIABLE: OLD}), folder)
    stored = contents(folder)
    assert sorted(stored) == sorted(f"{name}.enc" for name in SAVED), "no plaintext file is left"
    for name, data in stored.items():
        assert oct((folder / name).stat().st_mode & 0o777) == "0o600", name
        assert data.startswith(b"gAAAAA"), f"{name} is a Fernet token"
        for plain in (b"card_arrival", b"bert.encoder", b"[PAD]", SAVED["model/model.safetensors"]):
            assert plain not in data, f"{plain[:20]!r} in {name}"

    with decrypted_folder(at_rest_cipher({KEYS_VARIABLE: OLD}), folder) as copy:
        assert copy != folder and copy.name == "classifier"
        assert contents(copy) == SAVED
        assert oct(copy.parent.stat().st_mode & 0o777) == "0o700"
        assert oct((copy / "model").stat().st_mode & 0o777) == "0o700"
        for name in SAVED:
            assert oct((copy / name).stat().st_mode & 0o777) == "0o600", name
    assert not copy.parent.exists(), "the decrypted copy is removed once loading is done"
    assert contents(folder) == stored, "the stored folder is left as it was"


def test_a_model_folder_encrypted_under_an_old_key_decrypts_after_rotation(tmp_path: Path) -> None:
    folder = saved_model(tmp_path / "forecaster")
    encrypt_folder(at_rest_cipher({KEYS_VARIABLE: OLD}), folder)
    with decrypted_folder(at_rest_cipher({KEYS_VARIABLE: f"{NEW},{OLD}"}), folder) as copy:
        assert contents(copy) == SAVED


def test_a_model_folder_with_a_wrong_key_no_key_or_a_planted_plain_file_fails_naming_the_file(
    tmp_path: Path,
) -> None:
    folder = saved_model(tmp_path / "classifier")
    encrypt_folder(at_rest_cipher({KEYS_VARIABLE: OLD}), folder)
    first = re.escape(str(folder / "classifier.json.enc"))
    with (
        pytest.raises(EncryptionError, match=f"{first}: cannot be decrypted"),
        decrypted_folder(at_rest_cipher({KEYS_VARIABLE: NEW}), folder),
    ):
        pass
    with (
        pytest.raises(EncryptionError, match=f"{first} is encrypted: set {KEYS_VARIABLE}"),
        decrypted_folder(None, folder),
    ):
        pass
    with pytest.raises(EncryptionError, match=r"already ends in \.enc"):
        encrypt_folder(at_rest_cipher({KEYS_VARIABLE: OLD}), folder)
    (folder / "model" / "extra.pkl").write_bytes(b"\x80\x04K\x01.")
    with (
        pytest.raises(EncryptionError, match=r"model/extra\.pkl: a plain file"),
        decrypted_folder(at_rest_cipher({KEYS_VARIABLE: OLD}), folder),
    ):
        pass


def test_a_model_folder_saved_without_keys_loads_as_it_is(tmp_path: Path) -> None:
    folder = saved_model(tmp_path / "classifier")
    for cipher in (None, at_rest_cipher({KEYS_VARIABLE: OLD})):
        with decrypted_folder(cipher, folder) as loaded:
            assert loaded == folder
    assert contents(folder) == SAVED
