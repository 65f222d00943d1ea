"""``executor demo``: the whole product on one machine in a few seconds.

Embedded Postgres (database ``executor_demo``, emptied at each demo), the sandbox Chatea in a
background thread, a realistic sample of planned actions, one dry run (kill switch off) and one
enabled run, then a summary. Nothing leaves the machine; no credential is needed.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import text

from executor.config import Settings
from executor.db import create_async_db_engine, normalize_database_url
from executor.intake import intake_actions
from executor.logs import configure_logging
from executor.run import RunResult, run_executor

DEMO_DATABASE = "executor_demo"
PILOT_CITIES = "Bogotá, Medellín, Cali"

# Phones of the demo are fictional numbers in the mobile range; they never leave the machine.
_P1, _P2, _P3, _P4 = "300 555 0101", "+57 310 555 0102", "573155550103", "(320) 555-0104"


def sample_actions() -> list[dict[str, Any]]:
    def nm(guide: str, carrier: str, city: str, phone: str | None, **extra: Any) -> dict[str, Any]:
        item: dict[str, Any] = {
            "guide": guide,
            "trigger": "no_movement_48h",
            "city": city,
            "carrier": carrier,
            "variables": {
                "numero_de_guia": guide,
                "transportadora": carrier,
                "ultimo_movimiento": "En centro de distribución",
                "fecha_de_ultimo_movimiento": "2026-11-26",
            },
            **extra,
        }
        if phone is not None:
            item["phone"] = phone
        return item

    def office(guide: str, carrier: str, city: str, phone: str) -> dict[str, Any]:
        return {
            "guide": guide,
            "trigger": "at_office_3d",
            "city": city,
            "carrier": carrier,
            "variables": {
                "numero_de_guia": guide,
                "transportadora": carrier,
                "ciudad_de_destino": city,
            },
            "phone": phone,
        }

    broken = nm("240010000007", "Coordinadora", "Cali", _P4)
    del broken["variables"]["ultimo_movimiento"]
    return [
        nm("240010000001", "Servientrega", "Bogotá", _P1),
        nm("240010000002", "Coordinadora", "MEDELLIN", _P2),
        office("240010000003", "Interrapidísimo", "Cali", _P3),
        office("240010000004", "Envía", "bogota", _P4),
        nm("240010000005", "Servientrega", "Medellín", _P1),
        # Third message of the day for the same phone: over RATE_LIMIT_PER_PHONE_DAY (2).
        office("240010000006", "Servientrega", "Bogotá", _P1),
        # Missing template variable: fails before any HTTP call.
        broken,
        # Outside the pilot: stays PLANNED, counted skippedPilot.
        nm("240010000008", "Servientrega", "Pasto", _P2),
        # No phone given and no lookup configured: FAILED NO_PHONE.
        nm("240010000009", "Envía", "Bogotá", None),
        # The same guide and trigger again: a duplicate at intake.
        nm("240010000001", "Servientrega", "Bogotá", _P1),
        # A landline is not a WhatsApp number: rejected at intake.
        nm("240010000010", "Envía", "Bogotá", "601 555 0100"),
    ]


def _key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def _result_table(dry: RunResult, real: RunResult) -> Table:
    table = Table(title="Runs", show_lines=False)
    table.add_column("counter")
    table.add_column("dry run (kill switch off)", justify="right")
    table.add_column("enabled run", justify="right")
    a, b = dry.to_json(), real.to_json()
    table.add_row("status", str(a["status"]), str(b["status"]))
    for key in (
        "planned",
        "wouldSend",
        "sent",
        "failed4xx",
        "failed5xx",
        "failedPrecheck",
        "unknown",
        "skippedDuplicate",
        "skippedRateLimit",
        "skippedPilot",
        "skippedOptOut",
        "skippedCircuitOpen",
        "expired",
        "remainingToday",
        "durationMs",
    ):
        table.add_row(key, str(a[key]), str(b[key]))
    return table


async def _demo(console: Console, database_url: str, sandbox_url: str) -> int:
    base: dict[str, Any] = {
        "database_url": database_url,
        "chatea_api_url": sandbox_url,
        "chatea_api_key": "demo-api-key-" + secrets.token_hex(8),
        "chatea_device_id": "demo-device",
        "phone_hash_key": _key(),
        "pii_encryption_key": _key(),
        "cron_secret": secrets.token_urlsafe(24),
        "pilot_city": PILOT_CITIES,
    }
    engine = create_async_db_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "TRUNCATE action_events, actions, recipients, opt_outs, executor_runs,"
                    " circuit_breakers"
                )
            )
        disabled = Settings(_env_file=None, executor_enabled=False, **base)
        enabled = Settings(_env_file=None, executor_enabled=True, **base)
        items = sample_actions()
        intake = await intake_actions(engine, enabled, items)
        console.print(
            f"[bold]Intake[/bold]: {len(items)} items -> accepted {intake.accepted}, "
            f"duplicates {intake.duplicates}, rejected {len(intake.rejected)}"
        )
        for rejected in intake.rejected:
            console.print(f"  item {rejected['index']}: {rejected['error']}")
        dry = await run_executor(engine, disabled)
        real = await run_executor(engine, enabled)
        console.print(_result_table(dry, real))
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT guide, trigger, city, status, coalesce(error_code, '') AS code"
                        " FROM actions ORDER BY guide, trigger"
                    )
                )
            ).fetchall()
        table = Table(title="Actions after the enabled run")
        for column in ("guía", "trigger", "city", "status", "error"):
            table.add_column(column)
        for row in rows:
            table.add_row(row.guide, row.trigger, row.city, row.status, row.code)
        console.print(table)
        from executor.metrics import executor_status
        from executor.status_report import render_status

        render_status(await executor_status(engine, enabled), console)
        return 0 if real.status in ("SUCCESS", "PARTIAL") else 1
    finally:
        await engine.dispose()


def run_demo() -> int:
    # The demo prints tables; the JSON event log stays available with LOG_LEVEL=INFO.
    configure_logging(os.environ.get("LOG_LEVEL", "WARNING"))
    from executor.embedded_pg import start_embedded_postgres
    from executor.migrate import upgrade
    from executor.sandbox import start_sandbox

    console = Console(width=max(100, Console().width))
    if os.environ.get("DATABASE_URL"):
        database_url = normalize_database_url(os.environ["DATABASE_URL"])
        console.print("Database: DATABASE_URL (its tables are emptied for the demo)")
    else:
        console.print("Starting embedded Postgres under .data/pg ...")
        database_url = normalize_database_url(start_embedded_postgres(database=DEMO_DATABASE))
    upgrade(database_url)
    with start_sandbox() as sandbox:
        console.print(f"Sandbox Chatea at {sandbox.url}")
        code = asyncio.run(_demo(console, database_url, sandbox.url))
        stats = sandbox.stats()
        console.print(
            f"[bold]Sandbox saw[/bold]: {stats['requests']} requests, {stats['accepted']} accepted,"
            f" {stats['duplicates']} duplicates"
        )
    console.print(
        "\n[bold]Browse the demo data[/bold] in the dashboard (any secret of 16+ characters):\n"
        + (
            "  export ADMIN_SECRET=pick-a-demo-secret-123   # DATABASE_URL as for the demo\n"
            if os.environ.get("DATABASE_URL")  # never print a URL that may hold a password
            else f"  export DATABASE_URL='{database_url}' ADMIN_SECRET=pick-a-demo-secret-123\n"
        )
        + "  python3 .ci/uv.py run executor serve   # open http://127.0.0.1:8000/admin\n"
        "Operators: PLAYBOOK.md.",
        soft_wrap=True,
    )
    return code
