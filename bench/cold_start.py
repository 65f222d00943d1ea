"""5. Cold start: process start -> first 200 from ``GET /api/health`` under uvicorn.

Ours (``uvicorn api.index:app``; health also checks the database, a real connection) vs a bare
FastAPI hello app (bench/hello_app.py) under the same server and flags. Each is started several
times, alternating; figure = median. Goal ours / bare <= 1.5. Also: the import time of
``api.index`` alone and which heavy modules that import drags in (a cold start should not pay
for alembic, phonenumbers, cryptography, rich, the sandbox or the dashboard).
"""

from __future__ import annotations

import json
import subprocess
import time

from bench.common import (
    ROOT,
    BenchResult,
    bench_env,
    free_port,
    fresh_database,
    median,
    python_cmd,
    wait_for_http,
)

NAME = "cold_start"
TITLE = "Cold start to first 200 (uvicorn): ours vs bare FastAPI"

HEAVY = (
    "alembic",
    "phonenumbers",
    "cryptography",
    "rich",
    "executor.sandbox",
    "api.dashboard_page",
    "executor.migrate",
    "tenacity",
    "h11",
)

_IMPORT_PROBE = """
import json, sys, time
t = time.perf_counter()
import api.index
elapsed = time.perf_counter() - t
heavy = [m for m in sys.argv[1:] if m in sys.modules]
print(json.dumps({"seconds": elapsed, "heavy": heavy}))
"""


def _start_to_200(app: str, env: dict[str, str]) -> float:
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen(
        python_cmd("-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        answered = wait_for_http(f"http://127.0.0.1:{port}/api/health", timeout=60)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return answered - started


def _import_probe(env: dict[str, str]) -> tuple[float, list[str]]:
    out = subprocess.run(
        python_cmd("-c", _IMPORT_PROBE, *HEAVY),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return float(data["seconds"]), list(data["heavy"])


async def run(quick: bool) -> BenchResult:
    repeats = 1 if quick else 7
    result = BenchResult(NAME, TITLE)
    with fresh_database("bench_cold") as url:
        env = bench_env(url)
        ours: list[float] = []
        bare: list[float] = []
        imports: list[float] = []
        heavy: list[str] = []
        if not quick:  # warm the OS file cache for both
            _start_to_200("bench.hello_app:app", env)
            _start_to_200("api.index:app", env)
        for _ in range(repeats):
            bare.append(_start_to_200("bench.hello_app:app", env))
            ours.append(_start_to_200("api.index:app", env))
            seconds, heavy = _import_probe(env)
            imports.append(seconds)
    ratio = median(ours) / median(bare)
    result.add("cold_start.ours_s", "ours: start -> first 200", median(ours), "s")
    result.add("cold_start.bare_s", "bare FastAPI: start -> first 200", median(bare), "s")
    result.add(
        "cold_start.ratio", "ours / bare", ratio, goal="<= 1.5", ok=ratio <= 1.5, fmt="{:.2f}"
    )
    result.add("cold_start.import_s", "import api.index", median(imports), "s")
    result.notes.append(
        f"{repeats} starts each (medians); heavy modules imported by `import api.index`: "
        + (", ".join(heavy) if heavy else "none of " + ", ".join(HEAVY))
    )
    return result
