"""The persisted circuit breaker, on real Postgres."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.breaker import BreakerSnapshot, CircuitBreaker
from executor.db import create_async_db_engine
from tests.conftest import make_settings

DEVICE = "device-under-test"


def make_breaker(
    engine: AsyncEngine,
    *,
    threshold: int = 3,
    reset_seconds: float = 60,
    probe_lease_seconds: float = 40,
    device_id: str = DEVICE,
) -> CircuitBreaker:
    return CircuitBreaker(
        engine,
        device_id=device_id,
        threshold=threshold,
        reset_seconds=reset_seconds,
        probe_lease_seconds=probe_lease_seconds,
    )


async def expire_open_window(engine: AsyncEngine, device_id: str = DEVICE) -> None:
    """Move the open window into the past, as if reset_seconds had elapsed."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE circuit_breakers SET open_until = now() - interval '1 second'"
                " WHERE device_id = :d AND state = 'open'"
            ),
            {"d": device_id},
        )


async def expire_probe_lease(engine: AsyncEngine, device_id: str = DEVICE) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE circuit_breakers SET probe_until = now() - interval '1 second'"
                " WHERE device_id = :d AND state = 'half_open'"
            ),
            {"d": device_id},
        )


async def open_breaker(breaker: CircuitBreaker) -> BreakerSnapshot:
    snapshot = await breaker.snapshot()
    for _ in range(breaker.threshold):
        snapshot = await breaker.record("failure")
    assert snapshot.state == "open"
    return snapshot


async def test_no_row_means_closed(engine: AsyncEngine) -> None:
    breaker = make_breaker(engine)
    assert await breaker.snapshot() == BreakerSnapshot("closed", 0, None)
    permit = await breaker.before_send()
    assert permit.allowed and not permit.probe and permit.state == "closed"


async def test_threshold_opens_it(engine: AsyncEngine, caplog: pytest.LogCaptureFixture) -> None:
    breaker = make_breaker(engine, threshold=3, reset_seconds=60)
    assert (await breaker.record("failure")) == BreakerSnapshot("closed", 1, None)
    assert (await breaker.record("failure")).state == "closed"
    assert (await breaker.before_send()).allowed
    with caplog.at_level(logging.INFO):
        snapshot = await breaker.record("failure")
    assert snapshot.state == "open"
    assert snapshot.consecutive_failures == 3
    assert snapshot.open_until is not None
    async with engine.connect() as conn:
        window = (
            await conn.execute(
                text(
                    "SELECT EXTRACT(EPOCH FROM open_until - opened_at) FROM circuit_breakers"
                    " WHERE device_id = :d"
                ),
                {"d": DEVICE},
            )
        ).scalar_one()
    assert float(window) == pytest.approx(60, abs=0.01)
    assert sum("breaker.opened" in str(r.msg) for r in caplog.records) == 1
    # Further failures while open count, but do not move the window or log again.
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = await breaker.record("failure")
    assert again.state == "open" and again.consecutive_failures == 4
    assert again.open_until == snapshot.open_until
    assert not any("breaker.opened" in str(r.msg) for r in caplog.records)


async def test_open_window_refuses(engine: AsyncEngine) -> None:
    breaker = make_breaker(engine, reset_seconds=60)
    opened = await open_breaker(breaker)
    other = make_breaker(engine, reset_seconds=60)  # another instance: state is in the database
    for b in (breaker, other):
        permit = await b.before_send()
        assert not permit.allowed
        assert not permit.probe
        assert permit.state == "open"
        assert permit.open_until == opened.open_until


async def test_exactly_one_of_ten_concurrent_callers_gets_the_probe(
    engine: AsyncEngine, clean_db: str
) -> None:
    await open_breaker(make_breaker(engine))
    await expire_open_window(engine)
    engines = [create_async_db_engine(clean_db) for _ in range(10)]
    try:
        breakers = [make_breaker(e) for e in engines]
        permits = await asyncio.gather(*(b.before_send() for b in breakers))
    finally:
        await asyncio.gather(*(e.dispose() for e in engines))
    probes = [p for p in permits if p.probe]
    assert len(probes) == 1
    assert [p.allowed for p in permits].count(True) == 1
    assert probes[0].state == "half_open"
    assert (await make_breaker(engine).snapshot()).state == "half_open"
    # While the probe is out, nobody else is let through.
    assert not (await make_breaker(engine).before_send()).allowed


async def test_real_reset_window_elapses(engine: AsyncEngine) -> None:
    breaker = make_breaker(engine, threshold=1, reset_seconds=0.3)
    await breaker.record("failure")
    await asyncio.sleep(0.5)
    permit = await breaker.before_send()
    assert permit.allowed and permit.probe and permit.state == "half_open"


async def test_probe_success_closes(engine: AsyncEngine, caplog: pytest.LogCaptureFixture) -> None:
    breaker = make_breaker(engine)
    await open_breaker(breaker)
    await expire_open_window(engine)
    with caplog.at_level(logging.INFO):
        assert (await breaker.before_send()).probe
        snapshot = await breaker.record("success")
    assert snapshot == BreakerSnapshot("closed", 0, None)
    assert (await breaker.before_send()).allowed
    events = [str(r.msg) for r in caplog.records]
    assert any("breaker.half_open" in e for e in events)
    assert any("breaker.closed" in e for e in events)


