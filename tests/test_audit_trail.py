"""GET /api/admin/actions?guide=G: the audit trail of one guía, without phones."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.db import libpq_url
from executor.logs import REDACTED
from executor.metrics import audit_trail
from tests.conftest import make_settings
from tests.test_admin_status import (
    ADMIN,
    admin_client,
    db_clock,
    insert_action,
    insert_event,
    parse_iso,
)

GUIDE = "240012345678"  # a guía number: long digits, not a phone
PHONE_HASH = "9f" * 32
ACTION_KEYS = {
    "id",
    "idempotencyKey",
    "guide",
    "trigger",
    "city",
    "carrier",
    "status",
    "attempts",
    "nextAttemptAt",
    "executedAt",
    "expiresAt",
    "createdAt",
    "updatedAt",
    "providerMessageId",
    "errorCode",
    "errorReason",
    "hasPhone",
    "variables",
    "events",
}
EVENT_KEYS = {"status", "attempt", "errorCode", "detail", "providerMessageId", "runId", "createdAt"}


@pytest.fixture
def client(clean_db: str) -> Iterator[TestClient]:
    with admin_client(make_settings(clean_db)) as c:
        yield c


def script_guide(db_url: str) -> dict[str, str]:
    """Two actions of GUIDE (one sent after a retry, one failed) and one of another guía."""
    run1, run2 = str(uuid.uuid4()), str(uuid.uuid4())
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        now = db_clock(conn).now
        sent = insert_action(
            conn,
            guide=GUIDE,
            trigger="no_movement_48h",
            status="SENT",
            phone_hash=PHONE_HASH,
            attempts=2,
            provider_message_id="wamid.ABC123",
            executed_at=now - timedelta(minutes=1),
            send_day=db_clock(conn).today,
            created_at=now - timedelta(minutes=10),
            variables={
                "numero_de_guia": GUIDE,
                "transportadora": "Servientrega",
                "ultimo_movimiento": "llamar al +57 300 123 4567 en oficina",
            },
        )
        failed = insert_action(
            conn,
            guide=GUIDE,
            trigger="at_office_3d",
            status="FAILED",
            attempts=1,
            error_code="HTTP_400",
            error_reason="recipient 3001234567 is not a WhatsApp user",
            created_at=now - timedelta(minutes=5),
        )
        insert_action(conn, guide="OTHER-GUIDE", phone_hash="ab" * 32)
        # Events are inserted in the order they happened; ids grow with them.
        steps = [
            (sent, "PLANNED", 0, None, None, None, None, 10),
            (sent, "SENDING", 1, None, None, None, run1, 9),
            (sent, "PLANNED", 1, "HTTP_503", "retry in 60 s", None, run1, 9),
            (failed, "PLANNED", 0, None, None, None, None, 5),
            (sent, "SENDING", 2, None, None, None, run2, 2),
            (sent, "SENT", 2, None, None, "wamid.ABC123", run2, 1),
            (failed, "SENDING", 1, None, None, None, run2, 1),
            (failed, "FAILED", 1, "HTTP_400", "Chatea 400 for +573001234567", None, run2, 1),
        ]
        for action, status, attempt, code, detail, provider_id, run, minutes in steps:
            insert_event(
                conn,
                action,
                status,
                now - timedelta(minutes=minutes),
                attempt=attempt,
                error_code=code,
                detail=detail,
                provider_message_id=provider_id,
                run_id=run,
            )
    return {"sent": sent, "failed": failed, "run1": run1, "run2": run2}


def test_actions_with_events_in_order(client: TestClient, clean_db: str) -> None:
    ids = script_guide(clean_db)
    response = client.get("/api/admin/actions", params={"guide": GUIDE}, headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"guide", "actions"}
    assert body["guide"] == GUIDE
    actions = body["actions"]
    assert [a["id"] for a in actions] == [ids["sent"], ids["failed"]]  # by creation
    for action in actions:
        assert set(action) == ACTION_KEYS
        for event in action["events"]:
            assert set(event) == EVENT_KEYS

    sent, failed = actions
    assert sent["guide"] == GUIDE and sent["trigger"] == "no_movement_48h"
    assert sent["status"] == "SENT" and sent["attempts"] == 2
    assert sent["providerMessageId"] == "wamid.ABC123"
    assert sent["hasPhone"] is True
    assert sent["city"] == "Bogotá" and sent["carrier"] == "Servientrega"
    assert parse_iso(sent["executedAt"]) < parse_iso(sent["updatedAt"]) + timedelta(hours=1)
    assert sent["idempotencyKey"].startswith(GUIDE)
    assert [(e["status"], e["attempt"]) for e in sent["events"]] == [
        ("PLANNED", 0),
        ("SENDING", 1),
        ("PLANNED", 1),
        ("SENDING", 2),
        ("SENT", 2),
    ]
    retry = sent["events"][2]
    assert retry["errorCode"] == "HTTP_503" and retry["detail"] == "retry in 60 s"
    assert retry["runId"] == ids["run1"]
    assert sent["events"][4]["providerMessageId"] == "wamid.ABC123"
    assert sent["events"][4]["runId"] == ids["run2"]
    assert sent["events"][0]["runId"] is None
    times = [parse_iso(e["createdAt"]) for e in sent["events"]]
    assert times == sorted(times)

    assert failed["status"] == "FAILED" and failed["errorCode"] == "HTTP_400"
    assert failed["hasPhone"] is False
    assert [e["status"] for e in failed["events"]] == ["PLANNED", "SENDING", "FAILED"]

    # Guía numbers are kept; variables pass through as they are, minus phones.
    assert sent["variables"]["numero_de_guia"] == GUIDE
    assert sent["variables"]["transportadora"] == "Servientrega"
    assert REDACTED in sent["variables"]["ultimo_movimiento"]
    assert failed["errorReason"] is not None and REDACTED in failed["errorReason"]
    assert REDACTED in failed["events"][2]["detail"]


def test_no_phone_or_phone_hash_in_the_body(client: TestClient, clean_db: str) -> None:
    script_guide(clean_db)
    response = client.get("/api/admin/actions", params={"guide": GUIDE}, headers=ADMIN)
    text = response.text
    assert PHONE_HASH not in text
    assert "phone_hash" not in text and "phoneHash" not in text
    for phone in ("3001234567", "300 123 4567", "+573001234567"):
        assert phone not in text
    assert "OTHER-GUIDE" not in text


def test_unknown_guide_is_an_empty_list(client: TestClient) -> None:
    response = client.get("/api/admin/actions", params={"guide": "NOPE"}, headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {"guide": "NOPE", "actions": []}


def test_guide_is_trimmed(client: TestClient, clean_db: str) -> None:
    script_guide(clean_db)
    response = client.get("/api/admin/actions", params={"guide": f"  {GUIDE} "}, headers=ADMIN)
    assert response.status_code == 200
    assert len(response.json()["actions"]) == 2


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?guide=",
        "?guide=%20%20",
        "?other=1",
        "?guide=" + "9" * 101,
    ],
)
def test_missing_blank_or_long_guide_is_422(client: TestClient, query: str) -> None:
    response = client.get("/api/admin/actions" + query, headers=ADMIN)
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"error", "message"}
    assert body["error"] == "invalid_input"
    assert "guide" in body["message"]


def test_guide_of_exactly_100_chars_is_accepted(client: TestClient) -> None:
    response = client.get("/api/admin/actions", params={"guide": "9" * 100}, headers=ADMIN)
    assert response.status_code == 200


def test_audit_needs_admin_auth(client: TestClient) -> None:
    response = client.get("/api/admin/actions", params={"guide": GUIDE})
    assert response.status_code == 401


async def test_audit_trail_function_direct(engine: AsyncEngine, clean_db: str) -> None:
    ids = script_guide(clean_db)
    body = await audit_trail(engine, GUIDE)
    assert [a["id"] for a in body["actions"]] == [ids["sent"], ids["failed"]]
    assert sum(len(a["events"]) for a in body["actions"]) == 8
