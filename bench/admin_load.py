"""7. Admin under load: 200 concurrent ``GET /api/admin/executor-status`` while a run sends.

The app runs under uvicorn in a subprocess; the run is ``executor run`` in another process
(as on Vercel, where the cron and the admin request are separate invocations), sending due
actions to a sandbox (20 ms latency) over a history of 10 k actions. The 200 requests are fired
at once with httpx, first while idle, then while the run is sending. Figures: errors (must be
0) and p95 latency, idle vs under load.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

from bench.common import (
    ADMIN_SECRET,
    ROOT,
    BenchResult,
    bench_env,
    bench_settings,
    enqueue_due,
    free_port,
    fresh_database,
    percentile,
    python_cmd,
    sandbox_process,
    wait_for_http,
)
from bench.history import grow_history

NAME = "admin_load"
TITLE = "200 concurrent status requests: idle vs during a run"


def _spawn(
    env: dict[str, str], *args: str, stdout: int = subprocess.DEVNULL
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        python_cmd(*args), cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.DEVNULL, text=True
    )


async def _burst(base_url: str, count: int) -> tuple[list[float], int, list[str]]:
    import httpx

    headers = {"Authorization": f"Bearer {ADMIN_SECRET}"}
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    latencies: list[float] = []
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as client:

        async def one() -> None:
            started = time.perf_counter()
            try:
                response = await client.get("/api/admin/executor-status", headers=headers)
            except httpx.HTTPError as exc:
                errors.append(type(exc).__name__)
                return
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors.append(f"HTTP {response.status_code} {response.text[:80]}")

        await asyncio.gather(*(one() for _ in range(count)))
    return latencies, len(errors), errors


async def run(quick: bool) -> BenchResult:
    from executor.db import create_async_db_engine

    requests = 50 if quick else 200
    due = 300 if quick else 2_000
    result = BenchResult(NAME, TITLE)
    with fresh_database("bench_admin") as url, sandbox_process(latency_ms=20) as sandbox_url:
        grow_history(url, 1, 2_000 if quick else 10_000)
        engine = create_async_db_engine(url)
        try:
            await enqueue_due(engine, bench_settings(url, sandbox_url), due, prefix="ADM")
        finally:
            await engine.dispose()
        env = bench_env(url, sandbox_url)
        port = free_port()
        server = _spawn(
            env, "-m", "uvicorn", "api.index:app", "--host", "127.0.0.1", "--port", str(port)
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_http(base + "/api/health", timeout=60)
            await _burst(base, 5)  # warm: schema check, first connections
            idle, idle_errors, idle_msgs = await _burst(base, requests)
            runner = _spawn(env, "-m", "executor.cli", "run", stdout=subprocess.PIPE)
            try:
                await asyncio.sleep(1.5)  # the run is claiming and sending by now
                running = runner.poll() is None
                busy, busy_errors, busy_msgs = await _burst(base, requests)
                out, _ = runner.communicate(timeout=600)
            finally:
                if runner.poll() is None:
                    runner.kill()
                    runner.wait()
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    run_result = json.loads(out[out.index("{") :]) if "{" in out else {}
    result.add(
        "admin_load.errors_idle",
        "errors, idle",
        idle_errors,
        goal="0",
        ok=idle_errors == 0,
        fmt="{:.0f}",
    )
    result.add(
        "admin_load.errors_busy",
        "errors, during a run",
        busy_errors,
        goal="0",
        ok=busy_errors == 0,
        fmt="{:.0f}",
    )
    result.add(
        "admin_load.p95_idle_ms",
        "p95, idle",
        percentile(idle, 95) * 1000 if idle else None,
        "ms",
        fmt="{:.0f}",
    )
    result.add(
        "admin_load.p95_busy_ms",
        "p95, during a run",
        percentile(busy, 95) * 1000 if busy else None,
        "ms",
        fmt="{:.0f}",
    )
    result.notes.append(
        f"{requests} concurrent requests per burst; run still sending during the burst: "
        f"{running}; run sent {run_result.get('sent')} of {due}"
    )
    errors = sorted(set(idle_msgs + busy_msgs))
    if errors:
        result.notes.append("errors seen: " + "; ".join(errors[:5]))
    return result
