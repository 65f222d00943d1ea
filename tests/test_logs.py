"""Phone redaction by construction: every log path, every format, guía numbers intact."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from executor.logs import REDACTED, bind_run, configure_logging, get_logger, redact_text, unbind_run

PHONE_FORMATS = [
    "+573001234567",
    "573001234567",
    "3001234567",
    "300 123 4567",
    "300-123-4567",
    "(300) 123-4567",
    "+57 300 123 4567",
    "+57-300-123-4567",
    "0057 300 123 4567",
]
GUIDES = ["240012345678", "GUIA-3001234", "1234567890123", "70012345", "SVT-300123456789"]


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging(stream=buffer)
    try:
        yield buffer
    finally:
        configure_logging()


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("phone", PHONE_FORMATS)
def test_redact_text_every_format(phone: str) -> None:
    out = redact_text(f"call {phone} now")
    assert phone not in out and REDACTED in out
    assert "1234567" not in out


@pytest.mark.parametrize("guide", GUIDES)
def test_guide_numbers_survive(guide: str) -> None:
    assert redact_text(f"guía {guide} sin movimiento") == f"guía {guide} sin movimiento"


@pytest.mark.parametrize("phone", PHONE_FORMATS)
def test_structlog_event_nested_values(log_output: io.StringIO, phone: str) -> None:
    log = get_logger("tests.logs")
    log.info(
        "action.sent",
        guide="240012345678",
        to=phone,
        nested={"a": [phone, {"b": f"x{phone}y"}], phone: "key"},
        items=(phone,),
    )
    text = log_output.getvalue()
    assert phone not in text and "3001234567" not in text
    (line,) = lines(log_output)
    assert line["event"] == "action.sent" and line["guide"] == "240012345678"


def test_exception_text_and_locals_are_redacted(log_output: io.StringIO) -> None:
    log = get_logger("tests.logs")

    def fails(phone: str) -> None:
        secret_local = phone  # a local variable holding a phone must never be shown
        raise ValueError(f"cannot send to {secret_local}")

    try:
        fails("+573001234567")
    except ValueError:
        log.exception("action.failed")
    text = log_output.getvalue()
    assert "3001234567" not in text
    assert "secret_local" not in text  # show_locals is off
    assert "ValueError" in text and REDACTED in text


@pytest.mark.parametrize("name", ["httpx", "uvicorn.error", "uvicorn.access", "sqlalchemy", "x"])
def test_stdlib_loggers_pass_through_redaction(log_output: io.StringIO, name: str) -> None:
    logging.getLogger(name).warning("request to %s failed", "300 123 4567")
    try:
        raise RuntimeError("for 3001234567")
    except RuntimeError:
        logging.getLogger(name).exception("boom with +573001234567")
    text = log_output.getvalue()
    assert "123 4567" not in text and "3001234567" not in text
    assert REDACTED in text


def test_run_id_bound_on_every_line(log_output: io.StringIO) -> None:
    bind_run("run-123")
    try:
        get_logger("a").info("run.started")
        get_logger("b").warning("action.failed", code="HTTP_400")
        logging.getLogger("httpx").info("HTTP Request")
    finally:
        unbind_run()
    get_logger("a").info("after")
    parsed = lines(log_output)
    assert [p.get("run_id") for p in parsed] == ["run-123", "run-123", "run-123", None]


def test_log_records_are_redacted_before_any_handler() -> None:
    # pytest's own log capture and any handler a platform adds see redacted records too.
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        get_logger("tests.logs").info("event", phone="3001234567")
    finally:
        logging.getLogger().removeHandler(keep)
    assert records and "3001234567" not in str(records[-1].msg)
    assert structlog.is_configured()
