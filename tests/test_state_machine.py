"""A Hypothesis state machine over the run pipeline on real Postgres, with a simulated clock.

Rules: enqueue, run, crash mid-send, provider faults, clock jumps (across minute and Bogotá
midnight boundaries), opt-outs, pilot scope changes, the kill switch. After every step the
model checks the properties the product promises:

- at most one delivered-or-unknown request per action, and no request after it; at most
  1 + MAX_RETRIES requests per action;
- per-minute, daily and per-phone limits (and the one-per-guide+trigger-per-day rule) hold in
  every window of the simulated clock, counted on the database's own ``executed_at``;
- nothing is sent to an opted-out phone, outside the pilot scope, or while disabled; a dry run
  changes no action;
- every RunResult adds up (see ``assert_run_adds_up``) and matches what the provider answered.

The simulated clock: the machine's database gets ``public.now()`` = ``pg_catalog.now()`` + an
offset read from ``public.sim_clock``, and ``search_path = public, pg_catalog`` for every
connection (``ALTER DATABASE ... SET``), so every unqualified ``now()`` of the pipeline's SQL -
limits, leases, backoff, expiry, business day, breaker - runs on the simulated clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.config import Settings
from executor.db import create_async_db_engine, libpq_url, normalize_database_url
from executor.intake import intake_actions
from executor.phones import PhoneVault, normalize_phone
from executor.run import RunResult, run_executor
from tests.chaos.checker import check, max_in_window
from tests.chaos.harness import assert_run_adds_up
from tests.conftest import TABLES, TEST_API_KEY, create_database, drop_database, make_settings
from tests.pipeline_helpers import PHONES, action

BOGOTA = ZoneInfo("America/Bogota")
PER_MINUTE = 4
DAILY = 10
PER_PHONE = 2
MAX_RETRIES = 2
MACHINE_PHONES = PHONES[:6]
GUIDES = ("G1", "G2", "G3", "G4", "G5")
CITIES = ("Bogotá", "Medellín")
DELIVERED_OR_UNKNOWN = ("ok", "unknown", "crash")

CLOCK_SQL = """
CREATE TABLE public.sim_clock (offset_seconds double precision NOT NULL);
INSERT INTO public.sim_clock VALUES (0);
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.now() + make_interval(secs => (SELECT offset_seconds FROM public.sim_clock))
$$;
"""


@pytest.fixture(scope="module")
def machine_db(pg_server_url: str) -> Iterator[str]:
    """One database for the machine: migrated, with the simulated clock installed."""
    from executor.migrate import upgrade

    url = create_database(pg_server_url, prefix="executor_machine")
    upgrade(url)
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(CLOCK_SQL)
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET search_path = public, pg_catalog").format(
                sql.Identifier(name)
            )
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE sim_clock SET offset_seconds = 3600")
        row = conn.execute("SELECT extract(epoch FROM now() - pg_catalog.now())").fetchone()
        assert row is not None and abs(float(row[0]) - 3600) < 1e-6, "now() is not simulated"
    yield normalize_database_url(url)
    drop_database(pg_server_url, url)


# ---- the provider --------------------------------------------------------------------------


@dataclass
class Request:
    reference: str
    to: str
    run: int
    scope: tuple[str, ...] | None
    real_at: float
    kind: str = "pending"  # ok | 4xx | 5xx | unknown | crash
    executed_at: datetime | None = None


@dataclass
class SimProvider:
    """'Chatea' as an httpx transport: records every request that reached it and answers per
    the current fault pattern (cycled request by request)."""

    pattern: tuple[str, ...] = ("ok",)
    requests: list[Request] = field(default_factory=list)
    run_no: int = 0
    scope: tuple[str, ...] | None = None
    _turn: int = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        fault = self.pattern[self._turn % len(self.pattern)]
        self._turn += 1
        if fault == "connect":  # refused before anything was written: never reached us
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content)
        entry = Request(body["reference"], body["to"], self.run_no, self.scope, time.time())
        self.requests.append(entry)
        if fault == "hang":
            entry.kind = "crash"
            await asyncio.Event().wait()  # until the run is cancelled (the process "dies")
        if fault == "ok":
            entry.kind = "ok"
            return httpx.Response(200, json={"id": "wamid." + body["reference"][:8]})
        if fault in ("503", "429"):
            entry.kind = "5xx"
            headers = {"Retry-After": "90"} if fault == "429" else {}
            return httpx.Response(int(fault), headers=headers, json={"error": "busy"})
        if fault == "400":
            entry.kind = "4xx"
            return httpx.Response(400, json={"error": "bad recipient"})
        entry.kind = "unknown"
        if fault == "timeout":
            raise httpx.ReadTimeout("read timed out", request=request)
        raise httpx.RemoteProtocolError("server disconnected", request=request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


FAULTS = st.lists(
    st.sampled_from(["ok", "ok", "503", "429", "400", "timeout", "drop", "connect"]),
    min_size=1,
    max_size=4,
).map(tuple)


# ---- the machine ---------------------------------------------------------------------------


class PipelineMachine(RuleBasedStateMachine):
    db_url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine: AsyncEngine = create_async_db_engine(self.db_url)
        # The model's own reads and writes: one plain connection (same simulated clock).
        self.conn = psycopg.connect(libpq_url(self.db_url), autocommit=True)
        self.provider = SimProvider()
        self.offset = 0.0
        self.enabled = True
        self.pilot: str | None = None
        self.opted_out: dict[str, int] = {}  # e164 -> provider request count at opt-out
        self.keys = 0
        self.runs = 0
        self.crashes = 0

    def teardown(self) -> None:
        self.conn.close()
        self.loop.run_until_complete(self.engine.dispose())
        self.loop.close()

    # -- plumbing -----------------------------------------------------------------------------

    def go(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def db(self, query: str, *params: Any) -> list[Any]:
        cur = self.conn.execute(query, params)
        return list(cur.fetchall()) if cur.description else []

    def current_settings(self) -> Settings:
        return make_settings(
            self.db_url,
            executor_enabled=self.enabled,
            pilot_city=self.pilot,
            chatea_api_url="http://chatea.test",
            chatea_api_key=TEST_API_KEY,
            chatea_device_id="device-1",
            rate_limit_per_minute=PER_MINUTE,
            daily_send_limit=DAILY,
            rate_limit_per_phone_day=PER_PHONE,
            max_retries=MAX_RETRIES,
            chatea_concurrency=2,
            chatea_timeout_seconds=5,
            circuit_breaker_threshold=3,
        )

    def set_offset(self, seconds: float) -> None:
        self.offset = seconds
        self.db("UPDATE sim_clock SET offset_seconds = %s", seconds)

    def sim_now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def stamp_requests(self, first: int) -> None:
        """Give the run's requests the claim time the database recorded for their action."""
        new = self.provider.requests[first:]
        if not new:
            return
        rows = self.db(
            "SELECT id::text, executed_at FROM actions WHERE id = ANY(%s::uuid[])",
            [r.reference for r in new],
        )
        executed = dict(rows)
        for r in new:
            r.executed_at = executed[r.reference]

    # -- rules --------------------------------------------------------------------------------

    @initialize(
        start=st.sampled_from(["now", "before_midnight"]),
        phones=st.lists(st.sampled_from(range(len(MACHINE_PHONES))), min_size=3, max_size=8),
    )
    def start(self, start: str, phones: list[int]) -> None:
        self.db("TRUNCATE " + ", ".join(TABLES) + " RESTART IDENTITY CASCADE")
        self.set_offset(0.0)
        if start == "before_midnight":
            self.jump_before_midnight()
        for i, phone in enumerate(phones):  # a first batch, so that runs have work at once
            self.enqueue([GUIDES[i % len(GUIDES)]], phone, CITIES[i % 3 // 2], "at_office_3d")

    @rule(
        guides=st.lists(st.sampled_from(GUIDES), min_size=1, max_size=4),
        phone=st.sampled_from([*range(len(MACHINE_PHONES)), None]),
        city=st.sampled_from(CITIES),
        trigger=st.sampled_from(["at_office_3d", "no_movement_48h"]),
    )
    def enqueue(self, guides: list[str], phone: int | None, city: str, trigger: str) -> None:
        number = None if phone is None else MACHINE_PHONES[phone]
        items = []
        for guide in guides:
            self.keys += 1
            items.append(action(guide, number, trigger=trigger, city=city, key=f"k{self.keys}"))
        result = self.go(intake_actions(self.engine, self.current_settings(), items))
        assert result.accepted == len(items), result.to_json()

    @rule(advance=st.sampled_from([0.0, 0.0, 20.0, 61.0]))
    def run(self, advance: float) -> None:
        """The cron fires (after the clock moved ``advance`` seconds)."""
        if advance:
            self.set_offset(self.offset + advance)
        self.runs += 1
        self.provider.run_no = self.runs
        self.provider.scope = self.scope_keys()
        first = len(self.provider.requests)
        before = self.snapshot() if not self.enabled else None
        result: RunResult = self.go(
            run_executor(
                self.engine, self.current_settings(), chatea_transport=self.provider.transport
            )
        )
        self.stamp_requests(first)
        body = result.to_json()
        assert body["errorSummary"] is None, body
        recovered = self.db(
            "SELECT count(*) FROM action_events WHERE run_id = %s AND error_code = 'LEASE_EXPIRED'",
            result.run_id,
        )[0][0]
        expiring = self.db(
            "SELECT count(*) FROM actions a, executor_runs r WHERE r.id = %s"
            " AND a.status = 'PLANNED' AND a.expires_at > r.started_at"
            " AND a.expires_at <= r.finished_at",
            result.run_id,
        )[0][0]
        assert_run_adds_up(body, recovered_leases=recovered, expired_during_run=expiring)
        kinds = Counter(r.kind for r in self.provider.requests[first:])
        assert body["sent"] == kinds["ok"], (body, kinds)
        assert body["failed4xx"] == kinds["4xx"], (body, kinds)
        assert body["unknown"] - recovered == kinds["unknown"], (body, kinds)
        if before is not None:
            assert body["dryRun"] and not kinds, (body, kinds)
            assert self.snapshot() == before  # a dry run writes nothing but its run row

    @precondition(lambda self: self.enabled and self.crashes < 3)
    @rule()
    def crash_mid_send(self) -> None:
        """The process dies with its HTTP calls in flight (the run task is cancelled there)."""
        self.runs += 1
        self.crashes += 1
        self.provider.run_no = self.runs
        self.provider.scope = self.scope_keys()
        first = len(self.provider.requests)
        pattern = self.provider.pattern
        self.provider.pattern = ("hang",)

        async def crash() -> None:
            task = asyncio.ensure_future(
                run_executor(
                    self.engine, self.current_settings(), chatea_transport=self.provider.transport
                )
            )
            while not task.done() and len(self.provider.requests) == first:
                await asyncio.sleep(0.005)
            if not task.done():
                await asyncio.sleep(0.02)  # let the rest of the batch reach the provider
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        try:
            self.go(crash())
        finally:
            self.provider.pattern = pattern
        self.stamp_requests(first)

    @rule(pattern=FAULTS)
    def provider_faults(self, pattern: tuple[str, ...]) -> None:
        self.provider.pattern = pattern

    @rule(seconds=st.sampled_from([1.0, 30.0, 61.0, 3600.0]))
    def advance_clock(self, seconds: float) -> None:
        self.set_offset(self.offset + seconds)

    @rule()
    def jump_before_midnight(self) -> None:
        """To 20 s before the next midnight in Bogotá: the next minutes cross the business day."""
        now = self.sim_now()
        local = now.astimezone(BOGOTA)
        midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), BOGOTA)
        target = midnight - timedelta(seconds=20)
        if target > now:
            self.set_offset(self.offset + (target - now).total_seconds())

    @rule(phone=st.sampled_from(range(len(MACHINE_PHONES))))
    def opt_out(self, phone: int) -> None:
        e164 = normalize_phone(MACHINE_PHONES[phone])
        phone_hash = PhoneVault.from_settings(self.current_settings()).hash(e164)
        self.db("INSERT INTO opt_outs (phone_hash) VALUES (%s) ON CONFLICT DO NOTHING", phone_hash)
        self.opted_out.setdefault(e164, len(self.provider.requests))

    @rule(city=st.sampled_from([None, *CITIES]))
    def pilot_scope(self, city: str | None) -> None:
        self.pilot = city

    @rule()
    def kill_switch(self) -> None:
        self.enabled = not self.enabled

    # -- model --------------------------------------------------------------------------------

    def scope_keys(self) -> tuple[str, ...] | None:
        return self.current_settings().pilot_cities or None

    def snapshot(self) -> list[Any]:
        return self.db(
            "SELECT id, status, attempts, next_attempt_at, lease_until, attempt_id, executed_at"
            " FROM actions ORDER BY id"
        )

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def promises_hold(self) -> None:
        rows = self.db("SELECT id::text, status, city_key, guide, trigger FROM actions")
        actions = {r[0]: r for r in rows}
        requests = self.provider.requests
        self.check_once_per_action(requests)
        counted = [r for r in requests if r.kind in DELIVERED_OR_UNKNOWN]
        self.check_limits(counted, actions)
        self.check_nothing_forbidden(requests, actions)
        self.check_history(requests, {i: r[1] for i, r in actions.items()})

    @staticmethod
    def check_once_per_action(requests: list[Request]) -> None:
        per_action: dict[str, list[str]] = defaultdict(list)
        for r in requests:
            per_action[r.reference].append(r.kind)
        for reference, kinds in per_action.items():
            final = [k for k in kinds if k in DELIVERED_OR_UNKNOWN]
            assert len(final) <= 1, (reference, kinds)
            # After a delivery, an unknown outcome or a permanent 4xx: never another request.
            assert all(k == "5xx" for k in kinds[:-1]), (reference, kinds)
            assert len(kinds) <= 1 + MAX_RETRIES, (reference, kinds)

    @staticmethod
    def check_limits(counted: list[Request], actions: dict[str, Any]) -> None:
        """Limits on the simulated clock: ``executed_at`` is the database's claim time."""
        times = [r.executed_at.timestamp() for r in counted if r.executed_at is not None]
        assert max_in_window(times, 60.0) <= PER_MINUTE
        days: Counter[Any] = Counter()
        phone_days: Counter[Any] = Counter()
        pairs: Counter[Any] = Counter()
        for r in counted:
            assert r.executed_at is not None
            day = r.executed_at.astimezone(BOGOTA).date()
            days[day] += 1
            phone_days[(r.to, day)] += 1
            _, _, _, guide, trigger = actions[r.reference]
            pairs[(guide, trigger, day)] += 1
        assert max(days.values(), default=0) <= DAILY, days
        assert max(phone_days.values(), default=0) <= PER_PHONE, phone_days
        assert max(pairs.values(), default=0) <= 1, pairs  # one per guide+trigger a day

    def check_nothing_forbidden(self, requests: list[Request], actions: dict[str, Any]) -> None:
        for index, r in enumerate(requests):
            since = self.opted_out.get(r.to)
            assert since is None or index < since, "sent to an opted-out phone"
            city_key = actions[r.reference][2]
            assert r.scope is None or city_key in r.scope, (r, city_key)

    @staticmethod
    def check_history(requests: list[Request], states: dict[str, str]) -> None:
        log = [
            {"reference": r.reference, "accepted": r.kind == "ok", "received_at": r.real_at}
            for r in requests
        ]
        result = check(list(states), states, log, waiting=("PLANNED", "SENDING"))
        assert result.ok, result.summary()
        expected = {"ok": ("SENT",), "unknown": ("UNKNOWN",), "crash": ("SENDING", "UNKNOWN")}
        for r in requests:
            if r.kind in expected:
                assert states[r.reference] in expected[r.kind], (r, states[r.reference])


