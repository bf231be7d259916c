"""Who may call the service: API keys per caller, kept only as SHA-256 digests, checked by an ASGI
middleware on the service itself, so that the check holds behind any proxy and on any port.

A key file has one caller per line, `<caller> <role> sha256:<hex digest>` (`#` starts a
comment); it is read from `MLOPS_SERVING_API_KEYS_FILE`, or the same lines from
`MLOPS_SERVING_API_KEYS`. Roles: `application` calls the model endpoints; `admin` may also call
the admin routes. A key travels as `Authorization: Bearer <key>` or `X-API-Key: <key>`. The
probes (`/livez`, `/readyz`) stay open, and so does the published contract: `/docs.json` and
the page that shows it (`GET /` and the page's own files under `/static_content/`), where a
developer enters a key before trying an endpoint; `/metrics` answers only clients on the
loopback address (Prometheus beside the service), and the front door does not route it.

Keys are random 32-byte tokens, so one SHA-256 is a sufficient digest (no salt or slow hash: a
key cannot be guessed from a dictionary). Every stored digest is compared, in constant time,
whatever matched, so the time taken says nothing about which key came close.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ml.security.secret_files import SecretFileError, read_private_file, write_private_file
from serving.http_contract import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    error_body,
    header_value,
    request_id_of,
    send_json,
)

KEYS_FILE_VARIABLE = "MLOPS_SERVING_API_KEYS_FILE"
KEYS_VARIABLE = "MLOPS_SERVING_API_KEYS"
CLIENT_KEY_VARIABLE = "MLOPS_SERVING_API_KEY"
ADMIN_KEY_VARIABLE = "MLOPS_SERVING_ADMIN_KEY"
KEYS_FILE_NAME = "serving-api-keys"
CLIENT_KEYS_FILE_NAME = "serving-client-keys.json"
APPLICATION, ADMIN = "application", "admin"
ROLES = (APPLICATION, ADMIN)
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/docs.json"})
"""The probes and the published contract (it holds no data)."""
DOCS_PAGE = "/"
DOCS_PAGE_FILES = "/static_content/"
_PLAIN_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""One file name directly in the folder: no sub-path, no hidden (dot) file."""
LOOPBACK_ONLY_PATHS = frozenset({"/metrics"})
DIGEST_PREFIX = "sha256:"
_caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")


def current_caller() -> str:
    """The caller whose key let this request in ('' outside a request)."""
    return _caller.get()


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
        try:
            text = read_private_file(Path(path), KEYS_FILE_VARIABLE)
        except SecretFileError as error:
            raise ApiKeyError(str(error)) from None
        return parse_keys(text, path)
    if environ.get(KEYS_VARIABLE):
        return parse_keys(environ[KEYS_VARIABLE].replace(";", "\n"), KEYS_VARIABLE)
    return None


def keys_for_service(environ: Mapping[str, str] | None = None) -> tuple[ApiKey, ...]:
    """The keys the service checks: it does not start without any (no open service by
    accident)."""
    keys = load_keys(environ)
    if not keys:
        raise ApiKeyError(
            f"no API keys: set {KEYS_FILE_VARIABLE} (a file of '<caller> <role> sha256:<hex>' "
            f"lines, mode 0600) or {KEYS_VARIABLE}; `make serve` and the demo generate one "
            "under the data home's secrets folder"
        )
    return keys


def write_key_file(path: Path, lines: Iterable[str]) -> None:
    """A key file created with mode 0600 from the start (never readable in between)."""
    write_private_file(path, "\n".join(lines) + "\n")


# --- the platform's own callers ---------------------------------------------------------------


@dataclass(frozen=True)
class ServingCredentials:
    """The keys the platform's own callers send (the rollout smoke test, the demo's traffic,
    the benchmarks), and the key file the service it starts reads."""

    application: str
    admin: str
    keys_file: Path | None = None
    """None when the operator configured the service's keys in the environment."""

    def headers(self, role: str = APPLICATION) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin if role == ADMIN else self.application}"}

    def server_environment(self) -> dict[str, str]:
        return {KEYS_FILE_VARIABLE: str(self.keys_file)} if self.keys_file else {}


