"""3. Round trips per send: statements the run sends to Postgres, per sent action.

Counted with SQLAlchemy ``before_cursor_execute`` events on the engine's ``sync_engine``, so the
run lock, housekeeping, claims, rules, finalizes, the breaker's statements and the run log are
all in; every connection opened adds its session-setup statement (executor.db). BEGIN and
COMMIT are counted apart (psycopg sends each as its own round trip). The engine is warmed up
(dialect initialization) before counting. Goal <= 3 statements per send, amortized.
"""

from __future__ import annotations

import time

from bench.common import (
    API_KEY,
    DEVICE_ID,
    BenchResult,
    SqlCounter,
    bench_settings,
    enqueue_due,
    fresh_database,
)

NAME = "round_trips"
TITLE = "Round trips per send (zero latency, concurrency 5)"


async def run(quick: bool) -> BenchResult:
    from sqlalchemy import text

    from executor.db import create_async_db_engine
    from executor.run import run_executor
    from executor.sandbox import start_sandbox

    count = 50 if quick else 1000
    result = BenchResult(NAME, TITLE)
    with (
        fresh_database("bench_rt") as url,
        start_sandbox(latency_ms=0, api_key=API_KEY, device_id=DEVICE_ID) as sandbox,
    ):
        engine = create_async_db_engine(url)
        settings = bench_settings(url, sandbox.url)
        try:
            await enqueue_due(engine, settings, count, prefix="RT", phones=200)
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            counter = SqlCounter(engine)
            started = time.perf_counter()
            outcome = await run_executor(engine, settings)
            elapsed = time.perf_counter() - started
            counter.close()
        finally:
            await engine.dispose()
    sent = outcome.counters.sent
    assert sent == count, outcome.to_json()
    per_send = counter.total_statements / sent
    result.add(
        "round_trips.statements_per_send",
        "statements per send",
        per_send,
        goal="<= 3",
        ok=per_send <= 3,
        fmt="{:.2f}",
    )
    result.add(
        "round_trips.connections", "connections opened per run", counter.connections, fmt="{:.0f}"
    )
    result.add(
        "round_trips.round_trips_per_send",
        "round trips per send (+ BEGIN/COMMIT, connects)",
        counter.round_trips / sent,
        fmt="{:.2f}",
    )
    top = ", ".join(f"{kind} x{n}" for kind, n in counter.kinds.most_common(8))
    result.notes.append(
        f"{sent} sends in {elapsed:.2f}s: {counter.total_statements} statements "
        f"({counter.connections} session setups), {counter.begins} BEGIN, "
        f"{counter.commits} COMMIT, {counter.rollbacks} ROLLBACK; most frequent: {top}"
    )
    return result
