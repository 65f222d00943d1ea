"""Structured JSON logs with phone redaction by construction (DESIGN §9).

Every event, ours or a standard-library logger's (httpx, uvicorn, sqlalchemy), passes through
:func:`redact_event` before it is rendered: phone numbers are replaced in every string, in nested
dicts and lists, and in rendered exception text. Tracebacks never render local variables.

Events have stable dotted names (``run.started``, ``action.sent``, ``breaker.opened``...);
``run_id`` is bound with :func:`bind_run` so every line of a run carries it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

REDACTED = "[REDACTED_PHONE]"

# A Colombian mobile in any usual writing: +57 / 57 / 0057 prefix or none, 3xx, then 7 digits
# with optional separators. The look-arounds keep longer digit runs (guía numbers) and hex runs
# (ids, hashes) intact.
PHONE_PATTERN = re.compile(
    r"(?<![0-9A-Fa-f])"
    r"(?:(?:\+|00)?57[\s.\-]?)?"
    r"\(?3\d{2}\)?[\s.\-]?\d{3}[\s.\-]?\d{4}"
    r"(?![0-9A-Fa-f])"
)
UUID_PATTERN = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
# Generic international numbers in E.164 form (another country's phone is still a phone).
E164_PATTERN = re.compile(r"\+\d{10,15}(?!\d)")


def redact_text(text: str) -> str:
    if not any(ch.isdigit() for ch in text) or UUID_PATTERN.fullmatch(text):
        return text
    return E164_PATTERN.sub(REDACTED, PHONE_PATTERN.sub(REDACTED, text))


def redact_value(value: Any, _depth: int = 0) -> Any:
    if _depth > 20:
        return "[TRUNCATED]"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {redact_text(str(k)): redact_value(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, _depth + 1) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact_text(str(value))


def redact_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: must run after exception rendering, right before the renderer."""
    return {key: redact_value(val) for key, val in event_dict.items()}


_configured = False
_base_record_factory = logging.getLogRecordFactory()


def _redacting_record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Every LogRecord, from any library, is born redacted: whatever handler a platform or a
    test runner adds sees no phone, not even in a traceback."""
    record = _base_record_factory(*args, **kwargs)
    if not isinstance(record.msg, dict):  # structlog event dicts are redacted by redact_event
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = redact_text(message), None
    if record.exc_info and record.exc_info[1] is not None:
        import traceback

        record.exc_text = redact_text("".join(traceback.format_exception(*record.exc_info)))
    return record


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        ),
        structlog.processors.UnicodeDecoder(),
    ]


def build_formatter() -> logging.Formatter:
    """The one formatter every handler uses: redaction is the last step before JSON."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            redact_event,
            structlog.processors.JSONRenderer(default=str),
        ],
    )


def configure_logging(level: str | None = None, stream: TextIO | None = None) -> None:
    """Route structlog and the standard library through one redacting JSON pipeline."""
    global _configured
    logging.setLogRecordFactory(_redacting_record_factory)
    level_name = (level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    shared = _shared_processors()
    structlog.configure(
        processors=[
            *shared,
            # Redact before the record reaches any stdlib handler (pytest's too), then again
            # in the formatter for records that did not come through structlog.
            redact_event,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(build_formatter())
    handler.set_name("executor-json")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "executor-json":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level_name)
    # Libraries log through root; uvicorn installs its own handlers unless told not to.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore"):
        lib = logging.getLogger(name)
        lib.handlers = []
        lib.propagate = True
    logging.getLogger("httpcore").setLevel(max(logging.INFO, root.level))
    _configured = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    if not _configured:
        configure_logging()
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger


def bind_run(run_id: str) -> None:
    structlog.contextvars.bind_contextvars(run_id=run_id)


def unbind_run() -> None:
    structlog.contextvars.unbind_contextvars("run_id")
