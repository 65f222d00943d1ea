"""UNKNOWN actions: list them, and record what the provider says happened (PLAYBOOK.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from api.auth import AdminAuth
from api.deps import EngineDep
from executor.logs import redact_text
from executor.reconcile import list_unknown, reconcile_action

router = APIRouter()


class ReconcileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Literal["delivered", "not_delivered"]
    note: str | None = Field(default=None, max_length=200)


@router.get("/api/admin/unknown-actions")
async def get_unknown_actions(
    _: AdminAuth,
    engine: EngineDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    actions = await list_unknown(engine, limit)
    return {"count": len(actions), "actions": actions}


@router.post("/api/admin/actions/{action_id}/reconcile")
async def post_reconcile(
    action_id: str, body: ReconcileIn, _: AdminAuth, engine: EngineDep
) -> dict[str, Any]:
    note = redact_text(body.note) if body.note else None
    status = await reconcile_action(engine, action_id, body.outcome, note)
    return {"id": action_id, "status": status}
