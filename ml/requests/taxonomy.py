"""Intent taxonomies: the closed label set shared by the generator, the labeling config and models.

A taxonomy is versioned data, not code, so that relabeling or adding an intent is a reviewed file
change and every model can say exactly which label set it was trained on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SYNTHETIC_TAXONOMY_PATH = Path(__file__).parent / "taxonomies" / "synthetic_intents_v1.json"
INTENT_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
SOURCE_LABEL_PATTERN = re.compile(r"^\S(?:.*\S)?$")
"""A source's own labels are kept as the source spells them: any name without outer spaces."""


@dataclass(frozen=True)
class Taxonomy:
    """A named, versioned, ordered set of intents (the order fixes model class indices)."""

    name: str
    version: int
    intents: tuple[str, ...]
    descriptions: tuple[str, ...] = ()
    """One per intent, in the same order; empty when the source brings bare names."""

    def __post_init__(self) -> None:
        if self.descriptions and len(self.descriptions) != len(self.intents):
            raise ValueError(
                f"taxonomy {self.name!r}: {len(self.descriptions)} descriptions "
                f"for {len(self.intents)} intents"
            )

    def __len__(self) -> int:
        return len(self.intents)

    def __contains__(self, intent: object) -> bool:
        return intent in self.intents

    @property
    def label(self) -> str:
        """`name@vN`: how runs and model cards refer to the label set."""
        return f"{self.name}@v{self.version}"

    def description(self, intent: str) -> str:
        """The human description of an intent ('' when the taxonomy has none)."""
        index = self.intents.index(intent)
        return self.descriptions[index] if self.descriptions else ""


def _check(
    origin: str,
    name: object,
    version: object,
    intents: Sequence[object],
    pattern: re.Pattern[str] = INTENT_NAME_PATTERN,
) -> None:
    """Raise a ValueError naming `origin` on the first thing wrong with the taxonomy."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{origin}: 'name' must be a non-empty string, got {name!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{origin}: 'version' must be a positive integer, got {version!r}")
    if not intents:
        raise ValueError(f"{origin}: 'intents' is empty")
    seen: set[str] = set()
    for position, intent in enumerate(intents):
        if not isinstance(intent, str) or not pattern.match(intent):
            expected = (
                "a snake_case name"
                if pattern is INTENT_NAME_PATTERN
                else "a name without outer spaces"
            )
            raise ValueError(f"{origin}: intent #{position} {intent!r} is not {expected}")
        if intent in seen:
            raise ValueError(f"{origin}: duplicate intent {intent!r}")
        seen.add(intent)


def taxonomy_from_names(name: str, version: int, intents: Sequence[str]) -> Taxonomy:
    """Build a taxonomy for a source that brings its own label list, kept as it spells them."""
    _check(f"taxonomy {name!r}", name, version, intents, SOURCE_LABEL_PATTERN)
    return Taxonomy(name=name, version=version, intents=tuple(intents))


def load_taxonomy(path: Path) -> Taxonomy:
    """Read and validate a taxonomy file: `{"name", "version", "intents": [{"name", ...}]}`,
    or a source's bare JSON list of labels (named after its folder, version 1)."""
    origin = str(path)
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ValueError(f"{origin}: taxonomy file not found") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{origin}: not valid JSON ({error})") from error
    if isinstance(document, list):
        return taxonomy_from_names(Path(path).parent.name or "source", 1, document)
    if not isinstance(document, dict):
        raise ValueError(f"{origin}: top level must be an object, got {type(document).__name__}")
    missing = [key for key in ("name", "version", "intents") if key not in document]
    if missing:
        raise ValueError(f"{origin}: missing key(s) {', '.join(map(repr, missing))}")
    entries = document["intents"]
    if not isinstance(entries, list):
        raise ValueError(f"{origin}: 'intents' must be a list, got {type(entries).__name__}")
    names: list[object] = []
    descriptions: list[str] = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ValueError(f"{origin}: intent #{position} must be an object with a 'name'")
        description = entry.get("description", "")
        if not isinstance(description, str):
            raise ValueError(f"{origin}: intent #{position} 'description' must be a string")
        names.append(entry["name"])
        descriptions.append(description)
    _check(origin, document["name"], document["version"], names)
    return Taxonomy(
        name=document["name"],
        version=document["version"],
        intents=tuple(str(intent) for intent in names),
        descriptions=tuple(descriptions) if any(descriptions) else (),
    )


def synthetic_taxonomy() -> Taxonomy:
    """The bundled 77-intent retail-bank taxonomy the synthetic requests are drawn from."""
    return load_taxonomy(SYNTHETIC_TAXONOMY_PATH)
