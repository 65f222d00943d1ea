"""``executor status``: the facts of ``GET /api/admin/executor-status`` as terminal tables.

:func:`collect_status` reads them from the database (the same code as the API),
:func:`render_status` prints them with rich, and :func:`status_exit_code` turns them into an exit
code a cron or a monitoring probe can act on: non-zero when the last run FAILED or the circuit
breaker is not closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from executor.config import Settings
from executor.db import check_schema, create_async_db_engine, resolve_database_url
from executor.metrics import DAY_LABELS, METRIC_LABELS, executor_status

EXIT_OK = 0
EXIT_ATTENTION = 1

NOT_AVAILABLE = "—"

_STYLES = {
    "SUCCESS": "green",
    "NOOP": "dim",
    "PARTIAL": "yellow",
    "RUNNING": "yellow",
    "FAILED": "bold red",
    "closed": "green",
    "half_open": "yellow",
    "open": "bold red",
}


def _fmt(value: Any, *, percent: bool = False, signed: bool = False) -> str:
    if value is None:
        return NOT_AVAILABLE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if percent and isinstance(value, int | float):
        text = f"{value * 100:.2f}"
        if signed:
            return (f"+{text}" if value > 0 else text) + " pp"
        return text + "%"
    if isinstance(value, int | float):
        return f"+{value}" if signed and value > 0 else str(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or NOT_AVAILABLE
    return str(value)


def _short_time(iso: Any) -> str:
    """'2024-05-01T04:30:00.123Z' -> '2024-05-01 04:30:00' (UTC, to the second)."""
    if not isinstance(iso, str):
        return _fmt(iso)
    return iso.replace("T", " ")[:19]


def _styled(value: Any) -> Text:
    text = _fmt(value)
    return Text(text, style=_STYLES.get(text, ""))


def _kv_table(title: str, rows: list[tuple[str, str | Text]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, value in rows:
        table.add_row(label, value)
    return table


# Recent runs in a terminal: the counters grouped so the table fits 80-100 columns; the
# dashboard and the JSON have every counter.
_RUN_COLUMNS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("planned",), "plan"),
    (("sent",), "sent"),
    (("wouldSend",), "would"),
    (("failed4xx", "failed5xx", "failedPrecheck"), "failed"),
    (("unknown",), "unk"),
    (
        (
            "skippedDuplicate",
            "skippedRateLimit",
            "skippedPilot",
            "skippedOptOut",
            "skippedCircuitOpen",
        ),
        "skipped",
    ),
    (("expired",), "exp"),
)


def _run_cell(run: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    values = [run.get(key) for key in keys]
    if all(v is None for v in values):
        return "—"
    return str(sum(int(v or 0) for v in values))


def render_status(status: Mapping[str, Any], console: Console) -> None:
    """Print the executor status (the executor-status JSON) as readable tables."""
    last = status["status"]
    config = status["config"]
    metrics = status["metrics24h"]
    stats = status["stats"]
    breaker, queue, limiter = stats["circuitBreaker"], stats["queue"], stats["rateLimiter"]

    headline = Text("Last run: ")
    if last.get("lastRunId"):
        headline.append(_styled(last.get("lastRunStatus")))
        headline.append(f" at {last.get('lastRunAt')} (run {last.get('lastRunId')})")
    else:
        headline.append("none yet", style="dim")
    console.print(headline)
    mode = "ENABLED (real sends)" if config.get("executorEnabled") else "disabled (dry runs)"
    pilot = (
        f"pilot city: {_fmt(config.get('pilotCity'))}, carrier: {_fmt(config.get('pilotCarrier'))}"
    )
    console.print(f"Executor {mode}; {pilot}; time zone {config.get('businessTimezone')}")

    rows: list[tuple[str, str | Text]] = [
        ("Success rate", _fmt(metrics.get("successRate"), percent=True))
    ]
    rows += [(label, _fmt(metrics.get(key))) for key, label in METRIC_LABELS]
    console.print(
        f"Last 24 h: {_short_time(metrics.get('periodStart'))}"
        f" → {_short_time(metrics.get('periodEnd'))} UTC (runs started in the window)"
    )
    console.print(_kv_table("Last 24 h", rows))

    today, yesterday, delta = status["today"], status["yesterday"], status["delta"]
    days = Table(title="Business days", title_justify="left")
    days.add_column("")
    days.add_column(f"today {today.get('date')}", justify="right")
    days.add_column(f"yesterday {yesterday.get('date')}", justify="right")
    days.add_column("delta", justify="right")
    for key, label in DAY_LABELS:
        days.add_row(
            label,
            _fmt(today.get(key)),
            _fmt(yesterday.get(key)),
            _fmt(delta.get(key), signed=True),
        )
    days.add_row(
        "Success rate",
        _fmt(today.get("successRate"), percent=True),
        _fmt(yesterday.get("successRate"), percent=True),
        _fmt(delta.get("successRate"), percent=True, signed=True),
    )
    console.print(days)

    console.print(
        _kv_table(
            "Circuit breaker, queue, rate limiter",
            [
                ("Breaker state", _styled(breaker.get("state"))),
                ("Consecutive failures", _fmt(breaker.get("consecutiveFailures"))),
                ("Open until", _fmt(breaker.get("openUntil"))),
                ("Planned", _fmt(queue.get("planned"))),
                ("Due now", _fmt(queue.get("due"))),
                ("Retry scheduled", _fmt(queue.get("retryScheduled"))),
                ("Unknown (needs review)", _fmt(queue.get("unknown"))),
                ("Oldest planned (s)", _fmt(queue.get("oldestPlannedAgeSeconds"))),
                ("Sent today", _fmt(limiter.get("sentToday"))),
                ("Remaining today", _fmt(limiter.get("remainingToday"))),
                ("Sent this minute", _fmt(limiter.get("sentThisMinute"))),
                ("Remaining this minute", _fmt(limiter.get("remainingThisMinute"))),
                ("Unique phones today", _fmt(limiter.get("uniquePhonesToday"))),
            ],
        )
    )

    reasons = status.get("topFailureReasons") or []
    if reasons:
        console.print(
            _kv_table(
                "Top failure reasons (24 h)",
                [(str(item["reason"]), _fmt(item["count"])) for item in reasons],
            )
        )
    else:
        console.print("No failed or unknown actions in the last 24 h.")

    runs = status.get("recentRuns") or []
    if runs:
        table = Table(title="Recent runs", title_justify="left")
        table.add_column("started (UTC)")
        table.add_column("status", no_wrap=True)
        table.add_column("dry")
        for _, header in _RUN_COLUMNS:
            table.add_column(header, justify="right")
        table.add_column("error", overflow="fold")
        for run in runs:
            table.add_row(
                _short_time(run.get("startedAt")),
                _styled(run.get("status")),
                _fmt(run.get("dryRun")),
                *(_run_cell(run, keys) for keys, _ in _RUN_COLUMNS),
                _fmt(run.get("errorSummary")),
            )
        console.print(table)


def status_exit_code(status: Mapping[str, Any]) -> int:
    """Non-zero when someone should look: the last run FAILED, or the breaker is not closed."""
    if status["status"].get("lastRunStatus") == "FAILED":
        return EXIT_ATTENTION
    if status["stats"]["circuitBreaker"].get("state") in ("open", "half_open"):
        return EXIT_ATTENTION
    return EXIT_OK


async def collect_status(settings: Settings) -> dict[str, Any]:
    """executor_status() on the configured database (SchemaNotReady if it is not migrated)."""
    engine = create_async_db_engine(resolve_database_url(settings))
    try:
        await check_schema(engine)
        return await executor_status(engine, settings)
    finally:
        await engine.dispose()
