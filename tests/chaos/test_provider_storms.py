"""Provider fault storms over many runs of a live app: 5xx, read timeouts, resets and drops,
429 with Retry-After, an unreachable provider. The breaker opens and recovers, retries follow
the schedule (waits skipped with SQL between runs), nothing is sent twice."""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from executor.sandbox import SandboxHandle
from tests.chaos.harness import Apps, ChaosDb, conclude, dead_port, drive, sandbox_log
from tests.pipeline_helpers import PHONES, action

ROOMY: dict[str, Any] = {
    "RATE_LIMIT_PER_MINUTE": 1000,
    "DAILY_SEND_LIMIT": 1000,
    "CHATEA_CONCURRENCY": 5,
    "CIRCUIT_BREAKER_THRESHOLD": 5,
    "MAX_RETRIES": 3,
}
UNKNOWN_MODES = ("hang", "reset", "drop")  # how the sandbox logs hang/reset/drop(_after_accept)


def faulty(log: list[dict[str, object]]) -> int:
    return sum(1 for r in log if r["status"] != 200)


@pytest.mark.slow
def test_storm_of_5xx(chaos_db: ChaosDb, sandbox: SandboxHandle, apps: Apps) -> None:
    started = time.monotonic()
    # A burst that must open the breaker, then a coin flip for every send.
    sandbox.configure(script=["503"] * 5, fail_rate=0.5)
    app = apps.start(chaos_db.url, sandbox.url, CIRCUIT_BREAKER_RESET_SECONDS=4, **ROOMY)
    app.enqueue([action(f"F{i:02d}", PHONES[i]) for i in range(40)])
    enqueued = chaos_db.ids()

    seen = drive(app, chaos_db, sandbox, real_wait_seconds=4.1)
    assert seen.breaker_openings >= 1 and seen.schedule_checks > 0
    assert chaos_db.count("PLANNED") == 0

    # Recovery: the provider is healthy again, the breaker closes on its probe.
    sandbox.configure(fail_rate=0.0)
    app.enqueue([action(f"F-after-{i}", PHONES[50 + i]) for i in range(5)])
    chaos_db.end_breaker_window()
    after = app.cron().json()
    assert after["sent"] >= 1 and chaos_db.breaker_state() == "closed", after
    drive(app, chaos_db, sandbox)
    log = sandbox_log(sandbox)
    assert sum(r["failed5xx"] for r in seen.runs) == sum(1 for r in log if r["status"] == 503)
    # Give-ups follow MAX_RETRIES: a FAILED action was tried exactly 1 + MAX_RETRIES times.
    tries = Counter(r["reference"] for r in log)
    for (action_id,) in chaos_db.sql("SELECT id FROM actions WHERE status = 'FAILED'"):
        assert tries[str(action_id)] == 4
    conclude(
        "storm_5xx",
        chaos_db,
        log,
        enqueued=chaos_db.ids(),
        title="50 % of sends answered 503 (after a burst of 5), many runs, then recovery",
        faults="503 burst + fail_rate 0.5; breaker reset 4 s (first window waited for real)",
        faults_injected=faulty(log),
        started=started,
        waiting=(),
        max_unknown=0,
        notes=(
            f"{len(seen.runs) + 1} runs, breaker opened {seen.breaker_openings}x, "
            f"{seen.schedule_checks} retry delays checked, "
            f"{chaos_db.count('FAILED')} gave up after 4 tries"
        ),
    )
    assert len(enqueued) == 40


