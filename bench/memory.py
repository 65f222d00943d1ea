"""6. Memory: peak RSS of one run over 10 k due actions (limits lifted), in a subprocess.

The child process runs ``run_executor`` once against a zero-latency sandbox (another process)
and reports its own peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) and its RSS before the
run. Compared with the same run over 100 due actions: a run that streams its backlog in batches
peaks at the same height whatever the backlog. Goal <= 150 MB at 10 k.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.common import (
    ROOT,
    BenchResult,
    bench_env,
    bench_settings,
    enqueue_due,
    fresh_database,
    python_cmd,
    sandbox_process,
)

NAME = "memory"
TITLE = "Peak RSS of one run: 10 k vs 100 due actions"

_CHILD = """
import asyncio, json, resource, sys, time
from executor.logs import configure_logging
import os
configure_logging(stream=open(os.devnull, "w"))
from executor.config import load_settings
from executor.db import create_async_db_engine
from executor.run import run_executor

def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

async def main():
    settings = load_settings()
    engine = create_async_db_engine(settings.database_url.get_secret_value())
    before = rss_kb()
    started = time.perf_counter()
    result = await run_executor(engine, settings)
    seconds = time.perf_counter() - started
    await engine.dispose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"sent": result.counters.sent, "before_kb": before, "peak_kb": peak,
                      "seconds": seconds}))

asyncio.run(main())
"""


def _child(url: str, sandbox_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        python_cmd("-c", _CHILD),
        cwd=ROOT,
        env=bench_env(url, sandbox_url),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


async def _one(sandbox_url: str, count: int) -> dict[str, float]:
    from executor.db import create_async_db_engine

    with fresh_database("bench_mem") as url:
        engine = create_async_db_engine(url)
        try:
            await enqueue_due(engine, bench_settings(url, sandbox_url), count, prefix="MEM")
        finally:
            await engine.dispose()
        out = _child(url, sandbox_url)
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-3000:])
        raise RuntimeError(f"memory child failed with {out.returncode}")
    data: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["sent"] == count, data
    return data


async def run(quick: bool) -> BenchResult:
    big = 500 if quick else 10_000
    result = BenchResult(NAME, TITLE)
    with sandbox_process(latency_ms=0) as sandbox_url:
        small_run = await _one(sandbox_url, 100)
        big_run = await _one(sandbox_url, big)
    peak_mb = big_run["peak_kb"] / 1024
    result.add(
        "memory.peak_big_mb",
        f"peak RSS, {big} due",
        peak_mb,
        "MB",
        goal="<= 150 MB",
        ok=peak_mb <= 150,
        fmt="{:.0f}",
    )
    result.add(
        "memory.peak_small_mb", "peak RSS, 100 due", small_run["peak_kb"] / 1024, "MB", fmt="{:.0f}"
    )
    result.add(
        "memory.growth_mb",
        f"growth during the {big} run",
        (big_run["peak_kb"] - big_run["before_kb"]) / 1024,
        "MB",
        fmt="{:.1f}",
    )
    result.add(
        "memory.ratio",
        "peak ratio big / small",
        big_run["peak_kb"] / small_run["peak_kb"],
        fmt="{:.2f}",
    )
    result.notes.append(
        f"RSS before the run {big_run['before_kb'] / 1024:.0f} MB; the {big} run took "
        f"{big_run['seconds']:.1f}s ({big / big_run['seconds']:.0f} sends/s)"
    )
    return result
