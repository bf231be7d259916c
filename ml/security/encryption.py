"""Encryption at rest of what the platform keeps of its traffic (the prediction and request
logs): `cryptography`'s Fernet (AES-128-CBC with an HMAC-SHA256, so a changed file fails
loudly), several keys through MultiFernet so that a key can be rotated: the first key encrypts,
every key decrypts, and `rotate` re-encrypts old files under the first.

The keys come from `MLOPS_ENCRYPTION_KEYS` (comma-separated Fernet keys, newest first). The
demo, `make serve` and `make dev` generate one once into `encryption-keys` in the secrets folder
(mode 0600) when the variable is unset, before they start anything, so every process of the
deployment (the serving workers, the runs) is handed the same keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ml.security.secret_files import read_private_file, write_private_file

KEYS_VARIABLE = "MLOPS_ENCRYPTION_KEYS"
KEYS_FILE_NAME = "encryption-keys"
ENCRYPTED_SUFFIX = ".enc"


class EncryptionError(ValueError):
    """Keys that cannot be used, or data the keys cannot decrypt, saying which."""


def _parse(text: str, where: str) -> MultiFernet:
    keys = [k.strip() for k in text.replace("\n", ",").split(",") if k.strip()]
    if not keys:
        raise EncryptionError(f"{where}: no key")
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError:
        raise EncryptionError(
            f"{where}: a key is not a Fernet key (32 url-safe base64-encoded bytes; make one "
            "with `python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`)"
        ) from None


def at_rest_cipher(environ: Mapping[str, str] | None = None) -> MultiFernet | None:
    """The deployment's keys from `MLOPS_ENCRYPTION_KEYS` (None when it is unset: a deployment
    that keeps its logs on an encrypted volume instead)."""
    environ = os.environ if environ is None else environ
    text = environ.get(KEYS_VARIABLE, "")
    return _parse(text, KEYS_VARIABLE) if text.strip() else None


def generated_keys_into_environment(secrets_dir: Path) -> Path | None:
    """What the platform's launchers (the demo, `make serve`, `make dev`) do before they start
    anything: unless `MLOPS_ENCRYPTION_KEYS` is set, a key is generated once into the secrets
    folder (0600) and exported to this process, whose children are handed it. Returns the key
    file, or None when the environment gave the keys."""
    if os.environ.get(KEYS_VARIABLE, "").strip():
        return None
    path = secrets_dir / KEYS_FILE_NAME
    if not path.exists():
        write_private_file(path, Fernet.generate_key().decode() + "\n")
    os.environ[KEYS_VARIABLE] = read_private_file(path).strip()
    return path


def encrypt(cipher: MultiFernet, data: bytes) -> bytes:
    return cipher.encrypt(data)


def decrypt(cipher: MultiFernet, data: bytes, where: str) -> bytes:
    try:
        return cipher.decrypt(data)
    except InvalidToken:
        raise EncryptionError(
            f"{where}: cannot be decrypted with the configured keys (a wrong or missing key, or "
            "the file was changed)"
        ) from None


def rotate(cipher: MultiFernet, data: bytes, where: str) -> bytes:
    """`data` encrypted again under the first key."""
    try:
        return cipher.rotate(data)
    except InvalidToken:
        raise EncryptionError(f"{where}: cannot be decrypted with the configured keys") from None
