"""Secrets stay where they were put: private files are 0600 from their first byte and refused
once opened up; a child process gets no secret variable it is not handed."""

import os

import pytest

from ml.security.secret_files import SecretFileError, read_private_file, write_private_file
from ml.settings import child_environment, environment_set, environment_with


def test_a_private_file_is_private_from_the_start_and_refused_once_opened_up(tmp_path):
    path = tmp_path / "secrets" / "key"
    os.umask(0o022)  # what a default shell gives: 0644 for a plain open()
    write_private_file(path, "s3cr3t")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert read_private_file(path) == "s3cr3t"
    path.chmod(0o644)
    with pytest.raises(SecretFileError, match="readable by others"):
        read_private_file(path, "MY_SECRET_FILE")
    with pytest.raises(SecretFileError, match="no such file"):
        read_private_file(tmp_path / "missing")


def test_a_child_gets_no_secret_it_is_not_handed():
    secrets = {
        "MLFLOW_TRACKING_PASSWORD": "p1",
        "LABEL_STUDIO_TOKEN": "t1",
        "MLOPS_SERVING_API_KEYS": "k1",
        "MLOPS_SERVING_ADMIN_KEY": "k2",
        "AWS_SECRET_ACCESS_KEY": "k3",
    }
    with environment_set(**secrets, MLOPS_SERVING_API_KEYS_FILE="/path", MLOPS_DATA_HOME="/d"):
        child = child_environment()
        assert not set(secrets) & set(child), "no secret travels by default"
        assert child["MLOPS_SERVING_API_KEYS_FILE"] == "/path", "a path to a secret is no secret"
        assert child["MLOPS_DATA_HOME"] == "/d"
        handed = environment_with(passing=("MLFLOW_TRACKING_PASSWORD",), EXTRA="1")
        assert handed["MLFLOW_TRACKING_PASSWORD"] == "p1" and handed["EXTRA"] == "1"
        assert "LABEL_STUDIO_TOKEN" not in handed
