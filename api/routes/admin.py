"""Operator JSON routes (DESIGN §7): executor status, rollout config, audit trail of a guía.

Every route needs the admin secret (bearer header, or the dashboard's cookie) and a migrated
database (503 ``schema_not_ready`` otherwise). Auth is resolved before the database is touched.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api.auth import AdminAuth
from api.deps import EngineDep, SettingsDep
from api.errors import ApiError
from executor.metrics import audit_trail, executor_status, rollout_status

router = APIRouter()

MAX_GUIDE_LENGTH = 100


@router.get("/api/admin/executor-status")
async def get_executor_status(
    _: AdminAuth, engine: EngineDep, settings: SettingsDep
) -> dict[str, Any]:
    return await executor_status(engine, settings)


@router.get("/api/admin/rollout-config")
async def get_rollout_config(
    _: AdminAuth, engine: EngineDep, settings: SettingsDep
) -> dict[str, Any]:
    return await rollout_status(engine, settings)


def _valid_guide(guide: str | None = Query(default=None)) -> str:
    value = (guide or "").strip()
    if not value:
        raise ApiError(422, "invalid_input", "query parameter 'guide' is required")
    if len(value) > MAX_GUIDE_LENGTH:
        raise ApiError(
            422, "invalid_input", f"query parameter 'guide' is over {MAX_GUIDE_LENGTH} characters"
        )
    return value


# Checked before the database is touched: a bad request costs no connection.
GuideParam = Annotated[str, Depends(_valid_guide)]


@router.get("/api/admin/actions")
async def get_action_audit_trail(
    _: AdminAuth, guide: GuideParam, engine: EngineDep
) -> dict[str, Any]:
    return await audit_trail(engine, guide)
