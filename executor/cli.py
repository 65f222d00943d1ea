"""The ``executor`` command (DESIGN §10).

Every failure ends with one readable line on stderr and a non-zero exit code; a stack trace is
never the answer to bad input or a missing database.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from executor.errors import ExecutorError, InputError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _cmd_keygen(_: argparse.Namespace) -> int:
    for name in ("PHONE_HASH_KEY", "PII_ENCRYPTION_KEY"):
        key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")
        print(f"{name}={key}")
    for name in ("CRON_SECRET", "ADMIN_SECRET"):
        print(f"{name}={secrets.token_urlsafe(32)}")
    return EXIT_OK


def _cmd_db_upgrade(_: argparse.Namespace) -> int:
    from executor.config import load_settings
    from executor.db import resolve_database_url
    from executor.migrate import upgrade

    revision = upgrade(resolve_database_url(load_settings()))
    print(f"database schema at revision {revision}")
    return EXIT_OK


def _engine_and_settings() -> tuple[Any, Any]:
    from executor.config import load_settings
    from executor.db import create_async_db_engine, resolve_database_url

    settings = load_settings()
    return create_async_db_engine(resolve_database_url(settings)), settings


def _cmd_run(args: argparse.Namespace) -> int:
    from executor.db import check_schema
    from executor.run import run_executor

    async def go() -> dict[str, Any]:
        engine, settings = _engine_and_settings()
        try:
            await check_schema(engine)
            result = await run_executor(engine, settings, dry_run=args.dry_run)
            return result.to_json()
        finally:
            await engine.dispose()

    result = asyncio.run(go())
    print(json.dumps(result, indent=2))
    return EXIT_FAILURE if result["status"] == "FAILED" else EXIT_OK


def _cmd_enqueue(args: argparse.Namespace) -> int:
    from executor.db import check_schema
    from executor.intake import MAX_ITEMS, intake_actions, parse_jsonl

    path = Path(args.file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {type(exc).__name__}") from None
    items = parse_jsonl(lines)
    if not items:
        raise InputError(f"{path}: no actions in the file")

    async def go() -> dict[str, int]:
        engine, settings = _engine_and_settings()
        totals = {"accepted": 0, "duplicates": 0, "rejected": 0}
        try:
            await check_schema(engine)
            for start in range(0, len(items), MAX_ITEMS):
                chunk = items[start : start + MAX_ITEMS]
                result = await intake_actions(engine, settings, chunk)
                totals["accepted"] += result.accepted
                totals["duplicates"] += result.duplicates
                totals["rejected"] += len(result.rejected)
                for rejected in result.rejected:
                    line = start + int(rejected["index"]) + 1
                    print(f"item {line}: rejected: {rejected['error']}", file=sys.stderr)
                print(
                    f"enqueued {min(start + MAX_ITEMS, len(items))}/{len(items)}", file=sys.stderr
                )
        finally:
            await engine.dispose()
        return totals

    totals = asyncio.run(go())
    print(json.dumps(totals))
    return EXIT_FAILURE if totals["rejected"] and not totals["accepted"] else EXIT_OK


def _cmd_status(_: argparse.Namespace) -> int:
    from rich.console import Console

    from executor.config import load_settings
    from executor.status_report import collect_status, render_status, status_exit_code

    status = asyncio.run(collect_status(load_settings()))
    render_status(status, Console())
    return status_exit_code(status)


def _cmd_reconcile(args: argparse.Namespace) -> int:
    from executor.db import check_schema
    from executor.reconcile import reconcile_action

    outcome = args.outcome.replace("-", "_")

    async def go() -> str:
        engine, _ = _engine_and_settings()
        try:
            await check_schema(engine)
            return await reconcile_action(engine, args.action_id, outcome, args.note)
        finally:
            await engine.dispose()

    print(f"action {args.action_id} is now {asyncio.run(go())}")
    return EXIT_OK


def _cmd_unknown(args: argparse.Namespace) -> int:
    from executor.db import check_schema
    from executor.reconcile import list_unknown

    async def go() -> list[dict[str, Any]]:
        engine, _ = _engine_and_settings()
        try:
            await check_schema(engine)
            return await list_unknown(engine, args.limit)
        finally:
            await engine.dispose()

    actions = asyncio.run(go())
    for item in actions:
        print(
            f"{item['id']}  guide={item['guide']}  trigger={item['trigger']}  "
            f"code={item['errorCode']}  at={item['executedAt']}"
        )
    print(f"{len(actions)} UNKNOWN action(s)", file=sys.stderr)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from executor.demo import run_demo

    return run_demo()


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ExecutorError(
            "`executor serve` needs uvicorn: install the dev dependencies"
        ) from None
    from executor.logs import configure_logging

    configure_logging()
    uvicorn.run("api.index:app", host=args.host, port=args.port, log_config=None)
    return EXIT_OK


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from executor.sandbox import serve_sandbox

    serve_sandbox(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        fail_rate=args.fail_rate,
        status=args.status,
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="executor", description="WhatsApp Executor: planned parcel notifications via Chatea."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = sub.add_parser(
        "keygen", help="print fresh PHONE_HASH_KEY, PII_ENCRYPTION_KEY, secrets"
    )
    keygen.set_defaults(handler=_cmd_keygen)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_upgrade = db_sub.add_parser("upgrade", help="apply migrations (idempotent)")
    db_upgrade.set_defaults(handler=_cmd_db_upgrade)

    serve = sub.add_parser("serve", help="serve the API with uvicorn")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve.set_defaults(handler=_cmd_serve)

    run = sub.add_parser("run", help="run the executor once and print the RunResult")
    run.add_argument("--dry-run", action="store_true", help="evaluate everything, send nothing")
    run.set_defaults(handler=_cmd_run)

    enqueue = sub.add_parser("enqueue", help="add planned actions from a JSON-lines file")
    enqueue.add_argument("file", help="one action object per line (the POST /api/actions items)")
    enqueue.set_defaults(handler=_cmd_enqueue)

    status = sub.add_parser("status", help="what happened: last run, 24 h metrics, breaker")
    status.set_defaults(handler=_cmd_status)

    unknown = sub.add_parser("unknown", help="list UNKNOWN actions waiting for reconciliation")
    unknown.add_argument("--limit", type=int, default=50)
    unknown.set_defaults(handler=_cmd_unknown)

    reconcile = sub.add_parser("reconcile", help="record what Chatea says about an UNKNOWN action")
    reconcile.add_argument("action_id", help="the action id (Chatea's reference)")
    reconcile.add_argument("outcome", choices=["delivered", "not-delivered"])
    reconcile.add_argument("--note", default=None, help="why (kept in the audit trail)")
    reconcile.set_defaults(handler=_cmd_reconcile)

    demo = sub.add_parser("demo", help="embedded Postgres + sandbox + sample actions + a run")
    demo.set_defaults(handler=_cmd_demo)

    sandbox = sub.add_parser("sandbox", help="serve a local Chatea sandbox provider")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8025)
    sandbox.add_argument("--latency-ms", type=int, default=0)
    sandbox.add_argument("--fail-rate", type=float, default=0.0)
    sandbox.add_argument("--status", type=int, default=None, help="answer every send with CODE")
    sandbox.set_defaults(handler=_cmd_sandbox)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ExecutorError as exc:
        print(f"executor: error: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE
    except SQLAlchemyError as exc:
        # Never the SQL text or its parameters: the class name says enough to act on.
        print(
            f"executor: error: database error ({type(exc).__name__}); is DATABASE_URL "
            "reachable and migrated (`executor db upgrade`)?",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
