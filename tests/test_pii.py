"""No plaintext phone at rest, and the session PII guard really catches leaks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.db import libpq_url
from executor.models import metadata
from executor.run import run_executor
from tests.pii_guard import find_phones, phone_formats
from tests.pipeline_helpers import PHONES, FakeProvider, action, enqueue, run_settings

ROOT = Path(__file__).resolve().parent.parent


async def test_no_table_holds_a_plaintext_phone(engine: AsyncEngine, clean_db: str) -> None:
    settings = run_settings(clean_db, rate_limit_per_phone_day=1)
    items = [action(f"G{i}", PHONES[i % 3]) for i in range(6)] + [action("NOPHONE", None)]
    await enqueue(engine, settings, items)
    from executor.phones import PhoneVault

    vault = PhoneVault.from_settings(settings)
    with psycopg.connect(libpq_url(clean_db), autocommit=True) as conn:
        conn.execute("INSERT INTO opt_outs (phone_hash) VALUES (%s)", (vault.hash(PHONES[2]),))
    await run_executor(engine, settings, chatea_transport=FakeProvider().transport)
    leaks: list[str] = []
    with psycopg.connect(libpq_url(clean_db)) as conn:
        for table in metadata.tables:
            rows = conn.execute(f"SELECT t::text FROM {table} t").fetchall()
            assert rows or table in ("circuit_breakers",), f"{table} is empty: scan proves nothing"
            for (row,) in rows:
                for phone in PHONES[:3]:
                    leaks += [f"{table}: {f}" for f in phone_formats(phone) if f in row]
                leaks += [f"{table}: pattern" for _ in find_phones(row)]
    assert leaks == []


GUARDED_TEST = textwrap.dedent(
    """
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    def test_prints_a_phone():
        print("calling 300 555 0199")

    def test_returns_a_phone():
        app = FastAPI()

        @app.get("/leak")
        def leak():
            return {"to": "+573005550198"}

        assert TestClient(app).get("/leak").status_code == 200

    def test_clean():
        print("guía 240012345678")
    """
)


@pytest.mark.parametrize("leaky", [True, False])
def test_pii_guard_fails_the_session_on_a_leak(tmp_path: Path, leaky: bool) -> None:
    source = (
        GUARDED_TEST
        if leaky
        else GUARDED_TEST.split("def test_prints_a_phone")[0]
        + ("def test_clean():\n    print('guía 240012345678')\n")
    )
    (tmp_path / "test_guarded.py").write_text(source)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.pii_guard",
            "-p",
            "no:cacheprovider",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    if leaky:
        assert out.returncode == 1, out.stdout[-2000:]
        assert "PII GUARD" in out.stdout
        assert "response GET /leak" in out.stdout and "Captured stdout call" in out.stdout
        # The guard reports where, never the number itself.
        assert "5550199" not in out.stdout and "5550198" not in out.stdout
    else:
        assert out.returncode == 0, out.stdout[-2000:]
        assert "PII GUARD" not in out.stdout
