"""The Chatea circuit breaker, persisted in Postgres (DESIGN §6, table ``circuit_breakers``).

Every state change is one SQL statement evaluated with the database clock (``now()``), so the
breaker holds across overlapping serverless invocations and processes:

- ``before_send``: a closed breaker lets the send through. An open breaker whose window has
  passed (or a half-open breaker whose prober died: ``probe_until`` passed) is switched to
  ``half_open`` by a conditional ``UPDATE``; row locking makes exactly one caller's ``UPDATE``
  match, and only that caller gets the probe.
- ``record``: ``success`` closes; ``neutral`` (the provider answered, e.g. a recipient-level
  4xx) resets the consecutive count and closes a half-open breaker; ``failure`` (transient or
  unknown outcome) counts, opens a closed breaker at the threshold, and re-opens a half-open one.
  The statement reads the previous state under ``FOR UPDATE`` and returns it with the new one,
  so transitions are logged exactly by the process that made them.

The row is created on demand (closed); no row means closed.

Optimization: ``record("success"|"neutral")`` skips the write when the last state this instance
saw (from ``before_send``, ``record`` or ``snapshot``) was closed with 0 failures, which is the
common case and halves the breaker's writes. When that view is stale the skipped write could
only have reset a count or closed the breaker, so skipping errs toward opening, never toward
sending more. A half-open probe always writes (its permit said half_open).

Connections: by default every call opens its own connection (the engines use ``NullPool``, so
that is a connect and a session setup each time). A run passes its work ``connection`` instead:
a call then joins the transaction open on it (committed with the caller's work, e.g. the permit
in the same transaction as the claim it allows) or, when none is open, runs in a short
transaction of its own on that connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from executor.config import Settings
from executor.logs import get_logger

log = get_logger("executor.breaker")

Outcome = Literal["success", "failure", "neutral"]
CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerSnapshot:
    state: str
    consecutive_failures: int
    open_until: datetime | None


@dataclass(frozen=True)
class BreakerPermit:
    allowed: bool
    probe: bool
    state: str
    open_until: datetime | None


_CLOSED_SNAPSHOT = BreakerSnapshot(state=CLOSED, consecutive_failures=0, open_until=None)

_BEFORE_SEND_SQL = text(
    """
    WITH probe AS (
        UPDATE circuit_breakers
           SET state = 'half_open',
               probe_until = now() + make_interval(secs => CAST(:lease AS double precision)),
               updated_at = now()
         WHERE device_id = :device_id
           AND ((state = 'open' AND (open_until IS NULL OR open_until <= now()))
                OR (state = 'half_open' AND (probe_until IS NULL OR probe_until <= now())))
     RETURNING state, consecutive_failures, open_until, probe_until, true AS probe
    )
    SELECT state, consecutive_failures, open_until, probe_until, probe FROM probe
    UNION ALL
    SELECT state, consecutive_failures, open_until, probe_until, false AS probe
      FROM circuit_breakers
     WHERE device_id = :device_id AND NOT EXISTS (SELECT 1 FROM probe)
    """
)

_ENSURE_ROW_SQL = text(
    "INSERT INTO circuit_breakers (device_id) VALUES (:device_id) ON CONFLICT DO NOTHING"
)

# Each record statement locks the row in a sub-select to return its previous state together
# with the new one (portable to every Postgres version, unlike RETURNING old.*).
_RECORD_TEMPLATE = """
    UPDATE circuit_breakers AS cb
       SET {assignments},
           updated_at = now()
      FROM (SELECT state
              FROM circuit_breakers
             WHERE device_id = :device_id
               FOR UPDATE) AS old
     WHERE cb.device_id = :device_id
 RETURNING old.state AS old_state, cb.state, cb.consecutive_failures, cb.open_until
