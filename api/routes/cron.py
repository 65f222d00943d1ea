"""GET|POST /api/cron/run-executor: one executor run (Vercel cron sends GET)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import CronAuth
from api.deps import EngineDep, RuntimeDep, SettingsDep
from executor.run import run_executor

router = APIRouter()


# One route per method: a GET+POST api_route gives both the same OpenAPI operationId.
@router.get("/api/cron/run-executor", operation_id="run_executor_get")
@router.post("/api/cron/run-executor", operation_id="run_executor_post")
async def run_executor_route(
    _: CronAuth,
    engine: EngineDep,
    settings: SettingsDep,
    runtime: RuntimeDep,
    dry_run: Annotated[bool, Query(alias="dryRun")] = False,
) -> dict[str, Any]:
    """Run once. 200 RunResult; 409 when another run holds the lock; 401 without the secret."""
    result = await run_executor(
        engine, settings, dry_run=dry_run, chatea_transport=runtime.chatea_transport
    )
    return result.to_json()
