"""Simulated annotators for the demo and the tests: real Label Studio users who take tasks from
the labeling stream and submit through the same API the UI uses, answering from the source's
hidden labels with a set error rate. They are named as simulated wherever they appear; the real
flow waits for people."""

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ml.annotation.label_studio_client import FROM_NAME, TO_NAME, LabelStudioClient

SIMULATED_DOMAIN = "simulated.annotators.local"


@dataclass
class SimulatedAnnotator:
    email: str
    client: LabelStudioClient
    error_rate: float
    seed: int

    def annotate(
        self,
        project: int,
        answers: Mapping[str, str],
        taxonomy: Sequence[str],
        limit: int | None = None,
        control: tuple[str, str] = (FROM_NAME, TO_NAME),
    ) -> int:
        """Label tasks from the stream until none is left (or `limit`); returns how many.
        `control` names the project's choice (intent of a text by default; a cell image's
        label: `(IMAGE_FROM_NAME, IMAGE_TO_NAME)`)."""
        rng = random.Random(self.seed)
        done = 0
        while limit is None or done < limit:
            task = self.client.next_task(project)
            if task is None:
                break
            truth = answers[str(task["data"]["ext_id"])]
            label = truth
            if rng.random() < self.error_rate:
                label = rng.choice([intent for intent in taxonomy if intent != truth] or [truth])
            self.client.submit_choice(
                task["id"], label, lead_time=round(rng.uniform(2, 20), 1), control=control
            )
            done += 1
        return done


def simulated_annotator(
    admin: LabelStudioClient,
    name: str,
    error_rate: float,
    seed: int,
    domain: str = SIMULATED_DOMAIN,
) -> SimulatedAnnotator:
    """Sign the simulated annotator up through an invite link (or log them in again) and
    return them ready to work. Another `domain` makes someone the allow-list does not know."""
    email = f"{name}@{domain}"
    password = admin.derived_password(email)  # random to anyone without the admin token
    try:
        token = admin.log_in(email, password)
    except PermissionError:
        token = admin.sign_up(email, password)
    return SimulatedAnnotator(email, admin.as_user(token), error_rate, seed)
