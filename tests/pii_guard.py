"""Session-wide PII guard: fails the test session if a phone number reaches captured output.

It watches (1) every log record, rendered by the service's own formatter, (2) every HTTP response
body the suite receives from the app (TestClient, ASGI and real uvicorn servers; fake external
hosts named ``*.test`` are the upstreams' side and are not ours), and (3) every test's captured
stdout, stderr and log. Phones are found two ways: the exact phones the suite hashed (every phone
the service accepts passes through ``PhoneVault.hash``) written in the usual formats, and a
pattern for any Colombian mobile.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from executor.logs import PHONE_PATTERN, build_formatter
from executor.phones import PhoneVault

_seen_phones: set[str] = set()
_findings: list[str] = []
_log_buffer = io.StringIO()
_sources: list[tuple[str, str]] = []


def phone_formats(e164: str) -> list[str]:
    national = e164[3:] if e164.startswith("+57") else e164.lstrip("+")
    a, b, c = national[:3], national[3:6], national[6:]
    return [e164, e164.lstrip("+"), national, f"{a} {b} {c}", f"{a}-{b}-{c}", f"({a}) {b}-{c}"]


def find_phones(text: str) -> list[str]:
    """Phones in ``text``: known ones in any format, and any Colombian-mobile-shaped number."""
    hits = [m.group(0) for m in PHONE_PATTERN.finditer(text)]
    for phone in list(_seen_phones):
        hits.extend(f for f in phone_formats(phone) if f in text)
    return hits


def record(where: str, text: str) -> None:
    """Scan text produced by the service (e.g. a subprocess's output) at the end of the session."""
    if text:
        _sources.append((where, text))


def _mask(hit: str) -> str:
    digits = "".join(ch for ch in hit if ch.isdigit())
    return f"…{digits[-2:]} ({len(digits)} digits)"


@pytest.fixture(autouse=True, scope="session")
def _pii_guard_session() -> Iterator[None]:
    original_hash = PhoneVault.hash

    def recording_hash(self: PhoneVault, e164: str) -> str:
        _seen_phones.add(e164)
        return original_hash(self, e164)

    original_send = httpx.Client.send
    original_async_send = httpx.AsyncClient.send

    def watch(response: httpx.Response) -> None:
        host = response.request.url.host or ""
        if host.endswith(".test"):
            return
        try:
            body = response.text
        except httpx.ResponseNotRead:
            return
        record(f"response {response.request.method} {response.request.url.path}", body)
        record(f"response headers {response.request.url.path}", str(response.headers))

    def send(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
        response = original_send(self, request, **kw)
        watch(response)
        return response

    async def async_send(
        self: httpx.AsyncClient, request: httpx.Request, **kw: Any
    ) -> httpx.Response:
        response = await original_async_send(self, request, **kw)
        watch(response)
        return response

    handler = logging.StreamHandler(_log_buffer)
    handler.setFormatter(build_formatter())
    handler.set_name("pii-guard")
    logging.getLogger().addHandler(handler)
    PhoneVault.hash = recording_hash  # type: ignore[method-assign]
    httpx.Client.send = send  # type: ignore[method-assign]
    httpx.AsyncClient.send = async_send  # type: ignore[method-assign]
    try:
        yield
    finally:
        PhoneVault.hash = original_hash  # type: ignore[method-assign]
        httpx.Client.send = original_send  # type: ignore[method-assign]
        httpx.AsyncClient.send = original_async_send  # type: ignore[method-assign]
        logging.getLogger().removeHandler(handler)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, content in report.sections:
        record(f"{report.nodeid} {name}", content)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    record("logs (service formatter)", _log_buffer.getvalue())
    for where, text in _sources:
        for hit in find_phones(text):
            _findings.append(f"{where}: phone {_mask(hit)}")
    if _findings:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["PII GUARD: phone numbers reached captured output:", *sorted(set(_findings))[:50]]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
