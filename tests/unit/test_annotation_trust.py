"""A batch counts only the annotations of allow-listed people on its own, unchanged tasks;
the rest is reported task by task."""

from datetime import UTC, datetime

import pytest

from ml.annotation.agreement import Annotation
from ml.annotation.label_studio_client import LabeledTask
from ml.annotation.trust import AllowListError, AnnotatorAllowList, vet_tasks

WHEN = datetime(2026, 12, 1, tzinfo=UTC)
ALLOWED = AnnotatorAllowList.parse("ann@bank.example, @simulated.annotators.local")


def task(task_id: int, ext_id: str, request_id: str, text: str, *annotators: str) -> LabeledTask:
    return LabeledTask(
        task_id,
        ext_id,
        {"ext_id": ext_id, "request_id": request_id, "text": text},
        [Annotation(ext_id, who, "card_arrival", WHEN) for who in annotators],
    )


def test_the_allow_list_takes_addresses_and_domains_and_refuses_anything_else():
    assert ALLOWED.allows("ANN@bank.example") and ALLOWED.allows("bo@simulated.annotators.local")
    assert not ALLOWED.allows("mallory@bank.example")
    assert not ALLOWED.allows("x@evil.simulated.annotators.local.example")
    for bad in ("bank.example", "@", "a@b@c.d"):
        with pytest.raises(AllowListError, match=repr(bad)):
            AnnotatorAllowList.parse(bad)
    assert not AnnotatorAllowList.parse(" , ")


def test_only_allow_listed_annotations_on_the_batchs_unchanged_tasks_count():
    items = {
        "b1:r1": {"request_id": "r1", "text": "where is my card?"},
        "b1:r2": {"request_id": "r2", "text": "my card <CREDIT_CARD>"},  # as sent: redacted
        "b1:r3": {"request_id": "r3", "text": "close my account"},
    }
    vetted = vet_tasks(
        [
            task(1, "b1:r1", "r1", "where is my card?", "ann@bank.example", "mallory@x.example"),
            task(2, "b1:r2", "r2", "my card <CREDIT_CARD>", "bo@simulated.annotators.local"),
            task(3, "b1:r3", "r9", "close my account", "ann@bank.example"),
            task(4, "b1:r3", "r3", "open a second account", "ann@bank.example"),
            task(5, "b0:r7", "r7", "a task of another batch", "ann@bank.example"),
        ],
        items,
        ALLOWED,
    )
    assert [(t.task_id, [a.annotator for a in t.annotations]) for t in vetted.tasks] == [
        (1, ["ann@bank.example"]),
        (2, ["bo@simulated.annotators.local"]),
    ]
    assert vetted.refused == ["task 1 (b1:r1): by mallory@x.example, not allow-listed"]
    assert vetted.edited == [
        "task 3 (b1:r3): request_id changed since import",
        "task 4 (b1:r3): text changed since import",
    ]
    assert vetted.foreign == ["task 5 (b0:r7): not an item of this batch"]
    assert len(vetted.problems) == 4


def test_without_an_allow_list_nothing_is_counted_and_the_error_says_what_to_set():
    with pytest.raises(AllowListError, match="MLOPS_ANNOTATORS"):
        vet_tasks([], {}, AnnotatorAllowList())
