"""Operators reconcile UNKNOWN actions: API, CLI, and the audit trail."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
from fastapi.testclient import TestClient

from api.app import create_app
from executor.db import libpq_url
from executor.runtime import Runtime
from tests.conftest import TEST_ADMIN_SECRET
from tests.pii_guard import record
from tests.pipeline_helpers import PHONES, action, run_settings

ADMIN = {"Authorization": f"Bearer {TEST_ADMIN_SECRET}"}


def _make_unknown(db_url: str, guides: list[str]) -> None:
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        conn.execute(
            "UPDATE actions SET status='UNKNOWN', attempts=1, error_code='READ_TIMEOUT'"
            " WHERE guide = ANY(%s)",
            (guides,),
        )


def test_list_and_reconcile_unknown_actions(clean_db: str) -> None:
    with TestClient(create_app(Runtime(run_settings(clean_db)))) as c:
        items = [action(g, PHONES[i]) for i, g in enumerate(["U1", "U2", "OK"])]
        assert c.post("/api/actions", headers=ADMIN, json={"actions": items}).status_code == 200
        _make_unknown(clean_db, ["U1", "U2"])
        listed = c.get("/api/admin/unknown-actions", headers=ADMIN).json()
        assert listed["count"] == 2
        ids = {a["guide"]: a["id"] for a in listed["actions"]}
        assert "phone" not in str(listed).lower() and "300" not in str(listed)

        done = c.post(
            f"/api/admin/actions/{ids['U1']}/reconcile",
            headers=ADMIN,
            json={"outcome": "delivered", "note": "seen in Chatea"},
        )
        assert done.json() == {"id": ids["U1"], "status": "SENT"}
        again = c.post(
            f"/api/admin/actions/{ids['U1']}/reconcile",
            headers=ADMIN,
            json={"outcome": "delivered"},
        )
        assert again.status_code == 409 and again.json()["error"] == "conflict"
        redo = c.post(
            f"/api/admin/actions/{ids['U2']}/reconcile",
            headers=ADMIN,
            json={"outcome": "not_delivered"},
        )
        assert redo.json()["status"] == "PLANNED"
        missing = c.post(
            "/api/admin/actions/00000000-0000-0000-0000-000000000000/reconcile",
            headers=ADMIN,
            json={"outcome": "delivered"},
        )
        assert missing.status_code == 404
        bad = c.post(
            "/api/admin/actions/not-a-uuid/reconcile", headers=ADMIN, json={"outcome": "maybe"}
        )
        assert bad.status_code == 422
        assert c.get("/api/admin/unknown-actions").status_code == 401
        trail = c.get("/api/admin/actions?guide=U1", headers=ADMIN).json()
    details = [e["detail"] for a in trail["actions"] for e in a["events"]]
    assert any("reconciled by operator: delivered" in (d or "") for d in details)
    with psycopg.connect(libpq_url(clean_db)) as conn:
        rows: dict[str, str] = dict(conn.execute("SELECT guide, status FROM actions").fetchall())
    assert rows == {"U1": "SENT", "U2": "PLANNED", "OK": "PLANNED"}


def test_cli_unknown_and_reconcile(clean_db: str) -> None:
    with TestClient(create_app(Runtime(run_settings(clean_db)))) as c:
        c.post("/api/actions", headers=ADMIN, json={"actions": [action("U9")]})
    _make_unknown(clean_db, ["U9"])
    env = {**os.environ, "DATABASE_URL": clean_db}
    listed = subprocess.run(
        [sys.executable, "-m", "executor.cli", "unknown"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    record("cli unknown", listed.stdout + listed.stderr)
    assert listed.returncode == 0, listed.stderr
    action_id = listed.stdout.split()[0]
    done = subprocess.run(
        [sys.executable, "-m", "executor.cli", "reconcile", action_id, "not-delivered"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    record("cli reconcile", done.stdout + done.stderr)
    assert done.returncode == 0 and "PLANNED" in done.stdout
    twice = subprocess.run(
        [sys.executable, "-m", "executor.cli", "reconcile", action_id, "delivered"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert twice.returncode == 1
    assert twice.stderr.strip().splitlines()[-1].startswith("executor: error: only UNKNOWN")
    assert "Traceback" not in twice.stderr
