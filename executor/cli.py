"""The ``executor`` command (DESIGN §10).

Every failure ends with one readable line on stderr and a non-zero exit code; a stack trace is
never the answer to bad input or a missing database.
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from collections.abc import Callable, Sequence

from executor.errors import ExecutorError

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
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
