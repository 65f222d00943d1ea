"""A local implementation of the Chatea contract (DESIGN §6) for the demo and the tests.

It is a small HTTP/1.1 server on asyncio streams and ``h11`` (not an ASGI app) because the
faults it must simulate live below HTTP: a request that is never answered (``hang``), a
connection closed after the request was read (``drop``), reset (``reset``), or closed after the
message was taken (``drop_after_accept``: the client sees an unknown outcome although the
message went out).

``POST /messages`` validates like a strict provider, in this order: bearer token (401),
``Content-Type`` (415), ``Idempotency-Key`` (400), JSON body, ``device_id``, E.164 ``to``,
template name, language and parameter count (400). Only a valid request meets the faults; then
the outcome is, in priority order: the next ``script`` entry, ``mode`` when not ``ok``, the fixed
``status``, a 503 with probability ``fail_rate``, else success ``{"id": "wamid.<hex>",
"status": "queued"}``. A key that was already accepted is answered with the same id and counted
as a duplicate (Stripe-style); the same key with a different message gets 409.

Faults (``latency_ms``, ``fail_rate``, ``status``, ``retry_after``, ``mode``, ``script``) are
set at start and changed at run time through ``POST /_sandbox/config`` or
:meth:`SandboxHandle.configure`. ``script`` entries: ``"ok"``, a status (``"503"``, ``429``),
a status with a Retry-After (``"429:2"``), or a mode name; each valid send consumes one.

Control endpoints: ``GET /_sandbox/stats``, ``GET /_sandbox/requests``, ``GET|POST
/_sandbox/config``, ``POST /_sandbox/reset``, ``GET /health``.

Privacy: recipients are only ever kept, shown or counted as :func:`recipient_hash` (first 16
hex digits of SHA-256 of the E.164 number); the sandbox never prints, logs or returns a phone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import re
import signal
import socket
import struct
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, Self

import h11

from executor.logs import get_logger, redact_text
from executor.templates import TEMPLATES

log = get_logger("executor.sandbox")

MODES = ("ok", "hang", "drop", "drop_after_accept", "reset")
E164 = re.compile(r"^\+[1-9]\d{7,14}$")
MAX_BODY_BYTES = 1024 * 1024
MAX_RECORDS = 100_000
MAX_KEY_LENGTH = 255
_READ_CHUNK = 65_536

OutcomeKind = Literal["respond", "hang", "drop", "reset", "drop_after_accept"]


def recipient_hash(phone: str) -> str:
    """How the sandbox names a recipient: first 16 hex digits of SHA-256 of the E.164 number."""
    return hashlib.sha256(phone.encode("utf-8")).hexdigest()[:16]


# ---- faults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    latency_ms: float = 0
    fail_rate: float = 0.0
    status: int | None = None
    retry_after: float | None = None
    mode: str = "ok"
    script: tuple[str, ...] = ()

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data["script"] = list(self.script)
        return data


FAULT_NAMES = frozenset(Faults.__dataclass_fields__)


def _number(name: str, value: Any, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}")
    return float(value)


def _status(name: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 200 <= value <= 599:
        raise ValueError(f"{name} must be an HTTP status between 200 and 599")
    return value


def _script_entry(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(_status("script entry", value))
    if not isinstance(value, str):
        raise ValueError("script entries must be strings such as 'ok', '503', '429:2' or 'drop'")
    entry = value.strip().lower()
    if entry in MODES:
        return entry
    code, _, retry = entry.partition(":")
    _status("script entry", code)
    if retry:
        try:
            seconds = float(retry)
        except ValueError:
            raise ValueError("script entry retry-after must be a number of seconds") from None
        _number("script entry retry-after", seconds, low=0, high=86_400)
    return entry


def validate_faults(updates: Mapping[str, Any]) -> dict[str, Any]:
    """Checked and normalized fault values; ValueError names the offending field."""
    unknown = sorted(set(updates) - FAULT_NAMES)
    if unknown:
        raise ValueError(
            f"unknown fault(s): {', '.join(unknown)}; known: {', '.join(sorted(FAULT_NAMES))}"
        )
    clean: dict[str, Any] = {}
    for name, value in updates.items():
        if name == "latency_ms":
            clean[name] = _number(name, value, low=0, high=600_000)
        elif name == "fail_rate":
            clean[name] = _number(name, value, low=0, high=1)
        elif name == "status":
            clean[name] = None if value is None else _status(name, value)
        elif name == "retry_after":
            clean[name] = None if value is None else _number(name, value, low=0, high=86_400)
        elif name == "mode":
            if value not in MODES:
                raise ValueError(f"mode must be one of {', '.join(MODES)}")
            clean[name] = value
        elif name == "script":
            if value is None:
                value = []
            if not isinstance(value, list | tuple):
                raise ValueError("script must be a list")
            clean[name] = tuple(_script_entry(v) for v in value)
    return clean


@dataclass(frozen=True)
class _Outcome:
    kind: OutcomeKind
    status: int = 200
    retry_after: float | None = None


def _parse_entry(entry: str, default_retry_after: float | None) -> _Outcome:
    if entry == "ok":
        return _Outcome("respond", 200)
    if entry in MODES:
        return _Outcome(entry)  # type: ignore[arg-type]
    code, _, retry = entry.partition(":")
    return _Outcome("respond", int(code), float(retry) if retry else default_retry_after)


# ---- state ----------------------------------------------------------------------------------


@dataclass
class _Accepted:
    message_id: str
    fingerprint: str


@dataclass
class _Records:
    requests: int = 0
    accepted: int = 0
    duplicates: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    per_recipient: Counter[str] = field(default_factory=Counter)
    duplicate_keys: list[str] = field(default_factory=list)
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_RECORDS))
    keys: dict[str, _Accepted] = field(default_factory=dict)


class SandboxState:
    """Faults and records, shared by the server's event loop and the controlling thread."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        device_id: str | None = None,
        seed: int | None = None,
        **faults: Any,
    ) -> None:
        self.api_key = api_key or None
        self.device_id = device_id or None
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._faults = replace(Faults(), **validate_faults(faults))
        self._script: deque[str] = deque(self._faults.script)
        self._records = _Records()

    @property
    def faults(self) -> Faults:
        with self._lock:
            return replace(self._faults, script=tuple(self._script))

    def configure(self, **updates: Any) -> dict[str, Any]:
        clean = validate_faults(updates)
        with self._lock:
            self._faults = replace(self._faults, **clean)
            if "script" in clean:
                self._script = deque(clean["script"])
            return replace(self._faults, script=tuple(self._script)).public()

    def reset(self) -> None:
        with self._lock:
            self._faults = Faults()
            self._script = deque()
            self._records = _Records()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            r = self._records
            return {
                "requests": r.requests,
                "accepted": r.accepted,
                "by_status": dict(r.by_status),
                "per_recipient": dict(r.per_recipient),
                "duplicates": r.duplicates,
                "duplicate_keys": list(r.duplicate_keys),
            }

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(item) for item in self._records.log]

    # -- used by the server -----------------------------------------------------------------

    def next_outcome(self) -> _Outcome:
        with self._lock:
            faults = self._faults
            if self._script:
                return _parse_entry(self._script.popleft(), faults.retry_after)
            if faults.mode != "ok":
                return _Outcome(faults.mode)  # type: ignore[arg-type]
            if faults.status is not None:
                return _Outcome("respond", faults.status, faults.retry_after)
            if faults.fail_rate > 0 and self._rng.random() < faults.fail_rate:
                return _Outcome("respond", 503, faults.retry_after)
            return _Outcome("respond", 200)

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            r = self._records
            r.requests += 1
            r.by_status[str(entry["status"])] += 1
            r.log.append(entry)

    def accept(
        self, key: str, fingerprint: str, recipient: str
    ) -> tuple[Literal["new", "duplicate", "conflict"], str | None]:
        """Take a message once per key: ('new', id), ('duplicate', id) or ('conflict', None)."""
        with self._lock:
            r = self._records
            previous = r.keys.get(key)
            if previous is not None:
                if not hmac.compare_digest(previous.fingerprint, fingerprint):
                    return "conflict", None
                r.duplicates += 1
                r.duplicate_keys.append(redact_text(key))
                return "duplicate", previous.message_id
            message_id = "wamid." + uuid.uuid4().hex
            r.keys[key] = _Accepted(message_id, fingerprint)
            r.accepted += 1
            r.per_recipient[recipient] += 1
            return "new", message_id

    def is_accepted(self, key: str) -> bool:
        with self._lock:
            return key in self._records.keys


