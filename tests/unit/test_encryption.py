"""The prediction log is encrypted at rest: no plaintext on disk, a rotated key still reads old
files, a wrong key or a changed file fails with an error naming the file."""

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
from ml.security.encryption import KEYS_VARIABLE, EncryptionError, at_rest_cipher, rotate
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
    return log_files(root, *HOUR)


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