def platform_credentials(
    secrets_dir: Path, environ: Mapping[str, str] | None = None
) -> ServingCredentials:
    """Where the operator configured the service's keys, the platform's callers send
    `MLOPS_SERVING_API_KEY` (application) and `MLOPS_SERVING_ADMIN_KEY`; otherwise one
    application and one admin key are generated once under `secrets_dir` (the digests in
    `serving-api-keys`, the keys themselves in `serving-client-keys.json`, both 0600)."""
    environ = os.environ if environ is None else environ
    if environ.get(KEYS_FILE_VARIABLE) or environ.get(KEYS_VARIABLE):
        missing = [v for v in (CLIENT_KEY_VARIABLE, ADMIN_KEY_VARIABLE) if not environ.get(v)]
        if missing:
            raise ApiKeyError(
                f"the service's keys are configured, so the platform's own callers need theirs: "
                f"set {' and '.join(missing)}"
            )
        return ServingCredentials(environ[CLIENT_KEY_VARIABLE], environ[ADMIN_KEY_VARIABLE])
    keys_file = secrets_dir / KEYS_FILE_NAME
    client_file = secrets_dir / CLIENT_KEYS_FILE_NAME
    if keys_file.exists() and client_file.exists():
        known = json.loads(read_private_file(client_file))
        read_private_file(keys_file)  # refused if it was opened up
        return ServingCredentials(known[APPLICATION], known[ADMIN], keys_file)
    application, admin = new_key(), new_key()
    write_key_file(
        keys_file,
        [
            key_line("platform-application", APPLICATION, application),
            key_line("platform-admin", ADMIN, admin),
        ],
    )
    write_private_file(client_file, json.dumps({APPLICATION: application, ADMIN: admin}))
    return ServingCredentials(application, admin, keys_file)


def presented_key(scope: Scope) -> str | None:
    authorization = header_value(scope, b"authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    given = header_value(scope, b"x-api-key")
    return given.strip() if given and given.strip() else None


def match_key(keys: Iterable[ApiKey], key: str) -> ApiKey | None:
    """The caller whose digest is the key's, comparing with every stored digest."""
    given = digest_of(key)
    found = None
    for candidate in keys:
        if hmac.compare_digest(candidate.digest, given):
            found = candidate
    return found


def is_open(scope: Scope) -> bool:
    """The probes and the contract for any method; the documentation page (Swagger UI) and its
    own files only to read (GET or HEAD): the page itself holds no data and no key."""
    path = scope["path"]
    if path in OPEN_PATHS:
        return True
    if scope.get("method") not in ("GET", "HEAD"):
        return False
    if path == DOCS_PAGE:
        return True
    name = path.removeprefix(DOCS_PAGE_FILES)
    return name != path and _PLAIN_FILE_NAME.fullmatch(name) is not None


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
    404 for `/metrics` from off the machine. Endpoints read the caller with `current_caller()`."""

    def __init__(
        self, app: ASGIApp, keys: Iterable[ApiKey] | None = None, admin_paths: Iterable[str] = ()
    ):
        self.app = app
        # Read when the worker builds its app (not when the service is imported by a build).
        self.keys = tuple(keys) if keys is not None else keys_for_service()
        self.admin_paths = frozenset(admin_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        request_id = request_id_of(scope)
        if path in LOOPBACK_ONLY_PATHS:
            if _is_loopback(scope):
                await self.app(scope, receive, send)
            else:
                await send_json(
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
            await send_json(
                send,
                401,
                error_body(401, message, (), request_id),
                request_id,
                [(b"www-authenticate", b'Bearer realm="mlops"')],
            )
            return
        if path in self.admin_paths and caller.role != ADMIN:
            message = f"{path} needs an admin key; {caller.caller} has role {caller.role}"
            await send_json(send, 403, error_body(403, message, (), request_id), request_id)
            return
        token = _caller.set(caller.caller)
        try:
            await self.app(scope, receive, send)
        finally:
            _caller.reset(token)
