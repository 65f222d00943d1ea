"""Every `curl` and `executor` command of PLAYBOOK.md, run against a live app.

The app runs under uvicorn in a subprocess on the test database, sending to the sandbox; the
commands run through bash exactly as written, with the variables the playbook tells operators
to export.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from executor.db import libpq_url
from executor.sandbox import start_sandbox
from tests.conftest import (
    TEST_ADMIN_SECRET,
    TEST_API_KEY,
    TEST_CRON_SECRET,
    TEST_PHONE_HASH_KEY,
    TEST_PII_KEY,
)
from tests.pii_guard import record
from tests.pipeline_helpers import PHONES, action

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = ROOT / "PLAYBOOK.md"


def playbook_commands() -> list[str]:
    """The runnable lines of PLAYBOOK.md's bash blocks (continuations joined)."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", PLAYBOOK.read_text(), flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith(("curl ", "executor ")):
                commands.append(line)
    return commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live_app(clean_db: str) -> Iterator[dict[str, str]]:
    with start_sandbox() as sandbox:
        port = _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": clean_db,
            "CRON_SECRET": TEST_CRON_SECRET,
            "ADMIN_SECRET": TEST_ADMIN_SECRET,
            "EXECUTOR_ENABLED": "true",
            "CHATEA_API_URL": sandbox.url,
            "CHATEA_API_KEY": TEST_API_KEY,
            "CHATEA_DEVICE_ID": "device-1",
            "PHONE_HASH_KEY": TEST_PHONE_HASH_KEY,
            "PII_ENCRYPTION_KEY": TEST_PII_KEY,
            "EXECUTOR_URL": f"http://127.0.0.1:{port}",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "executor.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{env['EXECUTOR_URL']}/api/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None, "the app exited"
                assert time.monotonic() < deadline, "the app did not start"
                time.sleep(0.2)
            yield env
        finally:
            server.terminate()
            output, _ = server.communicate(timeout=20)
            record("playbook app server output", output)


def _seed(env: dict[str, str]) -> dict[str, str]:
    url = env["EXECUTOR_URL"]
    admin = {"Authorization": f"Bearer {TEST_ADMIN_SECRET}"}
    items = [action(f"PB-{i}", PHONES[i]) for i in range(4)]
    posted = httpx.post(f"{url}/api/actions", headers=admin, json={"actions": items}, timeout=30)
    assert posted.status_code == 200, posted.text
    cron = {"Authorization": f"Bearer {TEST_CRON_SECRET}"}
    run = httpx.get(f"{url}/api/cron/run-executor", headers=cron, timeout=60).json()
    assert run["sent"] == 4, run
    more = [action(f"PB-U{i}", PHONES[10 + i]) for i in range(2)]
    httpx.post(f"{url}/api/actions", headers=admin, json={"actions": more}, timeout=30)
    with psycopg.connect(libpq_url(env["DATABASE_URL"]), autocommit=True) as conn:
        ids = [
            str(r[0])
            for r in conn.execute(
                "UPDATE actions SET status='UNKNOWN', attempts=1, error_code='READ_TIMEOUT'"
                " WHERE guide LIKE 'PB-U%' RETURNING id"
            )
        ]
    return {"GUIDE": "PB-1", "ACTION_ID": ids[0], "OTHER_ACTION_ID": ids[1]}


def test_playbook_has_commands_for_every_symptom() -> None:
    commands = playbook_commands()
    assert len(commands) >= 12
    text = PLAYBOOK.read_text()
    for symptom in (
        "401",
        "409",
        "All runs failing",
        "High 4xx",
        "High 5xx",
        "Rate limit",
        "Timeouts",
        "Duplicates",
        "PII leak",
        "UNKNOWN actions to reconcile",
        "Breaker open",
        "Kill switch",
        "Daily review",
        "Weekly review",
    ):
        assert symptom in text, symptom
    for route in re.findall(r"\$EXECUTOR_URL(/[\w/\-{}$?=.]+)", text):
        assert route.startswith(("/api/", "/admin")), route


def test_every_playbook_command_works(live_app: dict[str, str]) -> None:
    env = {**live_app, **_seed(live_app)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    ran = 0
    for command in playbook_commands():
        out = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120
        )
        record(f"playbook: {command[:60]}", out.stdout + out.stderr)
        assert out.returncode == 0, f"{command}\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}"
        if command.startswith("curl "):
            json.loads(out.stdout)  # every curl in the playbook answers JSON
        ran += 1
    assert ran == len(playbook_commands()) >= 12
    with psycopg.connect(libpq_url(env["DATABASE_URL"])) as conn:
        states: dict[str, str] = dict(
            conn.execute("SELECT id::text, status FROM actions WHERE guide LIKE 'PB-U%'").fetchall()
        )
    assert states[env["ACTION_ID"]] == "SENT"
    assert states[env["OTHER_ACTION_ID"]] in ("PLANNED", "SENT")
