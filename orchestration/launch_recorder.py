"""Who launched each run from the Dagster UI. Open-source Dagster records no user, so the login
proxy (orchestration/ui_gateway.py) sends every GraphQL request but websockets (which only
subscribe) through this small ASGI app on an internal port: a mutation that launches runs (a
run, several runs, a re-execution, a backfill) gets the signed-in account, which Caddy set in
`X-Forwarded-User`, as the tag `mlops/launched_by` of every run it creates, replacing whatever
the client put there. Everything else passes through unchanged. A launch that cannot be tagged
is refused: parameters written inline in the query instead of as variables (the UI sends
variables), or any launch that is not a JSON POST (a GET, a query in the URL, an
application/graphql body).

Run as `python -m orchestration.launch_recorder --port P --upstream http://127.0.0.1:U`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import uvicorn
from graphql import GraphQLError, parse
from graphql.language import DocumentNode, FieldNode, VariableNode, Visitor, visit
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from assets.resources import LAUNCHED_BY_TAG
from ml.settings import PROJECT_ROOT, environment_with
from orchestration.processes import wait_until_ready

USER_HEADER = "x-forwarded-user"
LIVEZ = "/livez"
HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


class UntaggableLaunch(ValueError):
    """A launch the recorder cannot give its actor (inline parameters, or no signed-in user)."""


def _tagged(tags: list[dict[str, str]] | None, actor: str) -> list[dict[str, str]]:
    kept = [tag for tag in tags or [] if tag.get("key") != LAUNCHED_BY_TAG]
    return [*kept, {"key": LAUNCHED_BY_TAG, "value": actor}]


def _execution_params(params: dict, actor: str) -> dict:
    metadata = dict(params.get("executionMetadata") or {})
    metadata["tags"] = _tagged(metadata.get("tags"), actor)
    return {**params, "executionMetadata": metadata}


def _each(tag: Callable[[dict, str], dict]) -> Callable[[object, str], object]:
    return lambda value, actor: [tag(params, actor) for params in value or []]


LAUNCH_ARGUMENTS: dict[str, dict[str, Callable[[object, str], object]]] = {
    **{
        field: {"executionParams": _execution_params}
        for field in ("launchPipelineExecution", "launchRun")
    },
    "launchMultipleRuns": {"executionParamsList": _each(_execution_params)},
    **{
        field: {
            "executionParams": _execution_params,
            "reexecutionParams": lambda p, actor: {
                **p,
                "extraTags": _tagged(p.get("extraTags"), actor),
            },
        }
        for field in ("launchPipelineReexecution", "launchRunReexecution")
    },
    "launchPartitionBackfill": {
        "backfillParams": lambda p, actor: {**p, "tags": _tagged(p.get("tags"), actor)}
    },
}
"""Mutation fields that create runs → their arguments that carry tags → how to add ours."""


def _launch_fields(document: DocumentNode) -> list[FieldNode]:
    """Every field of the document that creates runs, wherever it is (aliased, in a fragment)."""
    found: list[FieldNode] = []

    class Launches(Visitor):
        def enter_field(self, node: FieldNode, *_: object) -> None:
            if node.name.value in LAUNCH_ARGUMENTS:
                found.append(node)

    visit(document, Launches())
    return found


def with_actor(query: str, variables: dict | None, actor: str) -> dict | None:
    """The request's variables with `actor` tagged on every run its launch fields create; None
    when it launches nothing (forwarded as it is). A launch whose run parameters are not all
    in `variables` cannot be tagged and is refused."""
    try:
        document = parse(query)
    except GraphQLError:
        return None  # the webserver answers the syntax error itself
    launches = _launch_fields(document)
    if not launches:
        return None
    if not actor:
        raise UntaggableLaunch("no signed-in user: launch runs through the login proxy")
    variables = dict(variables or {})
    for field in launches:
        taggers = LAUNCH_ARGUMENTS[field.name.value]
        for argument in field.arguments or ():
            tag = taggers.get(argument.name.value)
            if tag is None:
                continue
            if not isinstance(argument.value, VariableNode):
                raise UntaggableLaunch(
                    f"{field.name.value}: pass {argument.name.value} as a GraphQL variable, so "
                    "the run can record who launched it"
                )
            name = argument.value.name.value
            if not isinstance(variables.get(name), (dict, list)):
                raise UntaggableLaunch(
                    f"{field.name.value}: ${name} must be given in the request's variables (a "
                    "JSON POST), so the run can record who launched it"
                )
            variables[name] = tag(variables[name], actor)
    return variables


def tagged_body(
    request_method: str, content_type: str, query: str, raw: bytes, actor: str
) -> bytes:
    """The body to forward: a JSON POST's launches tagged; anything else that launches runs
    (a GET, a query in the URL, an application/graphql body) is refused, since only a JSON
    POST carries the variables the tags go in. Dagster reads the query from the JSON body,
    else from an application/graphql body, else from the URL: the same places are read here."""
    if request_method == "POST" and "application/json" in content_type:
        try:
            body = json.loads(raw)
        except ValueError:
            return raw  # the webserver refuses invalid JSON itself
        if not isinstance(body, dict):
            return raw
        variables = body.get("variables")
        if isinstance(variables, str):
            try:
                variables = json.loads(variables)
            except ValueError:
                return raw
        tagged = with_actor(str(body.get("query") or ""), variables, actor)
        return raw if tagged is None else json.dumps({**body, "variables": tagged}).encode()
    if request_method == "POST" and "application/graphql" in content_type:
        query = raw.decode("utf-8", "replace")
    with_actor(query, None, actor)  # raises for any launch
    return raw


def recorder_app(upstream: str) -> Starlette:
    """The ASGI app: GraphQL requests tagged (or refused) and forwarded to the webserver at
    `upstream`."""
    client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(300.0))

    async def graphql(request: Request) -> Response:
        raw = await request.body()
        headers = {k: v for k, v in request.headers.items() if k not in HOP_HEADERS}
        try:
            raw = tagged_body(
                request.method,
                request.headers.get("content-type", ""),
                request.query_params.get("query", ""),
                raw,
                request.headers.get(USER_HEADER, ""),
            )
        except UntaggableLaunch as error:
            return JSONResponse({"errors": [{"message": str(error)}]}, status_code=400)
        answer = await client.request(
            request.method,
            request.url.path,
            params=request.query_params,
            content=raw,
            headers=headers,
        )
        passed = {k: v for k, v in answer.headers.items() if k not in HOP_HEADERS}
        passed.pop("content-encoding", None)  # httpx has decoded the body
        return Response(answer.content, status_code=answer.status_code, headers=passed)

    async def livez(request: Request) -> Response:
        return Response("ok")

    return Starlette(
        routes=[
            Route(LIVEZ, livez, methods=["GET"]),
            Route("/{path:path}", graphql, methods=["GET", "POST"]),
        ]
    )


def start_launch_recorder(port: int, upstream: str, log_path: Path) -> subprocess.Popen:
    """The recorder in a process (and session) of its own, once it answers."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orchestration.launch_recorder",
                "--port",
                str(port),
                "--upstream",
                upstream,
            ],
            cwd=PROJECT_ROOT,
            env=environment_with(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_until_ready(process, f"http://127.0.0.1:{port}{LIVEZ}", log_path, 60, "launch recorder")
    return process


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the Dagster webserver's URL")
    args = parser.parse_args(argv)
    uvicorn.run(recorder_app(args.upstream), host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
