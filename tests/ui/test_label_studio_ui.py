"""Annotators and a reviewer in Label Studio's own UI, in Chromium: each logs in through the
login form in a browser of their own, takes tasks from the project's labeling stream, picks the
answer by its keyboard shortcut and submits with Ctrl+Enter. The real assets then count what
they did: both annotators' answers in the batch's agreement, and the reviewer's adjudication in
the labeled version, attributed to the reviewer."""

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
from dagster import AssetKey
from playwright.sync_api import BrowserContext, Locator, Page, expect

from ml.requests.taxonomy import synthetic_taxonomy
from orchestration.labelstudio import LabelStudioServer
from orchestration.simulated_annotators import simulated_annotator
from tests.conftest import Loop
from tests.ui.conftest import readme_screenshot

SHORTCUT_KEYS = "1234567890qwetasdfgzxcvbyiopjklnm"
"""The keys Label Studio gives a project's choices, in order (its `Hotkey.makeComb`): only the
first 33 choices have one."""
UI_TIMEOUT_MS = 60_000
LENIENT = {"kappa_threshold": 0.4}
"""A small batch with one deliberate disagreement still passes the gate."""
INTENTS = synthetic_taxonomy().intents


def shortcut(label: str) -> str | None:
    index = INTENTS.index(label)
    return SHORTCUT_KEYS[index] if index < len(SHORTCUT_KEYS) else None


@dataclass(frozen=True)
class Person:
    email: str
    password: str


def account(loop: Loop, name: str) -> Person:
    """An account made the platform's way (an invite link, a password only the admin token
    derives), on the deployment's allow-list."""
    annotator = simulated_annotator(loop.admin, name, 0.0, seed=1)
    return Person(annotator.email, loop.admin.derived_password(annotator.email))


def log_in(context: BrowserContext, url: str, person: Person) -> Page:
    page = context.new_page()
    page.goto(f"{url}/user/login/", timeout=UI_TIMEOUT_MS)
    page.locator('input[name="email"]').fill(person.email)
    page.locator('input[name="password"]').fill(person.password)
    page.locator('button[type="submit"]').first.click()
    page.wait_for_url(lambda address: "/user/login" not in address, timeout=UI_TIMEOUT_MS)
    return page


@dataclass(frozen=True)
class Task:
    task_id: int
    ext_id: str
    text: str


def tasks_of(loop: Loop, project: int) -> list[Task]:
    """The project's tasks, each text as a browser shows it (runs of spaces collapsed)."""
    return [
        Task(t.task_id, t.ext_id, " ".join(t.data["text"].split()))
        for t in loop.admin.tasks(project)
    ]


@dataclass(frozen=True)
class Done:
    task: Task
    label: str
    by_shortcut: bool


def shown_task(page: Page, candidates: list[Task]) -> Task:
    """The task the labeling stream shows now, recognized by its text."""
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        on_screen = " ".join(page.locator("body").inner_text().split())
        shown = [task for task in candidates if task.text in on_screen]
        if len(shown) == 1:
            return shown[0]
        time.sleep(0.25)
    raise AssertionError(f"none of {[t.ext_id for t in candidates]} is on the page")


def choice(page: Page, label: str) -> Locator:
    """The choice's checkbox (Label Studio names it after the choice's value)."""
    return page.locator(f'input.ant-checkbox-input[name="{label}"]')


def label_stream(
    page: Page,
    url: str,
    project: int,
    tasks: list[Task],
    choose: Callable[[Task], str],
    count: int,
    screenshot: str = "",
) -> list[Done]:
    """Open the project's labeling stream and, for `count` tasks, pick `choose(task)` (by its
    shortcut, or by clicking it where it has none) and submit with Ctrl+Enter."""
    page.goto(f"{url}/projects/{project}/data?labeling=1", timeout=UI_TIMEOUT_MS)
    # The project's instructions come first.
    page.get_by_role("button", name="Close modal").click(timeout=UI_TIMEOUT_MS)
    done: list[Done] = []
    for _ in range(count):
        task = shown_task(page, [t for t in tasks if t not in {d.task for d in done}])
        label = choose(task)
        box, key = choice(page, label), shortcut(label)
        expect(box).not_to_be_checked(timeout=UI_TIMEOUT_MS)
        if key:
            page.keyboard.press(key)
        else:
            page.locator("label", has=box).click()
        expect(box).to_be_checked()
        if screenshot and not done:
            readme_screenshot(page, screenshot)
        page.keyboard.press("Control+Enter")
        expect(page.get_by_text(task.text)).to_have_count(0, timeout=UI_TIMEOUT_MS)
        done.append(Done(task, label, key is not None))
    return done


