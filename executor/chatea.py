"""The Chatea WhatsApp API client: the only module that knows the wire format (DESIGN §6).

:meth:`ChateaClient.send_template` never raises for a provider or network problem; it returns one
of four outcomes, and the caller maps them onto the action life cycle:

========================================  ==========  =========================================
What happened                             Result      Why
========================================  ==========  =========================================
any 2xx                                   Sent        provider id = JSON ``id``/``messageId``
4xx except 408 and 429                    Permanent   the request itself is wrong
408, 429, 5xx                             Transient   retry later (``Retry-After`` honoured)
5xx with ``retry_5xx=False``              Unknown     a 5xx may hide a message that was sent
connect error / connect or pool timeout   Transient   the request never left (retried in-call)
invalid request built locally             Transient   never sent; a config problem (breaker)
read/write timeout, reset, protocol       Unknown     the request may have been delivered
error, overall deadline, anything else
========================================  ==========  =========================================

Only connect failures are retried inside one call (the request provably never reached the
provider); everything else is returned at once so the caller's persisted state decides.

Nothing this module logs or returns contains the recipient's phone, the request body or the API
key: ``reason`` texts are truncated, stripped of the key and the phone, and redacted.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from executor.config import Settings
from executor.errors import ConfigError
from executor.logs import get_logger, redact_text

log = get_logger("executor.chatea")

MESSAGES_PATH = "/messages"
LANGUAGE = "es"
MAX_REASON_LENGTH = 200
# Retry-After values are capped: a provider asking for more than a day is treated as a day.
MAX_RETRY_AFTER_SECONDS = 86_400.0
# A whole send_template call (connect retries included) ends within timeout + this slack, well
# inside the action lease (timeout + 30 s, DESIGN §5), so a lease never expires mid-send.
DEADLINE_SLACK_SECONDS = 15.0
E164 = re.compile(r"^\+[1-9]\d{7,14}$")

_CONNECT_FAILURES: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


@dataclass(frozen=True)
class Sent:
    provider_message_id: str | None
    status_code: int


@dataclass(frozen=True)
class Permanent:
    code: str
    reason: str
    status_code: int | None


@dataclass(frozen=True)
class Transient:
    code: str
    reason: str
    retry_after: float | None
    status_code: int | None


@dataclass(frozen=True)
class Unknown:
    code: str
    reason: str
    status_code: int | None


SendResult = Sent | Permanent | Transient | Unknown


# ---- pure helpers (wire format) -------------------------------------------------------------


def build_payload(
    *, device_id: str, action_id: str, to: str, template: str, parameters: Sequence[str]
) -> dict[str, Any]:
    """The JSON body of ``POST /messages``; parameters keep the given order."""
    return {
        "device_id": device_id,
        "to": to,
        "reference": action_id,
        "template": {
            "name": template,
            "language": LANGUAGE,
            "components": [
                {
                    "type": "body",
                    "parameters": [{"type": "text", "text": str(p)} for p in parameters],
                }
            ],
        },
    }


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), else None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        if seconds != seconds or seconds < 0:  # NaN or negative
            return None
        return min(seconds, MAX_RETRY_AFTER_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(delta, 0.0), MAX_RETRY_AFTER_SECONDS)


def _provider_id(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    for key in ("id", "messageId"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def _provider_message(response: httpx.Response) -> str:
    """The provider's own error text, best effort (unsanitized: callers sanitize)."""
    try:
        data = response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            parts = [str(error[k]) for k in ("code", "message") if error.get(k)]
            if parts:
                return ": ".join(parts)
        parts = [
            str(data[k]) for k in ("error", "message", "detail") if isinstance(data.get(k), str)
        ]
        if parts:
            return ": ".join(parts)
    return json.dumps(data, ensure_ascii=False)[: MAX_REASON_LENGTH * 2]


def _log_connect_retry(action_id: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "chatea.connect_retry",
            action_id=action_id,
            attempt=state.attempt_number,
            error=type(error).__name__ if error is not None else None,
        )

    return before_sleep


