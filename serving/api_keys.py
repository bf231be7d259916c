"""Who may call the service: API keys per caller, kept only as SHA-256 digests, checked by an ASGI
middleware on the service itself, so that the check holds behind any proxy and on any port.

A key file has one caller per line, `<caller> <role> sha256:<hex digest>` (`#` starts a
comment); it is read from `MLOPS_SERVING_API_KEYS_FILE`, or the same lines from
`MLOPS_SERVING_API_KEYS`. Roles: `application` calls the model endpoints; `admin` may also call
the admin routes. A key travels as `Authorization: Bearer <key>` or `X-API-Key: <key>`. The
probes (`/livez`, `/readyz`) stay open; `/metrics` answers only clients on the loopback address
(Prometheus beside the service), and the front door does not route it.

Keys are random 32-byte tokens, so one SHA-256 is a sufficient digest (no salt or slow hash: a
key cannot be guessed from a dictionary). Every stored digest is compared, in constant time,
whatever matched, so the time taken says nothing about which key came close.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from serving.http_contract import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    _header,
    _request_id_of,
    _send_json,
    error_body,
)

KEYS_FILE_VARIABLE = "MLOPS_SERVING_API_KEYS_FILE"
KEYS_VARIABLE = "MLOPS_SERVING_API_KEYS"
APPLICATION, ADMIN = "application", "admin"
ROLES = (APPLICATION, ADMIN)
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz"})
LOOPBACK_ONLY_PATHS = frozenset({"/metrics"})
DIGEST_PREFIX = "sha256:"


class ApiKeyError(ValueError):
    """A key file or key line that cannot be used, naming where and what."""


@dataclass(frozen=True)
class ApiKey:
    caller: str
    role: str
    digest: str
    """Hex SHA-256 of the key."""


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(32)


def key_line(caller: str, role: str, key: str) -> str:
    """The key file line that lets `key` in as `caller` with `role` (the key is not in it)."""
    return f"{caller} {role} {DIGEST_PREFIX}{digest_of(key)}"


def parse_keys(text: str, where: str) -> tuple[ApiKey, ...]:
    keys, callers = [], set()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3:
            raise ApiKeyError(
                f"{where} line {number}: expected '<caller> <role> sha256:<hex>', got "
                f"{len(parts)} field(s)"
            )
        caller, role, digest = parts
        if role not in ROLES:
            raise ApiKeyError(f"{where} line {number}: role {role!r} is not one of {ROLES}")
        hex_digest = digest.removeprefix(DIGEST_PREFIX)
        if not digest.startswith(DIGEST_PREFIX) or len(hex_digest) != 64:
            raise ApiKeyError(
                f"{where} line {number}: the key must be stored as sha256:<64 hex digits> "
                "(never the key itself)"
            )
        try:
            int(hex_digest, 16)
        except ValueError:
            raise ApiKeyError(f"{where} line {number}: the digest is not hexadecimal") from None
        if caller in callers:
            raise ApiKeyError(f"{where} line {number}: caller {caller!r} appears twice")
        callers.add(caller)
        keys.append(ApiKey(caller, role, hex_digest.lower()))
    return tuple(keys)


def load_keys(environ: Mapping[str, str] | None = None) -> tuple[ApiKey, ...] | None:
    """The configured keys, or None when neither variable is set. A key file that others can
    read is refused."""
    environ = os.environ if environ is None else environ
    path = environ.get(KEYS_FILE_VARIABLE)
    if path:
        file = Path(path)
        if not file.is_file():
            raise ApiKeyError(f"{KEYS_FILE_VARIABLE}={path}: no such file")
        mode = stat.S_IMODE(file.stat().st_mode)
        if mode & 0o077:
            raise ApiKeyError(f"{path} is readable by others (mode {mode:o}): chmod 600 it first")
        return parse_keys(file.read_text(encoding="utf-8"), path)
    if environ.get(KEYS_VARIABLE):
        return parse_keys(environ[KEYS_VARIABLE].replace(";", "\n"), KEYS_VARIABLE)
    return None


def write_key_file(path: Path, lines: Iterable[str]) -> None:
    """A key file created with mode 0600 from the start (never readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")


def presented_key(scope: Scope) -> str | None:
    authorization = _header(scope, b"authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    given = _header(scope, b"x-api-key")
    return given.strip() if given and given.strip() else None


def match_key(keys: Iterable[ApiKey], key: str) -> ApiKey | None:
    """The caller whose digest is the key's, comparing with every stored digest."""
    given = digest_of(key)
    found = None
    for candidate in keys:
        if hmac.compare_digest(candidate.digest, given):
            found = candidate
    return found


def _is_loopback(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


class ApiKeyAuth:
    """ASGI middleware: 401 without a valid key, 403 for an application key on an admin route,
    404 for `/metrics` from off the machine. The caller is put in `scope["state"]["caller"]`."""

    def __init__(self, app: ASGIApp, keys: Iterable[ApiKey], admin_paths: Iterable[str] = ()):
        self.app = app
        self.keys = tuple(keys)
        self.admin_paths = frozenset(admin_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        request_id = _request_id_of(scope)
        if path in LOOPBACK_ONLY_PATHS:
            if _is_loopback(scope):
                await self.app(scope, receive, send)
            else:
                await _send_json(
                    send, 404, error_body(404, "no such route", (), request_id), request_id
                )
            return
        key = presented_key(scope)
        caller = match_key(self.keys, key) if key else None
        if caller is None:
            message = (
                "no API key: send `Authorization: Bearer <key>`"
                if key is None
                else "the API key is not valid"
            )
            await _send_json(
                send,
                401,
                error_body(401, message, (), request_id),
                request_id,
                [(b"www-authenticate", b'Bearer realm="mlops"')],
            )
            return
        if path in self.admin_paths and caller.role != ADMIN:
            message = f"{path} needs an admin key; {caller.caller} has role {caller.role}"
            await _send_json(send, 403, error_body(403, message, (), request_id), request_id)
            return
        scope.setdefault("state", {})["caller"] = caller.caller
        await self.app(scope, receive, send)
