"""Seeded customer requests (text → intent) for `make demo` and the tests: deterministic (same
arguments and seed give identical frames) and imperfect as real feeds are: class imbalance, typos,
greetings and context, duplicates and near-duplicates, arrivals through the day.

The paraphrase templates and the words that fill them are data (`request_vocabulary_v1.json`),
versioned like the taxonomy they follow.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path
from string import Formatter

import numpy as np
import polars as pl

from ml.requests.taxonomy import synthetic_taxonomy

REQUEST_SOURCE = "synthetic"

TYPO_RATE = 0.10
CONTEXT_RATE = 0.25
GREETING_RATE = 0.20
SIGN_OFF_RATE = 0.15
NEAR_DUPLICATE_RATE = 0.03
EXACT_DUPLICATE_RATE = 0.01
ZIPF_EXPONENT = 1.1
ZIPF_OFFSET = 3.0
POPULARITY_SEED = 77
"""Which intents are popular is a property of the bank, not of the sample: fixed across seeds."""

VOCABULARY_PATH = Path(__file__).with_name("request_vocabulary_v1.json")
_VOCABULARY = json.loads(VOCABULARY_PATH.read_text(encoding="utf-8"))
TEMPLATES: dict[str, tuple[str, ...]] = {
    intent: tuple(templates) for intent, templates in _VOCABULARY["templates"].items()
}
"""Paraphrase templates per intent; `{slot}`s are filled from the words below."""
_SLOT_WORDS = {name: tuple(words) for name, words in _VOCABULARY["slots"].items()}
MERCHANTS = _SLOT_WORDS["merchants"]
CARD_KINDS = _SLOT_WORDS["card_kinds"]
WHEN = _SLOT_WORDS["when"]
COUNTRIES = _SLOT_WORDS["countries"]
CITIES = _SLOT_WORDS["cities"]
DEVICES = _SLOT_WORDS["devices"]
PEOPLE = _SLOT_WORDS["people"]
MONTHS = _SLOT_WORDS["months"]
DURATIONS = _SLOT_WORDS["durations"]
TERMS = _SLOT_WORDS["terms"]
DAYS_OF_MONTH = _SLOT_WORDS["days_of_month"]
PURPOSES = _SLOT_WORDS["purposes"]
MONEY_FORMATS = tuple((pattern, weight) for pattern, weight in _VOCABULARY["money_formats"])
_MONEY_TOTAL = sum(weight for _, weight in MONEY_FORMATS)
_MONEY_CUMULATIVE = [total / _MONEY_TOTAL for total in accumulate(w for _, w in MONEY_FORMATS)]
GREETINGS = tuple(_VOCABULARY["greetings"])
SIGN_OFFS = tuple(_VOCABULARY["sign_offs"])
EXTRA_WORDS = tuple(_VOCABULARY["extra_words"])
"""Words a re-sent message gains; none ends a template, greeting or sign-off (so edits show)."""
CONTEXTS = tuple(_VOCABULARY["contexts"])

KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _neighbour_keys() -> dict[str, str]:
    """For each letter, the keys a finger lands on instead: left, right, above, below."""
    neighbours: dict[str, str] = {}
    for row_index, row in enumerate(KEYBOARD_ROWS):
        for col, key in enumerate(row):
            near = row[max(col - 1, 0) : col] + row[col + 1 : col + 2]
            for other in (row_index - 1, row_index + 1):
                if 0 <= other < len(KEYBOARD_ROWS):
                    near += KEYBOARD_ROWS[other][col : col + 1]
            neighbours[key] = near
    return neighbours


NEIGHBOUR_KEYS = _neighbour_keys()


def _pick(options: tuple[str, ...]) -> Callable[[float], str]:
    return lambda u: options[int(u * len(options))]


def _money(u: float) -> str:
    """An amount with a currency written the many ways customers write it."""
    style = min(bisect_right(_MONEY_CUMULATIVE, u), len(MONEY_FORMATS) - 1)
    fraction = (u * 7919.0) % 1.0
    value = math.exp(math.log(5.0) + fraction * math.log(4000.0 / 5.0))
    pattern = MONEY_FORMATS[style][0]
    return pattern.format(value if ".2f" in pattern else round(value))


def _home_price(u: float) -> str:
    return f"${round(120 + u * 780) * 1000:,}"


def _last4(u: float) -> str:
    digits = f"{int(u * 10_000):04d}"
    return ("ending in ", "ending ", "no. ", "****")[int(u * 997) % 4] + digits


SLOT_FILLERS: dict[str, Callable[[float], str]] = {
    "amount": _money,
    "merchant": _pick(MERCHANTS),
    "when": _pick(WHEN),
    "card": _pick(CARD_KINDS),
    "country": _pick(COUNTRIES),
    "city": _pick(CITIES),
    "device": _pick(DEVICES),
    "last4": _last4,
    "person": _pick(PEOPLE),
    "n_days": lambda u: str(2 + int(u * 12)),
    "months": _pick(DURATIONS),
    "term": _pick(TERMS),
    "month": _pick(MONTHS),
    "home_price": _home_price,
    "day": _pick(DAYS_OF_MONTH),
    "purpose": _pick(PURPOSES),
}


def _slots(template: str) -> tuple[str, ...]:
    return tuple(field for _, field, _, _ in Formatter().parse(template) if field)


_TEMPLATE_SLOTS: dict[str, tuple[tuple[str, ...], ...]] = {
    intent: tuple(_slots(template) for template in templates)
    for intent, templates in TEMPLATES.items()
}
MAX_SLOTS = max(len(slots) for per_intent in _TEMPLATE_SLOTS.values() for slots in per_intent)

# Uniform draws per request, one column each: what they decide.
(
    _U_TEMPLATE,
    _U_GREETING,
    _U_SIGN_OFF,
    _U_CONTEXT,
    _U_CASE,
    _U_PUNCT,
    _U_TYPO,
    _U_TYPO_POS,
    _U_TYPO_KIND,
) = range(9)
_U_SLOTS = 9
_U_COLUMNS = _U_SLOTS + MAX_SLOTS


def _typo(text: str, u_position: float, u_kind: float) -> str:
    """One keyboard slip inside a word: swap, drop, double or a neighbouring key."""
    letters = [i for i, char in enumerate(text) if char.isalpha()]
    if len(letters) < 4:
        return text
    position = letters[int(u_position * (len(letters) - 1))]
    kind = int(u_kind * 4)
    char = text[position]
    if kind == 0 and position + 1 < len(text) and text[position + 1].isalpha():
        return text[:position] + text[position + 1] + char + text[position + 2 :]
    if kind == 1:
        return text[:position] + text[position + 1 :]
    if kind == 2:
        return text[:position] + char + text[position:]
    near = NEIGHBOUR_KEYS.get(char.lower(), "")
    if not near:
        return text[:position] + char + text[position:]
    return text[:position] + near[int(u_kind * 4 % 1 * len(near))] + text[position + 1 :]


def _punctuate(text: str, u_punct: float) -> str:
    """End punctuation the way people type into a chat box: often none, sometimes too much."""
    if u_punct < 0.30:
        return text.rstrip(".?!")
    if u_punct < 0.36 and text[-1:] in "?!":
        return text + text[-1] * (1 + int(u_punct * 100) % 2)
    if u_punct < 0.39:
        return text.rstrip(".?!") + " ."
    return text


def _lower_first(text: str) -> str:
    return text if text[:2] in ("I ", "I'") else text[:1].lower() + text[1:]


def _recase(text: str, u_case: float) -> str:
    """Mostly as written or all lowercase; a few shouted; some without the capital."""
    if u_case < 0.40:
        return text.lower()
    if u_case < 0.43:
        return text.upper()
    if u_case < 0.49:
        return _lower_first(text)
    return text


def _compose(intent: str, u: list[float]) -> str:
    """One customer message for `intent` from pre-drawn uniforms (no RNG calls per row)."""
    templates = TEMPLATES[intent]
    index = int(u[_U_TEMPLATE] * len(templates))
    text = templates[index]
    slots = _TEMPLATE_SLOTS[intent][index]
    if slots:
        text = text.format_map(
            {slot: SLOT_FILLERS[slot](u[_U_SLOTS + k]) for k, slot in enumerate(slots)}
        )
    text = _punctuate(text, u[_U_PUNCT])
    if u[_U_GREETING] < GREETING_RATE:
        text = GREETINGS[int(u[_U_GREETING] / GREETING_RATE * len(GREETINGS))] + _lower_first(text)
    if u[_U_CONTEXT] < CONTEXT_RATE:
        share = u[_U_CONTEXT] / CONTEXT_RATE * len(CONTEXTS)
        number = f"{int(share % 1 * 10**7):07d}"
        text += ("" if text[-1:] in ".?!" else ".") + CONTEXTS[int(share)].replace(
            "{number}", number
        )
    if u[_U_SIGN_OFF] < SIGN_OFF_RATE:
        text += SIGN_OFFS[int(u[_U_SIGN_OFF] / SIGN_OFF_RATE * len(SIGN_OFFS))]
    text = _recase(text, u[_U_CASE])
    if u[_U_TYPO] < TYPO_RATE:
        text = _typo(text, u[_U_TYPO_POS], u[_U_TYPO_KIND])
    return text


def _near_duplicate(text: str, u_kind: float, u_detail: float) -> str:
    """The same request typed again with a tiny edit (re-sent, or copy-pasted and touched up)."""
    kind = int(u_kind * 5)
    edited = text
    if kind == 0:
        edited = text.lower() if text != text.lower() else text.capitalize()
    elif kind == 1:
        edited = text.rstrip(".?!") if text[-1:] in ".?!" else text + "?"
    elif kind == 2:
        spaces = [i for i, char in enumerate(text) if char == " "]
        if spaces:
            at = spaces[int(u_detail * len(spaces))]
            edited = text[:at] + " " + text[at:]
    elif kind == 3:
        digits = [i for i, char in enumerate(text) if char.isdigit()]
        if digits:
            at = digits[int(u_detail * len(digits))]
            new_digit = str((int(text[at]) + 1 + int(u_detail * 8)) % 10)
            edited = text[:at] + new_digit + text[at + 1 :]
    if edited == text:
        word = EXTRA_WORDS[int(u_detail * len(EXTRA_WORDS))]
        edited = f"{word} {text}" if u_kind > 0.9 else f"{text} {word}"
    return edited


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# Requests arrive mostly in waking hours (UTC hour → relative intensity).
HOURLY_INTENSITY = np.array(
    [0.15, 0.1, 0.08, 0.08, 0.1, 0.18, 0.35, 0.6, 0.85, 1.0, 1.0, 0.95,
     0.9, 0.95, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.6, 0.45, 0.3, 0.2]
)  # fmt: skip


def _arrival_times(rng: np.random.Generator, count: int, first_us: int, span_us: int) -> np.ndarray:
    """Sorted epoch microseconds in [first, first + span] with a day/night rhythm (thinning)."""
    accepted = [np.empty(0, dtype=np.int64)]
    have = 0
    while have < count:
        size = 2 * (count - have) + 16
        candidates = first_us + rng.integers(0, span_us + 1, size=size, dtype=np.int64)
        hours = (candidates // 3_600_000_000) % 24
        keep = candidates[rng.random(candidates.size) < HOURLY_INTENSITY[hours]]
        accepted.append(keep)
        have += keep.size
    return np.sort(np.concatenate(accepted)[:count])


def _intent_weights(count: int) -> np.ndarray:
    """Zipf–Mandelbrot popularity over intents (a heavy head, a long tail), in a fixed order."""
    ranks = np.empty(count, dtype=np.int64)
    ranks[np.random.default_rng(POPULARITY_SEED).permutation(count)] = np.arange(count)
    weights = 1.0 / (ranks + ZIPF_OFFSET) ** ZIPF_EXPONENT
    return weights / weights.sum()


def generate_requests(n: int, *, seed: int = 7, start: datetime, end: datetime) -> pl.DataFrame:
    """`n` customer requests over the synthetic taxonomy, received between `start` and `end`.

    About 1% of rows repeat an earlier row verbatim (same request_id: a re-delivered event the
    validation layer must quarantine), about 3% are near-duplicates of an earlier text under a new
    request_id, and every intent appears at least once whenever n leaves room for it.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    start_utc, end_utc = _as_utc(start), _as_utc(end)
    if end_utc < start_utc:
        raise ValueError(f"end {end_utc.isoformat()} is before start {start_utc.isoformat()}")
    intents = synthetic_taxonomy().intents
    rng = np.random.default_rng(seed)

    original_rate = 1.0 - NEAR_DUPLICATE_RATE - EXACT_DUPLICATE_RATE
    kinds = rng.choice(3, size=n, p=[original_rate, NEAR_DUPLICATE_RATE, EXACT_DUPLICATE_RATE])
    if n:
        kinds[0] = 0
    originals = int((kinds == 0).sum())
    unique = int((kinds != 2).sum())

    intent_codes = rng.choice(len(intents), size=originals, p=_intent_weights(len(intents)))
    if originals >= len(intents):
        spots = rng.choice(originals, size=len(intents), replace=False)
        intent_codes[spots] = rng.permutation(len(intents))

    span_us = (end_utc - start_utc) // timedelta(microseconds=1)
    epoch_us = (start_utc - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    arrivals = _arrival_times(rng, unique, epoch_us, span_us).tolist()
    uniforms = rng.random((n, _U_COLUMNS)).tolist()
    source_draws = rng.random(n).tolist()

    request_ids: list[str] = []
    texts: list[str] = []
    labels: list[str] = []
    received: list[int] = []
    original_rows: list[int] = []
    unique_rows: list[int] = []
    next_original = 0
    for row, kind in enumerate(kinds.tolist()):
        u = uniforms[row]
        if kind == 2:
            source = unique_rows[int(source_draws[row] * len(unique_rows))]
            request_ids.append(request_ids[source])
            texts.append(texts[source])
            labels.append(labels[source])
            received.append(received[source])
            continue
        if kind == 1:
            source = original_rows[int(source_draws[row] * len(original_rows))]
            texts.append(_near_duplicate(texts[source], u[_U_TEMPLATE], u[_U_CASE]))
            labels.append(labels[source])
        else:
            intent = intents[intent_codes[next_original]]
            next_original += 1
            texts.append(_compose(intent, u))
            labels.append(intent)
            original_rows.append(row)
        received.append(arrivals[len(unique_rows)])
        unique_rows.append(row)
        request_ids.append(f"syn-{seed}-{len(unique_rows):06d}")

    return pl.DataFrame(
        {
            "request_id": pl.Series(request_ids, dtype=pl.Utf8),
            "text": pl.Series(texts, dtype=pl.Utf8),
            "intent": pl.Series(labels, dtype=pl.Utf8),
            "source": pl.Series([REQUEST_SOURCE] * n, dtype=pl.Utf8),
            "received_at": pl.Series(received, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        }
    )
