"""Personal data is replaced by its kind, offline, and nothing else of the text changes: the
recognizers are presidio's patterns (checksummed where the kind has one), on a blank spaCy
pipeline that needs no download."""

import json
import socket
from datetime import UTC, datetime

import pytest

from ml.monitoring.prediction_log import (
    PredictionLogWriter,
    log_file_content,
    prediction_record,
    read_predictions,
)
from ml.security.redaction import Redactor, redactor


@pytest.fixture(scope="module")
def offline_redactor(request) -> Redactor:
    """Built with every outbound connection refused: it must not need the network."""
    original = socket.socket.connect

    def refuse(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"no network in this test: {address}")
        return original(self, address)

    socket.socket.connect = refuse
    try:
        built = Redactor()
        built.redact("write to someone@example.com")  # the suffix list is read on first use
    finally:
        socket.socket.connect = original
    return built


@pytest.mark.parametrize(
    ("text", "kind", "kept"),
    [
        ("mail me at anna.k@example.com please", "<EMAIL_ADDRESS>", "mail me at"),
        ("call me on +1 415 555 0132 today", "<PHONE_NUMBER>", "today"),
        ("call me on 07700 900123", "<PHONE_NUMBER>", "call me on"),
        ("my card 4111 1111 1111 1111 was declined", "<CREDIT_CARD>", "was declined"),
        ("IBAN DE89 3704 0044 0532 0130 00 is mine", "<IBAN_CODE>", "is mine"),
        ("logged in from 203.0.113.7 yesterday", "<IP_ADDRESS>", "yesterday"),
    ],
)
def test_each_kind_of_personal_data_is_replaced_by_its_kind(
    offline_redactor: Redactor, text: str, kind: str, kept: str
) -> None:
    redacted = offline_redactor.redact(text)
    assert kind in redacted and kept in redacted, redacted
    digits_before = sum(c.isdigit() for c in text)
    assert sum(c.isdigit() for c in redacted) < digits_before or "@" not in redacted


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("my name is Anna Kowalski and my card is lost", "my name is <PERSON> and my card is lost"),
        ("Hi, this is Tom. Where is my card?", "Hi, this is <PERSON>. Where is my card?"),
        ("Dear Mrs. Patel, my card", "Dear Mrs. <PERSON>, my card"),
        ("card blocked again. Regards, Seán O’Brien", "card blocked again. Regards, <PERSON>"),
        ("My name is Jean-Luc Picard", "My name is <PERSON>"),
    ],
)
def test_a_name_the_customer_introduces_or_signs_with_is_redacted(
    offline_redactor: Redactor, text: str, redacted: str
) -> None:
    assert offline_redactor.redact(text) == redacted


def test_a_text_without_personal_data_is_unchanged(offline_redactor: Redactor) -> None:
    for text in (
        "this is urgent, I am locked out",
        "thanks, I will wait for the new card",
        "I paid at Tesco and Amazon charged me twice",
        "I was charged 25.99 twice on 2026-01-03",
        "my order 4111 1111 1111 1112 never came",  # fails the Luhn check: not a card
        "",
    ):
        assert offline_redactor.redact(text) == text


def test_the_prediction_log_keeps_redacted_texts_and_the_request_path_is_untouched(tmp_path):
    raw = "card 4111 1111 1111 1111 lost, reach me at anna.k@example.com"
    record = prediction_record(
        "classify",
        "request_classifier",
        "1",
        {"text": raw},
        None,
        request_id="r1",
        text=raw,
        intent="lost_card",
    )
    writer = PredictionLogWriter(tmp_path, "w", flush_seconds=60, redact=redactor().redact)
    writer.log([record])
    assert record["text"] == raw, "the caller's record is not changed"
    writer.close()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    on_disk = b"".join(log_file_content(p) for p in files).decode("utf-8")
    assert "4111" not in on_disk and "anna.k" not in on_disk, "nor in the model's input"
    logged = read_predictions(tmp_path, datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))
    assert logged["text"].to_list() == ["card <CREDIT_CARD> lost, reach me at <EMAIL_ADDRESS>"], (
        json.dumps(logged.to_dicts(), default=str)
    )