# ---- HTTP -----------------------------------------------------------------------------------


@dataclass
class _Response:
    status: int
    body: Any = None
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Action:
    """What to do with a connection after a request: answer, or a low-level fault."""

    kind: OutcomeKind
    response: _Response | None = None


class _BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _phrase(status: int, default: str = "error") -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return default


def _error(status: int, code: str, message: str) -> _Response:
    return _Response(status, {"error": {"code": code, "message": message}})


def _header(request: h11.Request, name: bytes) -> str | None:
    for key, value in request.headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _validate_message(payload: Any, device_id: str | None) -> tuple[str, str, list[str]]:
    """(to, template name, parameters) of a valid body; _BadRequest otherwise. No value echoed."""
    if not isinstance(payload, dict):
        raise _BadRequest(400, "invalid_request", "body must be a JSON object")
    device = payload.get("device_id")
    if not isinstance(device, str) or not device.strip():
        raise _BadRequest(400, "invalid_request", "device_id is required")
    if device_id is not None and device != device_id:
        raise _BadRequest(400, "invalid_device", "device_id is not a device of this account")
    to = payload.get("to")
    if not isinstance(to, str) or not E164.match(to):
        raise _BadRequest(400, "invalid_recipient", "to must be a phone number in E.164 format")
    reference = payload.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise _BadRequest(400, "invalid_request", "reference must be a string")
    template = payload.get("template")
    if not isinstance(template, dict):
        raise _BadRequest(400, "invalid_request", "template is required")
    name = template.get("name")
    known = TEMPLATES.get(name) if isinstance(name, str) else None
    if known is None:
        raise _BadRequest(400, "template_not_found", "template name is not an approved template")
    if template.get("language") != known.language:
        raise _BadRequest(400, "template_language", f"template language must be {known.language!r}")
    components = template.get("components")
    if not isinstance(components, list) or len(components) != 1:
        raise _BadRequest(400, "invalid_template", "template needs exactly one body component")
    body = components[0]
    if not isinstance(body, dict) or body.get("type") != "body":
        raise _BadRequest(400, "invalid_template", "template component must be of type body")
    parameters = body.get("parameters")
    if not isinstance(parameters, list):
        raise _BadRequest(400, "invalid_template", "body parameters must be a list")
    texts: list[str] = []
    for item in parameters:
        if (
            not isinstance(item, dict)
            or item.get("type") != "text"
            or not isinstance(item.get("text"), str)
            or not item["text"].strip()
        ):
            raise _BadRequest(
                400, "invalid_parameter", "each parameter must be a non-empty text parameter"
            )
        texts.append(item["text"])
    if len(texts) != len(known.variables):
        raise _BadRequest(
            400,
            "parameter_count",
            f"template {known.name} expects {len(known.variables)} parameters, got {len(texts)}",
        )
    return to, known.name, texts


