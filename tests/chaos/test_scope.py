"""Pilot scope, opt-outs and the kill switch under a fault storm, on live processes.

One process runs with EXECUTOR_ENABLED=false (only dry runs: the provider must hear nothing
while it is the one called), another with the pilot scope (one city, one carrier) and a
flaky provider. Out-of-scope actions must never reach the provider and stay PLANNED; opted-out
recipients must never be messaged after their opt-out.
"""

from __future__ import annotations

import time

from executor.sandbox import SandboxHandle
from tests.chaos.checker import Forbidden
from tests.chaos.harness import Apps, ChaosDb, conclude, drive, sandbox_log, sandbox_recipient
from tests.pipeline_helpers import PHONES, action


def test_scope_opt_outs_and_kill_switch(
    chaos_db: ChaosDb, sandbox: SandboxHandle, apps: Apps
) -> None:
    started = time.monotonic()
    scope = {"PILOT_CITY": "Bogotá", "PILOT_CARRIER": "Servientrega,TCC"}
    limits = {"RATE_LIMIT_PER_MINUTE": 1000, "DAILY_SEND_LIMIT": 1000}
    disabled = apps.start(chaos_db.url, sandbox.url, name="disabled", EXECUTOR_ENABLED="false")
    enabled = apps.start(chaos_db.url, sandbox.url, name="pilot", wait=False, **scope, **limits)
    items = []
    for i in range(30):
        city = ("BOGOTA", "Medellín", " bogotá ")[i % 3]
        carrier = ("servientrega", "Coordinadora", "TCC")[(i // 3) % 3]
        items.append(action(f"S{i:02d}", PHONES[i], city=city, carrier=carrier))
    disabled.enqueue(items)
    enqueued = chaos_db.ids()
    out_of_scope = {
        str(i)
        for (i,) in chaos_db.sql(
            "SELECT id FROM actions WHERE city_key <> 'bogota'"
            " OR carrier_key NOT IN ('servientrega', 'tcc')"
        )
    }
    assert 0 < len(out_of_scope) < 30

    # Kill switch off: dry runs only, whatever the cron does.
    window_start = time.time()
    for _ in range(3):
        body = disabled.cron().json()
        assert body["dryRun"] is True and body["sent"] == 0 and body["wouldSend"] > 0, body
    window_end = time.time()
    assert sandbox.stats()["requests"] == 0 and chaos_db.count("PLANNED") == 30

    # Two recipients opt out before the pilot sends anything.
    opted = [PHONES[0], PHONES[3]]
    for phone in opted:
        disabled.opt_out(phone)
    opted_at = time.time() - 1.0
    enabled.wait_ready()
    sandbox.configure(fail_rate=0.3)
    seen = drive(enabled, chaos_db, sandbox, until_done=False, max_runs=25)
    sandbox.configure(fail_rate=0.0)
    chaos_db.make_due()
    chaos_db.end_breaker_window()
    drive(enabled, chaos_db, sandbox, until_done=False, max_runs=8)

    in_scope_planned = chaos_db.scalar(
        "SELECT count(*) FROM actions WHERE status = 'PLANNED' AND NOT (id = ANY(%s::uuid[]))",
        (sorted(out_of_scope),),
    )
    assert in_scope_planned == 0
    assert {s for i, s in chaos_db.states().items() if i in out_of_scope} == {"PLANNED"}
    assert chaos_db.count("SKIPPED_OPT_OUT") >= 1
    assert sum(r["skippedPilot"] for r in seen.runs) > 0
    log = sandbox_log(sandbox)
    conclude(
        "scope_optout_killswitch",
        chaos_db,
        log,
        enqueued=enqueued,
        title="Pilot scope + opt-outs + kill switch off, with 30 % of sends failing (503)",
        faults="fail_rate 0.3 on the pilot; 3 cron calls while disabled",
        faults_injected=3 + sum(1 for r in log if r["status"] != 200),
        started=started,
        waiting=("PLANNED",),
        forbidden=Forbidden(
            references=frozenset(out_of_scope),
            recipients_since={sandbox_recipient(p): opted_at for p in opted},
            windows=((window_start, window_end),),
        ),
        max_unknown=0,
        notes=(
            f"{len(out_of_scope)} out of scope stayed PLANNED, "
            f"{chaos_db.count('SKIPPED_OPT_OUT')} skipped for opt-out, "
            f"{len(seen.runs)} pilot runs"
        ),
    )
