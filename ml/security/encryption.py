"""Encryption at rest of what the platform keeps of its traffic (the prediction and request
logs) and of the registered models' artifacts: `cryptography`'s Fernet (AES-128-CBC with an
HMAC-SHA256, so a changed file fails loudly), several keys through MultiFernet so that a key can
be rotated: the first key encrypts, every key decrypts, and `rotate` re-encrypts old files under
the first.

The keys come from `MLOPS_ENCRYPTION_KEYS` (comma-separated Fernet keys, newest first). The
demo, `make serve` and `make dev` generate one once into `encryption-keys` in the secrets folder
(mode 0600) when the variable is unset, before they start anything, so every process of the
deployment (the serving workers, the runs) is handed the same keys.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ml.security.secret_files import private_dir, read_private_file, write_private_file

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


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def _write_new_private_file(path: Path, data: bytes) -> None:
    """`data` in a new file of mode 0600 from its first byte (never over an existing one)."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(data)


def encrypt_folder(cipher: MultiFernet, folder: Path) -> None:
    """Every file under `folder` replaced by `<name>.enc` (its Fernet token, mode 0600), so that
    what a model's `save` wrote leaves for the artifact store, and every Bento, as ciphertext."""
    files = _files(folder)
    for path in files:
        if path.name.endswith(ENCRYPTED_SUFFIX):
            raise EncryptionError(
                f"{path}: already ends in {ENCRYPTED_SUFFIX} (the folder was encrypted before, "
                "or a model file takes the name decryption would strip)"
            )
    for path in files:
        _write_new_private_file(
            path.with_name(path.name + ENCRYPTED_SUFFIX), encrypt(cipher, path.read_bytes())
        )
        path.unlink()


@contextlib.contextmanager
def decrypted_folder(cipher: MultiFernet | None, folder: Path) -> Iterator[Path]:
    """`folder` as its `save` wrote it, for loading: an encrypted folder (see `encrypt_folder`)
    is decrypted into a private temporary folder (0700, files 0600) that is removed on exit, so
    plaintext lives only while a model loads. A folder holding no `.enc` file is yielded as it
    is: versions registered before encryption, or by a deployment without keys."""
    files = _files(folder)
    encrypted = [path for path in files if path.name.endswith(ENCRYPTED_SUFFIX)]
    if not encrypted:
        yield folder
        return
    if cipher is None:
        raise EncryptionError(
            f"{encrypted[0]} is encrypted: set {KEYS_VARIABLE} to the keys it was encrypted "
            "with to load it"
        )
    if len(encrypted) < len(files):
        plain = next(path for path in files if not path.name.endswith(ENCRYPTED_SUFFIX))
        raise EncryptionError(
            f"{plain}: a plain file in an encrypted folder (encrypt_folder encrypts every file)"
        )
    with tempfile.TemporaryDirectory(prefix="decrypted-") as private:
        copy = Path(private) / folder.name
        for path in encrypted:
            target = copy / path.relative_to(folder).with_name(
                path.name.removesuffix(ENCRYPTED_SUFFIX)
            )
            private_dir(target.parent)
            _write_new_private_file(target, decrypt(cipher, path.read_bytes(), str(path)))
        yield copy
