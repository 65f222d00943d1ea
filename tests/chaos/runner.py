"""``python -m tests.chaos.runner``: executor runs with the run lock bypassed, on command.

Settings come from the environment like any deployment. The process connects, prints
``ready``, then for every ``run`` line on stdin calls ``run_executor(..., use_run_lock=False)``
and prints the RunResult as one JSON line; ``quit`` (or EOF) ends it. Several runners fed the
same line at the same time are several serverless instances overlapping.
"""

from __future__ import annotations

import asyncio
import json
import sys


async def main() -> int:
    from executor.config import load_settings
    from executor.db import check_schema, create_async_db_engine, resolve_database_url
    from executor.run import run_executor

    settings = load_settings()
    engine = create_async_db_engine(resolve_database_url(settings))
    try:
        await check_schema(engine)
        print("ready", flush=True)
        while True:
            command = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if command != "run":
                return 0
            result = await run_executor(engine, settings, use_run_lock=False)
            print(json.dumps(result.to_json()), flush=True)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
