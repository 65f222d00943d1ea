"""The `executor` command: each verb's happy path and its one-line failures."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from executor.db import libpq_url
from tests.conftest import (
    TEST_ADMIN_SECRET,
    TEST_CRON_SECRET,
    TEST_PHONE_HASH_KEY,
    TEST_PII_KEY,
    create_database,
    drop_database,
)
from tests.pii_guard import record
from tests.pipeline_helpers import PHONES, action


def executor(
    *args: str, env: dict[str, str] | None = None, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "executor.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    record(f"cli {' '.join(args)[:40]}", out.stdout + out.stderr)
    return out


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("executor: error: ")
    return lines[0]


def db_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": url,
        "PHONE_HASH_KEY": TEST_PHONE_HASH_KEY,
        "PII_ENCRYPTION_KEY": TEST_PII_KEY,
        "CRON_SECRET": TEST_CRON_SECRET,
        "ADMIN_SECRET": TEST_ADMIN_SECRET,
        **extra,
    }


def test_keygen_prints_valid_distinct_keys() -> None:
    out = executor("keygen")
    assert out.returncode == 0
    values = dict(line.split("=", 1) for line in out.stdout.splitlines())
    assert set(values) == {"PHONE_HASH_KEY", "PII_ENCRYPTION_KEY", "CRON_SECRET", "ADMIN_SECRET"}
    for name in ("PHONE_HASH_KEY", "PII_ENCRYPTION_KEY"):
        assert len(base64.urlsafe_b64decode(values[name])) == 32
    assert len(set(values.values())) == 4
    assert all(len(v) >= 32 for v in values.values())


def test_db_upgrade_and_unreachable_database(pg_server_url: str) -> None:
    url = create_database(pg_server_url, prefix="executor_cli")
    try:
        first = executor("db", "upgrade", env={"DATABASE_URL": url})
        second = executor("db", "upgrade", env={"DATABASE_URL": url})
        assert first.returncode == 0 and second.returncode == 0
        assert "revision" in second.stdout
    finally:
        drop_database(pg_server_url, url)
    dead = executor("db", "upgrade", env={"DATABASE_URL": "postgresql://u:secretpw@127.0.0.1:1/x"})
    line = one_line_error(dead)
    assert "secretpw" not in dead.stderr and "database" in line


def test_bad_setting_names_the_variable() -> None:
    out = executor("run", env={"DAILY_SEND_LIMIT": "lots"})
    assert "DAILY_SEND_LIMIT" in one_line_error(out)


def test_enqueue_then_run_dry(clean_db: str, tmp_path: Path) -> None:
    path = tmp_path / "actions.jsonl"
    items = [action(f"C{i}", PHONES[i]) for i in range(3)] + [action("C9", "12345")]
    path.write_text("\n".join(json.dumps(i) for i in items) + "\n\n")
    out = executor("enqueue", str(path), env=db_env(clean_db))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"accepted": 3, "duplicates": 0, "rejected": 1}
    assert "item 4: rejected: phone" in out.stderr and "12345" not in out.stderr
    assert "enqueued 4/4" in out.stderr  # progress
    run = executor("run", "--dry-run", env=db_env(clean_db))
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert body["dryRun"] is True and body["wouldSend"] == 3
    with psycopg.connect(libpq_url(clean_db)) as conn:
        assert conn.execute("SELECT count(*) FROM actions WHERE status='PLANNED'").fetchone() == (
            3,
        )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"guide": "x"}\n{not json\n', "line 2: not valid JSON"),
        ("\n\n", "no actions"),
    ],
)
def test_enqueue_bad_files(clean_db: str, tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    line = one_line_error(executor("enqueue", str(path), env=db_env(clean_db)))
    assert expected in line
    with psycopg.connect(libpq_url(clean_db)) as conn:
        assert conn.execute("SELECT count(*) FROM actions").fetchone() == (0,)


def test_enqueue_missing_file(clean_db: str) -> None:
    assert "cannot read" in one_line_error(
        executor("enqueue", "/nonexistent/actions.jsonl", env=db_env(clean_db))
    )


def test_run_on_unmigrated_database(empty_db_url: str) -> None:
    line = one_line_error(executor("run", env=db_env(empty_db_url)))
    assert "executor db upgrade" in line


def test_demo_end_to_end(pg_server_url: str) -> None:
    url = create_database(pg_server_url, prefix="executor_demo")
    try:
        out = executor("demo", env={"DATABASE_URL": url}, timeout=240)
    finally:
        drop_database(pg_server_url, url)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "accepted 9, duplicates 1, rejected 1" in text
    assert "Sandbox saw: 5 requests, 5 accepted, 0 duplicates" in text
    for status in ("SENT", "SKIPPED_RATE_LIMIT", "FAILED", "PLANNED", "TEMPLATE_VARIABLES"):
        assert status in text