def test_two_annotators_label_a_batch_in_their_browsers_and_the_batch_counts_both(
    loop: Loop, label_studio: LabelStudioServer, new_context: Callable[..., BrowserContext]
) -> None:
    batch = loop.new_batch(size=4)
    project = loop.admin.find_project(f"Requests {batch}")
    truth = loop.answers(batch)
    url = label_studio.config.url
    people = [account(loop, "ui-ann"), account(loop, "ui-bob")]
    tasks = tasks_of(loop, project)
    pressed: dict[tuple[str, str], str] = {}
    for number, person in enumerate(people):
        page = log_in(new_context(), url, person)
        done = label_stream(
            page,
            url,
            project,
            tasks,
            lambda task: truth[task.ext_id],
            count=len(truth),
            screenshot="" if number else "label-studio-annotator",
        )
        assert any(d.by_shortcut for d in done), "no answer was given by its shortcut"
        pressed.update({(person.email, d.task.ext_id): d.label for d in done})
    assert len(pressed) == 2 * len(truth)

    result = loop.run("annotated_batch_job", batch)
    assert result.success
    metadata = loop.instance.get_latest_materialization_event(
        AssetKey("annotated_batch")
    ).asset_materialization.metadata
    counted = loop.warehouse.query(
        "select annotator, ext_id, label from batch_annotations where batch_id = ?", [batch]
    )
    assert {(a, e): label for a, e, label in counted.rows()} == pressed
    assert metadata["doubly_annotated"].value == len(truth)
    for person in people:
        assert f"| {person.email} | {len(truth)} |" in metadata["per_annotator"].value
    first, second = sorted(p.email for p in people)
    assert f"| {first} / {second} | 1.0 |" in metadata["per_pair_kappa"].value


def test_a_reviewer_settles_a_disagreement_in_the_browser_and_the_label_is_theirs(
    loop: Loop, label_studio: LabelStudioServer, new_context: Callable[..., BrowserContext]
) -> None:
    batch = loop.new_batch(size=6)
    project = loop.admin.find_project(f"Requests {batch}")
    truth = loop.answers(batch)
    url = label_studio.config.url
    careful, hasty, reviewer = (account(loop, n) for n in ("ui-ada", "ui-ben", "ui-cyd"))

    tasks = tasks_of(loop, project)

    def right(task: Task) -> str:
        return truth[task.ext_id]

    label_stream(log_in(new_context(), url, careful), url, project, tasks, right, len(truth))
    disputed: list[str] = []

    def once_wrong(task: Task) -> str:
        answer = right(task)
        if disputed or shortcut(answer) is None:
            return answer
        disputed.append(task.ext_id)
        return next(i for i in INTENTS if i != answer)

    label_stream(log_in(new_context(), url, hasty), url, project, tasks, once_wrong, len(truth))
    assert disputed, "no task of the batch has an intent with a shortcut"
    (ext_id,) = disputed

    assert loop.run(
        "annotated_batch_job", batch, config={"ops": {"annotated_batch": {"config": LENIENT}}}
    ).success
    collected = loop.instance.get_latest_materialization_event(AssetKey("annotated_batch"))
    assert collected.asset_materialization.metadata["disagreements"].value == 1
    assert collected.asset_materialization.metadata["reviews_opened"].value == 1

    review, _ = loop.review(batch)
    page = log_in(new_context(), url, reviewer)
    wrong = next(i for i in INTENTS if i != truth[ext_id])

    def settle(task: Task) -> str:
        assert task.ext_id == f"review:{ext_id}"
        proposals = page.get_by_text(re.compile("The two annotators said")).first
        expect(proposals).to_contain_text(truth[ext_id], timeout=UI_TIMEOUT_MS)
        expect(proposals).to_contain_text(wrong)
        return truth[ext_id]

    (adjudicated,) = label_stream(
        page, url, review, tasks_of(loop, review), settle, 1, screenshot="label-studio-review"
    )
    assert adjudicated.by_shortcut

    assert loop.run(
        "labeled_requests_job", config={"ops": {"labeled_requests": {"config": LENIENT}}}
    ).success
    request_id = loop.warehouse.query(
        "select request_id from annotation_items where ext_id = ?", [ext_id]
    ).item()
    latest = loop.warehouse.query(
        "select * from labeled_requests where version = (select max(version) from labeled_requests)"
    )
    row = latest.filter(pl.col("request_id") == request_id)
    assert row.height == 1, "the adjudicated request is in the labeled version"
    assert row["adjudicated"].item() and row["adjudicator"].item() == reviewer.email
    assert row["intent"].item() == truth[ext_id]
