"""Label Studio for real: double annotation through the labeling stream, idempotent tasks, and a
clear failure when the server is away."""

import pytest

from ml.annotation.agreement import batch_agreement
from ml.annotation.label_studio_client import (
    LabelStudioClient,
    LabelStudioUnavailable,
    labeling_config,
)
from ml.requests.taxonomy import taxonomy_from_names
from orchestration.simulated_annotators import simulated_annotator
from tests.conftest import free_port

TAXONOMY = taxonomy_from_names("test-intents", 1, ["card_lost", "balance", "transfer_fee"])
TRUTH = {f"req-{i}": TAXONOMY.intents[i % 3] for i in range(6)}


def tasks() -> list[dict]:
    return [{"data": {"ext_id": ext_id, "text": f"request {ext_id}"}} for ext_id in TRUTH]


def test_every_task_is_labeled_by_exactly_two_distinct_annotators(
    label_studio_admin: LabelStudioClient,
) -> None:
    project = label_studio_admin.ensure_project("double annotation test", TAXONOMY)
    assert label_studio_admin.ensure_project("double annotation test", TAXONOMY) == project
    assert label_studio_admin.import_missing(project, tasks()) == 6
    assert label_studio_admin.import_missing(project, tasks()) == 0, "a retry creates no duplicates"

    careful = simulated_annotator(label_studio_admin, "careful", error_rate=0.0, seed=1)
    careless = simulated_annotator(label_studio_admin, "careless", error_rate=1.0, seed=2)
    late = simulated_annotator(label_studio_admin, "late", error_rate=0.0, seed=3)
    assert careful.annotate(project, TRUTH, TAXONOMY.intents) == 6
    assert careless.annotate(project, TRUTH, TAXONOMY.intents) == 6
    assert late.annotate(project, TRUTH, TAXONOMY.intents) == 0, "the stream serves two, not three"

    labeled = label_studio_admin.tasks(project)
    assert sorted(t.ext_id for t in labeled) == sorted(TRUTH)
    for task in labeled:
        assert len({a.annotator for a in task.annotations}) == 2
    report = batch_agreement([a for task in labeled for a in task.annotations], TAXONOMY.intents)
    assert len(report.pairs) == 6 and len(report.disagreements) == 6
    assert report.kappa is not None and report.kappa < 0
    assert {a.annotator for p in report.pairs for a in (p.first, p.second)} == {
        careful.email,
        careless.email,
    }


def test_the_labeling_config_offers_the_whole_taxonomy() -> None:
    config = labeling_config(taxonomy_from_names("odd", 1, ["reverted_card_payment?", "a&b"]))
    assert 'value="reverted_card_payment?"' in config and 'value="a&amp;b"' in config


def test_an_unreachable_label_studio_fails_clearly_after_retries() -> None:
    token = "0123456789abcdef0123456789abcdef01234567"
    client = LabelStudioClient(
        f"http://127.0.0.1:{free_port()}", token, attempts=3, backoff_seconds=0.01
    )
    with pytest.raises(
        LabelStudioUnavailable, match=r"list projects failed after 3 attempts"
    ) as raised:
        client.ensure_project("anything", TAXONOMY)
    assert token not in str(raised.value) and token not in repr(client)


def test_the_server_gets_its_credentials_from_the_environment_not_the_command_line(
    label_studio_admin: LabelStudioClient,
) -> None:
    import subprocess

    listing = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert "label-studio start" in listing
    assert label_studio_admin._token not in listing
