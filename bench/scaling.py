"""4. Scaling with history: the same work over a small and a large history.

Three databases get their history generated in SQL (bench/history.py, then VACUUM ANALYZE):
1 k and 10 k actions (the small sides) and 1 M; measurements alternate between the sizes, so
the machine's load drifts over both alike. A run with 20 due actions (zero-latency sandbox,
concurrency 5, median of several runs) over 1 k vs 1 M old actions: goal ratio <= 1.2.
``GET /api/admin/executor-status`` (in-process ASGI client, sequential requests) with 10 k vs
1 M actions in the last 30 days: goal p50 ratio <= 1.5 and p95 < 100 ms at 1 M. The access
paths of the claim, the run's per-run queries and the metrics queries are printed from EXPLAIN
at the large size; a Seq Scan on ``actions`` / ``action_events`` is flagged.
"""

from __future__ import annotations

import time

from bench.common import (
    ADMIN_SECRET,
    API_KEY,
    DEVICE_ID,
    BenchResult,
    bench_settings,
    enqueue_due,
    fresh_database,
    median,
    percentile,
)
from bench.history import grow_history
from bench.plans import explain_all, seq_scans

NAME = "scaling"
TITLE = "Scaling with history (run: 1 k vs 1 M; status route: 10 k vs 1 M)"

DUE = 20


async def _run_once(engine, settings, tag: str) -> float:
    from executor.run import run_executor

    await enqueue_due(engine, settings, DUE, prefix=f"SC{tag}-")
    started = time.perf_counter()
    result = await run_executor(engine, settings)
    elapsed = time.perf_counter() - started
    assert result.counters.sent == DUE, result.to_json()
    return elapsed


class _StatusClient:
    """An in-process app over one database, answering GET /api/admin/executor-status."""

    def __init__(self, settings) -> None:
        import httpx

        from api.app import create_app
        from bench.common import quiet_logging
        from executor.runtime import Runtime

        self.app = create_app(Runtime(settings))
        quiet_logging()  # create_app configured logging to stderr
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://bench"
        )
        self.headers = {"Authorization": f"Bearer {ADMIN_SECRET}"}

    async def get(self) -> float:
        started = time.perf_counter()
        response = await self.client.get("/api/admin/executor-status", headers=self.headers)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.text[:300]
        return elapsed

    async def close(self) -> None:
        await self.client.aclose()
        await self.app.state.runtime.aclose()


async def run(quick: bool) -> BenchResult:
    from executor.db import create_async_db_engine
    from executor.sandbox import start_sandbox

    if quick:
        run_small, status_small, large, repeats, requests = 500, 2_000, 20_000, 2, 10
    else:
        run_small, status_small, large, repeats, requests = 1_000, 10_000, 1_000_000, 7, 40
    result = BenchResult(NAME, TITLE)
    # Three databases: the run's small history, the status route's small history, the large
    # one. Measurements alternate between sizes, so the machine's load drifts over both alike.
    with (
        fresh_database("bench_scale_run") as run_url,
        fresh_database("bench_scale_status") as status_url,
        fresh_database("bench_scale_large") as large_url,
        start_sandbox(latency_ms=0, api_key=API_KEY, device_id=DEVICE_ID) as sandbox,
    ):
        t0 = time.perf_counter()
        grow_history(run_url, 1, run_small)
        grow_history(status_url, 1, status_small)
        t1 = time.perf_counter()
        grow_history(large_url, 1, large)
        generated = time.perf_counter() - t1
        small_settings = bench_settings(run_url, sandbox.url)
        large_settings = bench_settings(large_url, sandbox.url)
        small_engine = create_async_db_engine(run_url)
        large_engine = create_async_db_engine(large_url)
        small_status = _StatusClient(bench_settings(status_url, sandbox.url))
        large_status = _StatusClient(large_settings)
        run_small_s: list[float] = []
        run_large_s: list[float] = []
        status_small_s: list[float] = []
        status_large_s: list[float] = []
        try:
            for rep in range(repeats + 1):  # the first pair warms both up
                small = await _run_once(small_engine, small_settings, f"a{rep}")
                big = await _run_once(large_engine, large_settings, f"b{rep}")
                if rep:
                    run_small_s.append(small)
                    run_large_s.append(big)
            for n in range(requests + 3):
                small = await small_status.get()
                big = await large_status.get()
                if n >= 3:  # warm-up: first connection, schema check
                    status_small_s.append(small)
                    status_large_s.append(big)
            plans = await explain_all(large_engine, large_settings)
            total = time.perf_counter() - t0
        finally:
            await small_status.close()
            await large_status.close()
            await small_engine.dispose()
            await large_engine.dispose()

    run_ratio = median(run_large_s) / median(run_small_s)
    small_p50, large_p50 = median(status_small_s), median(status_large_s)
    large_p95 = percentile(status_large_s, 95)
    status_ratio = large_p50 / small_p50
    k = f"{large // 1000} k" if large < 1_000_000 else f"{large // 1_000_000} M"
    result.add(
        "scaling.run_small_s", f"run of {DUE}, {run_small} old actions", median(run_small_s), "s"
    )
    result.add("scaling.run_large_s", f"run of {DUE}, {k} old actions", median(run_large_s), "s")
    result.add(
        "scaling.run_ratio",
        "run ratio large / small",
        run_ratio,
        goal="<= 1.2",
        ok=run_ratio <= 1.2,
        fmt="{:.2f}",
    )
    result.add(
        "scaling.status_small_p50_ms", f"status p50, {status_small} actions", small_p50 * 1000, "ms"
    )
    result.add(
        "scaling.status_small_p95_ms",
        f"status p95, {status_small} actions",
        percentile(status_small_s, 95) * 1000,
        "ms",
    )
    result.add("scaling.status_large_p50_ms", f"status p50, {k} actions", large_p50 * 1000, "ms")
    result.add(
        "scaling.status_large_p95_ms",
        f"status p95, {k} actions",
        large_p95 * 1000,
        "ms",
        goal="< 100 ms",
        ok=large_p95 < 0.1,
    )
    result.add(
        "scaling.status_ratio",
        "status p50 ratio large / small",
        status_ratio,
        goal="<= 1.5",
        ok=status_ratio <= 1.5,
        fmt="{:.2f}",
    )
    flagged = seq_scans(plans)
    result.add(
        "scaling.seq_scans",
        "queries with a Seq Scan on actions/events",
        len(flagged),
        goal="0",
        ok=not flagged,
        fmt="{:.0f}",
    )
    result.notes.append(
        f"history {k} actions (+ events, runs) generated in {generated:.0f}s; "
        f"{repeats} runs per size, {requests} status requests per size, alternating; "
        f"total {total:.0f}s"
    )
    for name, paths in plans.items():
        result.notes.append(f"plan {name}: " + "; ".join(paths))
    if flagged:
        result.notes.append("SEQ SCAN flagged in: " + ", ".join(flagged))
    return result
