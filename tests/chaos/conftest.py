"""Fixtures of the chaos suite: a fresh migrated database per scenario, the sandbox provider in
a thread, and real app subprocesses (see :mod:`tests.chaos.harness`)."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from executor.db import normalize_database_url
from executor.sandbox import SandboxHandle, start_sandbox
from tests.chaos.harness import DEVICE_ID, Apps, ChaosDb
from tests.conftest import TEST_API_KEY, create_database, drop_database


@pytest.fixture
def chaos_db(pg_server_url: str) -> Iterator[ChaosDb]:
    """A brand-new database at the head revision, for one scenario."""
    from executor.migrate import upgrade

    url = create_database(pg_server_url, prefix="executor_chaos")
    upgrade(url)
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    yield ChaosDb(normalize_database_url(url), name)
    drop_database(pg_server_url, url)


@pytest.fixture
def sandbox() -> Iterator[SandboxHandle]:
    with start_sandbox(api_key=TEST_API_KEY, device_id=DEVICE_ID, seed=20261129) as handle:
        yield handle


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as resources:
        yield resources


@pytest.fixture
def apps(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Apps]:
    """Starts app subprocesses for one test; always stops them and hands their output to the
    session's PII guard."""
    manager = Apps(tmp_path, request)
    try:
        yield manager
    finally:
        manager.close()
