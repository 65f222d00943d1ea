"""Operator metrics, computed from the database with the database clock (DESIGN §7).

Nothing here reads process memory: every figure is an exact count over Postgres rows, so two
serverless instances (or the CLI and the dashboard) always agree. Each statement is bounded by an
indexed column so its cost follows the size of its result, not of the history:

- ``executor_runs.started_at``            (24 h totals, business days, recent runs)
- ``actions (send_day, phone_hash)`` WHERE quota (today's sends and phones, index-only)
- ``actions.executed_at`` WHERE quota     (rate limiter: the rolling minute)
- ``actions.executed_at`` WHERE UNKNOWN   (unknown backlog, index-only)
- ``actions.next_attempt_at`` WHERE PLANNED (queue)
- ``actions.updated_at`` WHERE FAILED/UNKNOWN, with error_code (top failure reasons, index-only)
- ``action_events.created_at``            (hourly series)
- ``actions.guide`` / ``action_events (action_id, id)`` (audit trail of one guía)

All statements of one report run in one read-only REPEATABLE READ transaction: ``now()`` is the
same instant for every figure and they all see one snapshot.

Timestamps leave as ISO 8601 UTC strings (``2024-05-01T04:30:00Z``). Phones and ``phone_hash``
never leave this module: the audit trail says ``hasPhone`` instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from executor.config import Settings, normalize_scope_item
from executor.logs import redact_text, redact_value

# ---- named SQL ----------------------------------------------------------------------------

# The database clock and the business-day boundaries (BUSINESS_TIMEZONE) as timestamptz, so the
# per-day queries below are plain ranges on started_at / executed_at that an index can serve.
CLOCK_SQL = text(
    """
    SELECT now() AS now,
           now() - interval '24 hours' AS period_start,
           c.today AS today,
           c.today - 1 AS yesterday,
           (c.today - 1)::timestamp AT TIME ZONE CAST(:tz AS text) AS yesterday_start,
           c.today::timestamp AT TIME ZONE CAST(:tz AS text) AS today_start,
           (c.today + 1)::timestamp AT TIME ZONE CAST(:tz AS text) AS tomorrow_start
    FROM (SELECT (now() AT TIME ZONE CAST(:tz AS text))::date AS today) AS c
    """
)

# Counter sums shared by the 24 h window and the business days. Dry runs only count in `runs`
# and `would_send`: they sent nothing and changed nothing.
_RUN_TOTALS = """
    count(*) AS runs,
    coalesce(sum(sent) FILTER (WHERE NOT dry_run), 0) AS sent,
    coalesce(sum(failed_4xx) FILTER (WHERE NOT dry_run), 0) AS failed_4xx,
    coalesce(sum(failed_5xx) FILTER (WHERE NOT dry_run), 0) AS failed_5xx,
    coalesce(sum(failed_precheck) FILTER (WHERE NOT dry_run), 0) AS failed_precheck,
    coalesce(sum(unknown) FILTER (WHERE NOT dry_run), 0) AS unknown,
    coalesce(sum(skipped_duplicate) FILTER (WHERE NOT dry_run), 0) AS skipped_duplicate,
    coalesce(sum(skipped_rate_limit) FILTER (WHERE NOT dry_run), 0) AS skipped_rate_limit,
    coalesce(sum(skipped_pilot) FILTER (WHERE NOT dry_run), 0) AS skipped_pilot,
    coalesce(sum(skipped_opt_out) FILTER (WHERE NOT dry_run), 0) AS skipped_opt_out,
    coalesce(sum(would_send) FILTER (WHERE dry_run), 0) AS would_send,
    round(avg(duration_ms)) AS avg_duration_ms
