"""Shared fixtures: a real Postgres for the session, a fresh migrated database, test settings.

Storage tests run against real Postgres: the embedded server by default, or the server named by
``DATABASE_URL`` (each session creates and later drops its own database there).
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.config import Settings
from executor.db import create_async_db_engine, libpq_url, normalize_database_url

pytest_plugins = ["tests.pii_guard"]

TEST_CRON_SECRET = "cron-secret-for-tests-0123456789"
TEST_ADMIN_SECRET = "admin-secret-for-tests-0123456789"
TEST_PHONE_HASH_KEY = "Y3Jvbi1zZWNyZXQtZm9yLXRlc3RzLTAxMjM0NTY3ODk="
TEST_PII_KEY = "cGlpLWVuY3J5cHRpb24ta2V5LWZvci10ZXN0cy0wMTI="
TEST_API_KEY = "chatea-api-key-for-tests-abcdef"

TABLES = (
    "action_events",
    "actions",
    "recipients",
    "opt_outs",
    "executor_runs",
    "circuit_breakers",
)


_SETTINGS_ENV = {name.upper() for name in Settings.model_fields}


def pytest_configure(config: pytest.Config) -> None:
    # The suite must not depend on the developer's environment: only DATABASE_URL (which server
    # to test against) is kept, under a private name, so Settings() never sees it by accident.
    if os.environ.get("DATABASE_URL"):
        os.environ["EXECUTOR_TEST_DATABASE_URL"] = os.environ["DATABASE_URL"]
    for name in list(os.environ):
        if name.upper() in _SETTINGS_ENV:
            del os.environ[name]


def _with_database(url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """libpq URL of a database on the server the suite uses (admin rights to CREATE DATABASE)."""
    env_url = os.environ.get("EXECUTOR_TEST_DATABASE_URL")
    if env_url:
        return libpq_url(env_url)
    from executor.embedded_pg import start_embedded_postgres

    return libpq_url(start_embedded_postgres(database="postgres"))


def create_database(server_url: str, prefix: str = "executor_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_database(server_url, name)


def drop_database(server_url: str, database_url: str) -> None:
    name = urllib.parse.urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def migrated_db_url(pg_server_url: str) -> Iterator[str]:
    """A fresh database at the head revision, for the whole session."""
    from executor.migrate import upgrade

    url = create_database(pg_server_url)
    upgrade(url)
    yield normalize_database_url(url)
    drop_database(pg_server_url, url)


@pytest.fixture
def empty_db_url(pg_server_url: str) -> Iterator[str]:
    """A brand-new database with no schema at all."""
    url = create_database(pg_server_url, prefix="executor_empty")
    yield normalize_database_url(url)
    drop_database(pg_server_url, url)


@pytest.fixture
def clean_db(migrated_db_url: str) -> str:
    """The session database with every table emptied."""
    with psycopg.connect(libpq_url(migrated_db_url), autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(TABLES) + " RESTART IDENTITY CASCADE")
    return migrated_db_url


@pytest.fixture
async def engine(clean_db: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_db_engine(clean_db)
    yield eng
    await eng.dispose()


def make_settings(database_url: str | None = None, **overrides: Any) -> Settings:
    """Test settings: independent of the developer's environment variables."""
    values: dict[str, Any] = {
        "cron_secret": TEST_CRON_SECRET,
        "admin_secret": TEST_ADMIN_SECRET,
        "phone_hash_key": TEST_PHONE_HASH_KEY,
        "pii_encryption_key": TEST_PII_KEY,
        "database_url": database_url,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings(clean_db: str) -> Settings:
    return make_settings(clean_db)
