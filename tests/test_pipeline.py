"""The run pipeline on real Postgres (DESIGN §5), one test per rule."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.db import create_async_db_engine
from executor.errors import RunLockBusy
from executor.run import RETRY_BACKOFF_SECONDS, RunResult, run_executor
from tests.pipeline_helpers import (
    PHONES,
    FakeProvider,
    action,
    age_quota,
    enqueue,
    make_all_due,
    run_settings,
    status_counts,
)

COUNTER_KEYS = (
    "sent",
    "failed4xx",
    "failed5xx",
    "failedPrecheck",
    "skippedDuplicate",
    "skippedRateLimit",
    "skippedPilot",
    "skippedOptOut",
    "skippedCircuitOpen",
)


def assert_adds_up(result: RunResult, *, unknown_from_sends: int | None = None) -> None:
    body = result.to_json()
    unknown = body["unknown"] if unknown_from_sends is None else unknown_from_sends
    handled = sum(body[k] for k in COUNTER_KEYS) + unknown + body["wouldSend"]
    assert handled == body["planned"], body


async def run(engine: AsyncEngine, settings: Any, provider: FakeProvider, **kw: Any) -> RunResult:
    return await run_executor(engine, settings, chatea_transport=provider.transport, **kw)


async def test_sends_due_actions_and_records_everything(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db)
    provider = FakeProvider()
    await enqueue(engine, settings, [action(f"G{i}", PHONES[i]) for i in range(3)])
    result = await run(engine, settings, provider)
    assert result.status == "SUCCESS"
    assert result.counters.sent == 3 and result.counters.planned == 3
    assert result.counters.remaining_today == 97
    assert_adds_up(result)
    assert sorted(provider.per_action().values()) == [1, 1, 1]
    # The request carries the action id as reference and Idempotency-Key.
    for request in provider.requests:
        assert request["reference"] == request["_idempotency_key"]
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT status, provider_message_id, attempts, lease_until FROM actions")
            )
        ).fetchall()
        assert {(r.status, r.provider_message_id, r.attempts, r.lease_until) for r in rows} == {
            ("SENT", "wamid.test", 1, None)
        }
        events = (
            (await conn.execute(text("SELECT status FROM action_events ORDER BY action_id, id")))
            .scalars()
            .all()
        )
        assert events == ["SENDING", "SENT"] * 3
        run_row = (await conn.execute(text("SELECT status, sent, config FROM executor_runs"))).one()
    assert run_row.status == "SUCCESS" and run_row.sent == 3
    assert "cron" not in str(run_row.config).lower()


async def test_second_run_is_noop(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db)
    provider = FakeProvider()
    await enqueue(engine, settings, [action("G1")])
    await run(engine, settings, provider)
    again = await run(engine, settings, provider)
    assert again.status == "NOOP" and again.counters.planned == 0
    assert len(provider.requests) == 1


async def test_permanent_4xx_fails_without_retry(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db)
    provider = FakeProvider(lambda _: httpx.Response(400, json={"error": "bad recipient"}))
    await enqueue(engine, settings, [action("G1")])
    result = await run(engine, settings, provider)
    assert result.counters.failed_4xx == 1 and result.status == "FAILED"
    await make_all_due(engine)
    assert (await status_counts(engine)) == {"FAILED": 1}
    await run(engine, settings, provider)
    assert len(provider.requests) == 1


async def test_transient_retries_follow_schedule_then_fail(
    engine: AsyncEngine, clean_db: str
) -> None:
    settings = run_settings(clean_db, max_retries=3)
    provider = FakeProvider(lambda _: httpx.Response(503, json={"error": "busy"}))
    await enqueue(engine, settings, [action("G1")])
    for attempt in range(1, 4):
        result = await run(engine, settings, provider)
        assert result.counters.failed_5xx == 1
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT status, attempts,"
                        " extract(epoch FROM next_attempt_at - updated_at) AS delay FROM actions"
                    )
                )
            ).one()
        expected = RETRY_BACKOFF_SECONDS[attempt - 1]
        assert row.status == "PLANNED" and row.attempts == attempt
        assert expected * 0.89 <= float(row.delay) <= expected * 1.11
        # Not due yet: a run now sends nothing.
        assert (await run(engine, settings, provider)).counters.planned == 0
        await make_all_due(engine)
    final = await run(engine, settings, provider)
    assert final.counters.failed_5xx == 1
    assert (await status_counts(engine)) == {"FAILED": 1}
    assert len(provider.requests) == 4  # first attempt + MAX_RETRIES retries


async def test_retry_after_is_honoured(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db)
    provider = FakeProvider(lambda _: httpx.Response(429, headers={"Retry-After": "1200"}))
    await enqueue(engine, settings, [action("G1")])
    await run(engine, settings, provider)
    async with engine.connect() as conn:
        delay = (
            await conn.execute(
                text("SELECT extract(epoch FROM next_attempt_at - updated_at) FROM actions")
            )
        ).scalar_one()
    assert 1199 <= float(delay) <= 1201


async def test_5xx_becomes_unknown_when_retry_5xx_off(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db, chatea_retry_5xx=False)
    provider = FakeProvider(lambda _: httpx.Response(502))
    await enqueue(engine, settings, [action("G1")])
    result = await run(engine, settings, provider)
    assert result.counters.unknown == 1
    await make_all_due(engine)
    await run(engine, settings, provider)
    assert (await status_counts(engine)) == {"UNKNOWN": 1}
    assert len(provider.requests) == 1


async def test_read_timeout_is_unknown_and_never_resent(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db)
    provider = FakeProvider(lambda _: httpx.ReadTimeout("timed out"))
    await enqueue(engine, settings, [action("G1"), action("G2", PHONES[1])])
    result = await run(engine, settings, provider)
    assert result.counters.unknown == 2 and result.status == "FAILED"
    await make_all_due(engine)
    await run(engine, settings, provider)
    assert (await status_counts(engine)) == {"UNKNOWN": 2}
    assert len(provider.requests) == 2


async def test_duplicate_guide_trigger_same_day_is_skipped(
    engine: AsyncEngine, clean_db: str
) -> None:
    settings = run_settings(clean_db)
    provider = FakeProvider()
    # Two upstream keys for the same guide and trigger (e.g. planned twice by mistake).
    await enqueue(
        engine,
        settings,
        [action("G1", key="upstream-a"), action("G1", PHONES[1], key="upstream-b")],
    )
    result = await run(engine, settings, provider)
    assert result.counters.sent == 1 and result.counters.skipped_duplicate == 1
    assert_adds_up(result)
    # A third one later the same day is also a duplicate.
    await enqueue(engine, settings, [action("G1", PHONES[2], key="upstream-c")])
    again = await run(engine, settings, provider)
    assert again.counters.skipped_duplicate == 1
    assert len(provider.requests) == 1
    # Another trigger for the same guide is not a duplicate.
    await enqueue(engine, settings, [action("G1", PHONES[3], trigger="no_movement_48h")])
    assert (await run(engine, settings, provider)).counters.sent == 1


async def test_per_phone_daily_limit(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db, rate_limit_per_phone_day=2)
    provider = FakeProvider()
    await enqueue(engine, settings, [action(f"G{i}", "300 555 0177") for i in range(3)])
    result = await run(engine, settings, provider)
    assert result.counters.sent == 2 and result.counters.skipped_rate_limit == 1
    assert (await status_counts(engine)) == {"SENT": 2, "SKIPPED_RATE_LIMIT": 1}
    # Same phone, another format: still the same person.
    await enqueue(engine, settings, [action("G9", "+57 300-555-0177")])
    assert (await run(engine, settings, provider)).counters.skipped_rate_limit == 1
    assert len(provider.requests) == 2


async def test_global_per_minute_limit_is_exact(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db, rate_limit_per_minute=20, chatea_concurrency=3)
    provider = FakeProvider()
    await enqueue(engine, settings, [action(f"G{i}", PHONES[i]) for i in range(25)])
    result = await run(engine, settings, provider)
    assert result.counters.sent == 20
    assert result.counters.skipped_rate_limit == 5
    assert (await status_counts(engine)) == {"SENT": 20, "PLANNED": 5}
    # Over-limit actions are not changed: a run after the minute sends them.
    assert (await run(engine, settings, provider)).counters.sent == 0
    await age_quota(engine, 61)
    assert (await run(engine, settings, provider)).counters.sent == 5


async def test_daily_limit_is_exact(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db, daily_send_limit=7)
    provider = FakeProvider()
    await enqueue(engine, settings, [action(f"G{i}", PHONES[i]) for i in range(10)])
    result = await run(engine, settings, provider)
    assert result.counters.sent == 7 and result.counters.remaining_today == 0
    await age_quota(engine, 3600)  # the minute is free; the business day is not
    assert (await run(engine, settings, provider)).counters.sent == 0
    assert len(provider.requests) == 7


async def test_limits_hold_with_five_concurrent_runners(clean_db: str) -> None:
    settings = run_settings(
        clean_db, rate_limit_per_minute=20, rate_limit_per_phone_day=2, chatea_concurrency=2
    )
    provider = FakeProvider(latency=0.01)
    setup = create_async_db_engine(clean_db)
    # 40 actions over 10 phones (4 each): at most 2 per phone, at most 20 in the minute.
    await enqueue(setup, settings, [action(f"G{i}", PHONES[i % 10]) for i in range(40)])
    engines = [create_async_db_engine(clean_db) for _ in range(5)]
    try:
        await asyncio.gather(
            *(
                run_executor(e, settings, chatea_transport=provider.transport, use_run_lock=False)
                for e in engines
            )
        )
        per_phone = await _sent_per_phone(setup)
    finally:
        for e in engines:
            await e.dispose()
        await setup.dispose()
    assert len(provider.requests) == 20
    assert max(provider.per_action().values()) == 1
    assert max(per_phone.values()) <= 2
    assert sum(per_phone.values()) == 20


async def _sent_per_phone(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT phone_hash, count(*) FROM actions WHERE status='SENT' GROUP BY 1")
        )
        return {k: int(v) for k, v in rows}


async def test_opt_out_is_skipped(engine: AsyncEngine, clean_db: str) -> None:
    from executor.phones import PhoneVault

    settings = run_settings(clean_db)
    provider = FakeProvider()
    await enqueue(engine, settings, [action("G1", "3005550101"), action("G2", PHONES[2])])
    phone_hash = PhoneVault.from_settings(settings).hash("+573005550101")
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO opt_outs (phone_hash) VALUES (:h)"), {"h": phone_hash})
    result = await run(engine, settings, provider)
    assert result.counters.skipped_opt_out == 1 and result.counters.sent == 1
    assert "+573005550101" not in str(provider.requests)


async def test_expired_actions_are_never_sent(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db)
    provider = FakeProvider()
    await enqueue(engine, settings, [action("OLD"), action("NEW", PHONES[1])])
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE actions SET expires_at = now() - interval '1 minute' WHERE guide='OLD'")
        )
    result = await run(engine, settings, provider)
    assert result.counters.expired == 1 and result.counters.sent == 1
    assert [r["template"]["components"][0]["parameters"][0]["text"] for r in provider.requests] == [
        "NEW"
    ]
    async with engine.connect() as conn:
        assert (
            await conn.execute(text("SELECT status FROM actions WHERE guide='OLD'"))
        ).scalar_one() == "EXPIRED"


async def test_expired_lease_becomes_unknown_and_is_not_resent(
    engine: AsyncEngine, clean_db: str
) -> None:
    settings = run_settings(clean_db)
    provider = FakeProvider()
    await enqueue(engine, settings, [action("G1")])
    # A process claimed it and died mid-send.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE actions SET status='SENDING', attempts=1, attempt_id=gen_random_uuid(),"
                " lease_until = now() - interval '1 second', executed_at = now(),"
                " send_day = (now() AT TIME ZONE 'America/Bogota')::date"
            )
        )
    result = await run(engine, settings, provider)
    assert result.counters.unknown == 1
    assert (await status_counts(engine)) == {"UNKNOWN": 1}
    assert provider.requests == []


async def test_live_lease_is_left_alone(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db)
    await enqueue(engine, settings, [action("G1")])
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE actions SET status='SENDING', attempt_id=gen_random_uuid(),"
                " lease_until = now() + interval '30 seconds'"
            )
        )
    result = await run(engine, settings, FakeProvider())
    assert result.counters.unknown == 0 and result.status == "NOOP"
    assert (await status_counts(engine)) == {"SENDING": 1}


@pytest.mark.parametrize(
    ("pilot_city", "pilot_carrier", "expected_sent"),
    [
        ("bogota", None, {"Bogotá", "BOGOTÁ", "bogota"}),
        ("BOGOTÁ, Medellín", None, {"Bogotá", "BOGOTÁ", "bogota", "Medellin"}),
        (None, "servientrega", {"Bogotá", "Medellin", "bogota"}),
        ("Bogota", "ENVÍA", {"BOGOTÁ"}),
        (None, None, {"Bogotá", "BOGOTÁ", "bogota", "Medellin", "Bogotá D.C."}),
    ],
)
async def test_pilot_scope_is_case_and_accent_insensitive_and_exact(
    engine: AsyncEngine,
    clean_db: str,
    pilot_city: str | None,
    pilot_carrier: str | None,
    expected_sent: set[str],
) -> None:
    settings = run_settings(clean_db, pilot_city=pilot_city, pilot_carrier=pilot_carrier)
    provider = FakeProvider()
    cities = [
        ("Bogotá", "Servientrega"),
        ("BOGOTÁ", "Envia"),
        ("bogota", "Servientrega"),
        ("Medellin", "Servientrega"),
        ("Bogotá D.C.", "Coordinadora"),
    ]
    await enqueue(
        engine,
        settings,
        [action(f"G{i}", PHONES[i], city=c, carrier=k) for i, (c, k) in enumerate(cities)],
    )
    result = await run(engine, settings, provider)
    sent_cities = {
        r["template"]["components"][0]["parameters"][2]["text"] for r in provider.requests
    }
    assert sent_cities == expected_sent
    assert result.counters.skipped_pilot == len(cities) - len(expected_sent)
    assert (await status_counts(engine))["PLANNED"] == len(cities) - len(expected_sent)


async def _snapshot(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        actions = (await conn.execute(text("SELECT * FROM actions ORDER BY id"))).fetchall()
        events = (await conn.execute(text("SELECT count(*) FROM action_events"))).scalar_one()
        breakers = (await conn.execute(text("SELECT count(*) FROM circuit_breakers"))).scalar_one()
        recipients = (
            await conn.execute(text("SELECT phone_hash, last_used_at FROM recipients ORDER BY 1"))
        ).fetchall()
    return [actions, events, breakers, recipients]


@pytest.mark.parametrize("how", ["kill_switch_off", "dry_run_flag"])
async def test_dry_run_changes_nothing(engine: AsyncEngine, clean_db: str, how: str) -> None:
    settings = run_settings(
        clean_db, executor_enabled=(how == "dry_run_flag"), daily_send_limit=3, pilot_city="Bogotá"
    )
    provider = FakeProvider()
    await enqueue(
        engine,
        settings,
        [action(f"G{i}", PHONES[i]) for i in range(5)]
        + [action("NOPHONE", None), action("PASTO", PHONES[9], city="Pasto")],
    )
    # Also an expired action and a dead lease: a dry run must not touch them either.
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE actions SET expires_at = now() - interval '1 s' WHERE guide = 'G4'")
        )
        await conn.execute(
            text(
                "UPDATE actions SET status='SENDING', attempt_id=gen_random_uuid(),"
                " lease_until = now() - interval '1 s' WHERE guide = 'G3'"
            )
        )
    before = await _snapshot(engine)
    result = await run(engine, settings, provider, dry_run=(how == "dry_run_flag"))
    assert await _snapshot(engine) == before
    assert provider.requests == []
    body = result.to_json()
    assert body["dryRun"] is True and body["sent"] == 0
    assert body["wouldSend"] == 3 and body["failedPrecheck"] == 1
    assert body["skippedPilot"] == 1 and body["expired"] == 0 and body["unknown"] == 0
    assert_adds_up(result)
    async with engine.connect() as conn:
        runs = (await conn.execute(text("SELECT dry_run, would_send FROM executor_runs"))).all()
    assert [(r.dry_run, r.would_send) for r in runs] == [(True, 3)]


async def test_precheck_failures(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db)
    provider = FakeProvider()
    await enqueue(
        engine,
        settings,
        [
            action("NOPHONE", None),
            action("NOVARS", PHONES[1], variables={"numero_de_guia": "NOVARS"}),
            action("NOTEMPLATE", PHONES[2], trigger="birthday_greeting"),
            action("OK", PHONES[3]),
        ],
    )
    result = await run(engine, settings, provider)
    assert result.counters.failed_precheck == 3 and result.counters.sent == 1
    assert result.status == "PARTIAL"
    async with engine.connect() as conn:
        codes: dict[str, str | None] = dict(
            (await conn.execute(text("SELECT guide, error_code FROM actions"))).fetchall()
        )
    assert codes == {
        "NOPHONE": "NO_PHONE",
        "NOVARS": "TEMPLATE_VARIABLES",
        "NOTEMPLATE": "UNKNOWN_TEMPLATE",
        "OK": None,
    }
    assert len(provider.requests) == 1


async def test_breaker_open_sends_nothing_and_keeps_actions_planned(
    engine: AsyncEngine, clean_db: str
) -> None:
    settings = run_settings(clean_db, circuit_breaker_threshold=2)
    failing = FakeProvider(lambda _: httpx.Response(503))
    await enqueue(engine, settings, [action(f"G{i}", PHONES[i]) for i in range(6)])
    first = await run(engine, settings, failing)
    # The breaker opened during the run: the rest stayed PLANNED.
    assert first.counters.failed_5xx >= 2
    assert first.counters.skipped_circuit_open == 6 - first.counters.failed_5xx
    second = await run(engine, settings, FakeProvider())
    assert second.counters.skipped_circuit_open == second.counters.planned > 0
    assert second.counters.skipped_pilot == 0
    assert second.counters.sent == 0
    counts = await status_counts(engine)
    assert counts["PLANNED"] == 6 and "SENDING" not in counts


async def test_run_lock_makes_overlapping_runs_conflict(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db)
    provider = FakeProvider(latency=0.3)
    await enqueue(engine, settings, [action(f"G{i}", PHONES[i]) for i in range(3)])
    engines = [create_async_db_engine(clean_db) for _ in range(4)]
    try:
        outcomes = await asyncio.gather(
            *(run(e, settings, provider) for e in engines), return_exceptions=True
        )
    finally:
        for e in engines:
            await e.dispose()
    results = [o for o in outcomes if isinstance(o, RunResult)]
    busy = [o for o in outcomes if isinstance(o, RunLockBusy)]
    assert len(results) == 1 and len(busy) == 3
    assert "run" in busy[0].message
    assert sorted(provider.per_action().values()) == [1, 1, 1]


async def test_invalid_rollout_config_fails_the_run_and_sends_nothing(
    engine: AsyncEngine, clean_db: str
) -> None:
    settings = run_settings(clean_db, chatea_api_key=None)
    provider = FakeProvider()
    await enqueue(engine, settings, [action("G1")])
    result = await run(engine, settings, provider)
    assert result.status == "FAILED"
    assert result.error_summary is not None and "CHATEA_API_KEY" in result.error_summary
    assert provider.requests == []
    assert (await status_counts(engine)) == {"PLANNED": 1}


async def test_phone_lookup_source(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(
        clean_db, phone_lookup_url="http://upstream.test/phones", phone_lookup_token="t" * 20
    )
    provider = FakeProvider()
    seen: list[str] = []

    def lookup(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        guide = request.url.params["guide"]
        if guide == "MISSING":
            return httpx.Response(404)
        if guide == "BAD":
            return httpx.Response(200, json={"phone": "601 555 0100"})
        return httpx.Response(200, json={"phone": "310 555 0142"})

    await enqueue(engine, settings, [action(g, None) for g in ("FOUND", "MISSING", "BAD")])
    result = await run_executor(
        engine,
        settings,
        chatea_transport=provider.transport,
        lookup_transport=httpx.MockTransport(lookup),
    )
    assert result.counters.sent == 1 and result.counters.failed_precheck == 2
    assert provider.requests[0]["to"] == "+573105550142"
    assert seen and all(h == "Bearer " + "t" * 20 for h in seen)
    async with engine.connect() as conn:
        rows: dict[str, str | None] = dict(
            (await conn.execute(text("SELECT guide, error_code FROM actions"))).fetchall()
        )
        hashed = (
            await conn.execute(text("SELECT phone_hash FROM actions WHERE guide='FOUND'"))
        ).scalar_one()
    assert rows == {"FOUND": None, "MISSING": "NO_PHONE", "BAD": "INVALID_PHONE"}
    assert hashed is not None and len(hashed) == 64


async def test_abandoned_running_row_is_closed(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO executor_runs (id, status, dry_run, started_at)"
                " VALUES (gen_random_uuid(), 'RUNNING', false, now() - interval '1 hour')"
            )
        )
    await run(engine, settings, FakeProvider())
    async with engine.connect() as conn:
        statuses = (
            (await conn.execute(text("SELECT status FROM executor_runs ORDER BY started_at")))
            .scalars()
            .all()
        )
    assert statuses == ["FAILED", "NOOP"]


async def test_business_day_is_bogota_not_utc(engine: AsyncEngine, clean_db: str) -> None:
    # A send at 23:30 Bogotá (04:30 UTC next day) counts for the Bogotá day.
    settings = run_settings(clean_db, rate_limit_per_phone_day=1)
    provider = FakeProvider()
    await enqueue(engine, settings, [action("G1"), action("G2")])
    await run(engine, settings, provider)
    async with engine.connect() as conn:
        day = (
            await conn.execute(text("SELECT send_day FROM actions WHERE status='SENT'"))
        ).scalar_one()
    assert day == datetime.now(UTC).astimezone(settings.timezone).date()
    assert day == (datetime.now(UTC) - timedelta(hours=5)).date()


async def test_unused_half_open_probe_is_handed_back(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db, circuit_breaker_threshold=1, chatea_concurrency=1)
    provider = FakeProvider()
    # Oldest due: a duplicate of an already-sent guide (skipped, no HTTP); then a real send.
    await enqueue(engine, settings, [action("DUP", key="k1")])
    await run(engine, settings, provider)
    await enqueue(engine, settings, [action("DUP", PHONES[1], key="k2")])
    await enqueue(engine, settings, [action("NEXT", PHONES[2])])
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE actions SET next_attempt_at = now() - interval '1 hour'"
                " WHERE idempotency_key = 'k2'"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO circuit_breakers (device_id, state, consecutive_failures, open_until)"
                " VALUES ('device-1', 'open', 1, now() - interval '1 second')"
            )
        )
    result = await run(engine, settings, provider)
    # The probe slot was first used by the duplicate; handed back, the next action probed.
    assert result.counters.skipped_duplicate == 1 and result.counters.sent == 1
    async with engine.connect() as conn:
        state = (await conn.execute(text("SELECT state FROM circuit_breakers"))).scalar_one()
    assert state == "closed"