"""

# Runs started in the last 24 h (ix_executor_runs_started_at).
METRICS_24H_SQL = text(
    f"SELECT {_RUN_TOTALS} FROM executor_runs WHERE started_at >= CAST(:start AS timestamptz)"
)

# Runs started within one business day [day_start, day_end) (ix_executor_runs_started_at).
BUSINESS_DAY_SQL = text(
    f"""
    SELECT {_RUN_TOTALS} FROM executor_runs
    WHERE started_at >= CAST(:day_start AS timestamptz)
      AND started_at < CAST(:day_end AS timestamptz)
    """
)

# Quota use (SENDING, SENT, UNKNOWN) today and in the rolling minute. `send_day` is the business
# day the pipeline stamped on the attempt and decides "today" exactly: today's sends and unique
# phones are index-only counts on ix_actions_quota_day (send_day, phone_hash), the rolling
# minute a range of ix_actions_quota_time. (:day_start and :day_end are not needed any more.)
RATE_LIMITER_SQL = text(
    """
    SELECT t.sent_today, t.unique_phones_today,
           (SELECT count(*) FROM actions
            WHERE status IN ('SENDING', 'SENT', 'UNKNOWN')
              AND executed_at > now() - interval '60 seconds') AS sent_this_minute
    FROM (SELECT count(*) AS sent_today, count(DISTINCT phone_hash) AS unique_phones_today
          FROM actions
          WHERE status IN ('SENDING', 'SENT', 'UNKNOWN') AND send_day = CAST(:today AS date)
         ) AS t
    """
)

# The persisted breaker of this device; `open_now` = a run would send nothing right now.
BREAKER_SQL = text(
    """
    SELECT state, consecutive_failures, open_until,
           (state = 'open' AND (open_until IS NULL OR open_until > now())) AS open_now
    FROM circuit_breakers WHERE device_id = :device_id
    """
)

# Planned work (partial index ix_actions_due: PLANNED only, bounded by ACTION_TTL_HOURS).
QUEUE_SQL = text(
    """
    SELECT count(*) AS planned,
           count(*) FILTER (WHERE next_attempt_at <= now()) AS due,
           count(*) FILTER (WHERE attempts > 0) AS retry_scheduled,
           floor(extract(epoch FROM now() - min(created_at)))::bigint
               AS oldest_planned_age_seconds
    FROM actions WHERE status = 'PLANNED'
    """
)

# Actions left UNKNOWN (never auto-resent: they wait for an operator) whose attempt was in the
# last UNKNOWN_WINDOW_DAYS days: an index-only count on ix_actions_unknown.
UNKNOWN_WINDOW_DAYS = 7
UNKNOWN_BACKLOG_SQL = text(
    f"""
    SELECT count(*) AS unknown FROM actions
    WHERE status = 'UNKNOWN'
      AND executed_at >= now() - interval '{UNKNOWN_WINDOW_DAYS} days'
    """
)

# Why actions failed in the last 24 h, most frequent first (index-only on ix_actions_failures).
TOP_FAILURE_REASONS_SQL = text(
    """
    SELECT coalesce(error_code, 'UNSPECIFIED') AS reason, count(*) AS count
    FROM actions
    WHERE updated_at >= now() - interval '24 hours' AND status IN ('FAILED', 'UNKNOWN')
    GROUP BY 1 ORDER BY count(*) DESC, reason LIMIT 5
    """
)

# The last runs, newest first (backward scan of ix_executor_runs_started_at).
RECENT_RUNS_SQL = text(
    """
    SELECT id, status, dry_run, started_at, finished_at, duration_ms, planned, sent, would_send,
           failed_4xx, failed_5xx, failed_precheck, unknown, skipped_duplicate,
           skipped_rate_limit, skipped_pilot, skipped_opt_out, skipped_circuit_open, expired,
           remaining_today, error_summary
    FROM executor_runs ORDER BY started_at DESC LIMIT :limit
    """
)

# Sends and failures per clock hour over the last 24 hourly buckets (the current hour last),
# from the event history (index-only on ix_action_events_outcomes). Empty hours are zero.
HOURLY_SERIES_SQL = text(
    """
    WITH ev AS (
        SELECT date_trunc('hour', created_at) AS hour,
               count(*) FILTER (WHERE status = 'SENT') AS sent,
               count(*) FILTER (WHERE status IN ('FAILED', 'UNKNOWN')) AS failed
        FROM action_events
        WHERE created_at >= date_trunc('hour', now()) - interval '23 hours'
          AND status IN ('SENT', 'FAILED', 'UNKNOWN')
        GROUP BY 1
    )
    SELECT s.hour, coalesce(ev.sent, 0) AS sent, coalesce(ev.failed, 0) AS failed
    FROM generate_series(date_trunc('hour', now()) - interval '23 hours',
                         date_trunc('hour', now()), interval '1 hour') AS s(hour)
    LEFT JOIN ev ON ev.hour = s.hour
    ORDER BY s.hour
    """
)

# The actions of one guía (ix_actions_guide). phone_hash is reduced to a boolean here, in SQL.
AUDIT_ACTIONS_SQL = text(
    """
    SELECT id, idempotency_key, guide, trigger, city, carrier, status, attempts,
           next_attempt_at, executed_at, expires_at, created_at, updated_at,
           provider_message_id, error_code, error_reason,
           (phone_hash IS NOT NULL) AS has_phone, variables
    FROM actions WHERE guide = :guide
    ORDER BY created_at, id LIMIT :limit
    """
)

# Their events in the order they happened (ix_action_events_action: action_id, id).
AUDIT_EVENTS_SQL = text(
    """
    SELECT action_id, status, attempt, error_code, detail, provider_message_id, run_id,
           created_at
    FROM action_events WHERE action_id = ANY(CAST(:ids AS uuid[]))
    ORDER BY action_id, id
    """
)

RECENT_RUNS_LIMIT = 10
AUDIT_ACTIONS_LIMIT = 200

# Counters of a RunResult, column -> JSON key (DESIGN §7).
RUN_COUNTER_KEYS: tuple[tuple[str, str], ...] = (
    ("planned", "planned"),
    ("sent", "sent"),
    ("would_send", "wouldSend"),
    ("failed_4xx", "failed4xx"),
    ("failed_5xx", "failed5xx"),
    ("failed_precheck", "failedPrecheck"),
    ("unknown", "unknown"),
    ("skipped_duplicate", "skippedDuplicate"),
    ("skipped_rate_limit", "skippedRateLimit"),
    ("skipped_pilot", "skippedPilot"),
    ("skipped_opt_out", "skippedOptOut"),
    ("skipped_circuit_open", "skippedCircuitOpen"),
    ("expired", "expired"),
    ("remaining_today", "remainingToday"),
)

# Keys of metrics24h (besides period and rates) and of a business day.
_METRICS_24H_KEYS: tuple[tuple[str, str], ...] = (
    ("runs", "runs"),
    ("sent", "sent"),
    ("failed_4xx", "failed4xx"),
    ("failed_5xx", "failed5xx"),
    ("failed_precheck", "failedPrecheck"),
    ("unknown", "unknown"),
    ("skipped_duplicate", "skippedDuplicate"),
    ("skipped_rate_limit", "skippedRateLimit"),
    ("skipped_pilot", "skippedPilot"),
    ("skipped_opt_out", "skippedOptOut"),
    ("would_send", "wouldSend"),
)
DAY_KEYS: tuple[tuple[str, str], ...] = (
    ("runs", "runs"),
    ("sent", "sent"),
    ("failed_4xx", "failed4xx"),
    ("failed_5xx", "failed5xx"),
    ("failed_precheck", "failedPrecheck"),
    ("unknown", "unknown"),
    ("skipped_duplicate", "skippedDuplicate"),
    ("skipped_rate_limit", "skippedRateLimit"),
)

SEND_REASONS = ("CONFIG_INVALID", "EXECUTOR_DISABLED", "CIRCUIT_OPEN", "DAILY_LIMIT_REACHED", "OK")


# ---- helpers --------------------------------------------------------------------------------


def iso_utc(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``; None stays None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def success_rate(sent: int, failed_4xx: int, failed_5xx: int, unknown: int) -> float | None:
    """sent / (sent + failed4xx + failed5xx + unknown); None when nothing was attempted."""
    denominator = sent + failed_4xx + failed_5xx + unknown
    if denominator == 0:
        return None
    return round(sent / denominator, 4)


def _int(value: Any) -> int:
    if value is None:
        return 0
    return int(value)


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, Decimal | float):
        return round(value)
    return int(value)


def _rate_of(totals: Mapping[Any, Any]) -> float | None:
    return success_rate(
        _int(totals["sent"]),
        _int(totals["failed_4xx"]),
        _int(totals["failed_5xx"]),
        _int(totals["unknown"]),
    )


@dataclass(frozen=True)
class Clock:
    """The database's now() and the business-day boundaries of BUSINESS_TIMEZONE."""

    now: datetime
    period_start: datetime
    today: date
    yesterday: date
    yesterday_start: datetime
    today_start: datetime
    tomorrow_start: datetime


