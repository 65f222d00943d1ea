"""2. Throughput vs a peer: zero-latency sandbox, 5,000 actions, limits lifted, concurrency 5.

Ours: one ``run_executor`` over 5,000 due actions (limits, idempotency, phone resolution and
audit events included). Peer: PgQueuer (asyncpg driver) processing 5,000 jobs whose handler
POSTs the same Chatea request (same headers, same JSON body) to the same sandbox with one shared
httpx client, on the same Postgres server, with the entrypoint's ``concurrency_limit`` = 5.
Both talk to one ``executor sandbox`` subprocess, so its CPU is not billed to either side.
Figure: sends per second; goal ours / PgQueuer >= 1.0.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from bench.common import (
    API_KEY,
    DEVICE_ID,
    BenchResult,
    bench_settings,
    enqueue_due,
    fresh_database,
    phone,
    sandbox_process,
    status_counts,
)

NAME = "throughput"
TITLE = "Throughput vs PgQueuer (zero latency, concurrency 5)"

CONCURRENCY = 5
# PgQueuer's completion buffer flushes every batch_size jobs (or every 0.1 s): a batch larger
# than the concurrency limit makes it wait for the timer (about 50 jobs/s). Its best setting
# here is batch_size = concurrency.
BATCH_SIZE = CONCURRENCY


async def ours(sandbox_url: str, count: int) -> float:
    from executor.db import create_async_db_engine
    from executor.run import run_executor

    with fresh_database("bench_tp") as url:
        engine = create_async_db_engine(url)
        settings = bench_settings(url, sandbox_url, chatea_concurrency=CONCURRENCY)
        try:
            await enqueue_due(engine, settings, count, prefix="TP", phones=1000)
            started = time.perf_counter()
            result = await run_executor(engine, settings)
            elapsed = time.perf_counter() - started
            assert result.counters.sent == count, result.to_json()
            assert (await status_counts(engine))["SENT"] == count
        finally:
            await engine.dispose()
    return count / elapsed


async def pgqueuer_peer(sandbox_url: str, count: int, batch_size: int) -> float:
    import asyncpg  # type: ignore[import-untyped]
    import httpx
    from pgqueuer import AsyncpgDriver, QueueManager
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    from executor.chatea import build_payload
    from executor.db import libpq_url

    with fresh_database("bench_pgq", migrate=False) as url:
        conn = await asyncpg.connect(libpq_url(url))
        try:
            queries = Queries(AsyncpgDriver(conn))
            await queries.install()
            for start in range(0, count, 1000):
                n = min(1000, count - start)
                payloads: list[bytes | None] = [
                    json.dumps(
                        {
                            "id": str(uuid.uuid4()),
                            "to": phone(start + i),
                            "template": "at_office_3d",
                            "parameters": [f"PQ{start + i:08d}", "Servientrega", "Bogotá"],
                        }
                    ).encode()
                    for i in range(n)
                ]
                await queries.enqueue(["send"] * n, payloads, [0] * n)

            limits = httpx.Limits(
                max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY
            )
            client = httpx.AsyncClient(timeout=10.0, limits=limits)
            qm = QueueManager(Queries(AsyncpgDriver(conn)))
            sent = 0

            @qm.entrypoint("send", concurrency_limit=CONCURRENCY)
            async def send(job: Job) -> None:
                nonlocal sent
                assert job.payload is not None
                data: dict[str, Any] = json.loads(job.payload)
                body = build_payload(
                    device_id=DEVICE_ID,
                    action_id=data["id"],
                    to=data["to"],
                    template=data["template"],
                    parameters=data["parameters"],
                )
                response = await client.post(
                    sandbox_url + "/messages",
                    headers={
                        "Authorization": f"Bearer {API_KEY}",
                        "Idempotency-Key": data["id"],
                        "Content-Type": "application/json",
                        "Accept": "application/json",
                    },
                    content=json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(),
                )
                if 200 <= response.status_code < 300:
                    sent += 1

            started = time.perf_counter()
            await asyncio.wait_for(
                qm.run(batch_size=batch_size, mode=QueueExecutionMode.drain), timeout=600
            )
            elapsed = time.perf_counter() - started
            await client.aclose()
            assert sent == count, (sent, count)
        finally:
            await conn.close()
    return count / elapsed


async def run(quick: bool) -> BenchResult:
    count = 300 if quick else 5000
    result = BenchResult(NAME, TITLE)
    with sandbox_process(latency_ms=0) as sandbox_url:
        ours_rate = await ours(sandbox_url, count)
        peer_rate = await pgqueuer_peer(sandbox_url, count, batch_size=BATCH_SIZE)
    result.add("throughput.ours", "ours", ours_rate, "sends/s", fmt="{:.0f}")
    result.add("throughput.pgqueuer", "PgQueuer", peer_rate, "jobs/s", fmt="{:.0f}")
    ratio = ours_rate / peer_rate
    result.add(
        "throughput.ratio", "ours / PgQueuer", ratio, goal=">= 1.0", ok=ratio >= 1.0, fmt="{:.2f}"
    )
    result.notes.append(
        f"{count} sends each; PgQueuer {_pgq_version()} asyncpg driver, batch_size={BATCH_SIZE}, "
        f"entrypoint concurrency_limit={CONCURRENCY}, drain mode"
    )
    return result


def _pgq_version() -> str:
    from importlib.metadata import version

    return version("pgqueuer")
