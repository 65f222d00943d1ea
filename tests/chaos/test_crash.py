"""SIGKILL of the app at the named points of a run, then a restart: nothing lost, nothing resent.

The kill comes from the product's own test seam (``EXECUTOR_TEST_KILL_AT``): the app process
SIGKILLs itself after the claim was committed, while its HTTP calls are in flight, or after the
provider answered but before the outcome was written. The run is triggered through the real cron
route of a real ``executor serve`` subprocess. After the kill the stranded leases are expired
with SQL (what 31 s of waiting would do), a fresh app is started and the cron route called again.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from executor.run import KILL_POINTS
from executor.sandbox import SandboxHandle
from tests.chaos.harness import Apps, ChaosDb, conclude, sandbox_log
from tests.pipeline_helpers import PHONES, action

ACTIONS = 12
CONCURRENCY = 4
LATENCY_MS = 600


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_then_restart(
    point: str, chaos_db: ChaosDb, sandbox: SandboxHandle, apps: Apps
) -> None:
    started = time.monotonic()
    if point == "during_send":
        sandbox.configure(latency_ms=LATENCY_MS)
    env: dict[str, Any] = {"CHATEA_CONCURRENCY": CONCURRENCY, "CHATEA_TIMEOUT_SECONDS": 5}
    # The replacement process boots alongside the victim (it only serves after the kill).
    survivor = apps.start(chaos_db.url, sandbox.url, name=f"restart-{point}", wait=False, **env)
    victim = apps.start(
        chaos_db.url, sandbox.url, name=f"victim-{point}", EXECUTOR_TEST_KILL_AT=point, **env
    )
    victim.enqueue([action(f"K{i:02d}", PHONES[i]) for i in range(ACTIONS)])
    enqueued = chaos_db.ids()
    assert len(enqueued) == ACTIONS

    with pytest.raises(httpx.TransportError):
        victim.cron()
    assert victim.wait_dead() == -signal.SIGKILL

    in_flight = chaos_db.count("SENDING")
    assert in_flight == CONCURRENCY, chaos_db.states()
    if point == "after_claim":
        # Killed before any HTTP call: the provider saw nothing.
        assert sandbox.stats()["requests"] == 0
    elif point == "during_send":
        # Killed with requests on the wire: the provider still takes those it received (on a
        # loaded machine some may not have been written yet when the kill came).
        time.sleep(LATENCY_MS / 1000 + 0.5)
        assert sandbox.stats()["accepted"] <= in_flight
    else:
        # Killed after the provider answered, before the outcome was written.
        assert sandbox.stats()["accepted"] == in_flight
    delivered_before_restart = sandbox.stats()["accepted"]
    assert chaos_db.count("SENT") == 0  # nothing was finalized

    # While the leases live, a new run sends the rest and leaves the stranded rows alone.
    sandbox.configure(latency_ms=0)
    survivor.wait_ready()
    early = survivor.cron()
    assert early.status_code == 200, early.text
    assert early.json()["unknown"] == 0 and early.json()["sent"] == ACTIONS - in_flight
    assert chaos_db.count("SENDING") == in_flight

    # Lease expiry (simulated): the next run turns them UNKNOWN and never resends them.
    assert chaos_db.expire_leases() == in_flight
    late = survivor.cron()
    assert late.status_code == 200, late.text
    body = late.json()
    assert body["unknown"] == in_flight and body["sent"] == 0, body
    final = survivor.cron().json()
    assert final["status"] == "NOOP", final

    log = sandbox_log(sandbox)
    per_reference = Counter(r["reference"] for r in log)
    assert max(per_reference.values()) == 1, per_reference  # at most one request per action
    assert chaos_db.count("SENT") == sandbox.stats()["accepted"] - delivered_before_restart
    assert chaos_db.count("UNKNOWN") == in_flight
    conclude(
        f"kill_{point}",
        chaos_db,
        log,
        enqueued=enqueued,
        title=f"SIGKILL of the app {point.replace('_', ' ')}, restart, lease expiry",
        faults=f"1 SIGKILL ({point}); leases expired with SQL",
        faults_injected=1,
        started=started,
        waiting=(),
        max_unknown=in_flight,
        notes=(
            f"{in_flight} sends in flight at the kill, "
            f"{delivered_before_restart} of them delivered anyway"
        ),
    )
