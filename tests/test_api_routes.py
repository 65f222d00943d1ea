"""Cron, intake and opt-out routes through the real app (DESIGN §7)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from executor.config import Settings
from executor.db import libpq_url
from executor.runtime import Runtime
from tests.conftest import TEST_ADMIN_SECRET, TEST_CRON_SECRET, make_settings
from tests.pipeline_helpers import PHONES, FakeProvider, action, run_settings

CRON = {"Authorization": f"Bearer {TEST_CRON_SECRET}"}
ADMIN = {"Authorization": f"Bearer {TEST_ADMIN_SECRET}"}


def client_for(settings: Settings) -> TestClient:
    return TestClient(create_app(Runtime(settings)))


@pytest.fixture
def client(clean_db: str) -> Iterator[TestClient]:
    with client_for(run_settings(clean_db, executor_enabled=False)) as c:
        yield c


def count_rows(db_url: str, table: str = "actions") -> int:
    with psycopg.connect(libpq_url(db_url)) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


# ---- auth ------------------------------------------------------------------------------

UNAUTHORIZED = {"error": "unauthorized", "message": "missing or invalid credentials"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic " + TEST_CRON_SECRET},
        {"Authorization": TEST_CRON_SECRET},
        {"Authorization": "Bearer wrong-secret-wrong-secret-000"},
        {"Authorization": "Bearer " + TEST_CRON_SECRET[:-1]},
        {"Authorization": "Bearer " + TEST_CRON_SECRET + "x"},
        {"Authorization": "Bearer " + TEST_ADMIN_SECRET},
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_cron_auth_refusals_look_the_same(
    client: TestClient, headers: dict[str, str], method: str
) -> None:
    response = client.request(method, "/api/cron/run-executor", headers=headers)
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert TEST_CRON_SECRET not in response.text


def test_non_ascii_authorization_is_401_not_500(clean_db: str) -> None:
    app = create_app(Runtime(run_settings(clean_db)))

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.get(
                "/api/cron/run-executor",
                headers=[(b"authorization", "Bearer sécrét-ñ-☃".encode())],
            )

    response = asyncio.run(call())
    assert response.status_code == 401 and response.json() == UNAUTHORIZED


def test_token_in_query_string_is_refused(client: TestClient) -> None:
    response = client.get(f"/api/cron/run-executor?token={TEST_CRON_SECRET}")
    assert response.status_code == 401 and response.json() == UNAUTHORIZED


@pytest.mark.parametrize("secret", [None, "", "short-secret"])
def test_unset_or_short_secret_refuses_everything(clean_db: str, secret: str | None) -> None:
    settings = make_settings(clean_db, cron_secret=secret, admin_secret=None)
    with client_for(settings) as c:
        for path in ("/api/cron/run-executor", "/api/actions"):
            for headers in ({}, {"Authorization": f"Bearer {secret}"}):
                method = "GET" if "cron" in path else "POST"
                response = c.request(method, path, headers=headers, json={"actions": []})
                assert response.status_code == 401, (path, headers)
                assert response.json() == UNAUTHORIZED


def test_admin_secret_falls_back_to_cron_secret(clean_db: str) -> None:
    settings = make_settings(clean_db, admin_secret=None)
    with client_for(settings) as c:
        response = c.post("/api/actions", headers=CRON, json={"actions": [action("G1", PHONES[1])]})
    assert response.status_code == 200


def test_cron_secret_does_not_open_admin_when_admin_secret_set(client: TestClient) -> None:
    response = client.post("/api/actions", headers=CRON, json={"actions": [action("G1")]})
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/api/cron/run-executor/", "/api/actions/", "/api/health/"])
def test_no_trailing_slash_redirects(client: TestClient, path: str) -> None:
    response = client.get(path, headers=CRON, follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers


# ---- cron ----------------------------------------------------------------------------


def test_cron_get_runs_dry_when_kill_switch_off(client: TestClient, clean_db: str) -> None:
    posted = client.post(
        "/api/actions", headers=ADMIN, json={"actions": [action("G1"), action("G2", PHONES[1])]}
    )
    assert posted.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    response = client.get("/api/cron/run-executor", headers=CRON)
    assert response.status_code == 200
    body = response.json()
    expected_keys = {
        "runId",
        "status",
        "dryRun",
        "startedAt",
        "finishedAt",
        "durationMs",
        "planned",
        "sent",
        "wouldSend",
        "failed4xx",
        "failed5xx",
        "failedPrecheck",
        "unknown",
        "skippedDuplicate",
        "skippedRateLimit",
        "skippedPilot",
        "skippedOptOut",
        "skippedCircuitOpen",
        "expired",
        "remainingToday",
    }
    assert expected_keys <= set(body)
    assert body["dryRun"] is True and body["wouldSend"] == 2 and body["sent"] == 0
    assert body["status"] == "SUCCESS"


def test_cron_dry_run_query_flag(clean_db: str) -> None:
    with client_for(run_settings(clean_db)) as c:
        c.post("/api/actions", headers=ADMIN, json={"actions": [action("G1")]})
        body = c.post("/api/cron/run-executor?dryRun=true", headers=CRON).json()
    assert body["dryRun"] is True and body["wouldSend"] == 1


def test_cron_on_unmigrated_database_is_503(empty_db_url: str) -> None:
    with client_for(make_settings(empty_db_url)) as c:
        response = c.get("/api/cron/run-executor", headers=CRON)
    assert response.status_code == 503
    assert response.json()["error"] == "schema_not_ready"


def test_duplicate_cron_calls_one_runs_others_409(clean_db: str) -> None:
    settings = run_settings(clean_db)
    provider = FakeProvider(latency=0.4)
    seed = client_for(settings)
    with seed:
        seed.post(
            "/api/actions",
            headers=ADMIN,
            json={"actions": [action(f"G{i}", PHONES[i]) for i in range(4)]},
        )

    async def fire() -> list[httpx.Response]:
        app = create_app(Runtime(settings, chatea_transport=provider.transport))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return list(
                await asyncio.gather(
                    *(c.get("/api/cron/run-executor", headers=CRON) for _ in range(5))
                )
            )

    responses = asyncio.run(fire())
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 409, 409, 409, 409]
    conflict = next(r for r in responses if r.status_code == 409).json()
    assert conflict["error"] == "conflict" and "run" in conflict["message"]
    assert sorted(provider.per_action().values()) == [1, 1, 1, 1]


# ---- intake --------------------------------------------------------------------------


def test_intake_accepts_normalizes_and_counts_duplicates(client: TestClient, clean_db: str) -> None:
    formats = ["3001234567", "+57 300 123 4567", "573001234567", "(300) 123-4567"]
    items = [action(f"G{i}", phone) for i, phone in enumerate(formats)]
    response = client.post("/api/actions", headers=ADMIN, json={"actions": items})
    assert response.json() == {"accepted": 4, "duplicates": 0, "rejected": []}
    again = client.post("/api/actions", headers=ADMIN, json={"actions": items[:2]})
    assert again.json() == {"accepted": 0, "duplicates": 2, "rejected": []}
    with psycopg.connect(libpq_url(clean_db)) as conn:
        hashes = conn.execute("SELECT DISTINCT phone_hash FROM actions").fetchall()
        recipients = conn.execute("SELECT phone_encrypted FROM recipients").fetchall()
        keys = [r[0] for r in conn.execute("SELECT idempotency_key FROM actions ORDER BY 1")]
    assert len(hashes) == 1 and len(recipients) == 1  # all four are the same phone
    assert b"3001234567" not in bytes(recipients[0][0])
    assert all(k.startswith("G") and k.count(":") == 2 for k in keys)
    for text_ in (response.text, again.text):
        assert "300" not in text_


@pytest.mark.parametrize(
    ("phone", "why"),
    [
        ("601 555 0100", "landline"),
        ("12345", "junk"),
        ("+1 202 555 0143", "foreign"),
        ("not a phone", "junk"),
        ("3" * 39, "too long"),
    ],
)
def test_intake_rejects_bad_phones_without_echo(
    client: TestClient, clean_db: str, phone: str, why: str
) -> None:
    response = client.post(
        "/api/actions",
        headers=ADMIN,
        json={"actions": [action("OK", PHONES[1]), action("BAD", phone)]},
    )
    assert response.status_code == 200, why
    body = response.json()
    assert body["accepted"] == 1 and body["rejected"][0]["index"] == 1
    assert "phone" in body["rejected"][0]["error"]
    assert phone not in response.text
    assert count_rows(clean_db) == 1


@pytest.mark.parametrize(
    ("payload", "status", "error"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 422, "invalid_input"),
        (b'{"actions": "nope"}', 422, "invalid_input"),
        (b'{"actions": []}', 422, "invalid_input"),
        (b'{"other": []}', 422, "invalid_input"),
        (b"[" * 50_000 + b"]" * 50_000, 400, "invalid_json"),
    ],
)
def test_intake_bad_bodies(
    client: TestClient, clean_db: str, payload: bytes, status: int, error: str
) -> None:
    response = client.post(
        "/api/actions",
        headers={**ADMIN, "Content-Type": "application/json"},
        content=payload,
    )
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error and body["message"]
    assert count_rows(clean_db) == 0


def test_intake_too_many_items(client: TestClient, clean_db: str) -> None:
    items = [action(f"G{i}", None) for i in range(1001)]
    response = client.post("/api/actions", headers=ADMIN, json={"actions": items})
    assert response.status_code == 422 and "1000" in response.json()["message"]
    assert count_rows(clean_db) == 0


def test_intake_too_big(client: TestClient, clean_db: str) -> None:
    big = json.dumps({"actions": [action("G1", None, variables={"x": "y" * (1024 * 1024)})]})
    response = client.post(
        "/api/actions", headers={**ADMIN, "Content-Type": "application/json"}, content=big
    )
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"
    assert count_rows(clean_db) == 0


def test_intake_item_errors_name_fields_and_write_only_valid_items(
    client: TestClient, clean_db: str
) -> None:
    items: list[Any] = [
        action("OK1", PHONES[1]),
        {"guide": 123, "trigger": "at_office_3d", "city": "Bogotá", "carrier": "X"},
        {"trigger": "at_office_3d", "city": "Bogotá", "carrier": "X"},
        action("HUGE", None, variables={"numero_de_guia": "z" * 5000}),
        "not an object",
        {**action("EXTRA", None), "surprise": True},
        action("PHONEVAR", None, variables={"phone": "3001234567"}),
        action("OK2", PHONES[2]),
    ]
    response = client.post("/api/actions", headers=ADMIN, json={"actions": items})
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    errors = {r["index"]: r["error"] for r in body["rejected"]}
    assert set(errors) == {1, 2, 3, 4, 5, 6}
    assert "guide" in errors[1] and "guide" in errors[2]
    assert "variables" in errors[3] and "surprise" in errors[5]
    assert "3001234567" not in response.text
    assert count_rows(clean_db) == 2


def test_intake_all_rejected_is_422(client: TestClient, clean_db: str) -> None:
    response = client.post(
        "/api/actions", headers=ADMIN, json={"actions": [action("BAD", "12345")]}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_input" and body["rejected"][0]["index"] == 0
    assert count_rows(clean_db) == 0


def test_opt_out_stores_only_the_hash(client: TestClient, clean_db: str) -> None:
    response = client.post("/api/admin/opt-outs", headers=ADMIN, json={"phone": "300 123 4567"})
    assert response.status_code == 200 and response.json()["optedOut"] is True
    again = client.post("/api/admin/opt-outs", headers=ADMIN, json={"phone": "+573001234567"})
    assert again.json()["alreadyOptedOut"] is True
    assert "300" not in response.text + again.text
    with psycopg.connect(libpq_url(clean_db)) as conn:
        rows = conn.execute("SELECT phone_hash FROM opt_outs").fetchall()
    assert len(rows) == 1 and len(rows[0][0]) == 64
    bad = client.post("/api/admin/opt-outs", headers=ADMIN, json={"phone": "601 555 0100"})
    assert bad.status_code == 422 and "601" not in bad.text
    assert client.post("/api/admin/opt-outs", json={"phone": "3001234567"}).status_code == 401
