"""Security properties of the HTTP surface (DESIGN §7, §9).

- Auth matrix: every protected route (the list is checked against the app's routes, so a new
  route cannot slip past) refuses every wrong credential with the same 401, before touching the
  database, never echoing the secret and never redirecting; an unset or short secret refuses
  everything.
- Resource limits: oversized, streamed, deeply nested or huge-string bodies and absurd query
  strings get a fast 4xx, echo nothing and write nothing.
- No stack trace, SQL text, secret, database password, API key or phone in any response or log
  when things break: database down, database not migrated, invalid configuration, a provider
  that answers errors echoing the request.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from api.app import create_app
from executor.config import Settings
from executor.db import libpq_url
from executor.logs import configure_logging
from executor.runtime import Runtime
from tests.conftest import (
    TEST_ADMIN_SECRET,
    TEST_API_KEY,
    TEST_CRON_SECRET,
    TEST_PHONE_HASH_KEY,
    TEST_PII_KEY,
    make_settings,
)
from tests.pipeline_helpers import PHONES, FakeProvider, action, run_settings

UNAUTHORIZED = {"error": "unauthorized", "message": "missing or invalid credentials"}
SOME_UUID = "00000000-0000-4000-8000-000000000001"
DB_PASSWORD = "S3cret-db-passw0rd-xyz"
DEAD_DB = f"postgresql://executor:{DB_PASSWORD}@127.0.0.1:9/executor"
SECRETS = (TEST_CRON_SECRET, TEST_ADMIN_SECRET, TEST_API_KEY, TEST_PHONE_HASH_KEY, TEST_PII_KEY)
# What must never appear in a response or a log line.
FORBIDDEN = (*SECRETS, DB_PASSWORD, "Traceback", 'File "', "SELECT ", "INSERT INTO", "UPDATE ")

# (method, path, JSON body, which secret opens it)
PROTECTED: list[tuple[str, str, Any, str]] = [
    ("GET", "/api/cron/run-executor", None, "cron"),
    ("POST", "/api/cron/run-executor", None, "cron"),
    ("POST", "/api/actions", {"actions": [action("SEC-1", None)]}, "admin"),
    ("GET", "/api/admin/executor-status", None, "admin"),
    ("GET", "/api/admin/rollout-config", None, "admin"),
    ("GET", "/api/admin/actions?guide=SEC-1", None, "admin"),
    ("POST", "/api/admin/opt-outs", {"phone": PHONES[7]}, "admin"),
    ("GET", "/api/admin/unknown-actions", None, "admin"),
    ("POST", f"/api/admin/actions/{SOME_UUID}/reconcile", {"outcome": "delivered"}, "admin"),
    ("GET", "/admin", None, "admin"),
]
PUBLIC = {
    ("GET", "/api/health"),
    ("POST", "/admin/login"),
    ("POST", "/admin/logout"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}


def secret_for(kind: str) -> str:
    return TEST_CRON_SECRET if kind == "cron" else TEST_ADMIN_SECRET


def template(method: str, path: str) -> str:
    return path.split("?", 1)[0].replace(SOME_UUID, "{action_id}")


def call(
    client: TestClient,
    route: tuple[str, str, Any, str],
    headers: Any = None,
    *,
    path: str | None = None,
    cookies: dict[str, str] | None = None,
) -> httpx.Response:
    method, default_path, body, _ = route
    client.cookies.clear()
    if cookies:
        client.cookies.update(cookies)
    response: httpx.Response = client.request(
        method,
        path or default_path,
        headers=headers,
        json=body,
        follow_redirects=False,
    )
    return response


@pytest.fixture
def dead_db_client() -> Iterator[TestClient]:
    """Secrets configured, database unreachable: whatever gets past auth answers 503."""
    with TestClient(create_app(Runtime(run_settings(DEAD_DB)))) as client:
        yield client


def assert_refused(
    response: httpx.Response, route: tuple[str, str, Any, str], label: str = ""
) -> None:
    assert response.status_code == 401, (label, route[:2], response.status_code, response.text)
    assert not 300 <= response.status_code < 400 and "location" not in response.headers
    if route[1] == "/admin":
        assert response.headers["content-type"].startswith("text/html")
        assert 'action="/admin/login"' in response.text
    else:
        assert response.json() == UNAUTHORIZED
    for secret in SECRETS:
        assert secret not in response.text and secret not in str(response.headers)


# ---- auth ------------------------------------------------------------------------------


def _walk(routes: list[Any]) -> Iterator[tuple[str, str]]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included routers
        if included is not None:
            yield from _walk(list(included.routes))
        elif isinstance(route, APIRoute | Route):
            for method in route.methods or ():
                if method != "HEAD":
                    yield method, route.path


def test_every_route_is_in_the_matrix() -> None:
    app = create_app(Runtime(make_settings(DEAD_DB)))
    seen = set(_walk(list(app.routes)))
    seen |= {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    protected = {(m, template(m, p)) for m, p, _, _ in PROTECTED}
    assert seen - PUBLIC == protected, "a route is missing from the auth matrix"


def _refusals(kind: str) -> list[tuple[str, Any]]:
    secret = secret_for(kind)
    other = TEST_ADMIN_SECRET if kind == "cron" else TEST_CRON_SECRET
    return [
        ("no header", None),
        ("empty bearer", {"Authorization": "Bearer"}),
        ("blank bearer", {"Authorization": "Bearer    "}),
        ("basic scheme", {"Authorization": f"Basic {secret}"}),
        ("no scheme", {"Authorization": secret}),
        ("token scheme", {"Authorization": f"Token {secret}"}),
        ("wrong", {"Authorization": "Bearer wrong-secret-wrong-secret-0000"}),
        ("prefix", {"Authorization": f"Bearer {secret[:-1]}"}),
        ("suffix", {"Authorization": f"Bearer {secret}x"}),
        ("two tokens", {"Authorization": f"Bearer {secret} {secret}"}),
        ("other secret", {"Authorization": f"Bearer {other}"}),
        ("non-ascii", [(b"authorization", f"Bearer {secret}ñ☃".encode())]),
        ("latin-1", [(b"authorization", b"Bearer \xe9\xff\x00")]),
        ("huge", {"Authorization": "Bearer " + "A" * 100_000}),
    ]


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: f"{r[0]} {template(r[0], r[1])}")
def test_every_wrong_credential_gets_the_same_401(
    dead_db_client: TestClient, route: tuple[str, str, Any, str]
) -> None:
    kind = route[3]
    for label, headers in _refusals(kind):
        response = call(dead_db_client, route, headers)
        assert_refused(response, route, label)
    secret = secret_for(kind)
    path = route[1]
    sep = "&" if "?" in path else "?"
    for name in ("token", "access_token", "secret", "authorization"):
        response = call(dead_db_client, route, path=f"{path}{sep}{name}={secret}")
        assert_refused(response, route)
    if kind == "cron":  # the dashboard's cookie opens admin routes, never the cron route
        response = call(dead_db_client, route, cookies={"executor_admin": TEST_CRON_SECRET})
        assert_refused(response, route)
    # The right secret gets past auth (then meets the dead database): the 401s above were auth.
    response = call(dead_db_client, route, {"Authorization": f"Bearer {secret}"})
    assert response.status_code == 503, response.text[:300]
    assert all(leak not in response.text for leak in FORBIDDEN), response.text


@pytest.mark.parametrize(
    ("cron_secret", "admin_secret"),
    [(None, None), ("", None), ("fifteen-chars-x", None), (TEST_CRON_SECRET, "short-admin")],
    ids=["unset", "empty", "15-chars", "short-admin-secret"],
)
def test_unset_or_short_secret_refuses_every_route(
    cron_secret: str | None, admin_secret: str | None
) -> None:
    settings = make_settings(DEAD_DB, cron_secret=cron_secret, admin_secret=admin_secret)
    with TestClient(create_app(Runtime(settings))) as client:
        for route in PROTECTED:
            if route[3] == "cron" and cron_secret == TEST_CRON_SECRET:
                continue  # only the admin secret is short here
            for token in {cron_secret or "", admin_secret or "", TEST_CRON_SECRET}:
                assert_refused(call(client, route, {"Authorization": f"Bearer {token}"}), route)
            assert_refused(call(client, route), route)


def test_cron_route_never_redirects(dead_db_client: TestClient) -> None:
    for path in ("/api/cron/run-executor/", "/api/cron/run-executor//", "/API/cron/run-executor"):
        for method in ("GET", "POST"):
            response = dead_db_client.request(
                method, path, headers={"Authorization": f"Bearer {TEST_CRON_SECRET}"}
            )
            assert response.status_code == 404 and "location" not in response.headers
    response = dead_db_client.request("PUT", "/api/cron/run-executor")
    assert response.status_code == 405 and "location" not in response.headers


def test_no_secret_in_logs_on_auth_failures(dead_db_client: TestClient) -> None:
    buffer = io.StringIO()
    configure_logging(stream=buffer, level="DEBUG")
    try:
        for route in PROTECTED:
            for _, headers in _refusals(route[3]):
                call(dead_db_client, route, headers)
            call(dead_db_client, route, {"Authorization": f"Bearer {secret_for(route[3])}"})
    finally:
        configure_logging()
    assert_clean_log(buffer.getvalue())


# ---- resource limits -------------------------------------------------------------------

ADMIN = {"Authorization": f"Bearer {TEST_ADMIN_SECRET}"}


@pytest.fixture
def client(clean_db: str) -> Iterator[TestClient]:
    settings = run_settings(clean_db, executor_enabled=False)
    with TestClient(create_app(Runtime(settings, chatea_transport=FakeProvider().transport))) as c:
        yield c


def rows(db_url: str) -> tuple[int, int, int]:
    with psycopg.connect(libpq_url(db_url)) as conn:
        counts = [
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            for table in ("actions", "opt_outs", "recipients")
        ]
    return tuple(int(c[0]) if c else 0 for c in counts)  # type: ignore[return-value]


def timed(fn: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = fn()
    return response, time.monotonic() - started


def assert_fast_4xx(response: httpx.Response, elapsed: float, max_body: int = 2000) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert elapsed < 3.0, elapsed
    assert len(response.content) < max_body, len(response.content)  # the input is not echoed
    body = response.json()
    assert isinstance(body["error"], str) and isinstance(body["message"], str)


@pytest.mark.parametrize(
    ("path", "limit"), [("/api/actions", 1 << 20), ("/api/admin/opt-outs", 4096)]
)
def test_oversized_and_streamed_bodies(
    client: TestClient, clean_db: str, path: str, limit: int
) -> None:
    headers = {**ADMIN, "Content-Type": "application/json"}
    # Declared too big: refused before reading.
    big = b'{"actions": [], "pad": "' + b"x" * (limit + 10) + b'"}'
    response, elapsed = timed(lambda: client.post(path, headers=headers, content=big))
    assert_fast_4xx(response, elapsed)
    assert response.status_code == 413

    # Streamed with no Content-Length: refused once the limit is crossed.
    def chunks() -> Iterator[bytes]:
        yield b'{"pad": "'
        for _ in range((3 * limit) // 65536 + 1):
            yield b"y" * 65536
        yield b'"}'

    response, elapsed = timed(lambda: client.post(path, headers=headers, content=chunks()))
    assert_fast_4xx(response, elapsed)
    assert response.status_code == 413
    assert rows(clean_db) == (0, 0, 0)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/api/actions", b"[" * 200_000 + b"]" * 200_000),
        ("/api/actions", b'{"actions": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("/api/actions", json.dumps({"actions": [action("N1", None, variables=nested(800))]})),
        ("/api/actions", json.dumps({"actions": [nested(800)]})),
        ("/api/admin/opt-outs", b"[" * 2000 + b"]" * 2000),
        ("/api/admin/opt-outs", json.dumps({"phone": nested(100)})),
        (f"/api/admin/actions/{SOME_UUID}/reconcile", json.dumps(nested(900))),
        (f"/api/admin/actions/{SOME_UUID}/reconcile", json.dumps({"outcome": nested(500)})),
    ],
)
def test_deeply_nested_json(client: TestClient, clean_db: str, path: str, payload: Any) -> None:
    headers = {**ADMIN, "Content-Type": "application/json"}
    response, elapsed = timed(lambda: client.post(path, headers=headers, content=payload))
    assert_fast_4xx(response, elapsed)
    assert rows(clean_db) == (0, 0, 0)


HUGE = "9" * 200_000


@pytest.mark.parametrize(
    "item",
    [
        {**action("H1", None), "guide": HUGE},
        {**action("H2", None), "trigger": HUGE},
        {**action("H3", None), "city": HUGE},
        {**action("H4", None), "carrier": HUGE},
        action("H5", HUGE),
        action("H6", "+57" + "3" * 5000),
        {**action("H7", None), "idempotencyKey": HUGE},
        action("H8", None, variables={"numero_de_guia": HUGE}),
        action("H9", None, variables={f"v{i}": "x" for i in range(5000)}),
        action("H10", None, variables={"k" * 50_000: "x"}),
    ],
    ids=lambda item: str(item.get("guide", "?"))[:6],
)
def test_huge_strings_are_rejected_without_echo(
    client: TestClient, clean_db: str, item: dict[str, Any]
) -> None:
    response, elapsed = timed(
        lambda: client.post("/api/actions", headers=ADMIN, json={"actions": [item]})
    )
    assert_fast_4xx(response, elapsed)
    assert response.status_code == 422 and "rejected" in response.json()
    assert HUGE[:200] not in response.text and "33333333" not in response.text
    assert rows(clean_db) == (0, 0, 0)


def test_huge_phone_in_opt_out_is_rejected(client: TestClient, clean_db: str) -> None:
    for phone in (HUGE, "3" * 5000, "+57 300 " + "1" * 100_000):
        response, elapsed = timed(
            lambda phone=phone: client.post(
                "/api/admin/opt-outs", headers=ADMIN, json={"phone": phone}
            )
        )
        assert_fast_4xx(response, elapsed)
    assert rows(clean_db) == (0, 0, 0)


@pytest.mark.parametrize(
    "path",
    [
        "/api/admin/actions?guide=" + "G" * 20_000,
        "/api/admin/actions?guide=",
        "/api/admin/unknown-actions?limit=100000000000000000000000",
        "/api/admin/unknown-actions?limit=-1",
        "/api/admin/unknown-actions?limit=" + "9" * 5000,
        "/api/cron/run-executor?dryRun=" + "x" * 20_000,
    ],
)
def test_absurd_query_strings(client: TestClient, path: str) -> None:
    headers = ADMIN if "/admin/" in path else {"Authorization": f"Bearer {TEST_CRON_SECRET}"}
    response, elapsed = timed(lambda: client.get(path, headers=headers))
    assert_fast_4xx(response, elapsed)
    assert response.status_code == 422


# ---- no leaks when things break -------------------------------------------------------


def assert_clean_log(text: str) -> None:
    for leak in FORBIDDEN:
        assert leak not in text, leak
    for line in text.splitlines():
        event = json.loads(line)
        assert "exception" not in event and "exc_info" not in event, event
    assert "3005550" not in text  # no test phone, in any format the suite uses


def assert_clean_response(response: httpx.Response) -> None:
    for leak in FORBIDDEN:
        assert leak not in response.text, (leak, response.text[:500])
    assert "3005550" not in response.text


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    yield buffer
    configure_logging()


def capture(app_settings: Settings | None, buffer: io.StringIO, **kw: Any) -> TestClient:
    app = create_app(Runtime(app_settings, **kw))
    configure_logging(stream=buffer, level="DEBUG")  # after create_app, which configures too
    return TestClient(app)


ALL_GETS = [
    ("GET", "/api/cron/run-executor", TEST_CRON_SECRET),
    ("POST", "/api/cron/run-executor", TEST_CRON_SECRET),
    ("GET", "/api/health", None),
    ("GET", "/api/admin/executor-status", TEST_ADMIN_SECRET),
    ("GET", "/api/admin/rollout-config", TEST_ADMIN_SECRET),
    ("GET", "/api/admin/actions?guide=G1", TEST_ADMIN_SECRET),
    ("GET", "/api/admin/unknown-actions", TEST_ADMIN_SECRET),
    ("GET", "/admin", TEST_ADMIN_SECRET),
]


def hit_everything(client: TestClient) -> list[httpx.Response]:
    responses = []
    for method, path, secret in ALL_GETS:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        responses.append(client.request(method, path, headers=headers))
    responses.append(client.post("/api/actions", headers=ADMIN, json={"actions": [action("L1")]}))
    responses.append(client.post("/api/admin/opt-outs", headers=ADMIN, json={"phone": PHONES[3]}))
    responses.append(
        client.post(
            f"/api/admin/actions/{SOME_UUID}/reconcile",
            headers=ADMIN,
            json={"outcome": "delivered"},
        )
    )
    return responses


@pytest.mark.parametrize("failure", ["database_down", "not_migrated"])
def test_broken_database_leaks_nothing(
    failure: str, empty_db_url: str, log_buffer: io.StringIO
) -> None:
    url = DEAD_DB if failure == "database_down" else empty_db_url
    expected = "database_unavailable" if failure == "database_down" else "schema_not_ready"
    with capture(run_settings(url), log_buffer) as client:
        for response in hit_everything(client):
            assert_clean_response(response)
            if response.request.url.path == "/api/health" and failure == "not_migrated":
                assert response.json() == {"ok": True}  # reachable: liveness says nothing more
                continue
            assert response.status_code == 503, response.text[:300]
            if response.headers["content-type"].startswith("application/json"):
                body = response.json()
                assert set(body) == {"error", "message"}, body
                if response.request.url.path != "/api/health":
                    assert body["error"] == expected, body
    assert_clean_log(log_buffer.getvalue())


def test_invalid_configuration_leaks_nothing(
    monkeypatch: pytest.MonkeyPatch, log_buffer: io.StringIO
) -> None:
    bad_key = "not-a-fernet-key-but-a-secret-value-42"
    for name, value in {
        "CRON_SECRET": TEST_CRON_SECRET,
        "ADMIN_SECRET": TEST_ADMIN_SECRET,
        "DATABASE_URL": DEAD_DB,
        "PHONE_HASH_KEY": bad_key,
        "PII_ENCRYPTION_KEY": TEST_PII_KEY,
        "DAILY_SEND_LIMIT": "a lot",
        "BUSINESS_TIMEZONE": "Mars/Olympus",
    }.items():
        monkeypatch.setenv(name, value)
    with capture(None, log_buffer) as client:
        for response in hit_everything(client):
            assert response.status_code == 503, (response.request.url, response.text[:300])
            assert_clean_response(response)
            assert bad_key not in response.text and "a lot" not in response.text
            if response.headers["content-type"].startswith("application/json"):
                body = response.json()
                if response.request.url.path != "/api/health":
                    assert body["error"] == "config_invalid"
                    for name in ("PHONE_HASH_KEY", "DAILY_SEND_LIMIT", "BUSINESS_TIMEZONE"):
                        assert name in body["message"]
    log = log_buffer.getvalue()
    assert bad_key not in log
    assert_clean_log(log)


def test_provider_errors_echoing_the_request_leak_nothing(
    clean_db: str, log_buffer: io.StringIO
) -> None:
    """A provider that echoes the API key and the phone in its errors: neither reaches a
    response, a log line, the database's error reasons or the run log."""
    answers: Iterator[httpx.Response | Exception] = iter(
        [
            httpx.Response(500, text=f"upstream failed for {PHONES[0]} key={TEST_API_KEY}"),
            httpx.Response(
                400,
                json={"error": {"code": "bad", "message": f"Bearer {TEST_API_KEY} to {PHONES[1]}"}},
            ),
            httpx.Response(401, json={"message": f"invalid key {TEST_API_KEY}"}),
            httpx.ReadTimeout(f"timed out sending to {PHONES[3]} with {TEST_API_KEY}"),
            httpx.Response(503, headers={"Retry-After": TEST_API_KEY}, text=TEST_API_KEY),
        ]
    )

    def respond(_: dict[str, Any]) -> httpx.Response | Exception:
        return next(answers)

    provider = FakeProvider(respond=respond)
    settings = run_settings(clean_db, chatea_concurrency=1)
    with capture(settings, log_buffer, chatea_transport=provider.transport) as client:
        items = [action(f"P{i}", PHONES[i]) for i in range(5)]
        assert (
            client.post("/api/actions", headers=ADMIN, json={"actions": items}).status_code == 200
        )
        run = client.get(
            "/api/cron/run-executor", headers={"Authorization": f"Bearer {TEST_CRON_SECRET}"}
        )
        assert run.status_code == 200 and run.json()["sent"] == 0, run.text
        responses = [run, *hit_everything(client)]
        responses += [client.get(f"/api/admin/actions?guide=P{i}", headers=ADMIN) for i in range(5)]
    assert len(provider.requests) == 5
    for response in responses:
        assert_clean_response(response)
    with psycopg.connect(libpq_url(clean_db)) as conn:
        stored = conn.execute(
            "SELECT coalesce(string_agg(coalesce(error_reason, '') || error_code, ' '), '')"
            " FROM actions"
        ).fetchone()
        runs = conn.execute(
            "SELECT coalesce(string_agg(config::text || coalesce(error_summary, ''), ' '), '')"
            " FROM executor_runs"
        ).fetchone()
        events = conn.execute(
            "SELECT coalesce(string_agg(coalesce(detail, ''), ' '), '') FROM action_events"
        ).fetchone()
    for text in (stored, runs, events):
        assert text is not None
        assert TEST_API_KEY not in text[0] and "3005550" not in text[0], text[0]
    assert_clean_log(log_buffer.getvalue())


def test_api_key_never_leaves_in_logs_of_a_successful_run(
    clean_db: str, log_buffer: io.StringIO
) -> None:
    provider = FakeProvider()
    settings = run_settings(clean_db)
    with capture(settings, log_buffer, chatea_transport=provider.transport) as client:
        client.post("/api/actions", headers=ADMIN, json={"actions": [action("S1", PHONES[5])]})
        run = client.get(
            "/api/cron/run-executor", headers={"Authorization": f"Bearer {TEST_CRON_SECRET}"}
        )
        assert run.json()["sent"] == 1
    assert provider.requests and provider.requests[0]["to"] == PHONES[5]
    assert_clean_log(log_buffer.getvalue())
