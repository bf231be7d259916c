"""The service's HTTP contract, the same for every client: one error shape for every endpoint and
status, bodies refused before parsing when their type, size or JSON is wrong, a published
OpenAPI document that is valid and self-contained, and client mistakes logged as warnings.

BentoML answers validation errors with a list of pydantic errors (or a one-element list for
`BadInput`) while its OpenAPI document declares `detail` a string, answers an unsupported
`Content-Type` with a 500, and logs every client mistake at ERROR with a traceback. An ASGI
middleware in front of the service's routes (`Champions.add_asgi_middleware`) fixes all three
without touching BentoML's internals; everything here is plain ASGI and JSON.

A route may also take its files as `multipart/form-data` (/inspect's images): the middleware
reads the parts, checks them, and hands BentoML the JSON body it already validates (the files
base64 in a list), so both forms get the same answers, limits, errors and log; an error about
the n-th file names its file name too.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from base64 import b64encode
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    MutableMapping,
    Sequence,
)
from copy import deepcopy
from typing import Any

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOGGER = logging.getLogger("mlops.serving")
REQUEST_ID_HEADER = "x-request-id"
JSON_MEDIA_TYPE = "application/json"
MULTIPART_MEDIA_TYPE = "multipart/form-data"
OPENAPI_PATH = "/docs.json"
ADMIN_PREFIX = "/admin/"
"""Routes only an admin key may call."""
INTERNAL_PREFIX = "/internal/"
"""Routes only the service's own router calls (the challenger's endpoints): not published."""
PROBE_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})

ERROR_CODES: dict[int, tuple[str, str]] = {
    400: ("invalid_input", "the body is not valid JSON or a field is invalid (named in `fields`)"),
    401: ("unauthorized", "no API key, or one that is not valid: send `Authorization: Bearer`"),
    403: ("forbidden", "the API key's role may not call this route"),
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "the route does not take this method"),
    413: ("payload_too_large", "the body is larger than the service accepts"),
    415: (
        "unsupported_media_type",
        "the body is not sent as `application/json` (or `multipart/form-data` where the route "
        "takes files)",
    ),
    429: ("too_many_requests", "the service is at capacity: retry after a while"),
    500: ("internal", "the service failed: quote `request_id` when reporting it"),
    503: ("unavailable", "the service cannot answer now (no model served, or not ready)"),
    504: ("timeout", "the answer took longer than the service's time limit"),
}
"""Every status an error can have, its `error` code and what it means (the OpenAPI document and
README's API section say the same)."""

SECURITY_SCHEME = "apiKey"
BEARER_SCHEME: dict[str, Any] = {
    "type": "http",
    "scheme": "bearer",
    "description": (
        "The caller's API key as `Authorization: Bearer <key>` (or `X-API-Key: <key>`); the "
        "routes under /admin/ need an admin key."
    ),
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Error",
    "description": "The one shape of every error answer, whatever the endpoint and status.",
    "required": ["error", "message", "fields", "request_id"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "string",
            "enum": sorted({code for code, _ in ERROR_CODES.values()}),
            "description": "A stable code for the kind of error.",
        },
        "message": {
            "type": "string",
            "description": "What was wrong, naming the field where one was.",
        },
        "fields": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The request fields at fault as dotted paths (`texts.0`), or none.",
        },
        "request_id": {
            "type": "string",
            "description": "This request's id, also in the `X-Request-ID` header and the log.",
        },
    },
}

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mlops_request_id", default=None
)


def current_request_id() -> str | None:
    """The id of the request being handled (None outside a request)."""
    return _request_id.get()


def error_body(
    status: int, message: str, fields: Iterable[str] = (), request_id: str = ""
) -> bytes:
    code = ERROR_CODES.get(status, ("internal" if status >= 500 else "invalid_input", ""))[0]
    return json.dumps(
        {"error": code, "message": message, "fields": list(fields), "request_id": request_id},
        ensure_ascii=False,
    ).encode()


def _dotted(location: Iterable[object]) -> str:
    return ".".join(str(part) for part in location)


