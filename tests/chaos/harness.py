"""The chaos harness: a scenario's database, the real app in a subprocess, and how a scenario
ends (check + figures).

Lease expiry is simulated, not waited for: a lease is CHATEA_TIMEOUT_SECONDS + 30 s, so after a
kill a scenario moves ``lease_until`` of the stranded SENDING rows into the past with SQL
(:meth:`ChaosDb.expire_leases`), exactly what the clock would do 30-odd seconds later. Retry
backoff (minutes) and the breaker's open window are skipped the same way
(:meth:`ChaosDb.make_due`, :meth:`ChaosDb.end_breaker_window`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from executor.db import libpq_url
from executor.sandbox import recipient_hash
from tests import pii_guard
from tests.chaos.checker import CheckResult, Forbidden, check, record
from tests.conftest import (
    TEST_ADMIN_SECRET,
    TEST_API_KEY,
    TEST_CRON_SECRET,
    TEST_PHONE_HASH_KEY,
    TEST_PII_KEY,
)

REPO = Path(__file__).resolve().parents[2]
DEVICE_ID = "device-1"
CRON = {"Authorization": f"Bearer {TEST_CRON_SECRET}"}
ADMIN = {"Authorization": f"Bearer {TEST_ADMIN_SECRET}"}
CRON_PATH = "/api/cron/run-executor"


SERVE = (sys.executable, "-m", "executor.cli", "serve", "--host", "127.0.0.1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def dead_port() -> Iterator[int]:
    """A local port that refuses connections for as long as the block lasts: bound, never
    listening, so no other process can take it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def e164(phone: str) -> str:
    return phone if phone.startswith("+") else "+57" + phone


def sandbox_recipient(phone: str) -> str:
    return recipient_hash(e164(phone))