class ChateaClient:
    """One shared connection pool per client; use it as an async context manager."""

    def __init__(
        self,
        *,
        api_url: str,
        api_key: str,
        device_id: str,
        timeout_seconds: float,
        concurrency: int,
        retry_5xx: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
        connect_retries: int = 2,
        connect_backoff_seconds: float = 0.1,
    ) -> None:
        if not api_url.startswith(("http://", "https://")):
            raise ConfigError("CHATEA_API_URL: must be an http:// or https:// URL")
        if not api_key or not all(33 <= ord(ch) <= 126 for ch in api_key):
            raise ConfigError("CHATEA_API_KEY: must be non-empty printable ASCII without spaces")
        if not device_id.strip():
            raise ConfigError("CHATEA_DEVICE_ID: must not be empty")
        if timeout_seconds <= 0:
            raise ConfigError("CHATEA_TIMEOUT_SECONDS: must be positive")
        if concurrency < 1:
            raise ConfigError("CHATEA_CONCURRENCY: must be at least 1")
        self._url = api_url.rstrip("/") + MESSAGES_PATH
        self._api_key = api_key
        self._device_id = device_id.strip()
        self._timeout_seconds = timeout_seconds
        self._retry_5xx = retry_5xx
        self._connect_retries = max(0, connect_retries)
        self._backoff = max(0.0, connect_backoff_seconds)
        self._deadline_seconds = timeout_seconds + DEADLINE_SLACK_SECONDS
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            limits=limits,
            transport=transport
            if transport is not None
            else httpx.AsyncHTTPTransport(limits=limits, retries=0),
            follow_redirects=False,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> ChateaClient:
        missing = [
            name
            for name, value in (
                ("CHATEA_API_URL", settings.chatea_api_url),
                ("CHATEA_API_KEY", settings.chatea_api_key),
                ("CHATEA_DEVICE_ID", settings.chatea_device_id),
            )
            if value is None
        ]
        if missing:
            raise ConfigError(f"{', '.join(missing)}: required to send through Chatea")
        assert settings.chatea_api_url is not None
        assert settings.chatea_api_key is not None
        assert settings.chatea_device_id is not None
        return cls(
            api_url=settings.chatea_api_url,
            api_key=settings.chatea_api_key.get_secret_value(),
            device_id=settings.chatea_device_id,
            timeout_seconds=settings.chatea_timeout_seconds,
            concurrency=settings.chatea_concurrency,
            retry_5xx=settings.chatea_retry_5xx,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # ---- sending ---------------------------------------------------------------------------

    def _sanitize(self, text: str, to: str) -> str:
        text = text.replace(self._api_key, "[REDACTED_KEY]")
        if to:
            text = text.replace(to, "[REDACTED_PHONE]")
            bare = to.lstrip("+")
            if len(bare) >= 7:
                text = text.replace(bare, "[REDACTED_PHONE]")
        text = redact_text(" ".join(text.split()))
        if len(text) > MAX_REASON_LENGTH:
            text = text[: MAX_REASON_LENGTH - 1] + "…"
        return text

    def _exception_reason(self, exc: BaseException, to: str) -> str:
        detail = self._sanitize(str(exc), to)
        name = type(exc).__name__
        return self._sanitize(f"{name}: {detail}" if detail else name, to)

    async def send_template(
        self, *, action_id: str, to: str, template: str, parameters: Sequence[str]
    ) -> SendResult:
        """Send one template message; classify the outcome (never raises for I/O problems)."""
        started = time.monotonic()
        if not isinstance(to, str) or not E164.match(to):
            # Defensive: the pipeline validates phones before calling; never send a bad one.
            result: SendResult = Permanent(
                code="INVALID_RECIPIENT",
                reason="recipient is not an E.164 phone number",
                status_code=None,
            )
            self._log(action_id, template, result, started, attempts=0)
            return result
        attempts = 0
        try:
            request = self._client.build_request(
                "POST",
                self._url,
                headers={
                    "Authorization": f"Bearer {self._api_key}",
                    "Idempotency-Key": action_id,
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                },
                content=json.dumps(
                    build_payload(
                        device_id=self._device_id,
                        action_id=action_id,
                        to=to,
                        template=template,
                        parameters=parameters,
                    ),
                    ensure_ascii=False,
                    separators=(",", ":"),
                ).encode("utf-8"),
            )
        except Exception as exc:  # the request was never sent
            result = Transient(
                code="INVALID_REQUEST",
                reason=self._exception_reason(exc, to),
                retry_after=None,
                status_code=None,
            )
            self._log(action_id, template, result, started, attempts=0)
            return result

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_CONNECT_FAILURES),
            stop=stop_after_attempt(self._connect_retries + 1)
            | stop_after_delay(self._timeout_seconds),
            # 0.1 s then 0.2 s, plus up to 0.05 s of jitter each: at most ~0.4 s in total.
            wait=wait_exponential(multiplier=self._backoff, max=self._backoff * 2.5)
            + wait_random(0, self._backoff / 2),
            before_sleep=_log_connect_retry(action_id),
            reraise=True,
        )
        try:
            async with asyncio.timeout(self._deadline_seconds):
                async for attempt in retrying:
                    with attempt:
                        attempts += 1
                        response = await self._client.send(request)
        except TimeoutError as exc:
            result = Unknown(
                code="DEADLINE_EXCEEDED",
                reason=self._exception_reason(exc, to)
                + f" (no answer within {self._deadline_seconds:g} s)",
                status_code=None,
            )
        except httpx.TransportError as exc:
            result = self._classify_exception(exc, to)
        else:
            result = self._classify_response(response, to)
        self._log(action_id, template, result, started, attempts=attempts)
        return result

    def _classify_exception(self, exc: httpx.TransportError, to: str) -> SendResult:
        reason = self._exception_reason(exc, to)
        # Order matters: the timeouts are subclasses of TimeoutException, the connect ones are
        # the only proof that nothing reached the provider.
        transient_codes: list[tuple[type[Exception], str]] = [
            (httpx.ConnectTimeout, "CONNECT_TIMEOUT"),
            (httpx.PoolTimeout, "POOL_TIMEOUT"),
            (httpx.ConnectError, "CONNECT_ERROR"),
            # Refused before anything was written: the URL scheme or a header is invalid.
            (httpx.UnsupportedProtocol, "UNSUPPORTED_PROTOCOL"),
            (httpx.LocalProtocolError, "LOCAL_PROTOCOL_ERROR"),
        ]
        for kind, code in transient_codes:
            if isinstance(exc, kind):
                return Transient(code=code, reason=reason, retry_after=None, status_code=None)
        unknown_codes: list[tuple[type[Exception], str]] = [
            (httpx.ReadTimeout, "READ_TIMEOUT"),
            (httpx.WriteTimeout, "WRITE_TIMEOUT"),
            (httpx.ReadError, "CONNECTION_RESET"),
            (httpx.WriteError, "WRITE_ERROR"),
            (httpx.RemoteProtocolError, "PROTOCOL_ERROR"),
        ]
        for kind, code in unknown_codes:
            if isinstance(exc, kind):
                return Unknown(code=code, reason=reason, status_code=None)
        return Unknown(code="TRANSPORT_ERROR", reason=reason, status_code=None)

    def _classify_response(self, response: httpx.Response, to: str) -> SendResult:
        status = response.status_code
        if 200 <= status < 300:
            try:
                data = response.json()
            except (ValueError, UnicodeDecodeError):
                data = None
            return Sent(provider_message_id=_provider_id(data), status_code=status)
        code = f"HTTP_{status}"
        if not 100 <= status <= 599:
            return Unknown(
                code="INVALID_RESPONSE",
                reason=f"invalid HTTP status {status}",
                status_code=status,
            )
        provider = _provider_message(response)
        reason = self._sanitize(f"HTTP {status}: {provider}" if provider else f"HTTP {status}", to)
        if status in (408, 429) or (500 <= status <= 599 and self._retry_5xx):
            return Transient(
                code=code,
                reason=reason,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                status_code=status,
            )
        if 400 <= status <= 499:
            return Permanent(code=code, reason=reason, status_code=status)
        # 5xx with retry_5xx=False, and 1xx/3xx answers (redirects are not followed): the
        # provider may or may not have taken the message.
        return Unknown(code=code, reason=reason, status_code=status)

    def _log(
        self,
        action_id: str,
        template: str,
        result: SendResult,
        started: float,
        *,
        attempts: int,
    ) -> None:
        elapsed_ms = round((time.monotonic() - started) * 1000)
        if isinstance(result, Sent):
            log.debug(
                "chatea.sent",
                action_id=action_id,
                template=template,
                status_code=result.status_code,
                provider_message_id=result.provider_message_id,
                elapsed_ms=elapsed_ms,
                attempts=attempts,
            )
            return
        log.warning(
            "chatea.request_failed",
            action_id=action_id,
            template=template,
            outcome=type(result).__name__.lower(),
            code=result.code,
            reason=result.reason,
            status_code=result.status_code,
            retry_after=getattr(result, "retry_after", None),
            elapsed_ms=elapsed_ms,
            attempts=attempts,
        )
