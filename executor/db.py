"""Database engines: URL normalization, serverless-safe settings, schema readiness.

Connections are never reused: on Vercel a process may freeze between invocations and a pooled
connection would go stale; a transaction pooler (PgBouncer, Neon, Supavisor) does the pooling.
Sync engines use ``NullPool``. The async engine (requests and runs) uses
:class:`FreshConnectionPool`: the same fresh connection per checkout, but at most
``MAX_CONNECTIONS`` open at once per process, so a burst of requests on a long-lived server
(``executor serve``) waits for a connection instead of exhausting ``max_connections``.
Prepared statements are off (``prepare_threshold=None``) because transaction poolers break them.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, NullPool

from executor.config import Settings
from executor.errors import ConfigError, DatabaseUnavailable, SchemaNotReady

# Head revision of executor/migrations; a test keeps the two in step. Checking it needs no
# alembic import on the request path (cold starts).
SCHEMA_REVISION = "0002"

# Connections one process may hold open at once (a run needs two: its lock and its work).
MAX_CONNECTIONS = 10
# How long a checkout waits for one of them before failing.
CONNECTION_WAIT_SECONDS = 30.0

STATEMENT_TIMEOUT_MS = 15_000
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_SECONDS = 5

# One round trip per new connection: timeouts so that a stuck statement or a frozen serverless
# process cannot hold locks for long, and UTC so timestamps never depend on the server.
SESSION_SETUP_SQL = (
    f"SELECT set_config('statement_timeout', '{STATEMENT_TIMEOUT_MS}', false),"
    " set_config('idle_in_transaction_session_timeout',"
    f" '{IDLE_IN_TRANSACTION_TIMEOUT_MS}', false),"
    " set_config('TimeZone', 'UTC', false)"
)


def normalize_database_url(url: str) -> str:
    """Accept postgres://, postgresql:// and postgresql+psycopg:// (DESIGN §4)."""
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError("DATABASE_URL: must be a URL such as postgresql://user:pass@host/db")
    scheme = scheme.lower()
    if scheme in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        return "postgresql+psycopg://" + rest
    raise ConfigError(
        "DATABASE_URL: scheme must be postgres://, postgresql:// or postgresql+psycopg://"
    )


def libpq_url(url: str) -> str:
    """The same URL as plain libpq understands it (for psycopg.connect)."""
    return "postgresql://" + normalize_database_url(url).partition("://")[2]


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when set; otherwise the embedded server (started on demand)."""
    if settings.database_url is not None:
        return normalize_database_url(settings.database_url.get_secret_value())
    from executor.embedded_pg import start_embedded_postgres

    return normalize_database_url(start_embedded_postgres())


def _connect_args(url: str) -> dict[str, Any]:
    args: dict[str, Any] = {"prepare_threshold": None}
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    if "connect_timeout" not in query:
        args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    return args


def _install_session_timeouts(engine: Engine) -> None:
    # SET after connect rather than the `options` startup parameter: several hosted
    # poolers reject startup options.
    @event.listens_for(engine, "connect")
    def _set_timeouts(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(SESSION_SETUP_SQL)
        cursor.close()
        dbapi_conn.commit()


class FreshConnectionPool(AsyncAdaptedQueuePool):
    """A bounded ``NullPool``: every checkout gets a new connection, closed when it is returned,
    and at most ``pool_size`` are open at once (a further checkout waits up to ``timeout``)."""

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        try:
            record.close()  # the slot goes back to the queue empty: the next checkout connects
        finally:
            super()._do_return_conn(record)


def create_async_db_engine(url: str) -> AsyncEngine:
    url = normalize_database_url(url)
    engine = create_async_engine(
        url,
        poolclass=FreshConnectionPool,
        pool_size=MAX_CONNECTIONS,
        max_overflow=0,
        pool_timeout=CONNECTION_WAIT_SECONDS,
        connect_args=_connect_args(url),
    )
    _install_session_timeouts(engine.sync_engine)
    return engine


def create_sync_db_engine(url: str) -> Engine:
    url = normalize_database_url(url)
    engine = create_engine(url, poolclass=NullPool, connect_args=_connect_args(url))
    _install_session_timeouts(engine)
    return engine


async def check_database(engine: AsyncEngine) -> None:
    """Raise DatabaseUnavailable unless the database answers."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (OperationalError, DBAPIError, OSError) as exc:
        raise DatabaseUnavailable("the database is not reachable") from exc


async def check_schema(engine: AsyncEngine) -> None:
    """Raise SchemaNotReady unless migrations are at SCHEMA_REVISION."""
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
    except ProgrammingError:
        row = None
    except (OperationalError, DBAPIError, OSError) as exc:
        raise DatabaseUnavailable("the database is not reachable") from exc
    if row is None or row[0] != SCHEMA_REVISION:
        raise SchemaNotReady(
            "the database schema is not migrated: run `executor db upgrade` against it"
        )
