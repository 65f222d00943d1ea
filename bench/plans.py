"""EXPLAIN of the run's and the status route's queries: which access path each table gets.

Plans come from ``EXPLAIN (FORMAT JSON)`` with the real parameters; data-modifying statements
are explained, not executed. A Seq Scan on ``actions`` or ``action_events`` is flagged: at 1 M
rows it makes a query cost O(history).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.config import Settings

BIG_TABLES = ("actions", "action_events")


def _walk(node: dict[str, Any], out: list[str]) -> None:
    kind = node.get("Node Type", "?")
    relation = node.get("Relation Name")
    index = node.get("Index Name")
    if relation or index:
        label = f"{kind} on {relation}" if relation else kind
        if index:
            label += f" using {index}"
        if kind == "Seq Scan" and relation in BIG_TABLES:
            label = "SEQ SCAN on " + str(relation) + " (!)"
        out.append(label)
    for child in node.get("Plans", []):
        _walk(child, out)


async def access_paths(
    engine: AsyncEngine, statement: TextClause, params: dict[str, Any]
) -> list[str]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(text("EXPLAIN (FORMAT JSON) " + statement.text), params)
        ).scalar_one()
        await conn.rollback()
    plan = row if isinstance(row, list) else json.loads(row)
    paths: list[str] = []
    _walk(plan[0]["Plan"], paths)
    # Keep the order of first appearance, count repeats.
    seen: dict[str, int] = {}
    for p in paths:
        seen[p] = seen.get(p, 0) + 1
    return [p if n == 1 else f"{p} x{n}" for p, n in seen.items()]


async def explain_all(engine: AsyncEngine, settings: Settings) -> dict[str, list[str]]:
    """Access paths of the claim, the run's other per-run queries and every metrics query."""
    from executor import metrics
    from executor import run_sql as q

    scope: dict[str, Any] = {"cities": [], "carriers": []}
    run_id = uuid.uuid4()
    queries: dict[str, tuple[TextClause, dict[str, Any]]] = {
        "claim (CLAIM_DUE_ACTIONS)": (
            q.CLAIM_DUE_ACTIONS,
            {
                **scope,
                "slots": 5,
                "limit": 5,  # the claim's parameter before the fast path (baseline runs)
                "after_at": "-infinity",
                "after_id": uuid.UUID(int=0),
                "daily_limit": settings.daily_send_limit,
                "minute_limit": settings.rate_limit_per_minute,
                "lease_seconds": settings.lease_seconds,
                "tz": settings.business_timezone,
                "run_id": run_id,
            },
        ),
        "count due (COUNT_DUE)": (q.COUNT_DUE, scope),
        "expire (EXPIRE_ACTIONS)": (q.EXPIRE_ACTIONS, {"run_id": run_id}),
        "lease recovery": (q.RECOVER_EXPIRED_LEASES, {"run_id": run_id}),
        "abandoned runs": (
            q.CLOSE_ABANDONED_RUNS,
            {"run_id": run_id, "max_run_seconds": 3600.0},
        ),
        "quota used (QUOTA_USED)": (q.QUOTA_USED, {"tz": settings.business_timezone}),
    }
    async with engine.connect() as conn:
        clock = await metrics._read_clock(conn, settings)
        await conn.rollback()
    metric_params: dict[str, tuple[TextClause, dict[str, Any]]] = {
        "metrics 24h": (metrics.METRICS_24H_SQL, {"start": clock.period_start}),
        "business day": (
            metrics.BUSINESS_DAY_SQL,
            {"day_start": clock.today_start, "day_end": clock.tomorrow_start},
        ),
        "rate limiter": (
            metrics.RATE_LIMITER_SQL,
            {"today": clock.today, "day_start": clock.today_start, "day_end": clock.tomorrow_start},
        ),
        "queue": (metrics.QUEUE_SQL, {}),
        "unknown backlog": (metrics.UNKNOWN_BACKLOG_SQL, {}),
        "top failure reasons": (metrics.TOP_FAILURE_REASONS_SQL, {}),
        "recent runs": (metrics.RECENT_RUNS_SQL, {"limit": metrics.RECENT_RUNS_LIMIT}),
    }
    queries.update({f"status: {k}": v for k, v in metric_params.items()})
    return {
        name: await access_paths(engine, sql, params) for name, (sql, params) in queries.items()
    }


def seq_scans(plans: dict[str, list[str]]) -> list[str]:
    return [name for name, paths in plans.items() if any("SEQ SCAN" in p for p in paths)]