def translate_error(status: int, body: bytes) -> tuple[str, list[str]]:
    """BentoML's error body (pydantic errors, a `BadInput` list, or plain text) → our message
    and the fields it names."""
    try:
        parsed = json.loads(body or b"null")
    except ValueError:
        parsed = body.decode("utf-8", "replace").strip()
    if isinstance(parsed, dict) and isinstance(parsed.get("detail"), list):
        problems = [p for p in parsed["detail"] if isinstance(p, dict)]
        fields = [_dotted(p.get("loc", ())) for p in problems]
        parts = [
            f"{field}: {p.get('msg', '')}" if field else str(p.get("msg", ""))
            for field, p in zip(fields, problems, strict=True)
        ]
        return "; ".join(parts) or str(parsed.get("error", "")), [f for f in fields if f]
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], dict):
        parsed = parsed[0]
    if isinstance(parsed, dict):
        message = str(parsed.get("error") or parsed.get("detail") or "")
    else:
        message = str(parsed or "")
    if status == 500 or not message:
        message = ERROR_CODES.get(status, ("", "request failed"))[1]
    field = re.match(r"([A-Za-z_][\w.]*): ", message)
    return message, [field.group(1)] if field else []


def header_value(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def request_id_of(scope: Scope) -> str:
    """The client's `X-Request-ID` when it is a sane token, else a new one."""
    given = header_value(scope, REQUEST_ID_HEADER.encode())
    if given and re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", given):
        return given
    return uuid.uuid4().hex


class HttpContract:
    """ASGI middleware: see the module docstring. `api_paths` are the POST endpoints whose bodies
    are checked before BentoML parses them; `file_fields` names those that also take files as
    `multipart/form-data`, and the JSON field (a list of base64 strings) the files go into."""

    def __init__(
        self,
        app: ASGIApp,
        api_paths: Iterable[str],
        max_body_bytes: int,
        max_in_flight: Mapping[str, int] | None = None,
        file_fields: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.api_paths = frozenset(api_paths)
        self.max_body_bytes = max_body_bytes
        self.file_fields = dict(file_fields or {})
        self.max_in_flight = dict(max_in_flight or {})
        """Admission control: requests a path holds at once in this worker; one more is a 429
        at once (with Retry-After), before its body is read."""
        self._in_flight: dict[str, int] = dict.fromkeys(self.api_paths, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        token = _request_id.set(request_id)
        try:
            await self._handle(scope, receive, send, request_id)
        finally:
            _request_id.reset(token)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        path, method = scope["path"], scope["method"]
        if path == OPENAPI_PATH and method == "GET":
            await self._forward(
                scope,
                receive,
                send,
                request_id,
                rewrite=lambda document: publish_openapi(document, self.file_fields),
            )
            return
        if path in self.api_paths and method == "POST":
            limit = self.max_in_flight.get(path)
            if limit is not None and self._in_flight[path] >= limit:
                message = f"{path} holds {limit} requests at once in this worker; retry shortly"
                await send_json(
                    send,
                    429,
                    error_body(429, message, (), request_id),
                    request_id,
                    [(b"retry-after", b"1")],
                )
                return
            self._in_flight[path] += 1
            try:
                await self._admitted(scope, receive, send, request_id)
            finally:
                self._in_flight[path] -= 1
            return
        await self._forward(scope, receive, send, request_id)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        """Check the headers, then the body, before BentoML sees the request; files sent as
        multipart become the JSON body BentoML takes."""
        path, method = scope["path"], scope["method"]
        refusal = self._refuse_headers(scope)
        file_names: list[str] = []
        if refusal is None:
            body, refusal = await self._read_body(receive)
        if refusal is None and _media_type(scope) == MULTIPART_MEDIA_TYPE:
            body, file_names, refusal = await _files_as_json(scope, body, self.file_fields[path])
            scope = _as_json(scope, len(body))
        elif refusal is None:
            refusal = _refuse_json(body)
        if refusal is not None:
            status, message, fields = refusal
            LOGGER.warning(
                "client error %d on %s %s (request %s): %s",
                status,
                method,
                path,
                request_id,
                message,
            )
            await send_json(
                send, status, error_body(status, message, fields, request_id), request_id
            )
            return
        receive = _replay(body, receive)
        await self._forward(scope, receive, send, request_id, file_names=file_names)

    def _refuse_headers(self, scope: Scope) -> tuple[int, str, list[str]] | None:
        content_type = header_value(scope, b"content-type")
        if content_type is not None:
            media_type, _, parameters = content_type.partition(";")
            takes_files = scope["path"] in self.file_fields
            if media_type.strip().lower() == MULTIPART_MEDIA_TYPE and takes_files:
                if not re.search(r"boundary=", parameters, re.IGNORECASE):
                    return (
                        400,
                        f"Content-Type: {MULTIPART_MEDIA_TYPE} without a boundary",
                        ["Content-Type"],
                    )
            elif media_type.strip().lower() != JSON_MEDIA_TYPE:
                accepted = f" or {MULTIPART_MEDIA_TYPE}" if takes_files else ""
                return (
                    415,
                    f"Content-Type: {media_type.strip() or '(empty)'} is not accepted; "
                    f"send the body as {JSON_MEDIA_TYPE}{accepted}",
                    ["Content-Type"],
                )
            charset = re.search(r"charset=\"?([\w-]+)", parameters, re.IGNORECASE)
            if charset and charset.group(1).lower().replace("_", "-") not in ("utf-8", "utf8"):
                return (
                    415,
                    f"Content-Type: charset {charset.group(1)} is not accepted; send UTF-8",
                    ["Content-Type"],
                )
        length = header_value(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                return 400, f"Content-Length: {length!r} is not a byte count", ["Content-Length"]
            if int(length) > self.max_body_bytes:
                return self._too_large(int(length))
        return None

    def _too_large(self, size: int | None) -> tuple[int, str, list[str]]:
        told = f"{size} bytes" if size is not None else "more"
        return 413, f"body: {told} is over the limit of {self.max_body_bytes} bytes", ["body"]

    async def _read_body(self, receive: Receive) -> tuple[bytes, tuple[int, str, list[str]] | None]:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", (400, "body: the client went away before sending it whole", ["body"])
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", self._too_large(None)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        rewrite: Callable[[bytes], bytes] | None = None,
        file_names: Sequence[str] = (),
    ) -> None:
        """Call the app; error answers (and, with `rewrite`, the whole answer) are held back and
        sent again in our shape, naming the files sent (`file_names`) where they name their
        place. Successful answers stream through untouched."""
        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if rewrite is not None or status >= 400:
                    held["start"] = message
                    return
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
                await send(message)
                return
            if message["type"] == "http.response.body" and "start" in held:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                status = held["start"]["status"]
                if rewrite is not None and status == 200:
                    await send_json(send, 200, rewrite(b"".join(chunks)), request_id)
                    return
                text, fields = translate_error(status, b"".join(chunks))
                text = _with_file_names(text, file_names)
                await send_json(
                    send,
                    status,
                    error_body(status, text, fields, request_id),
                    request_id,
                    _kept_headers(held["start"]),
                )
                return
            await send(message)

        await self.app(scope, receive, capture)


def _kept_headers(start: Message) -> list[tuple[bytes, bytes]]:
    """The headers of an error answer that still hold after its body is rewritten."""
    return [(k, v) for k, v in start.get("headers", []) if k.lower() in (b"retry-after", b"allow")]


def _refuse_json(body: bytes) -> tuple[int, str, list[str]] | None:
    try:
        parsed = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        return 400, f"body: not UTF-8 ({error.reason} at byte {error.start})", ["body"]
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        return 400, f"body: not valid JSON ({error.msg} at {where})", ["body"]
    if not isinstance(parsed, dict):
        return 400, f"body: expected a JSON object, got {type(parsed).__name__}", ["body"]
    return None


def _media_type(scope: Scope) -> str:
    return (header_value(scope, b"content-type") or "").partition(";")[0].strip().lower()


async def _files_as_json(
    scope: Scope, body: bytes, field: str
) -> tuple[bytes, list[str], tuple[int, str, list[str]] | None]:
    """A multipart body of files, each a part named `field`, as the JSON body `{field: [base64,
    …]}` and the files' names in order; or why it is refused, naming the part."""

    async def whole() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(Headers(scope=scope), whole()).parse()
    except MultiPartException as error:
        return b"", [], (400, f"body: not valid {MULTIPART_MEDIA_TYPE} ({error.message})", ["body"])
    encoded, names = [], []
    try:
        for name, part in form.multi_items():
            place = f"{field}.{len(encoded)}"
            if name != field:
                message = (
                    f"{name}: not a field of this route; send each file as a part named {field}"
                )
                return b"", [], (400, message, [name])
            if not isinstance(part, UploadFile):
                message = f"{place}: a text part, expected a file (a part with a filename)"
                return b"", [], (400, message, [place])
            encoded.append(b64encode(await part.read()).decode("ascii"))
            names.append(part.filename or place)
    finally:
        await form.close()
    if not encoded:
        return b"", [], (400, f"{field}: no file; send each file as a part named {field}", [field])
    return json.dumps({field: encoded}).encode(), names, None


def _as_json(scope: Scope, size: int) -> Scope:
    """`scope` with the headers of the JSON body the files became."""
    kept = [
        (k, v) for k, v in scope["headers"] if k.lower() not in (b"content-type", b"content-length")
    ]
    headers = [
        *kept,
        (b"content-type", JSON_MEDIA_TYPE.encode()),
        (b"content-length", str(size).encode()),
    ]
    return {**scope, "headers": headers}


def _with_file_names(message: str, file_names: Sequence[str]) -> str:
    """`images.1: …` → `images.1 (cell2.png): …` for the files sent as multipart."""
    if not file_names:
        return message

    def named(found: re.Match[str]) -> str:
        index = int(found.group(2))
        if index >= len(file_names):
            return found.group(0)
        return f"{found.group(1)} ({file_names[index]}): "

    return re.sub(r"(?:^|(?<=; ))([A-Za-z_]\w*\.(\d+)): ", named, message)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then defers to the client's."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def send_json(
    send: Send,
    status: int,
    body: bytes,
    request_id: str,
    extra_headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", JSON_MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
                (REQUEST_ID_HEADER.encode(), request_id.encode()),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# --- the published OpenAPI document ---------------------------------------------------------


def publish_openapi(document: bytes, file_fields: Mapping[str, str] | None = None) -> bytes:
    """BentoML's generated document made valid and self-contained: OpenAPI 3.1 (pydantic writes
    JSON Schema 2020-12: `type: null`, numeric `exclusiveMinimum`), every `$defs` hoisted into
    `components/schemas`, every error status of every route declared with the one shape, and
    the multipart form of the routes that take files (`file_fields`)."""
    spec = json.loads(document)
    spec["openapi"] = "3.1.0"
    spec["paths"] = {
        path: item
        for path, item in spec.get("paths", {}).items()
        if not path.startswith(INTERNAL_PREFIX)
    }
    hoisted: dict[str, Any] = {}
    spec = _hoist_definitions(spec, hoisted)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in hoisted.items():
        if schemas.setdefault(name, definition) != definition:
            raise ValueError(f"OpenAPI: two different schemas are both named {name!r}")
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(name, None)
    schemas["Error"] = deepcopy(ERROR_SCHEMA)
    spec["components"]["securitySchemes"] = {SECURITY_SCHEME: deepcopy(BEARER_SCHEME)}
    spec["security"] = [{SECURITY_SCHEME: []}]
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if path in PROBE_PATHS or path == OPENAPI_PATH:
                operation["security"] = []  # open (and /metrics: the loopback address only)
            responses = {k: v for k, v in operation["responses"].items() if k.startswith("2")}
            statuses = _error_statuses(path, method)
            for status in statuses:
                responses[str(status)] = {
                    "description": f"`{ERROR_CODES[status][0]}`: {ERROR_CODES[status][1]}",
                    "content": {
                        JSON_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            operation["responses"] = responses
            if "requestBody" in operation:
                _refer_to_full_input(operation, schemas)
            if path in (file_fields or {}) and "requestBody" in operation:
                _add_multipart_form(operation, file_fields[path], schemas)
    return json.dumps(spec).encode()


def _refer_to_full_input(operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    """BentoML inlines each request schema flattened, keeping only the first branch of every
    `anyOf` (`texts` would read "a string" only, `horizon` "an integer", never null): point the
    body at the complete input schema it also publishes, and mark the body required."""
    body = operation["requestBody"]
    full = f"{operation.get('x-bentoml-name', '')}__Input"
    if full in schemas:
        for media in body.get("content", {}).values():
            media["schema"] = {"$ref": f"#/components/schemas/{full}"}
    body["required"] = True


def _add_multipart_form(operation: dict[str, Any], field: str, schemas: dict[str, Any]) -> None:
    """The route's files may also come as `multipart/form-data`, one file part per item of
    `field`, as many as its JSON list takes."""
    full = schemas.get(f"{operation.get('x-bentoml-name', '')}__Input", {})
    branches = full.get("properties", {}).get(field, {}).get("anyOf", [])
    limits = {
        key: branch[key]
        for branch in branches
        if branch.get("type") == "array"
        for key in ("minItems", "maxItems")
        if key in branch
    }
    body = operation["requestBody"]
    body["description"] = (
        f"JSON, or `{MULTIPART_MEDIA_TYPE}` with each file as a part named `{field}`."
    )
    body.setdefault("content", {})[MULTIPART_MEDIA_TYPE] = {
        "schema": {
            "type": "object",
            "required": [field],
            "additionalProperties": False,
            "properties": {
                field: {
                    "type": "array",
                    "items": {"type": "string", "format": "binary"},
                    "minItems": 1,
                    **limits,
                    "description": "The files, each a part of this name with a filename.",
                }
            },
        }
    }


def _error_statuses(path: str, method: str) -> list[int]:
    if path in PROBE_PATHS:
        return [503] if path == "/readyz" else []
    if path == OPENAPI_PATH:
        return [500]
    needs_key = [401, 403] if path.startswith(ADMIN_PREFIX) else [401]
    if method.lower() == "post":
        return sorted([400, 413, 415, 429, 500, 503, 504, *needs_key])
    return sorted([500, *needs_key])


def _hoist_definitions(node: Any, schemas: dict[str, Any]) -> Any:
    """Move nested JSON Schema `$defs` into `components/schemas` and point their `$ref`s there
    (a `#/$defs/...` pointer inside a path's schema resolves against the whole document, where
    there is no `$defs`)."""
    if isinstance(node, list):
        return [_hoist_definitions(item, schemas) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    for name, definition in node.pop("$defs", {}).items():
        hoisted = _hoist_definitions(definition, schemas)
        if name in schemas and schemas[name] != hoisted:
            raise ValueError(f"OpenAPI: two different schemas are both named {name!r}")
        schemas[name] = hoisted
    reference = node.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/$defs/"):
        node["$ref"] = "#/components/schemas/" + reference.removeprefix("#/$defs/")
    return {key: _hoist_definitions(value, schemas) for key, value in node.items()}


# --- logging --------------------------------------------------------------------------------


class ClientErrorsAsWarnings(logging.Filter):
    """BentoML logs every exception of an endpoint at ERROR with a traceback, a client's bad input
    included. Those become one WARNING line with the request id; server faults keep ERROR and
    their traceback, plus the request id."""

    def __init__(self, is_client_error: Callable[[BaseException], bool]) -> None:
        super().__init__()
        self.is_client_error = is_client_error

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id()
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and self.is_client_error(error):
            path, method = (
                (record.args or ("?", "?"))[:2] if isinstance(record.args, tuple) else ("?", "?")
            )
            record.msg = "client error on %s %s (request %s): %s"
            record.args = (method, path, request_id, _without_input(error))
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        elif request_id and record.levelno >= logging.ERROR:
            record.msg = f"{record.getMessage()} (request %s)"
            record.args = (request_id,)
        return True


def _without_input(error: BaseException) -> str:
    """The error in one line, without the client's input (texts may carry personal data)."""
    errors = getattr(error, "errors", None)
    if callable(errors):
        problems = errors(include_input=False, include_url=False)
        return "; ".join(f"{_dotted(p['loc'])}: {p['msg']}" for p in problems)
    return " ".join(str(error).split())[:500]
