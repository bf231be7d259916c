"""Every run launched through the Dagster UI's login records who launched it: the launch
recorder tags each launch in a JSON POST with the signed-in account, and refuses every launch it
could not tag, however it is written."""

import json

import pytest

from assets.resources import LAUNCHED_BY_TAG
from orchestration.launch_recorder import UntaggableLaunch, tagged_body

JSON = "application/json"
PARAMS = {
    "selector": {"jobName": "retention_job"},
    "executionMetadata": {"tags": [{"key": LAUNCHED_BY_TAG, "value": "mallory"}]},
}


def post(query: str, variables: object, actor: str = "alice") -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    return json.loads(tagged_body("POST", JSON, "", body, actor))


def tags_of(params: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in params["executionMetadata"]["tags"]}


@pytest.mark.parametrize(
    "query",
    [
        "mutation L($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename } }",
        "mutation L($p: ExecutionParams!) { started: launchPipelineExecution(executionParams: $p)"
        " { __typename } }",
        "mutation L($p: ExecutionParams!) { ...F } "
        "fragment F on Mutation { launchRun(executionParams: $p) { __typename } }",
    ],
    ids=["plain", "aliased", "in a fragment"],
)
def test_a_launch_gets_the_signed_in_account_over_the_clients_tag(query: str) -> None:
    sent = post(query, {"p": PARAMS})
    assert tags_of(sent["variables"]["p"])[LAUNCHED_BY_TAG] == "alice"


def test_several_runs_a_reexecution_and_a_backfill_are_tagged_too() -> None:
    many = post(
        "mutation M($l: [ExecutionParams!]!) { launchMultipleRuns(executionParamsList: $l) "
        "{ __typename } }",
        {"l": [PARAMS, {"selector": {"jobName": "warehouse_job"}}]},
    )
    assert [tags_of(p)[LAUNCHED_BY_TAG] for p in many["variables"]["l"]] == ["alice", "alice"]
    again = post(
        "mutation R($r: ReexecutionParams) { launchRunReexecution(reexecutionParams: $r) "
        "{ __typename } }",
        json.dumps({"r": {"parentRunId": "x", "strategy": "ALL_STEPS"}}),  # variables as a string
    )
    assert again["variables"]["r"]["extraTags"] == [{"key": LAUNCHED_BY_TAG, "value": "alice"}]
    backfill = post(
        "mutation B($b: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $b) "
        "{ __typename } }",
        {"b": {"partitionNames": ["a"]}},
    )
    assert backfill["variables"]["b"]["tags"] == [{"key": LAUNCHED_BY_TAG, "value": "alice"}]


INLINE = 'mutation { launchRun(executionParams: {selector: {jobName: "j"}}) { __typename } }'
DEFAULTED = (
    'mutation L($p: ExecutionParams = {selector: {jobName: "j"}}) '
    "{ launchRun(executionParams: $p) { __typename } }"
)
BY_VARIABLE = "mutation L($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename } }"


@pytest.mark.parametrize(
    ("method", "content_type", "url_query", "body"),
    [
        ("POST", JSON, "", {"query": INLINE}),
        ("POST", JSON, "", {"query": DEFAULTED}),
        ("GET", "", BY_VARIABLE, None),
        ("POST", "application/graphql", "", INLINE),
    ],
    ids=["inline parameters", "a default value", "a GET", "an application/graphql body"],
)
def test_a_launch_that_cannot_be_tagged_is_refused(
    method: str, content_type: str, url_query: str, body: object
) -> None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode() if body else b""
    with pytest.raises(UntaggableLaunch):
        tagged_body(method, content_type, url_query, raw, "alice")


def test_without_a_signed_in_user_nothing_launches_and_reading_passes_unchanged() -> None:
    launch = "mutation L($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename } }"
    with pytest.raises(UntaggableLaunch, match="signed-in"):
        post(launch, {"p": PARAMS}, actor="")
    raw = json.dumps({"query": "{ version }"}).encode()
    assert tagged_body("POST", JSON, "", raw, "") == raw
    assert tagged_body("GET", "", "{ version }", b"", "alice") == b""
