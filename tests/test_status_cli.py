"""``executor status``: rich tables with the same facts as the API, and its exit code."""

from __future__ import annotations

import copy
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from rich.console import Console

from executor.db import libpq_url
from executor.errors import SchemaNotReady
from executor.status_report import collect_status, render_status, status_exit_code
from tests.conftest import TEST_ADMIN_SECRET, TEST_CRON_SECRET, make_settings
from tests.test_admin_status import script_history

ROOT = Path(__file__).resolve().parent.parent


def rendered(status: dict[str, Any]) -> str:
    buffer = io.StringIO()
    render_status(status, Console(file=buffer, width=220, color_system=None))
    return buffer.getvalue()


@pytest.fixture
async def scripted_status(clean_db: str) -> dict[str, Any]:
    history = script_history(clean_db)
    status = await collect_status(make_settings(clean_db))
    status["_history"] = history
    return status


async def test_render_contains_the_key_figures(scripted_status: dict[str, Any]) -> None:
    status = scripted_status
    out = rendered(status)
    history = status["_history"]
    assert status["status"]["lastRunId"] == history.run_ids["t3"]
    assert history.run_ids["t3"] in out
    assert "PARTIAL" in out and "FAILED" in out
    assert "62.50%" in out  # 24 h success rate 10/16
    assert "87.50%" in out and "37.50%" in out  # today / yesterday
    assert "+50.00 pp" in out  # delta of the success rate
    assert status["today"]["date"] in out and status["yesterday"]["date"] in out
    assert "open" in out  # breaker state
    for reason in ("HTTP_400", "INVALID_PHONE", "NO_PHONE", "READ_TIMEOUT", "TEMPLATE_VARIABLES"):
        assert reason in out
    assert "1600" in out  # average run duration
    assert "dry runs" in out.lower()
    assert "3001234567" not in out  # the error summary is redacted


async def test_render_an_empty_database(clean_db: str) -> None:
    status = await collect_status(make_settings(clean_db))
    out = rendered(status)
    assert "none yet" in out
    assert "No failed or unknown actions" in out
    assert status_exit_code(status) == 0


def _status(last: str | None, breaker: str) -> dict[str, Any]:
    return {
        "status": {"lastRunAt": None, "lastRunId": None, "lastRunStatus": last},
        "stats": {"circuitBreaker": {"state": breaker, "consecutiveFailures": 0}},
    }


@pytest.mark.parametrize(
    ("last", "breaker", "code"),
    [
        (None, "closed", 0),
        ("SUCCESS", "closed", 0),
        ("NOOP", "closed", 0),
        ("PARTIAL", "closed", 0),
        ("RUNNING", "closed", 0),
        ("FAILED", "closed", 1),
        ("SUCCESS", "open", 1),
        ("SUCCESS", "half_open", 1),
        ("FAILED", "open", 1),
    ],
)
def test_exit_codes(last: str | None, breaker: str, code: int) -> None:
    assert status_exit_code(_status(last, breaker)) == code


async def test_exit_code_of_the_scripted_history(scripted_status: dict[str, Any]) -> None:
    assert status_exit_code(scripted_status) == 1  # breaker open
    closed = copy.deepcopy(scripted_status)
    closed["stats"]["circuitBreaker"]["state"] = "closed"
    assert status_exit_code(closed) == 0  # last run PARTIAL


async def test_collect_status_on_unmigrated_database(empty_db_url: str) -> None:
    with pytest.raises(SchemaNotReady):
        await collect_status(make_settings(empty_db_url))


def _cli(db_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": db_url,
        "CRON_SECRET": TEST_CRON_SECRET,
        "ADMIN_SECRET": TEST_ADMIN_SECRET,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "executor.cli", "status"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_status_command(clean_db: str) -> None:
    history = script_history(clean_db)
    result = _cli(clean_db)
    assert result.returncode == 1, result.stderr  # the breaker is open
    assert history.run_ids["t3"] in result.stdout
    assert "62.50%" in result.stdout
    with psycopg.connect(libpq_url(clean_db), autocommit=True) as conn:
        conn.execute("UPDATE circuit_breakers SET state = 'closed', open_until = NULL")
    result = _cli(clean_db)
    assert result.returncode == 0, result.stderr


def test_cli_status_on_unmigrated_database(empty_db_url: str) -> None:
    result = _cli(empty_db_url)
    assert result.returncode == 1
    assert "executor db upgrade" in result.stderr
    assert "Traceback" not in result.stderr
