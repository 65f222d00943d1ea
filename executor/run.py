"""One executor run (DESIGN §5): the function behind the cron route, ``executor run`` and the demo.

    lock ─▶ housekeeping ─▶ count due ─▶ ┌ breaker permit ─▶ claim (quota lock) ─▶ rules ┐
                                          └──── finalize ◀── send (CHATEA_CONCURRENCY) ◀┘
                                                 repeat while work, allowance and budget remain

Safety rests on the database, not on this process: the run lock and the quota lock are Postgres
advisory locks, limits are counted from rows with ``now()``, a claim is committed before its HTTP
call, and every finalize is guarded by the claim's ``attempt_id``. A process that dies at any
point leaves rows that the next run recovers (lease expiry -> UNKNOWN, never resent).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import random
import signal
import ssl
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx
from sqlalchemy import Row
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from executor import run_sql as q
from executor.config import Settings
from executor.errors import ExecutorError, PhoneError, RunLockBusy, TemplateError
from executor.logs import bind_run, get_logger, redact_text, unbind_run
from executor.phones import HttpPhoneLookup, PhoneResolver, PhoneVault, ResolvedPhone

if TYPE_CHECKING:
    from executor.breaker import BreakerPermit, CircuitBreaker

log = get_logger("executor.run")

RETRY_BACKOFF_SECONDS = (60.0, 300.0, 900.0)
# How long a run holding the run lock trusts its own view of a closed breaker between reads.
BREAKER_RECHECK_SECONDS = 1.0
RETRY_JITTER = 0.1
DRY_RUN_PAGE = 500
# Test seam for the chaos suite: SIGKILL this process at a named point of the run.
KILL_AT_ENV = "EXECUTOR_TEST_KILL_AT"
KILL_POINTS = ("after_claim", "during_send", "after_answer")

RunStatus = Literal["SUCCESS", "PARTIAL", "FAILED", "NOOP"]


@dataclass
class RunCounters:
    planned: int = 0
    sent: int = 0
    would_send: int = 0
    failed_4xx: int = 0
    failed_5xx: int = 0
    failed_precheck: int = 0
    unknown: int = 0
    skipped_duplicate: int = 0
    skipped_rate_limit: int = 0
    skipped_pilot: int = 0
    skipped_opt_out: int = 0
    skipped_circuit_open: int = 0
    expired: int = 0
    remaining_today: int = 0


_JSON_NAMES = {
    "planned": "planned",
    "sent": "sent",
    "would_send": "wouldSend",
    "failed_4xx": "failed4xx",
    "failed_5xx": "failed5xx",
    "failed_precheck": "failedPrecheck",
    "unknown": "unknown",
    "skipped_duplicate": "skippedDuplicate",
    "skipped_rate_limit": "skippedRateLimit",
    "skipped_pilot": "skippedPilot",
    "skipped_opt_out": "skippedOptOut",
    "skipped_circuit_open": "skippedCircuitOpen",
    "expired": "expired",
    "remaining_today": "remainingToday",
}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class RunResult:
    """The RunResult of DESIGN §7; also the content of its ``executor_runs`` row."""

    run_id: str
    status: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    counters: RunCounters
    error_summary: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "runId": self.run_id,
            "status": self.status,
            "dryRun": self.dry_run,
            "startedAt": _iso(self.started_at),
            "finishedAt": _iso(self.finished_at),
            "durationMs": self.duration_ms,
        }
        for name, value in asdict(self.counters).items():
            body[_JSON_NAMES[name]] = value
        body["errorSummary"] = self.error_summary
        return body


def run_status(counters: RunCounters, *, dry_run: bool, error: str | None) -> RunStatus:
    """NOOP: nothing in scope was due. FAILED: the run failed, or nothing attempted succeeded.
    PARTIAL: failures beside sends. SUCCESS: no failure."""
    if error is not None:
        return "FAILED"
    failures = counters.failed_4xx + counters.failed_5xx + counters.unknown
    failures += counters.failed_precheck
    if counters.planned == counters.skipped_pilot and failures == 0 and counters.expired == 0:
        return "NOOP"
    if dry_run:
        return "SUCCESS"
    if failures and counters.sent == 0:
        return "FAILED"
    if failures:
        return "PARTIAL"
    return "SUCCESS"


def sanitize_error(exc: BaseException) -> str:
    """An error summary safe for the run log: no SQL, no parameters, no phone."""
    if isinstance(exc, ExecutorError):
        return f"{exc.code}: {redact_text(exc.message)}"[:500]
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None)
        return f"database_error: {type(orig).__name__}" + (
            f" (SQLSTATE {sqlstate})" if sqlstate else ""
        )
    if isinstance(exc, SQLAlchemyError):
        return f"database_error: {type(exc).__name__}"
    return f"{type(exc).__name__}: {redact_text(str(exc))}"[:500]


def retry_delay(attempts: int, retry_after: float | None, rng: random.Random) -> float:
    """Backoff after the ``attempts``-th failed attempt: 1, 5, 15 min, jittered; Retry-After wins
    when it asks for longer."""
    base = RETRY_BACKOFF_SECONDS[min(max(attempts, 1), len(RETRY_BACKOFF_SECONDS)) - 1]
    delay = base * rng.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
    if retry_after is not None and retry_after > delay:
        delay = min(retry_after, 24 * 3600.0)
    return round(delay, 3)


@dataclass
class _Claimed:
    id: uuid.UUID
    attempt_id: uuid.UUID
    guide: str
    trigger: str
    variables: Mapping[str, Any]
    phone_hash: str | None
    attempts: int
    next_attempt_at: datetime

    @classmethod
    def from_row(cls, row: Row[Any]) -> _Claimed:
        variables = row.variables if isinstance(row.variables, Mapping) else {}
        return cls(
            id=row.id,
            attempt_id=row.attempt_id,
            guide=row.guide,
            trigger=row.trigger,
            variables=variables,
            phone_hash=row.phone_hash,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
        )


@dataclass
class _Outcome:
    """A finalize row: the new status of one claimed action."""

    action: _Claimed
    status: str
    code: str | None = None
    reason: str | None = None
    provider_id: str | None = None
    delay: float = 0.0
    detail: str | None = None


@dataclass
class _Send:
    action: _Claimed
    phone: ResolvedPhone
    parameters: list[str]


@dataclass
class _RuleState:
    """What the per-action rules know while walking a batch in order."""

    phone_counts: Counter[str] = field(default_factory=Counter)
    guide_pairs: set[tuple[str, str]] = field(default_factory=set)
    opted_out: set[str] = field(default_factory=set)

    def absorb(self, facts: Iterable[Any]) -> None:
        for row in facts:
            kind, k1, k2, n = row[0], row[1], row[2], row[3]
            if kind == "phone":
                self.phone_counts[k1] += int(n)
            elif kind == "guide":
                self.guide_pairs.add((k1, k2))
            else:
                self.opted_out.add(k1)


def _fast_failing_sniffio() -> None:
    """httpcore looks for the optional ``sniffio`` package on every lock it sets up, several
    times per request; when it is not installed every attempt searches ``sys.path`` again
    (about 0.5 ms each, the largest CPU cost of a send in the benchmarks). Recording it as
    absent makes the ImportError immediate; nothing changes when it is installed."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


