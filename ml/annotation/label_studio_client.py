"""Everything the platform asks of Label Studio, through label-studio-sdk 2.x.

Every call is retried with backoff when the server is unreachable or answers 5xx, then fails
with a message naming the server and the call, never the token. Task creation is idempotent:
tasks carry a stable external id (`ext_id`) and only missing ones are imported.
"""

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from xml.sax.saxutils import quoteattr

import httpx
import requests
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from ml.annotation.agreement import Annotation
from ml.requests.taxonomy import Taxonomy

T = TypeVar("T")
FROM_NAME, TO_NAME = "intent", "text"
IMAGE_FROM_NAME, IMAGE_TO_NAME = "label", "image"


class LabelStudioUnavailable(RuntimeError):
    """Label Studio did not answer (or kept answering 5xx) after every retry."""


REVIEW_HEADER = '  <Header value="The two annotators said: $proposals" size="6"/>\n'


def labeling_config(taxonomy: Taxonomy, review: bool = False) -> str:
    """One text, one choice among the taxonomy's intents (hints from their descriptions); a
    review task also shows the two annotators' answers."""
    choices = "\n".join(
        f"    <Choice value={quoteattr(intent)}"
        + (f" hint={quoteattr(taxonomy.description(intent))}" if taxonomy.descriptions else "")
        + "/>"
        for intent in taxonomy.intents
    )
    return (
        "<View>\n"
        '  <Header value="Which intent does this customer request express?"/>\n'
        + (REVIEW_HEADER if review else "")
        + f'  <Text name="{TO_NAME}" value="$text"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" '
        'showInline="false" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>"
    )


INSTRUCTIONS = (
    "<p>Pick the one intent the customer asks about. If the text fits none, or two equally, "
    "skip it: skipped tasks go to another annotator. Every task is labeled by two people; "
    "disagreements go to a reviewer.</p>"
)


REVIEW_INSTRUCTIONS = (
    "<p>Two annotators disagreed on these requests. Pick the right intent; your answer is "
    "final. Do not review a request you annotated yourself: such a review is discarded.</p>"
)


@dataclass(frozen=True)
class LabelingInterface:
    """What a project shows and asks: its labeling config and instructions, for double
    annotation and for review, and the control that holds the answer."""

    config: str
    review_config: str
    instructions: str
    review_instructions: str
    from_name: str = FROM_NAME
    to_name: str = TO_NAME


def text_interface(taxonomy: Taxonomy) -> LabelingInterface:
    """Requests: one text, one intent of the taxonomy."""
    return LabelingInterface(
        labeling_config(taxonomy),
        labeling_config(taxonomy, review=True),
        INSTRUCTIONS,
        REVIEW_INSTRUCTIONS,
    )


def image_interface(question: str, choices: dict[str, str]) -> LabelingInterface:
    """One image, one choice among `choices` (value → hint); a review task also shows the two
    annotators' answers. The pre-annotation (the champion's guess) comes pre-selected."""

    def config(review: bool) -> str:
        options = "\n".join(
            f"    <Choice value={quoteattr(value)} hint={quoteattr(hint)}/>"
            for value, hint in choices.items()
        )
        return (
            "<View>\n"
            f"  <Header value={quoteattr(question)}/>\n"
            + (REVIEW_HEADER if review else "")
            + f'  <Image name="{IMAGE_TO_NAME}" value="$image" zoom="true" '
            'brightnessControl="true" contrastControl="true"/>\n'
            f'  <Choices name="{IMAGE_FROM_NAME}" toName="{IMAGE_TO_NAME}" choice="single" '
            'showInline="true" required="true">\n'
            f"{options}\n"
            "  </Choices>\n"
            "</View>"
        )

    return LabelingInterface(
        config(False),
        config(True),
        "<p>Look at the whole cell (zoom in; brightness and contrast help). Pick one answer; "
        "the model's guess may be pre-selected: change it when it is wrong. Skip an image you "
        "cannot judge. Every image is labeled by two people; disagreements go to a "
        "reviewer.</p>",
        "<p>Two annotators disagreed on these images. Pick the right answer; yours is final. "
        "Do not review an image you annotated yourself: such a review is discarded.</p>",
        IMAGE_FROM_NAME,
        IMAGE_TO_NAME,
    )