async def _read_clock(conn: AsyncConnection, settings: Settings) -> Clock:
    row = (await conn.execute(CLOCK_SQL, {"tz": settings.business_timezone})).mappings().one()
    return Clock(**dict(row))


async def _begin_snapshot(engine: AsyncEngine) -> AsyncConnection:
    conn = await engine.connect()
    await conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return conn


# ---- pieces of the report -------------------------------------------------------------------


async def _metrics_24h(conn: AsyncConnection, clock: Clock) -> dict[str, Any]:
    row = (await conn.execute(METRICS_24H_SQL, {"start": clock.period_start})).mappings().one()
    out: dict[str, Any] = {
        "periodStart": iso_utc(clock.period_start),
        "periodEnd": iso_utc(clock.now),
    }
    for column, key in _METRICS_24H_KEYS:
        out[key] = _int(row[column])
    out["successRate"] = _rate_of(row)
    out["avgDurationMs"] = _opt_int(row["avg_duration_ms"])
    return out


async def _business_day(
    conn: AsyncConnection, day: date, start: datetime, end: datetime
) -> dict[str, Any]:
    row = (
        (await conn.execute(BUSINESS_DAY_SQL, {"day_start": start, "day_end": end}))
        .mappings()
        .one()
    )
    out: dict[str, Any] = {"date": day.isoformat()}
    for column, key in DAY_KEYS:
        out[key] = _int(row[column])
    out["successRate"] = _rate_of(row)
    return out


