"""Personal data out of every copy the platform keeps of a customer's text: e-mail addresses,
phone numbers, card, IBAN, social-security and crypto-wallet numbers and IP addresses are
replaced by their kind (`<EMAIL_ADDRESS>`, `<CREDIT_CARD>`…) before a text is logged,
profiled, previewed or sent to annotation. The model still answers on the text as sent.

The recognizers are presidio's pattern recognizers (regular expressions plus checksums: Luhn
for cards, mod-97 for IBANs, libphonenumber for phones), run offline on a blank spaCy pipeline.
Person names in general need a statistical NER model, which cannot be downloaded here; the
names a customer writes the way customers introduce or sign themselves ("my name is Anna
Kowalski", "this is Tom", "Mrs. Patel", "thanks, Jo") are found by a pattern recognizer of our
own (`PERSON`): a capitalized name after such a cue. A name without a cue stays (README,
Security). The public-suffix list that e-mail validation reads is the one bundled with
tldextract (no fetch).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence

REDACTED_ENTITIES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "CRYPTO",
    "IP_ADDRESS",
    "PERSON",
)
"""What is replaced. Dates, URLs and long numbers (order or account ids) stay: they are rarely
personal on their own and a request classifier needs them."""
NAME_WORD = r"\p{Lu}(?:\p{Ll}+|['’]\p{Lu}\p{Ll}+)(?:[-'’]\p{Lu}?\p{Ll}+)*"
NAME = rf"{NAME_WORD}(?:[ \t]+{NAME_WORD}){{0,2}}"
"""One to three capitalized words (a first name, and a surname or two)."""
NAME_CUES = {
    "introduced": r"(?i:\b(?:my name is|my name's|name:|this is|i am|i'm|call me|ask for))",
    "signed": r"(?i:\b(?:thanks|thank you|regards|cheers|sincerely|best|signed)[,!.]?)",
    "titled": r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr)\.?",
}
"""What precedes a name in a customer's message: the name is the capitalized words right after
(the cue's case does not matter, the name's does: "this is urgent" names nobody)."""
MIN_SCORE = 0.4
"""Presidio's confidence below which a match is left alone (a bare 10-digit number)."""


class Redactor:
    """presidio's analyzer (pattern recognizers only) and anonymizer; built once per process
    (about 2 s), then some milliseconds per text."""

    def __init__(self, entities: Sequence[str] = REDACTED_ENTITIES, min_score: float = MIN_SCORE):
        os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")  # the bundled list only
        import spacy
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
        from presidio_anonymizer import AnonymizerEngine

        class BlankPipeline(SpacyNlpEngine):
            """Tokens only: no model to download, no NER (patterns do the work)."""

            def load(self) -> None:
                self.nlp = {"en": spacy.blank("en")}

        nlp = BlankPipeline(models=[{"lang_code": "en", "model_name": "blank"}])
        nlp.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.load_predefined_recognizers(nlp_engine=nlp, languages=["en"])
        registry.add_recognizer(name_recognizer())
        self.entities = list(entities)
        self.min_score = min_score
        self.analyzer = AnalyzerEngine(
            nlp_engine=nlp, registry=registry, supported_languages=["en"]
        )
        self.anonymizer = AnonymizerEngine()

    def redact(self, text: str) -> str:
        if not text:
            return text
        found = self.analyzer.analyze(
            text, language="en", entities=self.entities, score_threshold=self.min_score
        )
        if not found:
            return text
        return self.anonymizer.anonymize(text, found).text

    def redact_all(self, texts: Iterable[str | None]) -> list[str | None]:
        return [None if text is None else self.redact(text) for text in texts]


def name_recognizer():
    """Presidio's PatternRecognizer for `PERSON`: a name right after a cue (NAME_CUES), case-
    sensitive for the name itself."""
    import regex
    from presidio_analyzer import Pattern, PatternRecognizer

    return PatternRecognizer(
        supported_entity="PERSON",
        name="CuedNameRecognizer",
        patterns=[
            Pattern(f"name {kind}", rf"(?<={cue}[ \t]+){NAME}\b", 0.6)
            for kind, cue in NAME_CUES.items()
        ],
        global_regex_flags=regex.DOTALL | regex.MULTILINE,
    )


@functools.cache
def redactor() -> Redactor:
    """The process's one redactor (its recognizers are compiled once)."""
    return Redactor()


def redact(text: str) -> str:
    return redactor().redact(text)


def redact_all(texts: Iterable[str | None]) -> list[str | None]:
    return redactor().redact_all(texts)