def _safe_parameters(parameters: list[str], to: str) -> list[str]:
    bare = to.lstrip("+")
    return [
        redact_text(p.replace(to, "[REDACTED_PHONE]").replace(bare, "[REDACTED_PHONE]"))
        for p in parameters
    ]


class SandboxServer:
    """The asyncio server; runs in whatever loop calls :meth:`start`."""

    def __init__(self, state: SandboxState, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self.port, reuse_address=True
        )
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def serve_until_stopped(self) -> None:
        assert self._stop is not None
        await self._stop.wait()
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)
            self._server = None

    # -- connections --------------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        abort = False
        try:
            while True:
                try:
                    received = await self._read_request(conn, reader)
                except _BadRequest as exc:
                    await self._send(conn, writer, _error(exc.status, exc.code, exc.message))
                    break
                except h11.RemoteProtocolError:
                    with contextlib.suppress(Exception):
                        await self._send(
                            conn, writer, _error(400, "bad_request", "malformed HTTP request")
                        )
                    break
                if received is None:
                    break
                request, body = received
                action = await self._dispatch(request, body)
                if action.kind == "respond":
                    assert action.response is not None
                    await self._send(conn, writer, action.response)
                    if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                        break
                    conn.start_next_cycle()
                    continue
                if action.kind == "hang":
                    await self._hang(reader)
                elif action.kind == "reset":
                    abort = True
                break  # drop, drop_after_accept, hang, reset: no response at all
        except asyncio.CancelledError:
            pass
        except (ConnectionError, h11.LocalProtocolError, OSError) as exc:
            log.debug("sandbox.connection_error", error=type(exc).__name__)
        except Exception as exc:  # never let one connection take the server down
            log.warning("sandbox.handler_error", error=type(exc).__name__)
        finally:
            if task is not None:
                self._connections.discard(task)
            if abort:
                self._abort(writer)
            else:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), timeout=1)

    @staticmethod
    def _abort(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                # Linger 0: close() sends RST instead of FIN (connection reset by peer).
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    @staticmethod
    async def _hang(reader: asyncio.StreamReader) -> None:
        # Never answer; return when the client gives up (EOF) or the server stops (cancel).
        while await reader.read(_READ_CHUNK):
            pass

    @staticmethod
    async def _read_request(
        conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request, bytes] | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(_READ_CHUNK))
                continue
            if isinstance(event, h11.Request):
                request = event
                length = _header(event, b"content-length")
                if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
                    raise _BadRequest(413, "payload_too_large", "body is larger than 1 MiB")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise _BadRequest(413, "payload_too_large", "body is larger than 1 MiB")
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    @staticmethod
    async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, resp: _Response) -> None:
        payload = b"" if resp.body is None else json.dumps(resp.body).encode("utf-8")
        no_body = resp.status in (204, 304)
        headers = [
            ("server", "executor-sandbox"),
            ("content-type", "application/json"),
            *resp.headers,
        ]
        if not no_body:
            headers.append(("content-length", str(len(payload))))
        reason = _phrase(resp.status, "").encode("ascii")
        writer.write(
            conn.send(h11.Response(status_code=resp.status, headers=headers, reason=reason)) or b""
        )
        if payload and not no_body:
            writer.write(conn.send(h11.Data(data=payload)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    # -- routing ------------------------------------------------------------------------------

    async def _dispatch(self, request: h11.Request, body: bytes) -> _Action:
        method = request.method.decode("ascii", "replace").upper()
        path = request.target.decode("latin-1").split("?", 1)[0].rstrip("/") or "/"
        routes: dict[str, dict[str, Any]] = {
            "/messages": {"POST": None},
            "/health": {"GET": lambda: _Response(200, {"ok": True})},
            "/_sandbox/stats": {"GET": lambda: _Response(200, self.state.stats())},
            "/_sandbox/requests": {"GET": lambda: _Response(200, self.state.requests())},
            "/_sandbox/config": {
                "GET": lambda: _Response(200, self.state.faults.public()),
                "POST": lambda: self._configure(body),
            },
            "/_sandbox/reset": {"POST": self._reset},
        }
        methods = routes.get(path)
        if methods is None:
            return _Action("respond", _error(404, "not_found", "no such route"))
        if method not in methods:
            return _Action(
                "respond",
                _Response(
                    405,
                    {"error": {"code": "method_not_allowed", "message": "method not allowed"}},
                    [("allow", ", ".join(sorted(methods)))],
                ),
            )
        if path == "/messages":
            return await self._messages(request, body)
        return _Action("respond", methods[method]())

    def _configure(self, body: bytes) -> _Response:
        try:
            updates = json.loads(body or b"{}")
            if not isinstance(updates, dict):
                raise ValueError("body must be a JSON object of faults")
            return _Response(200, self.state.configure(**updates))
        except (ValueError, TypeError) as exc:
            return _error(400, "invalid_config", str(exc))

    def _reset(self) -> _Response:
        self.state.reset()
        return _Response(200, {"ok": True})

    async def _messages(self, request: h11.Request, body: bytes) -> _Action:
        latency = self.state.faults.latency_ms
        if latency > 0:
            await asyncio.sleep(latency / 1000)
        entry: dict[str, Any] = {
            "received_at": time.time(),
            "idempotency_key": None,
            "reference": None,
            "template": None,
            "recipient": None,
            "status": None,
            "accepted": False,
            "duplicate": False,
        }
        try:
            action = self._process(request, body, entry)
        except _BadRequest as exc:
            action = _Action("respond", _error(exc.status, exc.code, exc.message))
        if action.kind == "respond":
            assert action.response is not None
            entry["status"] = action.response.status
        else:
            entry["status"] = "drop" if action.kind == "drop_after_accept" else action.kind
        self.state.record(entry)
        return action

    def _check_auth(self, request: h11.Request) -> None:
        header = _header(request, b"authorization") or ""
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _BadRequest(401, "unauthorized", "missing or invalid bearer token")
        expected = self.state.api_key
        if expected is not None and not hmac.compare_digest(
            token.encode("utf-8", "replace"), expected.encode("utf-8")
        ):
            raise _BadRequest(401, "unauthorized", "missing or invalid bearer token")

    def _process(self, request: h11.Request, body: bytes, entry: dict[str, Any]) -> _Action:
        self._check_auth(request)
        content_type = (_header(request, b"content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise _BadRequest(415, "unsupported_media_type", "Content-Type must be JSON")
        key = (_header(request, b"idempotency-key") or "").strip()
        if not key:
            raise _BadRequest(400, "idempotency_key_required", "Idempotency-Key is required")
        if len(key) > MAX_KEY_LENGTH:
            raise _BadRequest(400, "invalid_request", "Idempotency-Key is too long")
        entry["idempotency_key"] = redact_text(key)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _BadRequest(400, "invalid_json", "body is not valid JSON") from None
        if isinstance(payload, dict):
            reference = payload.get("reference")
            entry["reference"] = redact_text(reference) if isinstance(reference, str) else None
            template = payload.get("template")
            if isinstance(template, dict) and isinstance(template.get("name"), str):
                entry["template"] = redact_text(template["name"][:100])
            to = payload.get("to")
            if isinstance(to, str) and E164.match(to):
                entry["recipient"] = recipient_hash(to)
        to, template_name, parameters = _validate_message(payload, self.state.device_id)
        entry["parameters"] = _safe_parameters(parameters, to)
        fingerprint = hashlib.sha256(
            json.dumps(
                [payload["device_id"], to, template_name, parameters], ensure_ascii=False
            ).encode("utf-8")
        ).hexdigest()

        outcome = self.state.next_outcome()
        takes_message = outcome.kind == "drop_after_accept" or (
            outcome.kind == "respond" and 200 <= outcome.status < 300
        )
        if not takes_message:
            if outcome.kind != "respond":
                return _Action(outcome.kind)
            headers = []
            if outcome.retry_after is not None and (
                outcome.status in (408, 429) or outcome.status >= 500
            ):
                headers.append(("retry-after", f"{outcome.retry_after:g}"))
            response = _error(outcome.status, f"http_{outcome.status}", _phrase(outcome.status))
            response.headers.extend(headers)
            return _Action("respond", response)
        verdict, message_id = self.state.accept(key, fingerprint, recipient_hash(to))
        if verdict == "conflict":
            raise _BadRequest(
                409, "idempotency_conflict", "Idempotency-Key was used for a different message"
            )
        entry["accepted"] = verdict == "new"
        entry["duplicate"] = verdict == "duplicate"
        entry["provider_message_id"] = message_id
        if outcome.kind == "drop_after_accept":
            return _Action("drop_after_accept")
        return _Action("respond", _Response(outcome.status, {"id": message_id, "status": "queued"}))


# ---- running it -----------------------------------------------------------------------------


class SandboxHandle:
    """A sandbox running in a background thread with its own event loop."""

    def __init__(
        self, server: SandboxServer, loop: asyncio.AbstractEventLoop, thread: threading.Thread
    ) -> None:
        self._server = server
        self._loop = loop
        self._thread = thread
        self._stopped = False

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def state(self) -> SandboxState:
        return self._server.state

    def stats(self) -> dict[str, Any]:
        return self._server.state.stats()

    def requests(self) -> list[dict[str, Any]]:
        return self._server.state.requests()

    def configure(self, **faults: Any) -> dict[str, Any]:
        return self._server.state.configure(**faults)

    def reset(self) -> None:
        self._server.state.reset()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(RuntimeError):  # loop already closed
            self._loop.call_soon_threadsafe(self._server.request_stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_sandbox(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    api_key: str | None = None,
    device_id: str | None = None,
    seed: int | None = None,
    **faults: Any,
) -> SandboxHandle:
    """Start a sandbox in a background thread; ``port=0`` picks a free port (see ``.url``)."""
    state = SandboxState(api_key=api_key, device_id=device_id, seed=seed, **faults)
    server = SandboxServer(state, host, port)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(server.start())
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                ready.set()
            loop.run_until_complete(server.serve_until_stopped())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name="executor-sandbox", daemon=True)
    thread.start()
    ready.wait(timeout=30)
    if failure:
        thread.join(timeout=5)
        raise failure[0]
    if not ready.is_set():  # pragma: no cover
        raise RuntimeError("the sandbox did not start")
    return SandboxHandle(server, loop, thread)


class RemoteSandbox:
    """The control API of a sandbox running elsewhere (e.g. ``executor sandbox`` subprocess)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout, trust_env=False)

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self._client.get("/_sandbox/stats").raise_for_status().json()
        return data

    def requests(self) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = (
            self._client.get("/_sandbox/requests").raise_for_status().json()
        )
        return data

    def configure(self, **faults: Any) -> dict[str, Any]:
        data: dict[str, Any] = (
            self._client.post("/_sandbox/config", json=faults).raise_for_status().json()
        )
        return data

    def reset(self) -> None:
        self._client.post("/_sandbox/reset").raise_for_status()

    def close(self) -> None:
        self._client.close()


async def _serve_foreground(server: SandboxServer) -> None:
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, server.request_stop)
    print(
        f"executor sandbox listening on {server.url} "
        f"(POST {server.url}/messages, stats at {server.url}/_sandbox/stats)",
        flush=True,
    )
    await server.serve_until_stopped()


def serve_sandbox(
    *,
    host: str,
    port: int,
    latency_ms: int,
    fail_rate: float,
    status: int | None,
    api_key: str | None = None,
    device_id: str | None = None,
    mode: str = "ok",
    retry_after: float | None = None,
    seed: int | None = None,
) -> None:
    """Run a sandbox in the foreground (``executor sandbox``) until Ctrl-C or SIGTERM.

    ``api_key`` defaults to ``SANDBOX_API_KEY`` from the environment; unset, any non-empty
    bearer token is accepted.
    """
    from executor.errors import ConfigError

    try:
        state = SandboxState(
            api_key=api_key or os.environ.get("SANDBOX_API_KEY") or None,
            device_id=device_id,
            seed=seed,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            status=status,
            mode=mode,
            retry_after=retry_after,
        )
    except ValueError as exc:
        raise ConfigError(f"sandbox: {exc}") from None
    try:
        asyncio.run(_serve_foreground(SandboxServer(state, host, port)))
    except OSError as exc:
        raise ConfigError(f"sandbox: cannot listen on {host}:{port} ({exc.strerror})") from None
