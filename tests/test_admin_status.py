"""GET /api/admin/executor-status against a scripted history (DESIGN §7).

The history is written with SQL around the *real* Bogotá midnight of the database clock: runs
30 minutes before it belong to yesterday, runs after it to today (in UTC, 04:30 and 05:30 of the
same date). Every figure is checked field by field.

The helpers here (``script_history``, ``ADMIN``...) are shared with the other admin test files.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app
from executor import metrics
from executor.config import Settings
from executor.db import libpq_url
from executor.metrics import (
    day_delta,
    executor_status,
    hourly_series,
    iso_utc,
    success_rate,
)
from executor.runtime import Runtime
from tests.conftest import TEST_ADMIN_SECRET, TEST_CRON_SECRET, make_settings

ADMIN = {"Authorization": f"Bearer {TEST_ADMIN_SECRET}"}
UNAUTHORIZED = {"error": "unauthorized", "message": "missing or invalid credentials"}
TZ = "America/Bogota"

# ---- scripted history -----------------------------------------------------------------------


@dataclass
class Clock:
    now: datetime
    today: date
    today_start: datetime  # Bogotá midnight of today, as UTC


def db_clock(conn: psycopg.Connection[Any]) -> Clock:
    row = conn.execute(
        "SELECT now(), (now() AT TIME ZONE %(tz)s)::date,"
        " ((now() AT TIME ZONE %(tz)s)::date)::timestamp AT TIME ZONE %(tz)s",
        {"tz": TZ},
    ).fetchone()
    assert row is not None
    return Clock(now=row[0], today=row[1], today_start=row[2])


def stable_clock(conn: psycopg.Connection[Any], margin: float = 120.0) -> Clock:
    """The DB clock, at least ``margin`` seconds away from a Bogotá midnight (waits if not)."""
    while True:
        clock = db_clock(conn)
        since = (clock.now - clock.today_start).total_seconds()
        until = 86400 - since
        if since >= margin and until >= margin:
            return clock
        time.sleep((margin - since + 1) if since < margin else (until + 1))


def insert_run(
    conn: psycopg.Connection[Any],
    started_at: datetime,
    *,
    status: str = "SUCCESS",
    dry_run: bool = False,
    duration_ms: int | None = 1000,
    error_summary: str | None = None,
    **counters: int,
) -> str:
    run_id = str(uuid.uuid4())
    columns = ["id", "status", "dry_run", "started_at", "finished_at", "duration_ms"]
    finished = None if duration_ms is None else started_at + timedelta(milliseconds=duration_ms)
    values: list[Any] = [run_id, status, dry_run, started_at, finished, duration_ms]
    for name, value in counters.items():
        columns.append(name)
        values.append(value)
    columns.append("error_summary")
    values.append(error_summary)
    conn.execute(
        f"INSERT INTO executor_runs ({', '.join(columns)})"
        f" VALUES ({', '.join(['%s'] * len(values))})",
        values,
    )
    return run_id


def insert_action(
    conn: psycopg.Connection[Any],
    *,
    guide: str | None = None,
    trigger: str = "no_movement_48h",
    status: str = "PLANNED",
    variables: dict[str, Any] | None = None,
    **fields: Any,
) -> str:
    action_id = str(uuid.uuid4())
    guide = guide or f"G{uuid.uuid4().hex[:10]}"
    row: dict[str, Any] = {
        "id": action_id,
        "idempotency_key": f"{guide}:{trigger}:{action_id}",
        "guide": guide,
        "trigger": trigger,
        "city": "Bogotá",
        "carrier": "Servientrega",
        "city_key": "bogota",
        "carrier_key": "servientrega",
        "status": status,
        "variables": json.dumps(variables or {"numero_de_guia": guide}),
        "expires_at": datetime.now(UTC) + timedelta(hours=24),
    }
    row.update(fields)
    conn.execute(
        f"INSERT INTO actions ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",
        list(row.values()),
    )
    return action_id


def insert_event(
    conn: psycopg.Connection[Any], action_id: str, status: str, created_at: datetime, **fields: Any
) -> None:
    row: dict[str, Any] = {"action_id": action_id, "status": status, "created_at": created_at}
    row.update(fields)
    conn.execute(
        f"INSERT INTO action_events ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})",
        list(row.values()),
    )


@dataclass
class History:
    clock: Clock
    run_ids: dict[str, str] = field(default_factory=dict)
    breaker_open_until: datetime | None = None


def script_history(db_url: str, *, device_id: str = "sandbox") -> History:
    """Runs yesterday/today around Bogotá midnight, quota actions, queue, failures, breaker."""
    with psycopg.connect(libpq_url(db_url), autocommit=True) as conn:
        clock = stable_clock(conn)
        now, midnight = clock.now, clock.today_start
        since = now - midnight
        room = timedelta(hours=24) - since - timedelta(seconds=60)  # yesterday still in 24 h
        step = min(timedelta(minutes=10), (since - timedelta(seconds=60)) / 4)
        h = History(clock=clock)
        ids = h.run_ids
        # Day before yesterday, more than 24 h ago: only in recentRuns.
        ids["old"] = insert_run(
            conn, midnight - timedelta(hours=25), sent=50, failed_4xx=9, duration_ms=9000
        )
        # Yesterday (Bogotá), inside the last 24 h: e.g. 03:30 and 04:30 UTC.
        ids["y1"] = insert_run(
            conn,
            midnight - min(timedelta(minutes=90), room * 2 / 3),
            status="PARTIAL",
            duration_ms=1000,
            sent=3,
            failed_4xx=1,
            failed_5xx=1,
            unknown=1,
            skipped_duplicate=2,
            planned=8,
        )
        ids["y2"] = insert_run(
            conn,
            midnight - min(timedelta(minutes=30), room / 3),
            status="FAILED",
            duration_ms=3000,
            failed_5xx=2,
            failed_precheck=1,
            skipped_rate_limit=4,
            planned=7,
            error_summary="provider answered 503 for +573001234567",
        )
        # Today (Bogotá): e.g. 05:10, 05:20, 05:30 UTC.
        ids["t1"] = insert_run(
            conn,
            midnight + step,
            duration_ms=2000,
            sent=5,
            skipped_duplicate=1,
            skipped_rate_limit=2,
            skipped_pilot=3,
            skipped_opt_out=1,
            planned=12,
            remaining_today=95,
        )
        # A dry run: counts in runs and wouldSend only.
        ids["t2"] = insert_run(
            conn,
            midnight + 2 * step,
            status="SUCCESS",
            dry_run=True,
            duration_ms=500,
            would_send=7,
            failed_precheck=2,
            skipped_pilot=4,
            skipped_duplicate=5,
            planned=13,
        )
        ids["t3"] = insert_run(
            conn,
            midnight + 3 * step,
            status="PARTIAL",
            duration_ms=1500,
            sent=2,
            failed_4xx=1,
            planned=3,
            remaining_today=93,
        )

        # Quota use: five actions count today, two of them in the last minute, two phones.
        yesterday = clock.today - timedelta(days=1)
        for seconds, status, phone in (
            (600, "SENT", "hash-a"),
            (400, "SENT", "hash-a"),
            (90, "SENT", "hash-b"),
            (5, "SENDING", "hash-b"),
        ):
            insert_action(
                conn,
                status=status,
                phone_hash=phone,
                attempts=1,
                executed_at=now - timedelta(seconds=min(seconds, since.total_seconds() - 1)),
                send_day=clock.today,
            )
        insert_action(
            conn,
            status="UNKNOWN",
            phone_hash="hash-c",
            attempts=1,
            executed_at=now - timedelta(seconds=30),
            send_day=clock.today,
            error_code="READ_TIMEOUT",
            updated_at=now,
        )
        # Yesterday's send: not today's quota.
        insert_action(
            conn,
            status="SENT",
            phone_hash="hash-a",
            attempts=1,
            executed_at=midnight - timedelta(seconds=60),
            send_day=yesterday,
        )
        # Failures in the last 24 h (top reasons) and older ones (ignored).
        for code in (
            "HTTP_400",
            "HTTP_400",
            "NO_PHONE",
            "INVALID_PHONE",
            "TEMPLATE_VARIABLES",
            "UNKNOWN_TEMPLATE",
        ):
            insert_action(conn, status="FAILED", error_code=code, attempts=1, updated_at=now)
        insert_action(
            conn, status="FAILED", error_code="HTTP_400", updated_at=now - timedelta(days=2)
        )
        # UNKNOWN three days ago: still awaiting review (queue.unknown), not a 24 h reason.
        insert_action(
            conn,
            status="UNKNOWN",
            error_code="LEASE_EXPIRED",
            attempts=1,
            executed_at=now - timedelta(days=3),
            send_day=clock.today - timedelta(days=3),
            updated_at=now - timedelta(days=3),
        )
        # Queue: 3 due (one a retry), 1 retry not yet due; the oldest planned is 2 h old.
        insert_action(
            conn, next_attempt_at=now - timedelta(minutes=5), created_at=now - timedelta(hours=2)
        )
        insert_action(conn, next_attempt_at=now - timedelta(minutes=1))
        insert_action(conn, next_attempt_at=now - timedelta(minutes=1), attempts=1)
        insert_action(conn, next_attempt_at=now + timedelta(minutes=5), attempts=2)
        insert_action(conn, status="SKIPPED_DUPLICATE")
        insert_action(conn, status="EXPIRED")
        # The breaker of this device is open for another minute.
        h.breaker_open_until = now + timedelta(seconds=60)
        conn.execute(
            "INSERT INTO circuit_breakers (device_id, state, consecutive_failures, opened_at,"
            " open_until) VALUES (%s, 'open', 5, %s, %s)",
            (device_id, now, h.breaker_open_until),
        )
        return h


# ---- fixtures -------------------------------------------------------------------------------


def admin_client(settings: Settings) -> TestClient:
    return TestClient(create_app(Runtime(settings)))


@pytest.fixture
def client(clean_db: str) -> Iterator[TestClient]:
    with admin_client(make_settings(clean_db)) as c:
        yield c


# ---- unit -----------------------------------------------------------------------------------


def test_success_rate_definition() -> None:
    assert success_rate(0, 0, 0, 0) is None
    assert success_rate(3, 1, 0, 0) == 0.75
    assert success_rate(1, 1, 1, 1) == 0.25
    assert success_rate(0, 2, 0, 0) == 0.0


def test_delta_rate_is_none_when_either_side_is_none() -> None:
    keys = dict.fromkeys(
        (
            "runs",
            "sent",
            "failed4xx",
            "failed5xx",
            "failedPrecheck",
            "unknown",
            "skippedDuplicate",
            "skippedRateLimit",
        ),
        1,
    )
    today = {**keys, "successRate": 0.5}
    yesterday = {**keys, "sent": 0, "successRate": None}
    delta = day_delta(today, yesterday)
    assert delta["successRate"] is None
    assert delta["sent"] == 1 and delta["runs"] == 0


def test_iso_utc() -> None:
    moment = datetime(2024, 5, 1, 4, 30, tzinfo=UTC)
    assert iso_utc(moment) == "2024-05-01T04:30:00Z"
    assert iso_utc(None) is None


# ---- the full status, field by field ----------------------------------------------------------

STATUS_KEYS = {
    "status": {"lastRunAt", "lastRunId", "lastRunStatus"},
    "metrics24h": {
        "periodStart",
        "periodEnd",
        "runs",
        "sent",
        "failed4xx",
        "failed5xx",
        "failedPrecheck",
        "unknown",
        "skippedDuplicate",
        "skippedRateLimit",
        "skippedPilot",
        "skippedOptOut",
        "wouldSend",
        "successRate",
        "avgDurationMs",
    },
    "today": {
        "date",
        "runs",
        "sent",
        "failed4xx",
        "failed5xx",
        "failedPrecheck",
        "unknown",
        "skippedDuplicate",
        "skippedRateLimit",
        "successRate",
    },
}
STATS_KEYS = {
    "rateLimiter": {
        "sentToday",
        "remainingToday",
        "sentThisMinute",
        "remainingThisMinute",
        "uniquePhonesToday",
    },
    "circuitBreaker": {"state", "consecutiveFailures", "openUntil"},
    "queue": {"planned", "due", "retryScheduled", "unknown", "oldestPlannedAgeSeconds"},
}
RUN_KEYS = {
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
    "errorSummary",
}


def parse_iso(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_every_design_key_is_present_on_an_empty_database(client: TestClient) -> None:
    response = client.get("/api/admin/executor-status", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "status",
        "config",
        "metrics24h",
        "stats",
        "today",
        "yesterday",
        "delta",
        "topFailureReasons",
        "recentRuns",
    }
    for key, expected in STATUS_KEYS.items():
        assert set(body[key]) == expected, key
    assert set(body["yesterday"]) == STATUS_KEYS["today"]
    assert set(body["delta"]) == STATUS_KEYS["today"] - {"date"}
    assert set(body["stats"]) == set(STATS_KEYS)
    for key, expected in STATS_KEYS.items():
        assert set(body["stats"][key]) == expected, key
    # Nothing happened yet: zeros, nulls where a ratio or an average has no data.
    assert body["status"] == {"lastRunAt": None, "lastRunId": None, "lastRunStatus": None}
    assert body["metrics24h"]["runs"] == 0
    assert body["metrics24h"]["successRate"] is None
    assert body["metrics24h"]["avgDurationMs"] is None
    assert body["today"]["successRate"] is None
    assert body["delta"]["successRate"] is None
    assert body["stats"]["circuitBreaker"] == {
        "state": "closed",
        "consecutiveFailures": 0,
        "openUntil": None,
    }
    assert body["stats"]["queue"]["oldestPlannedAgeSeconds"] is None
    assert body["stats"]["rateLimiter"] == {
        "sentToday": 0,
        "remainingToday": 100,
        "sentThisMinute": 0,
        "remainingThisMinute": 20,
        "uniquePhonesToday": 0,
    }
    assert body["topFailureReasons"] == []
    assert body["recentRuns"] == []
    assert body["config"] == make_settings().public_config()


def test_scripted_history_field_by_field(clean_db: str) -> None:
    history = script_history(clean_db)
    settings = make_settings(clean_db, daily_send_limit=6, rate_limit_per_minute=2)
    with admin_client(settings) as client:
        response = client.get("/api/admin/executor-status", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    clock = history.clock
    ids = history.run_ids

    # Last run = the latest started.
    assert body["status"]["lastRunId"] == ids["t3"]
    assert body["status"]["lastRunStatus"] == "PARTIAL"
    assert body["status"]["lastRunAt"] == body["recentRuns"][0]["startedAt"]
    assert body["config"] == settings.public_config()

    m = body["metrics24h"]
    period_end = parse_iso(m["periodEnd"])
    assert parse_iso(m["periodStart"]) == period_end - timedelta(hours=24)
    assert abs((period_end - clock.now).total_seconds()) < 60
    # y1, y2, t1, t2 (dry), t3; "old" is more than 24 h ago.
    assert m["runs"] == 5
    assert m["sent"] == 10
    assert m["failed4xx"] == 2
    assert m["failed5xx"] == 3
    assert m["failedPrecheck"] == 1  # the dry run's 2 pre-check failures do not count
    assert m["unknown"] == 1
    assert m["skippedDuplicate"] == 3  # not the dry run's 5
    assert m["skippedRateLimit"] == 6
    assert m["skippedPilot"] == 3  # not the dry run's 4
    assert m["skippedOptOut"] == 1
    assert m["wouldSend"] == 7
    assert m["successRate"] == pytest.approx(10 / 16)
    assert m["avgDurationMs"] == 1600

    # Business days split at Bogotá midnight (05:00 UTC), not UTC midnight.
    today, yesterday, delta = body["today"], body["yesterday"], body["delta"]
    assert today["date"] == clock.today.isoformat()
    assert yesterday["date"] == (clock.today - timedelta(days=1)).isoformat()
    assert today == {
        "date": clock.today.isoformat(),
        "runs": 3,
        "sent": 7,
        "failed4xx": 1,
        "failed5xx": 0,
        "failedPrecheck": 0,
        "unknown": 0,
        "skippedDuplicate": 1,
        "skippedRateLimit": 2,
        "successRate": pytest.approx(7 / 8),
    }
    assert yesterday == {
        "date": (clock.today - timedelta(days=1)).isoformat(),
        "runs": 2,
        "sent": 3,
        "failed4xx": 1,
        "failed5xx": 3,
        "failedPrecheck": 1,
        "unknown": 1,
        "skippedDuplicate": 2,
        "skippedRateLimit": 4,
        "successRate": pytest.approx(3 / 8),
    }
    assert delta == {
        "runs": 1,
        "sent": 4,
        "failed4xx": 0,
        "failed5xx": -3,
        "failedPrecheck": -1,
        "unknown": -1,
        "skippedDuplicate": -1,
        "skippedRateLimit": -2,
        "successRate": pytest.approx(0.5),
    }

    # Rate limiter: SENT x3 + SENDING + UNKNOWN today; SENDING and UNKNOWN in the last minute.
    assert body["stats"]["rateLimiter"] == {
        "sentToday": 5,
        "remainingToday": 1,
        "sentThisMinute": 2,
        "remainingThisMinute": 0,
        "uniquePhonesToday": 3,
    }
    breaker = body["stats"]["circuitBreaker"]
    assert breaker["state"] == "open"
    assert breaker["consecutiveFailures"] == 5
    assert history.breaker_open_until is not None
    assert parse_iso(breaker["openUntil"]) == history.breaker_open_until

    queue = body["stats"]["queue"]
    assert queue["planned"] == 4
    assert queue["due"] == 3
    assert queue["retryScheduled"] == 2
    assert queue["unknown"] == 2  # today's READ_TIMEOUT and the 3-day-old LEASE_EXPIRED
    assert 7200 <= queue["oldestPlannedAgeSeconds"] <= 7200 + 60

    assert body["topFailureReasons"] == [
        {"reason": "HTTP_400", "count": 2},
        {"reason": "INVALID_PHONE", "count": 1},
        {"reason": "NO_PHONE", "count": 1},
        {"reason": "READ_TIMEOUT", "count": 1},
        {"reason": "TEMPLATE_VARIABLES", "count": 1},
    ]

    runs = body["recentRuns"]
    assert [r["runId"] for r in runs] == [ids[k] for k in ("t3", "t2", "t1", "y2", "y1", "old")]
    for run in runs:
        assert set(run) == RUN_KEYS
    t2 = runs[1]
    assert t2["dryRun"] is True
    assert t2["wouldSend"] == 7
    assert t2["planned"] == 13
    assert t2["durationMs"] == 500
    assert parse_iso(t2["finishedAt"]) - parse_iso(t2["startedAt"]) == timedelta(milliseconds=500)
    t1 = runs[2]
    assert (t1["sent"], t1["skippedPilot"], t1["skippedOptOut"], t1["remainingToday"]) == (
        5,
        3,
        1,
        95,
    )
    # The run's error summary is shown, phone redacted.
    y2 = runs[3]
    assert y2["status"] == "FAILED"
    assert y2["errorSummary"] is not None and "503" in y2["errorSummary"]
    assert "3001234567" not in response.text
    assert "hash-a" not in response.text


def test_yesterday_and_today_split_at_bogota_midnight(clean_db: str) -> None:
    """A run 30 min before Bogotá midnight is yesterday; 30 min after (if past) is today."""
    with psycopg.connect(libpq_url(clean_db), autocommit=True) as conn:
        clock = stable_clock(conn)
        before = insert_run(conn, clock.today_start - timedelta(seconds=30), sent=1)
        after = insert_run(conn, clock.today_start + timedelta(seconds=30), sent=10)
    # Bogotá is UTC-5 all year: its midnight is 05:00 UTC.
    assert clock.today_start.astimezone(UTC).hour == 5
    with admin_client(make_settings(clean_db)) as client:
        body = client.get("/api/admin/executor-status", headers=ADMIN).json()
    assert body["yesterday"]["sent"] == 1 and body["yesterday"]["runs"] == 1
    assert body["today"]["sent"] == 10 and body["today"]["runs"] == 1
    assert body["delta"]["sent"] == 9
    assert {r["runId"] for r in body["recentRuns"]} == {before, after}


def test_success_rate_null_when_only_skips_and_dry_runs(clean_db: str) -> None:
    with psycopg.connect(libpq_url(clean_db), autocommit=True) as conn:
        clock = stable_clock(conn)
        insert_run(conn, clock.now - timedelta(seconds=60), status="NOOP", skipped_pilot=4)
        insert_run(conn, clock.now - timedelta(seconds=50), dry_run=True, would_send=3)
    with admin_client(make_settings(clean_db)) as client:
        body = client.get("/api/admin/executor-status", headers=ADMIN).json()
    assert body["metrics24h"]["runs"] == 2
    assert body["metrics24h"]["wouldSend"] == 3
    assert body["metrics24h"]["sent"] == 0
    assert body["metrics24h"]["successRate"] is None
    assert body["today"]["successRate"] is None
    assert body["delta"]["successRate"] is None


def test_breaker_of_another_device_is_not_reported(clean_db: str) -> None:
    script_history(clean_db, device_id="another-device")
    with admin_client(make_settings(clean_db)) as client:
        body = client.get("/api/admin/executor-status", headers=ADMIN).json()
    assert body["stats"]["circuitBreaker"] == {
        "state": "closed",
        "consecutiveFailures": 0,
        "openUntil": None,
    }


async def test_hourly_series_counts_events_per_hour(engine: AsyncEngine, clean_db: str) -> None:
    with psycopg.connect(libpq_url(clean_db), autocommit=True) as conn:
        now = db_clock(conn).now
        action = insert_action(conn, status="SENT")
        insert_event(conn, action, "SENDING", now - timedelta(minutes=1))
        insert_event(conn, action, "SENT", now - timedelta(seconds=1))
        insert_event(conn, action, "SENT", now - timedelta(hours=3))
        insert_event(conn, action, "FAILED", now - timedelta(hours=3))
        insert_event(conn, action, "UNKNOWN", now - timedelta(hours=5))
        insert_event(conn, action, "SENT", now - timedelta(hours=30))  # outside
    series = await hourly_series(engine)
    assert len(series) == 24
    hours = [parse_iso(b["hour"]) for b in series]
    assert hours == sorted(hours)
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(hours))
    assert hours[-1] <= now < hours[-1] + timedelta(hours=1) + timedelta(seconds=5)
    assert sum(b["sent"] for b in series) == 2
    assert sum(b["failed"] for b in series) == 2
    by_hour = {parse_iso(b["hour"]): b for b in series}
    three_ago = (now - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    assert by_hour[three_ago]["sent"] == 1 and by_hour[three_ago]["failed"] == 1


async def test_status_uses_the_database_not_process_memory(
    engine: AsyncEngine, clean_db: str, settings: Settings
) -> None:
    before = await executor_status(engine, settings)
    with psycopg.connect(libpq_url(clean_db), autocommit=True) as conn:
        insert_run(conn, db_clock(conn).now - timedelta(seconds=5), sent=4)
    after = await executor_status(engine, settings)
    assert before["metrics24h"]["sent"] == 0
    assert after["metrics24h"]["sent"] == 4


# ---- every named query stays on an index --------------------------------------------------

_QUERIES: dict[str, dict[str, Any]] = {
    "METRICS_24H_SQL": {"start": "__period_start"},
    "BUSINESS_DAY_SQL": {"day_start": "__today_start", "day_end": "__tomorrow_start"},
    "RATE_LIMITER_SQL": {
        "today": "__today",
        "day_start": "__today_start",
        "day_end": "__tomorrow_start",
    },
    "QUEUE_SQL": {},
    "UNKNOWN_BACKLOG_SQL": {},
    "TOP_FAILURE_REASONS_SQL": {},
    "RECENT_RUNS_SQL": {"limit": 10},
    "HOURLY_SERIES_SQL": {},
    "AUDIT_ACTIONS_SQL": {"guide": "G-1", "limit": 200},
}


async def test_queries_use_indexes_on_a_long_history(engine: AsyncEngine, clean_db: str) -> None:
    """A year of old history: no statement may scan a whole history table."""
    with psycopg.connect(libpq_url(clean_db), autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO actions (idempotency_key, guide, trigger, city, carrier, city_key,
                carrier_key, phone_hash, status, attempts, next_attempt_at, created_at,
                updated_at, executed_at, send_day, expires_at, error_code)
            SELECT 'k' || g, 'G-' || g, 'no_movement_48h', 'Bogota', 'X', 'bogota', 'x',
                md5(g::text), (ARRAY['SENT', 'FAILED', 'UNKNOWN', 'EXPIRED'])[1 + g % 4], 1,
                t, t, t, t, t::date, t + interval '1 day', 'HTTP_400'
            FROM generate_series(1, 40000) AS g,
                 LATERAL (SELECT now() - interval '400 days' + g * interval '10 minutes') AS x(t)
            """
        )
        conn.execute(
            "INSERT INTO action_events (action_id, status, attempt, created_at)"
            " SELECT id, status, 1, updated_at FROM actions"
        )
        conn.execute(
            """
            INSERT INTO executor_runs (id, status, dry_run, started_at, duration_ms, sent)
            SELECT gen_random_uuid(), 'SUCCESS', false,
                   now() - interval '400 days' + g * interval '10 minutes', 100, 1
            FROM generate_series(1, 40000) AS g
            """
        )
        for _ in range(3):
            insert_action(conn, next_attempt_at=datetime.now(UTC))
        conn.execute("ANALYZE")
    async with engine.connect() as conn:
        clock = await metrics._read_clock(conn, make_settings())
        values = {
            "__period_start": clock.period_start,
            "__today_start": clock.today_start,
            "__tomorrow_start": clock.tomorrow_start,
            "__today": clock.today,
        }
        for name, params in _QUERIES.items():
            statement = getattr(metrics, name)
            bound = {k: values.get(v, v) if isinstance(v, str) else v for k, v in params.items()}
            plan = "\n".join(
                row[0]
                for row in (await conn.execute(text("EXPLAIN " + statement.text), bound)).all()
            )
            for table in ("actions", "action_events", "executor_runs"):
                assert f"Seq Scan on {table}" not in plan, f"{name}:\n{plan}"