@pytest.mark.slow
def test_storm_of_timeouts_resets_and_drops(
    chaos_db: ChaosDb, sandbox: SandboxHandle, apps: Apps
) -> None:
    started = time.monotonic()
    rng = random.Random(6)
    menu = ["ok", "ok", "hang", "reset", "drop", "drop_after_accept", "503", "429:1"]
    sandbox.configure(script=[rng.choice(menu) for _ in range(60)])
    app = apps.start(chaos_db.url, sandbox.url, CHATEA_TIMEOUT_SECONDS=0.5, **ROOMY)
    app.enqueue([action(f"T{i:02d}", PHONES[i]) for i in range(40)])
    enqueued = chaos_db.ids()

    seen = drive(app, chaos_db, sandbox)
    log = sandbox_log(sandbox)
    outcome_unknown = [r for r in log if r["status"] in UNKNOWN_MODES]
    # Every unknown outcome became UNKNOWN, and an UNKNOWN action was never tried again.
    requests_of: dict[str, list[object]] = defaultdict(list)
    for r in log:
        requests_of[str(r["reference"])].append(r["status"])
    unknown_ids = {str(i) for (i,) in chaos_db.sql("SELECT id FROM actions WHERE status='UNKNOWN'")}
    assert unknown_ids == {str(r["reference"]) for r in outcome_unknown}
    for action_id in unknown_ids:
        assert requests_of[action_id][-1] in UNKNOWN_MODES, requests_of[action_id]
    # The message taken before the connection dropped is UNKNOWN, not resent.
    accepted_then_dropped = [r for r in log if r["status"] == "drop" and r["accepted"]]
    assert accepted_then_dropped
    conclude(
        "storm_timeouts_resets_drops",
        chaos_db,
        log,
        enqueued=enqueued,
        title="Read timeouts, resets, drops (also after accepting), 503 and 429 mixed",
        faults="60 scripted faults and successes; CHATEA_TIMEOUT_SECONDS=0.5",
        faults_injected=faulty(log),
        started=started,
        waiting=(),
        max_unknown=len(outcome_unknown),
        notes=(
            f"{len(seen.runs)} runs, breaker opened {seen.breaker_openings}x, "
            f"{len(outcome_unknown)} unknown outcomes (each UNKNOWN, never resent), "
            f"{len(accepted_then_dropped)} accepted-then-dropped"
        ),
    )


@pytest.mark.slow
def test_unreachable_provider_then_429_storm(
    chaos_db: ChaosDb, sandbox: SandboxHandle, apps: Apps, stack: contextlib.ExitStack
) -> None:
    started = time.monotonic()
    port = stack.enter_context(dead_port())
    offline = apps.start(chaos_db.url, f"http://127.0.0.1:{port}", name="offline", **ROOMY)
    online = apps.start(chaos_db.url, sandbox.url, name="online", wait=False, **ROOMY)
    offline.enqueue([action(f"U{i:02d}", PHONES[i]) for i in range(20)])
    enqueued = chaos_db.ids()

    # Connection refused: the request never left, so it is a retry, never an UNKNOWN.
    first = offline.cron().json()
    assert first["failed5xx"] == 5 and first["unknown"] == 0, first
    assert first["skippedCircuitOpen"] == 15 and chaos_db.breaker_state() == "open", first
    assert chaos_db.count("PLANNED") == 20 and sandbox.stats()["requests"] == 0
    online.wait_ready()

    # 429 with Retry-After: 600 s, longer than any backoff, so it wins.
    sandbox.configure(status=429, retry_after=600)
    storm = drive(online, chaos_db, sandbox, max_runs=4, retry_after=600, until_done=False)
    assert storm.breaker_openings >= 1 and storm.schedule_checks >= 1
    # check_retry_schedule (inside drive) held every 429 retry to next_attempt_at >= +600 s.
    honoured = chaos_db.scalar(
        "SELECT count(*) FROM action_events WHERE status = 'PLANNED' AND error_code = 'HTTP_429'"
    )
    assert honoured >= 1

    sandbox.configure(status=None, retry_after=None)
    chaos_db.make_due()
    chaos_db.end_breaker_window()
    recovery = drive(online, chaos_db, sandbox)
    assert chaos_db.breaker_state() == "closed"
    log = sandbox_log(sandbox)
    conclude(
        "unreachable_then_429",
        chaos_db,
        log,
        enqueued=enqueued,
        title="Provider unreachable (connection refused), then 429 + Retry-After storm",
        faults="connect refused x5 (+ in-call retries); 429 Retry-After 600 s on every send",
        faults_injected=5 + faulty(log),
        started=started,
        waiting=(),
        max_unknown=0,
        notes=(
            f"{1 + len(storm.runs) + len(recovery.runs)} runs, breaker opened "
            f"{1 + storm.breaker_openings}x, Retry-After honoured on {honoured} retries"
        ),
    )
