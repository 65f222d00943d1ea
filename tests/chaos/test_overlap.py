"""Duplicate cron deliveries against a live app: overlapping waves and sequential repeats.

Ten calls at once (threads released together by a barrier, GET and POST mixed) must give
exactly one 200 and nine 409 ``{"error": "conflict", ...}``; calling again and again afterwards
must find nothing to do. The provider must see every action exactly once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx

from executor.sandbox import SandboxHandle
from tests.chaos.harness import CRON, CRON_PATH, Apps, ChaosDb, conclude, sandbox_log
from tests.pipeline_helpers import PHONES, action

WAVES = 3
CALLS = 10
PER_WAVE = 10


def fire_wave(url: str, calls: int) -> list[httpx.Response]:
    barrier = threading.Barrier(calls)
    responses: list[httpx.Response | BaseException] = [RuntimeError("no answer")] * calls

    def call(index: int) -> None:
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as client:
            barrier.wait()
            try:
                method = "GET" if index % 2 == 0 else "POST"
                responses[index] = client.request(method, CRON_PATH, headers=CRON)
            except BaseException as exc:  # reported below
                responses[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    failures = [r for r in responses if isinstance(r, BaseException)]
    assert not failures, failures
    return [r for r in responses if isinstance(r, httpx.Response)]


def test_overlapping_and_repeated_cron_calls(
    chaos_db: ChaosDb, sandbox: SandboxHandle, apps: Apps
) -> None:
    started = time.monotonic()
    # Latency keeps each run alive long enough for the whole wave to meet its lock.
    sandbox.configure(latency_ms=800)
    app = apps.start(
        chaos_db.url, sandbox.url, name="overlap", CHATEA_CONCURRENCY=5, RATE_LIMIT_PER_MINUTE=100
    )
    conflicts = 0
    for wave in range(WAVES):
        app.enqueue([action(f"W{wave}-{i}", PHONES[wave * PER_WAVE + i]) for i in range(PER_WAVE)])
        responses = fire_wave(app.url, CALLS)
        codes = Counter(r.status_code for r in responses)
        assert codes == {200: 1, 409: CALLS - 1}, [(r.status_code, r.text) for r in responses]
        for response in responses:
            assert response.headers["content-type"].startswith("application/json")
            assert "location" not in response.headers
            body = response.json()
            if response.status_code == 409:
                conflicts += 1
                assert set(body) == {"error", "message"} and body["error"] == "conflict", body
                assert "another run holds the run lock" in body["message"]
            else:
                assert body["sent"] == PER_WAVE and body["status"] == "SUCCESS", body
    sandbox.configure(latency_ms=0)
    for _ in range(5):  # the same delivery, repeated: nothing left to do
        again = app.cron()
        assert again.status_code == 200 and again.json()["status"] == "NOOP", again.text

    log = sandbox_log(sandbox)
    per_reference = Counter(r["reference"] for r in log)
    assert len(per_reference) == WAVES * PER_WAVE
    assert set(per_reference.values()) == {1}, per_reference
    conclude(
        "overlapping_cron",
        chaos_db,
        log,
        enqueued=chaos_db.ids(),
        title=f"{WAVES} waves of {CALLS} simultaneous cron calls, then 5 sequential repeats",
        faults=f"{WAVES * CALLS + 5} cron deliveries for {WAVES} due batches",
        faults_injected=conflicts + 5,
        started=started,
        waiting=(),
        max_unknown=0,
        notes=f"{conflicts} answered 409 conflict, 5 repeats were NOOP",
    )
