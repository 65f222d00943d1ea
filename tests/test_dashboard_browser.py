"""GET /admin: the operator dashboard, in a real headless Chromium and through TestClient.

The browser test starts the app with uvicorn on 127.0.0.1 (a free port) over the scripted history
of ``test_admin_status``, signs in through the form, screenshots the page to
``test-artifacts/dashboard.png`` and checks that every figure marked ``data-metric`` equals the
value of the JSON API. It needs Debian's chromium at /usr/bin/chromium (``.ci/install_chromium.sh``
installs it); Playwright's own browser download is never used.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import ADMIN_COOKIE
from executor.db import libpq_url
from executor.runtime import Runtime
from tests.conftest import TEST_ADMIN_SECRET, TEST_CRON_SECRET, make_settings
from tests.test_admin_status import (
    ADMIN,
    admin_client,
    db_clock,
    insert_action,
    insert_event,
    insert_run,
    script_history,
)

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'"
NOT_AVAILABLE = "—"


def script_dashboard_history(db_url: str) -> None:
    """The status history plus hourly events and hostile text that must be escaped."""
    script_history(db_url)
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        now = db_clock(conn).now
        action = insert_action(conn, status="SENT")
        for minutes, status in ((1, "SENT"), (2, "SENT"), (65, "SENT"), (65, "FAILED")):
            insert_event(conn, action, status, now - timedelta(minutes=minutes))
        insert_event(conn, action, "UNKNOWN", now - timedelta(hours=5))
        insert_action(
            conn, status="FAILED", error_code="<img src=x onerror=alert(1)>", updated_at=now
        )
        insert_run(
            conn,
            now - timedelta(seconds=200),
            status="NOOP",
            error_summary='<script>alert("x")</script>',
        )


# ---- live server ------------------------------------------------------------------------------


class LiveServer:
    def __init__(self, db_url: str) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(Runtime(make_settings(db_url)))
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture
def live_server(clean_db: str) -> Iterator[LiveServer]:
    script_dashboard_history(clean_db)
    with LiveServer(clean_db) as server:
        yield server


# ---- comparing the page with the API ----------------------------------------------------------


def resolve(document: Any, path: str) -> Any:
    node = document
    for part in path.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def expected_text(path: str, value: Any) -> str | None:
    """What the page must show for a value (None: not checked as text)."""
    signed = path.startswith("delta.")
    if value is None:
        return NOT_AVAILABLE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if path.endswith("successRate"):
        pct = f"{value * 100:.2f}"
        return (f"+{pct}" if value > 0 else pct) + " pp" if signed else pct + "%"
    if isinstance(value, int):
        return f"+{value}" if signed and value > 0 else str(value)
    if isinstance(value, str):
        if path.rsplit(".", 1)[-1] in TIME_KEYS:
            return value.replace("T", " ")[:19]  # 2024-05-01 04:30:00 (UTC)
        return value
    return None


TIME_VARYING = {"metrics24h.periodStart", "metrics24h.periodEnd"}
TIME_KEYS = {"lastRunAt", "periodStart", "periodEnd", "openUntil", "startedAt", "finishedAt"}
AGE = "stats.queue.oldestPlannedAgeSeconds"


def check_metrics(
    shown: list[tuple[str, str, str]],
    before: dict[str, Any],
    after: dict[str, Any],
    rollout: dict[str, Any],
) -> set[str]:
    """Every data-metric equals the API (before or after the page load, for the clock)."""
    paths: set[str] = set()
    for path, raw, text in shown:
        paths.add(path)
        value = json.loads(raw)
        if path.startswith("hourly."):
            continue
        if path.startswith("rollout."):
            api_values = [resolve(rollout, path.removeprefix("rollout."))]
        else:
            api_values = [resolve(before, path), resolve(after, path)]
        if path in TIME_VARYING:
            low, high = (datetime.fromisoformat(v.replace("Z", "+00:00")) for v in api_values)
            assert low <= datetime.fromisoformat(value.replace("Z", "+00:00")) <= high, path
        elif path == AGE:
            assert api_values[0] <= value <= api_values[1], path
        else:
            assert value in api_values, (path, value, api_values)
        want = expected_text(path, value)
        if want is not None:
            assert text.strip() == want, (path, text, want)
    return paths


def required_paths(status: dict[str, Any]) -> set[str]:
    paths = {f"metrics24h.{key}" for key in status["metrics24h"]}
    for day in ("today", "yesterday", "delta"):
        paths |= {f"{day}.{key}" for key in status[day]}
    for group, values in status["stats"].items():
        paths |= {f"stats.{group}.{key}" for key in values}
    paths |= {f"status.{key}" for key in status["status"]}
    for i, item in enumerate(status["topFailureReasons"]):
        paths |= {f"topFailureReasons.{i}.{key}" for key in item}
    for i, run in enumerate(status["recentRuns"]):
        paths |= {f"recentRuns.{i}.{key}" for key in run if key != "runId"}
    paths |= {"rollout.sendStatus.reason", "rollout.sendStatus.allowed", "rollout.validation.valid"}
    return paths


# ---- the browser ------------------------------------------------------------------------------


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian chromium is not installed at /usr/bin/chromium (run .ci/install_chromium.sh)",
)
def test_dashboard_in_headless_chromium(live_server: LiveServer) -> None:
    from playwright.sync_api import sync_playwright

    base = live_server.url
    api = httpx.Client(base_url=base, headers=ADMIN, timeout=30)
    requested: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.on("request", lambda request: requested.append(request.url))

            # Not signed in: 401 with the form.
            first = page.goto(f"{base}/admin")
            assert first is not None and first.status == 401
            headers = first.headers
            assert headers["content-security-policy"] == CSP
            assert headers["x-frame-options"] == "DENY"
            assert headers["cache-control"] == "no-store"
            assert page.locator("form[action='/admin/login'] input[name='secret']").count() == 1

            # A wrong secret: still the form, a generic error, no cookie.
            page.fill("input[name='secret']", "wrong-secret-wrong-secret-000")
            with page.expect_navigation():
                page.click("button[type='submit']")
            assert page.locator("[role='alert']").count() == 1
            assert not [c for c in context.cookies() if c["name"] == ADMIN_COOKIE]

            before = api.get("/api/admin/executor-status").json()
            page.fill("input[name='secret']", TEST_ADMIN_SECRET)
            with page.expect_navigation():
                page.click("button[type='submit']")
            assert page.url == f"{base}/admin"
            cookie = next(c for c in context.cookies() if c["name"] == ADMIN_COOKIE)
            assert cookie["httpOnly"] is True
            assert cookie["sameSite"] == "Strict"
            assert cookie["path"] == "/"
            assert cookie["secure"] is False  # plain http here; https sets Secure
            assert page.locator("h1").inner_text() == "WhatsApp Executor"

            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000

            shown = page.eval_on_selector_all(
                "[data-metric]",
                "els => els.map(e => [e.dataset.metric, e.dataset.value, e.textContent])",
            )
            # The signed-in page can read the API with its cookie too.
            after = page.request.get(f"{base}/api/admin/executor-status").json()
            rollout = api.get("/api/admin/rollout-config").json()

            paths = check_metrics(shown, before, after, rollout)
            missing = required_paths(after) - paths
            assert not missing, sorted(missing)
            assert after["metrics24h"]["sent"] == 10
            assert page.locator("[data-metric='metrics24h.sent']").inner_text() == "10"
            assert page.locator("[data-metric='metrics24h.successRate']").inner_text() == "62.50%"
            assert page.locator("[data-metric='delta.sent']").inner_text() == "+4"
            assert page.locator("[data-metric='stats.circuitBreaker.state']").inner_text() == (
                "open"
            )

            # The chart: 24 hours x (sent, failed), totals from the event history.
            assert page.locator("svg[data-chart='hourly'] rect[data-metric]").count() == 48
            assert page.locator("[data-metric='hourly.totalSent']").inner_text() == "3"
            assert page.locator("[data-metric='hourly.totalFailed']").inner_text() == "2"
            last_hour_sent = page.get_attribute("[data-metric='hourly.23.sent']", "data-value")
            assert last_hour_sent is not None and int(last_hour_sent) >= 1

            # Hostile text is shown as text, never run or parsed as markup.
            body_text = page.inner_text("body")
            assert '<script>alert("x")</script>' in body_text
            assert "<img src=x onerror=alert(1)>" in body_text
            assert page.locator("main script, main img").count() == 0

            # No request left the app: no CDN, no external asset; the secret is in no URL.
            assert requested and all(url.startswith(base) for url in requested), requested
            assert all(TEST_ADMIN_SECRET not in url for url in requested)

            # Sign out: back to the form, cookie gone.
            with page.expect_navigation():
                page.click("header form button[type='submit']")
            assert page.url == f"{base}/admin"
            assert page.locator("input[name='secret']").count() == 1
            assert not [c for c in context.cookies() if c["name"] == ADMIN_COOKIE]
        finally:
            browser.close()
            api.close()


# ---- login flow and page without a browser --------------------------------------------------


@pytest.fixture
def client(clean_db: str) -> Iterator[TestClient]:
    with admin_client(make_settings(clean_db)) as c:
        yield c


def set_cookie_headers(response: httpx.Response) -> list[str]:
    return [v for k, v in response.headers.multi_items() if k.lower() == "set-cookie"]


def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


def test_dashboard_without_auth_is_401_with_the_login_form(client: TestClient) -> None:
    response = client.get("/admin")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert_security_headers(response)
    page = response.text
    assert '<form method="post" action="/admin/login"' in page
    assert 'name="secret"' in page and 'type="password"' in page
    assert "data-metric" not in page
    assert TEST_ADMIN_SECRET not in page


def test_secret_in_the_query_string_is_not_a_login(client: TestClient) -> None:
    response = client.get("/admin", params={"secret": TEST_ADMIN_SECRET})
    assert response.status_code == 401
    response = client.get("/admin/login", params={"secret": TEST_ADMIN_SECRET})
    assert response.status_code == 405


def test_dashboard_with_bearer_header(client: TestClient, clean_db: str) -> None:
    script_dashboard_history(clean_db)
    response = client.get("/admin", headers=ADMIN)
    assert response.status_code == 200
    assert_security_headers(response)
    page = response.text
    assert 'data-metric="metrics24h.sent" data-value="10">10<' in page
    assert "<svg" in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page
    # Escaped, never raw.
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "3001234567" not in page


def test_login_sets_a_strict_httponly_cookie_and_redirects(client: TestClient) -> None:
    response = client.post(
        "/admin/login", data={"secret": TEST_ADMIN_SECRET}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/admin"
    assert TEST_ADMIN_SECRET not in response.headers["location"]
    assert_security_headers(response)
    (cookie,) = set_cookie_headers(response)
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert attributes[0] == f"{ADMIN_COOKIE}={TEST_ADMIN_SECRET}".lower()
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "max-age=3600" in attributes
    assert "path=/" in attributes
    assert "secure" not in attributes  # http: a Secure cookie would never come back
    # The cookie now opens the dashboard and the JSON API.
    assert client.get("/admin").status_code == 200
    assert client.get("/api/admin/executor-status").status_code == 200


@pytest.mark.parametrize(
    ("base_url", "headers"),
    [("https://testserver", {}), ("http://testserver", {"X-Forwarded-Proto": "https"})],
)
def test_login_cookie_is_secure_over_https(
    clean_db: str, base_url: str, headers: dict[str, str]
) -> None:
    app = create_app(Runtime(make_settings(clean_db)))
    with TestClient(app, base_url=base_url) as client:
        response = client.post(
            "/admin/login",
            data={"secret": TEST_ADMIN_SECRET},
            headers=headers,
            follow_redirects=False,
        )
    assert response.status_code == 303
    (cookie,) = set_cookie_headers(response)
    assert "secure" in [part.strip().lower() for part in cookie.split(";")]


@pytest.mark.parametrize(
    "form",
    [
        {"secret": "wrong-secret-wrong-secret-000"},
        {"secret": TEST_ADMIN_SECRET[:-1]},
        {"secret": ""},
        {"secret": TEST_CRON_SECRET},
        {"password": TEST_ADMIN_SECRET},
        {"secret": "ñandú-ñandú-ñandú-ñandú"},
    ],
)
def test_wrong_secret_is_401_form_with_a_generic_error(
    client: TestClient, form: dict[str, str]
) -> None:
    response = client.post("/admin/login", data=form, follow_redirects=False)
    assert response.status_code == 401
    assert_security_headers(response)
    assert set_cookie_headers(response) == []
    assert 'role="alert"' in response.text
    assert "Sign-in failed" in response.text
    for value in form.values():
        if value:
            assert value not in response.text


def test_every_wrong_login_looks_the_same(client: TestClient) -> None:
    pages = {
        client.post("/admin/login", data={"secret": s}).text
        for s in ("a", "wrong-secret-wrong-secret-000", TEST_CRON_SECRET)
    }
    assert len(pages) == 1


def test_login_body_must_be_a_small_form(client: TestClient) -> None:
    as_json = client.post("/admin/login", json={"secret": TEST_ADMIN_SECRET})
    assert as_json.status_code == 401
    huge = client.post(
        "/admin/login",
        content=f"secret={TEST_ADMIN_SECRET}&pad={'x' * 10_000}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert huge.status_code == 401


def test_logout_clears_the_cookie(client: TestClient) -> None:
    client.post("/admin/login", data={"secret": TEST_ADMIN_SECRET})
    assert client.get("/admin").status_code == 200
    response = client.post("/admin/logout", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin"
    (cookie,) = set_cookie_headers(response)
    assert cookie.lower().startswith(f"{ADMIN_COOKIE}=")
    assert re.search(r"max-age=0", cookie, re.IGNORECASE)
    assert client.get("/admin").status_code == 401


def test_stale_cookie_gets_the_form_and_is_dropped(client: TestClient) -> None:
    client.cookies.set(ADMIN_COOKIE, "an-old-secret-that-was-rotated")
    response = client.get("/admin")
    assert response.status_code == 401
    (cookie,) = set_cookie_headers(response)
    assert re.search(r"max-age=0", cookie, re.IGNORECASE)


def test_dashboard_on_unmigrated_database_is_503_html(empty_db_url: str) -> None:
    with admin_client(make_settings(empty_db_url)) as client:
        assert client.get("/admin").status_code == 401  # auth first
        response = client.get("/admin", headers=ADMIN)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert_security_headers(response)
    assert "executor db upgrade" in response.text
