"""GET|POST /api/cron/run-executor: one executor run (Vercel cron sends GET)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.auth import CronAuth
from api.deps import EngineDep, RuntimeDep, SettingsDep
from executor.run import run_executor

router = APIRouter()


@router.api_route("/api/cron/run-executor", methods=["GET", "POST"])
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