async def test_probe_failure_reopens_with_a_fresh_window(engine: AsyncEngine) -> None:
    breaker = make_breaker(engine)
    first = await open_breaker(breaker)
    await expire_open_window(engine)
    assert (await breaker.before_send()).probe
    snapshot = await breaker.record("failure")
    assert snapshot.state == "open"
    assert snapshot.open_until is not None and first.open_until is not None
    assert snapshot.open_until > first.open_until
    permit = await breaker.before_send()
    assert not permit.allowed and permit.state == "open"


async def test_probe_neutral_closes(engine: AsyncEngine) -> None:
    breaker = make_breaker(engine)
    await open_breaker(breaker)
    await expire_open_window(engine)
    assert (await breaker.before_send()).probe
    assert await breaker.record("neutral") == BreakerSnapshot("closed", 0, None)


async def test_dead_prober_releases_the_probe(engine: AsyncEngine) -> None:
    breaker = make_breaker(engine)
    await open_breaker(breaker)
    await expire_open_window(engine)
    assert (await breaker.before_send()).probe
    assert not (await breaker.before_send()).allowed
    await expire_probe_lease(engine)  # the prober died without recording
    permit = await make_breaker(engine).before_send()
    assert permit.allowed and permit.probe
    assert not (await breaker.before_send()).allowed


async def test_unused_probe_can_be_released(engine: AsyncEngine) -> None:
    breaker = make_breaker(engine)
    await open_breaker(breaker)
    await expire_open_window(engine)
    assert (await breaker.before_send()).probe
    await breaker.release_probe()
    permit = await make_breaker(engine).before_send()
    assert permit.allowed and permit.probe


async def test_neutral_resets_the_count(engine: AsyncEngine) -> None:
    breaker = make_breaker(engine, threshold=3)
    await breaker.record("failure")
    await breaker.record("failure")
    assert (await breaker.record("neutral")) == BreakerSnapshot("closed", 0, None)
    await breaker.record("failure")
    assert (await breaker.record("failure")).state == "closed"  # 2 < 3: not consecutive enough
    assert (await breaker.record("failure")).state == "open"


async def test_success_resets_the_count(engine: AsyncEngine) -> None:
    breaker = make_breaker(engine, threshold=3)
    await breaker.record("failure")
    await breaker.record("failure")
    assert (await breaker.record("success")) == BreakerSnapshot("closed", 0, None)
    assert (await breaker.snapshot()).consecutive_failures == 0


async def test_success_write_is_skipped_only_when_known_closed(engine: AsyncEngine) -> None:
    writer = make_breaker(engine)
    reader = make_breaker(engine)
    await writer.record("failure")
    # reader has never looked: it must write, and the count is reset.
    assert (await reader.record("success")).consecutive_failures == 0
    assert (await writer.snapshot()).consecutive_failures == 0


async def test_concurrent_failures_are_all_counted(engine: AsyncEngine, clean_db: str) -> None:
    engines = [create_async_db_engine(clean_db) for _ in range(8)]
    try:
        breakers = [make_breaker(e, threshold=100) for e in engines]
        await asyncio.gather(*(b.record("failure") for b in breakers))
    finally:
        await asyncio.gather(*(e.dispose() for e in engines))
    assert (await make_breaker(engine).snapshot()).consecutive_failures == 8


async def test_devices_are_independent(engine: AsyncEngine) -> None:
    await open_breaker(make_breaker(engine, device_id="a"))
    assert (await make_breaker(engine, device_id="b").before_send()).allowed


async def test_state_survives_a_new_engine_and_a_new_process(
    engine: AsyncEngine, clean_db: str
) -> None:
    opened = await open_breaker(make_breaker(engine))
    fresh = create_async_db_engine(clean_db)
    try:
        assert await make_breaker(fresh).snapshot() == opened
    finally:
        await fresh.dispose()
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        from executor.breaker import CircuitBreaker
        from executor.db import create_async_db_engine

        async def main():
            engine = create_async_db_engine(sys.argv[1])
            b = CircuitBreaker(engine, device_id=sys.argv[2], threshold=3, reset_seconds=60,
                               probe_lease_seconds=40)
            s = await b.snapshot()
            p = await b.before_send()
            await engine.dispose()
            print(json.dumps({"state": s.state, "failures": s.consecutive_failures,
                              "allowed": p.allowed}))

        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, clean_db, DEVICE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "state": "open",
        "failures": 3,
        "allowed": False,
    }


def test_from_settings() -> None:
    settings = make_settings(
        chatea_device_id="dev-9",
        circuit_breaker_threshold=7,
        circuit_breaker_reset_seconds=12,
        chatea_timeout_seconds=4,
    )
    breaker = CircuitBreaker.from_settings(None, settings)  # type: ignore[arg-type]
    assert breaker.device_id == "dev-9"
    assert breaker.threshold == 7
    assert breaker.reset_seconds == 12
    assert breaker.probe_lease_seconds == settings.lease_seconds == 34


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(None, device_id="d", threshold=0, reset_seconds=1, probe_lease_seconds=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CircuitBreaker(None, device_id="d", threshold=1, reset_seconds=0, probe_lease_seconds=1)  # type: ignore[arg-type]