_ssl_context: ssl.SSLContext | None = None


def _chatea_transport(concurrency: int) -> httpx.AsyncBaseTransport:
    """The transport ChateaClient would build for itself, with this process's one SSL context:
    building a context loads the CA bundle (about 30 ms here, on every run otherwise)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncHTTPTransport(verify=_ssl_context, limits=limits, retries=0)


def _maybe_kill(point: str) -> None:
    if os.environ.get(KILL_AT_ENV) == point:
        log.warning("run.test_kill", point=point)
        os.kill(os.getpid(), signal.SIGKILL)


class _Pipeline:
    def __init__(
        self,
        engine: AsyncEngine,
        conn: AsyncConnection,
        settings: Settings,
        run_id: uuid.UUID,
        dry_run: bool,
        chatea_transport: httpx.AsyncBaseTransport | None,
        lookup_transport: httpx.AsyncBaseTransport | None,
        deadline: float,
    ) -> None:
        self.engine = engine
        self.conn = conn
        self.settings = settings
        self.run_id = run_id
        self.dry_run = dry_run
        self.chatea_transport = chatea_transport
        self.lookup_transport = lookup_transport
        self.deadline = deadline
        self.counters = RunCounters()
        self.rng = random.Random()
        self.unsent: dict[uuid.UUID, _Claimed] = {}
        self.scope = {
            "cities": list(settings.pilot_cities),
            "carriers": list(settings.pilot_carriers),
        }
        self._resolver: PhoneResolver | None = None
        # Set by run_executor: this run holds the run lock (see _breaker_permit).
        self.holds_run_lock = False
        self._breaker_read_at = float("-inf")
        # The due-index key of the last claimed action: the next claim starts after it.
        self._claimed_up_to: tuple[datetime | str, uuid.UUID] = ("-infinity", uuid.UUID(int=0))
        self.in_scope_due = 0

    # ---- shared steps ------------------------------------------------------------------

    async def housekeeping(self) -> None:
        """Expire stale PLANNED actions, recover dead leases, purge old phones."""
        async with self.conn.begin():
            expired = await self.conn.execute(q.EXPIRE_ACTIONS, {"run_id": self.run_id})
            self.counters.expired = len(expired.fetchall())
            lost = await self.conn.execute(q.RECOVER_EXPIRED_LEASES, {"run_id": self.run_id})
            self.counters.unknown += len(lost.fetchall())
            await self.conn.execute(
                q.PURGE_RECIPIENTS, {"retention_days": self.settings.pii_retention_days}
            )
            await self.conn.execute(
                q.CLOSE_ABANDONED_RUNS,
                {"run_id": self.run_id, "max_run_seconds": self._max_run_seconds()},
            )
        if self.counters.expired:
            log.info("run.actions_expired", count=self.counters.expired)
        if self.counters.unknown:
            log.warning("run.leases_recovered", count=self.counters.unknown)

    def _max_run_seconds(self) -> float:
        return self.settings.run_time_budget_seconds + self.settings.lease_seconds + 60.0

    async def count_due(self) -> None:
        async with self.conn.begin():
            row = (await self.conn.execute(q.COUNT_DUE, self.scope)).one()
        # planned = every due PLANNED action; those outside the pilot are skippedPilot.
        self.counters.planned = int(row.due)
        self.in_scope_due = int(row.in_scope)
        self.counters.skipped_pilot = int(row.due) - int(row.in_scope)

    async def _count_due_in_scope(self) -> int:
        async with self.conn.begin():
            return int((await self.conn.execute(q.COUNT_DUE_IN_SCOPE, self.scope)).scalar_one())

    async def _quota_used(self) -> tuple[int, int]:
        row = (await self.conn.execute(q.QUOTA_USED, {"tz": self.settings.business_timezone})).one()
        return int(row.used_today), int(row.used_minute)

    async def remaining_today(self) -> int:
        async with self.conn.begin():
            used_today, _ = await self._quota_used()
        return max(0, self.settings.daily_send_limit - used_today)

    def _allowance(self, used_today: int, used_minute: int) -> int:
        return max(
            0,
            min(
                self.settings.daily_send_limit - used_today,
                self.settings.rate_limit_per_minute - used_minute,
            ),
        )

    def _phone_resolver(self) -> PhoneResolver:
        if self._resolver is None:
            sources = []
            if self.settings.phone_lookup_url:
                token = self.settings.phone_lookup_token
                sources.append(
                    HttpPhoneLookup(
                        self.settings.phone_lookup_url,
                        token.get_secret_value() if token else None,
                        timeout_seconds=min(self.settings.chatea_timeout_seconds, 10.0),
                        transport=self.lookup_transport,
                    )
                )
            self._resolver = PhoneResolver(PhoneVault.from_settings(self.settings), sources)
        return self._resolver

    def _rule_verdict(
        self, state: _RuleState, guide: str, trigger: str, phone_hash: str | None
    ) -> tuple[str, str, str] | None:
        """(status, code, reason) when a rule stops this action, else None. Updates state."""
        if (guide, trigger) in state.guide_pairs:
            return ("SKIPPED_DUPLICATE", "DUPLICATE", "already sent for this guide today")
        if phone_hash is not None:
            if phone_hash in state.opted_out:
                return ("SKIPPED_OPT_OUT", "OPT_OUT", "recipient opted out")
            if state.phone_counts[phone_hash] >= self.settings.rate_limit_per_phone_day:
                return (
                    "SKIPPED_RATE_LIMIT",
                    "PHONE_DAILY_LIMIT",
                    "RATE_LIMIT_PER_PHONE_DAY reached for this recipient",
                )
        return None

    def _precheck_template(self, trigger: str, variables: Mapping[str, Any]) -> list[str]:
        from executor.templates import render_parameters

        return render_parameters(trigger, variables)

    # ---- dry run -----------------------------------------------------------------------

    async def dry_run_pass(self) -> None:
        """The full rule pipeline, read-only, without HTTP: counts ``wouldSend``."""
        from executor.breaker import CircuitBreaker

        breaker = CircuitBreaker.from_settings(self.engine, self.settings, connection=self.conn)
        snapshot = await breaker.snapshot()
        if snapshot.state == "open" and (
            snapshot.open_until is None or snapshot.open_until > datetime.now(UTC)
        ):
            self.counters.skipped_circuit_open = self.in_scope_due
            return
        async with self.conn.begin():
            used_today, used_minute = await self._quota_used()
        allowance = self._allowance(used_today, used_minute)
        state = _RuleState()
        seen = 0
        after_at, after_id = datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0)
        while True:
            async with self.conn.begin():
                page = (
                    await self.conn.execute(
                        q.SELECT_DUE_PAGE,
                        {
                            **self.scope,
                            "after_at": after_at,
                            "after_id": after_id,
                            "limit": DRY_RUN_PAGE,
                        },
                    )
                ).fetchall()
                if not page:
                    break
                state.absorb(
                    await self.conn.execute(
                        q.RULE_FACTS,
                        {
                            "tz": self.settings.business_timezone,
                            "ids": [r.id for r in page],
                            "hashes": sorted({r.phone_hash for r in page if r.phone_hash}),
                            "guides": sorted({r.guide for r in page}),
                        },
                    )
                )
            for row in page:
                seen += 1
                verdict = self._rule_verdict(state, row.guide, row.trigger, row.phone_hash)
                if verdict is not None:
                    self._count_skip(verdict[0])
                    continue
                try:
                    self._precheck_template(row.trigger, row.variables or {})
                except TemplateError:
                    self.counters.failed_precheck += 1
                    continue
                if row.phone_hash is None and not self.settings.phone_lookup_url:
                    self.counters.failed_precheck += 1
                    continue
                if self.counters.would_send >= allowance:
                    self.counters.skipped_rate_limit += 1
                    continue
                self.counters.would_send += 1
                state.guide_pairs.add((row.guide, row.trigger))
                if row.phone_hash:
                    state.phone_counts[row.phone_hash] += 1
            last = page[-1]
            after_at, after_id = last.next_attempt_at, last.id
            if self.counters.would_send >= allowance and seen < self.in_scope_due:
                # Everything left in scope is over the allowance; no need to read it.
                self.counters.skipped_rate_limit += self.in_scope_due - seen
                break

    def _count_skip(self, status: str) -> None:
        if status == "SKIPPED_DUPLICATE":
            self.counters.skipped_duplicate += 1
        elif status == "SKIPPED_OPT_OUT":
            self.counters.skipped_opt_out += 1
        else:
            self.counters.skipped_rate_limit += 1

    # ---- real run ----------------------------------------------------------------------

    async def send_pass(self) -> None:
        """Send with at most CHATEA_CONCURRENCY actions in flight: a sliding window.

        Whenever sends complete, their outcomes are finalized and, if the breaker, the limits,
        the budget and the backlog allow, as many new actions are claimed as slots are free.
        Database work for one slot thus overlaps the HTTP calls of the others instead of
        waiting for a whole batch; the claimed-but-unanswered actions of the run never exceed
        the concurrency (claims only fill free slots, finalizes free them).
        """
        from executor.breaker import CircuitBreaker
        from executor.chatea import ChateaClient

        _fast_failing_sniffio()
        # The breaker shares the work connection: no connect per permit or record.
        breaker = CircuitBreaker.from_settings(self.engine, self.settings, connection=self.conn)
        transport = self.chatea_transport or _chatea_transport(self.settings.chatea_concurrency)
        async with ChateaClient.from_settings(self.settings, transport=transport) as client:
            window = _SendWindow(self, client, breaker)
            try:
                await window.run()
            except Exception:
                await window.abandon()
                raise
            except BaseException:
                window.cancel()
                raise
            if window.stopped_by_breaker:
                self.counters.skipped_circuit_open += await self._count_due_in_scope()
            elif window.rate_limited:
                self.counters.skipped_rate_limit += await self._count_due_in_scope()
        if self._resolver is not None:
            await self._resolver.aclose()

    async def claim_batch(
        self, breaker: CircuitBreaker, free_slots: int
    ) -> tuple[BreakerPermit, list[_Claimed], list[_Send], bool]:
        """One transaction per batch: the breaker's permit, then under the quota lock the claim
        (quota counted, rule facts and phones read in the same statement) and the outcomes of the
        actions the rules stop. Committed before any HTTP call.

        Returns (permit, claimed, sends, allowance_exhausted). Actions with no stored phone but
        a lookup source are claimed but left for resolve_by_lookup.
        """
        claimed: list[_Claimed] = []
        try:
            permit, claimed, sends, exhausted = await self._claim_in_tx(
                breaker, free_slots, claimed
            )
        except BaseException:
            # The claim rolled back with its transaction: nothing of it is ours to release.
            for action in claimed:
                self.unsent.pop(action.id, None)
            raise
        if claimed:  # committed: the next claim reads the due index after the last one
            self._claimed_up_to = (claimed[-1].next_attempt_at, claimed[-1].id)
        return permit, claimed, sends, exhausted

    async def _claim_in_tx(
        self, breaker: CircuitBreaker, free_slots: int, claimed: list[_Claimed]
    ) -> tuple[BreakerPermit, list[_Claimed], list[_Send], bool]:
        async with self.conn.begin():
            permit = await self._breaker_permit(breaker)
            if not permit.allowed:
                return permit, [], [], False
            slots = 1 if permit.probe else free_slots
            # Serializes count-then-claim across every runner: limits stay exact. A statement
            # of its own, so that the claim's snapshot is taken once the lock is held.
            await self.conn.execute(q.TAKE_QUOTA_LOCK, {"key": q.QUOTA_LOCK_KEY})
            rows = await self.conn.execute(
                q.CLAIM_DUE_ACTIONS,
                {
                    **self.scope,
                    "slots": slots,
                    "daily_limit": self.settings.daily_send_limit,
                    "minute_limit": self.settings.rate_limit_per_minute,
                    "lease_seconds": self.settings.lease_seconds,
                    "tz": self.settings.business_timezone,
                    "run_id": self.run_id,
                    "after_at": self._claimed_up_to[0],
                    "after_id": self._claimed_up_to[1],
                },
            )
            allowance = 0
            actions: list[Row[Any]] = []
            facts: list[tuple[str, str | None, str | None, int]] = []
            stored: dict[str, bytes] = {}
            for row in rows:
                if row.kind == "action":
                    actions.append(row)
                elif row.kind == "quota":
                    allowance = int(row.n)
                elif row.kind == "recipient":
                    stored[row.phone_hash] = bytes(row.phone_encrypted)
                elif row.kind == "guide":
                    facts.append(("guide", row.guide, row.trigger, int(row.n)))
                else:  # phone, opt_out
                    facts.append((row.kind, row.phone_hash, None, int(row.n)))
            actions.sort(key=lambda row: (row.next_attempt_at, row.id))  # oldest due first
            claimed.extend(_Claimed.from_row(row) for row in actions)
            if not claimed:
                return permit, [], [], allowance <= 0
            log.info("run.claimed", count=len(claimed), allowance=allowance)
            state = _RuleState()
            state.absorb(facts)
            for action in claimed:
                self.unsent[action.id] = action
            sends = await self.apply_rules(claimed, state, stored)
        return permit, claimed, sends, False

    async def _breaker_permit(self, breaker: CircuitBreaker) -> BreakerPermit:
        """The breaker's permit for a claim. Every writer of the breaker is a run, and runs hold
        the run lock: while this run holds it, the state this run last read or wrote is the
        state, and a closed breaker needs no round trip. It is read again at least every
        BREAKER_RECHECK_SECONDS anyway (a process frozen long enough may have lost its lock)."""
        if (
            self.holds_run_lock
            and time.monotonic() - self._breaker_read_at < BREAKER_RECHECK_SECONDS
        ):
            permit = breaker.closed_permit_from_last_state()
            if permit is not None:
                return permit
        self._breaker_read_at = time.monotonic()
        return await breaker.before_send()

    async def apply_rules(
        self, claimed: list[_Claimed], state: _RuleState, stored: Mapping[str, bytes]
    ) -> list[_Send]:
        """Duplicate, opt-out, per-phone limit, template and phone prechecks for a batch, inside
        the claim's transaction (under the quota lock, so per-phone counts cannot race with
        another claimer). The actions they stop are finalized in the same transaction.
        """
        outcomes: list[_Outcome] = []
        sends: list[_Send] = []
        for action in claimed:
            if action.phone_hash is None and self.settings.phone_lookup_url:
                continue  # resolved by lookup after this transaction
            outcome, send = self._judge(state, action, stored)
            if outcome is not None:
                outcomes.append(outcome)
            if send is not None:
                sends.append(send)
        if outcomes:
            await self._finalize_in_tx(outcomes)
        return sends

    def _judge(
        self, state: _RuleState, action: _Claimed, stored: Mapping[str, bytes]
    ) -> tuple[_Outcome | None, _Send | None]:
        verdict = self._rule_verdict(state, action.guide, action.trigger, action.phone_hash)
        if verdict is not None:
            status, code, reason = verdict
            self._count_skip(status)
            return _Outcome(action, status, code, reason, detail=reason), None
        try:
            parameters = self._precheck_template(action.trigger, action.variables)
        except TemplateError as exc:
            self.counters.failed_precheck += 1
            return _Outcome(action, "FAILED", exc.code, exc.message, detail="precheck"), None
        if action.phone_hash is None:
            self.counters.failed_precheck += 1
            return _Outcome(action, "FAILED", "NO_PHONE", "no phone for this action"), None
        try:
            phone = self._phone_resolver().from_store(action.phone_hash, stored)
        except PhoneError as exc:
            self.counters.failed_precheck += 1
            return _Outcome(action, "FAILED", "INVALID_PHONE", exc.message), None
        if phone is None:
            self.counters.failed_precheck += 1
            return _Outcome(
                action, "FAILED", "NO_PHONE", "stored phone was purged or is missing"
            ), None
        state.guide_pairs.add((action.guide, action.trigger))
        state.phone_counts[action.phone_hash] += 1
        return None, _Send(action, phone, parameters)

    async def resolve_by_lookup(self, claimed: list[_Claimed]) -> list[_Send]:
        """Actions with no stored phone ask the lookup sources (HTTP, outside any lock), then
        pass the phone rules under the quota lock with the phone_hash they now have."""
        pending = [a for a in claimed if a.phone_hash is None and self.settings.phone_lookup_url]
        if not pending:
            return []
        resolver = self._phone_resolver()
        outcomes: list[_Outcome] = []
        resolved: list[tuple[_Claimed, ResolvedPhone, list[str]]] = []
        for action in pending:
            try:
                parameters = self._precheck_template(action.trigger, action.variables)
            except TemplateError as exc:
                self.counters.failed_precheck += 1
                outcomes.append(_Outcome(action, "FAILED", exc.code, exc.message))
                continue
            try:
                phone = await resolver.from_sources(action.guide)
            except PhoneError as exc:
                self.counters.failed_precheck += 1
                outcomes.append(_Outcome(action, "FAILED", "INVALID_PHONE", exc.message))
                continue
            if phone is None:
                self.counters.failed_precheck += 1
                outcomes.append(
                    _Outcome(action, "FAILED", "NO_PHONE", "no phone found for this guide")
                )
                continue
            resolved.append((action, phone, parameters))
        sends: list[_Send] = []
        async with self.conn.begin():
            await self.conn.execute(q.TAKE_QUOTA_LOCK, {"key": q.QUOTA_LOCK_KEY})
            for action, phone, _ in resolved:
                await self.conn.execute(
                    q.SET_PHONE_HASH,
                    {
                        "id": action.id,
                        "attempt_id": action.attempt_id,
                        "phone_hash": phone.phone_hash,
                    },
                )
                action.phone_hash = phone.phone_hash
            state = _RuleState()
            if resolved:
                state.absorb(
                    await self.conn.execute(
                        q.RULE_FACTS,
                        {
                            "tz": self.settings.business_timezone,
                            "ids": [a.id for a, _, _ in resolved],
                            "hashes": sorted({p.phone_hash for _, p, _ in resolved}),
                            "guides": sorted({a.guide for a, _, _ in resolved}),
                        },
                    )
                )
            for action, phone, parameters in resolved:
                verdict = self._rule_verdict(state, action.guide, action.trigger, phone.phone_hash)
                if verdict is not None:
                    self._count_skip(verdict[0])
                    outcomes.append(_Outcome(action, verdict[0], verdict[1], verdict[2]))
                    continue
                state.guide_pairs.add((action.guide, action.trigger))
                state.phone_counts[phone.phone_hash] += 1
                sends.append(_Send(action, phone, parameters))
            if outcomes:
                await self._finalize_in_tx(outcomes)
        return sends

    def start_send(self, client: Any, send: _Send) -> asyncio.Task[Any]:
        """The HTTP call of one claimed action, as a task (the caller caps how many run)."""

        async def one() -> Any:
            # From here the message may leave: never release this claim, let the lease decide.
            self.unsent.pop(send.action.id, None)
            return await client.send_template(
                action_id=str(send.action.id),
                to=send.phone.e164,
                template=send.action.trigger,
                parameters=send.parameters,
            )

        return asyncio.create_task(one())

    def _outcome_for(self, send: _Send, result: Any) -> _Outcome:
        from executor.chatea import Permanent, Sent, Transient, Unknown

        action = send.action
        if isinstance(result, Sent):
            self.counters.sent += 1
            log.info("action.sent", action_id=str(action.id), attempt=action.attempts)
            return _Outcome(action, "SENT", provider_id=result.provider_message_id)
        if isinstance(result, Permanent):
            self.counters.failed_4xx += 1
            log.warning("action.failed", action_id=str(action.id), code=result.code)
            return _Outcome(action, "FAILED", result.code, result.reason)
        if isinstance(result, Transient):
            self.counters.failed_5xx += 1
            if action.attempts <= self.settings.max_retries:
                delay = retry_delay(action.attempts, result.retry_after, self.rng)
                log.warning(
                    "action.retry_scheduled",
                    action_id=str(action.id),
                    code=result.code,
                    attempt=action.attempts,
                    delay_seconds=delay,
                )
                return _Outcome(
                    action,
                    "PLANNED",
                    result.code,
                    result.reason,
                    delay=delay,
                    detail="retry scheduled",
                )
            log.warning("action.failed", action_id=str(action.id), code=result.code, gave_up=True)
            reason = f"{result.reason} (gave up after {action.attempts} attempts)"
            return _Outcome(action, "FAILED", result.code, reason)
        assert isinstance(result, Unknown)
        self.counters.unknown += 1
        log.warning("action.unknown", action_id=str(action.id), code=result.code)
        return _Outcome(action, "UNKNOWN", result.code, result.reason)

    @staticmethod
    def _breaker_outcome(result: Any) -> Literal["success", "failure", "neutral"]:
        from executor.chatea import Permanent, Sent

        if isinstance(result, Sent):
            return "success"
        if isinstance(result, Permanent):
            return "neutral"
        return "failure"

    async def finalize(self, outcomes: Sequence[_Outcome]) -> None:
        async with self.conn.begin():
            await self._finalize_in_tx(outcomes)

    async def _finalize_in_tx(self, outcomes: Sequence[_Outcome]) -> None:
        if not outcomes:
            return
        rows = await self.conn.execute(
            q.FINALIZE_ACTIONS,
            {
                "run_id": self.run_id,
                "ids": [o.action.id for o in outcomes],
                "attempt_ids": [o.action.attempt_id for o in outcomes],
                "statuses": [o.status for o in outcomes],
                "delays": [o.delay for o in outcomes],
                "codes": [o.code for o in outcomes],
                "reasons": [redact_text(o.reason)[:300] if o.reason else None for o in outcomes],
                "provider_ids": [o.provider_id for o in outcomes],
                "details": [o.detail for o in outcomes],
            },
        )
        done = {r[0] for r in rows}
        for outcome in outcomes:
            self.unsent.pop(outcome.action.id, None)
            if outcome.action.id not in done:
                # Another process recovered this lease meanwhile: its status is theirs.
                log.error("action.lease_lost", action_id=str(outcome.action.id))

    async def release_unsent(self, detail: str) -> None:
        """Give back claims whose HTTP call never started (best effort)."""
        if not self.unsent:
            return
        pending = list(self.unsent.values())
        self.unsent.clear()
        async with self.conn.begin():
            await self.conn.execute(
                q.RELEASE_CLAIMS,
                {
                    "run_id": self.run_id,
                    "ids": [a.id for a in pending],
                    "attempt_ids": [a.attempt_id for a in pending],
                    "detail": detail,
                },
            )


# The window waits for the rest of its sends when one HTTP call takes less than this many
# database cycles (see _SendWindow).
COALESCE_FACTOR = 4.0


def _average(current: float | None, sample: float, weight: float = 0.2) -> float:
    """Exponential moving average; the first sample starts it."""
    return sample if current is None else current + weight * (sample - current)


class _SendWindow:
    """The sliding window of one send pass (see _Pipeline.send_pass).

    Refilling each slot as soon as it frees hides the database work behind the other slots'
    HTTP calls, which pays when the provider is slow. When the provider answers faster than a
    database cycle (finalize + claim) takes, refilling one slot at a time would spend a cycle
    per send: the window then waits a moment (one cycle at most) for the rest of the sends in
    flight and finalizes and refills them together. Both costs are measured as the run goes.
    After a failed send the window drains before it claims again, so the breaker sees whole
    batches of outcomes, as it did when every batch was sent and finalized as a whole.
    """

    def __init__(self, pipeline: _Pipeline, client: Any, breaker: CircuitBreaker) -> None:
        self.p = pipeline
        self.client = client
        self.breaker = breaker
        self.in_flight: dict[asyncio.Task[Any], _Send] = {}
        self.started_at: dict[asyncio.Task[Any], float] = {}
        # Moving averages (seconds): one HTTP call, one finalize, one claim.
        self.send_s: float | None = None
        self.finalize_s: float | None = None
        self.claim_s: float | None = None
        self.claiming = True  # until the breaker, the limits or the backlog say stop
        self.probing = False  # our half-open probe is in flight: claim nothing until it ends
        # A send failed (transient or unknown): refill nothing until the window has drained and
        # every outcome is in the breaker, as a batch would; the next claim consults it again.
        self.draining = False
        self.stopped_by_breaker = False
        self.rate_limited = False
        self.kill_scheduled = False

    async def run(self) -> None:
        p = self.p
        while True:
            free = p.settings.chatea_concurrency - len(self.in_flight)
            if not self.in_flight:
                self.draining = False
            if self.claiming and not self.probing and not self.draining and free > 0:
                if time.monotonic() >= p.deadline:
                    self.claiming = False  # the budget is spent: finish what is in flight
                elif await self._claim(free):
                    continue  # sends started or a batch was all skipped: fill what is free
            if not self.in_flight:
                return
            await self._collect()

    async def _claim(self, free: int) -> bool:
        """Claim up to ``free`` actions and start their sends; False when claiming stopped."""
        p = self.p
        started = time.monotonic()
        permit, claimed, sends, exhausted = await p.claim_batch(self.breaker, free)
        self.claim_s = _average(self.claim_s, time.monotonic() - started)
        if not permit.allowed:
            self.claiming = False
            self.stopped_by_breaker = True
            log.warning("run.circuit_open", state=permit.state)
            return False
        if not claimed:
            if permit.probe:
                await self.breaker.release_probe()
            self.claiming = False
            if exhausted:
                self.rate_limited = True
                log.info("run.rate_limited")
            return False
        sends += await p.resolve_by_lookup(claimed)
        if not sends:
            if permit.probe:
                # The probe found nothing to send: let the next claim probe instead.
                await self.breaker.release_probe()
            return True
        _maybe_kill("after_claim")
        if not self.kill_scheduled and os.environ.get(KILL_AT_ENV) == "during_send":
            self.kill_scheduled = True
            asyncio.get_running_loop().call_later(0.05, _maybe_kill, "during_send")
        now = time.monotonic()
        for send in sends:
            task = p.start_send(self.client, send)
            self.in_flight[task] = send
            self.started_at[task] = now
        self.probing = permit.probe
        return True

    def _provider_is_quick(self) -> bool:
        if self.send_s is None or self.finalize_s is None or self.claim_s is None:
            return False
        return self.send_s < COALESCE_FACTOR * (self.finalize_s + self.claim_s)

    async def _collect(self) -> None:
        """Wait for sends to complete; finalize them and record them in the breaker."""
        p = self.p
        done, pending = await asyncio.wait(self.in_flight, return_when=asyncio.FIRST_COMPLETED)
        if pending and self._provider_is_quick():
            assert self.finalize_s is not None and self.claim_s is not None
            more, _ = await asyncio.wait(pending, timeout=self.finalize_s + self.claim_s)
            done |= more
        now = time.monotonic()
        for task in done:
            self.send_s = _average(self.send_s, now - self.started_at.pop(task, now))
        if os.environ.get(KILL_AT_ENV) == "after_answer":
            # The seam's point: every request in flight answered, no outcome written.
            await asyncio.wait(self.in_flight)
            _maybe_kill("after_answer")
        results = [(self.in_flight.pop(task), task.result()) for task in done]
        started = time.monotonic()
        await p.finalize([p._outcome_for(send, result) for send, result in results])
        self.finalize_s = _average(self.finalize_s, time.monotonic() - started)
        self.probing = False
        for _, result in results:
            outcome = p._breaker_outcome(result)
            self.draining = self.draining or outcome == "failure"
            snapshot = await self.breaker.record(outcome)
            if snapshot.state == "open" and not self.stopped_by_breaker:
                self.claiming = False
                self.stopped_by_breaker = True
                log.warning("run.stopped_breaker_open")

    def cancel(self) -> None:
        """The run itself is cancelled: so are its HTTP calls (their leases decide)."""
        for task in self.in_flight:
            task.cancel()

    async def abandon(self) -> None:
        """The pass failed: let the sends in flight end, and record their outcomes if the
        database still answers (otherwise their leases expire to UNKNOWN, never resent)."""
        if not self.in_flight:
            return
        await asyncio.wait(self.in_flight)
        results = [(send, task) for task, send in self.in_flight.items()]
        self.in_flight.clear()
        self.started_at.clear()
        outcomes = [
            self.p._outcome_for(send, task.result())
            for send, task in results
            if not task.cancelled() and task.exception() is None
        ]
        try:
            await self.p.finalize(outcomes)
        except Exception as exc:
            log.error("run.finalize_failed", error=sanitize_error(exc))


@contextlib.asynccontextmanager
async def _opened(
    conn: AsyncConnection, opening: asyncio.Task[Any]
) -> AsyncIterator[AsyncConnection]:
    """``conn`` once ``opening`` (its start) is done; closed on the way out."""
    try:
        await opening
        yield conn
    finally:
        if conn.sync_connection is not None:
            await conn.close()


async def _acquire_run_lock(engine: AsyncEngine, settings: Settings) -> AsyncConnection:
    conn = await engine.connect()
    try:
        await conn.begin()
        idle_ms = int((settings.run_time_budget_seconds + settings.lease_seconds + 60) * 1000)
        await conn.execute(q.SET_LOCK_SESSION_IDLE_TIMEOUT, {"ms": str(idle_ms)})
        got = (await conn.execute(q.TRY_RUN_LOCK, {"key": q.RUN_LOCK_KEY})).scalar_one()
        if not got:
            running = (await conn.execute(q.RUNNING_RUN)).scalar_one_or_none()
            await conn.rollback()
            await conn.close()
            message = "another run holds the run lock"
            if running is not None:
                message += f" (run {running})"
            raise RunLockBusy(message)
    except RunLockBusy:
        raise
    except BaseException:
        await conn.close()
        raise
    return conn


async def run_executor(
    engine: AsyncEngine,
    settings: Settings,
    *,
    dry_run: bool = False,
    chatea_transport: httpx.AsyncBaseTransport | None = None,
    lookup_transport: httpx.AsyncBaseTransport | None = None,
    use_run_lock: bool = True,
) -> RunResult:
    """Run the pipeline once and record it in ``executor_runs``.

    Raises RunLockBusy when another run holds the lock (the cron route answers 409). Any other
    failure is recorded in the run row and returned as a FAILED RunResult.
    """
    run_id = uuid.uuid4()
    effective_dry_run = dry_run or not settings.executor_enabled
    bind_run(str(run_id))
    started = time.monotonic()
    # The work connection opens while the run lock is taken on the other one.
    work = engine.connect()
    opening = asyncio.create_task(work.start())
    try:
        lock_conn = await _acquire_run_lock(engine, settings) if use_run_lock else None
    except BaseException:
        with contextlib.suppress(Exception):
            async with _opened(work, opening):
                pass
        raise
    try:
        async with _opened(work, opening) as conn:
            async with conn.begin():
                started_at = (
                    await conn.execute(
                        q.INSERT_RUN,
                        {
                            "id": run_id,
                            "dry_run": effective_dry_run,
                            "config": json.dumps(settings.public_config()),
                        },
                    )
                ).scalar_one()
            log.info("run.started", dry_run=effective_dry_run)
            pipeline = _Pipeline(
                engine,
                conn,
                settings,
                run_id,
                effective_dry_run,
                chatea_transport,
                lookup_transport,
                deadline=started + settings.run_time_budget_seconds,
            )
            pipeline.holds_run_lock = lock_conn is not None
            error = await _execute(pipeline, settings, effective_dry_run)
            counters = pipeline.counters
            with contextlib.suppress(SQLAlchemyError):
                counters.remaining_today = await pipeline.remaining_today()
            status = run_status(counters, dry_run=effective_dry_run, error=error)
            duration_ms = int((time.monotonic() - started) * 1000)
            async with conn.begin():
                finished_at = (
                    await conn.execute(
                        q.FINISH_RUN,
                        {
                            "run_id": run_id,
                            "status": status,
                            "duration_ms": duration_ms,
                            "error_summary": error,
                            **asdict(counters),
                        },
                    )
                ).scalar_one()
        result = RunResult(
            run_id=str(run_id),
            status=status,
            dry_run=effective_dry_run,
            started_at=started_at,
            finished_at=finished_at,
            duration_ms=duration_ms,
            counters=counters,
            error_summary=error,
        )
        log.info(
            "run.finished",
            status=status,
            duration_ms=duration_ms,
            **{k: v for k, v in asdict(counters).items() if v},
        )
        return result
    finally:
        if lock_conn is not None:
            try:
                await lock_conn.rollback()
            finally:
                await lock_conn.close()
        unbind_run()


async def _execute(pipeline: _Pipeline, settings: Settings, dry_run: bool) -> str | None:
    """Run the steps; return a sanitized error summary, or None on success."""
    if not dry_run:
        problems = settings.rollout_problems()
        if problems:
            log.error("run.config_invalid", problems=problems)
            return "config_invalid: " + "; ".join(problems)
    try:
        if not dry_run:
            await pipeline.housekeeping()
        await pipeline.count_due()
        if pipeline.in_scope_due == 0:
            return None
        if dry_run:
            await pipeline.dry_run_pass()
        else:
            await pipeline.send_pass()
    except Exception as exc:
        summary = sanitize_error(exc)
        log.error("run.failed", error=summary, error_type=type(exc).__name__)
        try:
            await pipeline.release_unsent("released: the run failed before sending")
        except Exception as release_exc:
            log.error("run.release_failed", error=sanitize_error(release_exc))
        return summary
    finally:
        if pipeline.unsent:
            # The breaker opened or the budget ended between claim and send.
            try:
                await pipeline.release_unsent("released: not sent in this run")
            except Exception as release_exc:
                log.error("run.release_failed", error=sanitize_error(release_exc))
    return None