@dataclass
class ChaosDb:
    """One scenario's database, driven with plain psycopg (autocommit)."""

    url: str  # postgresql+psycopg:// (what the app gets)
    name: str

    @property
    def libpq(self) -> str:
        return libpq_url(self.url)

    def sql(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.libpq, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

    def scalar(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        rows = self.sql(query, params)
        return rows[0][0] if rows else None

    def states(self) -> dict[str, str]:
        return {str(i): s for i, s in self.sql("SELECT id, status FROM actions")}

    def ids(self) -> list[str]:
        return [str(r[0]) for r in self.sql("SELECT id FROM actions ORDER BY id")]

    def count(self, status: str) -> int:
        return int(self.scalar("SELECT count(*) FROM actions WHERE status = %s", (status,)))

    def runs(self) -> int:
        return int(self.scalar("SELECT count(*) FROM executor_runs"))

    def expire_leases(self) -> int:
        """What 30-odd seconds would do to a dead process's leases."""
        return len(
            self.sql(
                "UPDATE actions SET lease_until = now() - interval '1 second'"
                " WHERE status = 'SENDING' RETURNING id"
            )
        )

    def make_due(self) -> int:
        """Skip the retry backoff: every PLANNED action is due now."""
        return len(
            self.sql(
                "UPDATE actions SET next_attempt_at = now() - interval '1 second'"
                " WHERE status = 'PLANNED' AND next_attempt_at > now() RETURNING id"
            )
        )

    def age_quota(self, seconds: float) -> None:
        """Move past sends back in time: equivalent to the clock moving forward."""
        self.sql(
            "UPDATE actions SET executed_at = executed_at - make_interval(secs => %s)"
            " WHERE executed_at IS NOT NULL",
            (seconds,),
        )

    def end_breaker_window(self) -> int:
        return len(
            self.sql(
                "UPDATE circuit_breakers SET open_until = now() - interval '1 second'"
                " WHERE state = 'open' RETURNING device_id"
            )
        )

    def breaker_state(self) -> str:
        return str(
            self.scalar("SELECT state FROM circuit_breakers WHERE device_id = %s", (DEVICE_ID,))
            or "closed"
        )

    def server_version(self) -> str:
        return str(self.scalar("SHOW server_version")).split()[0]

    def events_consistent(self) -> list[str]:
        """Actions whose latest audit event disagrees with their status (a partial write)."""
        rows = self.sql(
            """
            SELECT a.id, a.status, e.status FROM actions a
            LEFT JOIN LATERAL (
                SELECT status FROM action_events WHERE action_id = a.id ORDER BY id DESC LIMIT 1
            ) e ON true
            WHERE e.status IS DISTINCT FROM a.status
              AND NOT (a.status = 'PLANNED' AND e.status IS NULL)
            """
        )
        return [f"{i}: status {s}, last event {e}" for i, s, e in rows]


def app_env(database_url: str, provider_url: str, **overrides: Any) -> dict[str, str]:
    """The environment of an app or runner subprocess: nothing inherited but the basics."""
    env = {k: v for k in ("PATH", "HOME", "LANG", "TMPDIR") if (v := os.environ.get(k))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "EXECUTOR_ENABLED": "true",
            "CHATEA_API_URL": provider_url,
            "CHATEA_API_KEY": TEST_API_KEY,
            "CHATEA_DEVICE_ID": DEVICE_ID,
            "CRON_SECRET": TEST_CRON_SECRET,
            "ADMIN_SECRET": TEST_ADMIN_SECRET,
            "PHONE_HASH_KEY": TEST_PHONE_HASH_KEY,
            "PII_ENCRYPTION_KEY": TEST_PII_KEY,
            "CHATEA_TIMEOUT_SECONDS": "5",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.update({k.upper(): str(v) for k, v in overrides.items()})
    return env


@dataclass
class App:
    """``executor serve`` in a subprocess, on a free port, logs to a file."""

    env: dict[str, str]
    log_path: Path
    name: str = "app"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _client: httpx.Client | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=60, trust_env=False)
        return self._client

    def start(self, *, wait: bool = True) -> App:
        self.port = free_port()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*SERVE, "--port", str(self.port)],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 40.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        retries = 3
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "already in use" in self.output() and retries:
                    retries -= 1  # another process took the free port first: take another
                    self.start(wait=False)
                    continue
                raise AssertionError(f"{self.name} exited early:\n{self.output()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                # Any answer will do: /api/health is 503 on purpose when the database is down.
                if httpx.get(self.url + "/api/health", timeout=2, trust_env=False).status_code:
                    return
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not start:\n{self.output()[-3000:]}")

    def cron(self, method: str = "GET", **params: Any) -> httpx.Response:
        return self.client.request(method, CRON_PATH, headers=CRON, params=params)

    def enqueue(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        response = self.client.post("/api/actions", headers=ADMIN, json={"actions": items})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert not body["rejected"], body
        return body

    def opt_out(self, phone: str) -> None:
        response = self.client.post("/api/admin/opt-outs", headers=ADMIN, json={"phone": phone})
        assert response.status_code == 200, response.text

    def wait_dead(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def output(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict):
                    events.append(data)
        return events


class Apps:
    """Starts apps for one test and always stops them; their output goes to the PII guard."""

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.tmp_path = tmp_path
        self.request = request
        self.started: list[App] = []

    def start(
        self, db_url: str, provider_url: str, *, name: str = "app", wait: bool = True, **env: Any
    ) -> App:
        app = App(
            app_env(db_url, provider_url, **env),
            self.tmp_path / f"{name}-{len(self.started)}.log",
            name=name,
        )
        self.started.append(app)
        return app.start(wait=wait)

    def close(self) -> None:
        for app in self.started:
            app.stop()
            pii_guard.record(f"{self.request.node.nodeid} {app.name} output", app.output())


def sandbox_log(handle: Any) -> list[dict[str, Any]]:
    """The provider's own record of every POST /messages it received."""
    entries: list[dict[str, Any]] = handle.requests()
    return entries


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def conclude(
    scenario: str,
    db: ChaosDb,
    requests: list[dict[str, Any]],
    *,
    enqueued: list[str],
    title: str,
    faults: str,
    faults_injected: int,
    started: float,
    waiting: Sequence[str] = ("PLANNED",),
    forbidden: Forbidden | None = None,
    max_unknown: int | None = None,
    notes: str = "",
) -> CheckResult:
    """Check the scenario's history, record its figures, then assert 0 lost / 0 duplicated /
    0 unexpected, audit events consistent with statuses, and the UNKNOWN bound."""
    result = check(enqueued, db.states(), requests, waiting=waiting, forbidden=forbidden)
    record(
        scenario,
        result,
        title=title,
        faults=faults,
        faults_injected=faults_injected,
        runs=db.runs(),
        started=started,
        postgres=db.server_version(),
        notes=notes,
    )
    assert result.ok, result.summary()
    assert not db.events_consistent(), db.events_consistent()
    if max_unknown is not None:
        assert result.unknown <= max_unknown, result.summary()
    return result


def enqueue_direct(database_url: str, items: list[dict[str, Any]]) -> None:
    """Intake in this process (the same code POST /api/actions runs), for scenarios that have
    no app subprocess."""
    import asyncio

    from executor.db import create_async_db_engine
    from executor.intake import intake_actions
    from tests.conftest import make_settings

    async def go() -> None:
        engine = create_async_db_engine(database_url)
        try:
            result = await intake_actions(engine, make_settings(database_url), items)
        finally:
            await engine.dispose()
        assert result.accepted == len(items) and not result.rejected, result.to_json()

    asyncio.run(go())


# Every due action of a run ends in exactly one of these counters (executor/run.py): a claimed
# action is skipped by a rule, fails its precheck, or is sent with one HTTP outcome; what was
# not claimed is counted by why (pilot scope, breaker open, allowance used up); a dry run counts
# wouldSend instead of sending.
RUN_OUTCOME_KEYS = (
    "sent",
    "wouldSend",
    "failed4xx",
    "failed5xx",
    "failedPrecheck",
    "unknown",
    "skippedDuplicate",
    "skippedRateLimit",
    "skippedOptOut",
    "skippedCircuitOpen",
    "skippedPilot",
)


def assert_run_adds_up(
    body: dict[str, Any], recovered_leases: int = 0, expired_during_run: int = 0
) -> None:
    """``planned`` (every due PLANNED action at the start) is accounted for exactly once by the
    outcome counters; ``unknown`` also holds the leases recovered in housekeeping, which were
    not due PLANNED actions, so they are taken out.

    The one legitimate gap: an action counted as due that reaches its ``expires_at`` while the
    run is going is neither claimed nor counted (the next run expires it), so up to
    ``expired_during_run`` actions may be missing - never more, and never extra ones."""
    handled = sum(int(body[k]) for k in RUN_OUTCOME_KEYS) - recovered_leases
    assert 0 <= body["planned"] - handled <= expired_during_run, (handled, body)


@dataclass
class Drive:
    """What :func:`drive` saw: run bodies, retry delays checked, breaker openings."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    schedule_checks: int = 0
    breaker_openings: int = 0
    blocked_runs: int = 0


def check_retry_schedule(db: ChaosDb, retry_after: float | None = None) -> int:
    """Every retry-scheduled action waits its backoff: 1, 5, 15 min +-10 % after attempt 1, 2, 3
    (Retry-After wins when longer). Returns how many delays were checked."""
    from executor.run import RETRY_BACKOFF_SECONDS, RETRY_JITTER

    rows = db.sql(
        "SELECT id, attempts, error_code,"
        " extract(epoch FROM next_attempt_at - updated_at)::float8"
        " FROM actions WHERE status = 'PLANNED' AND attempts >= 1 AND next_attempt_at > now()"
    )
    for action_id, attempts, code, delay in rows:
        base = RETRY_BACKOFF_SECONDS[min(attempts, len(RETRY_BACKOFF_SECONDS)) - 1]
        low, high = base * (1 - RETRY_JITTER), base * (1 + RETRY_JITTER)
        if retry_after is not None and code in ("HTTP_429", "HTTP_503"):
            low, high = max(low, retry_after), max(high, retry_after)
        assert low - 0.01 <= delay <= high + 0.01, (action_id, attempts, code, delay)
    return len(rows)


def drive(
    app: App,
    db: ChaosDb,
    provider: Any,
    *,
    max_runs: int = 60,
    retry_after: float | None = None,
    real_wait_seconds: float | None = None,
    until_done: bool = True,
) -> Drive:
    """Call the cron route again and again through a fault storm, checking after every run that
    the run adds up, retries keep their schedule and an open breaker sends nothing; between runs
    retries are made due and open windows ended with SQL (the first window may be waited out
    for real with ``real_wait_seconds``)."""
    seen = Drive()
    for _ in range(max_runs):
        before = len(provider.requests())
        response = app.cron()
        assert response.status_code == 200, response.text
        body = response.json()
        seen.runs.append(body)
        assert_run_adds_up(body)
        new = provider.requests()[before:]
        assert body["sent"] == sum(1 for r in new if r["status"] == 200), (body, new)
        seen.schedule_checks += check_retry_schedule(db, retry_after)
        if db.breaker_state() == "open":
            seen.breaker_openings += 1
            before = len(provider.requests())
            blocked = app.cron().json()
            seen.runs.append(blocked)
            seen.blocked_runs += 1
            assert blocked["sent"] == 0 and blocked["failed5xx"] == 0, blocked
            due_in_scope = blocked["planned"] - blocked["skippedPilot"]
            assert blocked["skippedCircuitOpen"] == due_in_scope, blocked
            assert len(provider.requests()) == before  # nothing reached the provider
            if real_wait_seconds is not None and seen.breaker_openings == 1:
                time.sleep(real_wait_seconds)
            else:
                db.end_breaker_window()
        if until_done and db.count("PLANNED") == 0:
            break
        db.make_due()
    return seen
