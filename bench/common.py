"""Shared pieces of the benchmarks: Postgres, fresh databases, settings, data, counters.

Every benchmark creates its own database on the server the suite uses (``DATABASE_URL`` when
set, else the embedded Postgres under ``.data/pg``), migrates it, and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from executor.config import Settings
from executor.db import libpq_url, normalize_database_url

ROOT = Path(__file__).resolve().parent.parent

CRON_SECRET = "bench-cron-secret-0123456789abcdef"
ADMIN_SECRET = "bench-admin-secret-0123456789abcdef"
API_KEY = "bench-chatea-api-key-0123456789"
DEVICE_ID = "bench-device"
# Fresh PII keys per benchmark process (nothing is kept).
PHONE_HASH_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")
PII_KEY = base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")

# "Limits lifted": nothing but the work itself bounds a run.
LIFTED: dict[str, Any] = {
    "daily_send_limit": 1_000_000_000,
    "rate_limit_per_minute": 1_000_000_000,
    "rate_limit_per_phone_day": 1_000_000_000,
    "run_time_budget_seconds": 900.0,
}


# ---- results ----------------------------------------------------------------------------------


@dataclass
class Metric:
    """One figure of a benchmark; ``key`` is stable across runs (the before/after join)."""

    key: str
    label: str
    value: float | None
    unit: str = ""
    goal: str = ""
    ok: bool | None = None
    fmt: str = "{:.3g}"

    def shown(self, value: float | None = None) -> str:
        value = self.value if value is None else value
        if value is None:
            return "n/a"
        return self.fmt.format(value) + (f" {self.unit}" if self.unit else "")


@dataclass
class BenchResult:
    name: str
    title: str
    metrics: list[Metric] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, *args: Any, **kwargs: Any) -> Metric:
        metric = Metric(*args, **kwargs)
        self.metrics.append(metric)
        return metric


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return float(ordered[rank - 1])


# ---- Postgres ---------------------------------------------------------------------------------

_server_url: str | None = None


def server_url() -> str:
    """libpq URL of an admin database on the server (rights to CREATE DATABASE)."""
    global _server_url
    if _server_url is None:
        env_url = os.environ.get("DATABASE_URL")
        if env_url:
            _server_url = libpq_url(env_url)
        else:
            from executor.embedded_pg import start_embedded_postgres

            _server_url = libpq_url(start_embedded_postgres(database="postgres"))
    return _server_url


def _with_database(url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


def create_database(prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_database(server_url(), name)


def drop_database(database_url: str) -> None:
    name = urllib.parse.urlsplit(libpq_url(database_url)).path.lstrip("/")
    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@contextlib.contextmanager
def fresh_database(prefix: str = "bench", *, migrate: bool = True) -> Iterator[str]:
    """A brand-new database (migrated to head unless told otherwise), dropped afterwards."""
    url = create_database(prefix)
    try:
        if migrate:
            from executor.migrate import upgrade

            upgrade(url)
        yield normalize_database_url(url)
    finally:
        drop_database(url)


def sql_script(database_url: str, statements: Sequence[str]) -> None:
    """Run plain SQL (autocommit), e.g. bulk history generation."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


# ---- settings and data ------------------------------------------------------------------------