def day_delta(today: Mapping[str, Any], yesterday: Mapping[str, Any]) -> dict[str, Any]:
    """today - yesterday for every numeric key; successRate delta is None if either is None."""
    out: dict[str, Any] = {key: today[key] - yesterday[key] for _, key in DAY_KEYS}
    t_rate, y_rate = today["successRate"], yesterday["successRate"]
    out["successRate"] = None if t_rate is None or y_rate is None else round(t_rate - y_rate, 4)
    return out


async def _quota_use(conn: AsyncConnection, clock: Clock) -> dict[str, int]:
    row = (
        (
            await conn.execute(
                RATE_LIMITER_SQL,
                {
                    "today": clock.today,
                    "day_start": clock.today_start,
                    "day_end": clock.tomorrow_start,
                },
            )
        )
        .mappings()
        .one()
    )
    return {
        "sent_today": _int(row["sent_today"]),
        "sent_this_minute": _int(row["sent_this_minute"]),
        "unique_phones_today": _int(row["unique_phones_today"]),
    }


def _rate_limiter(settings: Settings, used: Mapping[str, int]) -> dict[str, int]:
    return {
        "sentToday": used["sent_today"],
        "remainingToday": max(0, settings.daily_send_limit - used["sent_today"]),
        "sentThisMinute": used["sent_this_minute"],
        "remainingThisMinute": max(0, settings.rate_limit_per_minute - used["sent_this_minute"]),
        "uniquePhonesToday": used["unique_phones_today"],
    }


async def _breaker(conn: AsyncConnection, settings: Settings) -> tuple[dict[str, Any], bool]:
    row = (await conn.execute(BREAKER_SQL, {"device_id": settings.device_id})).mappings().first()
    if row is None:
        return {"state": "closed", "consecutiveFailures": 0, "openUntil": None}, False
    return (
        {
            "state": row["state"],
            "consecutiveFailures": _int(row["consecutive_failures"]),
            "openUntil": iso_utc(row["open_until"]),
        },
        bool(row["open_now"]),
    )


async def _queue(conn: AsyncConnection) -> dict[str, Any]:
    row = (await conn.execute(QUEUE_SQL)).mappings().one()
    unknown = (await conn.execute(UNKNOWN_BACKLOG_SQL)).scalar_one()
    return {
        "planned": _int(row["planned"]),
        "due": _int(row["due"]),
        "retryScheduled": _int(row["retry_scheduled"]),
        "unknown": _int(unknown),
        "oldestPlannedAgeSeconds": _opt_int(row["oldest_planned_age_seconds"]),
    }


