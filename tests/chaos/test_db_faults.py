"""Database faults: the run's connections terminated mid-run, and Postgres unreachable.

``pg_terminate_backend`` hits every connection of the scenario's database (filtered by
``datname``) while the run's HTTP calls are in flight: the run lock is released by the server,
the finalize cannot be written, the cron call answers a clean JSON error. The batch stays
SENDING as one unit (no partial write), its leases expire (simulated with SQL) and the next run
turns it UNKNOWN without resending; everything else is sent once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from typing import Any

import httpx

from executor.sandbox import SandboxHandle
from tests.chaos.harness import (
    ADMIN,
    CRON,
    CRON_PATH,
    Apps,
    ChaosDb,
    conclude,
    dead_port,
    sandbox_log,
    wait_for,
)
from tests.conftest import TEST_API_KEY, TEST_CRON_SECRET
from tests.pipeline_helpers import PHONES, action

SECRETS = (TEST_CRON_SECRET, TEST_API_KEY)


def assert_clean_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "message"} and body["error"] == code, body
    text = response.text
    for leak in ("Traceback", 'File "', "SELECT", "UPDATE", "psycopg", "sqlalchemy", *SECRETS):
        assert leak not in text, (leak, text)


def assert_quiet_logs(events: list[dict[str, Any]], text: str) -> None:
    """No stack trace and no secret in the app's log."""
    assert not [e for e in events if "exception" in e or "exc_info" in e], events
    for leak in ("Traceback", *SECRETS):
        assert leak not in text


def test_terminate_backends_mid_run(chaos_db: ChaosDb, sandbox: SandboxHandle, apps: Apps) -> None:
    started = time.monotonic()
    sandbox.configure(latency_ms=800)
    app = apps.start(chaos_db.url, sandbox.url, CHATEA_CONCURRENCY=5)
    app.enqueue([action(f"D{i:02d}", PHONES[i]) for i in range(10)])
    enqueued = chaos_db.ids()

    answer: list[httpx.Response] = []
    call = threading.Thread(target=lambda: answer.append(app.cron()))
    call.start()
    # Claims committed, HTTP calls in flight: cut every connection of this database.
    assert wait_for(lambda: chaos_db.count("SENDING") == 5, timeout=20)
    time.sleep(0.1)
    killed = chaos_db.scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_backend_pid()",
        (chaos_db.name,),
    )
    assert killed >= 2  # at least the run lock's connection and the pipeline's
    call.join(timeout=60)
    assert answer, "the cron call did not return"
    if answer[0].status_code == 200:  # the run could still record its own failure
        body = answer[0].json()
        assert body["status"] == "FAILED" and "database_error" in body["errorSummary"], body
    else:
        assert_clean_error(answer[0], 503, "database_unavailable")

    # No partial write: every send of the batch either still holds its lease (its finalize died
    # with the connection) or was finalized whole with its real outcome (a later finalize may
    # get a fresh connection); none went back to PLANNED; the audit trail agrees.
    assert wait_for(lambda: sandbox.stats()["accepted"] == 5, timeout=5)
    stranded = chaos_db.count("SENDING")
    assert stranded + chaos_db.count("SENT") == 5 and chaos_db.count("PLANNED") == 5
    assert chaos_db.events_consistent() == []

    # The same process recovers on fresh connections: while the leases live, only the rest.
    sandbox.configure(latency_ms=0)
    rest = app.cron().json()
    assert rest["sent"] == 5 and rest["unknown"] == 0, rest
    assert chaos_db.expire_leases() == stranded
    recovered = app.cron().json()
    assert recovered["unknown"] == stranded and recovered["sent"] == 0, recovered
    log = sandbox_log(sandbox)
    assert set(Counter(r["reference"] for r in log).values()) == {1}
    conclude(
        "db_terminate_backends",
        chaos_db,
        log,
        enqueued=enqueued,
        title="pg_terminate_backend of every connection of the run mid-send",
        faults=f"{killed} backends terminated while 5 sends were in flight",
        faults_injected=int(killed),
        started=started,
        waiting=(),
        max_unknown=5,
        notes=(
            f"the cron call answered {answer[0].status_code}; {stranded} of the 5 in-flight "
            "sends lost their finalize with the connection (UNKNOWN), the rest were recorded"
        ),
    )
    assert_quiet_logs(app.log_events(), app.output())


def test_database_unreachable_at_request_time(
    chaos_db: ChaosDb, sandbox: SandboxHandle, apps: Apps, stack: contextlib.ExitStack
) -> None:
    started = time.monotonic()
    dead_url = f"postgresql://postgres@127.0.0.1:{stack.enter_context(dead_port())}/executor"
    down = apps.start(dead_url, sandbox.url, name="db-down")
    up = apps.start(chaos_db.url, sandbox.url, name="db-up", wait=False)
    client = down.client
    assert_clean_error(client.get(CRON_PATH, headers=CRON), 503, "database_unavailable")
    assert_clean_error(client.post(CRON_PATH, headers=CRON), 503, "database_unavailable")
    assert_clean_error(client.get("/api/health"), 503, "database_unavailable")
    for path in ("/api/admin/executor-status", "/api/admin/rollout-config"):
        assert_clean_error(client.get(path, headers=ADMIN), 503, "database_unavailable")
    intake = client.post("/api/actions", headers=ADMIN, json={"actions": [action("X1")]})
    assert_clean_error(intake, 503, "database_unavailable")
    # Auth still comes first: without the secret the answer is 401, not a database error.
    assert client.get(CRON_PATH).status_code == 401

    # Nothing was written anywhere; a healthy process then does the work once.
    up.wait_ready()
    up.enqueue([action(f"H{i}", PHONES[i]) for i in range(6)])
    enqueued = chaos_db.ids()
    assert_clean_error(client.get(CRON_PATH, headers=CRON), 503, "database_unavailable")
    assert chaos_db.runs() == 0 and chaos_db.count("PLANNED") == 6
    done = up.cron().json()
    assert done["sent"] == 6 and done["status"] == "SUCCESS", done
    assert_quiet_logs(down.log_events(), down.output())
    log = sandbox_log(sandbox)
    conclude(
        "db_unreachable",
        chaos_db,
        log,
        enqueued=enqueued,
        title="Postgres unreachable at request time (dead port), then a healthy process",
        faults="8 requests against an unreachable database",
        faults_injected=8,
        started=started,
        waiting=(),
        max_unknown=0,
        notes="every route answered 503 database_unavailable JSON, no stack trace; 0 writes",
    )
