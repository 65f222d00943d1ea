"""Five runner processes with the run lock bypassed, started at the same instant.

Only the quota lock and the database counts stand between them and the limits. 60 actions over
20 recipients (3 each, consecutive in due order), RATE_LIMIT_PER_MINUTE=20,
RATE_LIMIT_PER_PHONE_DAY=2, DAILY_SEND_LIMIT=30:

- round 1: exactly 20 requests (the minute), every recipient's third action SKIPPED_RATE_LIMIT
  when reached; the minute is then moved into the past with SQL (the clock moving 61 s);
- round 2: exactly 10 more (the day is full at 30);
- round 3: nothing.

Checked from the sandbox's own log: request timestamps (shifted by the simulated clock) and
recipient hashes; claims are disjoint (no action claimed twice in the audit trail).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest

from executor.sandbox import SandboxHandle
from tests import pii_guard
from tests.chaos.checker import max_in_window
from tests.chaos.harness import REPO, ChaosDb, app_env, conclude, enqueue_direct, sandbox_log
from tests.pipeline_helpers import PHONES, action

RUNNERS = 5
ACTIONS = 60
RECIPIENTS = 20
PER_MINUTE = 20
PER_PHONE = 2
DAILY = 30
CLOCK_STEP = 61.0


class Runners:
    """RUNNERS long-lived runner processes; :meth:`run_all` starts a run in each at once."""

    def __init__(self, env: dict[str, str]) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.runner"],
                cwd=REPO,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(RUNNERS)
        ]
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "ready", line + self.close()

    def run_all(self) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("run\n")
        for proc in self.procs:  # as close to simultaneous as pipes get
            assert proc.stdin is not None
            proc.stdin.flush()
        results = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("{"), line + self.close()
            results.append(json.loads(line))
        return results

    def close(self) -> str:
        """Stop every runner; returns their stderr (also handed to the PII guard)."""
        errors = []
        for proc in self.procs:
            try:
                _, err = proc.communicate(input="quit\n", timeout=30)
            except (subprocess.TimeoutExpired, ValueError, OSError):
                proc.kill()
                _, err = proc.communicate()
            pii_guard.record("chaos runner stderr", err or "")
            errors.append(err or "")
        return "\n".join(errors)[-3000:]


@pytest.mark.slow
def test_five_runners_without_run_lock_hold_every_limit(
    chaos_db: ChaosDb, sandbox: SandboxHandle
) -> None:
    started = time.monotonic()
    sandbox.configure(latency_ms=80)
    items = [action(f"R{i:02d}", PHONES[i // 3]) for i in range(ACTIONS)]
    enqueue_direct(chaos_db.url, items)
    # A fixed due order: each recipient's three actions are consecutive.
    chaos_db.sql(
        "UPDATE actions SET next_attempt_at = now() - interval '1 hour'"
        " + make_interval(secs => substring(guide from 2)::int / 100.0)"
    )
    enqueued = chaos_db.ids()
    env = app_env(
        chaos_db.url,
        sandbox.url,
        RATE_LIMIT_PER_MINUTE=PER_MINUTE,
        RATE_LIMIT_PER_PHONE_DAY=PER_PHONE,
        DAILY_SEND_LIMIT=DAILY,
        CHATEA_CONCURRENCY=5,
    )

    shift = 0.0  # how far the simulated clock is ahead of the real one
    sim_times: list[float] = []
    round_sent: list[int] = []
    runs = []
    runners = Runners(env)
    try:
        for _ in range(3):
            before = len(sandbox_log(sandbox))
            results = runners.run_all()
            runs += results
            new = sandbox_log(sandbox)[before:]
            sim_times += [float(r["received_at"]) + shift for r in new if r["accepted"]]
            round_sent.append(sum(1 for r in new if r["accepted"]))
            assert sum(r["sent"] for r in results) == round_sent[-1], results
            if len(round_sent) == 1:  # the runners really overlapped: several of them sent
                assert sum(1 for r in results if r["sent"]) >= 2, results
            chaos_db.age_quota(CLOCK_STEP)
            shift += CLOCK_STEP
    finally:
        runners.close()

    assert round_sent == [PER_MINUTE, DAILY - PER_MINUTE, 0], round_sent
    assert max_in_window(sim_times, 60.0) == PER_MINUTE
    log = sandbox_log(sandbox)
    per_recipient = Counter(r["recipient"] for r in log if r["accepted"])
    assert max(per_recipient.values()) == PER_PHONE, per_recipient
    assert sum(per_recipient.values()) == DAILY
    # Disjoint claims: no action was ever claimed by two runners.
    twice = chaos_db.sql(
        "SELECT action_id FROM action_events WHERE status = 'SENDING'"
        " GROUP BY action_id HAVING count(*) > 1"
    )
    assert twice == []
    phone_skips = chaos_db.scalar(
        "SELECT count(*) FROM actions WHERE status = 'SKIPPED_RATE_LIMIT'"
        " AND error_code = 'PHONE_DAILY_LIMIT'"
    )
    assert phone_skips >= 1
    assert chaos_db.count("SENDING") == 0
    conclude(
        "five_runners_no_run_lock",
        chaos_db,
        log,
        enqueued=enqueued,
        title="5 runner processes at once, run lock bypassed, 3 rounds (clock +61 s between)",
        faults="run lock bypassed; 5 concurrent claimers x 3 rounds",
        faults_injected=len(runs),
        started=started,
        waiting=("PLANNED",),
        max_unknown=0,
        notes=(
            f"sends per round {round_sent}; max {max_in_window(sim_times)} in any 60 s; "
            f"max {max(per_recipient.values())} per recipient; {phone_skips} per-phone skips"
        ),
    )