async def _top_failure_reasons(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = (await conn.execute(TOP_FAILURE_REASONS_SQL)).mappings().all()
    return [{"reason": row["reason"], "count": _int(row["count"])} for row in rows]


def _run_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "runId": str(row["id"]),
        "status": row["status"],
        "dryRun": bool(row["dry_run"]),
        "startedAt": iso_utc(row["started_at"]),
        "finishedAt": iso_utc(row["finished_at"]),
        "durationMs": _opt_int(row["duration_ms"]),
    }
    for column, key in RUN_COUNTER_KEYS:
        out[key] = _int(row[column])
    summary = row["error_summary"]
    out["errorSummary"] = redact_text(summary) if summary is not None else None
    return out


async def _recent_runs(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = (await conn.execute(RECENT_RUNS_SQL, {"limit": RECENT_RUNS_LIMIT})).mappings().all()
    return [_run_json(row) for row in rows]


# ---- public API -----------------------------------------------------------------------------


async def executor_status(engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
    """The body of ``GET /api/admin/executor-status`` (DESIGN §7), from one DB snapshot."""
    conn = await _begin_snapshot(engine)
    try:
        async with conn.begin():
            clock = await _read_clock(conn, settings)
            metrics = await _metrics_24h(conn, clock)
            used = await _quota_use(conn, clock)
            breaker, _ = await _breaker(conn, settings)
            queue = await _queue(conn)
            today = await _business_day(conn, clock.today, clock.today_start, clock.tomorrow_start)
            yesterday = await _business_day(
                conn, clock.yesterday, clock.yesterday_start, clock.today_start
            )
            reasons = await _top_failure_reasons(conn)
            runs = await _recent_runs(conn)
    finally:
        await conn.close()
    last = runs[0] if runs else None
    return {
        "status": {
            "lastRunAt": last["startedAt"] if last else None,
            "lastRunId": last["runId"] if last else None,
            "lastRunStatus": last["status"] if last else None,
        },
        "config": settings.public_config(),
        "metrics24h": metrics,
        "stats": {
            "rateLimiter": _rate_limiter(settings, used),
            "circuitBreaker": breaker,
            "queue": queue,
        },
        "today": today,
        "yesterday": yesterday,
        "delta": day_delta(today, yesterday),
        "topFailureReasons": reasons,
        "recentRuns": runs,
    }


async def hourly_series(engine: AsyncEngine) -> list[dict[str, Any]]:
    """24 hourly buckets ``{hour, sent, failed}``, oldest first, the current hour last."""
    async with engine.connect() as conn:
        rows = (await conn.execute(HOURLY_SERIES_SQL)).mappings().all()
    return [
        {"hour": iso_utc(row["hour"]), "sent": _int(row["sent"]), "failed": _int(row["failed"])}
        for row in rows
    ]


def _pilot_problems(name: str, raw: str | None) -> list[str]:
    if raw is None:
        return []
    items = [normalize_scope_item(part) for part in raw.split(",")]
    if not any(items):
        return [f"{name} is set but names nothing after normalization: no pilot scope applies"]
    if not all(items):
        return [f"{name} has an empty entry (check stray commas)"]
    return []


def rollout_validation_errors(settings: Settings) -> list[str]:
    """settings.rollout_problems() plus pilot lists that normalize to nothing."""
    return [
        *settings.rollout_problems(),
        *_pilot_problems("PILOT_CITY", settings.pilot_city),
        *_pilot_problems("PILOT_CARRIER", settings.pilot_carrier),
    ]


async def rollout_status(engine: AsyncEngine, settings: Settings) -> dict[str, Any]:
    """The body of ``GET /api/admin/rollout-config``: config, validation, sendStatus, env."""
    errors = rollout_validation_errors(settings)
    if errors:
        reason = "CONFIG_INVALID"
    elif not settings.executor_enabled:
        reason = "EXECUTOR_DISABLED"
    else:
        conn = await _begin_snapshot(engine)
        try:
            async with conn.begin():
                clock = await _read_clock(conn, settings)
                _, open_now = await _breaker(conn, settings)
                used = await _quota_use(conn, clock)
        finally:
            await conn.close()
        if open_now:
            reason = "CIRCUIT_OPEN"
        elif used["sent_today"] >= settings.daily_send_limit:
            reason = "DAILY_LIMIT_REACHED"
        else:
            reason = "OK"
    return {
        "config": settings.public_config(),
        "validation": {"valid": not errors, "errors": errors},
        "sendStatus": {"allowed": reason == "OK", "reason": reason},
        "env": settings.env_presence(),
    }


def _event_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    detail = row["detail"]
    run_id = row["run_id"]
    return {
        "status": row["status"],
        "attempt": _int(row["attempt"]),
        "errorCode": row["error_code"],
        "detail": redact_text(detail) if detail is not None else None,
        "providerMessageId": row["provider_message_id"],
        "runId": str(run_id) if run_id is not None else None,
        "createdAt": iso_utc(row["created_at"]),
    }


def _audit_action_json(row: Mapping[Any, Any], events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    reason = row["error_reason"]
    return {
        "id": str(row["id"]),
        "idempotencyKey": row["idempotency_key"],
        "guide": row["guide"],
        "trigger": row["trigger"],
        "city": row["city"],
        "carrier": row["carrier"],
        "status": row["status"],
        "attempts": _int(row["attempts"]),
        "nextAttemptAt": iso_utc(row["next_attempt_at"]),
        "executedAt": iso_utc(row["executed_at"]),
        "expiresAt": iso_utc(row["expires_at"]),
        "createdAt": iso_utc(row["created_at"]),
        "updatedAt": iso_utc(row["updated_at"]),
        "providerMessageId": row["provider_message_id"],
        "errorCode": row["error_code"],
        "errorReason": redact_text(reason) if reason is not None else None,
        "hasPhone": bool(row["has_phone"]),
        "variables": redact_value(row["variables"] or {}),
        "events": list(events),
    }


async def audit_trail(engine: AsyncEngine, guide: str) -> dict[str, Any]:
    """The body of ``GET /api/admin/actions?guide=G``: actions of a guía with their events."""
    conn = await _begin_snapshot(engine)
    try:
        async with conn.begin():
            actions = (
                (
                    await conn.execute(
                        AUDIT_ACTIONS_SQL, {"guide": guide, "limit": AUDIT_ACTIONS_LIMIT}
                    )
                )
                .mappings()
                .all()
            )
            ids = [row["id"] for row in actions]
            events: dict[uuid.UUID, list[dict[str, Any]]] = {action_id: [] for action_id in ids}
            if ids:
                rows = (await conn.execute(AUDIT_EVENTS_SQL, {"ids": ids})).mappings().all()
                for row in rows:
                    events[row["action_id"]].append(_event_json(row))
    finally:
        await conn.close()
    return {
        "guide": guide,
        "actions": [_audit_action_json(row, events[row["id"]]) for row in actions],
    }


# Operator labels of the metrics24h and today/yesterday figures, shared by the dashboard and
# `executor status` so both say the same thing.
METRIC_LABELS: tuple[tuple[str, str], ...] = (
    ("runs", "Runs"),
    ("sent", "Sent"),
    ("failed4xx", "Failed 4xx"),
    ("failed5xx", "Failed 5xx"),
    ("failedPrecheck", "Failed pre-check"),
    ("unknown", "Unknown outcome"),
    ("skippedDuplicate", "Skipped: duplicate"),
    ("skippedRateLimit", "Skipped: rate limit"),
    ("skippedPilot", "Skipped: pilot scope"),
    ("skippedOptOut", "Skipped: opt-out"),
    ("wouldSend", "Would send (dry runs)"),
    ("avgDurationMs", "Avg run duration (ms)"),
)
DAY_LABELS: tuple[tuple[str, str], ...] = (
    ("runs", "Runs"),
    ("sent", "Sent"),
    ("failed4xx", "Failed 4xx"),
    ("failed5xx", "Failed 5xx"),
    ("failedPrecheck", "Failed pre-check"),
    ("unknown", "Unknown"),
    ("skippedDuplicate", "Skipped: duplicate"),
    ("skippedRateLimit", "Skipped: rate limit"),
)
