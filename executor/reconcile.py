"""Operator reconciliation of UNKNOWN actions.

An UNKNOWN action may or may not have reached the shopper (read timeout, lease lost after a
crash, a 5xx with ``CHATEA_RETRY_5XX=false``). The executor never resends one on its own. An
operator looks the action id up in Chatea (it is the message ``reference`` and
``Idempotency-Key``) and records the answer here: ``delivered`` -> SENT, ``not_delivered`` ->
PLANNED and due now (sent again by the next run, within every limit).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.errors import InputError, NotFound, StateConflict

Outcome = Literal["delivered", "not_delivered"]

LIST_UNKNOWN = text(
    """
    SELECT id, guide, trigger, city, carrier, attempts, error_code, error_reason,
           executed_at, updated_at
    FROM actions
    WHERE status = 'UNKNOWN'
    ORDER BY updated_at DESC
    LIMIT :limit
    """
)

# Only an UNKNOWN action can be reconciled; the event records the operator's decision.
RECONCILE = text(
    """
    WITH changed AS (
        UPDATE actions
        SET status = CASE WHEN :outcome = 'delivered' THEN 'SENT' ELSE 'PLANNED' END,
            next_attempt_at = CASE WHEN :outcome = 'delivered' THEN next_attempt_at
                                   ELSE now() END,
            attempt_id = CASE WHEN :outcome = 'delivered' THEN attempt_id ELSE NULL END,
            error_code = CASE WHEN :outcome = 'delivered' THEN NULL ELSE error_code END,
            updated_at = now()
        WHERE id = :id AND status = 'UNKNOWN'
        RETURNING id, status, attempts
    )
    INSERT INTO action_events (action_id, status, attempt, detail)
    SELECT id, status, attempts, :detail FROM changed
    RETURNING action_id
    """
)

CURRENT_STATUS = text("SELECT status FROM actions WHERE id = :id")


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


async def list_unknown(engine: AsyncEngine, limit: int = 50) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(LIST_UNKNOWN, {"limit": limit})).fetchall()
    return [
        {
            "id": str(r.id),
            "guide": r.guide,
            "trigger": r.trigger,
            "city": r.city,
            "carrier": r.carrier,
            "attempts": r.attempts,
            "errorCode": r.error_code,
            "errorReason": r.error_reason,
            "executedAt": _iso(r.executed_at),
            "updatedAt": _iso(r.updated_at),
        }
        for r in rows
    ]


async def reconcile_action(
    engine: AsyncEngine, action_id: str, outcome: Outcome, note: str | None = None
) -> str:
    """Record the operator's answer for one UNKNOWN action; returns its new status."""
    try:
        parsed = uuid.UUID(action_id)
    except ValueError:
        raise InputError("action id must be a UUID") from None
    if outcome not in ("delivered", "not_delivered"):
        raise InputError("outcome must be 'delivered' or 'not_delivered'")
    detail = f"reconciled by operator: {outcome}" + (f" ({note[:200]})" if note else "")
    async with engine.begin() as conn:
        done = (
            await conn.execute(RECONCILE, {"id": parsed, "outcome": outcome, "detail": detail})
        ).first()
        if done is None:
            status = (await conn.execute(CURRENT_STATUS, {"id": parsed})).scalar_one_or_none()
            if status is None:
                raise NotFound("no action with this id")
            raise StateConflict(f"only UNKNOWN actions can be reconciled; this one is {status}")
    return "SENT" if outcome == "delivered" else "PLANNED"