def bench_settings(database_url: str, chatea_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "executor_enabled": True,
        "cron_secret": CRON_SECRET,
        "admin_secret": ADMIN_SECRET,
        "phone_hash_key": PHONE_HASH_KEY,
        "pii_encryption_key": PII_KEY,
        "database_url": database_url,
        "chatea_api_url": chatea_url,
        "chatea_api_key": API_KEY,
        "chatea_device_id": DEVICE_ID,
        "chatea_concurrency": 5,
        **LIFTED,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def bench_env(
    database_url: str, chatea_url: str = "http://127.0.0.1:9", **extra: str
) -> dict[str, str]:
    """Environment for a subprocess (uvicorn, ``executor run``) with the bench settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in {n.upper() for n in Settings.model_fields}
    }
    env.update(
        {
            "DATABASE_URL": database_url,
            "EXECUTOR_ENABLED": "true",
            "CRON_SECRET": CRON_SECRET,
            "ADMIN_SECRET": ADMIN_SECRET,
            "PHONE_HASH_KEY": PHONE_HASH_KEY,
            "PII_ENCRYPTION_KEY": PII_KEY,
            "CHATEA_API_URL": chatea_url,
            "CHATEA_API_KEY": API_KEY,
            "CHATEA_DEVICE_ID": DEVICE_ID,
            "CHATEA_CONCURRENCY": "5",
            "DAILY_SEND_LIMIT": str(LIFTED["daily_send_limit"]),
            "RATE_LIMIT_PER_MINUTE": str(LIFTED["rate_limit_per_minute"]),
            "RATE_LIMIT_PER_PHONE_DAY": str(LIFTED["rate_limit_per_phone_day"]),
            "RUN_TIME_BUDGET_SECONDS": str(LIFTED["run_time_budget_seconds"]),
        }
    )
    env.update(extra)
    return env


def phone(n: int) -> str:
    """A valid Colombian mobile, distinct for every n < 10**7."""
    return f"+57300{n % 10_000_000:07d}"


def action_item(n: int, prefix: str, phones: int) -> dict[str, Any]:
    guide = f"{prefix}{n:08d}"
    return {
        "guide": guide,
        "trigger": "at_office_3d",
        "city": "Bogotá",
        "carrier": "Servientrega",
        "variables": {
            "numero_de_guia": guide,
            "transportadora": "Servientrega",
            "ciudad_de_destino": "Bogotá",
        },
        "phone": phone(n % phones),
    }


async def enqueue_due(
    engine: AsyncEngine, settings: Settings, count: int, *, prefix: str = "BG", phones: int = 0
) -> None:
    """``count`` due PLANNED actions through the real intake (1000 per call, as the API)."""
    from executor.intake import intake_actions

    phones = phones or count
    for start in range(0, count, 1000):
        items = [action_item(n, prefix, phones) for n in range(start, min(count, start + 1000))]
        result = await intake_actions(engine, settings, items)
        assert not result.rejected, result.rejected[:3]
        assert result.accepted == len(items), result
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE actions SET next_attempt_at = now() - interval '1 second'"
                " WHERE status = 'PLANNED'"
            )
        )


async def status_counts(engine: AsyncEngine) -> Counter[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT status, count(*) FROM actions GROUP BY status"))
        return Counter({str(k): int(v) for k, v in rows})


# ---- statement counting -----------------------------------------------------------------------


class SqlCounter:
    """Counts what an engine sends: statements (cursor executes), connections opened (each also
    runs the one session-setup statement of executor.db), and transaction control."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.sync_engine
        self.statements = 0
        self.connections = 0
        self.begins = 0
        self.commits = 0
        self.rollbacks = 0
        self.kinds: Counter[str] = Counter()
        event.listen(self.engine, "before_cursor_execute", self._statement)
        event.listen(self.engine, "connect", self._connect)
        event.listen(self.engine, "begin", self._begin)
        event.listen(self.engine, "commit", self._commit)
        event.listen(self.engine, "rollback", self._rollback)

    def reset(self) -> None:
        self.statements = self.connections = self.begins = self.commits = self.rollbacks = 0
        self.kinds.clear()

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._statement)
        event.remove(self.engine, "connect", self._connect)
        event.remove(self.engine, "begin", self._begin)
        event.remove(self.engine, "commit", self._commit)
        event.remove(self.engine, "rollback", self._rollback)

    @property
    def total_statements(self) -> int:
        """Statements including the session setup of every new connection."""
        return self.statements + self.connections

    @property
    def round_trips(self) -> int:
        """Everything that waits for the server: statements, connects, BEGIN, COMMIT/ROLLBACK."""
        return (
            self.total_statements + self.connections + self.begins + self.commits + self.rollbacks
        )

    def _statement(self, _c: Any, _cur: Any, statement: str, *_: Any) -> None:
        self.statements += 1
        self.kinds[_statement_kind(statement)] += 1

    def _connect(self, *_: Any) -> None:
        self.connections += 1

    def _begin(self, *_: Any) -> None:
        self.begins += 1

    def _commit(self, *_: Any) -> None:
        self.commits += 1

    def _rollback(self, *_: Any) -> None:
        self.rollbacks += 1


def _statement_kind(statement: str) -> str:
    """A short name for a statement: its first words and the first table it names."""
    words = " ".join(statement.split())
    lowered = words.lower()
    for marker in ("pg_try_advisory", "pg_advisory", "set_config"):
        if marker in lowered:
            return marker
    table = ""
    for keyword in (" from ", "update ", "into "):
        idx = lowered.find(keyword)
        if idx >= 0:
            rest = words[idx + len(keyword) :].split()
            table = rest[0] if rest else ""
            break
    return f"{words.split()[0].upper()} {table}".strip()[:60]


# ---- subprocesses -----------------------------------------------------------------------------


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, *args]


@contextlib.contextmanager
def sandbox_process(latency_ms: int = 0) -> Iterator[str]:
    """``executor sandbox`` in its own process (its CPU is not ours); yields its URL."""
    env = dict(os.environ)
    env["SANDBOX_API_KEY"] = API_KEY
    env["LOG_LEVEL"] = "WARNING"
    proc = subprocess.Popen(
        python_cmd("-m", "executor.cli", "sandbox", "--port", "0", "--latency-ms", str(latency_ms)),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on " not in line:
            raise RuntimeError(f"sandbox did not start: {line!r}")
        url = line.split("listening on ", 1)[1].split()[0]
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, timeout: float = 30.0, interval: float = 0.002) -> float:
    """Poll ``url`` until it answers 200; return the monotonic time of that answer."""
    import http.client

    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=5)
        try:
            conn.request("GET", parts.path or "/")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return time.monotonic()
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(interval)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


def quiet_logging() -> None:
    """Logs of the measured code are still rendered (their CPU is part of a run) but go to
    /dev/null, so the table stays readable."""
    from executor.logs import configure_logging

    configure_logging(stream=open(os.devnull, "w"))  # noqa: SIM115 - lives for the process


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)
