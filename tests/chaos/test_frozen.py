"""A frozen process wakes up after its leases were recovered: its late answers change nothing.

Serverless platforms freeze a function between invocations; a frozen run keeps its leases and
its run lock while the clock runs on. Here the app is SIGSTOPped with its HTTP calls in flight;
the provider answers them 503 (a transient error the frozen run would retry); the server drops
the frozen run-lock session (what ``idle_in_transaction_session_timeout`` does); the leases
expire (simulated with SQL) and a second process turns the batch UNKNOWN. Then the frozen
process is resumed: every finalize it attempts must be refused (guarded by the claim's
``attempt_id``), so it neither overwrites UNKNOWN nor schedules a resend - and, in the second
scenario, neither clobbers a newer attempt of the same action that is in flight right then
(after an operator reconciled the UNKNOWN as not delivered).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from executor.run_sql import RUN_LOCK_KEY
from executor.sandbox import SandboxHandle
from tests.chaos.harness import ADMIN, App, Apps, ChaosDb, conclude, sandbox_log, wait_for
from tests.pipeline_helpers import PHONES, action

BATCH = 4
ENV: dict[str, Any] = {"CHATEA_CONCURRENCY": BATCH, "RATE_LIMIT_PER_MINUTE": 100}


def in_thread(fn: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[Any]]:
    answer: list[Any] = []

    def run() -> None:
        try:
            answer.append(fn())
        except BaseException as exc:  # reported by the caller
            answer.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, answer


def freeze_mid_send(
    frozen: App, other: App, db: ChaosDb, sandbox: SandboxHandle
) -> tuple[threading.Thread, list[Any]]:
    """Freeze ``frozen`` with a batch on the wire, answer it 503, drop its run-lock session,
    expire its leases and let ``other`` recover them (UNKNOWN). ``frozen`` stays stopped."""
    sandbox.configure(latency_ms=3000)
    thread, answer = in_thread(frozen.cron)
    assert wait_for(lambda: db.count("SENDING") == BATCH, timeout=20)
    time.sleep(1.0)  # the requests are on the wire (the provider holds them for 3 s)
    assert frozen.proc is not None
    os.kill(frozen.proc.pid, signal.SIGSTOP)
    try:
        # The provider refuses them (503); the answers wait in the frozen process's sockets.
        sandbox.configure(status=503)
        assert wait_for(lambda: sandbox.stats()["requests"] == BATCH, timeout=10)
        sandbox.configure(status=None, latency_ms=0)
        dropped = db.scalar(
            "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l"
            " JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND l.granted AND d.datname = %s"
            " AND l.classid = %s AND l.objid = %s",
            (db.name, RUN_LOCK_KEY >> 32, RUN_LOCK_KEY & 0xFFFFFFFF),
        )
        assert dropped == 1
        assert db.expire_leases() == BATCH
        other.wait_ready()
        recovered = other.cron().json()
        assert recovered["unknown"] == BATCH, recovered
    except BaseException:
        os.kill(frozen.proc.pid, signal.SIGCONT)
        raise
    return thread, answer


def wake(frozen: App, thread: threading.Thread, answer: list[Any]) -> list[dict[str, Any]]:
    assert frozen.proc is not None
    os.kill(frozen.proc.pid, signal.SIGCONT)
    thread.join(timeout=60)
    assert answer, "the frozen call never returned"
    return [e for e in frozen.log_events() if e.get("event") == "action.lease_lost"]


def test_frozen_process_finalizes_after_lease_recovery(
    chaos_db: ChaosDb, sandbox: SandboxHandle, apps: Apps
) -> None:
    started = time.monotonic()
    other = apps.start(chaos_db.url, sandbox.url, name="other", wait=False, **ENV)
    frozen = apps.start(chaos_db.url, sandbox.url, name="frozen", **ENV)
    frozen.enqueue([action(f"Z{i}", PHONES[i]) for i in range(2 * BATCH)])
    enqueued = chaos_db.ids()
    thread, answer = freeze_mid_send(frozen, other, chaos_db, sandbox)
    assert chaos_db.count("SENT") == BATCH  # the other process sent the rest meanwhile
    lost = wake(frozen, thread, answer)
    # Every late finalize found its lease lost: nothing changed, nothing rescheduled.
    assert len(lost) == BATCH, frozen.output()[-3000:]
    assert chaos_db.count("UNKNOWN") == BATCH and chaos_db.count("PLANNED") == 0
    chaos_db.make_due()
    assert other.cron().json()["status"] == "NOOP"
    log = sandbox_log(sandbox)
    assert set(Counter(r["reference"] for r in log).values()) == {1}
    conclude(
        "frozen_process_late_finalize",
        chaos_db,
        log,
        enqueued=enqueued,
        title="App frozen (SIGSTOP) mid-send, lock session dropped, leases recovered, resumed",
        faults="SIGSTOP/SIGCONT; 503 answers held while frozen; run-lock backend terminated",
        faults_injected=3,
        started=started,
        waiting=(),
        max_unknown=BATCH,
        notes=(
            f"{len(lost)} late finalizes refused (lease lost); the woken call answered "
            f"{getattr(answer[0], 'status_code', type(answer[0]).__name__)}"
        ),
    )


def test_frozen_process_wakes_during_a_newer_attempt(
    chaos_db: ChaosDb, sandbox: SandboxHandle, apps: Apps
) -> None:
    """Only ``attempt_id`` tells the frozen run's claim from the newer one: both are SENDING."""
    started = time.monotonic()
    other = apps.start(chaos_db.url, sandbox.url, name="other", wait=False, **ENV)
    frozen = apps.start(chaos_db.url, sandbox.url, name="frozen", **ENV)
    frozen.enqueue([action(f"Y{i}", PHONES[i]) for i in range(BATCH)])
    enqueued = chaos_db.ids()
    thread, answer = freeze_mid_send(frozen, other, chaos_db, sandbox)
    try:
        # An operator checks Chatea: not delivered (they were 503s). Back to PLANNED, due now.
        for action_id in enqueued:
            reconciled = other.client.post(
                f"/api/admin/actions/{action_id}/reconcile",
                headers=ADMIN,
                json={"outcome": "not_delivered"},
            )
            assert reconciled.status_code == 200, reconciled.text
        # A newer attempt goes out, slowly; the frozen process wakes while it is in flight.
        sandbox.configure(latency_ms=3000)
        resend, resent = in_thread(other.cron)
        assert wait_for(lambda: chaos_db.count("SENDING") == BATCH, timeout=20)
        time.sleep(1.0)
    finally:
        lost = wake(frozen, thread, answer)
    resend.join(timeout=60)
    assert resent and getattr(resent[0], "status_code", None) == 200, resent
    assert resent[0].json()["sent"] == BATCH, resent[0].text
    assert len(lost) == BATCH, frozen.output()[-3000:]
    assert chaos_db.count("SENT") == BATCH
    sandbox.configure(latency_ms=0)
    chaos_db.make_due()
    assert other.cron().json()["status"] == "NOOP"
    log = sandbox_log(sandbox)
    # Each action: the frozen run's 503, then the newer attempt's delivery. Never a third.
    assert set(Counter(r["reference"] for r in log).values()) == {2}
    conclude(
        "frozen_process_newer_attempt",
        chaos_db,
        log,
        enqueued=enqueued,
        title="Frozen app wakes while a newer attempt of the same actions is in flight",
        faults="SIGSTOP/SIGCONT; lock session dropped; UNKNOWN reconciled not_delivered; resend",
        faults_injected=4,
        started=started,
        waiting=(),
        max_unknown=0,
        notes=f"{len(lost)} stale finalizes refused while the newer attempt was SENDING",
    )
