"""Shifted request traffic, seeded: what the drift alarm must catch (benchmarks/drift_power.py
measures how often it does; tests/unit/test_drift.py checks each kind drifts).

Each kind changes one thing a real feed changes in a share of a calm window's requests: a
product launch brings words the model never saw, a new channel sends longer messages, a routing
mistake sends another business's questions, a campaign or an outage swings the intent mix.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

NEW_TERMS = (
    "zelquo",
    "fintrix",
    "paymoro",
    "kwikvault",
    "lumacard",
    "orbipay",
    "trendex",
    "novacoin",
)
"""Made-up product names: words no reference vocabulary holds."""
NEW_TERM_PHRASES = (
    "with my {} account",
    "through the {} app",
    "for the {} plan",
    "using {}",
)
CONTEXT_SENTENCES = (
    "I have been a customer for many years and this has never happened before.",
    "I already tried calling the branch twice this week but nobody could help me.",
    "My partner and I share this account and we both need this sorted out quickly.",
    "This is urgent because I am travelling abroad at the end of the month.",
    "I looked through the help pages in the app but could not find an answer.",
)
OFF_TOPIC_SUBJECTS = (
    "the football match",
    "my tomato plants",
    "a pasta recipe",
    "the new sci-fi movie",
    "a hiking trail",
    "the guitar lesson",
    "my cat's vet visit",
    "the yoga retreat",
)
OFF_TOPIC_ASKS = (
    "What do you think about {}?",
    "Can you recommend something like {}?",
    "Any tips for {} this weekend?",
    "Where can I book {}?",
)


def new_vocabulary(text: str, rng: np.random.Generator) -> str:
    """A product launch: the text mentions a product the model never saw."""
    phrase = NEW_TERM_PHRASES[rng.integers(len(NEW_TERM_PHRASES))]
    return f"{text.rstrip('.?! ')} {phrase.format(NEW_TERMS[rng.integers(len(NEW_TERMS))])}"


def longer_text(text: str, rng: np.random.Generator) -> str:
    """A new channel (e-mail instead of chat): the text carries a sentence of context."""
    return f"{text} {CONTEXT_SENTENCES[rng.integers(len(CONTEXT_SENTENCES))]}"


def unseen_topic(text: str, rng: np.random.Generator) -> str:
    """A routing mistake: another business's question instead of this one."""
    ask = OFF_TOPIC_ASKS[rng.integers(len(OFF_TOPIC_ASKS))]
    return ask.format(OFF_TOPIC_SUBJECTS[rng.integers(len(OFF_TOPIC_SUBJECTS))])


TEXT_SHIFTS: dict[str, Callable[[str, np.random.Generator], str]] = {
    "new vocabulary": new_vocabulary,
    "longer texts": longer_text,
    "unseen topic": unseen_topic,
}
"""The shifts that change a text, by name."""
INTENT_MIX = "intent mix"
"""The shift that changes no text: a share of the window asks one of three intents."""
SHIFT_SHARES = {"new vocabulary": 0.3, "longer texts": 0.3, "unseen topic": 0.15, INTENT_MIX: 0.3}
"""The share of a window each kind of shift changes (chosen before measuring, not tuned)."""


def shift_texts(kind: str, texts: list[str], seed: int) -> list[str]:
    """Every text of `texts` with the shift `kind` applied (seeded)."""
    rng = np.random.default_rng(seed)
    return [TEXT_SHIFTS[kind](text, rng) for text in texts]
