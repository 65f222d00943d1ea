"""1. Run efficiency: 100 due actions, sandbox latency 200 ms, CHATEA_CONCURRENCY=5.

The ideal run is ``ceil(100 / 5) x 0.2 s`` (every send slot always busy, the database free);
efficiency = ideal / actual wall time of ``run_executor`` (lock, housekeeping, claims, rules,
sends, finalizes and the run log included). Goal >= 0.9.
"""

from __future__ import annotations

import math
import time

from bench.common import API_KEY, DEVICE_ID, BenchResult, bench_settings, enqueue_due, median
from bench.common import fresh_database as fresh_db

NAME = "efficiency"
TITLE = "Run efficiency (latency 200 ms, concurrency 5)"


async def measure(*, actions: int, latency_ms: int, concurrency: int, repeats: int) -> list[float]:
    from executor.db import create_async_db_engine
    from executor.run import run_executor
    from executor.sandbox import start_sandbox

    durations: list[float] = []
    with (
        fresh_db("bench_eff") as url,
        start_sandbox(latency_ms=latency_ms, api_key=API_KEY, device_id=DEVICE_ID) as sandbox,
    ):
        engine = create_async_db_engine(url)
        settings = bench_settings(url, sandbox.url, chatea_concurrency=concurrency)
        try:
            for rep in range(repeats):
                await enqueue_due(engine, settings, actions, prefix=f"EF{rep}-")
                started = time.perf_counter()
                result = await run_executor(engine, settings)
                durations.append(time.perf_counter() - started)
                assert result.counters.sent == actions, result.to_json()
        finally:
            await engine.dispose()
    return durations


async def run(quick: bool) -> BenchResult:
    actions, latency_ms, concurrency = (30, 100, 5) if quick else (100, 200, 5)
    repeats = 1 if quick else 5
    durations = await measure(
        actions=actions, latency_ms=latency_ms, concurrency=concurrency, repeats=repeats
    )
    ideal = math.ceil(actions / concurrency) * latency_ms / 1000
    actual = median(durations)
    result = BenchResult(NAME, TITLE)
    result.add("efficiency.ideal_s", "ideal run", ideal, "s")
    result.add("efficiency.actual_s", "actual run (median)", actual, "s")
    ratio = ideal / actual
    result.add(
        "efficiency.ratio", "ideal / actual", ratio, goal=">= 0.9", ok=ratio >= 0.9, fmt="{:.3f}"
    )
    overhead_ms = (actual - ideal) * 1000 / math.ceil(actions / concurrency)
    result.add("efficiency.overhead_per_wave_ms", "overhead per wave", overhead_ms, "ms")
    result.notes.append(
        f"{actions} actions, latency {latency_ms} ms, concurrency {concurrency}, "
        f"runs: {', '.join(f'{d:.3f}s' for d in durations)}"
    )
    return result