@pytest.mark.slow
def test_pipeline_state_machine(machine_db: str) -> None:
    from tests.chaos.checker import CheckResult, record

    started = time.monotonic()
    PipelineMachine.db_url = machine_db
    totals: Counter[str] = Counter()
    original_teardown = PipelineMachine.teardown

    def counting_teardown(self: PipelineMachine) -> None:
        totals["examples"] += 1
        totals["runs"] += self.runs
        totals["crashes"] += self.crashes
        totals["requests"] += len(self.provider.requests)
        totals["actions"] += self.keys
        totals["unknown"] += sum(
            1 for r in self.provider.requests if r.kind in ("unknown", "crash")
        )
        totals["faults"] += sum(1 for r in self.provider.requests if r.kind != "ok")
        original_teardown(self)

    PipelineMachine.teardown = counting_teardown  # type: ignore[method-assign]
    try:
        run_state_machine_as_test(
            PipelineMachine,
            settings=settings(
                max_examples=40,
                stateful_step_count=40,
                deadline=None,
                database=None,
                print_blob=True,
                # The mutation checks only need to know that it fails, not a minimal example.
                phases=[Phase.generate] if os.environ.get("EXECUTOR_MUTATION_RUN") else list(Phase),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        PipelineMachine.teardown = original_teardown  # type: ignore[method-assign]
    summary = CheckResult(
        enqueued=totals["actions"],
        provider_requests=totals["requests"],
        delivered=totals["requests"] - totals["faults"],
        unknown=totals["unknown"],
        by_status={},
    )
    with psycopg.connect(libpq_url(machine_db)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    record(
        "state_machine",
        summary,
        title=f"Hypothesis state machine: {totals['examples']} histories of up to 40 steps",
        faults="crash mid-send, 503/429/400/timeout/drop/refused, clock jumps, opt-outs, scope",
        faults_injected=totals["faults"] + totals["crashes"],
        runs=totals["runs"],
        started=started,
        postgres=str(row[0]).split()[0] if row else "",
        notes="every invariant checked after every step (limits on the simulated clock)",
    )