# ---- auth and readiness ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/api/admin/executor-status", "/api/admin/rollout-config", "/api/admin/actions?guide=G1"],
)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-secret-wrong-secret-000"},
        {"Authorization": "Bearer " + TEST_ADMIN_SECRET[:-1]},
        {"Authorization": "Basic " + TEST_ADMIN_SECRET},
        {"Authorization": "Bearer"},
        {"Cookie": "executor_admin=wrong-secret-wrong-secret-000"},
    ],
)
def test_admin_routes_refuse_without_the_secret(
    client: TestClient, path: str, headers: dict[str, str]
) -> None:
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


def test_non_ascii_authorization_is_401(client: TestClient) -> None:
    response = client.get(
        "/api/admin/executor-status", headers={"Authorization": "Bearer ñandú".encode()}
    )
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


def test_cron_secret_is_the_admin_fallback(clean_db: str) -> None:
    settings = make_settings(clean_db, admin_secret=None)
    with admin_client(settings) as client:
        ok = client.get(
            "/api/admin/executor-status", headers={"Authorization": f"Bearer {TEST_CRON_SECRET}"}
        )
        assert ok.status_code == 200
    # With an ADMIN_SECRET set, the cron secret is not an admin credential.
    with admin_client(make_settings(clean_db)) as client:
        refused = client.get(
            "/api/admin/executor-status", headers={"Authorization": f"Bearer {TEST_CRON_SECRET}"}
        )
        assert refused.status_code == 401


def test_short_secret_fails_closed(clean_db: str) -> None:
    settings = make_settings(clean_db, admin_secret="short", cron_secret="short-too")
    with admin_client(settings) as client:
        response = client.get(
            "/api/admin/executor-status", headers={"Authorization": "Bearer short"}
        )
    assert response.status_code == 401


@pytest.mark.parametrize(
    "path",
    ["/api/admin/executor-status", "/api/admin/rollout-config", "/api/admin/actions?guide=G1"],
)
def test_unmigrated_database_is_503_schema_not_ready(empty_db_url: str, path: str) -> None:
    with admin_client(make_settings(empty_db_url)) as client:
        response = client.get(path, headers=ADMIN)
        # Auth still comes first: no credential, no information about the database.
        assert client.get(path).status_code == 401
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "schema_not_ready"
    assert "executor db upgrade" in body["message"]