@dataclass(frozen=True)
class LabeledTask:
    task_id: int
    ext_id: str
    data: dict[str, Any]
    annotations: list[Annotation]


class LabelStudioClient:
    def __init__(self, url: str, token: str, attempts: int = 5, backoff_seconds: float = 0.5):
        self.url = url.rstrip("/")
        self._token = token
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.sdk = LabelStudio(base_url=self.url, api_key=token, timeout=30, max_retries=0)

    def __repr__(self) -> str:
        return f"LabelStudioClient({self.url!r})"

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """`fn` with retries on unreachable server or 5xx; 4xx errors are the caller's."""
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except (httpx.TransportError, requests.ConnectionError) as error:
                problem = f"unreachable ({type(error).__name__})"
            except ApiError as error:
                if error.status_code is None or error.status_code < 500:
                    raise
                problem = f"HTTP {error.status_code}"
            if attempt < self.attempts:
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        raise LabelStudioUnavailable(
            f"Label Studio at {self.url}: {what} failed after {self.attempts} attempts: {problem}"
        )

    # --- projects and tasks -----------------------------------------------------------------

    def find_project(self, title: str) -> int | None:
        projects = self.call("list projects", lambda: list(self.sdk.projects.list(title=title)))
        return next((project.id for project in projects if project.title == title), None)

    def ensure_project(
        self, title: str, interface: Taxonomy | LabelingInterface, review: bool = False
    ) -> int:
        """The project with this title, created once: for double annotation, or (`review`) for
        adjudication, where one reviewer answers each task. A taxonomy means request texts."""
        if (existing := self.find_project(title)) is not None:
            return existing
        if isinstance(interface, Taxonomy):
            interface = text_interface(interface)
        created = self.call(
            f"create project {title!r}",
            lambda: self.sdk.projects.create(
                title=title,
                label_config=interface.review_config if review else interface.config,
                expert_instruction=interface.review_instructions
                if review
                else interface.instructions,
                show_instruction=True,
                maximum_annotations=1 if review else 2,
                overlap_cohort_percentage=0 if review else 100,
                show_overlap_first=not review,
            ),
        )
        return created.id

    def tasks(self, project: int) -> list[LabeledTask]:
        raw = self.call(
            f"list tasks of project {project}",
            lambda: list(self.sdk.tasks.list(project=project, fields="all")),
        )
        users = self.user_emails()
        return [
            LabeledTask(
                task_id=task.id,
                ext_id=str(task.data.get("ext_id")),
                data=dict(task.data),
                annotations=[_annotation(task.id, a, users) for a in task.annotations or []],
            )
            for task in raw
        ]

    def import_missing(self, project: int, tasks: list[dict[str, Any]]) -> int:
        """Import the tasks whose `ext_id` the project does not have yet; returns how many."""
        known = {task.ext_id for task in self.tasks(project)}
        missing = [task for task in tasks if str(task["data"]["ext_id"]) not in known]
        if missing:
            self.call(
                f"import {len(missing)} tasks into project {project}",
                lambda: self.sdk.projects.import_tasks(
                    id=project, request=missing, return_task_ids=True
                ),
            )
        return len(missing)

    def user_emails(self) -> dict[int, str]:
        users = self.call("list users", lambda: list(self.sdk.users.list()))
        return {user.id: user.email for user in users}

    # --- annotators -------------------------------------------------------------------------

    def sign_up(self, email: str, password: str) -> str:
        """A new annotator signs up through an invite link, as a person would; their token."""
        invite = self.call(
            "create an invite link",
            lambda: requests.get(
                f"{self.url}/api/invite",
                headers={"Authorization": f"Token {self._token}"},
                timeout=30,
            ),
        )
        invite.raise_for_status()
        return self._form_login(invite.json()["invite_url"], email, password)

    def log_in(self, email: str, password: str) -> str:
        """An existing annotator's token, through the login form."""
        return self._form_login("/user/login/", email, password)

    def _form_login(self, path: str, email: str, password: str) -> str:
        session = requests.Session()
        page = f"{self.url}{path}"
        self.call(f"open {path.split('?')[0]}", lambda: session.get(page, timeout=30))
        response = self.call(
            f"submit {path.split('?')[0]} for {email}",
            lambda: session.post(
                page,
                data={
                    "email": email,
                    "password": password,
                    "csrfmiddlewaretoken": session.cookies.get("csrftoken", ""),
                },
                headers={"Referer": page},
                allow_redirects=False,
                timeout=30,
            ),
        )
        if response.status_code != 302:
            raise PermissionError(
                f"Label Studio at {self.url}: {email} could not sign up or log in "
                f"(HTTP {response.status_code})"
            )
        token = session.get(f"{self.url}/api/current-user/token", timeout=30)
        token.raise_for_status()
        return token.json()["token"]

    def derived_password(self, account: str) -> str:
        """A password for an account this administrator creates (simulated annotators): keyed
        by the admin token, so nobody without it can guess it and it needs no storage."""
        digest = hmac.new(self._token.encode(), f"password:{account}".encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def as_user(self, token: str) -> "LabelStudioClient":
        return LabelStudioClient(self.url, token, self.attempts, self.backoff_seconds)

    # --- the labeling stream (what the UI does for an annotator) ----------------------------

    def next_task(self, project: int) -> dict[str, Any] | None:
        """The next task the stream serves this user; None when nothing is left for them."""
        response = self.call(
            f"fetch the next task of project {project}",
            lambda: self.sdk._client_wrapper.httpx_client.request(
                f"api/projects/{project}/next/", method="GET"
            ),
        )
        if response.status_code == 404:
            return None
        if response.status_code >= 500:
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url}: next task of project {project}: "
                f"HTTP {response.status_code}"
            )
        response.raise_for_status()
        return response.json()

    def submit_choice(
        self,
        task_id: int,
        label: str,
        lead_time: float,
        control: tuple[str, str] = (FROM_NAME, TO_NAME),
    ) -> None:
        """Answer a task as the UI does; `control` is the (from_name, to_name) of the choice."""
        self.call(
            f"submit an annotation for task {task_id}",
            lambda: self.sdk.annotations.create(
                id=task_id,
                result=[
                    {
                        "from_name": control[0],
                        "to_name": control[1],
                        "type": "choices",
                        "value": {"choices": [label]},
                    }
                ],
                lead_time=lead_time,
            ),
        )

    def delete_tasks_of_requests(self, request_ids: set[str]) -> int:
        """Delete, in every project, the tasks whose `request_id` is one of `request_ids`
        (their annotations go with them): erasure. Returns how many tasks were deleted."""
        projects = self.call("list projects", lambda: list(self.sdk.projects.list()))
        deleted = 0
        for project in projects:
            for task in self.tasks(project.id):
                if task.data.get("request_id") in request_ids:
                    self.call(
                        f"delete task {task.task_id}",
                        lambda task_id=task.task_id: self.sdk.tasks.delete(id=str(task_id)),
                    )
                    deleted += 1
        return deleted

    def withdraw(self, annotation_id: int) -> None:
        """Delete an annotation (the task goes back to the queue)."""
        self.call(
            f"delete annotation {annotation_id}",
            lambda: self.sdk.annotations.delete(id=annotation_id),
        )


def _annotation(task_id: int, raw: dict[str, Any], users: dict[int, str]) -> Annotation:
    """One annotation as ml/agreement reads it; an empty or malformed result is label None."""
    try:
        label = raw["result"][0]["value"]["choices"][0]
    except (KeyError, IndexError, TypeError):
        label = None
    completed_by = raw.get("completed_by")
    return Annotation(
        task=str(task_id),
        annotator=users.get(completed_by, f"user-{completed_by}"),
        label=label,
        created_at=datetime.fromisoformat(raw["created_at"].replace("Z", "+00:00")),
        cancelled=bool(raw.get("was_cancelled")),
        annotation_id=raw.get("id"),
        lead_seconds=_seconds(raw.get("lead_time")),
    )


def _seconds(value: object) -> float | None:
    """Label Studio's `lead_time`, or None when it did not record one."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None
