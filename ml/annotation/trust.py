"""Which annotations a batch counts. Label Studio lets anyone with access to a project post
anything on any task (open source has no roles), so the pipeline decides: only annotations by
people on the deployment's allow-list, only on tasks that are the batch's own items and
unchanged since import (the request id and the text as sent). Everything else is reported by
task, never silently dropped."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from ml.annotation.label_studio_client import LabeledTask


class AllowListError(ValueError):
    """An allow-list entry that is neither an e-mail address nor `@domain`."""


@dataclass(frozen=True)
class AnnotatorAllowList:
    """Who may annotate in this deployment: e-mail addresses, and `@domain` for everyone at a
    domain (the demo's simulated annotators: `@simulated.annotators.local`)."""

    emails: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str, where: str = "MLOPS_ANNOTATORS") -> AnnotatorAllowList:
        emails, domains = set(), set()
        for entry in (e.strip().lower() for e in text.replace("\n", ",").split(",")):
            if not entry:
                continue
            if entry.startswith("@") and "." in entry and "@" not in entry[1:]:
                domains.add(entry[1:])
            elif entry.count("@") == 1 and not entry.startswith("@") and "." in entry:
                emails.add(entry)
            else:
                raise AllowListError(f"{where}: {entry!r} is neither name@domain nor @domain")
        return cls(frozenset(emails), frozenset(domains))

    def __bool__(self) -> bool:
        return bool(self.emails or self.domains)

    def allows(self, email: str) -> bool:
        email = email.strip().lower()
        return email in self.emails or email.rpartition("@")[2] in self.domains


@dataclass
class VettedTasks:
    tasks: list[LabeledTask]
    """The batch's own, unchanged tasks, with the annotations of allow-listed people only."""
    foreign: list[str] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """Annotations by someone not on the allow-list."""

    @property
    def problems(self) -> list[str]:
        return [*self.foreign, *self.edited, *self.refused]


def vet_tasks(
    tasks: Iterable[LabeledTask],
    items: Mapping[str, Mapping[str, str]],
    allowed: AnnotatorAllowList,
) -> VettedTasks:
    """`tasks` of a batch's project judged against its `items` (by external id: the task
    fields as they were sent to Label Studio) and the allow-list."""
    if not allowed:
        raise AllowListError(
            "no annotator is allow-listed: set MLOPS_ANNOTATORS (e-mail addresses or @domain, "
            "comma-separated) to the people who annotate in this deployment"
        )
    vetted = VettedTasks([])
    for task in tasks:
        where = f"task {task.task_id} ({task.ext_id})"
        item = items.get(task.ext_id)
        if item is None:
            vetted.foreign.append(f"{where}: not an item of this batch")
            continue
        changed = [name for name, sent in item.items() if str(task.data.get(name)) != sent]
        if changed:
            vetted.edited.append(f"{where}: {' and '.join(changed)} changed since import")
            continue
        kept = []
        for annotation in task.annotations:
            if allowed.allows(annotation.annotator):
                kept.append(annotation)
            else:
                vetted.refused.append(f"{where}: by {annotation.annotator}, not allow-listed")
        vetted.tasks.append(replace(task, annotations=kept))
    return vetted