"""

_SUCCESS_SQL = text(
    _RECORD_TEMPLATE.format(
        assignments="""
        state = 'closed',
        consecutive_failures = 0,
        open_until = NULL,
        probe_until = NULL"""
    )
)

_NEUTRAL_SQL = text(
    _RECORD_TEMPLATE.format(
        assignments="""
        consecutive_failures = 0,
        state = CASE WHEN cb.state = 'half_open' THEN 'closed' ELSE cb.state END,
        open_until = CASE WHEN cb.state = 'half_open' THEN NULL ELSE cb.open_until END,
        probe_until = CASE WHEN cb.state = 'half_open' THEN NULL ELSE cb.probe_until END"""
    )
)

_TRIPS = (
    "(cb.state = 'half_open'"
    " OR (cb.state = 'closed' AND cb.consecutive_failures + 1 >= :threshold))"
)
_FAILURE_SQL = text(
    _RECORD_TEMPLATE.format(
        assignments=f"""
        consecutive_failures = cb.consecutive_failures + 1,
        state = CASE WHEN {_TRIPS} THEN 'open' ELSE cb.state END,
        opened_at = CASE WHEN {_TRIPS} THEN now() ELSE cb.opened_at END,
        open_until = CASE WHEN {_TRIPS}
                          THEN now() + make_interval(secs => CAST(:reset AS double precision))
                          ELSE cb.open_until END,
        probe_until = CASE WHEN {_TRIPS} THEN NULL ELSE cb.probe_until END"""
    )
)

_RECORD_SQL = {"success": _SUCCESS_SQL, "neutral": _NEUTRAL_SQL, "failure": _FAILURE_SQL}

_RELEASE_PROBE_SQL = text(
    "UPDATE circuit_breakers SET probe_until = now(), updated_at = now()"
    " WHERE device_id = :device_id AND state = 'half_open'"
)

_SNAPSHOT_SQL = text(
    "SELECT state, consecutive_failures, open_until FROM circuit_breakers"
    " WHERE device_id = :device_id"
)


class CircuitBreaker:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        device_id: str,
        threshold: int,
        reset_seconds: float,
        probe_lease_seconds: float,
        connection: AsyncConnection | None = None,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        if reset_seconds <= 0 or probe_lease_seconds <= 0:
            raise ValueError("reset_seconds and probe_lease_seconds must be positive")
        self._engine = engine
        self._connection = connection
        self.device_id = device_id
        self.threshold = threshold
        self.reset_seconds = float(reset_seconds)
        self.probe_lease_seconds = float(probe_lease_seconds)
        # Only used to skip redundant success/neutral writes (see module docstring).
        self._last_seen: BreakerSnapshot | None = None

    @classmethod
    def from_settings(
        cls,
        engine: AsyncEngine,
        settings: Settings,
        connection: AsyncConnection | None = None,
    ) -> CircuitBreaker:
        return cls(
            engine,
            device_id=settings.device_id,
            threshold=settings.circuit_breaker_threshold,
            reset_seconds=settings.circuit_breaker_reset_seconds,
            probe_lease_seconds=settings.lease_seconds,
            connection=connection,
        )

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction: a new one per call, or the shared connection (joining
        the caller's open transaction, else in a transaction of its own)."""
        conn = self._connection
        if conn is None:
            async with self._engine.begin() as new:
                yield new
        elif conn.in_transaction():
            yield conn
        else:
            async with conn.begin():
                yield conn

    async def before_send(self) -> BreakerPermit:
        """May one request go out now? ``probe=True`` for the single half-open trial."""
        async with self._transaction() as conn:
            row = (
                await conn.execute(
                    _BEFORE_SEND_SQL,
                    {"device_id": self.device_id, "lease": self.probe_lease_seconds},
                )
            ).first()
        if row is None:
            self._last_seen = _CLOSED_SNAPSHOT
            return BreakerPermit(allowed=True, probe=False, state=CLOSED, open_until=None)
        state, failures, open_until, probe_until, probe = row
        self._last_seen = BreakerSnapshot(state, failures, open_until)
        if probe:
            log.info(
                "breaker.half_open",
                device_id=self.device_id,
                consecutive_failures=failures,
                probe_until=probe_until.isoformat() if probe_until else None,
            )
            return BreakerPermit(allowed=True, probe=True, state=HALF_OPEN, open_until=open_until)
        return BreakerPermit(
            allowed=state == CLOSED, probe=False, state=state, open_until=open_until
        )

    def closed_permit_from_last_state(self) -> BreakerPermit | None:
        """The permit ``before_send`` would give, without a round trip, when the last state this
        instance read or wrote was closed (a closed breaker allows a send with no transition).
        Only the caller can know that nobody else wrote the breaker since (executor.run: it
        holds the run lock and re-reads within a second); None when the last state was not
        closed or is unknown."""
        if self._last_seen is not None and self._last_seen.state == CLOSED:
            return BreakerPermit(allowed=True, probe=False, state=CLOSED, open_until=None)
        return None

    async def record(self, outcome: Outcome) -> BreakerSnapshot:
        """Record the outcome of one send; returns the state after it."""
        if outcome not in _RECORD_SQL:
            raise ValueError(f"unknown breaker outcome {outcome!r}")
        if outcome != "failure" and self._last_seen == _CLOSED_SNAPSHOT:
            return _CLOSED_SNAPSHOT
        params: dict[str, Any] = {
            "device_id": self.device_id,
            "threshold": self.threshold,
            "reset": self.reset_seconds,
        }
        statement = _RECORD_SQL[outcome]
        async with self._transaction() as conn:
            row = (await conn.execute(statement, params)).first()
            if row is None:
                await self._ensure_row(conn)
                row = (await conn.execute(statement, params)).first()
        if row is None:  # pragma: no cover - the row was just created in this transaction
            raise RuntimeError("circuit breaker row vanished")
        old_state, state, failures, open_until = row
        snapshot = BreakerSnapshot(state, failures, open_until)
        self._last_seen = snapshot
        self._log_transition(old_state, snapshot)
        return snapshot

    async def release_probe(self) -> None:
        """Give back an unused probe permit (nothing was sent): the next caller may probe.

        Without it an unused probe blocks sending until its lease (``probe_lease_seconds``)
        expires. Only the holder of a ``probe=True`` permit should call this.
        """
        async with self._transaction() as conn:
            await conn.execute(_RELEASE_PROBE_SQL, {"device_id": self.device_id})

    async def snapshot(self) -> BreakerSnapshot:
        async with self._transaction() as conn:
            row = (await conn.execute(_SNAPSHOT_SQL, {"device_id": self.device_id})).first()
        snapshot = _CLOSED_SNAPSHOT if row is None else BreakerSnapshot(row[0], row[1], row[2])
        self._last_seen = snapshot
        return snapshot

    async def _ensure_row(self, conn: AsyncConnection) -> None:
        await conn.execute(_ENSURE_ROW_SQL, {"device_id": self.device_id})

    def _log_transition(self, old_state: str, new: BreakerSnapshot) -> None:
        if old_state == new.state:
            return
        fields: dict[str, Any] = {
            "device_id": self.device_id,
            "previous_state": old_state,
            "consecutive_failures": new.consecutive_failures,
        }
        if new.state == OPEN:
            log.warning(
                "breaker.opened",
                open_until=new.open_until.isoformat() if new.open_until else None,
                **fields,
            )
        elif new.state == CLOSED:
            log.info("breaker.closed", **fields)
        else:  # pragma: no cover - record never moves to half_open
            log.info("breaker.half_open", **fields)
